//! RFC 4271 session state machine for one TCP connection, sans-IO: `Input` in, `Output`s out.
//! No sockets, no tokio, no clocks: the driver (tasks) owns the connection and the timers.
//!
//! The FSM covers the states after the TCP connection exists (OpenSent, OpenConfirm,
//! Established) plus a terminal Closed. Submodules: [`open`] builds, validates and negotiates
//! OPEN messages (RFC 4271 6.2, RFC 5492/6793/4760/2918/8950/4724); [`retry`] holds the
//! connect-retry backoff (RFC 4271 10 jitter).
//!
//! Invariants (checked by the property test): once `Output::Closed` is emitted it is the last
//! output of that call, the state is `Closed`, and every later input yields no output;
//! `Output::Established` is emitted at most once per session.

mod open;
mod retry;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::types::{
    notify, Asn, Family, GracefulRestart, Message, Notification, RouteRefresh, Update,
};

pub use retry::ConnectRetry;

/// The initial hold time armed by `start()` while waiting for the peer's OPEN
/// (RFC 4271 8.2.2: "a large value", suggested 4 minutes).
pub const LARGE_HOLD_TIME: Duration = Duration::from_secs(240);

/// The BGP version routelet speaks.
pub const BGP_VERSION: u8 = 4;

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
    /// `hold_time / 3` (at least 1 s); `Duration::ZERO` when `hold_time` is 0 (no keepalives).
    pub keepalive_interval: Duration,
    /// Both sent the 4-octet-AS capability.
    pub asn4: bool,
    /// Families both sides offered (RFC 4760; no MP capability at all = IPv4 unicast only).
    /// Sorted, without duplicates, never empty (an empty intersection fails the OPEN with 2/7).
    pub families: Vec<Family>,
    pub route_refresh: bool,
    /// IPv4 unicast may be sent with an IPv6 next hop (both offered RFC 8950 for IPv4
    /// unicast, and IPv4 unicast is a negotiated family).
    pub extended_next_hop: bool,
    pub extended_message: bool,
    pub peer_graceful_restart: Option<GracefulRestart>,
}

/// `Message` is much larger than the other variants; that is accepted: an `Input` is built
/// once per received message and consumed at once, and boxing would cost an allocation each.
#[allow(clippy::large_enum_variant)]
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

/// The keepalive interval for a negotiated hold time: `None` when `hold` is 0 (no keepalives,
/// no hold timer), else `hold / 3` seconds (RFC 4271 10 suggestion), at least 1 s so a
/// nonsensical hold time of 1 or 2 cannot produce a zero-length timer.
pub fn keepalive_for(hold: u16) -> Option<Duration> {
    if hold == 0 {
        None
    } else {
        Some(Duration::from_secs(u64::from((hold / 3).max(1))))
    }
}

/// One BGP session over one TCP connection.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    /// `start()` was called (a second call is a no-op).
    started: bool,
    /// Set when the peer's OPEN is accepted (OpenConfirm onwards).
    negotiated: Option<Negotiated>,
}

