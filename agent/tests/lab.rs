//! `routelet lab up | check | down` end to end, one whole lab per test (serialized): every pod
//! reaches every pod, same-rack pairs never use VXLAN, cross-rack pairs do under
//! `cross_subnet: vxlan`, a killed agent is replaced within 2 s, agent restarts (SIGKILL,
//! SIGTERM) lose not one packet of 200/s ping streams, and `down` leaves nothing.
//! Each test uses its own prefix `rll<pid><tag>` and a temp state dir; a Drop guard runs
//! `lab down` whatever happens.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agent::lab::state::{LabState, Pids};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_routelet");

/// One lab at a time: each builds a whole cluster.
static LOCK: Mutex<()> = Mutex::new(());

struct Guard {
    state_dir: PathBuf,
    prefix: String,
}

impl Guard {
    /// The lab of one test: prefix `rll<pid><tag>`, state dir `<tmp>/<prefix>-state`.
    fn new(tag: &str) -> Guard {
        let prefix = format!("rll{}{tag}", std::process::id());
        let state_dir = std::env::temp_dir().join(format!("{prefix}-state"));
        Guard { state_dir, prefix }
    }

    /// (prefix, state dir, state dir as a string for the command line).
    fn names(&self) -> (String, PathBuf, String) {
        let state = self.state_dir.to_string_lossy().into_owned();
        (self.prefix.clone(), self.state_dir.clone(), state)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .args(["lab", "down", "--state-dir"])
            .arg(&self.state_dir)
            .args(["--prefix", &self.prefix])
            .status();
    }
}

fn routelet(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn show(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let i = s.rfind(')')?;
            s.get(i + 1..)?
                .split_whitespace()
                .next()
                .map(|st| st != "Z" && st != "X")
        })
        .unwrap_or(false)
}

fn lab_namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_string)
        .collect()
}

/// `lab check --json`, parsed.
fn check(state: &str) -> (Value, String) {
    let out = routelet(&["lab", "check", "--json", "--state-dir", state]);
    let text = show("lab check --json", &out);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check printed no JSON ({e}): {text}"));
    (v, text)
}

