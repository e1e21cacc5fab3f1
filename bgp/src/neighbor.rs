//! One neighbor's connection supervisor (a tokio task): connects or accepts with backoff,
//! resolves connection collisions, runs the sans-IO `fsm::Session` over the socket through
//! a frame reader and a writer task, arms its timers, and reports to the speaker core.
//!
//! ```text
//!  listener --accepted stream--> neighbor task <--ToNeighbor (updates to send)-- core
//!  reader task --frames--> neighbor task --NeighborEvent--> core
//!                          neighbor task --bytes--> writer task --> socket
//! ```

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::NeighborConfig;
use crate::fsm::{
    self, CloseReason, ConnectRetry, Input, Negotiated, Output, Session, SessionConfig, Timer,
};
use crate::network;
use crate::packet::SessionCodec;
use crate::rib::OutBatch;
use crate::types::{
    notify, Asn, AttributeError, ErrorAction, Family, GracefulRestart, Message, Notification,
    RouteRefresh, Update,
};

/// RFC 4271 session states as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl PeerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Idle => "idle",
            PeerState::Connect => "connect",
            PeerState::Active => "active",
            PeerState::OpenSent => "opensent",
            PeerState::OpenConfirm => "openconfirm",
            PeerState::Established => "established",
        }
    }
}

/// Message counters of one neighbor, written by its task, read by status and metrics.
#[derive(Debug, Default)]
pub struct NeighborCounters {
    pub updates_received: AtomicU64,
    pub updates_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub established_transitions: AtomicU64,
    /// (code, subcode) -> count
    pub notifications_sent: Mutex<Vec<((u8, u8), u64)>>,
    pub notifications_received: Mutex<Vec<((u8, u8), u64)>>,
    pub last_error: Mutex<Option<String>>,
    /// Malformed path attributes by the RFC 7606 action taken (one per attribute).
    pub malformed_attribute_discard: AtomicU64,
    pub malformed_treat_as_withdraw: AtomicU64,
    pub malformed_session_reset: AtomicU64,
}

impl NeighborCounters {
    fn count_notification(list: &Mutex<Vec<((u8, u8), u64)>>, n: &Notification) {
        if let Ok(mut l) = list.lock() {
            let key = (n.code, n.subcode);
            match l.iter_mut().find(|(k, _)| *k == key) {
                Some((_, c)) => *c += 1,
                None => l.push((key, 1)),
            }
        }
    }

    /// Count and log the malformed attributes of a received UPDATE (RFC 7606).
    fn count_malformed(&self, peer: IpAddr, errors: &[AttributeError]) {
        for e in errors {
            let counter = match e.action {
                ErrorAction::AttributeDiscard => &self.malformed_attribute_discard,
                ErrorAction::TreatAsWithdraw => &self.malformed_treat_as_withdraw,
                ErrorAction::SessionReset => &self.malformed_session_reset,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            warn!(%peer, attribute = e.type_code, action = ?e.action, reason = %e.reason, "malformed attribute (RFC 7606)");
        }
    }

    fn set_last_error(&self, e: String) {
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(e);
        }
    }
}

/// What the session negotiated plus the local address of the connection.
#[derive(Debug, Clone)]
pub struct EstablishedInfo {
    pub negotiated: Negotiated,
    pub local_address: IpAddr,
}

/// How a session ended, as the core needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDown {
    /// For logs and status.
    pub reason: String,
    /// The peer's routes may be kept as stale (RFC 4724 / RFC 8538 rules, see
    /// `fsm::graceful_restart_applies`); the core still decides with its own settings.
    pub graceful: bool,
}

/// Reports from a neighbor task to the core.
#[derive(Debug)]
pub enum NeighborEvent {
    State(PeerState),
    Established(EstablishedInfo),
    Update(Update),
    RouteRefresh(RouteRefresh),
    /// The established session (if any) is gone.
    Down(SessionDown),
}

