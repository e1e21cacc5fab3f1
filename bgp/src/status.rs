//! Status snapshots of a running speaker (neighbors, counters, Loc-RIB) as served on the
//! local status socket and rendered by `routelet status`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::config::NeighborConfig;
use crate::neighbor::{NeighborCounters, PeerState};
use crate::rib::{BestPathReason, BestView, PathSource};
use crate::types::{Family, Prefix};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpeakerStatus {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    /// Initial convergence done (stale routes of a previous run released).
    pub converged: bool,
    /// Incoming connections refused because the source is not a configured neighbor.
    pub connections_rejected: u64,
    /// Prefixes in the Loc-RIB (also when `rib` is omitted).
    pub rib_size: usize,
    pub neighbors: Vec<NeighborStatus>,
    /// The Loc-RIB, sorted; empty in a summary.
    pub rib: Vec<RouteStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NeighborStatus {
    pub address: IpAddr,
    pub asn: u32,
    /// Lower-case RFC 4271 state: idle, connect, active, opensent, openconfirm, established.
    pub state: String,
    pub uptime_seconds: u64,
    /// Prefixes in the Adj-RIB-In.
    pub received: usize,
    /// Prefixes accepted into the Loc-RIB candidates.
    pub accepted: usize,
    /// Prefixes in the Adj-RIB-Out.
    pub advertised: usize,
    pub remote_router_id: Option<Ipv4Addr>,
    pub hold_time: Option<u16>,
    pub families: Vec<Family>,
    pub updates_received: u64,
    pub updates_sent: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub established_transitions: u64,
    /// "code/subcode" -> count
    pub notifications_sent: BTreeMap<String, u64>,
    pub notifications_received: BTreeMap<String, u64>,
    pub last_error: Option<String>,
    /// Routes kept from the peer's previous session (graceful restart helper), still used.
    #[serde(default)]
    pub stale_routes: usize,
    /// The peer advertised graceful restart on the current session.
    #[serde(default)]
    pub peer_graceful_restart: bool,
    /// Malformed path attributes received, by RFC 7606 action.
    #[serde(default)]
    pub malformed: MalformedCounts,
    /// Prefixes received that failed a loop check (kept, not used), by check.
    #[serde(default)]
    pub loop_rejected: LoopCounts,
}

/// Prefixes rejected by the import loop checks, by check (cumulative).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoopCounts {
    /// eBGP: our ASN in the AS_PATH.
    pub as_path: u64,
    /// iBGP: ORIGINATOR_ID is our router id.
    pub originator_id: u64,
    /// iBGP: our cluster id in the CLUSTER_LIST.
    pub cluster_list: u64,
}

impl LoopCounts {
    /// Adds `n` prefixes rejected for `reason`.
    pub fn add(&mut self, reason: crate::rib::Reject, n: usize) {
        let c = match reason {
            crate::rib::Reject::AsPath => &mut self.as_path,
            crate::rib::Reject::OriginatorId => &mut self.originator_id,
            crate::rib::Reject::ClusterList => &mut self.cluster_list,
        };
        *c = c.saturating_add(n as u64);
    }
}

/// Malformed path attributes by the RFC 7606 action taken (one count per attribute).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MalformedCounts {
    pub attribute_discard: u64,
    pub treat_as_withdraw: u64,
    pub session_reset: u64,
}

fn notification_map(list: &std::sync::Mutex<Vec<((u8, u8), u64)>>) -> BTreeMap<String, u64> {
    list.lock()
        .map(|l| {
            l.iter()
                .map(|((c, s), n)| (format!("{c}/{s}"), *n))
                .collect()
        })
        .unwrap_or_default()
}

