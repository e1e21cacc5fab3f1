//! A Kubernetes cluster in network namespaces: the API stand-in (`routelet lab apiserver`) in
//! its own namespace and one namespace per node, all on one bridge (10.0.0.0/24), or spread
//! over racks (one bridge and /24 per rack, the hub namespace routing between them);
//! `routelet agent` per node. API calls from the test run inside the API server's namespace (python3
//! urllib through `ip netns exec`), so nothing leaves the namespaces.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::daemon::Daemon;
use super::netns::{bridge, veth};
use super::routelet::{Routelet, BIN};
use super::{parse_json, wait_until, Lab, LabError, Netns, Result};

/// The API server's address on the cluster bridge.
pub const API_ADDR: &str = "10.0.0.100";
pub const API_PORT: &str = "6443";

/// Address of node `i` (1-based) on the bridge.
pub fn node_addr(i: usize) -> String {
    format!("10.0.0.{i}")
}

/// Address of node `i` on rack `rack` (0-based; rack 0 is the API server's).
pub fn rack_addr(rack: usize, i: usize) -> String {
    format!("10.0.{rack}.{i}")
}

/// The hub's (router's) address on rack `rack`.
pub fn rack_gateway(rack: usize) -> String {
    format!("10.0.{rack}.254")
}

/// Pod CIDR of node `i`.
pub fn pod_cidr(i: usize) -> String {
    format!("10.244.{i}.0/24")
}

pub struct Cluster {
    /// Declared before the namespaces so processes stop before their namespaces go.
    pub api: Option<Daemon>,
    pub agents: Vec<Option<Routelet>>,
    pub api_ns: Netns,
    pub nodes: Vec<Netns>,
    pub hub: Netns,
    pub kubeconfig: PathBuf,
    /// The agent config shared by every node (each gets its own copy with its socket).
    pub config: String,
    /// InternalIP of each node.
    pub addrs: Vec<String>,
    data: PathBuf,
}

impl Cluster {
    /// Builds the namespaces and starts the API server (agents are started separately).
    pub fn new(lab: &Lab, nodes: usize, agent_config: &str) -> Result<Cluster> {
        Cluster::with_racks(lab, &vec![0; nodes], agent_config)
    }

