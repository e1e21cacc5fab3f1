//! The speaker core: one event loop owns the RIB, every Adj-RIB-Out and the neighbor table;
//! neighbor tasks, the listener and the API handle talk to it only through typed messages.
//!
//! ```text
//!  listener task --accepted streams--> neighbor tasks --NeighborEvent--> core loop
//!  Speaker (API handle) --Command--> core loop --RibEvent (Loc-RIB changes)--> consumer (FIB)
//!  core loop --ToNeighbor (batched Adj-RIB-Out changes)--> neighbor tasks
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{NeighborConfig, SpeakerConfig};
use crate::neighbor::{
    self, EstablishedInfo, LocalIdentity, NeighborEvent, NeighborHandle, PeerState, ToNeighbor,
};
use crate::network::BgpListener;
use crate::rib::{AdjRibOut, LocRibChange, PeerInfo, Rib, RouteFilter};
use crate::status::{NeighborStatus, RouteStatus, SpeakerStatus};
use crate::types::{notify, Family, Notification, PathAttributes, Prefix};

/// What the core tells its consumer (the FIB writer).
#[derive(Debug, Clone)]
pub enum RibEvent {
    Changes(Vec<LocRibChange>),
    /// Every neighbor has sent End-of-RIB (or the convergence timeout passed): routes left
    /// over from a previous run may now be removed.
    Converged,
}

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set TCP MD5 key for neighbor {peer} on the listener: {source}")]
    Md5 {
        peer: IpAddr,
        source: std::io::Error,
    },
    #[error("the speaker has stopped")]
    Stopped,
}

enum Command {
    SetOriginated(Vec<(Prefix, PathAttributes)>),
    Status {
        include_rib: bool,
        reply: oneshot::Sender<SpeakerStatus>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// Handle to a running speaker.
#[derive(Debug, Clone)]
pub struct Speaker {
    commands: mpsc::UnboundedSender<Command>,
}

impl Speaker {
    /// Bind the listener, start one task per neighbor and the core loop.
    pub fn start(cfg: SpeakerConfig) -> Result<(Speaker, mpsc::Receiver<RibEvent>), SpeakerError> {
        let listener = match cfg.listen {
            Some(addr) => {
                let l = BgpListener::bind(addr)
                    .map_err(|source| SpeakerError::Listen { addr, source })?;
                for n in &cfg.neighbors {
                    if let Some(pw) = &n.password {
                        l.set_password(n.address, pw)
                            .map_err(|source| SpeakerError::Md5 {
                                peer: n.address,
                                source,
                            })?;
                    }
                }
                Some(l)
            }
            None => None,
        };
        // Bounded: a neighbor that produces events faster than the core handles them waits.
        let (ev_tx, ev_rx) = mpsc::channel(NEIGHBOR_EVENT_QUEUE);
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (rib_tx, rib_rx) = mpsc::channel(RIB_EVENT_QUEUE);
        let local = LocalIdentity {
            asn: cfg.asn,
            router_id: cfg.router_id,
        };
        let rejected = Arc::new(AtomicU64::new(0));
        let mut peers = BTreeMap::new();
        let mut accept_routes = HashMap::new();
        for n in &cfg.neighbors {
            let handle = neighbor::spawn(n.clone(), local, ev_tx.clone());
            accept_routes.insert(n.address, handle.accepted.clone());
            peers.insert(n.address, Peer::new(n.clone(), handle));
        }
        if let Some(l) = listener {
            tokio::spawn(accept_loop(l, accept_routes, rejected.clone()));
        }
        let core = Core {
            rib: Rib::new(cfg.asn, cfg.router_id, cfg.cluster_id, cfg.max_paths.max(1)),
            convergence_deadline: Some(Instant::now() + cfg.convergence_timeout),
            cfg,
            peers,
            rib_events: rib_tx,
            rejected,
            pending_changes: Vec::new(),
            pending_converged: false,
        };
        tokio::spawn(core.run(ev_rx, cmd_rx));
        Ok((Speaker { commands: cmd_tx }, rib_rx))
    }

    /// Replace the full set of locally originated routes.
    pub fn set_originated(
        &self,
        routes: Vec<(Prefix, PathAttributes)>,
    ) -> Result<(), SpeakerError> {
        self.commands
            .send(Command::SetOriginated(routes))
            .map_err(|_| SpeakerError::Stopped)
    }

    /// Full status: neighbors, counters and the Loc-RIB.
    pub async fn status(&self) -> Result<SpeakerStatus, SpeakerError> {
        self.status_with(true).await
    }

    /// Status without the Loc-RIB listing (`rib_size` still counts it): cheap at any table size.
    pub async fn summary(&self) -> Result<SpeakerStatus, SpeakerError> {
        self.status_with(false).await
    }

    async fn status_with(&self, include_rib: bool) -> Result<SpeakerStatus, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Status {
                include_rib,
                reply: tx,
            })
            .map_err(|_| SpeakerError::Stopped)?;
        rx.await.map_err(|_| SpeakerError::Stopped)
    }