fn failures(report: &Value) -> Vec<String> {
    report["probes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["ok"] != true)
        .map(|p| {
            format!(
                "{} -> {} ({}): {}",
                p["from"], p["to"], p["path"], p["error"]
            )
        })
        .collect()
}

/// Path rules (the problems found, empty = all good): every ordered pod pair present; same
/// node `local`; with bgp/host-gw same rack `direct` (never vxlan) and cross-rack `vxlan`
/// (`cross_subnet: vxlan`) or `via-tor` (`routed`); with the vxlan backend every cross-node
/// pair `vxlan`; packet
/// counts agree with the path; the external client reaches the LoadBalancer IP.
fn path_problems(lab: &LabState, report: &Value) -> Vec<String> {
    let topo = &lab.topology;
    let mut bad = Vec::new();
    let probes = report["probes"].as_array().cloned().unwrap_or_default();
    let mut pairs = BTreeSet::new();
    let vxlan_backend = topo.backend == agent::lab::topology::Backend::Vxlan;
    for p in probes.iter().filter(|p| p["kind"] == "pod-pod") {
        let from = p["from"].as_str().unwrap();
        let to = p["to"].as_str().unwrap();
        pairs.insert((from.to_string(), to.to_string()));
        let node = |name: &str| lab.pods.iter().find(|x| x.name == name).unwrap().node;
        let (a, b) = (node(from), node(to));
        let path = p["path"].as_str().unwrap();
        let routed = topo.cross_subnet == agent::lab::topology::CrossSubnet::Routed;
        let want = if a == b {
            "local"
        } else if vxlan_backend {
            "vxlan"
        } else if topo.rack_of(a) == topo.rack_of(b) {
            "direct"
        } else if routed {
            "via-tor"
        } else {
            "vxlan"
        };
        if path != want {
            bad.push(format!("{from} -> {to}: path {path}, expected {want}"));
        }
    }
    // Cross-check the route classification with packet counts: `check` re-runs every probe
    // alone and records what the source node's VXLAN device sent meanwhile.
    for p in probes.iter().filter(|p| p["kind"] != "external-lb") {
        let Some(sent) = p["vxlan_packets"].as_u64() else {
            continue;
        };
        let what = format!("{} -> {} ({})", p["from"], p["to"], p["path"]);
        if p["path"] == "vxlan" && sent == 0 {
            bad.push(format!("{what}: the VXLAN device sent nothing"));
        } else if p["path"] != "vxlan" && sent != 0 {
            bad.push(format!("{what}: the VXLAN device sent {sent} packets"));
        }
    }
    let n = lab.pods.len();
    if n != topo.nodes * 2 {
        bad.push(format!("pods: {:?}", lab.pods));
    }
    if pairs.len() != n * n.saturating_sub(1) {
        bad.push(format!(
            "{} ordered pod pairs probed, expected {}",
            pairs.len(),
            n * n.saturating_sub(1)
        ));
    }
    if !probes
        .iter()
        .any(|p| p["kind"] == "external-lb" && p["ok"] == true)
    {
        bad.push("external client -> LB failed or missing".into());
    }
    bad
}

/// The ToR's and the nodes' routing tables, for failure messages.
fn routes(lab: &LabState) -> String {
    let topo = &lab.topology;
    let mut out = String::new();
    let mut namespaces = vec![topo.tor_ns()];
    namespaces.extend(topo.node_list().into_iter().map(|n| n.netns));
    for ns in namespaces {
        let r = Command::new("ip")
            .args(["-n", &ns, "route"])
            .output()
            .unwrap();
        let n = Command::new("ip")
            .args(["-n", &ns, "neigh"])
            .output()
            .unwrap();
        out.push_str(&format!(
            "--- {ns} routes\n{}--- {ns} neighbours\n{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&n.stdout)
        ));
    }
    out
}

fn run_lab(tag: &str, backend: &str, tor: &str) {
    run_lab_with(tag, backend, tor, "vxlan")
}

fn run_lab_with(tag: &str, backend: &str, tor: &str, cross_subnet: &str) {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut guard = Some(Guard::new(tag));
    let (prefix, state_dir, state) = guard.as_ref().map(Guard::names).unwrap();

    let out = routelet(&[
        "lab",
        "up",
        "--prefix",
        &prefix,
        "--state-dir",
        &state,
        "--backend",
        backend,
        "--tor",
        tor,
        "--cross-subnet",
        cross_subnet,
    ]);
    assert!(out.status.success(), "{}", show("lab up", &out));

    // A second `up` on the same state dir is refused and leaves the lab alone.
    let again = routelet(&["lab", "up", "--prefix", &prefix, "--state-dir", &state]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already up"),
        "{}",
        show("second lab up", &again)
    );

    let lab = LabState::load(&state_dir).unwrap();
    let (report, text) = check(&state);
    assert_eq!(
        report["ok"],
        true,
        "failed: {:?}\n{}\n{text}",
        failures(&report),
        routes(&lab)
    );
    let bad = path_problems(&lab, &report);
    assert!(bad.is_empty(), "{bad:#?}\n{text}");

    // kill -9 an agent: a new PID within 2 s, and the lab still works.
    let pids = Pids::load(&state_dir).unwrap().unwrap();
    let old = pids.processes["n1"].pid;
    assert!(alive(old));
    signal(old, "KILL");
    wait_new_pid(&state_dir, "n1", old, Duration::from_secs(2));
    // Wait for everything to be as before (graceful restart keeps the peers' routes, see
    // `lab_agent_restarts_lose_no_packet`; this loop only needs the agent back).
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(30);
    loop {
        let (report, text) = check(&state);
        let mut bad = failures(&report);
        bad.extend(path_problems(&lab, &report));
        if report["ok"] == true && bad.is_empty() {
            eprintln!(
                "lab {prefix}: all probes ok with the usual paths {:.1} s after the agent restart",
                restarted.elapsed().as_secs_f64()
            );
            break;
        }
        if !bad.is_empty() {
            eprintln!("lab {prefix}: after the agent restart: {bad:?}");
        }
        assert!(
            Instant::now() < deadline,
            "check after the agent restart: {bad:#?}\n{text}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // down: nothing left.
    let pids = Pids::load(&state_dir).unwrap().unwrap();
    let recorded: Vec<u32> = std::iter::once(pids.supervisor)
        .chain(pids.processes.values().map(|p| p.pid))
        .collect();
    let out = routelet(&["lab", "down", "--state-dir", &state]);
    assert!(out.status.success(), "{}", show("lab down", &out));
    guard.take();
    assert_eq!(lab_namespaces(&prefix), Vec::<String>::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    while recorded.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<u32> = recorded.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "still alive after down: {left:?}");
    assert!(
        !state_dir.exists(),
        "state dir left: {}",
        state_dir.display()
    );
    // Idempotent.
    let out = routelet(&["lab", "down", "--state-dir", &state, "--prefix", &prefix]);
    assert!(out.status.success(), "{}", show("second lab down", &out));
}

#[test]
fn lab_bgp_backend() {
    run_lab("b", "bgp", "routelet");
}

/// `cross_subnet: routed`: cross-rack pairs go through the ToR, never VXLAN.
#[test]
fn lab_bgp_backend_cross_subnet_routed() {
    run_lab_with("o", "bgp", "routelet", "routed");
}

#[test]
fn lab_host_gw_backend() {
    run_lab("h", "host-gw", "routelet");
}

#[test]
fn lab_vxlan_backend() {
    run_lab("v", "vxlan", "routelet");
}

#[test]
fn lab_bird_tor() {
    if !Command::new("sh")
        .args(["-c", "command -v bird && command -v birdc"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        eprintln!("bird is not installed: skipping the --tor bird lab");
        return;
    }
    run_lab("r", "bgp", "bird");
}

#[test]
fn lab_frr_tor() {
    if !Path::new("/usr/lib/frr/bgpd").exists() || !Path::new("/usr/lib/frr/zebra").exists() {
        eprintln!("frr is not installed: skipping the --tor frr lab");
        return;
    }
    run_lab("f", "bgp", "frr");
}

/// A failed `up` (here: a ToR daemon that is not installed, or options that make no sense)
/// builds nothing and leaves nothing.
#[test]
fn lab_up_refuses_bad_options_and_leaves_nothing() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let lab_guard = Guard::new("x");
    let (prefix, state_dir, state) = lab_guard.names();
    let out = routelet(&[
        "lab",
        "up",
        "--prefix",
        &prefix,
        "--state-dir",
        &state,
        "--nodes",
        "2",
        "--racks",
        "3",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--racks"),
        "{}",
        show("up", &out)
    );
    assert!(!state_dir.exists());
    assert!(lab_namespaces(&prefix).is_empty());
    // `check` without a lab is a clear error; `down` without one is fine.
    let out = routelet(&["lab", "check", "--state-dir", &state]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no lab state"),
        "{}",
        show("check", &out)
    );
    let out = routelet(&["lab", "down", "--state-dir", &state, "--prefix", &prefix]);
    assert!(out.status.success(), "{}", show("down", &out));
    // A state dir holding someone else's files: `up` refuses it, `down` leaves those files.
    std::fs::create_dir_all(&state_dir).unwrap();
    let keep = state_dir.join("notes.txt");
    std::fs::write(&keep, "mine").unwrap();
    let out = routelet(&["lab", "up", "--prefix", &prefix, "--state-dir", &state]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        show("up", &out)
    );
    let out = routelet(&["lab", "down", "--state-dir", &state, "--prefix", &prefix]);
    assert!(out.status.success(), "{}", show("down", &out));
    assert_eq!(std::fs::read_to_string(&keep).unwrap(), "mine");
    std::fs::remove_dir_all(&state_dir).unwrap();
}

/// A lab whose `up` fails half-way (here the agents never become ready in time, or some
/// prerequisite is missing) is torn down by `up` itself.
#[test]
fn lab_up_failure_tears_down() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let lab_guard = Guard::new("u");
    let (prefix, state_dir, state) = lab_guard.names();
    // A kubeconfig pointing nowhere: the API never answers, `up` gives up and cleans up.
    std::fs::create_dir_all(std::env::temp_dir()).unwrap();
    let kc = std::env::temp_dir().join(format!("{prefix}-kubeconfig"));
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster:\n    server: http://10.254.0.99:6443\ncontexts:\n- name: x\n  context:\n    cluster: x\n    user: x\ncurrent-context: x\nusers:\n- name: x\n  user: {}\n",
    )
    .unwrap();
    let out = routelet(&[
        "lab",
        "up",
        "--prefix",
        &prefix,
        "--state-dir",
        &state,
        "--nodes",
        "2",
        "--racks",
        "1",
        "--kubeconfig",
        &kc.to_string_lossy(),
    ]);
    let _ = std::fs::remove_file(&kc);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("Kubernetes API"), "{}", show("up", &out));
    assert!(
        lab_namespaces(&prefix).is_empty(),
        "{:?}",
        lab_namespaces(&prefix)
    );
    assert!(!state_dir.exists());
}

/// `down` cleans up a lab whose `up` was killed half-way (supervisor, daemons and namespaces
/// possibly running, state partly written), at whatever stage the kill lands.
#[test]
fn lab_down_cleans_a_half_built_lab() {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for (i, delay_ms) in [300u64, 1200].into_iter().enumerate() {
        let lab_guard = Guard::new(&format!("k{i}"));
        let (prefix, state_dir, state) = lab_guard.names();
        let mut up = Command::new(BIN)
            .args(["lab", "up", "--prefix", &prefix, "--state-dir", &state])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = up.kill();
        let _ = up.wait();
        let pids = Pids::load(&state_dir).ok().flatten();
        let out = routelet(&["lab", "down", "--state-dir", &state, "--prefix", &prefix]);
        assert!(out.status.success(), "{}", show("down", &out));
        assert!(
            lab_namespaces(&prefix).is_empty(),
            "{:?}",
            lab_namespaces(&prefix)
        );
        assert!(!state_dir.exists());
        if let Some(p) = pids {
            let deadline = Instant::now() + Duration::from_secs(5);
            let all: Vec<u32> = std::iter::once(p.supervisor)
                .chain(p.processes.values().map(|x| x.pid))
                .collect();
            while all.iter().any(|&x| alive(x)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let left: Vec<u32> = all.into_iter().filter(|&x| alive(x)).collect();
            assert!(left.is_empty(), "still alive after down: {left:?}");
        }
    }
}

/// A ping stream every 5 ms from namespace `ns` to `to` (`-c`: ping waits for the last
/// replies, so nothing in flight at the end counts as lost).
struct PingStream {
    what: String,
    child: std::process::Child,
}

fn ping_stream(what: &str, ns: &str, to: &str, count: u32) -> PingStream {
    let child = Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-q", "-n", "-i", "0.005", "-W", "1", "-c",
        ])
        .arg(count.to_string())
        .arg(to)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    PingStream {
        what: what.to_string(),
        child,
    }
}

