//! The speaker core: one event loop owns the RIB, every Adj-RIB-Out and the neighbor table;
//! neighbor tasks, the listener and the API handle talk to it only through typed messages.
//!
//! ```text
//!  listener task --accepted streams--> neighbor tasks --NeighborEvent--> core loop
//!  Speaker (API handle) --Command--> core loop --RibEvent (Loc-RIB changes)--> consumer (FIB)
//!  core loop --ToNeighbor (batched Adj-RIB-Out changes)--> neighbor tasks
//!  core loop --ListenerCmd (neighbor added/removed: route + MD5 key)--> listener task
//! ```
//!
//! The neighbor table is declarative: `set_neighbors` hands the core the full desired set and
//! the core applies `neighbor_plan::plan_neighbor_changes` (start, stop with Cease / Peer
//! De-configured, restart with Cease / Other Configuration Change, or update in place).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::bfd::{Bfd, BfdEvent, BfdPeerConfig, BfdState};
use crate::config::{NeighborConfig, SpeakerConfig};
use crate::neighbor::{
    self, EstablishedInfo, LocalGracefulRestart, LocalIdentity, NeighborEvent, NeighborHandle,
    NeighborId, PeerState, SessionDown, ToNeighbor,
};
use crate::neighbor_plan::{plan_neighbor_changes, SoftChange};
use crate::network::BgpListener;
use crate::rib::{AdjRibOut, LocRibChange, PeerInfo, Reject, Rib, RouteFilter};
use crate::status::{LoopCounts, NeighborStatus, RouteStatus, SpeakerStatus};
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
    SetNeighbors(Vec<NeighborConfig>),
    SetClusterId(Option<std::net::Ipv4Addr>),
    SolePaths {
        peers: Vec<IpAddr>,
        reply: oneshot::Sender<Vec<(IpAddr, bool, usize)>>,
    },
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
        let eor_gate_open = !cfg.graceful_restart.is_some_and(|gr| gr.restarting);
        let graceful_restart = cfg
            .graceful_restart
            .map(|gr| Arc::new(LocalGracefulRestart::new(&gr)));
        let mut peers = BTreeMap::new();
        let mut accept_routes = HashMap::new();
        let mut generation = 0;
        for n in &cfg.neighbors {
            generation += 1;
            let handle = neighbor::spawn(
                n.clone(),
                local,
                graceful_restart.clone(),
                generation,
                ev_tx.clone(),
            );
            accept_routes.insert(n.address, handle.accepted.clone());
            peers.insert(n.address, Peer::new(n.clone(), handle, generation));
        }
        let listener_cmds = listener.map(|l| {
            let (tx, rx) = mpsc::unbounded_channel();
            let keys = cfg
                .neighbors
                .iter()
                .filter(|n| n.password.is_some())
                .map(|n| n.address)
                .collect();
            let task = AcceptLoop {
                listener: l,
                routes: accept_routes,
                keys,
                rejected: rejected.clone(),
            };
            tokio::spawn(task.run(rx));
            tx
        });
        let core = Core {
            rib: Rib::new(cfg.asn, cfg.router_id, cfg.cluster_id, cfg.max_paths.max(1)),
            convergence_deadline: Some(Instant::now() + cfg.convergence_timeout),
            cfg,
            peers,
            rib_events: rib_tx,
            rejected,
            pending_changes: Vec::new(),
            pending_converged: false,
            local,
            eor_gate_open,
            graceful_restart,
            bfd: None,
            bfd_events: None,
            bfd_up: HashSet::new(),
            events_tx: ev_tx,
            generation,
            listener: listener_cmds,
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

    /// Replace the full set of neighbors (declarative). New addresses are started; addresses
    /// no longer listed are closed with Cease / Peer De-configured and their routes removed;
    /// a neighbor whose `route_reflector_client`, `import` or `export` changed keeps its
    /// session (export is re-run, received routes are re-evaluated from the Adj-RIB-In);
    /// any other change restarts it with Cease / Other Configuration Change. Unchanged
    /// neighbors are not touched. The speaker's own settings (`router_id`, `asn`, `listen`,
    /// ...) are not changed by this; `cluster_id` has `set_cluster_id`.
    pub fn set_neighbors(&self, neighbors: Vec<NeighborConfig>) -> Result<(), SpeakerError> {
        self.commands
            .send(Command::SetNeighbors(neighbors))
            .map_err(|_| SpeakerError::Stopped)
    }

    /// Change the route-reflector cluster id (`None` = the router id) without touching any
    /// session: a node becoming a reflector keeps its sessions (and its routes). Paths already
    /// received are re-checked against the new id and every peer's export is re-run.
    pub fn set_cluster_id(
        &self,
        cluster_id: Option<std::net::Ipv4Addr>,
    ) -> Result<(), SpeakerError> {
        self.commands
            .send(Command::SetClusterId(cluster_id))
            .map_err(|_| SpeakerError::Stopped)
    }

    /// For each of `peers`: whether its session is established and for how many prefixes it
    /// holds the only accepted path. A neighbor about to be removed (a topology switch) is
    /// safe to remove once that count is 0: every route it brought has another path.
    pub async fn sole_paths(
        &self,
        peers: Vec<IpAddr>,
    ) -> Result<Vec<(IpAddr, bool, usize)>, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::SolePaths { peers, reply: tx })
            .map_err(|_| SpeakerError::Stopped)?;
        rx.await.map_err(|_| SpeakerError::Stopped)
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

