//! `routelet lab up`: builds the lab (namespaces, links, addresses, routes, config files),
//! starts the supervisor, creates the Kubernetes objects, adds the pods through the CNI plugin
//! as a container runtime would, sets up the LoadBalancer Service and waits until everything is
//! ready. On any failure it tears down what it built.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::api::LabApi;
use super::cmd;
use super::error::LabError;
use super::state::{LabState, Pids, Pod, Process, Responder};
use super::topology::{
    Backend, CrossSubnet, Topology, Tor, API_ADDR, API_GW, API_PORT, EXT_ADDR, LB_PORT, POD_PORT,
    TOR_ROUTER_ID,
};
use super::{down, tor};

/// How long `up` waits for the lab to become ready once the agents run.
pub const READY_DEADLINE: Duration = Duration::from_secs(90);
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/run/routelet-lab";
/// Default namespace prefix.
pub const DEFAULT_PREFIX: &str = "rl-lab";
/// Name of the CNI plugin in CNI_PATH (argv[0] of the plugin process).
pub const CNI_PLUGIN: &str = "routelet-cni";

/// The `up` flags.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub nodes: usize,
    pub racks: usize,
    pub backend: Backend,
    pub tor: Tor,
    pub cross_subnet: CrossSubnet,
    /// BGP hold time of every node-ToR and node-node session (3..).
    pub hold_time: u16,
    /// BFD on every node-ToR and node-node session (routelet ToR only).
    pub bfd: bool,
    pub kubeconfig: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub prefix: String,
}

/// `p` made absolute against the current directory.
pub fn absolute(p: &Path) -> Result<PathBuf, LabError> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| LabError::io(".", e))?;
    Ok(cwd.join(p))
}

/// Set when Ctrl-C arrives during `up`: the waits stop and `up` tears down what it built.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn interrupted() -> Result<(), LabError> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err(LabError::Interrupted)
    } else {
        Ok(())
    }
}

/// Catches SIGINT for the rest of the process (a thread with its own runtime).
fn catch_ctrl_c() {
    let _ = std::thread::Builder::new().name("ctrl-c".into()).spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
            eprintln!("routelet lab up: interrupted");
            INTERRUPTED.store(true, Ordering::Relaxed);
        }
    });
}

/// Runs `up`; on failure after something was built (Ctrl-C included), tears it down again.
pub fn run(opts: &UpOptions) -> Result<(), LabError> {
    let state_dir = absolute(&opts.state_dir)?;
    let mut topo = Topology::new(
        &opts.prefix,
        opts.nodes,
        opts.racks,
        opts.backend,
        opts.tor,
        &state_dir,
    )?;
    topo.cross_subnet = opts.cross_subnet;
    if opts.hold_time < 3 {
        return Err(LabError::Option(format!(
            "--hold-time {}: must be at least 3 seconds",
            opts.hold_time
        )));
    }
    topo.hold_time = opts.hold_time;
    if opts.bfd && opts.tor != Tor::Routelet {
        return Err(LabError::Option(
            "--bfd: only with --tor routelet (BFD is not configured on BIRD or FRR ToRs yet)"
                .into(),
        ));
    }
    topo.bfd = opts.bfd;
    let kubeconfig = opts.kubeconfig.as_deref().map(absolute).transpose()?;
    preflight(&topo, kubeconfig.as_deref())?;
    let exe = std::env::current_exe().map_err(|e| LabError::io("/proc/self/exe", e))?;
    catch_ctrl_c();
    let mut lab = LabState::new(topo);
    let result = build(&mut lab, kubeconfig, &exe);
    if let Err(e) = &result {
        eprintln!("routelet lab up: {e}");
        eprintln!(
            "routelet lab up: tearing down (logs were in {})",
            lab.topology.logs_dir().display()
        );
        if let Some(tail) = log_tails(&lab.topology) {
            eprintln!("{tail}");
        }
        if let Err(e) = down::run(&state_dir, Some(&lab.topology.prefix)) {
            eprintln!("routelet lab up: teardown: {e}");
        }
    }
    result
}

