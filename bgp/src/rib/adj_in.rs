//! Adj-RIB-In side of the `Rib`: applying a received UPDATE and the import rules (loop
//! detection, LOCAL_PREF handling, RFC 7606 treat-as-withdraw).

use std::net::IpAddr;
use std::sync::Arc;

use super::best_path::{self, Env};
use super::loc_rib::{LoopRejection, Rib, UpdateOutcome};
use super::{LocRibChange, PeerInfo, RouteFilter};
use crate::types::{Family, PathAttributes, Prefix, Update};

/// Which loop check of the import rules rejected a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// eBGP: our ASN is in the AS_PATH.
    AsPath,
    /// iBGP: ORIGINATOR_ID is our router id.
    OriginatorId,
    /// iBGP: our cluster id is in the CLUSTER_LIST.
    ClusterList,
}

impl Reject {
    pub fn describe(self) -> &'static str {
        match self {
            Reject::AsPath => "own ASN in AS_PATH",
            Reject::OriginatorId => "ORIGINATOR_ID is our router id",
            Reject::ClusterList => "our cluster id in CLUSTER_LIST",
        }
    }
}

/// What the loop checks of the import rules compare against.
#[derive(Debug, Clone, Copy)]
struct LoopCheck {
    local_asn: crate::types::Asn,
    router_id: std::net::Ipv4Addr,
    cluster_id: std::net::Ipv4Addr,
}

impl LoopCheck {
    fn check(&self, attrs: &PathAttributes, ebgp: bool) -> Option<Reject> {
        if ebgp {
            if attrs.as_path.contains(self.local_asn) {
                return Some(Reject::AsPath);
            }
        } else {
            if attrs.originator_id == Some(self.router_id) {
                return Some(Reject::OriginatorId);
            }
            if attrs.cluster_list.contains(&self.cluster_id) {
                return Some(Reject::ClusterList);
            }
        }
        None
    }
}

impl Rib {
    fn loop_check(&self) -> LoopCheck {
        LoopCheck {
            local_asn: self.local_asn,
            router_id: self.router_id,
            cluster_id: self.cluster_id(),
        }
    }

    /// Import rules, evaluated once per UPDATE (they do not depend on the prefix).
    pub(super) fn import_check(&self, attrs: &PathAttributes, ebgp: bool) -> Option<Reject> {
        self.loop_check().check(attrs, ebgp)
    }

    /// Replace the stored `PeerInfo` of an established peer (changed import/export filter or
    /// route-reflector-client role; the session itself is unchanged). When the import filter
    /// changed, the import rules are re-run over every path already received from the peer:
    /// the Adj-RIB-In keeps rejected paths, so no ROUTE-REFRESH is needed. Returns the
    /// Loc-RIB changes; nothing for a peer that is not up.
    pub fn update_peer(&mut self, info: PeerInfo) -> Vec<LocRibChange> {
        let mut changes = Vec::new();
        let Some(&pid) = self.peer_index.get(&info.address) else {
            return changes;
        };
        let rules = self.loop_check();
        let Some(Some(slot)) = self.peers.get_mut(pid as usize) else {
            return changes;
        };
        let import_changed = slot.info.import != info.import;
        slot.info = info;
        if import_changed {
            self.reimport(pid, rules, &mut changes);
        }
        changes
    }

    /// Set the route-reflector cluster id (`None` = the router id) while running: the loop
    /// check against CLUSTER_LIST changes, so every peer's received paths are re-evaluated.
    /// Returns the Loc-RIB changes; the caller re-runs export (reflected routes carry the id).
    pub fn set_cluster_id(&mut self, cluster_id: Option<std::net::Ipv4Addr>) -> Vec<LocRibChange> {
        let mut changes = Vec::new();
        if self.cluster_id == cluster_id {
            return changes;
        }
        self.cluster_id = cluster_id;
        let rules = self.loop_check();
        let pids: Vec<u32> = self.peer_index.values().copied().collect();
        for pid in pids {
            self.reimport(pid, rules, &mut changes);
        }
        changes
    }

    /// Re-run the import rules over every path received from peer `pid`.
    fn reimport(&mut self, pid: u32, rules: LoopCheck, changes: &mut Vec<LocRibChange>) {
        let Some(Some(slot)) = self.peers.get(pid as usize) else {
            return;
        };
        let import_all = slot.info.import == RouteFilter::All;
        let ebgp = slot.ebgp;
        let env = Env {
            peers: &self.peers,
            router_id: self.router_id,
            max_paths: self.max_paths,
        };
        let scratch = &mut self.scratch;
        let mut accepted = 0usize;
        for (prefix, dest) in self.dests.iter_mut() {
            let Some(pos) = dest.paths.iter().position(|p| p.peer == pid) else {
                continue;
            };
            let before = dest.key();
            let Some(path) = dest.paths.get_mut(pos) else {
                continue;
            };
            let now = import_all && rules.check(&path.attrs, ebgp).is_none();
            if now {
                accepted += 1;
            }
            if now != path.accepted {
                path.accepted = now;
                best_path::reselect(dest, prefix, before, &env, scratch, changes);
            }
        }
        if let Some(Some(slot)) = self.peers.get_mut(pid as usize) {
            slot.accepted = accepted;
        }
    }

