//! The FIB owner task: the only writer of routelet's kernel routes. It coalesces route
//! updates into batches, keeps routes left by a previous run until routing has converged,
//! and periodically re-dumps the kernel to repair routes of ours changed by someone else.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::message::canonical_next_hops;
use super::monitor::{self, KernelEvent};
use bgp::prefix_map::PrefixMap;

use super::{route_op, Fib, FibOp, FibOpKind, KernelRoute, NextHop, Prefix};

/// Commands driving the FIB task.
#[derive(Debug)]
pub enum FibCommand {
    /// Desired next hops for `prefix` (a best path learned over BGP); an empty list removes
    /// the route.
    Set {
        prefix: Prefix,
        next_hops: Vec<NextHop>,
    },
    /// The complete set of static routes (blackholes for own pod blocks, host-gw and VXLAN
    /// routes to other nodes' pod CIDRs). A static route takes its prefix over from any
    /// route `Set` for it, which comes back when the static route goes. A static route
    /// without next hops suppresses its prefix: no route is installed for it (a pod CIDR
    /// that overlaps another node's must not divert that node's traffic).
    SetStatic(Vec<KernelRoute>),
    /// Initial routing has converged: routes of ours left in the kernel by a previous run
    /// that are still not desired are deleted now, and from then on kernel == desired.
    Converged,
    /// Answered once every command sent before it has been applied to the kernel (or has
    /// failed there): lets the datapath order route removal before its neighbour and FDB
    /// entries go, and their installation before the route comes.
    Barrier(tokio::sync::oneshot::Sender<()>),
    /// Stop. Routes stay installed (graceful restart keeps forwarding).
    Shutdown,
}

/// Counters shared with the metrics exporter.
#[derive(Debug, Default)]
pub struct FibStats {
    /// Routes of ours currently in the kernel (as last known by the task).
    pub installed: AtomicU64,
    /// Failed kernel operations (replace or delete), cumulative.
    pub install_errors: AtomicU64,
    /// Routes deleted from the kernel, cumulative.
    pub removed: AtomicU64,
}

/// Tunables of the FIB task.
#[derive(Debug, Clone)]
pub struct FibTaskConfig {
    /// How often the kernel is re-dumped and differences repaired.
    pub resync_interval: Duration,
    /// At most this many queued commands are coalesced into one batch.
    pub max_coalesce: usize,
    /// Listen for kernel notifications (a route of ours deleted, a link or address change)
    /// and repair within [`MONITOR_RESYNC_DELAY`] instead of waiting for the periodic resync.
    pub monitor: bool,
}

impl Default for FibTaskConfig {
    fn default() -> Self {
        FibTaskConfig {
            resync_interval: Duration::from_secs(5),
            max_coalesce: 20_000,
            monitor: true,
        }
    }
}

/// Spawn the FIB task with the default configuration (5 s resync).
pub fn spawn_fib_task(
    fib: Fib,
    rx: mpsc::Receiver<FibCommand>,
    stats: Arc<FibStats>,
) -> JoinHandle<()> {
    spawn_fib_task_with(fib, rx, stats, FibTaskConfig::default())
}

/// Spawn the FIB task on the current tokio runtime.
pub fn spawn_fib_task_with(
    fib: Fib,
    rx: mpsc::Receiver<FibCommand>,
    stats: Arc<FibStats>,
    config: FibTaskConfig,
) -> JoinHandle<()> {
    let monitor = if config.monitor {
        match monitor::spawn_monitor(fib.params) {
            Ok(rx) => Some(rx),
            Err(e) => {
                warn!(error = %e, "cannot listen for kernel route changes; relying on periodic resync");
                None
            }
        }
    } else {
        None
    };
    let task = FibTask {
        fib,
        monitor,
        stats,
        config,
        routes: PrefixMap::new(),
        hops: HopSets::default(),
        statics: HashMap::new(),
        installed: 0,
        converged: false,
    };
    tokio::spawn(task.run(rx))
}

struct FibTask {
    fib: Fib,
    monitor: Option<mpsc::Receiver<KernelEvent>>,
    stats: Arc<FibStats>,
    config: FibTaskConfig,
    /// Per prefix (truncated): what we want in the kernel and what we know is there (last
    /// dump + our successful operations). Entries with neither are removed.
    routes: PrefixMap<RouteState>,
    hops: HopSets,
    /// Prefixes with a static route, each with the static route's hop set and the desired
    /// (BGP) route it shadows (one per node and pod block).
    statics: HashMap<Prefix, StaticRoute>,
    /// Routes with `installed` set.
    installed: usize,
    converged: bool,
}

