//! The `routelet agent` YAML configuration (a ConfigMap in a cluster): parsing with unknown keys
//! rejected, validation of every CIDR, pool and peer, and the validated `AgentSettings`.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bgp::config::{BfdTimers, GracefulRestartConfig, NeighborConfig};
use bgp::types::Prefix;
use serde::Deserialize;

use crate::config::{
    bfd_timers, common_settings, default_convergence_timeout, default_listen_port,
    default_max_paths, default_metrics, default_socket, default_true, locate, neighbor_config,
    BfdFile, ConfigError, GracefulRestartFile, KernelFile, NeighborFile,
};
use crate::datapath_config::{self, Backend, CniFile, CrossSubnet, DatapathSettings, VxlanFile};

/// Default AS number of nodes without a `routelet.io/asn` annotation (the first private ASN,
/// as Calico uses).
pub const DEFAULT_ASN: u32 = 64512;

fn default_asn() -> u32 {
    DEFAULT_ASN
}
fn default_block_size() -> u8 {
    26
}
fn default_block_size_v6() -> u8 {
    122
}
fn default_mesh_hold_time() -> u16 {
    90
}
fn default_block_release_grace() -> u64 {
    30
}
fn default_namespace() -> String {
    crate::k8s::rbac::NAMESPACE.to_string()
}

/// One CIDR or a list of them (dual-stack clusters have one per family).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(Prefix),
    Many(Vec<Prefix>),
}

impl Default for OneOrMany {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

impl OneOrMany {
    fn into_vec(self) -> Vec<Prefix> {
        match self {
            OneOrMany::One(p) => vec![p],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Where a node's pod CIDRs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodCidrSource {
    /// `Node.spec.podCIDRs`, allocated by kube-controller-manager.
    #[default]
    NodeSpec,
    /// routelet's own block IPAM over `cluster_cidr`.
    Blocks,
}

/// The YAML document of `routelet agent --config FILE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    #[serde(default = "default_asn")]
    pub asn: u32,
    /// routelet's own namespace (leader-election Lease, pod block table).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    #[serde(default = "default_metrics")]
    pub metrics_address: String,
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    #[serde(default = "default_max_paths")]
    pub max_paths: usize,
    #[serde(default = "default_convergence_timeout")]
    pub convergence_timeout: u64,
    #[serde(default)]
    pub graceful_restart: GracefulRestartFile,
    pub cluster_cidr: OneOrMany,
    #[serde(default)]
    pub service_cidr: OneOrMany,
    #[serde(default)]
    pub pod_cidr_source: PodCidrSource,
    #[serde(default = "default_block_size")]
    pub block_size: u8,
    #[serde(default = "default_block_size_v6")]
    pub block_size_v6: u8,
    /// Seconds a deleted node's blocks stay claimed before they are released.
    #[serde(default = "default_block_release_grace")]
    pub block_release_grace: u64,
    #[serde(default)]
    pub advertise: AdvertiseFile,
    #[serde(default)]
    pub pools: Vec<PoolFile>,
    #[serde(default)]
    pub peers: Vec<NeighborFile>,
    #[serde(default)]
    pub mesh: MeshFile,
    #[serde(default)]
    pub kernel: KernelFile,
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub cross_subnet: CrossSubnet,
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub vxlan: VxlanFile,
    #[serde(default)]
    pub cni: CniFile,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvertiseFile {
    #[serde(default = "default_true")]
    pub cluster_ips: bool,
    #[serde(default)]
    pub external_ips: Vec<Prefix>,
    #[serde(default = "default_true")]
    pub load_balancer_ips: bool,
}

impl Default for AdvertiseFile {
    fn default() -> Self {
        AdvertiseFile {
            cluster_ips: true,
            external_ips: Vec::new(),
            load_balancer_ips: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    pub name: String,
    pub cidrs: Vec<Prefix>,
    /// Hand out addresses to Services that do not name a pool.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
}

/// Sessions between nodes (the iBGP mesh and route-reflector sessions).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshFile {
    #[serde(default = "default_mesh_hold_time")]
    pub hold_time: u16,
    /// TCP MD5 key for every node-to-node session.
    #[serde(default)]
    pub password: Option<String>,
    /// BFD on every node-to-node session (as `bfd` of a peer).
    #[serde(default)]
    pub bfd: Option<BfdFile>,
}

impl Default for MeshFile {
    fn default() -> Self {
        MeshFile {
            hold_time: default_mesh_hold_time(),
            password: None,
            bfd: None,
        }
    }
}

/// A LoadBalancer address pool, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub cidrs: Vec<Prefix>,
    pub auto_assign: bool,
}

/// What to advertise, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertise {
    pub cluster_ips: bool,
    pub external_ips: Vec<Prefix>,
    pub load_balancer_ips: bool,
}

/// Everything `routelet agent` runs with, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    pub asn: u32,
    pub namespace: String,
    pub socket: PathBuf,
    pub metrics: Option<SocketAddr>,
    /// `None` = do not listen.
    pub listen_port: Option<u16>,
    pub max_paths: usize,
    pub convergence_timeout: Duration,
    /// `None` = graceful restart off.
    pub graceful_restart: Option<GracefulRestartConfig>,
    /// At most one per address family.
    pub cluster_cidrs: Vec<Prefix>,
    /// At most one per address family.
    pub service_cidrs: Vec<Prefix>,
    pub pod_cidr_source: PodCidrSource,
    pub block_size: u8,
    pub block_size_v6: u8,
    pub block_release_grace: Duration,
    pub advertise: Advertise,
    pub pools: Vec<Pool>,
    /// Routers every node peers with.
    pub peers: Vec<NeighborConfig>,
    pub mesh_hold_time: u16,
    pub mesh_password: Option<String>,
    pub mesh_bfd: Option<BfdTimers>,
    pub kernel: KernelFile,
    pub datapath: DatapathSettings,
}

pub fn load_agent(path: &Path) -> Result<AgentSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_agent(&text, path)
}

