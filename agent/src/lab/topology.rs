//! The lab's shape as pure data: racks, nodes, pods, namespace names, addresses, the Node
//! objects and every generated configuration file (agents, kubeconfig). No I/O.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::LabError;

/// The ToR's AS number.
pub const TOR_ASN: u32 = 65000;
/// The nodes' AS number.
pub const NODE_ASN: u32 = 64512;
/// The ToR's router id (its address towards the external client).
pub const TOR_ROUTER_ID: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
/// The external client's address.
pub const EXT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 2);
/// The API stand-in's address (in the API namespace).
pub const API_ADDR: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 2);
/// The ToR's address towards the API namespace.
pub const API_GW: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 1);
pub const API_PORT: u16 = 6443;
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
pub const LB_POOL: &str = "203.0.113.0/28";
/// Pods per node.
pub const PODS_PER_NODE: usize = 2;
/// TCP port every pod responder listens on.
pub const POD_PORT: u16 = 8080;
/// Port of the LoadBalancer Service (and of the node-side responders standing in for kube-proxy).
pub const LB_PORT: u16 = 80;
/// The LoadBalancer Service.
pub const LB_SERVICE: &str = "web";
/// routelet's own namespace in the cluster (allocator Lease).
pub const ROUTELET_NAMESPACE: &str = "routelet-system";
pub const MAX_NODES: usize = 200;
pub const MAX_RACKS: usize = 200;

/// The agents' datapath backend and cross-subnet mode (`backend:` / `cross_subnet:` in their
/// config).
pub use crate::datapath_config::{Backend, CrossSubnet};

/// What routes on the ToR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Tor {
    /// `routelet speaker`.
    #[default]
    Routelet,
    /// BIRD 2.
    Bird,
    /// FRR (zebra + bgpd).
    Frr,
}

impl Tor {
    pub fn as_str(self) -> &'static str {
        match self {
            Tor::Routelet => "routelet",
            Tor::Bird => "bird",
            Tor::Frr => "frr",
        }
    }
}

/// The lab's parameters (the `up` flags that shape it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub prefix: String,
    pub nodes: usize,
    pub racks: usize,
    pub backend: Backend,
    pub tor: Tor,
    #[serde(default)]
    pub cross_subnet: CrossSubnet,
    /// Hold time of every node-ToR and node-node session (s).
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    /// BFD (300 ms x 3) on every node-ToR and node-node session.
    #[serde(default)]
    pub bfd: bool,
    pub state_dir: PathBuf,
}

/// The lab's BGP hold time unless `--hold-time` says otherwise.
pub const DEFAULT_HOLD_TIME: u16 = 9;

fn default_hold_time() -> u16 {
    DEFAULT_HOLD_TIME
}

/// One node of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// 1-based.
    pub index: usize,
    /// 1-based.
    pub rack: usize,
    /// Kubernetes node name, `n<i>`.
    pub name: String,
    pub netns: String,
    pub addr: Ipv4Addr,
    /// Its rack's ToR address (the default gateway and BGP peer).
    pub tor_addr: Ipv4Addr,
    pub pod_cidr: String,
}

/// One pod (a namespace with a CNI-configured `eth0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    /// `n<i>-p<j>`.
    pub name: String,
    pub node: usize,
    pub netns: String,
    /// CNI_CONTAINERID.
    pub container_id: String,
}

