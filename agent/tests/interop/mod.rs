//! Interop lab library: network namespaces, daemon process guards, config generators and
//! status probes for routelet, BIRD 2, FRR 8.4, GoBGP and ExaBGP, shared by `tests/interop_*.rs`.
//!
//! Every test builds its own namespaces (`rl-it-<tag>-<pid>-<n>`) and starts its daemons inside
//! them; everything is torn down by Drop guards, on success and on failure. Nothing here sends
//! traffic from the host namespace: CLIs that only talk to unix sockets (`birdc`, `vtysh`,
//! `routelet status`) run from the host, everything else runs via `ip netns exec`.
//!
//! Each test file is its own crate and uses only part of this library.
#![allow(dead_code)]

pub mod bird;
pub mod cluster;
pub mod daemon;
pub mod exabgp;
pub mod frr;
pub mod gobgp;
pub mod monitor;
pub mod netns;
pub mod routelet;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use netns::{veth, Netns};

/// Result type of the lab library and of the interop tests.
pub type Result<T> = std::result::Result<T, LabError>;

/// Everything that can go wrong in a lab. `Debug` prints the `Display` form so a failing test
/// (which returns `Err`) shows a readable, multi-line message.
#[derive(thiserror::Error)]
pub enum LabError {
    #[error("command `{cmd}` failed ({status}):\n{stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{context}: invalid JSON: {source}\n{text}")]
    Json {
        context: String,
        text: String,
        source: serde_json::Error,
    },
    #[error("timed out after {waited:?} waiting for: {what}\nlast observed state:\n{observed}")]
    Timeout {
        what: String,
        waited: Duration,
        observed: String,
    },
    #[error("condition broke after {after:?} (required for {required:?}): {what}\nobserved state:\n{observed}")]
    Broken {
        what: String,
        after: Duration,
        required: Duration,
        observed: String,
    },
    #[error("daemon `{name}` is not running ({status}); log tail:\n{log}")]
    DaemonExited {
        name: String,
        status: String,
        log: String,
    },
    #[error("{0}")]
    Check(String),
    #[error("{error}\n\n======== daemon logs ========\n{logs}")]
    WithLogs { error: Box<LabError>, logs: String },
}

impl fmt::Debug for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl LabError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> LabError {
        LabError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Fails the test with `msg` unless `cond` holds.
pub fn ensure(cond: bool, msg: impl Into<String>) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(LabError::Check(msg.into()))
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique `rl-it-<tag>-<pid>-<n>` name (namespace names, temp dirs).
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("rl-it-{tag}-{}-{n}", std::process::id())
}

/// One test's lab: a private temp dir for configs, sockets and logs, and a registry of the
/// daemon logs so a failing test can print them. Declare it first in a test so it is dropped
/// last (after the daemons and namespaces).
pub struct Lab {
    tag: String,
    dir: PathBuf,
    logs: Mutex<Vec<(String, PathBuf)>>,
}

impl Lab {
    /// Creates the lab dir; fails early (with a clear message) when not root.
    pub fn new(tag: &str) -> Result<Lab> {
        let uid = run(Command::new("id").arg("-u"))?;
        ensure(
            uid.trim() == "0",
            "interop tests need root (network namespaces, routing daemons): run scripts/test.sh as root",
        )?;
        let dir = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError::io(format!("create {}", dir.display()), e))?;
        Ok(Lab {
            tag: tag.to_string(),
            dir,
            logs: Mutex::new(Vec::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path inside the lab dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `contents` to `name` inside the lab dir and returns the full path.
    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let p = self.path(name);
        std::fs::write(&p, contents)
            .map_err(|e| LabError::io(format!("write {}", p.display()), e))?;
        Ok(p)
    }

    /// Creates a new namespace named after this lab's tag.
    pub fn netns(&self) -> Result<Netns> {
        Netns::create(&unique_name(&self.tag))
    }

    pub(crate) fn register_log(&self, name: &str, path: &Path) {
        if let Ok(mut logs) = self.logs.lock() {
            logs.push((name.to_string(), path.to_path_buf()));
        }
    }

    /// The last lines of every daemon log started in this lab.
    pub fn log_tails(&self, lines: usize) -> String {
        let logs = match self.logs.lock() {
            Ok(l) => l.clone(),
            Err(_) => return String::new(),
        };
        let mut out = String::new();
        for (name, path) in logs {
            out.push_str(&format!("---- {name} ({}) ----\n", path.display()));
            out.push_str(&tail(&path, lines));
            out.push('\n');
        }
        out
    }

    /// Runs a test body; on error, appends the daemon logs to the error.
    pub fn run(tag: &str, body: impl FnOnce(&Lab) -> Result<()>) -> Result<()> {
        let lab = Lab::new(tag)?;
        match body(&lab) {
            Ok(()) => Ok(()),
            Err(error) => Err(LabError::WithLogs {
                error: Box::new(error),
                logs: lab.log_tails(40),
            }),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::env::var_os("RL_KEEP_LAB").is_some() {
            eprintln!("keeping lab dir {}", self.dir.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The last `lines` lines of a text file (or a note that it could not be read).
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all.get(start..).unwrap_or_default().join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion; returns its output whatever the exit status.
pub fn run_output(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .map_err(|e| LabError::io(format!("spawn `{}`", describe(cmd)), e))
}

/// Runs a command; returns stdout, or an error carrying stderr on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = run_output(cmd)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            cmd: describe(cmd),
            status: out.status.to_string(),
            stderr: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ),
        })
    }
}

/// `run` for an argv slice.
pub fn sh(argv: &[&str]) -> Result<String> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| LabError::Check("empty command".into()))?;
    run(Command::new(prog).args(args))
}

