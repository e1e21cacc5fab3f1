//! The `Rib`: one destination per prefix holding every peer's path (the Adj-RIB-In, accepted
//! or not) with the best path and its ECMP companions kept at the front (the Loc-RIB), the
//! peer table and the set of locally originated prefixes.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use super::best_path::{self, Env, Scratch};
use super::export::ExportCache;
use super::intern::AttrInterner;
use super::path_list::PathList;
use super::{BestPathReason, LocRibChange, PathSource, PeerInfo};
use crate::prefix_map::PrefixMap;
use crate::types::{Asn, Family, NextHop, PathAttributes, Prefix};

/// Peer index of locally originated paths.
pub(super) const LOCAL: u32 = u32::MAX;

/// One path for one prefix: 16 bytes, the attributes are shared.
#[derive(Debug, Clone)]
pub(super) struct Path {
    pub(super) attrs: Arc<PathAttributes>,
    /// Index into `Rib::peers`, or `LOCAL`.
    pub(super) peer: u32,
    /// Passed the import rules (only accepted paths take part in best-path selection).
    pub(super) accepted: bool,
    /// Kept from a session that ended with graceful restart (RFC 4724): still used, removed
    /// unless the peer announces it again before its End-of-RIB (or a timer) arrives.
    pub(super) stale: bool,
}

/// All paths for one prefix. Invariant: `paths[..n_best]` are the best path followed by its
/// ECMP companions (distinct next hops); `n_best == 0` means no accepted path.
#[derive(Debug)]
pub(super) struct Destination {
    pub(super) paths: PathList,
    pub(super) n_best: u16,
    pub(super) reason: BestPathReason,
}

impl Default for Destination {
    fn default() -> Self {
        Destination {
            paths: PathList::Empty,
            n_best: 0,
            reason: BestPathReason::OnlyPath,
        }
    }
}

impl Destination {
    pub(super) fn best(&self) -> Option<&Path> {
        if self.n_best == 0 {
            None
        } else {
            self.paths.first()
        }
    }

    pub(super) fn next_hops(&self) -> Vec<NextHop> {
        // Sized exactly: this Vec travels with every Loc-RIB change (a collect() from a
        // filter would reserve four slots).
        let best = self.paths.iter().take(usize::from(self.n_best));
        let mut hops =
            Vec::with_capacity(best.clone().filter(|p| p.attrs.next_hop.is_some()).count());
        hops.extend(best.filter_map(|p| p.attrs.next_hop));
        hops
    }

    /// What consumers see of the best path (allocates only with ECMP companions).
    pub(super) fn key(&self) -> Option<BestKey> {
        let best = self.best()?;
        let rest = if self.n_best > 1 {
            self.paths
                .iter()
                .take(usize::from(self.n_best))
                .skip(1)
                .filter_map(|p| p.attrs.next_hop)
                .collect()
        } else {
            Vec::new()
        };
        Some((
            best.peer,
            Arc::as_ptr(&best.attrs) as usize,
            best.attrs.next_hop,
            rest,
        ))
    }
}

/// Identity of what consumers see of a best path: (peer, attribute set identity, best next
/// hop, ECMP companions' next hops).
pub(super) type BestKey = (u32, usize, Option<NextHop>, Vec<NextHop>);

/// A neighbor known to the RIB (session Established).
#[derive(Debug, Clone)]
pub(super) struct PeerSlot {
    pub(super) info: PeerInfo,
    pub(super) ebgp: bool,
    pub(super) received: usize,
    pub(super) accepted: usize,
}

/// The best path of a prefix as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestView<'a> {
    pub source: PathSource,
    pub attrs: &'a Arc<PathAttributes>,
    /// Next hops of the best path and its ECMP companions (deduplicated, at most `max_paths`).
    pub next_hops: Vec<NextHop>,
    pub reason: BestPathReason,
}

/// Result of [`Rib::apply_update`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// Loc-RIB changes caused by this UPDATE.
    pub changes: Vec<LocRibChange>,
    /// Prefixes announced (reach NLRI) and stored in the Adj-RIB-In.
    pub received: usize,
    /// Of those, accepted by the import rules.
    pub accepted: usize,
    /// Of those, rejected by the import rules (loops); kept in the Adj-RIB-In only.
    pub rejected: usize,
    /// Prefixes withdrawn (unreach NLRI, plus reach NLRI of a treat-as-withdraw UPDATE).
    pub withdrawn: usize,
    /// Reach prefixes ignored because they do not belong to the Reach's family.
    pub invalid: usize,
    /// The UPDATE was an End-of-RIB marker for this family.
    pub end_of_rib: Option<Family>,
    /// The sender is not an established peer (peer_up missing): nothing was applied.
    pub unknown_peer: bool,
    /// The UPDATE's paths failed a loop check (kept in the Adj-RIB-In, not used).
    pub looped: Option<LoopRejection>,
}