/// Last lines of every log, for the error report.
fn log_tails(topo: &Topology) -> Option<String> {
    let dir = std::fs::read_dir(topo.logs_dir()).ok()?;
    let mut out = String::new();
    let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(5);
        out.push_str(&format!("--- {} (last lines)\n", p.display()));
        for l in &lines[start..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    Some(out)
}

/// Checks made before anything is built (a failure here builds and tears down nothing).
fn preflight(topo: &Topology, kubeconfig: Option<&Path>) -> Result<(), LabError> {
    if topo.lab_file().exists() {
        return Err(LabError::AlreadyUp(topo.state_dir.clone()));
    }
    if let Ok(mut entries) = std::fs::read_dir(&topo.state_dir) {
        if entries.next().is_some() {
            return Err(LabError::Option(format!(
                "--state-dir {}: exists and is not empty (the lab needs a directory of its own)",
                topo.state_dir.display()
            )));
        }
    }
    for program in ["ip", "kill", "sysctl"] {
        if !cmd::program_exists(program) {
            return Err(LabError::Option(format!("{program} is not installed")));
        }
    }
    let plan = tor::plan(topo, Path::new("routelet"));
    for program in &plan.programs {
        if !cmd::program_exists(program) {
            return Err(LabError::MissingProgram {
                program: program.clone(),
                tor: topo.tor.as_str().to_string(),
            });
        }
    }
    let prefix = format!("{}-", topo.prefix);
    let left: Vec<String> = cmd::list_netns()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    if !left.is_empty() {
        return Err(LabError::Option(format!(
            "namespaces {} exist already (another lab with --prefix {}? `routelet lab down --prefix {}` removes them)",
            left.join(", "),
            topo.prefix,
            topo.prefix
        )));
    }
    if let Some(k) = kubeconfig {
        if !k.exists() {
            return Err(LabError::Option(format!(
                "--kubeconfig {}: no such file",
                k.display()
            )));
        }
    }
    Ok(())
}

fn mkdir(p: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(p).map_err(|e| LabError::io(p, e))
}

fn write(p: &Path, text: &str) -> Result<(), LabError> {
    std::fs::write(p, text).map_err(|e| LabError::io(p, e))
}

fn add_netns(lab: &mut LabState, ns: &str, forwarding: bool) -> Result<(), LabError> {
    lab.namespaces.push(ns.to_string());
    lab.save()?;
    cmd::create_netns(ns, forwarding)
}

fn build(lab: &mut LabState, kubeconfig: Option<PathBuf>, exe: &Path) -> Result<(), LabError> {
    let topo = lab.topology.clone();
    let started = Instant::now();
    // Directories and the state file first: `down` works from here on.
    for d in [
        topo.state_dir.clone(),
        topo.logs_dir(),
        topo.tor_dir(),
        topo.cni_bin_dir(),
        topo.state_dir.join("api"),
    ] {
        mkdir(&d)?;
    }
    for i in 1..=topo.nodes {
        mkdir(&topo.cni_conf_dir(i))?;
        mkdir(&topo.cni_data_dir(i))?;
    }
    lab.save()?;
    let plugin = topo.cni_bin_dir().join(CNI_PLUGIN);
    std::os::unix::fs::symlink(exe, &plugin).map_err(|e| LabError::io(&plugin, e))?;

    // Namespaces and links.
    add_netns(lab, &topo.tor_ns(), true)?;
    // Hash ECMP flows on L4 like a real ToR (the external probes then reach every next hop).
    cmd::exec_in(
        &topo.tor_ns(),
        &["sysctl", "-q", "-w", "net.ipv4.fib_multipath_hash_policy=1"],
    )?;
    add_netns(lab, &topo.api_ns(), false)?;
    add_netns(lab, &topo.ext_ns(), false)?;
    let tor_ns = topo.tor_ns();
    for r in 1..=topo.racks {
        let br = format!("rack{r}");
        cmd::ip_in(&tor_ns, &["link", "add", &br, "type", "bridge"])?;
        cmd::ip_in(
            &tor_ns,
            &[
                "addr",
                "add",
                &format!("{}/24", Topology::rack_addr(r)),
                "dev",
                &br,
            ],
        )?;
        cmd::ip_in(&tor_ns, &["link", "set", &br, "up"])?;
    }
    cmd::veth(
        &topo.ext_ns(),
        "eth0",
        Some(&format!("{EXT_ADDR}/24")),
        &tor_ns,
        "ext",
        Some(&format!("{TOR_ROUTER_ID}/24")),
    )?;
    cmd::ip_in(
        &topo.ext_ns(),
        &["route", "add", "default", "via", &TOR_ROUTER_ID.to_string()],
    )?;
    cmd::veth(
        &topo.api_ns(),
        "eth0",
        Some(&format!("{API_ADDR}/24")),
        &tor_ns,
        "api",
        Some(&format!("{API_GW}/24")),
    )?;
    cmd::ip_in(
        &topo.api_ns(),
        &["route", "add", "default", "via", &API_GW.to_string()],
    )?;
    for n in topo.node_list() {
        add_netns(lab, &n.netns, true)?;
        cmd::veth(
            &n.netns,
            "eth0",
            Some(&format!("{}/24", n.addr)),
            &tor_ns,
            &n.name,
            None,
        )?;
        cmd::ip_in(
            &tor_ns,
            &["link", "set", &n.name, "master", &format!("rack{}", n.rack)],
        )?;
        cmd::ip_in(
            &n.netns,
            &["route", "add", "default", "via", &n.tor_addr.to_string()],
        )?;
    }

    // Configuration files.
    // With --kubeconfig the API server is used as given; it must be reachable from the lab's
    // namespaces (the agents run there, and `up` makes its calls from the ToR namespace).
    let standin = kubeconfig.is_none();
    let kubeconfig = match kubeconfig {
        Some(k) => k,
        None => {
            let k = topo.kubeconfig_path();
            write(&k, &topo.kubeconfig_yaml())?;
            k
        }
    };
    for i in 1..=topo.nodes {
        write(&topo.agent_config_path(i), &topo.agent_yaml(i))?;
    }
    let tor_plan = tor::plan(&topo, exe);
    for (path, text) in &tor_plan.files {
        write(path, text)?;
    }
    if let Some(dir) = &tor_plan.run_dir {
        lab.extra_dirs.push(dir.clone());
        lab.save()?;
        mkdir(dir)?;
        cmd::run(Command::new("chown").arg("frr:frr").arg(dir))?;
    }

    // Processes: the API stand-in and the ToR first, then the supervisor.
    if standin {
        lab.processes.push(Process {
            name: "apiserver".into(),
            netns: topo.api_ns(),
            argv: vec![
                exe.display().to_string(),
                "lab".into(),
                "apiserver".into(),
                "--listen".into(),
                format!("{API_ADDR}:{API_PORT}"),
                "--data".into(),
                topo.state_dir.join("api/store.json").display().to_string(),
            ],
            env: Vec::new(),
            log: topo.logs_dir().join("apiserver.log"),
        });
    }
    lab.processes.extend(tor_plan.processes);
    lab.save()?;
    start_supervisor(&topo, exe)?;

    let api = LabApi {
        kubeconfig: kubeconfig.clone(),
        netns: Some(tor_ns.clone()),
    };
    wait_for(
        "the Kubernetes API answers",
        Duration::from_secs(20),
        || {
            Ok(if api.reachable() {
                None
            } else {
                Some(format!(
                    "no answer from the API server ({})",
                    kubeconfig.display()
                ))
            })
        },
    )?;
    api.create_nodes(&topo)?;
    api.create_service()?;

    for n in topo.node_list() {
        lab.processes.push(Process {
            name: n.name.clone(),
            netns: n.netns.clone(),
            argv: vec![
                exe.display().to_string(),
                "agent".into(),
                "--config".into(),
                topo.agent_config_path(n.index).display().to_string(),
                "--kubeconfig".into(),
                kubeconfig.display().to_string(),
                "--node-name".into(),
                n.name.clone(),
            ],
            env: Vec::new(),
            log: topo.logs_dir().join(format!("{}.log", n.name)),
        });
    }
    lab.save()?;
    println!(
        "lab {}: {} nodes in {} racks, backend {} (cross_subnet {}), ToR {}; agents started, waiting until ready",
        topo.prefix,
        topo.nodes,
        topo.racks,
        topo.backend.as_str(),
        topo.cross_subnet.as_str(),
        topo.tor.as_str()
    );

    wait_ready(lab, &api)?;
    lab.ready = true;
    lab.save()?;
    print_summary(lab, started.elapsed());
    Ok(())
}

fn start_supervisor(topo: &Topology, exe: &Path) -> Result<(), LabError> {
    let log_path = topo.logs_dir().join("supervisor.log");
    let log = std::fs::File::create(&log_path).map_err(|e| LabError::io(&log_path, e))?;
    Command::new(exe)
        .args(["lab", "supervise", "--state-dir"])
        .arg(&topo.state_dir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| LabError::Supervisor(format!("cannot start {}: {e}", exe.display())))?;
    wait_for("the supervisor runs", Duration::from_secs(10), || {
        Ok(match Pids::load(&topo.state_dir)? {
            Some(p) if cmd::pid_alive(p.supervisor) => None,
            _ => Some(format!("no live supervisor in {}", log_path.display())),
        })
    })
}

/// Polls `step` every 200 ms until it reports nothing missing (`None`) or `limit` passes.
fn wait_for<F>(what: &str, limit: Duration, mut step: F) -> Result<(), LabError>
where
    F: FnMut() -> Result<Option<String>, LabError>,
{
    let deadline = Instant::now() + limit;
    loop {
        let missing = match step()? {
            None => return Ok(()),
            Some(m) => m,
        };
        if Instant::now() >= deadline {
            return Err(LabError::NotReady {
                seconds: limit.as_secs(),
                missing: format!("{what}: {missing}"),
            });
        }
        interrupted()?;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The conflist the agent of node `i` wrote, if any (the first `*.conflist` by name).
fn conflist(topo: &Topology, i: usize) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(topo.cni_conf_dir(i))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
        .collect();
    files.sort();
    files.into_iter().next()
}

/// Destination prefixes of namespace `ns`'s main IPv4 table.
pub fn route_dsts(ns: &str) -> Result<Vec<String>, LabError> {
    let out = cmd::ip_in(ns, &["-4", "-j", "route", "show", "table", "main"])?;
    let v: Value = serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })
        .map_err(|e| LabError::netns(ns, format!("ip -j route: {e}")))?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("dst").and_then(Value::as_str).map(str::to_string))
        .collect())
}

