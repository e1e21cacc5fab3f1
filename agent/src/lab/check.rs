//! `routelet lab check`: TCP probes pod->pod (every ordered pair), node->pod and external
//! client->LoadBalancer IP; the path of each from the source node's kernel route (`ip -j route
//! get`), VXLAN device tx counters per node around the run; a matrix or JSON. Classification
//! and rendering are pure.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::cmd;
use super::error::LabError;
use super::responder;
use super::state::LabState;
use super::topology::{Topology, LB_PORT, POD_PORT};

/// Connect and read timeout of one probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const WORKERS: usize = 16;
/// Connections the external client makes to the LoadBalancer IP.
pub const EXTERNAL_CONNECTIONS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    PodPod,
    NodePod,
    ExternalLb,
}

/// The path a probe took, from the source node's route to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    /// Same node.
    Local,
    /// Straight to the other node (no encapsulation).
    Direct,
    /// Through the VXLAN device.
    Vxlan,
    /// Through the ToR (routed fabric).
    ViaTor,
    /// No route, or one this classification does not know.
    Unknown,
}

impl PathKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Local => "local",
            PathKind::Direct => "direct",
            PathKind::Vxlan => "vxlan",
            PathKind::ViaTor => "via-tor",
            PathKind::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub from: String,
    pub to: String,
    pub kind: Kind,
    pub path: PathKind,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// external-lb: the distinct answers (`web@n<i>`: which nodes served the connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answers: Option<Vec<String>>,
    /// Packets the source node's VXLAN device(s) sent while this probe ran alone (a second,
    /// sequential pass over the successful probes from nodes and pods; absent when no node has
    /// a VXLAN device).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vxlan_packets: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub probes: Vec<Probe>,
    /// Packets sent by each node's VXLAN device(s) during the run.
    pub vxlan_tx_packets: BTreeMap<String, u64>,
}

/// Classifies the first entry of `ip -j route get` output, for traffic from node `src` to a
/// target on node `dst` (1-based; `None` = not on a node).
pub fn classify(topo: &Topology, src: usize, dst: Option<usize>, route: &Value) -> PathKind {
    if dst == Some(src) {
        return PathKind::Local;
    }
    let Some(r) = route.as_array().and_then(|a| a.first()) else {
        return PathKind::Unknown;
    };
    if r.get("dev")
        .and_then(Value::as_str)
        .is_some_and(|d| d.starts_with("vxlan"))
    {
        return PathKind::Vxlan;
    }
    let gw = r
        .get("gateway")
        .and_then(Value::as_str)
        .and_then(|g| g.parse::<Ipv4Addr>().ok());
    match gw {
        Some(g) if topo.node_by_addr(g).is_some() => PathKind::Direct,
        Some(g) if topo.is_tor_addr(g) => PathKind::ViaTor,
        _ => PathKind::Unknown,
    }
}

fn route_get(ns: &str, ip: Ipv4Addr) -> Value {
    cmd::ip_in(ns, &["-4", "-j", "route", "get", &ip.to_string()])
        .ok()
        .and_then(|out| serde_json::from_str(&out).ok())
        .unwrap_or(Value::Null)
}

/// Sum of tx packets of the VXLAN devices in namespace `ns`.
fn vxlan_tx(ns: &str) -> u64 {
    let Ok(out) = cmd::ip_in(ns, &["-s", "-j", "link", "show"]) else {
        return 0;
    };
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            l.get("ifname")
                .and_then(Value::as_str)
                .is_some_and(|n| n.starts_with("vxlan"))
        })
        .filter_map(|l| l.pointer("/stats64/tx/packets").and_then(Value::as_u64))
        .sum()
}

fn has_vxlan(ns: &str) -> bool {
    cmd::ip_in(ns, &["-j", "link", "show"])
        .ok()
        .and_then(|out| serde_json::from_str::<Value>(&out).ok())
        .and_then(|v| {
            v.as_array().map(|links| {
                links.iter().any(|l| {
                    l.get("ifname")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.starts_with("vxlan"))
                })
            })
        })
        .unwrap_or(false)
}

