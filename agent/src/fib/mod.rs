//! Kernel FIB programming: routelet installs its best paths into a Linux routing table with
//! its own route protocol number ([`ROUTELET_PROTOCOL`]) and only ever reads, replaces or
//! deletes routes carrying that number.
//!
//! * [`Fib`]: the netlink I/O (streamed dumps and batched replace/delete through one raw
//!   netlink socket, see [`batch`]);
//! * [`diff`]: pure reconciliation of desired vs. kernel state;
//! * [`spawn_fib_task`]: the single task owning kernel state (coalescing, stale-route
//!   handling across restarts, periodic resync).

mod batch;
mod diff;
mod message;
mod monitor;
pub mod nexthop;
mod task;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};

pub use diff::{diff, route_op};
pub use message::canonical_next_hops;
pub use task::{
    spawn_fib_task, spawn_fib_task_with, FibCommand, FibStats, FibTaskConfig, MONITOR_RESYNC_DELAY,
};

use batch::{BatchSocket, Outcome};
use message::RouteParams;

/// An IP prefix (the shared BGP prefix type).
pub type Prefix = ipnet::IpNet;

/// routelet's route protocol number (`rtm_protocol`).
///
/// Chosen not to collide with other routing daemons commonly found on Kubernetes nodes:
/// BIRD uses 12, kube-router 17, keepalived 18, babel 42, openr 99, Calico Felix 80 and FRR
/// 186-192 (bgp 186, isis 187, ospf 188, rip 189, eigrp 192, ...).
pub const ROUTELET_PROTOCOL: u8 = 200;

/// The main routing table (`RT_TABLE_MAIN`).
pub const MAIN_TABLE: u32 = 254;

/// A next-hop list of exactly `[BLACKHOLE]` is a blackhole route (`ip route add blackhole`):
/// packets to the prefix are dropped here. 0.0.0.0 can never be a gateway, so the sentinel
/// cannot be confused with a real next hop.
pub const BLACKHOLE: NextHop = NextHop {
    gateway: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    onlink_dev: None,
};

/// One next hop of a kernel route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHop {
    pub gateway: IpAddr,
    /// With an interface index the gateway is used *on link* through that interface
    /// (`via GW dev DEV onlink`, RTNH_F_ONLINK) even though no subnet of the interface
    /// contains it: the VXLAN datapath routes a remote pod CIDR via the remote VTEP address
    /// this way. Without one the kernel resolves the gateway on a connected subnet.
    pub onlink_dev: Option<u32>,
}

impl NextHop {
    /// `via gateway onlink dev ifindex`.
    pub fn onlink(gateway: IpAddr, ifindex: u32) -> NextHop {
        NextHop {
            gateway,
            onlink_dev: Some(ifindex),
        }
    }
}

impl From<IpAddr> for NextHop {
    fn from(gateway: IpAddr) -> NextHop {
        NextHop {
            gateway,
            onlink_dev: None,
        }
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.onlink_dev {
            _ if *self == BLACKHOLE => f.write_str("blackhole"),
            Some(dev) => write!(f, "{} onlink dev #{dev}", self.gateway),
            None => write!(f, "{}", self.gateway),
        }
    }
}

/// One route of ours in the kernel: more than one next hop is a single multipath (ECMP)
/// route; `[BLACKHOLE]` is a blackhole route. A next hop may be of the other family than the prefix for IPv4 prefixes (an IPv6
/// next hop is installed with RTA_VIA, kernel >= 5.2); IPv6 prefixes need IPv6 next hops.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KernelRoute {
    pub prefix: Prefix,
    pub next_hops: Vec<NextHop>,
}

/// One change to apply to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibOp {
    /// Create a route for a prefix we have no route for (NLM_F_CREATE | NLM_F_EXCL): if any
    /// other route with the same prefix, table and metric exists (another protocol's), the
    /// kernel refuses with EEXIST instead of letting us overwrite it.
    Add(KernelRoute),
    /// Replace our own existing route (NLM_F_CREATE | NLM_F_REPLACE).
    Replace(KernelRoute),
    /// Delete our route for this prefix; deleting an absent route succeeds.
    Delete(Prefix),
}

impl FibOp {
    pub fn prefix(&self) -> Prefix {
        match self {
            FibOp::Add(r) | FibOp::Replace(r) => r.prefix,
            FibOp::Delete(p) => *p,
        }
    }

    pub fn kind(&self) -> FibOpKind {
        match self {
            FibOp::Add(_) => FibOpKind::Add,
            FibOp::Replace(_) => FibOpKind::Replace,
            FibOp::Delete(_) => FibOpKind::Delete,
        }
    }
}

/// The kind of a [`FibOp`], for error context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FibOpKind {
    Add,
    Replace,
    Delete,
}

impl fmt::Display for FibOpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FibOpKind::Add => "add",
            FibOpKind::Replace => "replace",
            FibOpKind::Delete => "delete",
        })
    }
}