/// A static route (None: the prefix is suppressed) and the BGP route it shadows.
#[derive(Debug, Clone, Copy)]
struct StaticRoute {
    hops: Option<HopId>,
    shadowed: Option<HopId>,
}

/// One prefix's desired and installed next-hop sets (8 bytes: ids into [`HopSets`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RouteState {
    /// Never the empty set: no desired route is `None`.
    desired: Option<HopId>,
    /// The empty set for a route of ours without a gateway (it gets repaired).
    installed: Option<HopId>,
}

impl RouteState {
    fn is_empty(&self) -> bool {
        self.desired.is_none() && self.installed.is_none()
    }
}

type HopId = NonZeroU32;

/// Interned canonical next-hop sets: a table of a million routes usually has a handful of
/// distinct sets, so each route stores two 4-byte ids. Sets no route uses any more are
/// collected (mark and sweep over the route table) when the number of sets doubles.
#[derive(Debug)]
struct HopSets {
    /// Slot `id - 1`; freed slots hold an empty set and are reused.
    sets: Vec<Arc<[NextHop]>>,
    index: HashMap<Arc<[NextHop]>, HopId>,
    free: Vec<HopId>,
    collect_at: usize,
}

impl Default for HopSets {
    fn default() -> Self {
        HopSets {
            sets: Vec::new(),
            index: HashMap::new(),
            free: Vec::new(),
            collect_at: MIN_HOP_SETS_BEFORE_COLLECT,
        }
    }
}

/// Hop sets are only collected once there are at least this many.
const MIN_HOP_SETS_BEFORE_COLLECT: usize = 1024;

impl HopSets {
    /// The id of `canonical` (sorted, deduplicated), interning it if new.
    fn intern(&mut self, canonical: &[NextHop]) -> HopId {
        if let Some(id) = self.index.get(canonical) {
            return *id;
        }
        let set: Arc<[NextHop]> = canonical.into();
        let id = match self.free.pop() {
            Some(id) => {
                if let Some(slot) = self.sets.get_mut(slot_of(id)) {
                    *slot = Arc::clone(&set);
                }
                id
            }
            None => {
                self.sets.push(Arc::clone(&set));
                NonZeroU32::new(self.sets.len() as u32).unwrap_or(NonZeroU32::MIN)
            }
        };
        self.index.insert(set, id);
        id
    }

    fn get(&self, id: HopId) -> &[NextHop] {
        self.sets.get(slot_of(id)).map(|s| &s[..]).unwrap_or(&[])
    }

    fn wants_collect(&self) -> bool {
        self.index.len() >= self.collect_at
    }

    /// Free every set not in `used`.
    fn collect(&mut self, used: impl Iterator<Item = HopId>) {
        let mut live = vec![false; self.sets.len()];
        for id in used {
            if let Some(l) = live.get_mut(slot_of(id)) {
                *l = true;
            }
        }
        let empty: Arc<[NextHop]> = Arc::from(Vec::new());
        for (slot, alive) in live.iter().enumerate() {
            let Some(id) = NonZeroU32::new(slot as u32 + 1) else {
                continue;
            };
            let Some(set) = self.sets.get_mut(slot) else {
                continue;
            };
            // Freed slots are already out of the index.
            if !alive && self.index.get(&**set) == Some(&id) {
                self.index.remove(&**set);
                *set = Arc::clone(&empty);
                self.free.push(id);
            }
        }
        self.collect_at = (self.index.len() * 2).max(MIN_HOP_SETS_BEFORE_COLLECT);
    }
}

fn slot_of(id: HopId) -> usize {
    id.get() as usize - 1
}

/// Resync runs at least every `resync_interval`, but never spends more than this fraction of
/// the time dumping and comparing (a million-route table takes about a second).
const RESYNC_MAX_DUTY: u32 = 20;

/// A resync waits until no command has arrived for this long...
const QUIET_BEFORE_RESYNC: std::time::Duration = std::time::Duration::from_secs(1);
/// ...unless the last one is this many resync intervals ago.
const RESYNC_MAX_DEFER: u32 = 6;