impl Topology {
    /// Validates the parameters.
    pub fn new(
        prefix: &str,
        nodes: usize,
        racks: usize,
        backend: Backend,
        tor: Tor,
        state_dir: &Path,
    ) -> Result<Topology, LabError> {
        if nodes == 0 || nodes > MAX_NODES {
            return Err(LabError::Option(format!(
                "--nodes {nodes}: must be 1..={MAX_NODES}"
            )));
        }
        if racks == 0 || racks > MAX_RACKS || racks > nodes {
            return Err(LabError::Option(format!(
                "--racks {racks}: must be 1..={} (at most one rack per node)",
                nodes.min(MAX_RACKS)
            )));
        }
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 16
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !prefix.starts_with('-');
        if !prefix_ok {
            return Err(LabError::Option(format!(
                "--prefix {prefix:?}: 1-16 characters of [A-Za-z0-9_-], not starting with '-'"
            )));
        }
        Ok(Topology {
            prefix: prefix.to_string(),
            nodes,
            racks,
            backend,
            tor,
            cross_subnet: CrossSubnet::default(),
            hold_time: DEFAULT_HOLD_TIME,
            bfd: false,
            state_dir: state_dir.to_path_buf(),
        })
    }

    pub fn ns(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }
    pub fn tor_ns(&self) -> String {
        self.ns("tor")
    }
    pub fn api_ns(&self) -> String {
        self.ns("api")
    }
    pub fn ext_ns(&self) -> String {
        self.ns("ext")
    }

    /// Rack (1-based) of node `i` (1-based): racks filled contiguously, as evenly as possible.
    pub fn rack_of(&self, i: usize) -> usize {
        (i - 1) * self.racks / self.nodes + 1
    }

