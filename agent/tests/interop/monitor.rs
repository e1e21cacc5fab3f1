//! `ip monitor route` inside a namespace, logged to a file: every route the kernel deletes
//! is seen (no sampling gap), for tests that must prove a route never went away.

use std::time::Duration;

use super::daemon::Daemon;
use super::{Lab, Netns, Result};

pub struct RouteMonitor {
    daemon: Daemon,
}

impl RouteMonitor {
    /// Starts `ip monitor route` in `ns` (stopped on Drop, like every daemon).
    pub fn start(lab: &Lab, ns: &Netns, name: &str) -> Result<RouteMonitor> {
        let daemon = Daemon::spawn(lab, ns, name, &["ip", "monitor", "route"], &[])?;
        // Let it subscribe before the caller starts what it watches.
        std::thread::sleep(Duration::from_millis(200));
        Ok(RouteMonitor { daemon })
    }

    /// Every "Deleted" event so far for exactly `prefix` (ip prints the prefix first).
    pub fn deletions(&self, prefix: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.daemon.log_path()).unwrap_or_default();
        text.lines()
            .filter(|l| {
                l.strip_prefix("Deleted ")
                    .is_some_and(|rest| rest.split_whitespace().next() == Some(prefix))
            })
            .map(str::to_string)
            .collect()
    }

    /// Every event so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.daemon.log_path()).unwrap_or_default()
    }
}