/// Checks that `p` has no host bits.
fn truncated(p: Prefix) -> Result<(), String> {
    if p.trunc() == p {
        Ok(())
    } else {
        Err(format!(
            "{p} has host bits set (did you mean {}?)",
            p.trunc()
        ))
    }
}

fn overlaps(a: &Prefix, b: &Prefix) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// At most one CIDR per family, none with host bits.
fn per_family(cidrs: &[Prefix]) -> Result<(), String> {
    for p in cidrs {
        truncated(*p)?;
    }
    let v4 = cidrs.iter().filter(|p| matches!(p, Prefix::V4(_))).count();
    let v6 = cidrs.len() - v4;
    if v4 > 1 || v6 > 1 {
        return Err("at most one CIDR per address family".into());
    }
    Ok(())
}

pub fn parse_agent(text: &str, path: &Path) -> Result<AgentSettings, ConfigError> {
    let file: AgentFile = serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let invalid =
        |key: String, needle: &str, occurrence: usize, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: locate(text, needle, occurrence),
            key,
            message,
        };
    if file.asn == 0 {
        return Err(invalid(
            "asn".into(),
            "asn:",
            0,
            "AS number 0 is reserved (RFC 7607)".into(),
        ));
    }
    let metrics = common_settings(file.max_paths, &file.metrics_address)
        .map_err(|(key, message)| invalid(key.into(), &format!("{key}:"), 0, message))?;
    let cluster_cidrs = file.cluster_cidr.into_vec();
    if cluster_cidrs.is_empty() {
        return Err(invalid(
            "cluster_cidr".into(),
            "cluster_cidr:",
            0,
            "at least one pod network CIDR is needed".into(),
        ));
    }
    per_family(&cluster_cidrs)
        .map_err(|m| invalid("cluster_cidr".into(), "cluster_cidr:", 0, m))?;
    let service_cidrs = file.service_cidr.into_vec();
    per_family(&service_cidrs)
        .map_err(|m| invalid("service_cidr".into(), "service_cidr:", 0, m))?;
    for s in &service_cidrs {
        if let Some(c) = cluster_cidrs.iter().find(|c| overlaps(c, s)) {
            return Err(invalid(
                "service_cidr".into(),
                "service_cidr:",
                0,
                format!("{s} overlaps cluster_cidr {c}"),
            ));
        }
    }
    if file.pod_cidr_source == PodCidrSource::Blocks {
        for c in &cluster_cidrs {
            let (size, key, max) = match c {
                Prefix::V4(_) => (file.block_size, "block_size", 32),
                Prefix::V6(_) => (file.block_size_v6, "block_size_v6", 128),
            };
            if size < c.prefix_len() || size > max {
                return Err(invalid(
                    key.into(),
                    &format!("{key}:"),
                    0,
                    format!(
                        "/{size} blocks do not fit in cluster_cidr {c} (need {}..={max})",
                        c.prefix_len()
                    ),
                ));
            }
        }
    }
    for (i, p) in file.advertise.external_ips.iter().enumerate() {
        truncated(*p)
            .map_err(|m| invalid(format!("advertise.external_ips[{i}]"), &p.to_string(), 0, m))?;
    }
    let mut pools: Vec<Pool> = Vec::new();
    for (i, pool) in file.pools.iter().enumerate() {
        let key = |k: &str| format!("pools[{i}].{k}");
        if pool.name.is_empty() || pool.name.len() > 63 {
            return Err(invalid(
                key("name"),
                "name:",
                i,
                "a pool name is 1..=63 characters".into(),
            ));
        }
        if pools.iter().any(|p| p.name == pool.name) {
            return Err(invalid(
                key("name"),
                &pool.name,
                1,
                format!("duplicate pool name `{}`", pool.name),
            ));
        }
        if pool.cidrs.is_empty() {
            return Err(invalid(
                key("cidrs"),
                &pool.name,
                0,
                "a pool needs at least one CIDR".into(),
            ));
        }
        for (j, c) in pool.cidrs.iter().enumerate() {
            let ckey = format!("pools[{i}].cidrs[{j}]");
            let needle = c.to_string();
            truncated(*c).map_err(|m| invalid(ckey.clone(), &needle, 0, m))?;
            let clash = pools
                .iter()
                .flat_map(|p| p.cidrs.iter().map(move |o| (p, o)))
                .find(|(_, o)| overlaps(o, c));
            if let Some((other, o)) = clash {
                return Err(invalid(
                    ckey,
                    &needle,
                    0,
                    format!("{c} overlaps {o} of pool `{}`", other.name),
                ));
            }
            if pool.cidrs[..j].iter().any(|o| overlaps(o, c)) {
                return Err(invalid(
                    ckey,
                    &needle,
                    0,
                    format!("{c} overlaps another CIDR of the same pool"),
                ));
            }
            if let Some(o) = cluster_cidrs
                .iter()
                .chain(&service_cidrs)
                .find(|o| overlaps(o, c))
            {
                return Err(invalid(
                    ckey,
                    &needle,
                    0,
                    format!("{c} overlaps the cluster's own network {o}"),
                ));
            }
        }
        pools.push(Pool {
            name: pool.name.clone(),
            cidrs: pool.cidrs.clone(),
            auto_assign: pool.auto_assign,
        });
    }
    let mut seen = HashSet::new();
    let mut peers = Vec::new();
    for (i, n) in file.peers.iter().enumerate() {
        let key = |k: &str| format!("peers[{i}].{k}");
        let addr_text = n.address.to_string();
        if !seen.insert(n.address) {
            return Err(invalid(
                key("address"),
                &addr_text,
                1,
                format!("duplicate peer {}", n.address),
            ));
        }
        let peer =
            neighbor_config(n).map_err(|e| invalid(key(e.field), &addr_text, 0, e.message))?;
        peers.push(peer);
    }
    if file.mesh.hold_time == 1 || file.mesh.hold_time == 2 {
        return Err(invalid(
            "mesh.hold_time".into(),
            "hold_time:",
            0,
            "must be 0 or at least 3 seconds (RFC 4271)".into(),
        ));
    }
    if let Some(pw) = &file.mesh.password {
        if pw.is_empty() || pw.len() > bgp::network::MD5_MAX_KEY_LEN {
            return Err(invalid(
                "mesh.password".into(),
                "password:",
                0,
                format!(
                    "TCP MD5 keys are 1..={} bytes",
                    bgp::network::MD5_MAX_KEY_LEN
                ),
            ));
        }
    }
    if file.namespace.is_empty()
        || file.namespace.len() > 63
        || !file
            .namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid(
            "namespace".into(),
            "namespace:",
            0,
            format!("`{}` is not a Kubernetes namespace name", file.namespace),
        ));
    }
    let datapath = datapath_config::validate(
        file.backend,
        file.cross_subnet,
        file.interface,
        file.vxlan,
        file.cni,
    )
    .map_err(|(key, message)| {
        let needle = key.rsplit('.').next().unwrap_or(key);
        invalid(key.into(), &format!("{needle}:"), 0, message)
    })?;
    let mesh_bfd = bfd_timers(file.mesh.bfd).map_err(|(key, message)| {
        let needle = key.rsplit('.').next().unwrap_or(key);
        invalid(format!("mesh.{key}"), &format!("{needle}:"), 0, message)
    })?;
    let graceful_restart = file.graceful_restart.settings().map_err(|(key, message)| {
        let needle = key.rsplit('.').next().unwrap_or(key);
        invalid(key.into(), &format!("{needle}:"), 0, message)
    })?;
    Ok(AgentSettings {
        graceful_restart,
        datapath,
        asn: file.asn,
        namespace: file.namespace,
        socket: file.socket,
        metrics,
        listen_port: (file.listen_port != 0).then_some(file.listen_port),
        max_paths: file.max_paths,
        convergence_timeout: Duration::from_secs(file.convergence_timeout),
        cluster_cidrs,
        service_cidrs,
        pod_cidr_source: file.pod_cidr_source,
        block_size: file.block_size,
        block_size_v6: file.block_size_v6,
        block_release_grace: Duration::from_secs(file.block_release_grace),
        advertise: Advertise {
            cluster_ips: file.advertise.cluster_ips,
            external_ips: file.advertise.external_ips,
            load_balancer_ips: file.advertise.load_balancer_ips,
        },
        pools,
        peers,
        mesh_hold_time: file.mesh.hold_time,
        mesh_password: file.mesh.password,
        mesh_bfd,
        kernel: file.kernel,
    })
}

