//! The FIB owner task: the only writer of routelet's kernel routes. It coalesces route
//! updates into batches, keeps routes left by a previous run until routing has converged,
//! and periodically re-dumps the kernel to repair routes of ours changed by someone else.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::message::canonical_next_hops;
use super::{diff_canonical, Fib, FibOp, FibOpKind, KernelRoute, Prefix};

/// Commands driving the FIB task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibCommand {
    /// Desired next hops for `prefix`; an empty list removes the route.
    Set {
        prefix: Prefix,
        next_hops: Vec<IpAddr>,
    },
    /// Initial routing has converged: routes of ours left in the kernel by a previous run
    /// that are still not desired are deleted now, and from then on kernel == desired.
    Converged,
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
}

impl Default for FibTaskConfig {
    fn default() -> Self {
        FibTaskConfig {
            resync_interval: Duration::from_secs(5),
            max_coalesce: 200_000,
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
    let task = FibTask {
        fib,
        stats,
        config,
        desired: HashMap::new(),
        kernel: HashMap::new(),
        hop_sets: HashSet::new(),
        converged: false,
    };
    tokio::spawn(task.run(rx))
}

struct FibTask {
    fib: Fib,
    stats: Arc<FibStats>,
    config: FibTaskConfig,
    /// Desired routes (canonical next hops, never empty).
    desired: HashMap<Prefix, NextHopSet>,
    /// Our routes in the kernel as far as we know (last dump + our successful ops).
    kernel: HashMap<Prefix, NextHopSet>,
    /// Interned next-hop sets: a table of a million routes usually has a handful of distinct
    /// sets, so each route costs one pointer instead of its own allocation.
    hop_sets: HashSet<NextHopSet>,
    converged: bool,
}

/// A canonical (sorted, deduplicated) set of next hops, shared between routes.
type NextHopSet = Arc<[IpAddr]>;

/// Resync runs at least every `resync_interval`, but never spends more than this fraction of
/// the time dumping and comparing (a million-route table takes about a second).
const RESYNC_MAX_DUTY: u32 = 20;

/// A resync waits until no command has arrived for this long...
const QUIET_BEFORE_RESYNC: std::time::Duration = std::time::Duration::from_secs(1);
/// ...unless the last one is this many resync intervals ago.
const RESYNC_MAX_DEFER: u32 = 6;

/// What one drained group of commands asks for.
#[derive(Default)]
struct Drained {
    touched: HashSet<Prefix>,
    converge: bool,
    shutdown: bool,
}

impl FibTask {
    async fn run(mut self, mut rx: mpsc::Receiver<FibCommand>) {
        match self.fib.dump().await {
            Ok(routes) => {
                if !routes.is_empty() {
                    info!(
                        count = routes.len(),
                        "keeping routes of ours left in the kernel until routing converges"
                    );
                }
                self.kernel = self.kernel_map(routes);
            }
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
                _ = tokio::time::sleep_until(next_resync) => {
                    last_resync = tokio::time::Instant::now();
                    next_resync = self.resync().await;
                }
            }
        }
    }

    /// Absorb `first` and everything already queued (up to `max_coalesce`) into the desired
    /// map; stops early at Shutdown.
    fn drain(&mut self, first: FibCommand, rx: &mut mpsc::Receiver<FibCommand>) -> Drained {
        let mut drained = Drained::default();
        let mut next = Some(first);
        let mut count = 0usize;
        while let Some(cmd) = next.take() {
            count += 1;
            match cmd {
                FibCommand::Set { prefix, next_hops } => {
                    let prefix = prefix.trunc();
                    if next_hops.is_empty() {
                        self.desired.remove(&prefix);
                    } else {
                        let hops = self.intern(&next_hops);
                        self.desired.insert(prefix, hops);
                    }
                    drained.touched.insert(prefix);
                }
                FibCommand::Converged => drained.converge = true,
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

    /// Bring the touched prefixes in line with the desired map (explicit removals delete
    /// the kernel route even before convergence).
    async fn apply_touched(&mut self, touched: HashSet<Prefix>) {
        let mut ops: Vec<FibOp> = Vec::new();
        for prefix in touched {
            match (self.desired.get(&prefix), self.kernel.get(&prefix)) {
                (Some(want), have) if have != Some(want) => {
                    let route = KernelRoute {
                        prefix,
                        next_hops: want.to_vec(),
                    };
                    // A prefix we have no route for is created exclusively, so a route of
                    // another protocol for the same prefix is never overwritten.
                    ops.push(match have {
                        Some(_) => FibOp::Replace(route),
                        None => FibOp::Add(route),
                    });
                }
                (None, Some(_)) => ops.push(FibOp::Delete(prefix)),
                _ => {}
            }
        }
        self.apply(ops).await;
    }

    /// The shared copy of the canonical form of `hops`.
    fn intern(&mut self, hops: &[IpAddr]) -> NextHopSet {
        let canonical = canonical_next_hops(hops);
        if let Some(set) = self.hop_sets.get(canonical.as_slice()) {
            return Arc::clone(set);
        }
        if self.hop_sets.len() >= 1024 {
            // Drop sets no route uses any more.
            self.hop_sets.retain(|s| Arc::strong_count(s) > 1);
        }
        let set: NextHopSet = canonical.into();
        self.hop_sets.insert(Arc::clone(&set));
        set
    }

    fn kernel_map(&mut self, routes: Vec<KernelRoute>) -> HashMap<Prefix, NextHopSet> {
        let mut map = HashMap::with_capacity(routes.len());
        for r in routes {
            let hops = self.intern(&r.next_hops);
            map.insert(r.prefix.trunc(), hops);
        }
        map
    }

    /// Re-dump the kernel and repair differences. Before convergence only desired routes
    /// are (re)installed: stale routes are left alone. Returns when the next resync is due.
    async fn resync(&mut self) -> tokio::time::Instant {
        let started = tokio::time::Instant::now();
        let routes = match self.fib.dump().await {
            Ok(routes) => routes,
            Err(e) => {
                warn!(error = %e, "FIB resync dump failed");
                return started + self.config.resync_interval;
            }
        };
        self.kernel = self.kernel_map(routes);
        let ops = diff_canonical(&self.desired, &self.kernel, self.converged);
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
            match kind {
                // Replace ops are always built from the desired map.
                FibOpKind::Add | FibOpKind::Replace => {
                    if let Some(hops) = self.desired.get(&prefix) {
                        self.kernel.insert(prefix, Arc::clone(hops));
                    }
                }
                FibOpKind::Delete => {
                    if self.kernel.remove(&prefix).is_some() {
                        self.stats.removed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        self.publish();
    }

    fn publish(&self) {
        self.stats
            .installed
            .store(self.kernel.len() as u64, Ordering::Relaxed);
    }
}
