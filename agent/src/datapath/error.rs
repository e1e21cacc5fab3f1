//! The datapath error type: every variant names the device, address or entry at fault and,
//! for kernel refusals, the errno.

use std::fmt;

fn errno_text(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.split_once(" (os error") {
        Some((description, _)) => description.to_string(),
        None => text,
    }
}

/// Datapath errors.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("datapath netlink must be opened from within a tokio runtime")]
    NoRuntime,
    #[error("cannot open rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The kernel refused a request.
    #[error("{op} {target}: kernel error errno {errno} ({})", errno_text(*.errno))]
    Kernel {
        op: &'static str,
        target: String,
        errno: i32,
    },
    /// The netlink exchange itself failed (socket, unexpected reply).
    #[error("{op} {target}: netlink failure: {reason}")]
    Netlink {
        op: &'static str,
        target: String,
        reason: String,
    },
    /// Another VXLAN device already uses this VNI and UDP port (for the same underlay
    /// family); nothing was created.
    #[error(
        "VXLAN device {device}: VNI {vni} port {port} is already used by device {other} (ifindex {other_ifindex})"
    )]
    VxlanConflict {
        device: String,
        vni: u32,
        port: u16,
        other: String,
        other_ifindex: u32,
    },
    /// A device with our name exists but is not a VXLAN device: left alone.
    #[error("device {device} exists but is of kind {kind}, not vxlan: not touching it")]
    NotVxlan { device: String, kind: String },
    #[error("VXLAN device {device}: invalid specification: {reason}")]
    InvalidSpec { device: String, reason: String },
    #[error("device {device} not found after creating it")]
    Vanished { device: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl DatapathError {
    /// The kernel errno, if the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DatapathError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Map an rtnetlink error of operation `op` on `target` to a [`DatapathError`].
pub(crate) fn nl_err(
    op: &'static str,
    target: impl fmt::Display,
) -> impl FnOnce(rtnetlink::Error) -> DatapathError {
    let target = target.to_string();
    move |e| match e {
        rtnetlink::Error::NetlinkError(msg) if msg.raw_code() != 0 => DatapathError::Kernel {
            op,
            target,
            errno: msg.raw_code().saturating_neg(),
        },
        other => DatapathError::Netlink {
            op,
            target,
            reason: other.to_string(),
        },
    }
}
