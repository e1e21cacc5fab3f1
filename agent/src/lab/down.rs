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

/// True for the names `up` creates in the state dir (and the supervisor's / `up`'s temp files).
pub fn is_lab_entry(name: &str) -> bool {
    matches!(
        name,
        "lab.json" | "pids.json" | "kubeconfig" | "logs" | "tor" | "bin" | "api"
    ) || name
        .strip_prefix('n')
        .is_some_and(|i| !i.is_empty() && i.chars().all(|c| c.is_ascii_digit()))
        || name.starts_with("lab.tmp")
        || name.starts_with("pids.tmp")
}

/// Removes what the lab put in the state dir, then the directory if that left it empty; any
/// other file is left alone (a state dir given by mistake never loses foreign files).
fn remove_state_dir(state_dir: &Path) -> Result<(), LabError> {
    let entries = match std::fs::read_dir(state_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LabError::io(state_dir, e)),
    };
    let mut foreign = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !is_lab_entry(&name) {
            foreign.push(name);
            continue;
        }
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let r = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LabError::io(path, e)),
        }
    }
    if !foreign.is_empty() {
        eprintln!(
            "routelet lab down: {} holds files the lab did not make ({}); left in place",
            state_dir.display(),
            foreign.join(", ")
        );
        return Ok(());
    }
    std::fs::remove_dir(state_dir).map_err(|e| LabError::io(state_dir, e))
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
    if let Err(e) = remove_state_dir(state_dir) {
        errors.push(e.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lab_entries_are_recognised() {
        for n in [
            "lab.json",
            "pids.json",
            "kubeconfig",
            "logs",
            "tor",
            "bin",
            "api",
            "n1",
            "n12",
            "lab.tmp42",
        ] {
            assert!(is_lab_entry(n), "{n}");
        }
        for n in ["n", "nx", "notes.txt", ".bashrc", "Documents", "n1a"] {
            assert!(!is_lab_entry(n), "{n}");
        }
    }
}
