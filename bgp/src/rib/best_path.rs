//! BGP decision process (RFC 4271 9.1.2 + common practice) and ECMP selection. Each tie-break
//! is one small elimination step over the candidate paths; the step that leaves a single
//! candidate is the recorded `BestPathReason`.

use std::cmp::Reverse;
use std::net::{IpAddr, Ipv4Addr};

use super::loc_rib::{BestKey, Destination, Path, PeerSlot, LOCAL};
use super::{BestPathReason, LocRibChange, PathSource};
use crate::types::{Asn, NextHop, Origin, Prefix};

/// Default LOCAL_PREF when the attribute is absent.
pub(super) const DEFAULT_LOCAL_PREF: u32 = 100;

/// What the decision process needs besides the paths.
pub(super) struct Env<'a> {
    pub(super) peers: &'a [Option<PeerSlot>],
    pub(super) router_id: Ipv4Addr,
    pub(super) max_paths: usize,
}

/// The comparison keys of one accepted path.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cand {
    peer: u32,
    local: bool,
    local_pref: u32,
    as_len: usize,
    origin: Origin,
    med: u32,
    neighbor_as: Option<Asn>,
    ebgp: bool,
    /// ORIGINATOR_ID when present, else the peer's router id (RFC 4456 9).
    router_id: Ipv4Addr,
    cluster_len: usize,
    /// Neighbor address (`None` for local paths, which never reach this step).
    address: Option<IpAddr>,
    next_hop: Option<NextHop>,
    /// Scratch flag of the MED step.
    dominated: bool,
}

impl Cand {
    fn of(path: &Path, env: &Env<'_>) -> Option<Cand> {
        if !path.accepted {
            return None;
        }
        let a = &path.attrs;
        let (local, ebgp, peer_rid, address) = if path.peer == LOCAL {
            (true, false, env.router_id, None)
        } else {
            let slot = env.peers.get(path.peer as usize)?.as_ref()?;
            (
                false,
                slot.ebgp,
                slot.info.router_id,
                Some(slot.info.address),
            )
        };
        Some(Cand {
            peer: path.peer,
            local,
            local_pref: a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF),
            as_len: a.as_path.length(),
            origin: a.origin,
            med: a.med.unwrap_or(0),
            neighbor_as: a.as_path.first_asn(),
            ebgp,
            router_id: a.originator_id.unwrap_or(peer_rid),
            cluster_len: a.cluster_list.len(),
            address,
            next_hop: a.next_hop,
            dominated: false,
        })
    }
}

/// Keep the candidates with the smallest `key`.
fn keep_min<K: Ord>(c: &mut Vec<Cand>, key: impl Fn(&Cand) -> K) {
    if let Some(min) = c.iter().map(&key).min() {
        c.retain(|x| key(x) == min);
    }
}

/// Locally originated paths win.
fn locally_originated(c: &mut Vec<Cand>) -> BestPathReason {
    if c.iter().any(|x| x.local) {
        c.retain(|x| x.local);
    }
    BestPathReason::LocallyOriginated
}

/// Highest LOCAL_PREF (absent = 100).
fn local_pref(c: &mut Vec<Cand>) -> BestPathReason {
    keep_min(c, |x| Reverse(x.local_pref));
    BestPathReason::LocalPref
}

/// Shortest AS_PATH.
fn as_path_length(c: &mut Vec<Cand>) -> BestPathReason {
    keep_min(c, |x| x.as_len);
    BestPathReason::AsPathLength
}

/// Lowest ORIGIN (IGP < EGP < INCOMPLETE).
fn origin(c: &mut Vec<Cand>) -> BestPathReason {
    keep_min(c, |x| x.origin);
    BestPathReason::Origin
}

/// Lowest MED, compared only among paths from the same neighbor AS (absent = 0): a path is
/// dropped when another path with the same neighbor AS has a lower MED.
fn med(c: &mut Vec<Cand>) -> BestPathReason {
    for i in 0..c.len() {
        let Some(&x) = c.get(i) else { break };
        let dominated = c
            .iter()
            .any(|y| y.neighbor_as == x.neighbor_as && y.med < x.med);
        if let Some(x) = c.get_mut(i) {
            x.dominated = dominated;
        }
    }
    c.retain(|x| !x.dominated);
    BestPathReason::Med
}

/// eBGP-learned paths over iBGP-learned ones.
fn ebgp_over_ibgp(c: &mut Vec<Cand>) -> BestPathReason {
    if c.iter().any(|x| x.ebgp) {
        c.retain(|x| x.ebgp);
    }
    BestPathReason::EbgpOverIbgp
}

/// Lowest router id (ORIGINATOR_ID when present).
fn router_id(c: &mut Vec<Cand>) -> BestPathReason {
    keep_min(c, |x| x.router_id);
    BestPathReason::RouterId
}

