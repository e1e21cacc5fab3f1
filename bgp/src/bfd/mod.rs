//! BFD (RFC 5880 / RFC 5881): single-hop asynchronous mode over UDP 3784, IPv4 and IPv6, no
//! echo, no authentication. Public API: the [`Bfd`] handle, peer config, events and status.
//!
//! Layout: [`packet`] codec, [`session`] sans-IO state machine, [`demux`] receive checks and
//! discard counters, `driver` the tokio task doing the socket I/O, `sys` the raw socket calls.
//! See docs/bfd.md.

pub mod demux;
mod driver;
pub mod packet;
pub mod session;
mod sys;

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use demux::{Discard, DiscardCounters, DiscardKind};
pub use packet::{BfdState, Diag};
pub use session::{SessionCounters, SessionSnapshot};

/// UDP destination port of single-hop BFD Control packets (RFC 5881 section 4).
pub const CONTROL_PORT: u16 = 3784;
/// Smallest interval accepted in a [`BfdPeerConfig`] (a userspace agent cannot keep faster).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Largest interval the 32-bit microsecond wire fields can carry.
pub const MAX_INTERVAL: Duration = Duration::from_micros(u32::MAX as u64);

/// One BFD session: the peer, the local address to send from, and the local timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdPeerConfig {
    pub peer: IpAddr,
    pub local: IpAddr,
    /// bfd.RequiredMinRxInterval (default 300 ms).
    pub min_rx: Duration,
    /// bfd.DesiredMinTxInterval once Up (default 300 ms; 1 s floor while not Up).
    pub min_tx: Duration,
    /// bfd.DetectMult (default 3).
    pub multiplier: u8,
}

impl BfdPeerConfig {
    /// A session to `peer` from `local` with the default timers (300 ms, 300 ms, x3).
    pub fn new(peer: IpAddr, local: IpAddr) -> BfdPeerConfig {
        BfdPeerConfig {
            peer,
            local,
            min_rx: Duration::from_millis(300),
            min_tx: Duration::from_millis(300),
            multiplier: 3,
        }
    }

    fn validate(&self) -> Result<(), BfdError> {
        let bad = |problem| {
            Err(BfdError::InvalidPeer {
                peer: self.peer,
                problem,
            })
        };
        if self.peer.is_ipv4() != self.local.is_ipv4() {
            return bad(ConfigProblem::FamilyMismatch { local: self.local });
        }
        for a in [self.peer, self.local] {
            if a.is_unspecified() || a.is_multicast() {
                return bad(ConfigProblem::NotUnicast { addr: a });
            }
            if let IpAddr::V6(v6) = a {
                if v6.is_unicast_link_local() {
                    return bad(ConfigProblem::LinkLocal { addr: a });
                }
            }
        }
        if self.multiplier == 0 {
            return bad(ConfigProblem::ZeroMultiplier);
        }
        for (field, value) in [("min_rx", self.min_rx), ("min_tx", self.min_tx)] {
            if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&value) {
                return bad(ConfigProblem::IntervalOutOfRange { field, value });
            }
        }
        Ok(())
    }

    pub(crate) fn session_config(&self) -> session::SessionConfig {
        session::SessionConfig {
            min_tx: self.min_tx,
            min_rx: self.min_rx,
            detect_mult: self.multiplier,
        }
    }
}

/// What is wrong with a [`BfdPeerConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    #[error("local address {local} is of the other address family")]
    FamilyMismatch { local: IpAddr },
    #[error("{addr} is not a unicast address")]
    NotUnicast { addr: IpAddr },
    #[error("{addr} is link-local: sessions need an interface, which is not supported")]
    LinkLocal { addr: IpAddr },
    #[error("detect multiplier is zero")]
    ZeroMultiplier,
    #[error("{field} {value:?} outside {MIN_INTERVAL:?}..={MAX_INTERVAL:?}")]
    IntervalOutOfRange {
        field: &'static str,
        value: Duration,
    },
}

/// Errors of the BFD API.
#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    #[error("Bfd::start must be called inside a tokio runtime")]
    NoRuntime,
    #[error("cannot open the BFD receive socket on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("BFD peer {peer}: {problem}")]
    InvalidPeer {
        peer: IpAddr,
        problem: ConfigProblem,
    },
    #[error("BFD peer {0} is configured twice")]
    DuplicatePeer(IpAddr),
    #[error("the BFD task has stopped")]
    Stopped,
}

