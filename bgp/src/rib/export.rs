//! Export rules: what a peer's Adj-RIB-Out should hold for the current best path of a prefix
//! (split horizon, iBGP/route-reflection rules, eBGP AS prepend + next-hop-self, attribute
//! rewriting), with a cache so prefixes sharing an attribute set share the exported `Arc`.
//!
//! MED choice: MED is sent to eBGP peers only for locally originated routes; a MED learned
//! from a neighbor AS is not passed on to another AS (common practice, RFC 4271 5.1.4).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, MutexGuard, PoisonError, Weak};

use super::best_path::DEFAULT_LOCAL_PREF;
use super::loc_rib::{Destination, Path, Rib, LOCAL};
use super::{PeerInfo, RouteFilter};
use crate::types::{Family, NextHop, PathAttributes, Prefix, RawAttribute};

const MIN_SWEEP: usize = 1024;

/// Everything besides the source attributes that determines the exported attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ExportCtx {
    /// Next hop to set (next-hop-self); `None` keeps the path's next hop.
    next_hop: Option<NextHop>,
    to_ebgp: bool,
    /// Locally originated path.
    local: bool,
    /// Route reflection: (ORIGINATOR_ID to set when absent, cluster id to prepend).
    reflect: Option<(Ipv4Addr, Ipv4Addr)>,
}

/// Exported attribute sets keyed by (source attribute set identity, context). The `Weak`
/// keeps the source allocation alive so its address cannot be reused while the entry exists.
#[derive(Debug)]
pub(super) struct ExportCache {
    map: HashMap<(usize, ExportCtx), (Weak<PathAttributes>, Arc<PathAttributes>)>,
    sweep_at: usize,
}

impl Default for ExportCache {
    fn default() -> Self {
        ExportCache {
            map: HashMap::new(),
            sweep_at: MIN_SWEEP,
        }
    }
}

impl ExportCache {
    fn get_or_make(
        &mut self,
        src: &Arc<PathAttributes>,
        ctx: ExportCtx,
        make: impl FnOnce(&PathAttributes) -> PathAttributes,
    ) -> Arc<PathAttributes> {
        let key = (Arc::as_ptr(src) as usize, ctx);
        if let Some((weak, out)) = self.map.get(&key) {
            if weak.strong_count() > 0 {
                return Arc::clone(out);
            }
        }
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, (weak, _)| weak.strong_count() > 0);
            self.sweep_at = (self.map.len() * 2).max(MIN_SWEEP);
        }
        let out = Arc::new(make(src));
        self.map
            .insert(key, (Arc::downgrade(src), Arc::clone(&out)));
        out
    }
}

/// Our address toward `to` usable as next hop for `family`.
fn local_next_hop(to: &PeerInfo, family: Family) -> Option<IpAddr> {
    let v6 = || {
        if to.local_address.is_ipv6() {
            Some(to.local_address)
        } else {
            to.local_address_v6.filter(IpAddr::is_ipv6)
        }
    };
    match family {
        Family::Ipv4Unicast if to.local_address.is_ipv4() => Some(to.local_address),
        // RFC 8950: IPv4 NLRI with an IPv6 next hop.
        Family::Ipv4Unicast if to.extended_next_hop => v6(),
        Family::Ipv4Unicast => None,
        Family::Ipv6Unicast => v6(),
    }
}

impl Rib {
    fn lock_cache(&self) -> MutexGuard<'_, ExportCache> {
        self.export_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// What `to` should be sent for the current best path of `prefix` (`None` = withdraw /
    /// nothing): never back to the peer it came from; iBGP-learned paths go to iBGP peers only
    /// by route reflection (from a client to everyone, from a non-client to clients; sets
    /// ORIGINATOR_ID and prepends the cluster id); to eBGP peers the ASN is prepended, next
    /// hop is ours, LOCAL_PREF/ORIGINATOR_ID/CLUSTER_LIST are removed and MED is kept only
    /// for local routes; to iBGP peers LOCAL_PREF is set (default 100) and the next hop kept,
    /// except for local routes (next-hop-self). Unknown optional transitive attributes get
    /// the Partial bit (learned routes), other unknown attributes are dropped. Only families
    /// in `to.families` are exported.
    pub fn export_for(&self, to: &PeerInfo, prefix: &Prefix) -> Option<Arc<PathAttributes>> {
        if to.export == RouteFilter::None {
            return None;
        }
        let dest = self.dests.get(prefix)?;
        let mut cache = self.lock_cache();
        self.export_dest(&mut cache, to, prefix, dest)
    }

    /// The full table for `to` (initial dump after Established), in no particular order.
    pub fn export_all(&self, to: &PeerInfo) -> Vec<(Prefix, Arc<PathAttributes>)> {
        if to.families.is_empty() || to.export == RouteFilter::None {
            return Vec::new();
        }
        let mut cache = self.lock_cache();
        self.dests
            .iter()
            .filter_map(|(prefix, dest)| {
                Some((prefix, self.export_dest(&mut cache, to, &prefix, dest)?))
            })
            .collect()
    }

    fn export_dest(
        &self,
        cache: &mut ExportCache,
        to: &PeerInfo,
        prefix: &Prefix,
        dest: &Destination,
    ) -> Option<Arc<PathAttributes>> {
        let family = Family::of_prefix(prefix);
        if !to.families.contains(&family) {
            return None;
        }
        let best = dest.best()?;
        let ctx = self.export_ctx(to, family, best)?;
        Some(cache.get_or_make(&best.attrs, ctx, |a| self.rewrite(a, &ctx)))
    }

    fn export_ctx(&self, to: &PeerInfo, family: Family, best: &Path) -> Option<ExportCtx> {
        let to_ebgp = to.asn != self.local_asn;
        let local = best.peer == LOCAL;
        if !local && to.export == RouteFilter::Originated {
            return None;
        }
        let mut reflect = None;
        if !local {
            let src = self.peers.get(best.peer as usize)?.as_ref()?;
            if src.info.address == to.address {
                return None;
            }
            if !src.ebgp && !to_ebgp {
                if !(src.info.route_reflector_client || to.route_reflector_client) {
                    return None;
                }
                let originator = best.attrs.originator_id.unwrap_or(src.info.router_id);
                if originator == to.router_id {
                    // The target originated it; it would drop it anyway (RFC 4456 8).
                    return None;
                }
                reflect = Some((src.info.router_id, self.cluster_id()));
            }
        }
        let next_hop = if to_ebgp || local {
            Some(NextHop::new(local_next_hop(to, family)?))
        } else {
            None
        };
        Some(ExportCtx {
            next_hop,
            to_ebgp,
            local,
            reflect,
        })
    }

    fn rewrite(&self, src: &PathAttributes, ctx: &ExportCtx) -> PathAttributes {
        let mut a = src.clone();
        if let Some(nh) = ctx.next_hop {
            a.next_hop = Some(nh);
        }
        if ctx.to_ebgp {
            a.as_path.prepend(self.local_asn, 1);
            a.local_pref = None;
            a.originator_id = None;
            a.cluster_list.clear();
            if !ctx.local {
                a.med = None;
            }
        } else {
            a.local_pref = Some(a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
            if let Some((originator, cluster_id)) = ctx.reflect {
                a.originator_id.get_or_insert(originator);
                a.cluster_list.insert(0, cluster_id);
            }
        }
        a.unknown.retain(RawAttribute::is_optional_transitive);
        if !ctx.local {
            for u in &mut a.unknown {
                u.flags |= RawAttribute::FLAG_PARTIAL;
            }
        }
        a
    }
}
