//! `routelet lab supervise`: the detached process that owns every lab process (API stand-in,
//! ToR daemons, agents) and the responder threads. It reconciles `lab.json` (what `up` wants
//! running) every 100 ms: starts what is missing, starts a dead process again with the same
//! command line (at most once a second per process), records current PIDs in `pids.json`;
//! on SIGTERM/SIGINT it stops its children (SIGTERM, SIGKILL after 3 s) and exits.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use super::cmd;
use super::error::LabError;
use super::responder;
use super::state::{LabState, Pids, Process, ProcessPid};

/// How often `lab.json` is read and children are checked.
const TICK: Duration = Duration::from_millis(100);
/// A process that dies sooner than this after its start waits for the rest before restarting.
const MIN_RUN: Duration = Duration::from_secs(1);
/// SIGTERM grace for children at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(3);

struct Running {
    child: Option<Child>,
    /// Last start attempt.
    started: Instant,
    restarts: u32,
    /// Started successfully at least once (later starts count as restarts).
    ever_started: bool,
    /// A start was attempted (the next one waits for MIN_RUN after it).
    tried: bool,
}

/// Runs the supervisor for the lab in `state_dir` until SIGTERM or SIGINT.
pub fn run(state_dir: &Path) -> Result<(), LabError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LabError::Supervisor(format!("runtime: {e}")))?;
    rt.block_on(supervise(state_dir))
}

fn spawn(p: &Process) -> Result<Child, LabError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.log)
        .map_err(|e| LabError::io(&p.log, e))?;
    let err = log.try_clone().map_err(|e| LabError::io(&p.log, e))?;
    Command::new("ip")
        .args(["netns", "exec", &p.netns])
        .args(&p.argv)
        .envs(p.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| LabError::Command {
            command: format!("ip netns exec {} {}", p.netns, p.argv.join(" ")),
            message: e.to_string(),
        })
}

async fn supervise(state_dir: &Path) -> Result<(), LabError> {
    let sig = |kind| signal(kind).map_err(|e| LabError::Supervisor(format!("signal: {e}")));
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut responders: BTreeSet<String> = BTreeSet::new();
    let mut responder_errors: BTreeMap<String, String> = BTreeMap::new();
    let mut pids = Pids {
        supervisor: std::process::id(),
        ..Pids::default()
    };
    pids.save(state_dir)?;
    tracing::info!(state_dir = %state_dir.display(), pid = pids.supervisor, "lab supervisor started");
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {}
        }
        let lab = match LabState::load(state_dir) {
            Ok(lab) => lab,
            Err(LabError::NotUp(_)) => {
                tracing::warn!("lab.json is gone; stopping");
                break;
            }
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        };
        let mut changed = false;
        for p in &lab.processes {
            let entry = running.entry(p.name.clone()).or_insert(Running {
                child: None,
                started: Instant::now(),
                restarts: 0,
                ever_started: false,
                tried: false,
            });
            let attempted = entry.tried;
            let dead = match entry.child.as_mut() {
                None => true,
                Some(c) => match c.try_wait() {
                    Ok(None) => false,
                    Ok(Some(status)) => {
                        tracing::warn!(process = %p.name, %status, "process exited; starting it again");
                        entry.child = None;
                        true
                    }
                    Err(e) => {
                        tracing::warn!(process = %p.name, "wait: {e}");
                        false
                    }
                },
            };
            if !dead || (attempted && entry.started.elapsed() < MIN_RUN) {
                continue;
            }
            entry.tried = true;
            match spawn(p) {
                Ok(child) => {
                    if entry.ever_started {
                        entry.restarts += 1;
                    }
                    entry.ever_started = true;
                    entry.started = Instant::now();
                    tracing::info!(process = %p.name, pid = child.id(), restarts = entry.restarts, "started");
                    pids.processes.insert(
                        p.name.clone(),
                        ProcessPid {
                            pid: child.id(),
                            restarts: entry.restarts,
                        },
                    );
                    entry.child = Some(child);
                    changed = true;
                }
                Err(e) => {
                    // The next attempt waits MIN_RUN.
                    entry.started = Instant::now();
                    tracing::warn!(process = %p.name, "cannot start: {e}");
                }
            }
        }
        for r in &lab.responders {
            if responders.contains(&r.name) {
                continue;
            }
            match responder::start(&r.netns, r.addr, &r.answer) {
                Ok(()) => {
                    tracing::info!(responder = %r.name, addr = %r.addr, "listening");
                    responders.insert(r.name.clone());
                    responder_errors.remove(&r.name);
                    pids.responders.push(r.name.clone());
                    changed = true;
                }
                Err(e) => {
                    let msg = e.to_string();
                    if responder_errors.get(&r.name) != Some(&msg) {
                        tracing::warn!(responder = %r.name, "{msg}");
                        responder_errors.insert(r.name.clone(), msg);
                    }
                }
            }
        }
        if changed {
            if let Err(e) = pids.save(state_dir) {
                tracing::warn!("{e}");
            }
        }
    }
    tracing::info!("stopping the lab's processes");
    stop_all(&mut running);
    Ok(())
}

fn stop_all(running: &mut BTreeMap<String, Running>) {
    for (name, r) in running.iter() {
        if let Some(c) = &r.child {
            if let Err(e) = cmd::kill("TERM", c.id(), false) {
                tracing::warn!(process = %name, "{e}");
            }
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        let mut alive = 0;
        for r in running.values_mut() {
            if let Some(c) = r.child.as_mut() {
                match c.try_wait() {
                    Ok(None) => alive += 1,
                    _ => r.child = None,
                }
            }
        }
        if alive == 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (name, r) in running.iter_mut() {
        if let Some(mut c) = r.child.take() {
            tracing::warn!(process = %name, pid = c.id(), "ignored SIGTERM; killing");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
