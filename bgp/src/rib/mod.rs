//! Routing information bases: Adj-RIB-In per peer, the Loc-RIB with best path selection
//! (RFC 4271 9.1, each best path recording why it won) and ECMP, and the export rules that
//! compute what each peer's Adj-RIB-Out should hold. Pure: no I/O.
//!
//! Layout: `loc_rib` (the `Rib`: destinations, peers, originated routes), `adj_in` (UPDATE
//! application and import rules), `best_path` (decision process + ECMP), `export` (export
//! rules), `adj_out` (per-peer Adj-RIB-Out with coalescing), `intern` (attribute interner).

mod adj_in;
mod adj_out;
mod best_path;
mod export;
mod intern;
mod loc_rib;
mod path_list;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_export;
#[cfg(test)]
mod tests_graceful;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::types::{Asn, Family, NextHop, PathAttributes, Prefix};

pub use adj_in::Reject;
pub use adj_out::{AdjRibOut, OutBatch};
pub use loc_rib::{BestView, LoopRejection, Rib, UpdateOutcome};

/// Where a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathSource {
    /// Originated by this speaker (config or agent).
    Local,
    /// Learned from the neighbor with this address.
    Peer(IpAddr),
}

/// What the RIB needs to know about a neighbor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub address: IpAddr,
    pub asn: Asn,
    pub router_id: Ipv4Addr,
    /// Our address on the session (next-hop-self uses it; both families if known).
    pub local_address: IpAddr,
    pub local_address_v6: Option<IpAddr>,
    pub route_reflector_client: bool,
    /// IPv4 routes may be sent with an IPv6 next hop to this peer (RFC 8950 negotiated).
    pub extended_next_hop: bool,
    /// Families negotiated on the session; only these are exported to the peer.
    pub families: Vec<Family>,
    /// Whether routes from this peer are accepted.
    pub import: RouteFilter,
    /// Whether routes are advertised to this peer.
    pub export: RouteFilter,
}

/// A neighbor's import or export filter: everything, nothing, or (export) only the routes this
/// speaker originates. Named policies (prefix and community sets, actions) arrive with the
/// policy crate and will replace this.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RouteFilter {
    #[default]
    All,
    None,
    /// Export: only locally originated routes (a Kubernetes node towards its ToR: its own pod
    /// CIDRs and service IPs, never what other nodes or peers taught it). Import: nothing.
    Originated,
}

/// Why the best path won (the last tie-break that decided it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BestPathReason {
    OnlyPath,
    LocallyOriginated,
    LocalPref,
    AsPathLength,
    Origin,
    Med,
    EbgpOverIbgp,
    RouterId,
    ClusterListLength,
    NeighborAddress,
}

/// A Loc-RIB change handed to consumers (FIB, export).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocRibChange {
    /// New or changed best path (and multipath set) for a prefix.
    Best {
        prefix: Prefix,
        source: PathSource,
        attrs: Arc<PathAttributes>,
        /// Next hops of the best path and of every ECMP-equal path (at most `max_paths`).
        next_hops: Vec<NextHop>,
        reason: BestPathReason,
    },
    /// No path left.
    Gone { prefix: Prefix },
}
