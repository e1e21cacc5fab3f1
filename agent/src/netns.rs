//! Running code inside another network namespace: a dedicated thread enters the namespace
//! (`setns(2)` changes only the calling thread's namespace) and runs a closure there; sockets
//! it opens (netlink, TCP) stay bound to that namespace after the thread ends.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

/// Where `ip netns add NAME` mounts a named namespace.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Why code could not be run in a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("cannot start a thread for network namespace {path}: {source}")]
    Thread {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the thread running in network namespace {0} panicked")]
    Panicked(PathBuf),
}

/// The path of the named namespace `name` (as created by `ip netns add`).
pub fn named(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Runs `f` on a new thread inside the network namespace at `path` (a bind mount such as
/// `/var/run/netns/NAME` or `/proc/PID/ns/net`) and returns its result. The caller's own
/// thread never changes namespace.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let owned = path.to_path_buf();
    let handle = std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || -> Result<T, NetnsError> {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                path: owned,
                source,
            })?;
            Ok(f())
        })
        .map_err(|source| NetnsError::Thread {
            path: path.to_path_buf(),
            source,
        })?;
    handle
        .join()
        .map_err(|_| NetnsError::Panicked(path.to_path_buf()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_an_open_error_naming_the_path() {
        let err = run_in(Path::new("/var/run/netns/routelet-no-such-ns"), || ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/var/run/netns/routelet-no-such-ns"), "{err}");
    }

    #[test]
    fn the_own_namespace_runs_the_closure() {
        let out = run_in(Path::new("/proc/self/ns/net"), || 7).ok();
        assert_eq!(out, Some(7));
    }
}