/// Waits until conflists, pods, LB IP, routes and responders are all there; adds the pods and
/// the LoadBalancer pieces as their prerequisites appear.
fn wait_ready(lab: &mut LabState, api: &LabApi) -> Result<(), LabError> {
    let topo = lab.topology.clone();
    let mut endpoints_done = false;
    let mut lb_done = false;
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let mut missing: Vec<String> = Vec::new();
        // Pods, per node, once its agent wrote the conflist.
        let mut no_conf = Vec::new();
        for i in 1..=topo.nodes {
            if lab.pods.iter().any(|p| p.node == i) {
                continue;
            }
            match conflist(&topo, i) {
                None => no_conf.push(format!("n{i}")),
                Some(conf) => add_pods(lab, i, &conf)?,
            }
        }
        if !no_conf.is_empty() {
            missing.push(format!(
                "no CNI conflist written by the agent (its \"ready\") on {} (in {}/n<i>/net.d)",
                no_conf.join(", "),
                topo.state_dir.display()
            ));
        }
        let lb_pods: Vec<Pod> = topo
            .lb_nodes()
            .iter()
            .filter_map(|&i| lab.pods.iter().find(|p| p.node == i).cloned())
            .collect();
        if !endpoints_done && lb_pods.len() == topo.lb_nodes().len() {
            api.create_endpoints(&lb_pods)?;
            endpoints_done = true;
        }
        if !lb_done {
            match api.lb_ip()? {
                None => missing.push(
                    "no LoadBalancer IP for default/web (status.loadBalancer.ingress, set by the agents' allocator)"
                        .into(),
                ),
                Some(ip) => {
                    setup_lb(lab, ip)?;
                    lb_done = true;
                }
            }
        }
        // Routes: every node to every other node's pod CIDR.
        let mut no_route = Vec::new();
        for n in topo.node_list() {
            let dsts = route_dsts(&n.netns)?;
            for m in topo.node_list() {
                if m.index != n.index && !dsts.contains(&m.pod_cidr) {
                    no_route.push(format!("{}->{}", n.name, m.pod_cidr));
                }
            }
        }
        if !no_route.is_empty() {
            missing.push(format!("no route on {}", no_route.join(", ")));
        }
        // The ToR must have learned the LoadBalancer IP (the external client's way in).
        if let Some(ip) = lab.lb_ip {
            let tor = route_dsts(&topo.tor_ns())?;
            if !tor
                .iter()
                .any(|d| d == &ip.to_string() || d == &format!("{ip}/32"))
            {
                missing.push(format!(
                    "the ToR ({}) has no route to the LoadBalancer IP {ip} yet",
                    topo.tor.as_str()
                ));
            }
        }
        if lab.pods.len() == topo.pods().len() {
            let listening = Pids::load(&topo.state_dir)?
                .map(|p| p.responders)
                .unwrap_or_default();
            let waiting: Vec<&str> = lab
                .responders
                .iter()
                .filter(|r| !listening.contains(&r.name))
                .map(|r| r.name.as_str())
                .collect();
            if !waiting.is_empty() {
                missing.push(format!("responders not listening: {}", waiting.join(", ")));
            }
        } else if no_conf.is_empty() {
            missing.push("pods not all added".into());
        }
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LabError::NotReady {
                seconds: READY_DEADLINE.as_secs(),
                missing: missing.join("; "),
            });
        }
        interrupted()?;
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Creates node `i`'s pods: namespace, CNI ADD through the conflist, responder.
fn add_pods(lab: &mut LabState, i: usize, conf: &Path) -> Result<(), LabError> {
    let topo = lab.topology.clone();
    let node = topo.node(i);
    for pod in topo.pods().into_iter().filter(|p| p.node == i) {
        add_netns(lab, &pod.netns, false)?;
        let ip = cni_add(&topo, &node.netns, &node.name, &pod, conf)?;
        lab.pods.push(Pod {
            name: pod.name.clone(),
            node: i,
            netns: pod.netns.clone(),
            ip,
        });
        lab.responders.push(Responder {
            name: pod.name.clone(),
            netns: pod.netns.clone(),
            addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, POD_PORT)),
            answer: pod.name.clone(),
        });
        lab.save()?;
    }
    Ok(())
}

