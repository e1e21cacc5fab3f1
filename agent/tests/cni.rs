//! The `routelet-cni` plugin driven exactly as a container runtime runs it: the real binary
//! (invoked as `routelet-cni` through argv[0], and once as `routelet cni`) inside a "node"
//! namespace this test creates, `CNI_*` variables, the network config on stdin, pods as
//! further namespaces. Checks the JSON answers, the kernel state and real TCP traffic.
//! Namespaces are named `rlc-<pid>-<n>-<tag>` and deleted by Drop guards.

#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, SocketAddrV6, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_routelet");
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace deleted on drop.
struct Ns {
    name: String,
}

impl Ns {
    fn new(tag: &str) -> Ns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("rlc-{}-{n}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name]);
        Ns { name }
    }
    fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }
    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }
    fn try_ip(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
    fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.ip(&full);
        if out.trim().is_empty() {
            return json!([]);
        }
        serde_json::from_str(&out).unwrap()
    }
    /// Names of the links in this namespace.
    fn links(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }
    fn sysctl(&self, key: &str) -> String {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.name,
                "cat",
                &format!("/proc/sys/{key}"),
            ],
        )
        .trim()
        .to_string()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("rlc-{}-{n}-data", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A node namespace (lo up with 10.250.0.1/32 and 2001:db8:250::1/128) and a data dir.
struct Node {
    ns: Ns,
    data: TempDir,
}

const NODE_V4: &str = "10.250.0.1";
const NODE_V6: &str = "2001:db8:250::1";

impl Node {
    fn new() -> Node {
        let ns = Ns::new("node");
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["addr", "add", &format!("{NODE_V4}/32"), "dev", "lo"]);
        ns.ip(&["-6", "addr", "add", &format!("{NODE_V6}/128"), "dev", "lo"]);
        Node {
            ns,
            data: TempDir::new(),
        }
    }

    fn config(&self, ranges: &[&str]) -> Value {
        json!({"cniVersion":"1.1.0","name":"routelet","type":"routelet-cni","mtu":1450,
               "ipam":{"ranges": ranges, "dataDir": self.data.0}})
    }

    fn state_dir(&self) -> PathBuf {
        self.data.0.join("routelet")
    }

    /// Address files in the state directory.
    fn state_files(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.state_dir()) else {
            return vec![];
        };
        let mut v: Vec<String> = entries
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.parse::<IpAddr>().is_ok())
            .collect();
        v.sort();
        v
    }

    /// Host veth links (`rl...`) in the node.
    fn veths(&self) -> Vec<String> {
        self.ns
            .links()
            .into_iter()
            .filter(|l| l.starts_with("rl"))
            .collect()
    }
}

/// What the plugin answered.
#[derive(Debug)]
struct Answer {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
    /// The error object; panics when the call succeeded.
    fn error(&self) -> Value {
        assert!(!self.ok, "expected an error, got success: {}", self.stdout);
        let v = self.json();
        for key in ["cniVersion", "code", "msg"] {
            assert!(v.get(key).is_some(), "error without {key}: {v}");
        }
        v
    }
    fn code(&self) -> u64 {
        self.error()["code"].as_u64().unwrap()
    }
}

#[derive(Clone, Copy)]
enum Form {
    /// argv[0] = routelet-cni
    Argv0,
    /// `routelet cni`
    Subcommand,
}