fn errno_text(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    match text.split_once(" (os error") {
        Some((description, _)) => description.to_string(),
        None => text,
    }
}

fn ext_text(message: &Option<String>) -> String {
    message
        .as_ref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

/// FIB errors, with the prefix, the operation and the kernel errno where there is one.
#[derive(Debug, thiserror::Error)]
pub enum FibError {
    #[error("Fib::new must be called from within a tokio runtime")]
    NoRuntime,
    #[error("cannot open rtnetlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("{op} {prefix}: invalid route: {reason}")]
    InvalidRoute {
        op: FibOpKind,
        prefix: Prefix,
        reason: &'static str,
    },
    #[error("{op} {prefix}: kernel error errno {errno} ({}){}", errno_text(*.errno), ext_text(.message))]
    Kernel {
        op: FibOpKind,
        prefix: Prefix,
        errno: i32,
        /// The kernel's extended-ACK message, if it gave one.
        message: Option<String>,
    },
    #[error("{op} {prefix}: netlink send failed: {reason}")]
    Send {
        op: FibOpKind,
        prefix: Prefix,
        reason: String,
    },
    #[error("{op} {prefix}: kernel reply lost (netlink receive overrun), outcome unknown")]
    AckLost { op: FibOpKind, prefix: Prefix },
    #[error("{op} {prefix}: netlink worker failed: {reason}")]
    Worker {
        op: FibOpKind,
        prefix: Prefix,
        reason: String,
    },
    #[error("dump of {family} routes in table {table} failed: {reason}")]
    Dump {
        family: &'static str,
        table: u32,
        reason: String,
    },
}

impl FibError {
    /// The kernel errno, if the kernel rejected the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            FibError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// Result of [`Fib::apply`]: how many ops succeeded, and each failed op with its error.
#[derive(Debug, Default)]
pub struct FibApplyReport {
    pub ok: usize,
    pub errors: Vec<(FibOp, FibError)>,
}

/// Our routes as dumped from the kernel, compact (see [`Fib::dump_compact`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DumpedRoutes {
    /// Each route's (truncated) prefix and its index into `hop_sets`.
    pub routes: Vec<(Prefix, u32)>,
    /// Distinct canonical next-hop sets (empty for a route of ours without a gateway).
    pub hop_sets: Vec<Vec<NextHop>>,
    /// Dumped messages that could not be parsed (skipped).
    pub unparsable: usize,
}

/// Handle on one kernel routing table for one route protocol.
pub struct Fib {
    writer: Arc<Mutex<BatchSocket>>,
    params: RouteParams,
}

impl Fib {
    /// Open the netlink socket in the calling thread's network namespace. Dumps and writes
    /// run on the current tokio runtime's blocking threads. `table` 254 is the main table.
    pub fn new(table: u32, protocol: u8) -> Result<Fib, FibError> {
        tokio::runtime::Handle::try_current().map_err(|_| FibError::NoRuntime)?;
        let writer = BatchSocket::new().map_err(FibError::Socket)?;
        Ok(Fib {
            writer: Arc::new(Mutex::new(writer)),
            params: RouteParams {
                table,
                protocol,
                link_local_ifindex: None,
                metric: None,
            },
        })
    }

    /// Use `ifindex` as the output interface of IPv6 link-local next hops (which the kernel
    /// cannot resolve without one). Other next hops never get an interface: the kernel
    /// resolves their gateway.
    pub fn with_ifindex(mut self, ifindex: u32) -> Fib {
        self.params.link_local_ifindex = Some(ifindex);
        self
    }

    /// Install our routes with this metric (RTA_PRIORITY) and only consider routes of our
    /// protocol with this metric as ours. The kernel's NLM_F_REPLACE matches on prefix,
    /// table, TOS and metric but *not* protocol, so with the default metric a replace would
    /// overwrite another daemon's route for the same prefix in the same table; a metric no
    /// one else uses keeps both routes side by side (the lower metric is preferred).
    pub fn with_metric(mut self, metric: u32) -> Fib {
        self.params.metric = Some(metric);
        self
    }

    pub fn table(&self) -> u32 {
        self.params.table
    }

    pub fn protocol(&self) -> u8 {
        self.params.protocol
    }

    /// Our protocol's routes in our table, IPv4 and IPv6 (next hops sorted).
    pub async fn dump(&self) -> Result<Vec<KernelRoute>, FibError> {
        let dumped = self.dump_compact().await?;
        Ok(dumped
            .routes
            .into_iter()
            .map(|(prefix, set)| KernelRoute {
                prefix,
                next_hops: dumped
                    .hop_sets
                    .get(set as usize)
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// [`Fib::dump`] in compact form: each route's prefix with an index into the distinct
    /// next-hop sets (a million routes usually share a handful), read straight off the
    /// netlink socket on a blocking thread.
    pub async fn dump_compact(&self) -> Result<DumpedRoutes, FibError> {
        let writer = Arc::clone(&self.writer);
        let params = self.params;
        let table = params.table;
        tokio::task::spawn_blocking(move || {
            let mut socket = writer
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut out = DumpedRoutes::default();
            let mut index: HashMap<Vec<NextHop>, u32> = HashMap::new();
            for (family, name) in [
                (AddressFamily::Inet, "IPv4"),
                (AddressFamily::Inet6, "IPv6"),
            ] {
                let request = message::build_dump_request(family, &params);
                let skipped = socket
                    .dump(request, |msg| {
                        if let Some(route) = message::parse_route(msg, &params) {
                            let next = out.hop_sets.len() as u32;
                            let set = *index.entry(route.next_hops).or_insert_with_key(|hops| {
                                out.hop_sets.push(hops.clone());
                                next
                            });
                            out.routes.push((route.prefix, set));
                        }
                    })
                    .map_err(|e| FibError::Dump {
                        family: name,
                        table,
                        reason: e.to_string(),
                    })?;
                out.unparsable += skipped;
            }
            Ok(out)
        })
        .await
        .map_err(|e| FibError::Dump {
            family: "IPv4/IPv6",
            table,
            reason: format!("dump worker failed: {e}"),
        })?
    }

    /// Apply `ops` in order, batched (many requests per netlink `sendmsg`), on a blocking
    /// thread. Deleting a route that is already gone counts as success.
    pub async fn apply(&self, ops: Vec<FibOp>) -> FibApplyReport {
        if ops.is_empty() {
            return FibApplyReport::default();
        }
        let writer = Arc::clone(&self.writer);
        let params = self.params;
        // Kept to report every op if the worker dies (it has no panicking paths).
        let index: Vec<(FibOpKind, Prefix)> = ops.iter().map(|o| (o.kind(), o.prefix())).collect();
        match tokio::task::spawn_blocking(move || apply_blocking(&writer, &params, ops)).await {
            Ok(report) => report,
            Err(e) => FibApplyReport {
                ok: 0,
                errors: index
                    .into_iter()
                    .map(|(op, prefix)| {
                        let failed = match op {
                            FibOpKind::Add | FibOpKind::Replace => FibOp::Replace(KernelRoute {
                                prefix,
                                next_hops: Vec::new(),
                            }),
                            FibOpKind::Delete => FibOp::Delete(prefix),
                        };
                        let err = FibError::Worker {
                            op,
                            prefix,
                            reason: e.to_string(),
                        };
                        (failed, err)
                    })
                    .collect(),
            },
        }
    }
}

fn apply_blocking(
    writer: &Mutex<BatchSocket>,
    params: &RouteParams,
    ops: Vec<FibOp>,
) -> FibApplyReport {
    let mut report = FibApplyReport::default();
    // Messages are built as the socket asks for them: one batch in memory, not one message
    // per op.
    let mut unbuildable: Vec<(usize, FibError)> = Vec::new();
    let mut sent: Vec<usize> = Vec::with_capacity(ops.len());
    let requests = ops.iter().enumerate().filter_map(|(i, op)| match op {
        FibOp::Add(route) | FibOp::Replace(route) => match message::build_replace(route, params) {
            Ok(msg) => {
                let flags = if matches!(op, FibOp::Add(_)) {
                    NLM_F_CREATE | NLM_F_EXCL
                } else {
                    NLM_F_CREATE | NLM_F_REPLACE
                };
                sent.push(i);
                Some((RouteNetlinkMessage::NewRoute(msg), flags))
            }
            Err(e) => {
                unbuildable.push((i, e));
                None
            }
        },
        FibOp::Delete(prefix) => {
            sent.push(i);
            Some((
                RouteNetlinkMessage::DelRoute(message::build_delete(prefix, params)),
                0,
            ))
        }
    });
    let outcomes = {
        let mut socket = writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        socket.execute(requests)
    };
    let mut ops: Vec<Option<FibOp>> = ops.into_iter().map(Some).collect();
    for (i, e) in unbuildable {
        if let Some(op) = ops.get_mut(i).and_then(Option::take) {
            report.errors.push((op, e));
        }
    }
    let sent_ops = sent
        .into_iter()
        .filter_map(|i| ops.get_mut(i).and_then(Option::take));
    for (op, outcome) in sent_ops.into_iter().zip(outcomes) {
        let (kind, prefix) = (op.kind(), op.prefix());
        let error = match outcome {
            Outcome::Ok => None,
            // Already gone: deletes are idempotent.
            Outcome::Errno(errno, _) if kind == FibOpKind::Delete && errno == libc::ESRCH => None,
            Outcome::Errno(errno, message) => Some(FibError::Kernel {
                op: kind,
                prefix,
                errno,
                message,
            }),
            Outcome::SendFailed(reason) => Some(FibError::Send {
                op: kind,
                prefix,
                reason,
            }),
            Outcome::AckLost => Some(FibError::AckLost { op: kind, prefix }),
        };
        match error {
            None => report.ok += 1,
            Some(e) => report.errors.push((op, e)),
        }
    }
    report
}