impl NeighborStatus {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: &NeighborConfig,
        state: PeerState,
        uptime_seconds: u64,
        received: usize,
        accepted: usize,
        advertised: usize,
        session: Option<(Ipv4Addr, u16, Vec<Family>)>,
        counters: &NeighborCounters,
        last_down: Option<String>,
    ) -> NeighborStatus {
        let (remote_router_id, hold_time, families) = match session {
            Some((id, hold, fams)) => (Some(id), Some(hold), fams),
            None => (None, None, cfg.families.clone()),
        };
        let last_error = counters
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .or(last_down);
        NeighborStatus {
            address: cfg.address,
            asn: cfg.asn,
            state: state.as_str().to_string(),
            uptime_seconds,
            received,
            accepted,
            advertised,
            remote_router_id,
            hold_time,
            families,
            updates_received: counters.updates_received.load(Ordering::Relaxed),
            updates_sent: counters.updates_sent.load(Ordering::Relaxed),
            messages_received: counters.messages_received.load(Ordering::Relaxed),
            messages_sent: counters.messages_sent.load(Ordering::Relaxed),
            established_transitions: counters.established_transitions.load(Ordering::Relaxed),
            notifications_sent: notification_map(&counters.notifications_sent),
            notifications_received: notification_map(&counters.notifications_received),
            last_error,
            stale_routes: 0,
            peer_graceful_restart: false,
            loop_rejected: LoopCounts::default(),
            malformed: MalformedCounts {
                attribute_discard: counters.malformed_attribute_discard.load(Ordering::Relaxed),
                treat_as_withdraw: counters.malformed_treat_as_withdraw.load(Ordering::Relaxed),
                session_reset: counters.malformed_session_reset.load(Ordering::Relaxed),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteStatus {
    pub prefix: String,
    pub next_hops: Vec<String>,
    /// Why this path is best: only_path, locally_originated, local_pref, as_path_length,
    /// origin, med, ebgp_over_ibgp, router_id, cluster_list_length, neighbor_address.
    pub reason: String,
    /// "local" or the neighbor address the best path came from.
    pub source: String,
    pub as_path: String,
    pub origin: String,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    #[serde(skip)]
    pub(crate) sort_key: (u8, u128, u8),
}

pub fn reason_str(r: BestPathReason) -> &'static str {
    match r {
        BestPathReason::OnlyPath => "only_path",
        BestPathReason::LocallyOriginated => "locally_originated",
        BestPathReason::LocalPref => "local_pref",
        BestPathReason::AsPathLength => "as_path_length",
        BestPathReason::Origin => "origin",
        BestPathReason::Med => "med",
        BestPathReason::EbgpOverIbgp => "ebgp_over_ibgp",
        BestPathReason::RouterId => "router_id",
        BestPathReason::ClusterListLength => "cluster_list_length",
        BestPathReason::NeighborAddress => "neighbor_address",
    }
}

impl RouteStatus {
    pub(crate) fn new(prefix: Prefix, best: &BestView<'_>) -> RouteStatus {
        let attrs = &best.attrs;
        let sort_key = match prefix {
            Prefix::V4(p) => (4, u128::from(u32::from(p.network())), p.prefix_len()),
            Prefix::V6(p) => (6, u128::from(p.network()), p.prefix_len()),
        };
        RouteStatus {
            prefix: prefix.to_string(),
            next_hops: best.next_hops.iter().map(|n| n.addr.to_string()).collect(),
            reason: reason_str(best.reason).to_string(),
            source: match best.source {
                PathSource::Local => "local".to_string(),
                PathSource::Peer(a) => a.to_string(),
            },
            as_path: attrs.as_path.to_string(),
            origin: format!("{:?}", attrs.origin).to_lowercase(),
            local_pref: attrs.local_pref,
            med: attrs.med,
            sort_key,
        }
    }
}

impl SpeakerStatus {
    /// The human-readable form of `routelet status`.
    pub fn render_table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "router id {}  AS {}  converged: {}  prefixes: {}  rejected connections: {}",
            self.router_id,
            self.asn,
            if self.converged { "yes" } else { "no" },
            self.rib_size,
            self.connections_rejected
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<40} {:>10} {:<12} {:>9} {:>9} {:>9} {:>10}",
            "NEIGHBOR", "AS", "STATE", "UPTIME", "RECEIVED", "ACCEPTED", "ADVERTISED"
        );
        for n in &self.neighbors {
            let _ = writeln!(
                s,
                "{:<40} {:>10} {:<12} {:>9} {:>9} {:>9} {:>10}",
                n.address,
                n.asn,
                n.state,
                if n.state == "established" {
                    format_uptime(n.uptime_seconds)
                } else {
                    "-".to_string()
                },
                n.received,
                n.accepted,
                n.advertised
            );
            if n.state != "established" {
                if let Some(e) = &n.last_error {
                    let _ = writeln!(s, "{:<40} last error: {e}", "");
                }
            }
        }
        if self.rib.is_empty() {
            return s;
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<44} {:<40} {:<18} {:<20} AS PATH",
            "PREFIX", "NEXT HOPS", "SOURCE", "REASON"
        );
        for r in &self.rib {
            let nh = if r.next_hops.is_empty() {
                "-".to_string()
            } else {
                r.next_hops.join(",")
            };
            let _ = writeln!(
                s,
                "{:<44} {:<40} {:<18} {:<20} {}",
                r.prefix, nh, r.source, r.reason, r.as_path
            );
        }
        s
    }
}

fn format_uptime(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}")
}