impl AgentSettings {
    /// The cluster CIDR of `addr`'s family, if the cluster has one.
    pub fn cluster_cidr_of(&self, addr: &IpAddr) -> Option<&Prefix> {
        self.cluster_cidrs
            .iter()
            .find(|c| matches!(c, Prefix::V4(_)) == addr.is_ipv4())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const ISSUE_EXAMPLE: &str = r#"
asn: 64512                     # default for nodes without an annotation
socket: /run/routelet/routelet.sock   # local status API, as for the speaker
cluster_cidr: 10.244.0.0/16
service_cidr: 10.96.0.0/12
pod_cidr_source: node_spec     # node_spec = Node.spec.podCIDRs (e.g. /24 from kube-controller-manager); blocks = routelet's own block IPAM
block_size: 26                 # for pod_cidr_source: blocks
advertise:
  cluster_ips: true            # service CIDR aggregate from every node, /32 from nodes with ready endpoints for internalTrafficPolicy/externalTrafficPolicy Local
  external_ips: [198.51.100.0/24]   # only externalIPs inside these CIDRs are advertised
  load_balancer_ips: true
pools:                         # LoadBalancer IP allocation (MetalLB-like)
  - name: default
    cidrs: [203.0.113.0/28]
peers:                         # routers every node peers with (the ToR pair, a route server)
  - address: 192.0.2.1
    asn: 65000
"#;

    fn parse(t: &str) -> Result<AgentSettings, ConfigError> {
        parse_agent(t, Path::new("agent.yaml"))
    }

    fn p(s: &str) -> Prefix {
        s.parse().expect("test prefix")
    }

    #[test]
    fn issue_example_parses() {
        let s = parse(ISSUE_EXAMPLE).expect("example is valid");
        assert_eq!(s.asn, 64512);
        assert_eq!(s.cluster_cidrs, vec![p("10.244.0.0/16")]);
        assert_eq!(s.service_cidrs, vec![p("10.96.0.0/12")]);
        assert_eq!(s.pod_cidr_source, PodCidrSource::NodeSpec);
        assert_eq!(s.advertise.external_ips, vec![p("198.51.100.0/24")]);
        assert_eq!(s.pools.len(), 1);
        assert_eq!(s.pools[0].cidrs, vec![p("203.0.113.0/28")]);
        assert!(s.pools[0].auto_assign);
        assert_eq!(s.peers.len(), 1);
        assert_eq!(s.peers[0].asn, 65000);
        assert_eq!(s.listen_port, Some(179));
    }

    #[test]
    fn datapath_keys_parse_with_defaults() {
        let s = parse("cluster_cidr: 10.244.0.0/16\n").expect("valid");
        assert_eq!(s.datapath.backend, Backend::Bgp);
        assert_eq!(s.datapath.cross_subnet, CrossSubnet::Vxlan);
        assert_eq!(s.datapath.vxlan, VxlanFile::default());
        let s = parse(
            "cluster_cidr: 10.244.0.0/16\nbackend: host-gw\ncross_subnet: routed\ninterface: eth1\nvxlan: {vni: 7, port: 8472}\ncni: {conf_dir: /tmp/net.d, data_dir: /tmp/cni}\n",
        )
        .expect("valid");
        assert_eq!(s.datapath.backend, Backend::HostGw);
        assert_eq!(s.datapath.cross_subnet, CrossSubnet::Routed);
        assert_eq!(s.datapath.interface.as_deref(), Some("eth1"));
        assert_eq!((s.datapath.vxlan.vni, s.datapath.vxlan.port), (7, 8472));
        assert_eq!(s.datapath.cni.conf_dir, PathBuf::from("/tmp/net.d"));
    }

    #[test]
    fn dual_stack_lists_and_defaults() {
        let s = parse(
            "cluster_cidr: [10.244.0.0/16, 'fd00:10:244::/56']\nservice_cidr: [10.96.0.0/12, 'fd00:10:96::/112']\n",
        )
        .expect("dual stack");
        assert_eq!(s.cluster_cidrs.len(), 2);
        assert_eq!(s.service_cidrs.len(), 2);
        assert_eq!(s.asn, DEFAULT_ASN);
        assert!(s.advertise.cluster_ips && s.advertise.load_balancer_ips);
        assert!(s.advertise.external_ips.is_empty());
        assert_eq!(
            s.cluster_cidr_of(&"fd00:10:244::5".parse().expect("addr")),
            Some(&p("fd00:10:244::/56"))
        );
    }

    /// Each bad input is rejected with the key at fault (and its line where it has one).
    #[test]
    fn semantic_errors_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("asn: 64512", "asn: 0", "`asn`"),
            ("10.244.0.0/16", "10.244.0.1/16", "host bits"),
            (
                "service_cidr: 10.96.0.0/12",
                "service_cidr: 10.240.0.0/12",
                "overlaps cluster_cidr",
            ),
            (
                "203.0.113.0/28",
                "10.244.1.0/28",
                "overlaps the cluster's own network",
            ),
            (
                "[198.51.100.0/24]",
                "[198.51.100.1/24]",
                "advertise.external_ips[0]",
            ),
            (
                "  - address: 192.0.2.1\n    asn: 65000",
                "  - address: 192.0.2.1\n    asn: 0",
                "peers[0].asn",
            ),
            (
                "  - address: 192.0.2.1\n    asn: 65000",
                "  - address: 224.0.0.1\n    asn: 65000",
                "peers[0].address",
            ),
            ("asn: 64512", "asn: 64512\nvxlan:\n  vni: 0", "`vxlan.vni`"),
            ("asn: 64512", "asn: 64512\nbackend: ipip", "backend"),
            (
                "asn: 64512",
                "asn: 64512\ncni:\n  conf_dir: etc/cni",
                "`cni.conf_dir`",
            ),
            (
                "pod_cidr_source: node_spec",
                "pod_cidr_source: ipam",
                "pod_cidr_source",
            ),
            (
                "load_balancer_ips: true",
                "load_balancer_ip: true",
                "load_balancer_ip",
            ),
            ("asn: 64512 ", "max_paths: 0\nasn: 64512 ", "`max_paths`"),
            (
                "asn: 64512 ",
                "metrics_address: nowhere\nasn: 64512 ",
                "`metrics_address`",
            ),
            (
                "asn: 64512 ",
                "namespace: Bad_Name\nasn: 64512 ",
                "`namespace`",
            ),
            (
                "asn: 64512 ",
                "mesh:\n  bfd:\n    multiplier: 0\nasn: 64512 ",
                "`mesh.bfd.multiplier`",
            ),
            (
                "asn: 64512 ",
                "graceful_restart:\n  stale_routes_time: 0\nasn: 64512 ",
                "`graceful_restart.stale_routes_time`",
            ),
        ];
        for (from, to, expect) in cases {
            assert!(
                ISSUE_EXAMPLE.contains(from),
                "case source text missing: {from}"
            );
            let text = ISSUE_EXAMPLE.replace(from, to);
            let e = parse(&text).expect_err(to).to_string();
            assert!(e.contains(expect), "{to}: {e}");
        }
        let blocks = ISSUE_EXAMPLE
            .replace("pod_cidr_source: node_spec", "pod_cidr_source: blocks")
            .replace("block_size: 26 ", "block_size: 12 ");
        let e = parse(&blocks)
            .expect_err("block larger than cluster")
            .to_string();
        assert!(
            e.contains("`block_size`") && e.contains("agent.yaml:7"),
            "{e}"
        );
    }

    #[test]
    fn overlapping_pools_are_rejected() {
        let text = ISSUE_EXAMPLE.replace(
            "peers:",
            "  - name: second\n    cidrs: [203.0.113.8/29]\npeers:",
        );
        let e = parse(&text).expect_err("overlap").to_string();
        assert!(
            e.contains("pools[1].cidrs[0]") && e.contains("pool `default`"),
            "{e}"
        );
        let text = ISSUE_EXAMPLE.replace(
            "peers:",
            "  - name: default\n    cidrs: [203.0.113.64/29]\npeers:",
        );
        let e = parse(&text).expect_err("duplicate name").to_string();
        assert!(e.contains("duplicate pool name"), "{e}");
    }

    #[test]
    fn missing_cluster_cidr_and_garbage() {
        assert!(parse("asn: 64512\n").is_err());
        assert!(parse("cluster_cidr: []\n").is_err());
        assert!(parse("cluster_cidr: [10.0.0.0/8, 10.1.0.0/16]\n").is_err());
        assert!(parse(":::\n- [").is_err());
        assert!(parse("cluster_cidr: hello\n").is_err());
    }

    /// The agent YAML example in the README loads and matches its comments.
    #[test]
    fn readme_example_is_valid() {
        let readme = include_str!("../../README.md");
        let block = readme
            .split("```yaml")
            .skip(1)
            .map(|b| b.split("```").next().unwrap_or_default())
            .find(|b| b.contains("cluster_cidr:"))
            .expect("README has an agent config example");
        let s = parse(block).expect("README agent example is valid");
        assert_eq!(s.block_size_v6, 122);
        assert_eq!(s.mesh_hold_time, 90);
        assert_eq!(s.mesh_password, None);
        assert_eq!(s.kernel.table, 254);
        assert_eq!(s.pools[0].name, "default");
    }
}