    /// Close every session with Cease/Administrative Shutdown and stop the core.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn accept_loop(
    listener: BgpListener,
    routes: HashMap<IpAddr, mpsc::Sender<TcpStream>>,
    rejected: Arc<AtomicU64>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match routes.get(&peer) {
            Some(tx) => {
                if tx.try_send(stream).is_err() {
                    warn!(%peer, "neighbor busy; dropping incoming connection");
                }
            }
            None => {
                rejected.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, "connection from an address that is not a configured neighbor: rejected");
                tokio::spawn(neighbor::send_notification_and_close(
                    stream,
                    Notification::new(notify::CEASE, notify::CEASE_CONNECTION_REJECTED),
                ));
            }
        }
    }
}

struct Established {
    info: PeerInfo,
    adj_out: AdjRibOut,
    families: Vec<Family>,
    eor_received: HashSet<Family>,
    since: Instant,
    hold_time: u16,
}

struct Peer {
    cfg: NeighborConfig,
    handle: NeighborHandle,
    state: PeerState,
    established: Option<Established>,
    last_down: Option<String>,
}

impl Peer {
    fn new(cfg: NeighborConfig, handle: NeighborHandle) -> Peer {
        Peer {
            cfg,
            handle,
            state: PeerState::Idle,
            established: None,
            last_down: None,
        }
    }
}

struct Core {
    cfg: SpeakerConfig,
    rib: Rib,
    peers: BTreeMap<IpAddr, Peer>,
    /// Bounded: when the consumer (the FIB) falls behind, changes wait in `pending_changes`
    /// and the core stops taking neighbor events, so a route flood is held back by TCP
    /// instead of piling up in memory.
    rib_events: mpsc::Sender<RibEvent>,
    rejected: Arc<AtomicU64>,
    /// `Some` until converged.
    convergence_deadline: Option<Instant>,
    pending_changes: Vec<LocRibChange>,
    /// Converged is to be announced after `pending_changes`.
    pending_converged: bool,
}

/// Neighbor events queued towards the core before neighbor tasks wait.
const NEIGHBOR_EVENT_QUEUE: usize = 256;

/// Events handled before Adj-RIB-Out changes are flushed, so bursts coalesce into fewer UPDATEs.
const MAX_EVENTS_PER_FLUSH: usize = 512;

/// Batches of Loc-RIB changes queued towards the consumer.
const RIB_EVENT_QUEUE: usize = 2;

/// Above this many undelivered Loc-RIB changes the core takes no more neighbor events.
const MAX_PENDING_CHANGES: usize = 10_000;