/// Shortest CLUSTER_LIST.
fn cluster_list_length(c: &mut Vec<Cand>) -> BestPathReason {
    keep_min(c, |x| x.cluster_len);
    BestPathReason::ClusterListLength
}

/// Lowest neighbor address.
fn neighbor_address(c: &mut Vec<Cand>) -> BestPathReason {
    keep_min(c, |x| x.address);
    BestPathReason::NeighborAddress
}

type Step = fn(&mut Vec<Cand>) -> BestPathReason;

/// The decision process in order. Paths still present after `ebgp_over_ibgp` (index
/// `MULTIPATH_POOL_AFTER`) are the ECMP pool.
const STEPS: [Step; 9] = [
    locally_originated,
    local_pref,
    as_path_length,
    origin,
    med,
    ebgp_over_ibgp,
    router_id,
    cluster_list_length,
    neighbor_address,
];
const MULTIPATH_POOL_AFTER: usize = 5;

/// Reusable buffers of the decision process (no allocation per prefix in steady state).
#[derive(Debug, Default)]
pub(super) struct Scratch {
    cands: Vec<Cand>,
    pool: Vec<Cand>,
    /// Selected (peer, next hop): the best path first, then ECMP companions.
    members: Vec<(u32, Option<NextHop>)>,
}

/// Run the decision process over `s.cands`; fills `s.members` and returns the reason, or
/// `None` when there is no candidate.
fn select(s: &mut Scratch, max_paths: usize) -> Option<BestPathReason> {
    let Scratch {
        cands: c,
        pool,
        members,
    } = s;
    members.clear();
    pool.clear();
    if c.len() <= 1 {
        let only = c.first()?;
        members.push((only.peer, only.next_hop));
        return Some(BestPathReason::OnlyPath);
    }
    let mut reason = BestPathReason::NeighborAddress;
    for (i, step) in STEPS.iter().enumerate() {
        let r = step(c);
        if i == MULTIPATH_POOL_AFTER && c.len() > 1 && max_paths > 1 {
            pool.extend_from_slice(c);
        }
        if c.len() <= 1 {
            reason = r;
            break;
        }
    }
    let best = *c.first()?;
    members.push((best.peer, best.next_hop));
    if pool.len() > 1 {
        // ECMP: equal through the MED step (same MED) and of the same type (the pool is
        // all-eBGP or all-iBGP); for eBGP also the same neighbor AS.
        pool.retain(|x| {
            x.peer != best.peer
                && x.med == best.med
                && (!best.ebgp || x.neighbor_as == best.neighbor_as)
        });
        pool.sort_unstable_by_key(|x| (x.router_id, x.cluster_len, x.address));
        for x in pool.iter() {
            if members.len() >= max_paths {
                break;
            }
            if x.next_hop.is_none() || members.iter().any(|m| m.1 == x.next_hop) {
                continue;
            }
            members.push((x.peer, x.next_hop));
        }
    }
    Some(reason)
}

/// Recompute the best path of `dest` and report a `LocRibChange` if what consumers see (best
/// source, its attribute set, the ECMP next-hop set) differs from `before`.
pub(super) fn reselect(
    dest: &mut Destination,
    prefix: Prefix,
    before: Option<BestKey>,
    env: &Env<'_>,
    scratch: &mut Scratch,
    changes: &mut Vec<LocRibChange>,
) {
    scratch.cands.clear();
    scratch
        .cands
        .extend(dest.paths.iter().filter_map(|p| Cand::of(p, env)));
    match select(scratch, env.max_paths) {
        None => {
            dest.n_best = 0;
            dest.reason = BestPathReason::OnlyPath;
        }
        Some(reason) => {
            // Move the members to the front, in order.
            for (k, (peer, _)) in scratch.members.iter().enumerate() {
                if let Some(pos) = dest.paths.iter().position(|p| p.peer == *peer) {
                    if pos >= k {
                        dest.paths.swap(k, pos);
                    }
                }
            }
            dest.n_best = u16::try_from(scratch.members.len()).unwrap_or(u16::MAX);
            dest.reason = reason;
        }
    }
    let after = dest.key();
    if after == before {
        return;
    }
    match dest.best() {
        None => changes.push(LocRibChange::Gone { prefix }),
        Some(best) => {
            let source = if best.peer == LOCAL {
                PathSource::Local
            } else {
                match env.peers.get(best.peer as usize).and_then(|s| s.as_ref()) {
                    Some(slot) => PathSource::Peer(slot.info.address),
                    None => return,
                }
            };
            changes.push(LocRibChange::Best {
                prefix,
                source,
                attrs: best.attrs.clone(),
                next_hops: dest.next_hops(),
                reason: dest.reason,
            });
        }
    }
}