/// Emitted whenever a session enters Up, Down or AdminDown (not Init), in order, per peer.
/// Sessions removed with [`Bfd::set_peers`] emit nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdEvent {
    pub peer: IpAddr,
    pub state: BfdState,
    /// Why (bfd.LocalDiag): e.g. ControlDetectionTimeExpired, NeighborSignaledSessionDown.
    pub diag: Diag,
    /// The peer's state in its last packet: Down after a received AdminDown is the peer's
    /// administrative action, not a path failure (RFC 5882 section 3.2).
    pub remote_state: BfdState,
}

/// One session as seen by [`Bfd::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdSessionStatus {
    pub config: BfdPeerConfig,
    /// The protocol variables: states, discriminators, diagnostics, advertised, remote and
    /// negotiated timers, poll in progress, counters.
    pub session: SessionSnapshot,
    /// UDP source port of this session (49152-65535), once its socket is open.
    pub source_port: Option<u16>,
    /// Time since the last state change.
    pub since_change: Duration,
    /// Discarded packets whose source address is this session's peer.
    pub discards: DiscardCounters,
    pub tx_errors: u64,
    /// Last socket error (bind or send), if any.
    pub last_error: Option<String>,
}

/// Snapshot of the whole BFD instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BfdStatus {
    /// Configured sessions, sorted by peer address.
    pub sessions: Vec<BfdSessionStatus>,
    /// Every discarded packet, whatever its source (unknown sources included).
    pub discards: DiscardCounters,
}

impl BfdStatus {
    pub fn session(&self, peer: IpAddr) -> Option<&BfdSessionStatus> {
        self.sessions.iter().find(|s| s.config.peer == peer)
    }
}

/// Instance options; the defaults are RFC 5881's ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdOptions {
    /// Port the receive sockets listen on (0.0.0.0 and [::]).
    pub listen_port: u16,
    /// Destination port of the packets we send.
    pub peer_port: u16,
}

impl Default for BfdOptions {
    fn default() -> Self {
        BfdOptions {
            listen_port: CONTROL_PORT,
            peer_port: CONTROL_PORT,
        }
    }
}

pub(crate) enum Command {
    SetPeers(Vec<BfdPeerConfig>),
    Status(oneshot::Sender<BfdStatus>),
}

/// Handle to the BFD task. Cloneable; the task sends AdminDown to every peer and stops when
/// the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Bfd {
    cmds: mpsc::UnboundedSender<Command>,
}

impl Bfd {
    /// Opens the receive sockets on UDP 3784 and spawns the BFD task on the current tokio
    /// runtime. The events channel is unbounded so the protocol task never waits on a slow
    /// consumer; its rate is bounded by session transitions.
    pub fn start() -> Result<(Bfd, mpsc::UnboundedReceiver<BfdEvent>), BfdError> {
        Bfd::start_with(BfdOptions::default())
    }

    /// [`Bfd::start`] with other ports (tests on loopback).
    pub fn start_with(
        opts: BfdOptions,
    ) -> Result<(Bfd, mpsc::UnboundedReceiver<BfdEvent>), BfdError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| BfdError::NoRuntime)?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let driver = driver::Driver::new(opts, cmd_rx, ev_tx)?;
        rt.spawn(driver.run());
        Ok((Bfd { cmds: cmd_tx }, ev_rx))
    }

    /// Declares the full set of sessions. New peers start Down; removed peers are sent
    /// AdminDown for a while, then forgotten; a changed local address restarts the session;
    /// changed timers or multiplier on an existing session take effect through a Poll
    /// Sequence (RFC 5880 6.8.3) without a state change.
    pub fn set_peers(&self, peers: Vec<BfdPeerConfig>) -> Result<(), BfdError> {
        let mut seen = HashSet::new();
        for p in &peers {
            p.validate()?;
            if !seen.insert(p.peer) {
                return Err(BfdError::DuplicatePeer(p.peer));
            }
        }
        self.cmds
            .send(Command::SetPeers(peers))
            .map_err(|_| BfdError::Stopped)
    }

    /// State, discriminators, negotiated timers and counters of every session.
    pub async fn status(&self) -> Result<BfdStatus, BfdError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Command::Status(tx))
            .map_err(|_| BfdError::Stopped)?;
        rx.await.map_err(|_| BfdError::Stopped)
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod driver_tests;