impl Core {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<(IpAddr, NeighborEvent)>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        loop {
            let deadline = self.convergence_deadline;
            let backlog = !self.pending_changes.is_empty() || self.pending_converged;
            let rib_events = self.rib_events.clone();
            tokio::select! {
                permit = rib_events.reserve(), if backlog => {
                    if let Ok(permit) = permit {
                        self.deliver(permit);
                    }
                }
                ev = events.recv(), if self.pending_changes.len() < MAX_PENDING_CHANGES => match ev {
                    Some((peer, ev)) => {
                        self.on_neighbor_event(peer, ev);
                        for _ in 0..MAX_EVENTS_PER_FLUSH {
                            // The cap holds inside a burst too: one UPDATE can carry ~800
                            // prefixes, a burst of them hundreds of thousands of changes.
                            if self.pending_changes.len() >= MAX_PENDING_CHANGES {
                                break;
                            }
                            match events.try_recv() {
                                Ok((peer, ev)) => self.on_neighbor_event(peer, ev),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return,
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::SetOriginated(routes)) => {
                        let changes = self.rib.set_originated(routes);
                        self.propagate(changes);
                    }
                    Some(Command::Status { include_rib, reply }) => {
                        let _ = reply.send(self.status(include_rib));
                    }
                    Some(Command::Shutdown(done)) => {
                        for p in self.peers.values() {
                            let _ = p.handle.commands.send(ToNeighbor::Shutdown(Notification::new(
                                notify::CEASE,
                                notify::CEASE_ADMIN_SHUTDOWN,
                            )));
                        }
                        // Give the sessions a moment to send their NOTIFICATION.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    info!("convergence timeout reached; releasing routes from a previous run");
                    self.set_converged();
                }
            }
            self.flush();
        }
    }

    fn on_neighbor_event(&mut self, addr: IpAddr, ev: NeighborEvent) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        match ev {
            NeighborEvent::State(s) => peer.state = s,
            NeighborEvent::Established(info) => {
                let est = established_peer(&peer.cfg, info);
                self.rib.peer_up(est.info.clone());
                let mut est = est;
                for (prefix, attrs) in self.rib.export_all(&est.info) {
                    est.adj_out.set(prefix, Some(attrs));
                }
                let batches = est.adj_out.drain();
                if !batches.is_empty() {
                    let _ = peer.handle.commands.send(ToNeighbor::Send(batches));
                }
                for f in &est.families {
                    let _ = peer.handle.commands.send(ToNeighbor::EndOfRib(*f));
                }
                peer.state = PeerState::Established;
                peer.established = Some(est);
            }
            NeighborEvent::Update(update) => {
                if let (Some(f), Some(est)) = (update.end_of_rib(), peer.established.as_mut()) {
                    est.eor_received.insert(f);
                    self.check_converged();
                    return;
                }
                for e in &update.errors {
                    warn!(peer = %addr, attribute = e.type_code, action = ?e.action, reason = %e.reason, "malformed attribute (RFC 7606)");
                }
                let outcome = self.rib.apply_update(addr, &update);
                self.propagate(outcome.changes);
            }
            NeighborEvent::RouteRefresh(rr) => {
                if let Some(est) = peer.established.as_mut() {
                    est.adj_out.clear();
                    for (prefix, attrs) in self.rib.export_all(&est.info) {
                        if Family::of_prefix(&prefix) == rr.family {
                            est.adj_out.set(prefix, Some(attrs));
                        }
                    }
                }
            }
            NeighborEvent::Down(reason) => {
                peer.last_down = Some(reason);
                if peer.established.take().is_some() {
                    let changes = self.rib.peer_down(addr);
                    self.propagate(changes);
                }
            }
        }
    }

    /// Hand Loc-RIB changes to every established peer's Adj-RIB-Out and to the consumer.
    fn propagate(&mut self, changes: Vec<LocRibChange>) {
        if changes.is_empty() {
            return;
        }
        for peer in self.peers.values_mut() {
            if let Some(est) = peer
                .established
                .as_mut()
                .filter(|e| e.info.export == RouteFilter::All)
            {
                for c in &changes {
                    let prefix = match c {
                        LocRibChange::Best { prefix, .. } | LocRibChange::Gone { prefix } => prefix,
                    };
                    est.adj_out
                        .set(*prefix, self.rib.export_for(&est.info, prefix));
                }
            }
        }
        self.pending_changes.extend(changes);
    }