/// Runs every successful probe from a node or pod again, one at a time, and records how many
/// packets the source node's VXLAN device(s) sent meanwhile.
fn confirm_vxlan(topo: &Topology, jobs: &[Job], probes: &mut [Probe]) {
    for (job, probe) in jobs.iter().zip(probes.iter_mut()) {
        let Some(src) = job.src_node.filter(|_| probe.ok) else {
            continue;
        };
        let ns = topo.node(src).netns;
        let before = vxlan_tx(&ns);
        let _ = responder::probe(&job.from_ns, job.addr, PROBE_TIMEOUT);
        probe.vxlan_packets = Some(vxlan_tx(&ns).saturating_sub(before));
    }
}

struct Job {
    from: String,
    from_ns: String,
    /// The node the probe leaves from (1-based; `None` for the external client).
    src_node: Option<usize>,
    to: String,
    kind: Kind,
    path: PathKind,
    addr: SocketAddr,
    expect: String,
}

fn jobs(lab: &LabState) -> Vec<Job> {
    let topo = &lab.topology;
    let mut out = Vec::new();
    let mut routes: BTreeMap<(usize, Ipv4Addr), Value> = BTreeMap::new();
    let mut path = |src: usize, dst: usize, ip: Ipv4Addr| {
        let route = routes
            .entry((src, ip))
            .or_insert_with(|| route_get(&topo.node(src).netns, ip));
        classify(topo, src, Some(dst), route)
    };
    for from in &lab.pods {
        for to in &lab.pods {
            if from.name == to.name {
                continue;
            }
            out.push(Job {
                from: from.name.clone(),
                from_ns: from.netns.clone(),
                src_node: Some(from.node),
                to: to.name.clone(),
                kind: Kind::PodPod,
                path: path(from.node, to.node, to.ip),
                addr: SocketAddr::from((to.ip, POD_PORT)),
                expect: to.name.clone(),
            });
        }
    }
    for n in topo.node_list() {
        for to in &lab.pods {
            out.push(Job {
                from: n.name.clone(),
                from_ns: n.netns.clone(),
                src_node: Some(n.index),
                to: to.name.clone(),
                kind: Kind::NodePod,
                path: path(n.index, to.node, to.ip),
                addr: SocketAddr::from((to.ip, POD_PORT)),
                expect: to.name.clone(),
            });
        }
    }
    if let Some(ip) = lab.lb_ip {
        let tor_route = route_get(&topo.tor_ns(), ip);
        let gw = tor_route
            .as_array()
            .and_then(|a| a.first())
            .and_then(|r| r.get("gateway"))
            .and_then(Value::as_str)
            .and_then(|g| g.parse::<Ipv4Addr>().ok());
        out.push(Job {
            from: "ext".into(),
            from_ns: topo.ext_ns(),
            src_node: None,
            to: format!("lb {ip}"),
            kind: Kind::ExternalLb,
            path: if gw.is_some_and(|g| topo.node_by_addr(g).is_some()) {
                PathKind::ViaTor
            } else {
                PathKind::Unknown
            },
            addr: SocketAddr::from((ip, LB_PORT)),
            expect: "web@".into(),
        });
    }
    out
}