    /// Node `i` (1-based) on rack `racks[i - 1]`: rack r is bridge `br<r>` in the hub with
    /// 10.0.r.0/24 (the hub routes between racks as 10.0.r.254; nodes' default route); the API
    /// server is on rack 0.
    pub fn with_racks(lab: &Lab, racks: &[usize], agent_config: &str) -> Result<Cluster> {
        let hub = lab.netns()?;
        let rack_count = racks.iter().copied().max().unwrap_or(0) + 1;
        for r in 0..rack_count {
            bridge(&hub, &format!("br{r}"))?;
            if rack_count > 1 {
                hub.ip(&[
                    "addr",
                    "add",
                    &format!("{}/24", rack_gateway(r)),
                    "dev",
                    &format!("br{r}"),
                ])?;
            }
        }
        let api_ns = lab.netns()?;
        veth(
            &api_ns,
            "eth0",
            &[&format!("{API_ADDR}/24")],
            &hub,
            "api",
            &[],
        )?;
        hub.ip(&["link", "set", "api", "master", "br0"])?;
        if rack_count > 1 {
            api_ns.ip(&["route", "add", "default", "via", &rack_gateway(0)])?;
        }
        let mut node_ns = Vec::new();
        let mut addrs = Vec::new();
        for (idx, rack) in racks.iter().enumerate() {
            let i = idx + 1;
            let ns = lab.netns()?;
            let port = format!("n{i}");
            let addr = rack_addr(*rack, i);
            veth(&ns, "eth0", &[&format!("{addr}/24")], &hub, &port, &[])?;
            hub.ip(&["link", "set", &port, "master", &format!("br{rack}")])?;
            if rack_count > 1 {
                ns.ip(&["route", "add", "default", "via", &rack_gateway(*rack)])?;
            }
            node_ns.push(ns);
            addrs.push(addr);
        }
        let kubeconfig = lab.write(
            "kubeconfig",
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://{API_ADDR}:{API_PORT}\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: lab\ncurrent-context: lab\nusers:\n- name: lab\n  user: {{}}\n"
            ),
        )?;
        let mut c = Cluster {
            api: None,
            agents: (0..racks.len()).map(|_| None).collect(),
            api_ns,
            nodes: node_ns,
            hub,
            kubeconfig,
            config: agent_config.to_string(),
            addrs,
            data: lab.path("api-store.json"),
        };
        c.start_api(lab)?;
        Ok(c)
    }

    /// Starts (or restarts) the API server on its persisted store.
    pub fn start_api(&mut self, lab: &Lab) -> Result<()> {
        let listen = format!("{API_ADDR}:{API_PORT}");
        let daemon = Daemon::spawn(
            lab,
            &self.api_ns,
            "apiserver",
            &[
                BIN,
                "lab",
                "apiserver",
                "--listen",
                &listen,
                "--data",
                &self.data.to_string_lossy(),
            ],
            &[],
        )?;
        self.api = Some(daemon);
        wait_until(
            "API server answers /healthz",
            Duration::from_secs(10),
            |seen| {
                if let Some(d) = self.api.as_mut() {
                    d.check_running()?;
                }
                let r = self.request("GET", "/healthz", None, "application/json");
                seen.push_str(&format!("{r:?}"));
                Ok(r.is_ok())
            },
        )?;
        Ok(())
    }

    pub fn stop_api(&mut self) {
        if let Some(mut d) = self.api.take() {
            d.stop();
        }
    }

    /// One HTTP request to the API server; the response body as JSON (`null` when empty or not
    /// JSON), or an error with the status and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> Result<Value> {
        let url = format!("http://{API_ADDR}:{API_PORT}{path}");
        let body = body.map(Value::to_string).unwrap_or_default();
        let out = self.api_ns.exec(&[
            "/usr/bin/python3",
            "-c",
            "import sys, urllib.request, urllib.error\n\
             m, url, ct, body = sys.argv[1:5]\n\
             req = urllib.request.Request(url, method=m, data=body.encode() if body else None, headers={'Content-Type': ct, 'Accept': 'application/json'})\n\
             try:\n    print(urllib.request.urlopen(req, timeout=5).read().decode())\n\
             except urllib.error.HTTPError as e:\n    sys.stderr.write('HTTP %d %s' % (e.code, e.read().decode())); sys.exit(1)\n",
            method,
            &url,
            content_type,
            &body,
        ])?;
        Ok(serde_json::from_str(out.trim()).unwrap_or(Value::Null))
    }

    /// Notes of the Events (events.k8s.io, every namespace) with `reason` about the object
    /// named `name`.
    pub fn event_notes(&self, reason: &str, name: &str) -> Result<Vec<String>> {
        let events = self.request(
            "GET",
            "/apis/events.k8s.io/v1/events",
            None,
            "application/json",
        )?;
        Ok(events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["reason"] == reason && e["regarding"]["name"] == name)
            .filter_map(|e| e["note"].as_str().map(str::to_string))
            .collect())
    }

    /// Creates node `i` with its InternalIP and pod CIDR (status written through /status, as
    /// the kubelet does).
    pub fn create_node(&self, i: usize, annotations: Value) -> Result<()> {
        let name = format!("n{i}");
        self.request(
            "POST",
            "/api/v1/nodes",
            Some(&json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "annotations": annotations},
                "spec": {"podCIDR": pod_cidr(i), "podCIDRs": [pod_cidr(i)]},
            })),
            "application/json",
        )?;
        self.request(
            "PATCH",
            &format!("/api/v1/nodes/{name}/status"),
            Some(&json!({"status": {"addresses": [
                {"type": "InternalIP", "address": self.addrs[i - 1]},
                {"type": "Hostname", "address": name},
            ]}})),
            "application/merge-patch+json",
        )?;
        Ok(())
    }

    /// Merge-patches node `i`'s annotations (a `null` value removes one).
    pub fn annotate_node(&self, i: usize, annotations: Value) -> Result<()> {
        self.request(
            "PATCH",
            &format!("/api/v1/nodes/n{i}"),
            Some(&json!({"metadata": {"annotations": annotations}})),
            "application/merge-patch+json",
        )?;
        Ok(())
    }

    /// Starts `routelet agent` for node `i` and waits for its status socket.
    pub fn start_agent(&mut self, lab: &Lab, i: usize) -> Result<()> {
        self.spawn_agent(lab, i)?;
        self.wait_agent(i)
    }

    /// Waits until node `i`'s agent answers on its status socket.
    pub fn wait_agent(&mut self, i: usize) -> Result<()> {
        let name = format!("n{i}");
        let Some(agent) = self.agents.get_mut(i - 1).and_then(Option::as_mut) else {
            return Err(LabError::Check(format!("agent {name} not started")));
        };
        wait_until(
            &format!("agent {name} status socket"),
            Duration::from_secs(15),
            |seen| {
                agent.daemon.check_running()?;
                let st = agent.status();
                seen.push_str(&format!("{st:?}"));
                Ok(st.is_ok())
            },
        )?;
        Ok(())
    }

    /// Starts `routelet agent` for node `i` without waiting for it.
    pub fn spawn_agent(&mut self, lab: &Lab, i: usize) -> Result<()> {
        let name = format!("n{i}");
        let socket = lab.path(&format!("{name}.sock"));
        // The CNI conflist and allocations go to the lab dir, never to the host's.
        let cni = if self.config.starts_with("cni:") || self.config.contains("\ncni:") {
            String::new()
        } else {
            format!(
                "cni:\n  conf_dir: {}\n  data_dir: {}\n",
                lab.path(&format!("{name}-net.d")).display(),
                lab.path(&format!("{name}-cni")).display()
            )
        };
        let config = lab.write(
            &format!("agent-{name}.yaml"),
            &format!("socket: {}\n{cni}{}", socket.display(), self.config),
        )?;
        let ns = &self.nodes[i - 1];
        let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string());
        let daemon = Daemon::spawn(
            lab,
            ns,
            &format!("agent-{name}"),
            &[
                BIN,
                "agent",
                "--kubeconfig",
                &self.kubeconfig.to_string_lossy(),
                "--node-name",
                &name,
                "--config",
                &config.to_string_lossy(),
            ],
            &[("ROUTELET_LOG", &log)],
        )?;
        self.agents[i - 1] = Some(Routelet::from_daemon(daemon, socket, ns, None));
        Ok(())
    }

    pub fn agent(&self, i: usize) -> Result<&Routelet> {
        self.agents
            .get(i - 1)
            .and_then(Option::as_ref)
            .ok_or_else(|| LabError::Check(format!("agent n{i} not running")))
    }

    /// Gateways of node `i`'s kernel route (proto 200) for `prefix`.
    pub fn gateways(&self, i: usize, prefix: &str) -> Result<Vec<String>> {
        let out = self.nodes[i - 1].ip(&["-j", "route", "show", prefix, "proto", "200"])?;
        let v = parse_json(
            "ip -j route",
            if out.trim().is_empty() { "[]" } else { &out },
        )?;
        let mut hops = Vec::new();
        for r in v.as_array().into_iter().flatten() {
            if let Some(g) = r.get("gateway").and_then(Value::as_str) {
                hops.push(g.to_string());
            }
            for nh in r
                .get("nexthops")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(g) = nh.get("gateway").and_then(Value::as_str) {
                    hops.push(g.to_string());
                }
            }
        }
        hops.sort();
        Ok(hops)
    }

    /// Addresses of node `i`'s configured neighbors (from its status).
    pub fn neighbors(&self, i: usize) -> Result<Vec<String>> {
        let st = self.agent(i)?.status()?;
        let mut out: Vec<String> = st["neighbors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["address"].as_str().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every node has every other node's pod CIDR via that node.
    pub fn pod_routes_complete(&self, nodes: usize, seen: &mut String) -> Result<bool> {
        for i in 1..=nodes {
            for j in 1..=nodes {
                if i == j {
                    continue;
                }
                let gw = self.gateways(i, &pod_cidr(j))?;
                if gw != vec![node_addr(j)] {
                    seen.push_str(&format!("n{i}: {} via {gw:?}; ", pod_cidr(j)));
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// The agent config every lab node uses (the socket is added per node).
pub const AGENT_CONFIG: &str = "asn: 64512
cluster_cidr: 10.244.0.0/16
service_cidr: 10.96.0.0/12
metrics_address: ''
convergence_timeout: 5
advertise:
  external_ips: [198.51.100.0/24]
pools:
  - name: default
    cidrs: [203.0.113.0/28]
mesh:
  hold_time: 9
";