impl PingStream {
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// (transmitted, received, duration in ms, ping's summary).
    fn finish(self) -> (u64, u64, u64, String) {
        let out = self.child.wait_with_output().unwrap();
        let text = format!(
            "{}: {}{}",
            self.what,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary: {text}"));
        let nums: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        // "N packets transmitted, M received, [+E errors, ]P% packet loss, time Tms"
        let ms = line
            .rsplit("time ")
            .next()
            .and_then(|t| t.trim_end_matches("ms").trim().parse().ok())
            .unwrap_or_else(|| panic!("no time in the ping summary: {text}"));
        (nums[0], nums[1], ms, text)
    }
}

/// `ip monitor route` in namespace `ns`, its output in `file`: every route the kernel deletes
/// is seen. Killed (our own child) on Drop.
struct RouteWatch {
    child: std::process::Child,
    file: PathBuf,
}

impl RouteWatch {
    fn start(ns: &str, file: PathBuf) -> RouteWatch {
        let out = std::fs::File::create(&file).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "ip", "monitor", "route"])
            .stdout(out)
            .spawn()
            .unwrap();
        RouteWatch { child, file }
    }

    /// Every "Deleted" event for exactly `prefix` so far (the monitor must still be running,
    /// or an empty answer would prove nothing).
    fn deletions(&mut self, prefix: &str) -> Vec<String> {
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "ip monitor route stopped early"
        );
        std::fs::read_to_string(&self.file)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.strip_prefix("Deleted ")
                    .is_some_and(|r| r.split_whitespace().next() == Some(prefix))
            })
            .map(str::to_string)
            .collect()
    }
}