/// The nodes the ToR's route to `ip` leads to (names; other next hops as addresses).
fn tor_next_hops(topo: &Topology, ip: Ipv4Addr) -> Vec<String> {
    let v: Value = cmd::ip_in(
        &topo.tor_ns(),
        &["-4", "-j", "route", "show", &ip.to_string()],
    )
    .ok()
    .and_then(|out| serde_json::from_str(&out).ok())
    .unwrap_or(Value::Null);
    let mut gws = Vec::new();
    for r in v.as_array().into_iter().flatten() {
        if let Some(g) = r.get("gateway").and_then(Value::as_str) {
            gws.push(g.to_string());
        }
        for nh in r
            .get("nexthops")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(g) = nh.get("gateway").and_then(Value::as_str) {
                gws.push(g.to_string());
            }
        }
    }
    let mut out: Vec<String> = gws
        .into_iter()
        .map(|g| {
            g.parse::<Ipv4Addr>()
                .ok()
                .and_then(|a| topo.node_by_addr(a))
                .map(|i| format!("n{i}"))
                .unwrap_or(g)
        })
        .collect();
    out.sort();
    out
}

fn probe_once(j: &Job) -> Result<String, String> {
    let answer = responder::probe(&j.from_ns, j.addr, PROBE_TIMEOUT)?;
    let good = match j.kind {
        Kind::ExternalLb => answer.starts_with(&j.expect),
        _ => answer == j.expect,
    };
    if good {
        Ok(answer)
    } else {
        Err(format!(
            "{} answered {answer:?}, expected {:?}",
            j.addr, j.expect
        ))
    }
}

fn run_job(j: &Job) -> Probe {
    let (error, answers) = if j.kind == Kind::ExternalLb {
        // Several connections (new source ports): the ToR hashes flows over its ECMP next
        // hops (L4 hash), so every node it may pick is exercised.
        let mut errors = Vec::new();
        let mut answers = std::collections::BTreeSet::new();
        for _ in 0..EXTERNAL_CONNECTIONS {
            match probe_once(j) {
                Ok(a) => {
                    answers.insert(a);
                }
                Err(e) => errors.push(e),
            }
        }
        let error = (!errors.is_empty()).then(|| {
            format!(
                "{} of {EXTERNAL_CONNECTIONS} connections failed: {}",
                errors.len(),
                errors.join("; ")
            )
        });
        (error, Some(answers.into_iter().collect()))
    } else {
        (probe_once(j).err(), None)
    };
    Probe {
        from: j.from.clone(),
        to: j.to.clone(),
        kind: j.kind,
        path: j.path,
        ok: error.is_none(),
        error,
        answers,
        vxlan_packets: None,
    }
}

/// Probes the lab in `state_dir`.
pub fn probe_all(state_dir: &Path) -> Result<(LabState, Report), LabError> {
    let lab = LabState::load(state_dir)?;
    let topo = lab.topology.clone();
    let jobs = jobs(&lab);
    let before: BTreeMap<String, u64> = topo
        .node_list()
        .into_iter()
        .map(|n| (n.name.clone(), vxlan_tx(&n.netns)))
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Probe>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|s| {
        for _ in 0..WORKERS.min(jobs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let p = run_job(job);
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(p);
                }
            });
        }
    });
    let probes: Vec<Probe> = results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    let vxlan_tx_packets: BTreeMap<String, u64> = topo
        .node_list()
        .into_iter()
        .map(|n| {
            let b = before.get(&n.name).copied().unwrap_or(0);
            (n.name.clone(), vxlan_tx(&n.netns).saturating_sub(b))
        })
        .collect();
    let mut probes = probes;
    if let Some(ip) = lab.lb_ip {
        for p in probes
            .iter_mut()
            .filter(|p| p.kind == Kind::ExternalLb && !p.ok)
        {
            let hops = tor_next_hops(&topo, ip);
            let endpoints: Vec<String> = topo.lb_nodes().iter().map(|i| format!("n{i}")).collect();
            if let Some(e) = p.error.as_mut() {
                e.push_str(&format!(
                    "; the ToR routes {ip} to [{}], the Service's ready endpoints are on [{}] (externalTrafficPolicy Local)",
                    hops.join(", "),
                    endpoints.join(", ")
                ));
            }
        }
    }
    if topo.node_list().iter().any(|n| has_vxlan(&n.netns)) {
        confirm_vxlan(&topo, &jobs, &mut probes);
    }
    let mut ok = probes.len() == jobs.len() && probes.iter().all(|p| p.ok);
    if lab.pods.len() != topo.pods().len() || lab.lb_ip.is_none() {
        ok = false;
    }
    Ok((
        lab,
        Report {
            ok,
            probes,
            vxlan_tx_packets,
        },
    ))
}