/// After a kernel notification that routes of ours may be gone, resync this soon (several
/// notifications in a row, e.g. a link bounce, share one resync).
pub const MONITOR_RESYNC_DELAY: Duration = Duration::from_millis(200);

async fn next_event(monitor: &mut Option<mpsc::Receiver<KernelEvent>>) -> Option<KernelEvent> {
    match monitor {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What one drained group of commands asks for.
#[derive(Default)]
struct Drained {
    touched: HashSet<Prefix>,
    barriers: Vec<tokio::sync::oneshot::Sender<()>>,
    converge: bool,
    shutdown: bool,
}

impl FibTask {
    async fn run(mut self, mut rx: mpsc::Receiver<FibCommand>) {
        match self.load_kernel().await {
            Ok(0) => {}
            Ok(count) => info!(
                count,
                "keeping routes of ours left in the kernel until routing converges"
            ),
            Err(e) => warn!(error = %e, "initial FIB dump failed; relying on resync"),
        }
        self.publish();

        let mut next_resync = tokio::time::Instant::now() + self.config.resync_interval;
        let mut last_resync = tokio::time::Instant::now();

        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else {
                        debug!("FIB command channel closed; leaving routes in place");
                        return;
                    };
                    let drained = self.drain(cmd, &mut rx);
                    self.apply_touched(drained.touched).await;
                    for barrier in drained.barriers {
                        let _ = barrier.send(());
                    }
                    // While routes are pouring in, a full dump would only compete with them
                    // for memory and CPU: resync once things are quiet (but not never).
                    let now = tokio::time::Instant::now();
                    if now.duration_since(last_resync) < self.config.resync_interval * RESYNC_MAX_DEFER {
                        next_resync = next_resync.max(now + QUIET_BEFORE_RESYNC);
                    }
                    if drained.converge && !self.converged {
                        // Stale routes go with the next resync, once the routes still
                        // queued behind the End-of-RIBs are in.
                        self.converged = true;
                        info!("routing converged; stale routes are removed once quiet");
                        next_resync = now + QUIET_BEFORE_RESYNC;
                    }
                    if drained.shutdown {
                        debug!("FIB task shutting down; leaving routes in place");
                        return;
                    }
                }
                event = next_event(&mut self.monitor) => {
                    let Some(event) = event else {
                        self.monitor = None;
                        continue;
                    };
                    if self.needs_repair(&event) {
                        let soon = tokio::time::Instant::now() + MONITOR_RESYNC_DELAY;
                        if soon < next_resync {
                            debug!(?event, "kernel change: resync soon");
                            next_resync = soon;
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_resync) => {
                    last_resync = tokio::time::Instant::now();
                    next_resync = self.resync().await;
                }
            }
        }
    }

    /// Absorb `first` and everything already queued (up to `max_coalesce`) into the desired
    /// state; stops early at Shutdown.
    fn drain(&mut self, first: FibCommand, rx: &mut mpsc::Receiver<FibCommand>) -> Drained {
        self.maybe_collect_hop_sets();
        let mut drained = Drained::default();
        let mut next = Some(first);
        let mut count = 0usize;
        while let Some(cmd) = next.take() {
            count += 1;
            match cmd {
                FibCommand::Set { prefix, next_hops } => {
                    let prefix = prefix.trunc();
                    let id = (!next_hops.is_empty())
                        .then(|| self.hops.intern(&canonical_next_hops(&next_hops)));
                    if let Some(fixed) = self.statics.get_mut(&prefix) {
                        fixed.shadowed = id;
                    } else {
                        self.set_desired(prefix, id);
                        drained.touched.insert(prefix);
                    }
                }
                FibCommand::SetStatic(routes) => self.set_statics(routes, &mut drained),
                FibCommand::Converged => drained.converge = true,
                FibCommand::Barrier(ack) => {
                    // Everything before it is in this batch: answered once it is applied.
                    drained.barriers.push(ack);
                    break;
                }
                FibCommand::Shutdown => {
                    drained.shutdown = true;
                    break;
                }
            }
            if count >= self.config.max_coalesce {
                break;
            }
            // Empty or disconnected: this batch is complete.
            next = rx.try_recv().ok();
        }
        drained
    }

    /// Replace the static routes: prefixes no longer static get their shadowed BGP route
    /// back.
    fn set_statics(&mut self, routes: Vec<KernelRoute>, drained: &mut Drained) {
        let mut wanted: HashMap<Prefix, Option<HopId>> = HashMap::with_capacity(routes.len());
        for route in routes {
            let hops = canonical_next_hops(&route.next_hops);
            let id = (!hops.is_empty()).then(|| self.hops.intern(&hops));
            wanted.insert(route.prefix.trunc(), id);
        }
        let gone: Vec<Prefix> = self
            .statics
            .keys()
            .filter(|p| !wanted.contains_key(*p))
            .copied()
            .collect();
        for prefix in gone {
            let shadowed = self.statics.remove(&prefix).and_then(|s| s.shadowed);
            self.set_desired(prefix, shadowed);
            drained.touched.insert(prefix);
        }
        for (prefix, hops) in wanted {
            match self.statics.get_mut(&prefix) {
                Some(fixed) if fixed.hops == hops => continue,
                Some(fixed) => fixed.hops = hops,
                None => {
                    let shadowed = self.routes.get(&prefix).and_then(|s| s.desired);
                    self.statics.insert(prefix, StaticRoute { hops, shadowed });
                }
            }
            self.set_desired(prefix, hops);
            drained.touched.insert(prefix);
        }
    }

    /// Whether a kernel notification may have taken away a route we want. Our own deletes
    /// only remove prefixes we no longer want, so a deletion of a wanted prefix is someone
    /// else's (or an old notification of ours followed by a re-add: a resync sorts it out).
    fn needs_repair(&self, event: &KernelEvent) -> bool {
        match event {
            KernelEvent::RouteDeleted(prefix) => {
                self.routes.get(prefix).is_some_and(|s| s.desired.is_some())
            }
            KernelEvent::Resync => true,
        }
    }

    fn set_desired(&mut self, prefix: Prefix, id: Option<HopId>) {
        match id {
            Some(id) => {
                self.routes
                    .get_or_insert_with(prefix, RouteState::default)
                    .desired = Some(id);
            }
            None => {
                if let Some(state) = self.routes.get_mut(&prefix) {
                    state.desired = None;
                }
            }
        }
    }

    /// Bring the touched prefixes in line with the desired state (explicit removals delete
    /// the kernel route even before convergence).
    async fn apply_touched(&mut self, touched: HashSet<Prefix>) {
        let mut ops: Vec<FibOp> = Vec::new();
        for prefix in touched {
            let Some(state) = self.routes.get(&prefix).copied() else {
                continue;
            };
            if state.is_empty() {
                self.routes.remove(&prefix);
            } else if let Some(op) = self.route_op(prefix, state, true) {
                ops.push(op);
            }
        }
        self.apply(ops).await;
    }

    fn route_op(&self, prefix: Prefix, state: RouteState, delete_stale: bool) -> Option<FibOp> {
        route_op(
            prefix,
            state.desired.map(|id| self.hops.get(id)),
            state.installed.map(|id| self.hops.get(id)),
            delete_stale,
        )
    }

    fn maybe_collect_hop_sets(&mut self) {
        if self.hops.wants_collect() {
            let used = self
                .routes
                .values()
                .flat_map(|s| [s.desired, s.installed])
                .chain(self.statics.values().flat_map(|s| [s.hops, s.shadowed]))
                .flatten();
            self.hops.collect(used);
        }
    }

    /// Replace what we know is installed with a fresh dump of the kernel; returns the number
    /// of routes of ours found.
    async fn load_kernel(&mut self) -> Result<usize, super::FibError> {
        let dumped = self.fib.dump_compact().await?;
        if dumped.unparsable > 0 {
            warn!(
                count = dumped.unparsable,
                "FIB dump: unparsable route messages skipped"
            );
        }
        self.maybe_collect_hop_sets();
        let ids: Vec<HopId> = dumped
            .hop_sets
            .iter()
            .map(|hops| self.hops.intern(hops))
            .collect();
        for state in self.routes.values_mut() {
            state.installed = None;
        }
        for (prefix, set) in dumped.routes {
            if let Some(id) = ids.get(set as usize) {
                self.routes
                    .get_or_insert_with(prefix, RouteState::default)
                    .installed = Some(*id);
            }
        }
        self.routes.retain(|_, state| !state.is_empty());
        self.installed = self
            .routes
            .values()
            .filter(|s| s.installed.is_some())
            .count();
        self.publish();
        Ok(self.installed)
    }

    /// Re-dump the kernel and repair differences. Before convergence only desired routes
    /// are (re)installed: stale routes are left alone. Returns when the next resync is due.
    async fn resync(&mut self) -> tokio::time::Instant {
        let started = tokio::time::Instant::now();
        if let Err(e) = self.load_kernel().await {
            warn!(error = %e, "FIB resync dump failed");
            return started + self.config.resync_interval;
        }
        let ops: Vec<FibOp> = self
            .routes
            .iter()
            .filter_map(|(prefix, state)| self.route_op(prefix, *state, self.converged))
            .collect();
        if !ops.is_empty() {
            info!(count = ops.len(), "FIB resync: repairing kernel routes");
        }
        self.apply(ops).await;
        let spent = started.elapsed();
        started + self.config.resync_interval.max(spent * RESYNC_MAX_DUTY)
    }

    async fn apply(&mut self, ops: Vec<FibOp>) {
        if ops.is_empty() {
            self.publish();
            return;
        }
        let index: Vec<(FibOpKind, Prefix)> = ops.iter().map(|o| (o.kind(), o.prefix())).collect();
        let report = self.fib.apply(ops).await;
        for (op, err) in &report.errors {
            warn!(error = %err, "FIB operation failed");
            debug!(?op, "failed FIB operation");
        }
        self.stats
            .install_errors
            .fetch_add(report.errors.len() as u64, Ordering::Relaxed);
        let failed: HashSet<(FibOpKind, Prefix)> = report
            .errors
            .iter()
            .map(|(op, _)| (op.kind(), op.prefix()))
            .collect();
        for (kind, prefix) in index {
            if failed.contains(&(kind, prefix)) {
                continue;
            }
            let Some(state) = self.routes.get_mut(&prefix) else {
                continue;
            };
            let was_installed = state.installed.is_some();
            match kind {
                // Add and Replace ops are always built from the desired state.
                FibOpKind::Add | FibOpKind::Replace => state.installed = state.desired,
                FibOpKind::Delete => {
                    state.installed = None;
                    if was_installed {
                        self.stats.removed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            match (was_installed, state.installed.is_some()) {
                (false, true) => self.installed += 1,
                (true, false) => self.installed -= 1,
                _ => {}
            }
            if state.is_empty() {
                self.routes.remove(&prefix);
            }
        }
        self.publish();
    }

    fn publish(&self) {
        self.stats
            .installed
            .store(self.installed as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ips(v: &[&str]) -> Vec<NextHop> {
        v.iter()
            .map(|s| NextHop::from(s.parse::<std::net::IpAddr>().unwrap()))
            .collect()
    }

    #[test]
    fn hop_sets_intern_once_and_collect_unused_sets() {
        let mut hops = HopSets::default();
        let a = hops.intern(&ips(&["10.0.0.1"]));
        let b = hops.intern(&ips(&["10.0.0.1", "10.0.0.2"]));
        let empty = hops.intern(&[]);
        assert_eq!(hops.intern(&ips(&["10.0.0.1"])), a);
        assert_ne!(a, b);
        assert_eq!(hops.get(b), &ips(&["10.0.0.1", "10.0.0.2"])[..]);
        assert_eq!(hops.get(empty), &[] as &[NextHop]);

        // Only `a` and the empty set are still used: `b` is freed and its slot reused.
        hops.collect([a, empty].into_iter());
        assert_eq!(hops.index.len(), 2);
        assert_eq!(hops.get(a), &ips(&["10.0.0.1"])[..]);
        let c = hops.intern(&ips(&["10.0.0.3"]));
        assert_eq!(c, b, "the freed slot is reused");
        assert_eq!(hops.get(c), &ips(&["10.0.0.3"])[..]);
        assert_eq!(hops.intern(&[]), empty);

        // Collecting twice never frees a slot twice.
        hops.collect([c].into_iter());
        hops.collect([c].into_iter());
        assert_eq!(hops.free.len(), 2);
        let d = hops.intern(&ips(&["10.0.0.4"]));
        let e = hops.intern(&ips(&["10.0.0.5"]));
        assert_ne!(d, e);
        assert_ne!(d, c);
        assert_eq!(hops.get(c), &ips(&["10.0.0.3"])[..]);
    }

    #[test]
    fn route_state_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<RouteState>(), 8);
    }
}
