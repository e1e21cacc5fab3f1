//! The lab's state files in the state dir: `lab.json` (written only by `up`: the topology, the
//! namespaces built so far, the processes and responders the supervisor must run, the pods and
//! the LoadBalancer IP) and `pids.json` (written only by the supervisor: its own PID and the
//! current PID of every process). Both are rewritten atomically (temp file + rename).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::LabError;
use super::topology::Topology;

pub const LAB_FILE: &str = "lab.json";
pub const PIDS_FILE: &str = "pids.json";

/// A long-running process the supervisor keeps alive: `ip netns exec <netns> <argv...>`,
/// stdout and stderr appended to `log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub name: String,
    pub netns: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

/// A TCP responder thread of the supervisor: listens on `addr` inside `netns` and answers every
/// connection with `answer` and a newline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Responder {
    pub name: String,
    pub netns: String,
    pub addr: SocketAddr,
    pub answer: String,
}

/// A pod added through the CNI plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub name: String,
    /// 1-based node index.
    pub node: usize,
    pub netns: String,
    pub ip: Ipv4Addr,
}

/// `lab.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub topology: Topology,
    /// Namespaces created so far (`down` deletes them, plus any `<prefix>-*` left over).
    pub namespaces: Vec<String>,
    /// Directories outside the state dir the lab created (FRR's run dir), removed by `down`.
    #[serde(default)]
    pub extra_dirs: Vec<PathBuf>,
    pub processes: Vec<Process>,
    pub responders: Vec<Responder>,
    pub pods: Vec<Pod>,
    pub lb_ip: Option<Ipv4Addr>,
    /// `up` finished successfully.
    pub ready: bool,
}

impl LabState {
    pub fn new(topology: Topology) -> Self {
        LabState {
            topology,
            namespaces: Vec::new(),
            extra_dirs: Vec::new(),
            processes: Vec::new(),
            responders: Vec::new(),
            pods: Vec::new(),
            lb_ip: None,
            ready: false,
        }
    }

    pub fn save(&self) -> Result<(), LabError> {
        let path = self.topology.state_dir.join(LAB_FILE);
        let text = serde_json::to_vec_pretty(self).map_err(|e| LabError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &text)
    }

    pub fn load(state_dir: &Path) -> Result<LabState, LabError> {
        let path = state_dir.join(LAB_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LabError::NotUp(state_dir.to_path_buf()))
            }
            Err(e) => return Err(LabError::io(path, e)),
        };
        serde_json::from_slice(&text).map_err(|e| LabError::Parse {
            path,
            message: e.to_string(),
        })
    }
}

/// One supervised process's current PID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessPid {
    pub pid: u32,
    /// How many times it was started again after dying.
    pub restarts: u32,
}

/// `pids.json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pids {
    pub supervisor: u32,
    pub processes: BTreeMap<String, ProcessPid>,
    /// Responders listening.
    pub responders: Vec<String>,
}

impl Pids {
    pub fn save(&self, state_dir: &Path) -> Result<(), LabError> {
        let path = state_dir.join(PIDS_FILE);
        let text = serde_json::to_vec_pretty(self).map_err(|e| LabError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&path, &text)
    }

    /// `None` when the supervisor has not written the file yet.
    pub fn load(state_dir: &Path) -> Result<Option<Pids>, LabError> {
        let path = state_dir.join(PIDS_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LabError::io(path, e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| LabError::Parse {
                path,
                message: e.to_string(),
            })
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory and a rename, so a reader
/// sees the old or the new content, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LabError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| LabError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| LabError::io(path, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lab::topology::{Backend, Tor};

    #[test]
    fn lab_and_pids_round_trip() {
        let dir = std::env::temp_dir().join(format!("rl-lab-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Topology::new("x", 2, 1, Backend::Vxlan, Tor::Bird, &dir).unwrap();
        let mut s = LabState::new(t);
        s.pods.push(Pod {
            name: "n1-p1".into(),
            node: 1,
            netns: "x-n1-p1".into(),
            ip: Ipv4Addr::new(10, 244, 1, 2),
        });
        s.save().unwrap();
        assert_eq!(LabState::load(&dir).unwrap(), s);
        assert_eq!(Pids::load(&dir).unwrap(), None);
        let mut p = Pids {
            supervisor: 7,
            ..Pids::default()
        };
        p.processes.insert(
            "n1".into(),
            ProcessPid {
                pid: 9,
                restarts: 1,
            },
        );
        p.save(&dir).unwrap();
        assert_eq!(Pids::load(&dir).unwrap(), Some(p));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(LabState::load(&dir), Err(LabError::NotUp(_))));
    }
}