/// What the core tells the listener task about the neighbor table.
#[derive(Debug)]
enum ListenerCmd {
    /// Hand connections from `peer` to this neighbor task (replacing any earlier one) and
    /// install its TCP MD5 key (or remove an earlier key when it has none).
    Register {
        peer: IpAddr,
        accepted: mpsc::Sender<TcpStream>,
        password: Option<String>,
    },
    /// `peer` is no longer a neighbor: reject its connections, remove its MD5 key.
    Unregister { peer: IpAddr },
}

/// The listener task: owns the listening socket, the address -> neighbor task table and the
/// set of addresses with an MD5 key on the socket.
struct AcceptLoop {
    listener: BgpListener,
    routes: HashMap<IpAddr, mpsc::Sender<TcpStream>>,
    keys: HashSet<IpAddr>,
    rejected: Arc<AtomicU64>,
}

impl AcceptLoop {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<ListenerCmd>) {
        let mut open = true;
        loop {
            tokio::select! {
                cmd = commands.recv(), if open => match cmd {
                    Some(cmd) => self.apply(cmd),
                    // The core is gone: keep serving the last table.
                    None => open = false,
                },
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => self.route(stream, peer),
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    fn apply(&mut self, cmd: ListenerCmd) {
        match cmd {
            ListenerCmd::Register {
                peer,
                accepted,
                password,
            } => {
                self.routes.insert(peer, accepted);
                match password {
                    Some(pw) => match self.listener.set_password(peer, &pw) {
                        Ok(()) => {
                            self.keys.insert(peer);
                        }
                        Err(e) => {
                            warn!(%peer, error = %e, "cannot set the TCP MD5 key on the listener; incoming connections from this neighbor will fail")
                        }
                    },
                    None => self.remove_key(peer),
                }
            }
            ListenerCmd::Unregister { peer } => {
                self.routes.remove(&peer);
                self.remove_key(peer);
            }
        }
    }

    fn remove_key(&mut self, peer: IpAddr) {
        if self.keys.remove(&peer) {
            if let Err(e) = self.listener.remove_password(peer) {
                warn!(%peer, error = %e, "cannot remove the TCP MD5 key from the listener");
            }
        }
    }

    fn route(&self, stream: TcpStream, peer: IpAddr) {
        let rejected = &self.rejected;
        match self.routes.get(&peer) {
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
    /// The peer's graceful-restart capability from its OPEN, if any.
    peer_graceful_restart: Option<crate::types::GracefulRestart>,
    /// Our End-of-RIBs wait until routing has converged (we are restarting).
    eor_deferred: bool,
    /// Kinds of loop rejection already logged at info level on this session.
    loops_logged: Vec<Reject>,
}

/// What to keep when a session ends (graceful restart helper, RFC 4724 4.2): the families
/// both negotiated and listed in the peer's capability, for the peer's restart time; `None`
/// (remove everything now) when the end does not qualify (`graceful`), the peer advertised no
/// capability, a restart time of 0, or no family we negotiated.
fn stale_plan(
    peer_gr: Option<&crate::types::GracefulRestart>,
    negotiated: &[Family],
    graceful: bool,
) -> Option<(Vec<Family>, Duration)> {
    let gr = peer_gr.filter(|gr| graceful && gr.restart_time > 0)?;
    let mut families: Vec<Family> = gr
        .families
        .iter()
        .map(|(f, _)| *f)
        .filter(|f| negotiated.contains(f))
        .collect();
    families.sort();
    families.dedup();
    if families.is_empty() {
        return None;
    }
    Some((families, Duration::from_secs(u64::from(gr.restart_time))))
}

impl Established {
    /// The peer set the Restart State bit: it is restarting too, so convergence does not wait
    /// for its End-of-RIB (RFC 4724 4.1), which it sends only after ours.
    fn peer_restarting(&self) -> bool {
        self.peer_graceful_restart
            .as_ref()
            .is_some_and(|gr| gr.restart_state)
    }
}

/// Helper state for a peer whose routes are kept as stale (RFC 4724 4.2).
#[derive(Debug)]
struct StaleRoutes {
    /// Families still holding stale routes.
    families: Vec<Family>,
    /// Stale routes go when this passes: the peer's restart time while its session is down,
    /// our stale-routes time once it is back.
    deadline: Instant,
}

struct Peer {
    cfg: NeighborConfig,
    handle: NeighborHandle,
    /// Events tagged with another generation come from a stopped predecessor: ignored.
    generation: u64,
    state: PeerState,
    established: Option<Established>,
    last_down: Option<String>,
    /// Routes kept from the peer's previous session (graceful restart helper).
    stale: Option<StaleRoutes>,
    /// Prefixes rejected by the loop checks, by check.
    loops: LoopCounts,
}

impl Peer {
    fn new(cfg: NeighborConfig, handle: NeighborHandle, generation: u64) -> Peer {
        Peer {
            cfg,
            handle,
            generation,
            state: PeerState::Idle,
            established: None,
            last_down: None,
            stale: None,
            loops: LoopCounts::default(),
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
    local: LocalIdentity,
    /// Our graceful-restart capability (shared with the sessions); `None` = GR off.
    graceful_restart: Option<Arc<LocalGracefulRestart>>,
    /// End-of-RIBs are sent on Established; closed while restarting until the table is
    /// complete (see `check_converged`).
    eor_gate_open: bool,
    /// BFD, started when the first neighbor with `bfd` is established.
    bfd: Option<Bfd>,
    bfd_events: Option<mpsc::UnboundedReceiver<BfdEvent>>,
    /// Neighbors whose BFD session has been Up since their session was established: a Down
    /// of one of these is a path failure.
    bfd_up: HashSet<IpAddr>,
    /// Cloned into every neighbor task started later.
    events_tx: mpsc::Sender<(NeighborId, NeighborEvent)>,
    /// Generation of the last neighbor task started.
    generation: u64,
    /// `None` when not listening.
    listener: Option<mpsc::UnboundedSender<ListenerCmd>>,
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
        mut events: mpsc::Receiver<(NeighborId, NeighborEvent)>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        loop {
            let deadline = self.convergence_deadline;
            let stale_deadline = self.next_stale_deadline();
            let backlog = !self.pending_changes.is_empty() || self.pending_converged;
            let rib_events = self.rib_events.clone();
            tokio::select! {
                permit = rib_events.reserve(), if backlog => match permit {
                    Ok(permit) => self.deliver(permit),
                    // Nobody consumes Loc-RIB changes any more: drop them instead of
                    // retrying a closed channel forever.
                    Err(_) => {
                        self.pending_changes.clear();
                        self.pending_converged = false;
                    }
                },
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
                    Some(Command::SetNeighbors(neighbors)) => self.set_neighbors(neighbors),
                    Some(Command::SolePaths { peers, reply }) => {
                        let answer = peers
                            .into_iter()
                            .map(|addr| {
                                let up = self
                                    .peers
                                    .get(&addr)
                                    .is_some_and(|p| p.established.is_some());
                                (addr, up, self.rib.sole_paths(addr))
                            })
                            .collect();
                        let _ = reply.send(answer);
                    }
                    Some(Command::SetClusterId(id)) => {
                        let changes = self.rib.set_cluster_id(id);
                        self.propagate(changes);
                        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
                        for addr in addrs {
                            self.reexport(addr);
                        }
                    }
                    Some(Command::Status { include_rib, reply }) => {
                        let _ = reply.send(self.status(include_rib));
                    }
                    Some(Command::Shutdown(done)) => {
                        for p in self.peers.values() {
                            let _ = p.handle.commands.send(self.shutdown_command(p));
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
                ev = async { match self.bfd_events.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => match ev {
                    Some(ev) => self.on_bfd_event(ev),
                    None => {
                        warn!("BFD stopped; sessions continue without it");
                        self.bfd_events = None;
                        self.bfd = None;
                    }
                },
                _ = async { match stale_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    self.expire_stale(Instant::now());
                }
            }
            self.flush();
        }
    }

    fn on_neighbor_event(&mut self, id: NeighborId, ev: NeighborEvent) {
        let addr = id.address;
        let stale_routes_time = self.stale_routes_time();
        let restarting = !self.eor_gate_open;
        let Some(peer) = self
            .peers
            .get_mut(&addr)
            .filter(|p| p.generation == id.generation)
        else {
            return;
        };
        match ev {
            NeighborEvent::State(s) => peer.state = s,
            NeighborEvent::Established(info) => {
                let mut est = established_peer(&peer.cfg, info);
                // Kept stale routes of the families the peer preserved forwarding for wait for
                // its End-of-RIB; the others go now (RFC 4724 4.2).
                let mut flushed = Vec::new();
                if let Some(stale) = peer.stale.as_mut() {
                    let preserved = |f: &Family| {
                        est.peer_graceful_restart
                            .as_ref()
                            .is_some_and(|gr| gr.families.contains(&(*f, true)))
                            && est.families.contains(f)
                    };
                    let (keep, drop): (Vec<Family>, Vec<Family>) =
                        stale.families.iter().partition(|f| preserved(f));
                    stale.families = keep;
                    stale.deadline = Instant::now() + stale_routes_time;
                    flushed = drop;
                }
                if peer.stale.as_ref().is_some_and(|s| s.families.is_empty()) {
                    peer.stale = None;
                }
                self.rib.peer_up(est.info.clone());
                for f in flushed {
                    info!(peer = %addr, family = ?f, "graceful restart: the peer did not preserve forwarding state; removing its stale routes");
                    let changes = self.rib.flush_stale(addr, Some(f));
                    self.propagate(changes);
                }
                let Some(peer) = self.peers.get_mut(&addr) else {
                    return;
                };
                for (prefix, attrs) in self.rib.export_all(&est.info) {
                    est.adj_out.set(prefix, Some(attrs));
                }
                let batches = est.adj_out.drain();
                if !batches.is_empty() {
                    let _ = peer.handle.commands.send(ToNeighbor::Send(batches));
                }
                // Restarting: our End-of-RIB says "my table is complete", which it is only
                // once routing has converged (RFC 4724 4.1).
                if restarting {
                    est.eor_deferred = true;
                } else {
                    for f in &est.families {
                        let _ = peer.handle.commands.send(ToNeighbor::EndOfRib(*f));
                    }
                }
                peer.state = PeerState::Established;
                peer.established = Some(est);
                // A peer that is restarting itself is not waited for.
                self.check_converged();
                self.sync_bfd();
            }
            NeighborEvent::Update(update) => {
                if let (Some(f), Some(est)) = (update.end_of_rib(), peer.established.as_mut()) {
                    est.eor_received.insert(f);
                    if let Some(stale) = peer.stale.as_mut() {
                        if stale.families.contains(&f) {
                            stale.families.retain(|x| *x != f);
                            if stale.families.is_empty() {
                                peer.stale = None;
                            }
                            let changes = self.rib.flush_stale(addr, Some(f));
                            info!(peer = %addr, family = ?f, removed = changes.len(), "graceful restart: End-of-RIB received; stale routes removed");
                            self.propagate(changes);
                        }
                    }
                    self.check_converged();
                    return;
                }
                let outcome = self.rib.apply_update(addr, &update);
                if let Some(l) = outcome.looped {
                    peer.loops.add(l.reason, l.prefixes);
                    // Info once per kind and session, then debug: a second reflector of the
                    // same cluster rejects everything its peer reflects.
                    let first = peer.established.as_mut().is_some_and(|e| {
                        let first = !e.loops_logged.contains(&l.reason);
                        if first {
                            e.loops_logged.push(l.reason);
                        }
                        first
                    });
                    if first {
                        info!(peer = %addr, reason = l.reason.describe(), prefixes = l.prefixes, example = %l.example,
                            "routes rejected by the loop check: kept in the Adj-RIB-In, not used; more of this kind from this peer at debug level");
                    } else {
                        debug!(peer = %addr, reason = l.reason.describe(), prefixes = l.prefixes, example = %l.example,
                            "routes rejected by the loop check");
                    }
                }
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
            NeighborEvent::Down(down) => {
                self.on_session_down(addr, down);
                self.sync_bfd();
            }
        }
    }

    /// Apply a new full neighbor set (see `Speaker::set_neighbors`).
    fn set_neighbors(&mut self, neighbors: Vec<NeighborConfig>) {
        let plan = plan_neighbor_changes(self.peers.values().map(|p| &p.cfg), neighbors);
        if plan.is_noop() {
            return;
        }
        for addr in plan.remove {
            info!(peer = %addr, "neighbor removed from the configuration");
            self.stop_peer(addr, notify::CEASE_PEER_DECONFIGURED);
        }
        for cfg in plan.reset {
            info!(peer = %cfg.address, "neighbor configuration changed: restarting the session");
            self.stop_peer(cfg.address, notify::CEASE_OTHER_CONFIG_CHANGE);
            self.start_peer(cfg);
        }
        for cfg in plan.add {
            info!(peer = %cfg.address, asn = cfg.asn, "neighbor added");
            self.start_peer(cfg);
        }
        let mut reexport_all = false;
        for change in plan.update {
            info!(
                peer = %change.cfg.address,
                route_reflector_client = change.route_reflector_client,
                import = change.import,
                export = change.export,
                "neighbor policy changed: updating without a session reset"
            );
            reexport_all |= self.update_peer(change);
        }
        if reexport_all {
            let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
            for addr in addrs {
                self.reexport(addr);
            }
        }
        // A removed neighbor may have been the last one without End-of-RIB.
        self.check_converged();
        self.sync_bfd();
    }

    fn start_peer(&mut self, cfg: NeighborConfig) {
        self.generation += 1;
        let handle = neighbor::spawn(
            cfg.clone(),
            self.local,
            self.graceful_restart.clone(),
            self.generation,
            self.events_tx.clone(),
        );
        if let Some(l) = &self.listener {
            let _ = l.send(ListenerCmd::Register {
                peer: cfg.address,
                accepted: handle.accepted.clone(),
                password: cfg.password.clone(),
            });
        }
        self.peers
            .insert(cfg.address, Peer::new(cfg, handle, self.generation));
    }

    /// Close the session with Cease/`subcode`, stop the task, withdraw its routes (as for a
    /// session going down) and make the listener forget it.
    fn stop_peer(&mut self, addr: IpAddr, subcode: u8) {
        let Some(peer) = self.peers.remove(&addr) else {
            return;
        };
        let _ = peer
            .handle
            .commands
            .send(ToNeighbor::Shutdown(Notification::new(
                notify::CEASE,
                subcode,
            )));
        if peer.established.is_some() || peer.stale.is_some() {
            let changes = self.rib.peer_down(addr);
            self.propagate(changes);
        }
        if let Some(l) = &self.listener {
            let _ = l.send(ListenerCmd::Unregister { peer: addr });
        }
    }

    /// Take over a changed `route_reflector_client` / `import` / `export` without touching
    /// the session. Returns whether every peer's export must be re-run (the reflector role
    /// decides where this peer's routes are reflected to).
    fn update_peer(&mut self, change: SoftChange) -> bool {
        let addr = change.cfg.address;
        let Some(peer) = self.peers.get_mut(&addr) else {
            return false;
        };
        peer.cfg = change.cfg;
        let Some(est) = peer.established.as_mut() else {
            // Taken over at the next Established.
            return false;
        };
        est.info.route_reflector_client = peer.cfg.route_reflector_client;
        est.info.import = peer.cfg.import;
        est.info.export = peer.cfg.export;
        let changes = self.rib.update_peer(est.info.clone());
        self.propagate(changes);
        if change.route_reflector_client {
            return true;
        }
        if change.export {
            self.reexport(addr);
        }
        false
    }

    /// Recompute `addr`'s Adj-RIB-Out from the Loc-RIB; the difference is sent at the flush.
    fn reexport(&mut self, addr: IpAddr) {
        if let Some(est) = self
            .peers
            .get_mut(&addr)
            .and_then(|p| p.established.as_mut())
        {
            est.adj_out.resync(self.rib.export_all(&est.info));
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
                .filter(|e| e.info.export != RouteFilter::None)
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

    /// Two milestones. The End-of-RIB gate (restarting only): every peer that does graceful
    /// restart and is not restarting itself has sent End-of-RIB (RFC 4724 4.1: restarting
    /// peers wait for ours, so waiting for theirs would deadlock): our table is complete, our
    /// End-of-RIBs go out. Converged: every peer, restarting or not, has sent End-of-RIB: the
    /// FIB may remove what a previous run left. The convergence timeout forces both.
    fn check_converged(&mut self) {
        if !self.eor_gate_open {
            let complete = self.peers.values().all(|p| match &p.established {
                Some(est) => {
                    est.peer_graceful_restart.is_none()
                        || est.peer_restarting()
                        || est.families.iter().all(|f| est.eor_received.contains(f))
                }
                None => false,
            });
            if complete {
                info!("graceful restart: every helper sent End-of-RIB; sending ours");
                self.open_eor_gate();
            }
        }
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
        self.open_eor_gate();
    }

    /// Our table is complete: the End-of-RIBs held back while restarting go out, after the
    /// routes queued before them (`flush` sends Adj-RIB-Out batches first).
    fn open_eor_gate(&mut self) {
        if let Some(gr) = &self.graceful_restart {
            // From now on our OPENs say: not restarting, forwarding state kept.
            gr.restart_state.store(false, Ordering::Relaxed);
            gr.forwarding.store(true, Ordering::Relaxed);
        }
        if self.eor_gate_open {
            return;
        }
        self.eor_gate_open = true;
        self.flush();
        for peer in self.peers.values_mut() {
            if let Some(est) = peer.established.as_mut().filter(|e| e.eor_deferred) {
                est.eor_deferred = false;
                for f in &est.families {
                    let _ = peer.handle.commands.send(ToNeighbor::EndOfRib(*f));
                }
            }
        }
    }

    fn stale_routes_time(&self) -> Duration {
        self.cfg
            .graceful_restart
            .map_or(Duration::ZERO, |gr| gr.stale_routes_time)
    }

    /// A session ended. With graceful restart (both sides advertised it, the end qualifies,
    /// the peer gave a restart time) its routes stay, marked stale, until it is back and has
    /// sent End-of-RIB or its restart time passes; otherwise they are removed at once.
    fn on_session_down(&mut self, addr: IpAddr, down: SessionDown) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        peer.last_down = Some(down.reason.clone());
        let Some(est) = peer.established.take() else {
            return;
        };
        // `graceful` is only ever set when we advertised graceful restart ourselves.
        let plan = stale_plan(
            est.peer_graceful_restart.as_ref(),
            &est.families,
            down.graceful,
        );
        let Some((families, restart_time)) = plan else {
            peer.stale = None;
            let changes = self.rib.peer_down(addr);
            self.propagate(changes);
            return;
        };
        let changes = self.rib.mark_stale(addr, &families);
        info!(
            peer = %addr,
            restart_time = restart_time.as_secs(),
            stale = self.rib.stale_paths(addr),
            reason = %down.reason,
            "graceful restart: keeping the peer's routes as stale until it is back"
        );
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.stale = Some(StaleRoutes {
                families,
                deadline: Instant::now() + restart_time,
            });
        }
        self.propagate(changes);
    }

    /// One BFD session per established neighbor with `bfd` (from the session's local address).
    fn sync_bfd(&mut self) {
        let wanted: Vec<BfdPeerConfig> = self
            .peers
            .values()
            .filter_map(|p| {
                let t = p.cfg.bfd?;
                let est = p.established.as_ref()?;
                Some(BfdPeerConfig {
                    peer: p.cfg.address,
                    local: est.info.local_address,
                    min_rx: t.min_rx,
                    min_tx: t.min_tx,
                    multiplier: t.multiplier,
                })
            })
            .collect();
        self.bfd_up.retain(|a| wanted.iter().any(|w| w.peer == *a));
        if self.bfd.is_none() {
            if wanted.is_empty() {
                return;
            }
            match Bfd::start() {
                Ok((bfd, events)) => {
                    self.bfd = Some(bfd);
                    self.bfd_events = Some(events);
                }
                Err(e) => {
                    warn!(error = %e, "cannot start BFD; sessions continue without it");
                    return;
                }
            }
        }
        if let Some(bfd) = &self.bfd {
            if let Err(e) = bfd.set_peers(wanted) {
                warn!(error = %e, "BFD peers not taken");
            }
        }
    }

    /// BFD Up arms failure detection for the neighbor; a Down after Up that is not the peer's
    /// administrative action (RFC 5882 3.2) takes the BGP session down at once and its routes
    /// out, without graceful restart (the forwarding path failed, RFC 5882 4.3.2).
    fn on_bfd_event(&mut self, ev: BfdEvent) {
        let addr = ev.peer;
        match ev.state {
            BfdState::Up => {
                info!(peer = %addr, "BFD up");
                self.bfd_up.insert(addr);
            }
            BfdState::Down | BfdState::AdminDown => {
                let armed = self.bfd_up.remove(&addr);
                if !armed || ev.remote_state == BfdState::AdminDown {
                    info!(peer = %addr, diag = ?ev.diag, "BFD down without a path failure; BGP session kept");
                    return;
                }
                let Some(peer) = self.peers.get_mut(&addr) else {
                    return;
                };
                if peer.established.take().is_none() {
                    return;
                }
                warn!(peer = %addr, diag = ?ev.diag, "BFD down: closing the session and removing its routes");
                peer.last_down = Some(format!("BFD down ({:?})", ev.diag));
                peer.stale = None;
                let _ = peer
                    .handle
                    .commands
                    .send(ToNeighbor::Reset(Notification::new(
                        notify::CEASE,
                        notify::CEASE_BFD_DOWN,
                    )));
                let changes = self.rib.peer_down(addr);
                self.propagate(changes);
                self.sync_bfd();
            }
            BfdState::Init => {}
        }
    }

    fn next_stale_deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| p.stale.as_ref().map(|s| s.deadline))
            .min()
    }

    /// Remove the stale routes whose time is up: the peer did not come back within its
    /// restart time, or did not send End-of-RIB within our stale-routes time.
    fn expire_stale(&mut self, now: Instant) {
        let expired: Vec<(IpAddr, bool)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.stale.as_ref().is_some_and(|s| s.deadline <= now))
            .map(|(a, p)| (*a, p.established.is_some()))
            .collect();
        for (addr, up) in expired {
            if let Some(peer) = self.peers.get_mut(&addr) {
                peer.stale = None;
            }
            let changes = if up {
                warn!(peer = %addr, "graceful restart: no End-of-RIB within the stale-routes time; removing the stale routes");
                self.rib.flush_stale(addr, None)
            } else {
                warn!(peer = %addr, "graceful restart: the peer did not come back within its restart time; removing its routes");
                self.rib.peer_down(addr)
            };
            self.propagate(changes);
        }
    }

    /// How to end a session when the speaker stops: with graceful restart negotiated the
    /// peer is to keep our routes (we are restarting or being upgraded, and the kernel keeps
    /// forwarding meanwhile), so no NOTIFICATION a classic helper would flush on — a Cease
    /// only when the peer does RFC 8538; without it, Cease / Administrative Shutdown.
    fn shutdown_command(&self, p: &Peer) -> ToNeighbor {
        let admin = Notification::new(notify::CEASE, notify::CEASE_ADMIN_SHUTDOWN);
        let peer_gr = p
            .established
            .as_ref()
            .and_then(|e| e.peer_graceful_restart.as_ref());
        match (&self.graceful_restart, peer_gr) {
            (Some(_), Some(gr)) if gr.notification => ToNeighbor::Shutdown(admin),
            (Some(_), Some(_)) => ToNeighbor::Close,
            _ => ToNeighbor::Shutdown(admin),
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
                let mut st = NeighborStatus::new(
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
                );
                if p.stale.is_some() {
                    st.stale_routes = self.rib.stale_paths(p.cfg.address);
                }
                st.peer_graceful_restart = est.is_some_and(|e| e.peer_graceful_restart.is_some());
                st.loop_rejected = p.loops;
                st
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
        peer_graceful_restart: neg.peer_graceful_restart,
        eor_deferred: false,
        loops_logged: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::rib::RouteFilter;

    fn passive(addr: &str) -> NeighborConfig {
        let mut n = NeighborConfig::new(addr.parse().expect("test address"), 65002);
        // Never connects, and without a listener nothing arrives: no traffic at all.
        n.passive = true;
        n
    }

    fn speaker(neighbors: Vec<NeighborConfig>) -> Speaker {
        let cfg = SpeakerConfig {
            router_id: Ipv4Addr::new(10, 255, 0, 1),
            asn: 65001,
            listen: None,
            max_paths: 1,
            cluster_id: None,
            convergence_timeout: Duration::from_secs(600),
            graceful_restart: None,
            neighbors,
        };
        Speaker::start(cfg).expect("speaker without listener").0
    }

    async fn neighbors(s: &Speaker) -> Vec<(String, u32)> {
        s.summary()
            .await
            .expect("status")
            .neighbors
            .into_iter()
            .map(|n| (n.address.to_string(), n.asn))
            .collect()
    }

    /// Which session ends keep which families, for how long (nonsense capabilities included).
    #[test]
    fn stale_plan_follows_the_peer_capability() {
        use crate::types::GracefulRestart;
        let v4 = Family::Ipv4Unicast;
        let v6 = Family::Ipv6Unicast;
        let gr = |time: u16, families: Vec<(Family, bool)>| GracefulRestart {
            restart_state: false,
            notification: true,
            restart_time: time,
            families,
        };
        let both = gr(120, vec![(v4, true), (v6, false)]);
        assert_eq!(
            stale_plan(Some(&both), &[v4, v6], true),
            Some((vec![v4, v6], Duration::from_secs(120))),
            "F bits do not matter when the session ends, only at its return"
        );
        assert_eq!(
            stale_plan(Some(&both), &[v4], true),
            Some((vec![v4], Duration::from_secs(120))),
            "only negotiated families"
        );
        assert_eq!(
            stale_plan(Some(&both), &[v4, v6], false),
            None,
            "not graceful"
        );
        assert_eq!(stale_plan(None, &[v4], true), None, "no capability");
        assert_eq!(
            stale_plan(Some(&gr(0, vec![(v4, true)])), &[v4], true),
            None,
            "restart time 0: nothing to wait for"
        );
        assert_eq!(
            stale_plan(Some(&gr(120, vec![])), &[v4], true),
            None,
            "a capability listing no family"
        );
        assert_eq!(
            stale_plan(Some(&gr(120, vec![(v6, true)])), &[v4], true),
            None,
            "only families the session does not carry"
        );
        assert_eq!(
            stale_plan(Some(&gr(4095, vec![(v4, true), (v4, false)])), &[v4], true),
            Some((vec![v4], Duration::from_secs(4095))),
            "a family listed twice counts once; the largest restart time"
        );
    }

    #[tokio::test]
    async fn empty_speaker_answers_and_takes_neighbors_later() {
        let s = speaker(Vec::new());
        assert!(neighbors(&s).await.is_empty());
        s.set_neighbors(vec![passive("127.0.0.2")])
            .expect("running");
        assert_eq!(neighbors(&s).await, vec![("127.0.0.2".to_string(), 65002)]);
        s.shutdown().await;
    }

    #[tokio::test]
    async fn set_neighbors_adds_updates_resets_and_removes() {
        let s = speaker(vec![passive("127.0.0.2"), passive("127.0.0.3")]);
        let st = s.summary().await.expect("status");
        assert!(!st.converged);
        // Idempotent.
        s.set_neighbors(vec![passive("127.0.0.3"), passive("127.0.0.2")])
            .expect("running");
        let mut soft = passive("127.0.0.2");
        soft.import = RouteFilter::None;
        soft.route_reflector_client = true;
        let mut hard = passive("127.0.0.3");
        hard.asn = 65009;
        s.set_neighbors(vec![soft, hard, passive("127.0.0.4")])
            .expect("running");
        assert_eq!(
            neighbors(&s).await,
            vec![
                ("127.0.0.2".to_string(), 65002),
                ("127.0.0.3".to_string(), 65009),
                ("127.0.0.4".to_string(), 65002),
            ]
        );
        // Removing every neighbor that had not sent End-of-RIB completes convergence.
        s.set_neighbors(Vec::new()).expect("running");
        let st = s.summary().await.expect("status");
        assert!(st.neighbors.is_empty());
        assert!(st.converged);
        s.shutdown().await;
    }
}