/// Commands from the core to a neighbor task.
#[derive(Debug)]
pub enum ToNeighbor {
    /// Announce/withdraw these (only while established; dropped otherwise).
    Send(Vec<OutBatch>),
    EndOfRib(Family),
    /// Close with this NOTIFICATION and stop for good.
    Shutdown(Notification),
    /// Close the connection without a NOTIFICATION and stop for good: the peer sees the TCP
    /// connection end, which starts graceful restart at a helper that does not do RFC 8538.
    Close,
    /// End the current session with this NOTIFICATION and connect again later (BFD Down).
    Reset(Notification),
}

/// Which neighbor task an event comes from: the address plus the generation the core gave
/// the task, so events still queued from a stopped task are not taken for its successor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighborId {
    pub address: IpAddr,
    pub generation: u64,
}

/// Handle the core keeps per neighbor.
#[derive(Debug)]
pub struct NeighborHandle {
    pub commands: mpsc::UnboundedSender<ToNeighbor>,
    pub accepted: mpsc::Sender<TcpStream>,
    pub counters: Arc<NeighborCounters>,
}

/// Local identity the sessions need.
#[derive(Debug, Clone, Copy)]
pub struct LocalIdentity {
    pub asn: Asn,
    pub router_id: std::net::Ipv4Addr,
}

/// Our graceful-restart capability (RFC 4724 with the RFC 8538 N bit): the core writes the
/// bits as its state changes, each session reads them when it sends its OPEN.
#[derive(Debug)]
pub struct LocalGracefulRestart {
    pub restart_time: u16,
    /// R bit: this run is a restart and routing has not converged yet.
    pub restart_state: AtomicBool,
    /// F bits: our forwarding state is intact (restarted with the kernel routes kept, or
    /// converged since the start).
    pub forwarding: AtomicBool,
    /// A hold timer expiry keeps the peer's routes too (see `GracefulRestartConfig`).
    pub keep_on_hold_timer_expiry: bool,
}

impl LocalGracefulRestart {
    pub fn new(cfg: &crate::config::GracefulRestartConfig) -> LocalGracefulRestart {
        LocalGracefulRestart {
            restart_time: cfg.restart_time.min(0x0fff),
            restart_state: AtomicBool::new(cfg.restarting),
            forwarding: AtomicBool::new(cfg.restarting),
            keep_on_hold_timer_expiry: cfg.keep_on_hold_timer_expiry,
        }
    }

    /// Whether a session that ended for `reason` keeps the peer's routes as stale.
    fn keeps_routes(
        &self,
        ours: Option<&GracefulRestart>,
        negotiated: &fsm::Negotiated,
        reason: &CloseReason,
    ) -> bool {
        let hold_expired = matches!(reason, CloseReason::NotificationSent(n) if n.code == notify::HOLD_TIMER_EXPIRED);
        fsm::graceful_restart_applies(ours, negotiated, reason)
            && (self.keep_on_hold_timer_expiry || !hold_expired)
    }

    /// The capability to put in an OPEN offering `families`.
    pub fn capability(&self, families: &[Family]) -> GracefulRestart {
        let forwarding = self.forwarding.load(Ordering::Relaxed);
        GracefulRestart {
            restart_state: self.restart_state.load(Ordering::Relaxed),
            notification: true,
            restart_time: self.restart_time,
            families: families.iter().map(|f| (*f, forwarding)).collect(),
        }
    }
}

const MAX_FRAME: usize = 65535;
const MAX_CONNECT_RETRY: Duration = Duration::from_secs(120);

/// Start the task for one neighbor.
pub fn spawn(
    cfg: NeighborConfig,
    local: LocalIdentity,
    graceful_restart: Option<Arc<LocalGracefulRestart>>,
    generation: u64,
    events: mpsc::Sender<(NeighborId, NeighborEvent)>,
) -> NeighborHandle {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (acc_tx, acc_rx) = mpsc::channel(4);
    let counters = Arc::new(NeighborCounters::default());
    let task = NeighborTask {
        id: NeighborId {
            address: cfg.address,
            generation,
        },
        retry: ConnectRetry::new(cfg.connect_retry, MAX_CONNECT_RETRY.max(cfg.connect_retry)),
        cfg,
        local,
        graceful_restart,
        events,
        commands: cmd_rx,
        accepted: acc_rx,
        counters: counters.clone(),
        state: PeerState::Idle,
        shutting_down: false,
    };
    tokio::spawn(task.run());
    NeighborHandle {
        commands: cmd_tx,
        accepted: acc_tx,
        counters,
    }
}