/// Prefixes of one UPDATE rejected by a loop check of the import rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopRejection {
    pub reason: super::adj_in::Reject,
    pub prefixes: usize,
    /// One of them, for the log.
    pub example: Prefix,
}

/// Adj-RIBs-In + Loc-RIB of the speaker. Owned by the event loop; every method is pure.
#[derive(Debug)]
pub struct Rib {
    pub(super) local_asn: Asn,
    pub(super) router_id: Ipv4Addr,
    pub(super) cluster_id: Option<Ipv4Addr>,
    pub(super) max_paths: usize,
    pub(super) dests: PrefixMap<Destination>,
    pub(super) peers: Vec<Option<PeerSlot>>,
    pub(super) peer_index: HashMap<IpAddr, u32>,
    pub(super) free_slots: Vec<u32>,
    pub(super) originated: HashSet<Prefix>,
    pub(super) interner: AttrInterner,
    pub(super) scratch: Scratch,
    /// Export results per (source attribute set, export context); `export_for` takes `&self`.
    pub(super) export_cache: Mutex<ExportCache>,
}

impl Rib {
    /// `max_paths` is the ECMP width (values below 1 are treated as 1).
    pub fn new(
        local_asn: Asn,
        router_id: Ipv4Addr,
        cluster_id: Option<Ipv4Addr>,
        max_paths: usize,
    ) -> Rib {
        Rib {
            local_asn,
            router_id,
            cluster_id,
            max_paths: max_paths.clamp(1, usize::from(u16::MAX)),
            dests: PrefixMap::new(),
            peers: Vec::new(),
            peer_index: HashMap::new(),
            free_slots: Vec::new(),
            originated: HashSet::new(),
            interner: AttrInterner::default(),
            scratch: Scratch::default(),
            export_cache: Mutex::new(ExportCache::default()),
        }
    }

    pub fn local_asn(&self) -> Asn {
        self.local_asn
    }

    pub fn router_id(&self) -> Ipv4Addr {
        self.router_id
    }

    /// The cluster id used for route reflection (configured one, else the router id).
    pub fn cluster_id(&self) -> Ipv4Addr {
        self.cluster_id.unwrap_or(self.router_id)
    }

    /// A session reached Established. Calling it again for an address that is already up
    /// only refreshes the stored `PeerInfo` (call `peer_down` first after a session reset).
    pub fn peer_up(&mut self, peer: PeerInfo) {
        let ebgp = peer.asn != self.local_asn;
        if let Some(&idx) = self.peer_index.get(&peer.address) {
            if let Some(Some(slot)) = self.peers.get_mut(idx as usize) {
                slot.info = peer;
                slot.ebgp = ebgp;
                return;
            }
        }
        let slot = PeerSlot {
            info: peer,
            ebgp,
            received: 0,
            accepted: 0,
        };
        let address = slot.info.address;
        let idx = match self.free_slots.pop() {
            Some(idx) => {
                if let Some(entry) = self.peers.get_mut(idx as usize) {
                    *entry = Some(slot);
                }
                idx
            }
            None => {
                self.peers.push(Some(slot));
                u32::try_from(self.peers.len() - 1).unwrap_or(LOCAL - 1)
            }
        };
        self.peer_index.insert(address, idx);
    }

    /// The session went down: drop every path learned from it.
    pub fn peer_down(&mut self, address: IpAddr) -> Vec<LocRibChange> {
        let Some(pid) = self.peer_index.remove(&address) else {
            return Vec::new();
        };
        if let Some(entry) = self.peers.get_mut(pid as usize) {
            *entry = None;
        }
        self.free_slots.push(pid);
        self.remove_paths_where(pid, |_, _| true)
    }

    /// The session went down with graceful restart (RFC 4724 4.2, helper): the peer's paths
    /// of `families` stay (in use, marked stale), its paths of other families are removed.
    /// The peer stays known (`peer`, `received`) until `peer_down`; a new `peer_up` for the
    /// same address keeps the stale paths, which the peer's new announcements replace.
    pub fn mark_stale(&mut self, address: IpAddr, families: &[Family]) -> Vec<LocRibChange> {
        let Some(&pid) = self.peer_index.get(&address) else {
            return Vec::new();
        };
        let changes = self.remove_paths_where(pid, |prefix, _| {
            !families.contains(&Family::of_prefix(prefix))
        });
        for (prefix, dest) in self.dests.iter_mut() {
            if !families.contains(&Family::of_prefix(&prefix)) {
                continue;
            }
            if let Some(path) = dest.paths.iter_mut().find(|p| p.peer == pid) {
                path.stale = true;
            }
        }
        changes
    }