/// The matrix (rows: sources, columns: pods; cells `ok/direct`, `FAIL/vxlan`, ...) and a summary.
pub fn render(lab: &LabState, report: &Report) -> String {
    let cols: Vec<&str> = lab.pods.iter().map(|p| p.name.as_str()).collect();
    let mut rows: Vec<String> = lab
        .topology
        .node_list()
        .into_iter()
        .map(|n| n.name)
        .collect();
    rows.extend(lab.pods.iter().map(|p| p.name.clone()));
    let cell = |from: &str, to: &str| -> String {
        report
            .probes
            .iter()
            .find(|p| p.from == from && p.to == to)
            .map(|p| format!("{}/{}", if p.ok { "ok" } else { "FAIL" }, p.path.as_str()))
            .unwrap_or_else(|| "-".into())
    };
    let width = cols
        .iter()
        .map(|c| c.len())
        .chain(std::iter::once("FAIL/unknown".len()))
        .max()
        .unwrap_or(12)
        + 1;
    let first = rows.iter().map(String::len).max().unwrap_or(6).max(8) + 1;
    let mut out = format!("{:first$}", "from\\to");
    for c in &cols {
        out.push_str(&format!("{c:width$}"));
    }
    out.push('\n');
    for r in &rows {
        out.push_str(&format!("{r:first$}"));
        for c in &cols {
            out.push_str(&format!("{:width$}", cell(r, c)));
        }
        out.push('\n');
    }
    for p in report.probes.iter().filter(|p| p.kind == Kind::ExternalLb) {
        out.push_str(&format!(
            "{} -> {}: {}/{} (answered by: {})\n",
            p.from,
            p.to,
            if p.ok { "ok" } else { "FAIL" },
            p.path.as_str(),
            p.answers.as_deref().unwrap_or_default().join(", ")
        ));
    }
    if lab.lb_ip.is_none() {
        out.push_str("ext -> lb: FAIL (no LoadBalancer IP recorded)\n");
    }
    let failed: Vec<&Probe> = report.probes.iter().filter(|p| !p.ok).collect();
    let mut by_path: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &report.probes {
        *by_path.entry(p.path.as_str()).or_default() += 1;
    }
    out.push_str(&format!(
        "\n{} probes, {} ok, {} failed; paths: {}\n",
        report.probes.len(),
        report.probes.len() - failed.len(),
        failed.len(),
        by_path
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out.push_str(&format!(
        "vxlan tx packets during the run: {}\n",
        report
            .vxlan_tx_packets
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if !lab.ready {
        out.push_str("warning: `lab up` did not finish (the lab is not ready)\n");
    }
    for p in failed {
        out.push_str(&format!(
            "FAIL {} -> {} ({}): {}\n",
            p.from,
            p.to,
            p.path.as_str(),
            p.error.as_deref().unwrap_or("")
        ));
    }
    out.push_str(if report.ok { "OK\n" } else { "FAILED\n" });
    out
}

/// Runs `check`: prints the matrix or JSON; `Ok(true)` if every probe passed.
pub fn run(state_dir: &Path, json: bool) -> Result<bool, LabError> {
    let (lab, report) = probe_all(state_dir)?;
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| LabError::Parse {
            path: state_dir.to_path_buf(),
            message: e.to_string(),
        })?;
        println!("{text}");
    } else {
        print!("{}", render(&lab, &report));
    }
    Ok(report.ok)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lab::state::Pod;
    use crate::lab::topology::{Backend, Tor};
    use serde_json::json;

    fn topo() -> Topology {
        Topology::new("t", 4, 2, Backend::Bgp, Tor::Routelet, Path::new("/x")).unwrap()
    }

    #[test]
    fn paths_from_route_get() {
        let t = topo();
        let direct = json!([{"dst": "10.244.2.5", "gateway": "10.100.1.12", "dev": "eth0"}]);
        assert_eq!(classify(&t, 1, Some(2), &direct), PathKind::Direct);
        let vx = json!([{"dst": "10.244.3.5", "gateway": "10.244.3.0", "dev": "vxlan.routelet", "flags": ["onlink"]}]);
        assert_eq!(classify(&t, 1, Some(3), &vx), PathKind::Vxlan);
        let tor = json!([{"dst": "10.244.3.5", "gateway": "10.100.1.1", "dev": "eth0"}]);
        assert_eq!(classify(&t, 1, Some(3), &tor), PathKind::ViaTor);
        let local = json!([{"dst": "10.244.1.5", "dev": "veth1234"}]);
        assert_eq!(classify(&t, 1, Some(1), &local), PathKind::Local);
        assert_eq!(classify(&t, 1, Some(2), &Value::Null), PathKind::Unknown);
        let odd = json!([{"dst": "10.244.2.5", "gateway": "192.0.2.9", "dev": "eth0"}]);
        assert_eq!(classify(&t, 1, Some(2), &odd), PathKind::Unknown);
    }

    #[test]
    fn json_shape_and_matrix() {
        let mut lab = LabState::new(topo());
        lab.pods = vec![
            Pod {
                name: "n1-p1".into(),
                node: 1,
                netns: "t-n1-p1".into(),
                ip: Ipv4Addr::new(10, 244, 1, 2),
            },
            Pod {
                name: "n3-p1".into(),
                node: 3,
                netns: "t-n3-p1".into(),
                ip: Ipv4Addr::new(10, 244, 3, 2),
            },
        ];
        lab.lb_ip = Some(Ipv4Addr::new(203, 0, 113, 1));
        let report = Report {
            ok: false,
            probes: vec![
                Probe {
                    from: "n1-p1".into(),
                    to: "n3-p1".into(),
                    kind: Kind::PodPod,
                    path: PathKind::Vxlan,
                    ok: true,
                    error: None,
                    answers: None,
                    vxlan_packets: Some(4),
                },
                Probe {
                    from: "n3-p1".into(),
                    to: "n1-p1".into(),
                    kind: Kind::PodPod,
                    path: PathKind::ViaTor,
                    ok: false,
                    error: Some("connect: timed out".into()),
                    answers: None,
                    vxlan_packets: None,
                },
                Probe {
                    from: "ext".into(),
                    to: "lb 203.0.113.1".into(),
                    kind: Kind::ExternalLb,
                    path: PathKind::ViaTor,
                    ok: true,
                    error: None,
                    answers: None,
                    vxlan_packets: None,
                },
            ],
            vxlan_tx_packets: BTreeMap::from([("n1".to_string(), 3)]),
        };
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["probes"][0]["kind"], "pod-pod");
        assert_eq!(v["probes"][0]["path"], "vxlan");
        assert!(v["probes"][0].get("error").is_none());
        assert_eq!(v["probes"][0]["vxlan_packets"], 4);
        assert!(v["probes"][1].get("vxlan_packets").is_none());
        assert_eq!(v["probes"][1]["path"], "via-tor");
        assert_eq!(v["probes"][1]["error"], "connect: timed out");
        assert_eq!(v["probes"][2]["kind"], "external-lb");
        let text = render(&lab, &report);
        assert!(text.contains("ok/vxlan"), "{text}");
        assert!(text.contains("FAIL/via-tor"), "{text}");
        assert!(text.contains("FAIL n3-p1 -> n1-p1"), "{text}");
        assert!(text.trim_end().ends_with("FAILED"), "{text}");
    }
}