    fn flush(&mut self) {
        for peer in self.peers.values_mut() {
            if let Some(est) = peer.established.as_mut() {
                let batches = est.adj_out.drain();
                if !batches.is_empty() {
                    let _ = peer.handle.commands.send(ToNeighbor::Send(batches));
                }
            }
        }
        let rib_events = self.rib_events.clone();
        while !self.pending_changes.is_empty() || self.pending_converged {
            match rib_events.try_reserve() {
                Ok(permit) => self.deliver(permit),
                Err(_) => break,
            }
        }
    }

    fn check_converged(&mut self) {
        if self.convergence_deadline.is_none() {
            return;
        }
        let all = self.peers.values().all(|p| match &p.established {
            Some(est) => est.families.iter().all(|f| est.eor_received.contains(f)),
            None => false,
        });
        if all {
            info!("every neighbor sent End-of-RIB: routing converged");
            self.set_converged();
        }
    }

    fn set_converged(&mut self) {
        if self.convergence_deadline.take().is_some() {
            self.pending_converged = true;
        }
    }

    /// Hand the next queued event to the consumer: changes first, so it sees every change
    /// made before convergence ahead of `Converged`.
    fn deliver(&mut self, permit: mpsc::Permit<'_, RibEvent>) {
        if !self.pending_changes.is_empty() {
            permit.send(RibEvent::Changes(std::mem::take(&mut self.pending_changes)));
        } else if self.pending_converged {
            self.pending_converged = false;
            permit.send(RibEvent::Converged);
        }
    }

    fn status(&self, include_rib: bool) -> SpeakerStatus {
        let now = Instant::now();
        let neighbors = self
            .peers
            .values()
            .map(|p| {
                let est = p.established.as_ref();
                NeighborStatus::new(
                    &p.cfg,
                    p.state,
                    est.map(|e| now.duration_since(e.since).as_secs())
                        .unwrap_or(0),
                    self.rib.received(p.cfg.address),
                    self.rib.accepted(p.cfg.address),
                    est.map(|e| e.adj_out.advertised()).unwrap_or(0),
                    est.map(|e| (e.info.router_id, e.hold_time, e.families.clone())),
                    &p.handle.counters,
                    p.last_down.clone(),
                )
            })
            .collect();
        let mut rib: Vec<RouteStatus> = if include_rib {
            self.rib
                .loc_rib()
                .map(|(prefix, best)| RouteStatus::new(prefix, &best))
                .collect()
        } else {
            Vec::new()
        };
        rib.sort_by_key(|r| r.sort_key);
        SpeakerStatus {
            router_id: self.cfg.router_id,
            asn: self.cfg.asn,
            converged: self.convergence_deadline.is_none(),
            connections_rejected: self.rejected.load(Ordering::Relaxed),
            rib_size: self.rib.loc_rib_len(),
            neighbors,
            rib,
        }
    }
}

fn established_peer(cfg: &NeighborConfig, info: EstablishedInfo) -> Established {
    let neg = info.negotiated;
    let local_v6 = match (info.local_address, cfg.local_address) {
        (a @ IpAddr::V6(_), _) => Some(a),
        (_, Some(a @ IpAddr::V6(_))) => Some(a),
        _ => None,
    };
    Established {
        info: PeerInfo {
            address: cfg.address,
            asn: neg.remote_asn,
            router_id: neg.remote_id,
            local_address: info.local_address,
            local_address_v6: local_v6,
            route_reflector_client: cfg.route_reflector_client,
            extended_next_hop: neg.extended_next_hop,
            families: neg.families.clone(),
            import: cfg.import,
            export: cfg.export,
        },
        adj_out: AdjRibOut::new(),
        families: neg.families,
        eor_received: HashSet::new(),
        since: Instant::now(),
        hold_time: neg.hold_time,
    }
}