    /// Remove the peer's paths still marked stale (of `family`, or of every family): its
    /// End-of-RIB arrived, or the restart / stale-routes timer ran out.
    pub fn flush_stale(&mut self, address: IpAddr, family: Option<Family>) -> Vec<LocRibChange> {
        let Some(&pid) = self.peer_index.get(&address) else {
            return Vec::new();
        };
        self.remove_paths_where(pid, |prefix, path| {
            path.stale
                && match family {
                    Some(f) => f == Family::of_prefix(prefix),
                    None => true,
                }
        })
    }

    /// How many of the peer's paths are stale.
    pub fn stale_paths(&self, address: IpAddr) -> usize {
        let Some(&pid) = self.peer_index.get(&address) else {
            return 0;
        };
        self.dests
            .values()
            .filter(|d| d.paths.iter().any(|p| p.peer == pid && p.stale))
            .count()
    }

    /// Remove peer `pid`'s path from every destination where `remove(prefix, path)` holds,
    /// keeping the peer's counters right; returns the Loc-RIB changes.
    fn remove_paths_where(
        &mut self,
        pid: u32,
        remove: impl Fn(&Prefix, &Path) -> bool,
    ) -> Vec<LocRibChange> {
        let mut changes = Vec::new();
        let env = Env {
            peers: &self.peers,
            router_id: self.router_id,
            max_paths: self.max_paths,
        };
        let interner = &mut self.interner;
        let scratch = &mut self.scratch;
        let (mut received, mut accepted) = (0usize, 0usize);
        self.dests.retain(|prefix, dest| {
            let pos = dest
                .paths
                .iter()
                .position(|p| p.peer == pid && remove(&prefix, p));
            if let Some(pos) = pos {
                let before = dest.key();
                if let Some(path) = dest.paths.remove(pos) {
                    let was_accepted = path.accepted;
                    received += 1;
                    interner.release(path.attrs);
                    if was_accepted {
                        accepted += 1;
                        best_path::reselect(dest, prefix, before, &env, scratch, &mut changes);
                    }
                }
            }
            !dest.paths.is_empty()
        });
        if let Some(Some(slot)) = self.peers.get_mut(pid as usize) {
            slot.received = slot.received.saturating_sub(received);
            slot.accepted = slot.accepted.saturating_sub(accepted);
        }
        changes
    }

    /// Information about an established peer.
    pub fn peer(&self, address: IpAddr) -> Option<&PeerInfo> {
        self.slot(address).map(|s| &s.info)
    }

    pub(super) fn slot(&self, address: IpAddr) -> Option<&PeerSlot> {
        let idx = *self.peer_index.get(&address)?;
        self.peers.get(idx as usize)?.as_ref()
    }

    /// Replace the whole set of locally originated routes (declarative). A prefix listed twice
    /// keeps its last attributes. Returns the Loc-RIB changes.
    pub fn set_originated(&mut self, routes: Vec<(Prefix, PathAttributes)>) -> Vec<LocRibChange> {
        let mut desired: HashMap<Prefix, PathAttributes> = HashMap::with_capacity(routes.len());
        for (prefix, attrs) in routes {
            desired.insert(prefix.trunc(), attrs);
        }
        let mut changes = Vec::new();
        let gone: Vec<Prefix> = self
            .originated
            .iter()
            .filter(|p| !desired.contains_key(p))
            .copied()
            .collect();
        for prefix in gone {
            self.originated.remove(&prefix);
            self.remove_path(LOCAL, prefix, &mut changes);
        }
        for (prefix, attrs) in desired {
            let unchanged = self
                .dests
                .get(&prefix)
                .and_then(|d| d.paths.iter().find(|p| p.peer == LOCAL))
                .is_some_and(|p| *p.attrs == attrs);
            if unchanged {
                continue;
            }
            self.originated.insert(prefix);
            let arc = self.interner.intern(attrs);
            self.upsert_path(LOCAL, prefix, Arc::clone(&arc), true, &mut changes);
            self.interner.release(arc);
        }
        changes
    }

