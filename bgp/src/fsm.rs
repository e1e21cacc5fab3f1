//! RFC 4271 session state machine for one TCP connection, sans-IO: `Input` in, `Output`s out.
//! No sockets, no tokio, no clocks: the driver (tasks) owns the connection and the timers.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::types::{Asn, Family, GracefulRestart, Message, Notification, RouteRefresh, Update};

/// Static configuration of one session (from the neighbor config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_asn: Asn,
    pub local_id: Ipv4Addr,
    /// Expected peer ASN (OPEN with another ASN -> NOTIFICATION 2/2 Bad Peer AS).
    pub remote_asn: Asn,
    /// Proposed hold time in seconds: 0 (no keepalives) or >= 3.
    pub hold_time: u16,
    /// Families to offer in the multiprotocol capability.
    pub families: Vec<Family>,
    /// Offer RFC 8950 extended next hop for IPv4 unicast.
    pub extended_next_hop: bool,
    /// Graceful restart capability to advertise, if any.
    pub graceful_restart: Option<GracefulRestart>,
}

/// Session states after the TCP connection exists (Idle/Connect/Active live in the neighbor
/// supervisor, which owns connecting, accepting and collision handling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    OpenSent,
    OpenConfirm,
    Established,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    Hold,
    Keepalive,
}

/// What both sides agreed in the OPEN exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub remote_asn: Asn,
    pub remote_id: Ipv4Addr,
    /// min(local, remote); 0 = no hold timer.
    pub hold_time: u16,
    pub keepalive_interval: Duration,
    /// Both sent the 4-octet-AS capability.
    pub asn4: bool,
    /// Families both sides offered (RFC 4760; no MP capability at all = IPv4 unicast only).
    pub families: Vec<Family>,
    pub route_refresh: bool,
    /// IPv4 unicast may be sent with an IPv6 next hop (both offered RFC 8950).
    pub extended_next_hop: bool,
    pub extended_message: bool,
    pub peer_graceful_restart: Option<GracefulRestart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A decoded message from the peer.
    Message(Message),
    /// The peer sent bytes that could not be decoded; send this NOTIFICATION and close.
    DecodeError(Notification),
    TimerExpired(Timer),
    /// Administrative stop: send this NOTIFICATION (e.g. Cease/Admin Shutdown) and close.
    Stop(Notification),
    /// The TCP connection closed or failed.
    ConnectionLost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    NotificationSent(Notification),
    NotificationReceived(Notification),
    ConnectionLost,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(Message),
    /// (Re)arm a timer to fire after the duration.
    SetTimer(Timer, Duration),
    ClearTimer(Timer),
    /// Entered OpenConfirm: the peer's OPEN was accepted (the driver can resolve collisions now).
    OpenReceived {
        remote_id: Ipv4Addr,
    },
    /// Entered Established.
    Established(Negotiated),
    /// An UPDATE received in Established.
    Update(Update),
    /// A ROUTE-REFRESH received in Established (and negotiated).
    RouteRefresh(RouteRefresh),
    /// The session is over: the driver closes the connection. Always the last output.
    Closed(CloseReason),
}

/// One BGP session over one TCP connection.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
}

impl Session {
    pub fn new(cfg: SessionConfig) -> Session {
        Session {
            cfg,
            state: State::OpenSent,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The TCP connection is up: send OPEN, arm the large hold timer (RFC 4271: 4 minutes).
    pub fn start(&mut self) -> Vec<Output> {
        let _ = &self.cfg;
        unimplemented!()
    }

    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let _ = input;
        unimplemented!()
    }
}

/// RFC 4271 6.8 connection collision: `true` if the connection initiated by the speaker with
/// the higher BGP identifier is kept... returns whether the *locally initiated* connection wins.
pub fn local_connection_wins(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> bool {
    u32::from(local_id) > u32::from(remote_id)
}

/// Connect-retry backoff with jitter (pure: the caller supplies the random factor).
#[derive(Debug, Clone)]
pub struct ConnectRetry {
    pub base: Duration,
    pub max: Duration,
    attempts: u32,
}

impl ConnectRetry {
    pub fn new(base: Duration, max: Duration) -> ConnectRetry {
        ConnectRetry {
            base,
            max,
            attempts: 0,
        }
    }

    /// Delay before the next attempt; `jitter` in [0, 1) scales it to 75%..100% (RFC 4271 10).
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let _ = jitter;
        unimplemented!()
    }

    /// A session reached Established: start over from `base` next time.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}
