//! Foreground daemon process guard: `ip netns exec NS program args...` (ip execs the program, so
//! the child PID is the daemon's), stdout+stderr to a log file, SIGTERM then SIGKILL + wait on Drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{tail, Lab, LabError, Netns, Result};

pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `argv` inside `ns` with extra environment `env`; logs to `<lab>/<name>.log`.
    pub fn spawn(
        lab: &Lab,
        ns: &Netns,
        name: &str,
        argv: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let log = lab.path(&format!("{name}.log"));
        let out =
            File::create(&log).map_err(|e| LabError::io(format!("create {}", log.display()), e))?;
        let err = out.try_clone().map_err(|e| LabError::io("dup log fd", e))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .args(argv)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| LabError::io(format!("spawn {name} ({})", argv.join(" ")), e))?;
        lab.register_log(name, &log);
        Ok(Daemon {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Ok while the process runs; `DaemonExited` (with the log tail) once it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let status = match self.child.as_mut() {
            None => "stopped by the test".to_string(),
            Some(c) => match c.try_wait() {
                Ok(None) => return Ok(()),
                Ok(Some(st)) => st.to_string(),
                Err(e) => format!("wait failed: {e}"),
            },
        };
        Err(LabError::DaemonExited {
            name: self.name.clone(),
            status,
            log: self.log_tail(30),
        })
    }

    /// Peak resident set size (VmHWM, KiB) from /proc.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Sends `signal` (e.g. "TERM", "KILL", "STOP", "CONT") to this daemon's PID only.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| LabError::Check(format!("{} already stopped", self.name)))?;
        super::run(Command::new("sh").args([
            "-c",
            "kill -s \"$1\" \"$2\"",
            "sh",
            signal,
            &pid.to_string(),
        ]))
        .map(|_| ())
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL; always reaps the child. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let pid = child.id().to_string();
        let _ = Command::new("sh")
            .args(["-c", "kill -s TERM \"$1\"", "sh", &pid])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} (pid {pid}) ignored SIGTERM for 5 s; killing", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
