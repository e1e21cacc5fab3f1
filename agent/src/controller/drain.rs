//! Make-before-break for topology switches (pure): a node-to-node session that the new
//! topology drops (full mesh -> route reflectors) is kept, with its old settings, until every
//! prefix it brought has another path (the reflector has reflected it), its session is down,
//! or `DRAIN_TIMEOUT` passes. Only then is it removed, so no route is ever missing in between.
//! The other direction (the last reflector annotation removed: reflectors -> full mesh) is
//! covered on the reflector's side: it keeps reflecting for `DEMOTE_HOLD` (10 s) while its former
//! clients bring up their new mesh sessions (`hold_reflector_role`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bgp::config::NeighborConfig;

/// Longest time a dropped session is kept waiting for alternative paths.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a node that stops being a reflector keeps reflecting to its former clients. Longer
/// than a connect retry (5 s): when both former clients add each other at once, one may reach
/// the other before it knows the new neighbor, be refused, and retry only after the backoff.
pub const DEMOTE_HOLD: Duration = Duration::from_secs(10);

/// `next` with `prev`'s reflector role kept: same cluster id, and every neighbor that was a
/// route-reflector client in `prev` (and is still a neighbor) still flagged as one.
pub fn hold_reflector_role(
    prev: &crate::desired::DesiredState,
    mut next: crate::desired::DesiredState,
) -> crate::desired::DesiredState {
    next.role = prev.role;
    next.cluster_id = prev.cluster_id;
    for n in &mut next.neighbors {
        if prev
            .neighbors
            .iter()
            .any(|p| p.address == n.address && p.route_reflector_client)
        {
            n.route_reflector_client = true;
        }
    }
    next
}

#[derive(Debug, Default)]
pub struct Drain {
    entries: BTreeMap<IpAddr, (NeighborConfig, Instant)>,
}

impl Drain {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Addresses being drained.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.entries.keys().copied().collect()
    }

    /// Takes note of a neighbor-set change: sessions in `prev` but not in `next` whose address
    /// still belongs to a cluster node (`node_addresses`) start draining; a drained address
    /// that is wanted again stops draining. Removed external peers and sessions to nodes that
    /// left the cluster go at once.
    pub fn on_change(
        &mut self,
        prev: &[NeighborConfig],
        next: &[NeighborConfig],
        node_addresses: &BTreeSet<IpAddr>,
        now: Instant,
    ) {
        let wanted: BTreeSet<IpAddr> = next.iter().map(|n| n.address).collect();
        self.entries.retain(|addr, _| !wanted.contains(addr));
        for old in prev {
            if !wanted.contains(&old.address) && node_addresses.contains(&old.address) {
                self.entries
                    .entry(old.address)
                    .or_insert_with(|| (old.clone(), now + DRAIN_TIMEOUT));
            }
        }
    }

    /// The neighbor set to hand the speaker: `next` plus the sessions still draining.
    pub fn neighbors(&self, next: &[NeighborConfig]) -> Vec<NeighborConfig> {
        let mut out: Vec<NeighborConfig> = next.to_vec();
        out.extend(self.entries.values().map(|(cfg, _)| cfg.clone()));
        out.sort_by_key(|n| n.address);
        out
    }

    /// Ends the drains that are done, from the speaker's report of (address, established,
    /// prefixes only it provides). Returns the addresses released.
    pub fn settle(&mut self, report: &[(IpAddr, bool, usize)], now: Instant) -> Vec<IpAddr> {
        let mut done = Vec::new();
        for (addr, up, sole) in report {
            if let Some((_, deadline)) = self.entries.get(addr) {
                if !up || *sole == 0 || now >= *deadline {
                    done.push(*addr);
                }
            }
        }
        for (addr, (_, deadline)) in &self.entries {
            if now >= *deadline && !done.contains(addr) {
                done.push(*addr);
            }
        }
        for addr in &done {
            self.entries.remove(addr);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(addr: &str) -> NeighborConfig {
        NeighborConfig::new(addr.parse().expect("ip"), 64512)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn demoted_reflector_keeps_its_clients_for_a_while() {
        use crate::desired::{DesiredState, Role};
        let mut client = n("10.0.0.1");
        client.route_reflector_client = true;
        let prev = DesiredState {
            router_id: "10.0.0.3".parse().expect("ip"),
            asn: 64512,
            role: Role::Reflector,
            cluster_id: Some("244.0.0.1".parse().expect("id")),
            neighbors: vec![client.clone()],
            originate: Default::default(),
            blackholes: Default::default(),
            problems: vec![],
        };
        let next = DesiredState {
            role: Role::FullMesh,
            cluster_id: None,
            neighbors: vec![n("10.0.0.1"), n("10.0.0.2")],
            ..prev.clone()
        };
        let held = hold_reflector_role(&prev, next);
        assert_eq!(held.role, Role::Reflector);
        assert_eq!(held.cluster_id, prev.cluster_id);
        assert!(held.neighbors[0].route_reflector_client);
        assert!(
            !held.neighbors[1].route_reflector_client,
            "a new neighbor is no client"
        );
    }

    #[test]
    fn drain_lifecycle() {
        let t0 = Instant::now();
        let nodes: BTreeSet<IpAddr> = [ip("10.0.0.2"), ip("10.0.0.3")].into();
        let mut d = Drain::default();
        // Mesh -> client of 10.0.0.3: the session to 10.0.0.2 drains; the external peer
        // 192.0.2.1, also dropped, goes at once.
        d.on_change(
            &[n("10.0.0.2"), n("10.0.0.3"), n("192.0.2.1")],
            &[n("10.0.0.3")],
            &nodes,
            t0,
        );
        assert_eq!(d.addresses(), vec![ip("10.0.0.2")]);
        let applied: Vec<IpAddr> = d
            .neighbors(&[n("10.0.0.3")])
            .iter()
            .map(|x| x.address)
            .collect();
        assert_eq!(applied, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
        // Still the only path for one prefix: keep.
        assert!(d.settle(&[(ip("10.0.0.2"), true, 1)], t0).is_empty());
        // The reflector delivered the alternatives: release.
        assert_eq!(
            d.settle(&[(ip("10.0.0.2"), true, 0)], t0),
            vec![ip("10.0.0.2")]
        );
        assert!(d.is_empty());

        // Session down or timeout also release; wanted again cancels the drain.
        d.on_change(
            &[n("10.0.0.2"), n("10.0.0.3")],
            &[n("10.0.0.3")],
            &nodes,
            t0,
        );
        assert_eq!(
            d.settle(&[(ip("10.0.0.2"), false, 5)], t0),
            vec![ip("10.0.0.2")]
        );
        d.on_change(
            &[n("10.0.0.2"), n("10.0.0.3")],
            &[n("10.0.0.3")],
            &nodes,
            t0,
        );
        assert_eq!(d.settle(&[], t0 + DRAIN_TIMEOUT), vec![ip("10.0.0.2")]);
        d.on_change(
            &[n("10.0.0.2"), n("10.0.0.3")],
            &[n("10.0.0.3")],
            &nodes,
            t0,
        );
        d.on_change(
            &[n("10.0.0.3")],
            &[n("10.0.0.2"), n("10.0.0.3")],
            &nodes,
            t0,
        );
        assert!(d.is_empty());
    }
}