/// The network configurations to run for a conflist, in order: each plugin entry with
/// `cniVersion` and `name` copied in (CNI spec, "Network configuration lists").
pub fn plugin_configs(conflist: &Value) -> Result<Vec<Value>, String> {
    let version = conflist
        .get("cniVersion")
        .cloned()
        .ok_or("conflist has no cniVersion")?;
    let name = conflist
        .get("name")
        .cloned()
        .ok_or("conflist has no name")?;
    let plugins = conflist
        .get("plugins")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or("conflist has no plugins")?;
    plugins
        .iter()
        .map(|p| {
            let mut c = p.clone();
            let obj = c.as_object_mut().ok_or("a plugin entry is not an object")?;
            if !obj.get("type").is_some_and(Value::is_string) {
                return Err("a plugin entry has no type".to_string());
            }
            obj.insert("cniVersion".into(), version.clone());
            obj.insert("name".into(), name.clone());
            Ok(c)
        })
        .collect()
}

/// The first IPv4 address of a CNI result (`ips[].address`, CIDR form).
pub fn result_ipv4(result: &Value) -> Option<Ipv4Addr> {
    result
        .get("ips")?
        .as_array()?
        .iter()
        .filter_map(|ip| ip.get("address")?.as_str())
        .filter_map(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok())
        .next()
}