/// Parses JSON with a context for the error message.
pub fn parse_json(context: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|source| LabError::Json {
        context: context.to_string(),
        text: text.chars().take(2000).collect(),
        source,
    })
}

/// Polls `probe` every 200 ms until it returns `Ok(true)` or `timeout` passes. The probe writes
/// what it saw into the `String` it is given; the last observation (or the last probe error)
/// is part of the timeout error. A `DaemonExited` probe error ends the wait at once.
pub fn wait_until<F>(what: &str, timeout: Duration, mut probe: F) -> Result<Duration>
where
    F: FnMut(&mut String) -> Result<bool>,
{
    let start = Instant::now();
    loop {
        let mut seen = String::new();
        let observed = match probe(&mut seen) {
            Ok(true) => return Ok(start.elapsed()),
            Ok(false) => seen,
            // A dead daemon will not come back: fail at once, with its log.
            Err(e @ LabError::DaemonExited { .. }) => return Err(e),
            Err(e) => format!("{seen}\nprobe error: {e}"),
        };
        if start.elapsed() >= timeout {
            return Err(LabError::Timeout {
                what: what.to_string(),
                waited: start.elapsed(),
                observed,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Requires `probe` to keep returning `Ok(true)` for the whole of `duration` (polled every
/// 250 ms). A probe error also breaks the condition.
pub fn holds_for<F>(what: &str, duration: Duration, mut probe: F) -> Result<()>
where
    F: FnMut(&mut String) -> Result<bool>,
{
    let start = Instant::now();
    loop {
        let mut seen = String::new();
        let verdict = probe(&mut seen);
        let broken = match verdict {
            Ok(true) => None,
            Ok(false) => Some(seen),
            Err(e) => Some(format!("{seen}\nprobe error: {e}")),
        };
        if let Some(observed) = broken {
            return Err(LabError::Broken {
                what: what.to_string(),
                after: start.elapsed(),
                required: duration,
                observed,
            });
        }
        if start.elapsed() >= duration {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Same prefix? (compares canonical forms, so `2001:db8:0::/64` == `2001:db8::/64`).
pub fn same_prefix(a: &str, b: &str) -> bool {
    match (a.parse::<ipnet::IpNet>(), b.parse::<ipnet::IpNet>()) {
        (Ok(x), Ok(y)) => x.trunc() == y.trunc(),
        _ => a == b,
    }
}

/// Same address? (compares parsed forms).
pub fn same_addr(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Standard two-node topology: `r` (routelet side) and `p` (peer side) joined by one veth,
/// `r` = 10.0.0.1/24 + 2001:db8::1/64 on `vr`, `p` = 10.0.0.2/24 + 2001:db8::2/64 on `vp`.
pub struct Pair {
    pub r: Netns,
    pub p: Netns,
}

pub const R4: &str = "10.0.0.1";
pub const P4: &str = "10.0.0.2";
pub const R6: &str = "2001:db8::1";
pub const P6: &str = "2001:db8::2";

impl Pair {
    pub fn new(lab: &Lab) -> Result<Pair> {
        let r = lab.netns()?;
        let p = lab.netns()?;
        veth(
            &r,
            "vr",
            &["10.0.0.1/24", "2001:db8::1/64"],
            &p,
            "vp",
            &["10.0.0.2/24", "2001:db8::2/64"],
        )?;
        Ok(Pair { r, p })
    }
}
