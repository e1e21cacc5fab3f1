//! The error type of `routelet lab up | check | down | supervise`: every variant names the
//! command, file, namespace or object at fault.

use std::path::PathBuf;

/// Why a lab command failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("bad option: {0}")]
    Option(String),
    #[error("a lab is already up in {0} (run `routelet lab down --state-dir {0}` first)")]
    AlreadyUp(PathBuf),
    #[error("no lab state in {0} (is a lab up? `routelet lab up` creates it)")]
    NotUp(PathBuf),
    #[error(
        "{program} is not installed (needed for --tor {tor}); install it or use --tor routelet"
    )]
    MissingProgram { program: String, tor: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("namespace {ns}: {message}")]
    Netns { ns: String, message: String },
    #[error("Kubernetes API ({what}): {message}")]
    Api { what: String, message: String },
    #[error("CNI ADD for pod {pod} on {node}: {message}")]
    Cni {
        pod: String,
        node: String,
        message: String,
    },
    #[error("lab not ready after {seconds} s; missing: {missing}")]
    NotReady { seconds: u64, missing: String },
    #[error("interrupted")]
    Interrupted,
    #[error("supervisor: {0}")]
    Supervisor(String),
}

impl LabError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LabError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn netns(ns: &str, message: impl std::fmt::Display) -> Self {
        LabError::Netns {
            ns: ns.to_string(),
            message: message.to_string(),
        }
    }
}
