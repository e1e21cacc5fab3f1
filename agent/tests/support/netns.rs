//! Test support: throwaway network namespaces (`rl-<tag>-<pid>-<n>`) with code run inside
//! them on a dedicated thread (setns + a current-thread tokio runtime), `ip` helpers, and
//! removal on drop (success or failure).

#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace created with `ip netns add`, deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Create `rl-<tag>-<pid>-<n>` with `lo` up.
    pub fn new(tag: &str) -> NetNs {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("rl-{tag}-{}-{n}", std::process::id());
        run_ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `ip -n <ns> <args>`, panicking with its stderr on failure; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ip(&full)
    }

    /// Like [`NetNs::ip`] but returns whether it succeeded instead of panicking.
    pub fn try_ip(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Run `ip -n <ns> -j <args>` and parse its JSON output (empty output = empty array).
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.ip(&full);
        if out.trim().is_empty() {
            return serde_json::Value::Array(vec![]);
        }
        serde_json::from_str(&out).expect("ip -j output is JSON")
    }

    /// Run `f()`'s future to completion on a new thread that has entered this namespace,
    /// on a current-thread tokio runtime (so netlink sockets are created in the namespace).
    pub fn block_on<F, Fut>(&self, f: F) -> Fut::Output
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future,
        Fut::Output: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                enter_netns(&path);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(f())
            });
            match worker.join() {
                Ok(v) => v,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Move the calling thread into the network namespace bound at `path`.
#[allow(unsafe_code)]
fn enter_netns(path: &str) {
    let file = File::open(path).expect("open netns file");
    // SAFETY: setns(2) on a valid, open namespace fd; affects only the calling thread
    // (a dedicated test thread), no memory is shared with the kernel.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

fn run_ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
