//! `routelet agent`: the reconcile loop. Kubernetes caches -> `desired_state` -> `plan` ->
//! the speaker (neighbors, cluster id, originated prefixes) and the FIB writer; problems go to
//! the log and, for this node's objects, to Kubernetes Events.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bgp::config::{NeighborConfig, SpeakerConfig};
use bgp::speaker::{RibEvent, Speaker};
use kube::Client;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::datapath::Datapath;
use super::drain::{hold_reflector_role, Drain, DEMOTE_HOLD};
use super::events::EventSink;
use super::plan::plan;
use crate::agent_config::{AgentSettings, PodCidrSource};
use crate::desired::{
    desired_state, DesiredError, DesiredState, ObjectRef, Problem, Role, Snapshot,
};
use crate::fib::{self, FibCommand, FibStats};
use crate::ipam::blocks::BlockTable;
use crate::k8s::watch::ClusterCache;
use crate::speaker_cmd::{fib_commands, originated, start_fib};

/// Changes arriving within this window after the first are handled together (the three
/// watches often fire in a burst); well under the 100 ms reaction target.
const DEBOUNCE: Duration = Duration::from_millis(15);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Speaker(#[from] bgp::speaker::SpeakerError),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error("kernel routing table: {0}")]
    Fib(#[from] fib::FibError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("this node's BGP identity changed ({0}); exiting so that the agent restarts with it")]
    IdentityChanged(String),
}

/// The running speaker of this node.
struct Running {
    speaker: Speaker,
}

pub async fn run(settings: AgentSettings, node: String, client: Client) -> Result<(), AgentError> {
    let (cache, mut changed) = ClusterCache::start(client.clone());
    let events = EventSink::start(client.clone(), &node);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(AgentError::Signal)?;
    info!(node = %node, "waiting for the first list of nodes, services and endpoint slices");
    tokio::select! {
        _ = cache.wait_ready() => {}
        _ = term.recv() => return Ok(()),
        _ = tokio::signal::ctrl_c() => return Ok(()),
    }

    if !settings.pools.is_empty() {
        // One agent at a time hands out LoadBalancer IPs: the holder of this Lease.
        let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(super::lease::run(
            client.clone(),
            settings.namespace.clone(),
            LB_LEASE.to_string(),
            node.clone(),
            leader_tx,
        ));
        let allocator = super::lb::LbAllocator {
            client: client.clone(),
            cache: cache.clone(),
            settings: Arc::new(settings.clone()),
            events: events.clone(),
        };
        tokio::spawn(allocator.run(changed.clone(), leader_rx));
    }

    let (annotations_tx, annotations_rx) = tokio::sync::watch::channel(BTreeMap::new());
    tokio::spawn(super::publish::run(
        client.clone(),
        node.clone(),
        annotations_rx,
    ));

    let blocks = if settings.pod_cidr_source == PodCidrSource::Blocks {
        let (table_tx, table_rx) = tokio::sync::watch::channel(BlockTable::default());
        let allocator = super::blocks::BlockAllocator {
            client: client.clone(),
            cache: cache.clone(),
            settings: Arc::new(settings.clone()),
            node: node.clone(),
            table: table_tx,
        };
        tokio::spawn(allocator.run(changed.clone()));
        Some(table_rx)
    } else {
        None
    };

    let mut settings = settings;
    let kernel = settings.kernel.clone();
    crate::speaker_cmd::detect_restart(&mut settings.graceful_restart, &kernel).await;
    let (fib_tx, fib_stats) = start_fib(&settings.kernel)?;
    let datapath = match Datapath::new() {
        Ok(d) => Some(d),
        Err(e) => {
            error!(error = %e, "cannot open netlink for the datapath; only BGP routes are installed");
            None
        }
    };
    // Link and address changes re-evaluate which nodes are directly connected.
    let mut links = match crate::datapath::watch_links() {
        Ok(rx) => Some(rx),
        Err(e) => {
            warn!(error = %e, "cannot watch link changes; re-evaluating every {DATAPATH_RESYNC:?}");
            None
        }
    };
    let mut dp_tick = tokio::time::interval(DATAPATH_RESYNC);
    dp_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut agent = Reconciler {
        settings,
        node,
        cache,
        events,
        fib_tx,
        fib_stats,
        running: None,
        applied: None,
        last_error: None,
        drain: Drain::default(),
        blocks,
        demote_at: None,
        annotations: annotations_tx,
        datapath,
        dp_problems: Vec::new(),
        last_snapshot: None,
    };
    let mut drain_tick = tokio::time::interval(DRAIN_POLL);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        if let Err(e) = agent.reconcile().await {
            break Err(e);
        }
        tokio::select! {
            res = changed.changed() => {
                if res.is_err() {
                    // Every watch task ended (they retry forever, so this is a bug): poll.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                } else {
                    tokio::time::sleep(DEBOUNCE).await;
                }
            }
            res = blocks_changed(&mut agent.blocks) => {
                if res.is_err() {
                    agent.blocks = None;
                }
            }
            _ = sleep_until_opt(agent.demote_at) => {}
            ev = link_changed(&mut links) => {
                if ev.is_none() {
                    links = None;
                } else {
                    // A burst of link/address notifications is handled together.
                    tokio::time::sleep(DEBOUNCE).await;
                    agent.resync_datapath().await;
                }
            }
            _ = dp_tick.tick() => agent.resync_datapath().await,
            _ = drain_tick.tick(), if !agent.drain.is_empty() => {
                if let Err(e) = agent.settle_drains().await {
                    break Err(e);
                }
            }
            _ = term.recv() => { info!("SIGTERM: shutting down"); break Ok(()); }
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: shutting down"); break Ok(()); }
        }
    };
    if let Some(r) = &agent.running {
        r.speaker.shutdown().await;
    }
    if let Some(tx) = &agent.fib_tx {
        // Kernel routes stay in place: forwarding continues while routelet restarts.
        let _ = tx.send(FibCommand::Shutdown).await;
    }
    let _ = std::fs::remove_file(&agent.settings.socket);
    result
}