    /// Insert or replace `peer`'s path for `prefix`. Returns the previous accepted state
    /// (`None` when the path is new).
    pub(super) fn upsert_path(
        &mut self,
        peer: u32,
        prefix: Prefix,
        attrs: Arc<PathAttributes>,
        accepted: bool,
        changes: &mut Vec<LocRibChange>,
    ) -> Option<bool> {
        let dest = self.dests.get_or_insert_with(prefix, Destination::default);
        let before = dest.key();
        let previous = match dest.paths.iter_mut().find(|p| p.peer == peer) {
            Some(path) => {
                // Announced again: no longer stale, whatever else changes.
                path.stale = false;
                if Arc::ptr_eq(&path.attrs, &attrs) && path.accepted == accepted {
                    return Some(accepted);
                }
                let was = path.accepted;
                let old = std::mem::replace(&mut path.attrs, attrs);
                path.accepted = accepted;
                self.interner.release(old);
                if !was && !accepted {
                    return Some(false);
                }
                Some(was)
            }
            None => {
                dest.paths.push(Path {
                    attrs,
                    peer,
                    accepted,
                    stale: false,
                });
                if !accepted {
                    return None;
                }
                None
            }
        };
        let env = Env {
            peers: &self.peers,
            router_id: self.router_id,
            max_paths: self.max_paths,
        };
        best_path::reselect(dest, prefix, before, &env, &mut self.scratch, changes);
        previous
    }

    /// Remove `peer`'s path for `prefix`. Returns its accepted state if it existed.
    pub(super) fn remove_path(
        &mut self,
        peer: u32,
        prefix: Prefix,
        changes: &mut Vec<LocRibChange>,
    ) -> Option<bool> {
        let dest = self.dests.get_mut(&prefix)?;
        let pos = dest.paths.iter().position(|p| p.peer == peer)?;
        let before = dest.key();
        let path = dest.paths.remove(pos)?;
        let accepted = path.accepted;
        self.interner.release(path.attrs);
        if accepted {
            let env = Env {
                peers: &self.peers,
                router_id: self.router_id,
                max_paths: self.max_paths,
            };
            best_path::reselect(dest, prefix, before, &env, &mut self.scratch, changes);
        }
        if dest.paths.is_empty() {
            self.dests.remove(&prefix);
        }
        Some(accepted)
    }

    pub(super) fn source_of(&self, peer: u32) -> Option<PathSource> {
        if peer == LOCAL {
            return Some(PathSource::Local);
        }
        let slot = self.peers.get(peer as usize)?.as_ref()?;
        Some(PathSource::Peer(slot.info.address))
    }

    fn view<'a>(&'a self, dest: &'a Destination) -> Option<BestView<'a>> {
        let best = dest.best()?;
        Some(BestView {
            source: self.source_of(best.peer)?,
            attrs: &best.attrs,
            next_hops: dest.next_hops(),
            reason: dest.reason,
        })
    }

    /// The best path for `prefix`, if any path was accepted.
    pub fn best(&self, prefix: &Prefix) -> Option<BestView<'_>> {
        self.view(self.dests.get(prefix)?)
    }

    /// Every prefix with a best path, in no particular order.
    pub fn loc_rib(&self) -> impl Iterator<Item = (Prefix, BestView<'_>)> + '_ {
        self.dests
            .iter()
            .filter_map(|(prefix, dest)| Some((prefix, self.view(dest)?)))
    }

    /// Number of prefixes with a best path.
    pub fn loc_rib_len(&self) -> usize {
        self.dests.values().filter(|d| d.n_best > 0).count()
    }

    /// Prefixes in `peer`'s Adj-RIB-In (before import rules).
    pub fn received(&self, peer: IpAddr) -> usize {
        self.slot(peer).map_or(0, |s| s.received)
    }

    /// Prefixes for which `peer` holds the only accepted path: what would vanish from the
    /// Loc-RIB if the peer went away now (a drained neighbor is safe to remove at 0).
    pub fn sole_paths(&self, peer: IpAddr) -> usize {
        let Some(&pid) = self.peer_index.get(&peer) else {
            return 0;
        };
        self.dests
            .values()
            .filter(|d| {
                let mut accepted = d.paths.iter().filter(|p| p.accepted);
                matches!((accepted.next(), accepted.next()), (Some(p), None) if p.peer == pid)
            })
            .count()
    }

    /// Prefixes from `peer` accepted by the import rules.
    pub fn accepted(&self, peer: IpAddr) -> usize {
        self.slot(peer).map_or(0, |s| s.accepted)
    }

    /// Distinct attribute sets currently in use by paths (for metrics and tests).
    pub fn interned_attrs(&self) -> usize {
        self.interner.live()
    }
}