impl Drop for RouteWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// `kill -SIG pid` (a PID the lab recorded).
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{sig} {pid}");
}

/// Waits (at most `within`) until the supervisor has replaced process `node` (PID `old`) by
/// a live one; returns its PID.
fn wait_new_pid(state_dir: &Path, node: &str, old: u32, within: Duration) -> u32 {
    let start = Instant::now();
    loop {
        let p = Pids::load(state_dir).unwrap().unwrap().processes[node].pid;
        if p != old && alive(p) {
            return p;
        }
        assert!(
            start.elapsed() < within,
            "{node} not restarted within {within:?} (pid still {p})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for agent `node`'s process to be replaced by the supervisor (a PID other than
/// `old`, alive), then for its speaker to report routing converged.
fn wait_agent_back(state_dir: &Path, node: &str, old: u32) -> u32 {
    let start = Instant::now();
    let new = wait_new_pid(state_dir, node, old, Duration::from_secs(5));
    let socket = state_dir.join(node).join("routelet.sock");
    loop {
        let out = Command::new(BIN)
            .args(["status", "--json", "--socket"])
            .arg(&socket)
            .output()
            .unwrap();
        let st: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if st["converged"] == true {
            eprintln!(
                "agent {node} (pid {new}) converged {:.1} s after its restart",
                start.elapsed().as_secs_f64()
            );
            return new;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "agent {node} never converged after its restart: {st}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The headline of graceful restart: while ping streams of 100 packets/s run pod -> pod on
/// the same rack, pod -> pod across racks (VXLAN), from the restarted node's pod outwards and
/// from the external client through the ToR to the LoadBalancer IP, the agent of n1 (which
/// hosts the target pod and a LoadBalancer endpoint) is killed with SIGKILL and, once back,
/// stopped with SIGTERM (an upgrade); the supervisor starts it again each time. Not one
/// packet may be lost, and neither the ToR nor n2 ever deletes its route to n1's pods (the
/// helpers keep them; no withdraw-and-re-add flap).
fn run_restart_lab(tag: &str, tor: &str) {
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let lab_guard = Guard::new(tag);
    let (prefix, state_dir, state) = lab_guard.names();
    let out = routelet(&[
        "lab",
        "up",
        "--prefix",
        &prefix,
        "--state-dir",
        &state,
        "--tor",
        tor,
    ]);
    assert!(out.status.success(), "{}", show("lab up", &out));
    let lab = LabState::load(&state_dir).unwrap();
    let pod = |name: &str| {
        let p = lab.pods.iter().find(|p| p.name == name).unwrap();
        (p.netns.clone(), p.ip.to_string())
    };
    let (n1p1_ns, n1p1) = pod("n1-p1");
    let (n2p1_ns, _) = pod("n2-p1");
    let (n4p1_ns, _) = pod("n4-p1");
    let (_, n3p1) = pod("n3-p1");
    let lb = lab.lb_ip.unwrap().to_string();
    let ext = lab.topology.ext_ns();
    // At 100-200 packets/s: 20-40 s, longer than both restarts (checked below).
    const COUNT: u32 = 4000;
    let started = Instant::now();
    let n1_pods = "10.244.1.0/24";
    let mut tor_watch = RouteWatch::start(
        &lab.topology.tor_ns(),
        std::env::temp_dir().join(format!("{prefix}-tor-routes.log")),
    );
    let mut n2_watch = RouteWatch::start(
        &lab.topology.node(2).netns,
        std::env::temp_dir().join(format!("{prefix}-n2-routes.log")),
    );
    std::thread::sleep(Duration::from_millis(200));
    let mut streams = vec![
        ping_stream("n2-p1 -> n1-p1 (same rack)", &n2p1_ns, &n1p1, COUNT),
        ping_stream("n4-p1 -> n1-p1 (across racks)", &n4p1_ns, &n1p1, COUNT),
        ping_stream(
            "n1-p1 -> n3-p1 (from the restarted node)",
            &n1p1_ns,
            &n3p1,
            COUNT,
        ),
        ping_stream("ext -> LoadBalancer IP (through the ToR)", &ext, &lb, COUNT),
    ];
    std::thread::sleep(Duration::from_secs(3));

    let pid = Pids::load(&state_dir).unwrap().unwrap().processes["n1"].pid;
    signal(pid, "KILL");
    let pid = wait_agent_back(&state_dir, "n1", pid);
    std::thread::sleep(Duration::from_secs(3));
    signal(pid, "TERM");
    wait_agent_back(&state_dir, "n1", pid);
    let restarts_done = started.elapsed();
    for s in &mut streams {
        assert!(
            s.running(),
            "{} ended before both restarts were done ({restarts_done:?}): make it longer",
            s.what
        );
    }
    let log = std::fs::read_to_string(lab.topology.logs_dir().join("n1.log")).unwrap_or_default();
    assert_eq!(
        log.matches("advertising a restart with forwarding state preserved")
            .count(),
        2,
        "both restarts of n1 must find their kernel routes:\n{log}"
    );

    let mut lost = Vec::new();
    for s in streams {
        let (sent, received, ms, text) = s.finish();
        eprintln!("{}", text.trim());
        assert!(sent >= u64::from(COUNT), "{text}");
        // The stream must be a real one: at least 100 packets/s over its whole length.
        assert!(sent * 1000 >= 100 * ms, "fewer than 100 packets/s: {text}");
        if received != sent {
            lost.push(text);
        }
    }
    assert!(
        lost.is_empty(),
        "packets lost during the agent restarts:\n{}",
        lost.join("\n")
    );
    for (who, w) in [("the ToR", &mut tor_watch), ("n2", &mut n2_watch)] {
        let d = w.deletions(n1_pods);
        assert!(d.is_empty(), "{who} deleted its route to n1's pods: {d:?}");
    }
}

#[test]
fn lab_agent_restarts_lose_no_packet() {
    run_restart_lab("g", "routelet");
}

#[test]
fn lab_agent_restarts_lose_no_packet_bird_tor() {
    run_restart_lab("gb", "bird");
}

#[test]
fn lab_agent_restarts_lose_no_packet_frr_tor() {
    run_restart_lab("gf", "frr");
}

/// Whether `ns` has a route for exactly `prefix`.
fn has_route(ns: &str, prefix: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", ns, "route", "show", "exact", prefix])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// Polls (as fast as `ip` runs, a few ms) until `ns` has no route for `prefix`; the time since
/// `since`.
fn time_until_gone(
    ns: String,
    prefix: &'static str,
    since: Instant,
) -> std::thread::JoinHandle<Option<Duration>> {
    std::thread::spawn(move || {
        while since.elapsed() < Duration::from_secs(15) {
            if !has_route(&ns, prefix) {
                return Some(since.elapsed());
            }
        }
        None
    })
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let i = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    sorted[i.min(sorted.len() - 1)]
}

/// Failover timing (a benchmark, not a test: `cargo test -p agent --test lab bench_failover --
/// --ignored --nocapture`, as root). For each setting (BFD 300 ms x 3 with hold time 9 s; no
/// BFD with hold time 3 s), 20 times: n1's port on the ToR's rack bridge goes down (n1 is cut
/// off; nobody sees a carrier change but n1 itself), and the time until the ToR and n2 (same
/// rack, BGP-learned route) have removed their route to n1's pods is measured; the port comes
/// back and everything recovers before the next run.
#[test]
#[ignore = "benchmark: cargo test -p agent --test lab bench_failover -- --ignored --nocapture"]
fn bench_failover() {
    const RUNS: usize = 20;
    const N1_PODS: &str = "10.244.1.0/24";
    for (tag, extra) in [("bfd", vec!["--bfd"]), ("hold3", vec!["--hold-time", "3"])] {
        let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let lab_guard = Guard::new(&format!("b{tag}"));
        let (prefix, state_dir, state) = lab_guard.names();
        let mut args = vec!["lab", "up", "--prefix", &prefix, "--state-dir", &state];
        args.extend(extra.iter().copied());
        let out = routelet(&args);
        assert!(out.status.success(), "{}", show("lab up", &out));
        let lab = LabState::load(&state_dir).unwrap();
        let tor = lab.topology.tor_ns();
        let n2 = lab.topology.node(2).netns;
        let (mut at_tor, mut at_n2) = (Vec::new(), Vec::new());
        for run in 0..RUNS {
            // Settled: both have the route, and (BFD) a few seconds for BFD to come Up.
            let start = Instant::now();
            while !(has_route(&tor, N1_PODS) && has_route(&n2, N1_PODS)) {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "run {run}: routes never came back"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(Duration::from_secs(4));
            let cut = Instant::now();
            let ok = Command::new("ip")
                .args(["-n", &tor, "link", "set", "n1", "down"])
                .status()
                .unwrap();
            assert!(ok.success());
            let t = time_until_gone(tor.clone(), N1_PODS, cut);
            let n = time_until_gone(n2.clone(), N1_PODS, cut);
            let (t, n) = (t.join().unwrap(), n.join().unwrap());
            let ok = Command::new("ip")
                .args(["-n", &tor, "link", "set", "n1", "up"])
                .status()
                .unwrap();
            assert!(ok.success());
            eprintln!("{tag} run {run}: ToR {t:?}, n2 {n:?}");
            at_tor.push(t.expect("the ToR never removed the route"));
            at_n2.push(n.expect("n2 never removed the route"));
        }
        for (who, v) in [("ToR", &mut at_tor), ("n2", &mut at_n2)] {
            v.sort();
            eprintln!(
                "{tag}: {who}: min {:?} p50 {:?} p90 {:?} p99 {:?} max {:?} ({RUNS} runs)",
                v[0],
                percentile(v, 50),
                percentile(v, 90),
                percentile(v, 99),
                v[v.len() - 1]
            );
        }
    }
}