    pub fn rack_addr(rack: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 100, rack as u8, 1)
    }

    pub fn node(&self, i: usize) -> NodeSpec {
        let rack = self.rack_of(i);
        NodeSpec {
            index: i,
            rack,
            name: format!("n{i}"),
            netns: self.ns(&format!("n{i}")),
            addr: Ipv4Addr::new(10, 100, rack as u8, (10 + i) as u8),
            tor_addr: Self::rack_addr(rack),
            pod_cidr: format!("10.244.{i}.0/24"),
        }
    }

    pub fn node_list(&self) -> Vec<NodeSpec> {
        (1..=self.nodes).map(|i| self.node(i)).collect()
    }

    pub fn pods(&self) -> Vec<PodSpec> {
        let mut out = Vec::new();
        for i in 1..=self.nodes {
            for j in 1..=PODS_PER_NODE {
                let name = format!("n{i}-p{j}");
                out.push(PodSpec {
                    netns: self.ns(&name),
                    container_id: format!("{}-{name}", self.prefix),
                    name,
                    node: i,
                });
            }
        }
        out
    }

    /// Every namespace of the lab, in creation order.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.tor_ns(), self.api_ns(), self.ext_ns()];
        v.extend(self.node_list().into_iter().map(|n| n.netns));
        v.extend(self.pods().into_iter().map(|p| p.netns));
        v
    }

    /// Nodes hosting the LoadBalancer Service's endpoints: n1 and the last node.
    pub fn lb_nodes(&self) -> Vec<usize> {
        if self.nodes == 1 {
            vec![1]
        } else {
            vec![1, self.nodes]
        }
    }

    // ---- files in the state dir ----

    pub fn lab_file(&self) -> PathBuf {
        self.state_dir.join(super::state::LAB_FILE)
    }
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.state_dir.join("kubeconfig")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.state_dir.join(format!("n{i}"))
    }
    pub fn agent_config_path(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("agent.yaml")
    }
    pub fn agent_socket(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("routelet.sock")
    }
    pub fn cni_conf_dir(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("net.d")
    }
    pub fn cni_data_dir(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("cni")
    }
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.state_dir.join("bin")
    }
    pub fn tor_dir(&self) -> PathBuf {
        self.state_dir.join("tor")
    }

    /// The `routelet agent` configuration of node `i`.
    pub fn agent_yaml(&self, i: usize) -> String {
        format!(
            "# generated by `routelet lab up` for node n{i}\n\
             asn: {NODE_ASN}\n\
             namespace: {ROUTELET_NAMESPACE}\n\
             socket: {socket}\n\
             metrics_address: ''\n\
             convergence_timeout: 10\n\
             cluster_cidr: {CLUSTER_CIDR}\n\
             service_cidr: {SERVICE_CIDR}\n\
             pod_cidr_source: node_spec\n\
             advertise:\n  cluster_ips: true\n  load_balancer_ips: true\n\
             pools:\n  - name: default\n    cidrs: [{LB_POOL}]\n\
             mesh:\n  hold_time: {hold}\n{mesh_bfd}\
             backend: {backend}\n\
             cross_subnet: {cross}\n\
             interface: eth0\n\
             cni:\n  conf_dir: {conf}\n  data_dir: {data}\n",
            socket = self.agent_socket(i).display(),
            hold = self.hold_time,
            mesh_bfd = if self.bfd { "  bfd: true\n" } else { "" },
            backend = self.backend.as_str(),
            cross = self.cross_subnet.as_str(),
            conf = self.cni_conf_dir(i).display(),
            data = self.cni_data_dir(i).display(),
        )
    }

    /// kubeconfig for the API stand-in (plain HTTP, no auth).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://{API_ADDR}:{API_PORT}\n\
             contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: lab\ncurrent-context: lab\n\
             users:\n- name: lab\n  user: {{}}\n"
        )
    }

    /// The `routelet.io/peers` annotation of a node: its rack's ToR.
    pub fn peers_annotation(&self, node: &NodeSpec) -> String {
        serde_json::json!([{
            "address": node.tor_addr.to_string(),
            "asn": TOR_ASN,
            "hold_time": self.hold_time,
            "bfd": self.bfd,
        }])
        .to_string()
    }

    /// The Node object as POSTed (spec, annotations) for node `i`.
    pub fn node_object(&self, i: usize) -> serde_json::Value {
        let n = self.node(i);
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": n.name,
                "labels": {"kubernetes.io/hostname": n.name, "topology.kubernetes.io/zone": format!("rack{}", n.rack)},
                "annotations": {crate::desired::annotations::PEERS: self.peers_annotation(&n)},
            },
            "spec": {"podCIDR": n.pod_cidr, "podCIDRs": [n.pod_cidr]},
        })
    }

    /// The Node status as the kubelet patches it through `/status`.
    pub fn node_status(&self, i: usize) -> serde_json::Value {
        let n = self.node(i);
        serde_json::json!({"status": {
            "addresses": [
                {"type": "InternalIP", "address": n.addr.to_string()},
                {"type": "Hostname", "address": n.name},
            ],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        }})
    }

    /// Which node (1-based) has address `addr`, if any.
    pub fn node_by_addr(&self, addr: Ipv4Addr) -> Option<usize> {
        (1..=self.nodes).find(|&i| self.node(i).addr == addr)
    }

    /// True if `addr` is one of the ToR's addresses.
    pub fn is_tor_addr(&self, addr: Ipv4Addr) -> bool {
        (1..=self.racks).any(|r| Self::rack_addr(r) == addr)
            || addr == TOR_ROUTER_ID
            || addr == API_GW
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn topo(nodes: usize, racks: usize) -> Topology {
        Topology::new(
            "rl-lab",
            nodes,
            racks,
            Backend::Bgp,
            Tor::Routelet,
            Path::new("/run/routelet-lab"),
        )
        .unwrap()
    }

    #[test]
    fn default_shape_two_racks_of_two() {
        let t = topo(4, 2);
        let racks: Vec<usize> = (1..=4).map(|i| t.rack_of(i)).collect();
        assert_eq!(racks, vec![1, 1, 2, 2]);
        let n3 = t.node(3);
        assert_eq!(n3.addr, Ipv4Addr::new(10, 100, 2, 13));
        assert_eq!(n3.tor_addr, Ipv4Addr::new(10, 100, 2, 1));
        assert_eq!(n3.netns, "rl-lab-n3");
        assert_eq!(n3.pod_cidr, "10.244.3.0/24");
        assert_eq!(t.lb_nodes(), vec![1, 4]);
    }

    #[test]
    fn racks_are_contiguous_and_never_empty() {
        for (n, r) in [(5, 4), (7, 3), (3, 3), (10, 1), (9, 2)] {
            let t = topo(n, r);
            let racks: Vec<usize> = (1..=n).map(|i| t.rack_of(i)).collect();
            assert!(racks.windows(2).all(|w| w[0] <= w[1]), "{racks:?}");
            for rack in 1..=r {
                assert!(racks.contains(&rack), "rack {rack} empty: {racks:?}");
            }
        }
    }

    #[test]
    fn namespaces_and_pods_are_named_by_prefix() {
        let t = topo(2, 1);
        assert_eq!(
            t.namespaces(),
            vec![
                "rl-lab-tor",
                "rl-lab-api",
                "rl-lab-ext",
                "rl-lab-n1",
                "rl-lab-n2",
                "rl-lab-n1-p1",
                "rl-lab-n1-p2",
                "rl-lab-n2-p1",
                "rl-lab-n2-p2"
            ]
        );
        assert!(t.namespaces().iter().all(|n| n.starts_with("rl-lab-")));
    }

    #[test]
    fn bad_options_are_rejected_with_the_flag() {
        let e = Topology::new("p", 0, 1, Backend::Bgp, Tor::Routelet, Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--nodes"), "{e}");
        let e = Topology::new("p", 2, 3, Backend::Bgp, Tor::Routelet, Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--racks"), "{e}");
        let e = Topology::new("a b", 2, 1, Backend::Bgp, Tor::Routelet, Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--prefix"), "{e}");
    }

    #[test]
    fn agent_config_is_a_valid_agent_file() {
        let dir = std::env::temp_dir().join(format!("rl-lab-topo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (backend, cross) in [
            (Backend::Bgp, CrossSubnet::Vxlan),
            (Backend::HostGw, CrossSubnet::Vxlan),
            (Backend::Vxlan, CrossSubnet::Vxlan),
            (Backend::Bgp, CrossSubnet::Routed),
        ] {
            let mut t = Topology::new("rl-lab", 4, 2, backend, Tor::Routelet, &dir).unwrap();
            t.cross_subnet = cross;
            let yaml = t.agent_yaml(2);
            assert!(yaml.contains(&format!("cross_subnet: {}", cross.as_str())));
            assert!(yaml.contains(&format!("backend: {}", backend.as_str())));
            let path = dir.join(format!(
                "agent-{}-{}.yaml",
                backend.as_str(),
                cross.as_str()
            ));
            std::fs::write(&path, &yaml).unwrap();
            let s = crate::agent_config::load_agent(&path);
            assert!(s.is_ok(), "{yaml}\n{:?}", s.err().map(|e| e.to_string()));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn node_object_carries_pod_cidr_and_tor_peer() {
        let t = topo(4, 2);
        let n = t.node_object(3);
        assert_eq!(n["spec"]["podCIDRs"][0], "10.244.3.0/24");
        let peers: serde_json::Value = serde_json::from_str(
            n["metadata"]["annotations"]["routelet.io/peers"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(peers[0]["address"], "10.100.2.1");
        assert_eq!(peers[0]["asn"], 65000);
        let s = t.node_status(3);
        assert_eq!(s["status"]["addresses"][0]["address"], "10.100.2.13");
        // The annotation parses with the agent's own parser.
        let mut problems = Vec::new();
        let ann: std::collections::BTreeMap<String, String> =
            serde_json::from_value(n["metadata"]["annotations"].clone()).unwrap();
        let parsed = crate::desired::annotations::parse_node_annotations("n3", &ann, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(parsed.peers.len(), 1);
    }

    #[test]
    fn address_lookups() {
        let t = topo(4, 2);
        assert_eq!(t.node_by_addr(Ipv4Addr::new(10, 100, 2, 14)), Some(4));
        assert_eq!(t.node_by_addr(Ipv4Addr::new(10, 100, 1, 14)), None);
        assert!(t.is_tor_addr(Ipv4Addr::new(10, 100, 2, 1)));
        assert!(!t.is_tor_addr(Ipv4Addr::new(10, 100, 2, 13)));
    }
}