/// Run the plugin in `node` with `vars` (name, value) and `stdin`.
fn plugin(node: &Ns, form: Form, vars: &[(&str, &str)], stdin: &str) -> Answer {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &node.name]);
    match form {
        Form::Argv0 => {
            cmd.args(["bash", "-c", r#"exec -a routelet-cni "$0""#, BIN]);
        }
        Form::Subcommand => {
            cmd.args([BIN, "cni"]);
        }
    }
    for k in [
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
        "CNI_PATH",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Answer {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `CNI_*` for one attachment (ifname eth0).
fn vars<'a>(command: &'a str, container: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", container),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

fn cmd(node: &Node, command: &str, container: &str, pod: &Ns, conf: &Value) -> Answer {
    let path = pod.path().display().to_string();
    plugin(
        &node.ns,
        Form::Argv0,
        &vars(command, container, &path),
        &conf.to_string(),
    )
}

fn add_ok(node: &Node, container: &str, pod: &Ns, conf: &Value) -> Value {
    let a = cmd(node, "ADD", container, pod, conf);
    assert!(a.ok, "ADD {container} failed: {} {}", a.stdout, a.stderr);
    a.json()
}

fn ips_of(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let a = i["address"].as_str().unwrap();
            a.split('/').next().unwrap().parse().unwrap()
        })
        .collect()
}

/// TCP from `from` to `connect` (a listener bound to `bind` in `to`), one echoed message,
/// retried until a generous deadline.
fn tcp(from: &Ns, to: &Ns, bind: SocketAddr, connect: impl Fn(u16) -> SocketAddr) {
    let listener = agent::netns::run_in(&to.path(), move || TcpListener::bind(bind))
        .unwrap()
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    });
    let target = connect(port);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last_err: String;
    loop {
        let r = agent::netns::run_in(&from.path(), move || {
            TcpStream::connect_timeout(&target, Duration::from_secs(2))
        })
        .unwrap();
        match r {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.write_all(b"hello").unwrap();
                let mut buf = [0u8; 5];
                s.read_exact(&mut buf).unwrap();
                assert_eq!(&buf, b"hello");
                break;
            }
            Err(e) => last_err = e.to_string(),
        }
        assert!(
            Instant::now() < deadline,
            "TCP {} -> {target} in {}: {last_err}",
            from.name,
            to.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server.join().unwrap();
}

fn any(v4: bool) -> SocketAddr {
    if v4 {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    }
}

#[test]
fn add_gives_a_working_dual_stack_pod_and_del_removes_it() {
    let node = Node::new();
    let pod = Ns::new("pod");
    let conf = node.config(&["10.244.1.0/24", "2001:db8:244:1::/64"]);
    let r = add_ok(&node, "c0ffee01", &pod, &conf);

    // The result.
    assert_eq!(r["cniVersion"], "1.1.0");
    let host = r["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert!(host.starts_with("rl") && host.len() == 14, "{host}");
    assert_eq!(r["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert!(r["interfaces"][0].get("sandbox").is_none());
    assert_eq!(r["interfaces"][1]["name"], "eth0");
    assert_eq!(
        r["interfaces"][1]["sandbox"],
        pod.path().display().to_string()
    );
    let pod_mac = r["interfaces"][1]["mac"].as_str().unwrap().to_string();
    assert_eq!(pod_mac.len(), 17);
    assert_eq!(r["ips"][0]["address"], "10.244.1.2/32");
    assert_eq!(r["ips"][0]["gateway"], "169.254.1.1");
    assert_eq!(r["ips"][0]["interface"], 1);
    assert_eq!(r["ips"][1]["address"], "2001:db8:244:1::2/128");
    assert_eq!(r["ips"][1]["gateway"], "fe80::ecee:eeff:feee:eeee");
    assert_eq!(
        r["routes"],
        json!([{"dst":"0.0.0.0/0","gw":"169.254.1.1"},{"dst":"::/0","gw":"fe80::ecee:eeff:feee:eeee"}])
    );
    assert_eq!(r["dns"], json!({}));

    // The kernel state.
    let routes = node.ns.ip_json(&["route", "show", "10.244.1.2/32"]);
    assert_eq!(routes[0]["dev"], host.as_str(), "{routes}");
    assert_eq!(routes[0]["protocol"].to_string().trim_matches('"'), "201");
    assert_eq!(routes[0]["scope"], "link");
    let routes6 = node
        .ns
        .ip_json(&["-6", "route", "show", "2001:db8:244:1::2/128"]);
    assert_eq!(routes6[0]["dev"], host.as_str(), "{routes6}");
    assert_eq!(
        node.ns.sysctl(&format!("net/ipv4/conf/{host}/proxy_arp")),
        "1"
    );
    for (key, want) in [
        ("ipv6/conf/{h}/forwarding", "1"),
        ("ipv6/conf/{h}/accept_dad", "0"),
        ("ipv6/conf/{h}/addr_gen_mode", "0"),
    ] {
        let key = format!("net/{}", key.replace("{h}", &host));
        assert_eq!(node.ns.sysctl(&key), want, "{key}");
    }
    let host_addrs = node.ns.ip_json(&["-6", "addr", "show", "dev", &host]);
    assert!(
        host_addrs.to_string().contains("fe80::ecee:eeff:feee:eeee"),
        "{host_addrs}"
    );
    let links = node.ns.ip_json(&["link", "show", &host]);
    assert_eq!(links[0]["mtu"], 1450);
    let pod_link = pod.ip_json(&["link", "show", "eth0"]);
    assert_eq!(pod_link[0]["mtu"], 1450);
    assert_eq!(pod_link[0]["address"], pod_mac.as_str());
    let pod_routes = pod.ip_json(&["route", "show", "default"]);
    assert_eq!(pod_routes[0]["gateway"], "169.254.1.1");
    let pod_routes6 = pod.ip_json(&["-6", "route", "show", "default"]);
    assert_eq!(pod_routes6[0]["gateway"], "fe80::ecee:eeff:feee:eeee");
    let state = node.state_files();
    assert_eq!(state, vec!["10.244.1.2", "2001:db8:244:1::2"]);
    let record = std::fs::read_to_string(node.state_dir().join("10.244.1.2")).unwrap();
    assert_eq!(record, format!("c0ffee01\neth0\n{host}\n"));

    // Traffic: node -> pod (v4, v6), pod -> node (v4, v6, the host veth's link-local).
    tcp(&node.ns, &pod, any(true), |p| {
        SocketAddr::new("10.244.1.2".parse().unwrap(), p)
    });
    tcp(&node.ns, &pod, any(false), |p| {
        SocketAddr::new("2001:db8:244:1::2".parse().unwrap(), p)
    });
    tcp(&pod, &node.ns, any(true), |p| {
        SocketAddr::new(NODE_V4.parse().unwrap(), p)
    });
    tcp(&pod, &node.ns, any(false), |p| {
        SocketAddr::new(NODE_V6.parse().unwrap(), p)
    });
    let eth0_index = pod_link[0]["ifindex"].as_u64().unwrap() as u32;
    tcp(&pod, &node.ns, any(false), |p| {
        SocketAddr::V6(SocketAddrV6::new(
            "fe80::ecee:eeff:feee:eeee".parse().unwrap(),
            p,
            0,
            eth0_index,
        ))
    });

    // ADD again (through `routelet cni`): the same addresses, still working.
    let path = pod.path().display().to_string();
    let again = plugin(
        &node.ns,
        Form::Subcommand,
        &vars("ADD", "c0ffee01", &path),
        &conf.to_string(),
    );
    assert!(again.ok, "{} {}", again.stdout, again.stderr);
    assert_eq!(ips_of(&again.json()), ips_of(&r));
    assert_eq!(node.state_files().len(), 2);
    tcp(&node.ns, &pod, any(true), |p| {
        SocketAddr::new("10.244.1.2".parse().unwrap(), p)
    });

    // DEL, twice, and for a container never seen: all succeed without output.
    for container in ["c0ffee01", "c0ffee01", "unknown42"] {
        let d = cmd(&node, "DEL", container, &pod, &conf);
        assert!(d.ok, "DEL {container}: {} {}", d.stdout, d.stderr);
        assert!(d.stdout.trim().is_empty(), "{}", d.stdout);
    }
    assert!(node.veths().is_empty(), "{:?}", node.veths());
    assert!(node.state_files().is_empty(), "{:?}", node.state_files());
    assert!(!pod.links().contains(&"eth0".to_string()));
    assert!(node.ns.ip_json(&["route", "show", "10.244.1.2/32"])[0].is_null());

    // DEL with an empty CNI_NETNS (the pod namespace is gone) is fine as well.
    let d = plugin(
        &node.ns,
        Form::Argv0,
        &vars("DEL", "c0ffee01", ""),
        &conf.to_string(),
    );
    assert!(d.ok, "{} {}", d.stdout, d.stderr);
}

#[test]
fn twenty_concurrent_adds_get_distinct_addresses() {
    let node = Node::new();
    let conf = node.config(&["10.244.2.0/24"]);
    let pods: Vec<Ns> = (0..20).map(|i| Ns::new(&format!("p{i}"))).collect();
    let answers: Vec<Answer> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let (node, conf) = (&node, &conf);
                s.spawn(move || cmd(node, "ADD", &format!("conc{i:02}"), pod, conf))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<IpAddr> = Vec::new();
    for a in &answers {
        assert!(a.ok, "{} {}", a.stdout, a.stderr);
        ips.extend(ips_of(&a.json()));
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 20, "{ips:?}");
    assert!(!ips.contains(&"10.244.2.1".parse().unwrap()));
    assert_eq!(node.state_files().len(), 20);
    assert_eq!(node.veths().len(), 20);
    // Every pod has its own address configured.
    for (pod, a) in pods.iter().zip(&answers) {
        let ip = ips_of(&a.json())[0].to_string();
        let addrs = pod.ip_json(&["addr", "show", "dev", "eth0"]);
        assert!(addrs.to_string().contains(&ip), "{} lacks {ip}", pod.name);
    }
}

#[test]
fn check_passes_then_reports_tampering() {
    let node = Node::new();
    let pod = Ns::new("pod");
    let mut conf = node.config(&["10.244.3.0/24", "2001:db8:244:3::/64"]);
    let r = add_ok(&node, "chk1", &pod, &conf);
    let host = r["interfaces"][0]["name"].as_str().unwrap().to_string();

    // CHECK without prevResult is an invalid config.
    assert_eq!(cmd(&node, "CHECK", "chk1", &pod, &conf).code(), 7);

    conf["prevResult"] = r.clone();
    let ok = cmd(&node, "CHECK", "chk1", &pod, &conf);
    assert!(ok.ok, "{} {}", ok.stdout, ok.stderr);
    assert!(ok.stdout.trim().is_empty());

    // Another container's CHECK with this result: the IPAM record is not its own.
    let other = cmd(&node, "CHECK", "chk2", &pod, &conf);
    assert!(!other.ok);

    // The pod address removed.
    pod.ip(&["addr", "del", "10.244.3.2/32", "dev", "eth0"]);
    let e = cmd(&node, "CHECK", "chk1", &pod, &conf).error();
    assert_eq!(e["code"], 102, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("10.244.3.2"), "{e}");

    // Repaired by ADD, then the host route removed.
    let again = add_ok(&node, "chk1", &pod, &conf);
    assert_eq!(ips_of(&again), ips_of(&r));
    assert!(cmd(&node, "CHECK", "chk1", &pod, &conf).ok);
    node.ns.ip(&["-6", "route", "del", "2001:db8:244:3::2/128"]);
    let e = cmd(&node, "CHECK", "chk1", &pod, &conf).error();
    assert_eq!(e["code"], 102, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(msg.contains("host route") && msg.contains(&host), "{e}");

    // The default route removed in the pod.
    add_ok(&node, "chk1", &pod, &conf);
    pod.ip(&["route", "del", "default"]);
    let e = cmd(&node, "CHECK", "chk1", &pod, &conf).error();
    assert!(e["msg"].as_str().unwrap().contains("default route"), "{e}");

    // The IPAM record removed.
    add_ok(&node, "chk1", &pod, &conf);
    std::fs::remove_file(node.state_dir().join("10.244.3.2")).unwrap();
    let e = cmd(&node, "CHECK", "chk1", &pod, &conf).error();
    assert!(e["msg"].as_str().unwrap().contains("IPAM"), "{e}");
}

#[test]
fn version_and_status() {
    let node = Node::new();
    let v = plugin(&node.ns, Form::Argv0, &[("CNI_COMMAND", "VERSION")], "");
    assert!(v.ok);
    let v = v.json();
    assert_eq!(v["cniVersion"], "1.1.0");
    let versions: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(versions, ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);

    let status = |conf: &Value| {
        plugin(
            &node.ns,
            Form::Argv0,
            &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")],
            &conf.to_string(),
        )
    };
    let conf = node.config(&["10.244.4.0/30"]);
    let s = status(&conf);
    assert!(s.ok, "{} {}", s.stdout, s.stderr);
    assert!(s.stdout.trim().is_empty());

    // The only address taken: not available.
    let pod = Ns::new("pod");
    add_ok(&node, "st1", &pod, &conf);
    let e = status(&conf).error();
    assert_eq!(e["code"], 50, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("10.244.4.0/30"), "{e}");

    // An unusable data directory (a regular file).
    let file = node.data.0.join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let mut bad = node.config(&["10.244.5.0/24"]);
    bad["ipam"]["dataDir"] = json!(file);
    assert_eq!(status(&bad).code(), 50);
}

#[test]
fn gc_removes_attachments_not_listed() {
    let node = Node::new();
    let (pa, pb) = (Ns::new("pa"), Ns::new("pb"));
    let mut conf = node.config(&["10.244.6.0/24", "2001:db8:244:6::/64"]);
    let a = add_ok(&node, "keep", &pa, &conf);
    let b = add_ok(&node, "stale", &pb, &conf);
    let host_a = a["interfaces"][0]["name"].as_str().unwrap().to_string();
    let host_b = b["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert_eq!(node.state_files().len(), 4);

    conf["cni.dev/valid-attachments"] = json!([{"containerID":"keep","ifname":"eth0"}]);
    let g = plugin(
        &node.ns,
        Form::Argv0,
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &conf.to_string(),
    );
    assert!(g.ok, "{} {}", g.stdout, g.stderr);
    assert!(g.stdout.trim().is_empty());
    assert_eq!(node.veths(), vec![host_a]);
    assert!(!node.ns.links().contains(&host_b));
    let kept: Vec<String> = ips_of(&a).iter().map(ToString::to_string).collect();
    assert_eq!(node.state_files(), kept);
    assert!(!pb.links().contains(&"eth0".to_string()));
    // The kept pod still works.
    tcp(&node.ns, &pa, any(true), |p| {
        SocketAddr::new(ips_of(&a)[0], p)
    });
}

#[test]
fn bad_inputs_get_the_right_error_codes_and_leave_nothing_behind() {
    let node = Node::new();
    let pod = Ns::new("pod");
    let path = pod.path().display().to_string();
    let conf = node.config(&["10.244.7.0/24"]);

    // Missing ipam.ranges.
    let mut no_ranges = conf.clone();
    no_ranges["ipam"].as_object_mut().unwrap().remove("ranges");
    let e = cmd(&node, "ADD", "bad1", &pod, &no_ranges).error();
    assert_eq!(e["code"], 7, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("ipam.ranges"), "{e}");

    // Wrong cniVersion (the answer uses a version we speak).
    let mut old = conf.clone();
    old["cniVersion"] = json!("0.1.0");
    let e = cmd(&node, "ADD", "bad1", &pod, &old).error();
    assert_eq!(e["code"], 1, "{e}");
    assert_eq!(e["cniVersion"], "1.1.0");

    // Not JSON.
    let a = plugin(&node.ns, Form::Argv0, &vars("ADD", "bad1", &path), "{oops");
    assert_eq!(a.code(), 6);

    // Missing CNI_COMMAND / CNI_CONTAINERID.
    let a = plugin(
        &node.ns,
        Form::Argv0,
        &[("CNI_NETNS", path.as_str()), ("CNI_IFNAME", "eth0")],
        &conf.to_string(),
    );
    let e = a.error();
    assert_eq!(e["code"], 4);
    assert!(e["msg"].as_str().unwrap().contains("CNI_COMMAND"), "{e}");
    let a = plugin(
        &node.ns,
        Form::Argv0,
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_NETNS", path.as_str()),
            ("CNI_IFNAME", "eth0"),
        ],
        &conf.to_string(),
    );
    let e = a.error();
    assert_eq!(e["code"], 4);
    assert!(
        e["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{e}"
    );

    // A namespace that does not exist.
    let a = plugin(
        &node.ns,
        Form::Argv0,
        &vars("ADD", "bad1", "/var/run/netns/rlc-no-such-ns"),
        &conf.to_string(),
    );
    assert_eq!(a.code(), 3);

    // Bad config on DEL is still an error.
    assert_eq!(cmd(&node, "DEL", "bad1", &pod, &no_ranges).code(), 7);

    // Nothing so far left anything behind.
    assert!(node.veths().is_empty());
    assert!(node.state_files().is_empty());
    assert_eq!(pod.links(), vec!["lo".to_string()]);

    // A /30 has one usable address: the second pod gets code 100 and leaves nothing.
    let small = node.config(&["10.244.8.0/30", "2001:db8:244:8::/64"]);
    let first = add_ok(&node, "full1", &pod, &small);
    assert_eq!(ips_of(&first)[0], "10.244.8.2".parse::<IpAddr>().unwrap());
    let pod2 = Ns::new("pod2");
    let e = cmd(&node, "ADD", "full2", &pod2, &small).error();
    assert_eq!(e["code"], 100, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("10.244.8.0/30"), "{e}");
    assert_eq!(node.veths().len(), 1, "{:?}", node.veths());
    assert_eq!(node.state_files().len(), 2, "{:?}", node.state_files());
    assert_eq!(pod2.links(), vec!["lo".to_string()]);
    assert!(!pod2.try_ip(&["link", "show", "eth0"]));
}

#[test]
fn older_spec_versions_get_their_result_shape_and_command_set() {
    let node = Node::new();
    let pod = Ns::new("pod");
    let mut conf = node.config(&["10.244.9.0/24", "2001:db8:244:9::/64"]);
    conf["cniVersion"] = json!("0.4.0");
    let r = add_ok(&node, "old1", &pod, &conf);
    assert_eq!(r["cniVersion"], "0.4.0");
    assert_eq!(r["ips"][0]["version"], "4");
    assert_eq!(r["ips"][1]["version"], "6");
    conf["prevResult"] = r;
    let ok = cmd(&node, "CHECK", "old1", &pod, &conf);
    assert!(ok.ok, "{} {}", ok.stdout, ok.stderr);
    // 0.3.1 has no CHECK; errors answer in the config's version.
    conf["cniVersion"] = json!("0.3.1");
    let e = cmd(&node, "CHECK", "old1", &pod, &conf).error();
    assert_eq!(e["code"], 1, "{e}");
    assert_eq!(e["cniVersion"], "0.3.1");
    // 1.0.0 has no GC.
    conf["cniVersion"] = json!("1.0.0");
    conf["cni.dev/valid-attachments"] = json!([]);
    let g = plugin(
        &node.ns,
        Form::Argv0,
        &[("CNI_COMMAND", "GC")],
        &conf.to_string(),
    );
    assert_eq!(g.code(), 1);
    assert_eq!(node.state_files().len(), 2, "GC must not have run");
    let d = cmd(&node, "DEL", "old1", &pod, &conf);
    assert!(d.ok, "{} {}", d.stdout, d.stderr);
    assert!(node.state_files().is_empty());
}
