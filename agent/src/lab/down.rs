//! `routelet lab down`: stops the supervisor (SIGTERM, then SIGKILL to its process group after
//! 3 s), kills any recorded lab process still alive, deletes every namespace of the lab
//! (recorded ones and any `<prefix>-*` left over), removes the directories the lab created and
//! the state dir. Idempotent; works on a half-built lab.

use std::path::Path;
use std::time::{Duration, Instant};

use super::cmd;
use super::error::LabError;
use super::state::{LabState, Pids};
use super::up::DEFAULT_PREFIX;

const SUPERVISOR_GRACE: Duration = Duration::from_secs(3);

/// True if process `pid` still runs and its command line mentions the state dir (every lab
/// process has it in its arguments), so a recycled PID is never killed.
fn is_lab_process(pid: u32, state_dir: &Path) -> bool {
    if !cmd::pid_alive(pid) {
        return false;
    }
    let needle = state_dir.to_string_lossy().into_owned();
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(&needle)
        })
        .unwrap_or(false)
}

fn wait_gone(pid: u32, state_dir: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !is_lab_process(pid, state_dir) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !is_lab_process(pid, state_dir)
}

/// Tears down the lab in `state_dir`. `prefix` overrides the one in `lab.json` (used when the
/// state is gone but namespaces are left).
pub fn run(state_dir: &Path, prefix: Option<&str>) -> Result<(), LabError> {
    let state_dir = &super::up::absolute(state_dir)?;
    let lab = match LabState::load(state_dir) {
        Ok(l) => Some(l),
        Err(LabError::NotUp(_)) => None,
        Err(e) => {
            eprintln!("routelet lab down: {e}; going on with what is known");
            None
        }
    };
    let pids = Pids::load(state_dir).unwrap_or_else(|e| {
        eprintln!("routelet lab down: {e}");
        None
    });
    let prefix = prefix
        .map(str::to_string)
        .or_else(|| lab.as_ref().map(|l| l.topology.prefix.clone()))
        .unwrap_or_else(|| DEFAULT_PREFIX.to_string());
    let mut errors: Vec<String> = Vec::new();

    if let Some(p) = &pids {
        let sup = p.supervisor;
        if is_lab_process(sup, state_dir) {
            if let Err(e) = cmd::kill("TERM", sup, false) {
                errors.push(e.to_string());
            }
            if !wait_gone(sup, state_dir, SUPERVISOR_GRACE) {
                eprintln!("routelet lab down: supervisor {sup} still running after 3 s; killing its process group");
                if let Err(e) = cmd::kill("KILL", sup, true) {
                    errors.push(e.to_string());
                }
            }
        }
        for (name, proc_pid) in &p.processes {
            if is_lab_process(proc_pid.pid, state_dir) {
                eprintln!(
                    "routelet lab down: {name} (pid {}) still running; killing it",
                    proc_pid.pid
                );
                if let Err(e) = cmd::kill("KILL", proc_pid.pid, false) {
                    errors.push(e.to_string());
                }
                let _ = wait_gone(proc_pid.pid, state_dir, Duration::from_secs(1));
            }
        }
    }

    let mut namespaces: Vec<String> = lab
        .as_ref()
        .map(|l| l.namespaces.clone())
        .unwrap_or_default();
    let ours = format!("{prefix}-");
    match cmd::list_netns() {
        Ok(list) => {
            for ns in list {
                if ns.starts_with(&ours) && !namespaces.contains(&ns) {
                    namespaces.push(ns);
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    // Pods first (their veths go with them), then nodes and the rest.
    namespaces.reverse();
    for ns in &namespaces {
        if let Err(e) = cmd::delete_netns(ns) {
            errors.push(e.to_string());
        }
    }
    for dir in lab.iter().flat_map(|l| l.extra_dirs.iter()) {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(LabError::io(dir, e).to_string()),
        }
    }
    match std::fs::remove_dir_all(state_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(LabError::io(state_dir, e).to_string()),
    }
    if errors.is_empty() {
        println!(
            "lab {prefix}: down ({} namespaces removed, {} gone)",
            namespaces.len(),
            state_dir.display()
        );
        Ok(())
    } else {
        Err(LabError::Command {
            command: "routelet lab down".into(),
            message: errors.join("; "),
        })
    }
}