/// Runs CNI ADD for `pod` as a runtime does: for each plugin of the conflist, its binary from
/// CNI_PATH inside the node's namespace, env + stdin, `prevResult` chained.
fn cni_add(
    topo: &Topology,
    node_ns: &str,
    node: &str,
    pod: &super::topology::PodSpec,
    conf: &Path,
) -> Result<Ipv4Addr, LabError> {
    let err = |message: String| LabError::Cni {
        pod: pod.name.clone(),
        node: node.to_string(),
        message,
    };
    let text = std::fs::read_to_string(conf).map_err(|e| LabError::io(conf, e))?;
    let conflist: Value = serde_json::from_str(&text)
        .map_err(|e| err(format!("{}: not JSON: {e}", conf.display())))?;
    let configs = plugin_configs(&conflist).map_err(|e| err(format!("{}: {e}", conf.display())))?;
    let cni_path = topo.cni_bin_dir();
    let mut prev: Option<Value> = None;
    for mut config in configs {
        let ty = config
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let bin = cni_path.join(&ty);
        if !bin.exists() {
            return Err(err(format!(
                "plugin {ty:?} not found in CNI_PATH {}",
                cni_path.display()
            )));
        }
        if let (Some(p), Some(obj)) = (prev.take(), config.as_object_mut()) {
            obj.insert("prevResult".into(), p);
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", node_ns])
            .arg(&bin)
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", &pod.container_id)
            .env("CNI_NETNS", crate::netns::named(&pod.netns))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot run {}: {e}", bin.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(config.to_string().as_bytes())
                .map_err(|e| err(format!("writing the config to {ty}: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| err(format!("waiting for {ty}: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(err(format!(
                "{ty} failed ({}): {} {}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let result: Value = serde_json::from_str(&stdout)
            .map_err(|e| err(format!("{ty} printed no JSON result ({e}): {stdout}")))?;
        prev = Some(result);
    }
    prev.as_ref()
        .and_then(result_ipv4)
        .ok_or_else(|| err(format!("no IPv4 address in the result {prev:?}")))
}

/// Binds the LB IP to `lo` on the endpoint nodes and adds their responders (kube-proxy stand-in).
fn setup_lb(lab: &mut LabState, ip: Ipv4Addr) -> Result<(), LabError> {
    let topo = lab.topology.clone();
    lab.lb_ip = Some(ip);
    for i in topo.lb_nodes() {
        let n = topo.node(i);
        cmd::ip_in(&n.netns, &["addr", "add", &format!("{ip}/32"), "dev", "lo"])?;
        lab.responders.push(Responder {
            name: format!("lb-{}", n.name),
            netns: n.netns.clone(),
            addr: SocketAddr::from((ip, LB_PORT)),
            answer: format!("web@{}", n.name),
        });
    }
    lab.save()
}

fn print_summary(lab: &LabState, took: Duration) {
    let topo = &lab.topology;
    println!("lab {} ready in {:.0} s", topo.prefix, took.as_secs_f64());
    for n in topo.node_list() {
        let pods: Vec<String> = lab
            .pods
            .iter()
            .filter(|p| p.node == n.index)
            .map(|p| format!("{} {}", p.name, p.ip))
            .collect();
        println!(
            "  {} (ns {}) rack{} {} pods {}: {}",
            n.name,
            n.netns,
            n.rack,
            n.addr,
            n.pod_cidr,
            pods.join(", ")
        );
    }
    if let Some(ip) = lab.lb_ip {
        println!("  LoadBalancer default/web: {ip}:{LB_PORT}");
    }
    println!(
        "  next: routelet lab check --state-dir {0}; routelet lab down --state-dir {0}",
        topo.state_dir.display()
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn conflist_entries_get_version_and_name() {
        let c = json!({"cniVersion": "1.1.0", "name": "routelet",
                       "plugins": [{"type": "routelet-cni", "mtu": 1450, "ipam": {"ranges": []}}]});
        let p = plugin_configs(&c).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0]["cniVersion"], "1.1.0");
        assert_eq!(p[0]["name"], "routelet");
        assert_eq!(p[0]["type"], "routelet-cni");
        assert_eq!(p[0]["mtu"], 1450);
        assert!(
            plugin_configs(&json!({"cniVersion": "1.1.0", "name": "x", "plugins": []})).is_err()
        );
        assert!(plugin_configs(&json!({"name": "x", "plugins": [{"type": "a"}]})).is_err());
        assert!(
            plugin_configs(&json!({"cniVersion": "1.1.0", "name": "x", "plugins": [{}]})).is_err()
        );
    }

    #[test]
    fn result_address_is_the_first_ipv4() {
        let r = json!({"cniVersion": "1.1.0", "ips": [
            {"address": "fd00::5/128"}, {"address": "10.244.1.2/32", "gateway": "169.254.1.1"}]});
        assert_eq!(result_ipv4(&r), Some(Ipv4Addr::new(10, 244, 1, 2)));
        assert_eq!(result_ipv4(&json!({"ips": []})), None);
    }
}