    /// Apply one UPDATE received from the established peer `from`.
    ///
    /// Import rules: eBGP paths whose AS_PATH holds our ASN, and iBGP paths whose
    /// ORIGINATOR_ID is our router id or whose CLUSTER_LIST holds our cluster id, are kept in
    /// the Adj-RIB-In but not accepted. LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST received
    /// over eBGP are removed (RFC 4271 5.1.5, RFC 7606 7.9/7.10); missing LOCAL_PREF counts as 100. An UPDATE with a TreatAsWithdraw error (or
    /// reach NLRI without attributes) withdraws every reach prefix. End-of-RIB changes
    /// nothing. UPDATEs from unknown peers are ignored (`unknown_peer`).
    pub fn apply_update(&mut self, from: IpAddr, update: &Update) -> UpdateOutcome {
        let mut out = UpdateOutcome::default();
        let Some(&pid) = self.peer_index.get(&from) else {
            out.unknown_peer = true;
            return out;
        };
        let Some(ebgp) = self.slot(from).map(|s| s.ebgp) else {
            out.unknown_peer = true;
            return out;
        };
        if let Some(family) = update.end_of_rib() {
            out.end_of_rib = Some(family);
            return out;
        }
        let mut changes = Vec::new();
        for unreach in &update.unreach {
            for prefix in &unreach.prefixes {
                out.withdrawn += 1;
                self.withdraw(pid, prefix.trunc(), &mut changes);
            }
        }
        match update.attrs.as_ref() {
            Some(attrs) if !update.treat_as_withdraw() => {
                let import_all = self
                    .peer(from)
                    .is_some_and(|p| p.import == super::RouteFilter::All);
                let reject = self.import_check(attrs, ebgp);
                let accepted = import_all && reject.is_none();
                let mut looped: Option<(usize, Prefix)> = None;
                for reach in &update.reach {
                    let mut a = attrs.clone();
                    a.next_hop = Some(reach.next_hop);
                    if ebgp {
                        // RFC 4271 5.1.5; RFC 7606 7.9/7.10: iBGP-only attributes from an
                        // external neighbor are discarded.
                        a.local_pref = None;
                        a.originator_id = None;
                        a.cluster_list.clear();
                    }
                    let arc = self.interner.intern(a);
                    for prefix in &reach.prefixes {
                        if Family::of_prefix(prefix) != reach.family {
                            out.invalid += 1;
                            continue;
                        }
                        out.received += 1;
                        if accepted {
                            out.accepted += 1;
                        } else {
                            out.rejected += 1;
                        }
                        if reject.is_some() {
                            let l = looped.get_or_insert((0, prefix.trunc()));
                            l.0 += 1;
                        }
                        self.announce(pid, prefix.trunc(), &arc, accepted, &mut changes);
                    }
                    self.interner.release(arc);
                }
                if let (Some(reason), Some((count, example))) = (reject, looped) {
                    out.looped = Some(LoopRejection {
                        reason,
                        prefixes: count,
                        example,
                    });
                }
            }
            _ => {
                for reach in &update.reach {
                    for prefix in &reach.prefixes {
                        out.withdrawn += 1;
                        self.withdraw(pid, prefix.trunc(), &mut changes);
                    }
                }
            }
        }
        out.changes = changes;
        out
    }

    fn announce(
        &mut self,
        pid: u32,
        prefix: Prefix,
        attrs: &Arc<PathAttributes>,
        accepted: bool,
        changes: &mut Vec<LocRibChange>,
    ) {
        let previous = self.upsert_path(pid, prefix, Arc::clone(attrs), accepted, changes);
        if let Some(Some(slot)) = self.peers.get_mut(pid as usize) {
            match previous {
                None => {
                    slot.received += 1;
                    if accepted {
                        slot.accepted += 1;
                    }
                }
                Some(was) if was != accepted => {
                    if accepted {
                        slot.accepted += 1;
                    } else {
                        slot.accepted = slot.accepted.saturating_sub(1);
                    }
                }
                Some(_) => {}
            }
        }
    }

    fn withdraw(&mut self, pid: u32, prefix: Prefix, changes: &mut Vec<LocRibChange>) {
        if let Some(was_accepted) = self.remove_path(pid, prefix, changes) {
            if let Some(Some(slot)) = self.peers.get_mut(pid as usize) {
                slot.received = slot.received.saturating_sub(1);
                if was_accepted {
                    slot.accepted = slot.accepted.saturating_sub(1);
                }
            }
        }
    }
}