/// The Lease whose holder allocates LoadBalancer IPs.
pub const LB_LEASE: &str = "routelet-lb-allocator";

/// How often the datapath is re-read and repaired without any change (neighbour and FDB
/// entries removed by someone else; routes have their own monitor).
const DATAPATH_RESYNC: Duration = Duration::from_secs(10);

/// Resolves with the next link/address change (None: the watch ended; never without one).
async fn link_changed(links: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match links {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// How often draining sessions are checked.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// The agent's state between reconciles; one owner (the run loop).
struct Reconciler {
    settings: AgentSettings,
    node: String,
    cache: ClusterCache,
    events: EventSink,
    fib_tx: Option<mpsc::Sender<FibCommand>>,
    fib_stats: Option<Arc<FibStats>>,
    running: Option<Running>,
    /// The desired state last applied.
    applied: Option<DesiredState>,
    last_error: Option<DesiredError>,
    drain: Drain,
    /// The pod block table (`pod_cidr_source: blocks`).
    blocks: Option<tokio::sync::watch::Receiver<BlockTable>>,
    /// When a held reflector role ends (see `maybe_hold_reflector_role`).
    demote_at: Option<Instant>,
    /// Annotations to publish on this node.
    annotations: tokio::sync::watch::Sender<BTreeMap<&'static str, Option<String>>>,
    /// VXLAN devices, VTEP peers, static routes (None: no netlink, blackholes only).
    datapath: Option<Datapath>,
    /// Datapath problems last reported.
    dp_problems: Vec<Problem>,
    /// The last snapshot reconciled (for datapath passes without an API change).
    last_snapshot: Option<Snapshot>,
}

impl Reconciler {
    /// A datapath pass on the last snapshot (link change, periodic repair).
    async fn resync_datapath(&mut self) {
        if let Some(snapshot) = self.last_snapshot.take() {
            self.datapath_pass(&snapshot).await;
            self.last_snapshot = Some(snapshot);
        }
    }

    async fn reconcile(&mut self) -> Result<(), AgentError> {
        let mut snapshot = self.cache.snapshot();
        if let Some(table) = &self.blocks {
            for (block, owner) in &table.borrow().claims {
                if let Some(n) = snapshot.nodes.get_mut(owner) {
                    n.blocks.push(*block);
                }
            }
        }
        match desired_state(&self.settings, &snapshot, &self.node) {
            Ok(next) => {
                self.last_error = None;
                let next = self.maybe_hold_reflector_role(next);
                let result = self.apply(&snapshot, next).await;
                self.last_snapshot = Some(snapshot);
                result
            }
            Err(e) => {
                if self.last_error.as_ref() != Some(&e) {
                    warn!(error = %e, "no desired state for this node; keeping the current one");
                    if matches!(e, DesiredError::NoAddress(_)) {
                        let object = ObjectRef::Node(self.node.clone());
                        let uid = uid_of(&self.cache, &object);
                        self.events.report(
                            Problem {
                                object,
                                reason: "NoInternalIP",
                                message: e.to_string(),
                            },
                            uid,
                        );
                    }
                    self.last_error = Some(e);
                }
                Ok(())
            }
        }
    }

    /// A reflector that stops being one keeps its role for `DEMOTE_HOLD`, so that its clients
    /// have their new mesh sessions up before it stops reflecting (make-before-break).
    fn maybe_hold_reflector_role(&mut self, next: DesiredState) -> DesiredState {
        let Some(prev) = self.applied.as_ref() else {
            return next;
        };
        if next.role == Role::Reflector || prev.role != Role::Reflector {
            self.demote_at = None;
            return next;
        }
        let now = Instant::now();
        let at = *self.demote_at.get_or_insert(now + DEMOTE_HOLD);
        if now >= at {
            self.demote_at = None;
            info!("no longer a route reflector");
            return next;
        }
        hold_reflector_role(prev, next)
    }

    async fn apply(&mut self, snapshot: &Snapshot, next: DesiredState) -> Result<(), AgentError> {
        let p = plan(self.applied.as_ref(), &next);
        for problem in &p.new_problems {
            warn!(object = %problem.object, reason = problem.reason, "{}", problem.message);
            if reports(&self.node, snapshot, problem) {
                self.events
                    .report(problem.clone(), uid_of(&self.cache, &problem.object));
            }
        }
        if p.restart_speaker {
            if let (Some(prev), Some(_)) = (self.applied.as_ref(), self.running.as_ref()) {
                return Err(AgentError::IdentityChanged(format!(
                    "router id {} -> {}, AS {} -> {}",
                    prev.router_id, next.router_id, prev.asn, next.asn
                )));
            }
            self.start_speaker(&next).await?;
        }
        if let Some(r) = self.running.as_ref() {
            if p.set_cluster_id && !p.restart_speaker {
                r.speaker.set_cluster_id(next.cluster_id)?;
            }
            if p.set_neighbors && !p.restart_speaker {
                let node_addresses: BTreeSet<IpAddr> = snapshot
                    .nodes
                    .values()
                    .flat_map(|n| n.addresses.iter().copied())
                    .collect();
                let prev: &[NeighborConfig] = self.applied.as_ref().map_or(&[], |a| &a.neighbors);
                self.drain
                    .on_change(prev, &next.neighbors, &node_addresses, Instant::now());
                info!(
                    role = ?next.role,
                    neighbors = next.neighbors.len(),
                    draining = ?self.drain.addresses(),
                    "neighbor set changed"
                );
                r.speaker
                    .set_neighbors(self.drain.neighbors(&next.neighbors))?;
            }
            if p.set_originated {
                r.speaker
                    .set_originated(originated(next.originate.iter()))?;
            }
        }
        if p.set_blackholes && self.settings.pod_cidr_source == PodCidrSource::Blocks {
            let mine: Vec<String> = next.blackholes.iter().map(|b| b.to_string()).collect();
            self.annotations.send_modify(|a| {
                a.insert(super::publish::BLOCKS_ANNOTATION, Some(mine.join(",")));
            });
        }
        self.applied = Some(next);
        self.datapath_pass(snapshot).await;
        Ok(())
    }

    /// Programs the datapath (VXLAN devices, VTEP peers, static routes, CNI config) for the
    /// applied desired state; its problems are reported like the others.
    async fn datapath_pass(&mut self, snapshot: &Snapshot) {
        let (Some(applied), Some(dp)) = (self.applied.as_ref(), self.datapath.as_mut()) else {
            return;
        };
        let Some(me) = snapshot.nodes.get(&self.node) else {
            return;
        };
        let outcome = dp
            .reconcile(
                &self.settings,
                snapshot,
                me,
                &applied.blackholes,
                self.fib_tx.as_ref(),
            )
            .await;
        let mut problems = outcome.problems;
        problems.sort();
        problems.dedup();
        for problem in problems.iter().filter(|p| !self.dp_problems.contains(p)) {
            warn!(object = %problem.object, reason = problem.reason, "{}", problem.message);
            if reports(&self.node, snapshot, problem) {
                self.events
                    .report(problem.clone(), uid_of(&self.cache, &problem.object));
            }
        }
        self.dp_problems = problems;
        self.annotations.send_if_modified(|a| {
            let mut changed = false;
            for (k, v) in outcome.annotations {
                // Absent and removed are the same to the node; do not publish a no-op.
                if v.is_none() && !a.contains_key(k) {
                    continue;
                }
                if a.get(k) != Some(&v) {
                    a.insert(k, v);
                    changed = true;
                }
            }
            changed
        });
    }

    async fn start_speaker(&mut self, next: &DesiredState) -> Result<(), AgentError> {
        let cfg = SpeakerConfig {
            router_id: next.router_id,
            asn: next.asn,
            listen: self
                .settings
                .listen_port
                .map(|port| SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)),
            max_paths: self.settings.max_paths,
            cluster_id: next.cluster_id,
            convergence_timeout: self.settings.convergence_timeout,
            graceful_restart: self.settings.graceful_restart,
            neighbors: next.neighbors.clone(),
        };
        let (speaker, rib_events) = Speaker::start(cfg)?;
        crate::control::serve(&self.settings.socket, speaker.clone())?;
        if let Some(addr) = self.settings.metrics {
            if let Err(e) =
                crate::metrics::serve(addr, speaker.clone(), self.fib_stats.clone()).await
            {
                error!(%addr, error = %e, "cannot serve metrics");
            }
        }
        tokio::spawn(forward_rib_events(rib_events, self.fib_tx.clone()));
        info!(
            router_id = %next.router_id,
            asn = next.asn,
            role = ?next.role,
            neighbors = next.neighbors.len(),
            "routelet agent running"
        );
        self.running = Some(Running { speaker });
        Ok(())
    }

    /// Releases draining sessions whose routes all have another path now.
    async fn settle_drains(&mut self) -> Result<(), AgentError> {
        let (Some(r), Some(applied)) = (self.running.as_ref(), self.applied.as_ref()) else {
            return Ok(());
        };
        let report = r.speaker.sole_paths(self.drain.addresses()).await?;
        let released = self.drain.settle(&report, Instant::now());
        if !released.is_empty() {
            info!(released = ?released, "drained sessions removed");
            r.speaker
                .set_neighbors(self.drain.neighbors(&applied.neighbors))?;
        }
        Ok(())
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the block table changed (never without one).
async fn blocks_changed(
    blocks: &mut Option<tokio::sync::watch::Receiver<BlockTable>>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match blocks {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

async fn forward_rib_events(
    mut rib_events: mpsc::Receiver<RibEvent>,
    fib_tx: Option<mpsc::Sender<FibCommand>>,
) {
    while let Some(ev) = rib_events.recv().await {
        let Some(tx) = &fib_tx else { continue };
        let cmds = match ev {
            RibEvent::Changes(changes) => fib_commands(changes),
            RibEvent::Converged => vec![FibCommand::Converged],
        };
        for cmd in cmds {
            if tx.send(cmd).await.is_err() {
                warn!("FIB writer stopped");
                return;
            }
        }
    }
}

/// Does this agent publish the Event for `problem`? Problems about a node are reported by
/// that node's agent; problems about a Service by the agent of the first node (by name), so
/// that a cluster reports each problem once.
fn reports(node: &str, snapshot: &Snapshot, problem: &Problem) -> bool {
    match &problem.object {
        ObjectRef::Node(n) => n == node,
        ObjectRef::Service(_) => snapshot.nodes.keys().next().map(String::as_str) == Some(node),
    }
}

fn uid_of(cache: &ClusterCache, object: &ObjectRef) -> Option<String> {
    match object {
        ObjectRef::Node(name) => cache
            .nodes
            .state()
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .and_then(|n| n.metadata.uid.clone()),
        ObjectRef::Service(key) => cache
            .services
            .state()
            .iter()
            .find(|s| {
                s.metadata.name.as_deref() == Some(key.name.as_str())
                    && s.metadata.namespace.as_deref() == Some(key.namespace.as_str())
            })
            .and_then(|s| s.metadata.uid.clone()),
    }
}