enum SessionEnd {
    /// Closed; reconnect after backoff (or at once with the pending connection).
    Closed(SessionDown, Option<TcpStream>),
    Shutdown,
}

enum Waited {
    Stream(TcpStream, bool),
    Retry,
    Shutdown,
}

struct NeighborTask {
    id: NeighborId,
    cfg: NeighborConfig,
    local: LocalIdentity,
    graceful_restart: Option<Arc<LocalGracefulRestart>>,
    events: mpsc::Sender<(NeighborId, NeighborEvent)>,
    commands: mpsc::UnboundedReceiver<ToNeighbor>,
    accepted: mpsc::Receiver<TcpStream>,
    counters: Arc<NeighborCounters>,
    retry: ConnectRetry,
    state: PeerState,
    shutting_down: bool,
}

impl NeighborTask {
    /// Report to the core; waits while the core is busy, which (through the bounded frame
    /// channel) stops reading from a peer that floods us faster than we can process.
    async fn emit(&self, ev: NeighborEvent) {
        let _ = self.events.send((self.id, ev)).await;
    }

    /// Hand an UPDATE to the core. While the core is not taking more (its consumer is behind),
    /// this waits — no more messages are read from this peer, so TCP holds the peer back — but
    /// keeps sending our KEEPALIVEs so the session survives the pause.
    async fn emit_update(&self, update: Update, conn: &mut Connection) {
        loop {
            tokio::select! {
                permit = self.events.reserve() => {
                    if let Ok(permit) = permit {
                        permit.send((self.id, NeighborEvent::Update(update)));
                    }
                    return;
                }
                _ = sleep_until(conn.keepalive) => {
                    for out in conn.session.handle(Input::TimerExpired(Timer::Keepalive)) {
                        match out {
                            Output::Send(msg) => conn.send(&msg, &self.counters),
                            Output::SetTimer(t, d) => conn.set_timer(t, Some(d)),
                            Output::ClearTimer(t) => conn.set_timer(t, None),
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    async fn set_state(&mut self, s: PeerState) {
        if self.state != s {
            debug!(peer = %self.cfg.address, from = self.state.as_str(), to = s.as_str(), "state");
            self.state = s;
            self.emit(NeighborEvent::State(s)).await;
        }
    }

    async fn run(mut self) {
        let mut next: Option<(TcpStream, bool)> = None;
        let mut delay = Duration::ZERO;
        loop {
            let (stream, outgoing) = match next.take() {
                Some(c) => c,
                None => match self.wait_for_connection(delay).await {
                    Waited::Stream(s, o) => (s, o),
                    Waited::Retry => {
                        delay = self.retry.next_delay(rand::random::<f64>());
                        continue;
                    }
                    Waited::Shutdown => return,
                },
            };
            match self.run_session(stream, outgoing).await {
                SessionEnd::Shutdown => {
                    self.set_state(PeerState::Idle).await;
                    return;
                }
                SessionEnd::Closed(down, pending) => {
                    self.counters.set_last_error(down.reason.clone());
                    self.emit(NeighborEvent::Down(down)).await;
                    self.set_state(PeerState::Idle).await;
                    next = pending.map(|s| (s, false));
                    delay = self.retry.next_delay(rand::random::<f64>());
                }
            }
        }
    }

    /// Idle/Connect/Active: wait `delay`, then connect (unless passive), accepting an incoming
    /// connection at any time.
    async fn wait_for_connection(&mut self, delay: Duration) -> Waited {
        self.set_state(PeerState::Active).await;
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        let mut slept = delay.is_zero();
        loop {
            let connecting = slept && !self.cfg.passive;
            if connecting {
                self.set_state(PeerState::Connect).await;
            }
            let target = std::net::SocketAddr::new(self.cfg.address, self.cfg.port);
            let opts = self.cfg.transport();
            let timeout = self.cfg.connect_retry.max(Duration::from_secs(3));
            let connect = network::connect(target, &opts, timeout);
            tokio::select! {
                _ = &mut sleep, if !slept => { slept = true; }
                r = connect, if connecting => {
                    return match r {
                        Ok(s) => Waited::Stream(s, true),
                        Err(e) => {
                            debug!(peer = %self.cfg.address, error = %e, "connect failed");
                            self.counters.set_last_error(format!("connect: {e}"));
                            self.set_state(PeerState::Active).await;
                            Waited::Retry
                        }
                    };
                }
                s = self.accepted.recv() => match s {
                    Some(s) => return Waited::Stream(s, false),
                    None => return Waited::Shutdown,
                },
                c = self.commands.recv() => match c {
                    None | Some(ToNeighbor::Shutdown(_) | ToNeighbor::Close) => return Waited::Shutdown,
                    Some(ToNeighbor::Reset(_)) => {}
                    Some(_) => {}
                },
            }
        }
    }

    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            local_asn: self.local.asn,
            local_id: self.local.router_id,
            remote_asn: self.cfg.asn,
            hold_time: self.cfg.hold_time,
            families: self.cfg.families.clone(),
            extended_next_hop: self.cfg.wants_extended_next_hop(),
            graceful_restart: self
                .graceful_restart
                .as_ref()
                .map(|gr| gr.capability(&self.cfg.families)),
        }
    }

    async fn run_session(&mut self, stream: TcpStream, outgoing: bool) -> SessionEnd {
        if !outgoing {
            if let Err(e) = network::secure_accepted(&stream, self.cfg.ttl_security) {
                let what = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    "refused"
                } else {
                    "socket options"
                };
                warn!(peer = %self.cfg.address, error = %e, "incoming connection {what}");
                return SessionEnd::Closed(not_established(format!("{what}: {e}")), None);
            }
        }
        let local_address = match stream.local_addr() {
            Ok(a) => network::canonical(a.ip()),
            Err(e) => return SessionEnd::Closed(not_established(format!("socket: {e}")), None),
        };
        info!(peer = %self.cfg.address, outgoing, "connection up");
        let session_config = self.session_config();
        let our_gr = session_config.graceful_restart.clone();
        let mut conn = Connection::start(stream, session_config);
        let mut pending: Option<TcpStream> = None;
        let mut established = false;
        let mut negotiated: Option<fsm::Negotiated> = None;
        // The core drops the handle (and the listener its sender) when the neighbor is
        // removed; a closed channel must not keep winning the biased select below.
        let mut accepting = true;
        let mut outputs = conn.session.start();
        loop {
            // Handling an output may queue more (a collision stops this session).
            while !outputs.is_empty() {
                for out in std::mem::take(&mut outputs) {
                    match out {
                        Output::Send(msg) => conn.send(&msg, &self.counters),
                        Output::SetTimer(t, d) => conn.set_timer(t, Some(d)),
                        Output::ClearTimer(t) => conn.set_timer(t, None),
                        Output::OpenReceived { remote_id } => {
                            self.set_state(PeerState::OpenConfirm).await;
                            if let Some(other) = pending.take() {
                                // RFC 4271 6.8: keep the connection opened by the higher BGP id.
                                let local_wins =
                                    fsm::local_connection_wins(self.local.router_id, remote_id);
                                if local_wins == outgoing {
                                    reject(other, notify::CEASE_COLLISION_RESOLUTION);
                                } else {
                                    let n = Notification::new(
                                        notify::CEASE,
                                        notify::CEASE_COLLISION_RESOLUTION,
                                    );
                                    outputs.extend(conn.session.handle(Input::Stop(n)));
                                    pending = Some(other);
                                }
                            }
                        }
                        Output::Established(neg) => {
                            established = true;
                            negotiated = Some(neg.clone());
                            self.retry.reset();
                            conn.codec.asn4 = neg.asn4;
                            conn.codec.extended_message = neg.extended_message;
                            self.counters
                                .established_transitions
                                .fetch_add(1, Ordering::Relaxed);
                            info!(peer = %self.cfg.address, remote_id = %neg.remote_id, hold = neg.hold_time, "established");
                            self.set_state(PeerState::Established).await;
                            self.emit(NeighborEvent::Established(EstablishedInfo {
                                negotiated: neg,
                                local_address,
                            }))
                            .await;
                        }
                        Output::Update(u) => {
                            self.counters
                                .updates_received
                                .fetch_add(1, Ordering::Relaxed);
                            self.counters.count_malformed(self.cfg.address, &u.errors);
                            self.emit_update(u, &mut conn).await;
                        }
                        Output::RouteRefresh(rr) => {
                            self.emit(NeighborEvent::RouteRefresh(rr)).await
                        }
                        Output::Closed(reason) => {
                            let text = match &reason {
                                CloseReason::NotificationSent(n) => {
                                    format!("sent notification {n}")
                                }
                                CloseReason::NotificationReceived(n) => {
                                    NeighborCounters::count_notification(
                                        &self.counters.notifications_received,
                                        n,
                                    );
                                    format!("received notification {n}")
                                }
                                CloseReason::ConnectionLost => "connection lost".to_string(),
                            };
                            let graceful = match (&self.graceful_restart, &negotiated) {
                                (Some(gr), Some(neg)) => {
                                    gr.keeps_routes(our_gr.as_ref(), neg, &reason)
                                }
                                _ => false,
                            };
                            info!(peer = %self.cfg.address, reason = %text, established, graceful, "session closed");
                            conn.close().await;
                            return if self.shutting_down {
                                SessionEnd::Shutdown
                            } else {
                                SessionEnd::Closed(
                                    SessionDown {
                                        reason: text,
                                        graceful,
                                    },
                                    pending,
                                )
                            };
                        }
                    }
                }
            }
            if !established && conn.session.state() == fsm::State::OpenSent {
                self.set_state(PeerState::OpenSent).await;
            }
            let input = tokio::select! {
                // Received messages first: after a pause (see `emit_update`) the peer's
                // queued KEEPALIVEs must restart the hold timer before it is looked at.
                biased;
                frame = conn.frames.recv() => match frame {
                    Some(mut buf) => {
                        self.counters.messages_received.fetch_add(1, Ordering::Relaxed);
                        match conn.codec.decode(&mut buf) {
                            Ok(Some(msg)) => Input::Message(msg),
                            Ok(None) => Input::DecodeError(Notification::new(notify::MESSAGE_HEADER_ERROR, notify::BAD_MESSAGE_LENGTH)),
                            Err(e) => {
                                if e.notification.code == notify::UPDATE_MESSAGE_ERROR {
                                    // RFC 7606: the malformation left no smaller remedy.
                                    self.counters.malformed_session_reset.fetch_add(1, Ordering::Relaxed);
                                }
                                warn!(peer = %self.cfg.address, error = %e, "malformed message");
                                Input::DecodeError(e.notification)
                            }
                        }
                    }
                    None => Input::ConnectionLost,
                },
                _ = sleep_until(conn.hold) => Input::TimerExpired(Timer::Hold),
                _ = sleep_until(conn.keepalive) => Input::TimerExpired(Timer::Keepalive),
                s = self.accepted.recv(), if accepting => {
                    if s.is_none() {
                        accepting = false;
                    }
                    if let Some(s) = s {
                        if established {
                            reject(s, notify::CEASE_COLLISION_RESOLUTION);
                        } else if pending.is_some() || conn.session.state() == fsm::State::OpenConfirm {
                            // Remote id known (or a collision already pending): decide now.
                            let local_wins = conn.remote_id.map(|r| fsm::local_connection_wins(self.local.router_id, r));
                            match local_wins {
                                Some(w) if w == outgoing => reject(s, notify::CEASE_COLLISION_RESOLUTION),
                                _ => {
                                    pending = Some(s);
                                    let n = Notification::new(notify::CEASE, notify::CEASE_COLLISION_RESOLUTION);
                                    outputs = conn.session.handle(Input::Stop(n));
                                }
                            }
                        } else if outgoing {
                            // Both sides connected at once and neither has an OPEN yet: each
                            // holds the other's connection, so waiting for the remote id
                            // would leave both in OpenSent until the hold timer. Decide now,
                            // the same way on both sides, by transport address (the RFC 4271
                            // 6.8 outcome whenever router ids order like the addresses, as
                            // for nodes whose router id is their address).
                            if fsm::local_connection_wins_by_address(local_address, self.cfg.address) {
                                reject(s, notify::CEASE_COLLISION_RESOLUTION);
                            } else {
                                pending = Some(s);
                                let n = Notification::new(notify::CEASE, notify::CEASE_COLLISION_RESOLUTION);
                                outputs = conn.session.handle(Input::Stop(n));
                            }
                        } else {
                            pending = Some(s);
                        }
                    }
                    continue;
                },
                c = self.commands.recv() => match c {
                    Some(ToNeighbor::Send(batches)) => {
                        if established {
                            conn.send_batches(&batches, &self.counters, self.cfg.address);
                        }
                        continue;
                    }
                    Some(ToNeighbor::EndOfRib(f)) => {
                        if established {
                            conn.send_end_of_rib(f, &self.counters);
                        }
                        continue;
                    }
                    Some(ToNeighbor::Shutdown(n)) => {
                        self.shutting_down = true;
                        Input::Stop(n)
                    }
                    Some(ToNeighbor::Reset(n)) => Input::Stop(n),
                    Some(ToNeighbor::Close) => {
                        info!(peer = %self.cfg.address, "closing the connection without NOTIFICATION (graceful restart)");
                        conn.close().await;
                        return SessionEnd::Shutdown;
                    }
                    None => {
                        self.shutting_down = true;
                        Input::Stop(Notification::new(notify::CEASE, notify::CEASE_PEER_DECONFIGURED))
                    }
                },
            };
            if let Input::Message(Message::Open(open)) = &input {
                conn.remote_id = Some(open.router_id);
            }
            outputs = conn.session.handle(input);
            for o in &outputs {
                if let Output::Send(Message::Notification(n)) = o {
                    NeighborCounters::count_notification(&self.counters.notifications_sent, n);
                }
            }
        }
    }
}

/// A session that ended before Established: never a graceful restart.
fn not_established(reason: String) -> SessionDown {
    SessionDown {
        reason,
        graceful: false,
    }
}

fn reject(stream: TcpStream, subcode: u8) {
    tokio::spawn(send_notification_and_close(
        stream,
        Notification::new(notify::CEASE, subcode),
    ));
}

/// Send one NOTIFICATION on a connection we will not use, then close it.
pub async fn send_notification_and_close(mut stream: TcpStream, n: Notification) {
    let mut buf = BytesMut::new();
    if SessionCodec::new()
        .encode(&Message::Notification(n), &mut buf)
        .is_ok()
    {
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(&buf)).await;
    }
    let _ = stream.shutdown().await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One TCP connection with its FSM session, codec, timers and I/O tasks.
struct Connection {
    session: Session,
    codec: SessionCodec,
    frames: mpsc::Receiver<BytesMut>,
    writer: mpsc::UnboundedSender<Bytes>,
    writer_task: tokio::task::JoinHandle<()>,
    reader_task: tokio::task::JoinHandle<()>,
    hold: Option<Instant>,
    keepalive: Option<Instant>,
    remote_id: Option<std::net::Ipv4Addr>,
}

/// Received frames queued between a session's socket reader and its task. Small on purpose:
/// when the core holds a neighbor back, the rest waits in the kernel's socket buffer (and TCP
/// flow control slows the peer) instead of in our memory.
const FRAME_QUEUE: usize = 32;

impl Connection {
    fn start(stream: TcpStream, cfg: SessionConfig) -> Connection {
        let (rd, wr) = stream.into_split();
        let (ftx, frx) = mpsc::channel(FRAME_QUEUE);
        let (wtx, wrx) = mpsc::unbounded_channel();
        Connection {
            session: Session::new(cfg),
            codec: SessionCodec::new(),
            frames: frx,
            writer: wtx,
            writer_task: tokio::spawn(write_loop(wr, wrx)),
            reader_task: tokio::spawn(read_frames(rd, ftx)),
            hold: None,
            keepalive: None,
            remote_id: None,
        }
    }

    fn set_timer(&mut self, t: Timer, d: Option<Duration>) {
        let at = d.map(|d| Instant::now() + d);
        match t {
            Timer::Hold => self.hold = at,
            Timer::Keepalive => self.keepalive = at,
        }
    }

    fn send(&mut self, msg: &Message, counters: &NeighborCounters) {
        let mut buf = BytesMut::new();
        match self.codec.encode(msg, &mut buf) {
            Ok(()) => {
                counters.messages_sent.fetch_add(1, Ordering::Relaxed);
                if matches!(msg, Message::Update(_)) {
                    counters.updates_sent.fetch_add(1, Ordering::Relaxed);
                }
                let _ = self.writer.send(buf.freeze());
            }
            Err(e) => warn!(error = %e, kind = msg.kind(), "cannot encode message"),
        }
    }

    fn send_batches(&mut self, batches: &[OutBatch], counters: &NeighborCounters, peer: IpAddr) {
        let mut buf = BytesMut::new();
        let mut n = 0;
        for b in batches {
            let r = match b {
                OutBatch::Withdraw { family, prefixes } => {
                    self.codec.encode_withdraw(*family, prefixes, &mut buf)
                }
                OutBatch::Announce {
                    family,
                    attrs,
                    prefixes,
                } => self
                    .codec
                    .encode_announce(*family, attrs, prefixes, &mut buf),
            };
            match r {
                Ok(k) => n += k,
                Err(e) => warn!(%peer, error = %e, "cannot encode update"),
            }
        }
        if n > 0 {
            counters.updates_sent.fetch_add(n as u64, Ordering::Relaxed);
            counters
                .messages_sent
                .fetch_add(n as u64, Ordering::Relaxed);
            let _ = self.writer.send(buf.freeze());
        }
    }

    fn send_end_of_rib(&mut self, family: Family, counters: &NeighborCounters) {
        let mut buf = BytesMut::new();
        if self.codec.encode_end_of_rib(family, &mut buf).is_ok() {
            counters.updates_sent.fetch_add(1, Ordering::Relaxed);
            counters.messages_sent.fetch_add(1, Ordering::Relaxed);
            let _ = self.writer.send(buf.freeze());
        }
    }

    /// Flush what is queued (e.g. a NOTIFICATION), then close both halves.
    async fn close(self) {
        drop(self.writer);
        let mut w = self.writer_task;
        if tokio::time::timeout(Duration::from_secs(2), &mut w)
            .await
            .is_err()
        {
            w.abort();
        }
        self.reader_task.abort();
    }
}

/// Split the byte stream into BGP messages by the header length field; the codec validates.
async fn read_frames(mut rd: OwnedReadHalf, frames: mpsc::Sender<BytesMut>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while buf.len() >= 19 {
            let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
            // A length below the header size is passed on as a bare header for the codec to reject.
            let take = if len < 19 { 19 } else { len.min(MAX_FRAME) };
            if buf.len() < take {
                break;
            }
            let frame = buf.split_to(take);
            if frames.send(frame).await.is_err() {
                return;
            }
            if len < 19 {
                return;
            }
        }
        buf.reserve(64 * 1024);
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    while let Some(b) = rx.recv().await {
        if wr.write_all(&b).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}