impl Session {
    pub fn new(cfg: SessionConfig) -> Session {
        Session {
            cfg,
            state: State::OpenSent,
            started: false,
            negotiated: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// What was negotiated, once the peer's OPEN has been accepted (OpenConfirm onwards; kept
    /// after Closed for diagnostics).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The TCP connection is up: send OPEN, arm the large hold timer (RFC 4271: 4 minutes).
    /// Calling it again, or after the session closed, yields nothing.
    pub fn start(&mut self) -> Vec<Output> {
        if self.started || self.state != State::OpenSent {
            return Vec::new();
        }
        self.started = true;
        vec![
            Output::Send(Message::Open(open::local_open(&self.cfg))),
            Output::SetTimer(Timer::Hold, LARGE_HOLD_TIME),
        ]
    }

    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        if self.state == State::Closed {
            return Vec::new();
        }
        match input {
            Input::Message(msg) => self.on_message(msg),
            Input::DecodeError(n) | Input::Stop(n) => self.close_sending(Vec::new(), n),
            Input::TimerExpired(Timer::Hold) => self.on_hold_expired(),
            Input::TimerExpired(Timer::Keepalive) => self.on_keepalive_expired(),
            Input::ConnectionLost => self.close(Vec::new(), CloseReason::ConnectionLost),
        }
    }

    fn on_message(&mut self, msg: Message) -> Vec<Output> {
        match (self.state, msg) {
            // RFC 4271 8.2.2: NotifMsg in any state -> drop the connection, no reply.
            (_, Message::Notification(n)) => {
                self.close(Vec::new(), CloseReason::NotificationReceived(n))
            }
            (State::OpenSent, Message::Open(peer)) => self.on_open(&peer),
            (State::OpenSent, _) => self.fsm_error(notify_fsm::UNEXPECTED_IN_OPENSENT),
            (State::OpenConfirm, Message::Keepalive) => {
                let mut out = self.restart_hold();
                self.state = State::Established;
                if let Some(neg) = &self.negotiated {
                    out.push(Output::Established(neg.clone()));
                }
                out
            }
            // An OPEN here would be a collision on the same connection; collisions between
            // two connections are the driver's business (it saw OpenReceived).
            (State::OpenConfirm, _) => self.fsm_error(notify_fsm::UNEXPECTED_IN_OPENCONFIRM),
            (State::Established, Message::Open(_)) => {
                self.fsm_error(notify_fsm::UNEXPECTED_IN_ESTABLISHED)
            }
            (State::Established, Message::Update(u)) => {
                let mut out = self.restart_hold();
                out.push(Output::Update(u));
                out
            }
            (State::Established, Message::Keepalive) => self.restart_hold(),
            (State::Established, Message::RouteRefresh(rr)) => {
                let mut out = self.restart_hold();
                if self.accepts_route_refresh(&rr) {
                    out.push(Output::RouteRefresh(rr));
                }
                out
            }
            (State::Closed, _) => Vec::new(),
        }
    }

    /// OpenSent + OPEN: validate, negotiate, answer with KEEPALIVE and move to OpenConfirm.
    fn on_open(&mut self, peer: &crate::types::Open) -> Vec<Output> {
        let neg =
            match open::validate(&self.cfg, peer).and_then(|()| open::negotiate(&self.cfg, peer)) {
                Ok(neg) => neg,
                Err(n) => return self.close_sending(Vec::new(), n),
            };
        let mut out = vec![Output::Send(Message::Keepalive)];
        match keepalive_for(neg.hold_time) {
            Some(keepalive) => {
                out.push(Output::SetTimer(Timer::Hold, hold_duration(neg.hold_time)));
                out.push(Output::SetTimer(Timer::Keepalive, keepalive));
            }
            None => {
                out.push(Output::ClearTimer(Timer::Hold));
                out.push(Output::ClearTimer(Timer::Keepalive));
            }
        }
        out.push(Output::OpenReceived {
            remote_id: neg.remote_id,
        });
        self.negotiated = Some(neg);
        self.state = State::OpenConfirm;
        out
    }

    /// RFC 2918: only when negotiated, and only for a family offered at session setup (else
    /// ignored). Only subtype 0 (a normal request) is passed on: routelet does not advertise
    /// enhanced route refresh (RFC 7313), so BoRR/EoRR markers from the peer are ignored.
    fn accepts_route_refresh(&self, rr: &RouteRefresh) -> bool {
        self.negotiated.as_ref().is_some_and(|neg| {
            neg.route_refresh && rr.subtype == 0 && neg.families.contains(&rr.family)
        })
    }

    fn on_hold_expired(&mut self) -> Vec<Output> {
        // With a negotiated hold time of 0 no hold timer is running: an expiry is a stale
        // event the driver raced with our ClearTimer; ignore it.
        if self.state != State::OpenSent && self.negotiated_hold() == 0 {
            return Vec::new();
        }
        self.close_sending(Vec::new(), Notification::new(notify::HOLD_TIMER_EXPIRED, 0))
    }

    fn on_keepalive_expired(&mut self) -> Vec<Output> {
        match self.state {
            State::OpenConfirm | State::Established => {
                match keepalive_for(self.negotiated_hold()) {
                    Some(keepalive) => vec![
                        Output::Send(Message::Keepalive),
                        Output::SetTimer(Timer::Keepalive, keepalive),
                    ],
                    // Hold time 0: no keepalives; a stale expiry is ignored.
                    None => Vec::new(),
                }
            }
            // No keepalive timer is armed before the OPEN exchange.
            State::OpenSent | State::Closed => Vec::new(),
        }
    }

    fn negotiated_hold(&self) -> u16 {
        self.negotiated.as_ref().map_or(0, |n| n.hold_time)
    }

    /// Re-arm the hold timer after a message from the peer (no-op with hold time 0).
    fn restart_hold(&self) -> Vec<Output> {
        match self.negotiated_hold() {
            0 => Vec::new(),
            hold => vec![Output::SetTimer(Timer::Hold, hold_duration(hold))],
        }
    }

    /// RFC 6608 FSM error: NOTIFICATION 5/`subcode`, then close.
    fn fsm_error(&mut self, subcode: u8) -> Vec<Output> {
        self.close_sending(Vec::new(), Notification::new(notify::FSM_ERROR, subcode))
    }

    fn close_sending(&mut self, mut out: Vec<Output>, n: Notification) -> Vec<Output> {
        out.push(Output::Send(Message::Notification(n.clone())));
        self.close(out, CloseReason::NotificationSent(n))
    }

    fn close(&mut self, mut out: Vec<Output>, reason: CloseReason) -> Vec<Output> {
        self.state = State::Closed;
        out.push(Output::Closed(reason));
        out
    }
}

fn hold_duration(hold: u16) -> Duration {
    Duration::from_secs(u64::from(hold))
}

/// RFC 6608 FSM error subcodes.
pub mod notify_fsm {
    pub const UNSPECIFIED: u8 = 0;
    pub const UNEXPECTED_IN_OPENSENT: u8 = 1;
    pub const UNEXPECTED_IN_OPENCONFIRM: u8 = 2;
    pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
}

/// RFC 4271 6.8 connection collision: the connection initiated by the speaker with the higher
/// BGP identifier is kept. Returns whether the *locally initiated* connection wins, i.e.
/// `local_id > remote_id` (identifiers compared as unsigned 32-bit integers in host order).
pub fn local_connection_wins(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> bool {
    u32::from(local_id) > u32::from(remote_id)
}

/// Collision resolution before either side knows the other's BGP id (both connected at the
/// same moment, both waiting in OpenSent): keep the connection opened by the higher transport
/// address. Both ends see the same two addresses, so they agree.
pub fn local_connection_wins_by_address(local: std::net::IpAddr, remote: std::net::IpAddr) -> bool {
    local > remote
}

/// Whether the end of an established session starts graceful restart for the peer's routes
/// (we keep them as stale): both sides advertised the capability (`ours` is what we sent) and
/// either the TCP connection just ended (RFC 4724 4.2), or a NOTIFICATION was sent or
/// received, both sides set the N bit and it is not Cease / Hard Reset (RFC 8538 4).
pub fn graceful_restart_applies(
    ours: Option<&GracefulRestart>,
    negotiated: &Negotiated,
    reason: &CloseReason,
) -> bool {
    let (Some(ours), Some(theirs)) = (ours, negotiated.peer_graceful_restart.as_ref()) else {
        return false;
    };
    match reason {
        CloseReason::ConnectionLost => true,
        CloseReason::NotificationSent(n) | CloseReason::NotificationReceived(n) => {
            let hard_reset = n.code == notify::CEASE && n.subcode == notify::CEASE_HARD_RESET;
            ours.notification && theirs.notification && !hard_reset
        }
    }
}
