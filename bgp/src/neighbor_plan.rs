//! The pure diff between the running neighbor table and a newly desired full set: which
//! neighbors to start, stop, update in place (no session reset) or restart.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::NeighborConfig;

/// A neighbor whose settings changed only in ways that do not need a new session
/// (`route_reflector_client`, `import`, `export`, `bfd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoftChange {
    pub cfg: NeighborConfig,
    pub route_reflector_client: bool,
    pub import: bool,
    pub export: bool,
}

/// What to do to get from the old neighbor set to the new one. Every list is sorted by
/// address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NeighborPlan {
    /// New addresses: start a neighbor task.
    pub add: Vec<NeighborConfig>,
    /// Addresses no longer configured: Cease / Peer De-configured, forget.
    pub remove: Vec<IpAddr>,
    /// Only `route_reflector_client`, `import` and/or `export` changed: keep the session.
    pub update: Vec<SoftChange>,
    /// Anything else changed: Cease / Other Configuration Change, restart with this config.
    pub reset: Vec<NeighborConfig>,
    /// Same config: nothing to do.
    pub unchanged: Vec<IpAddr>,
}

impl NeighborPlan {
    /// Nothing to add, remove, update or reset.
    pub fn is_noop(&self) -> bool {
        self.add.is_empty()
            && self.remove.is_empty()
            && self.update.is_empty()
            && self.reset.is_empty()
    }
}

/// Compare `old` (running) with `new` (desired). An address listed twice in `new` keeps its
/// last entry.
pub fn plan_neighbor_changes<'a>(
    old: impl IntoIterator<Item = &'a NeighborConfig>,
    new: Vec<NeighborConfig>,
) -> NeighborPlan {
    let old: BTreeMap<IpAddr, &NeighborConfig> = old.into_iter().map(|n| (n.address, n)).collect();
    let new: BTreeMap<IpAddr, NeighborConfig> = new.into_iter().map(|n| (n.address, n)).collect();
    let mut plan = NeighborPlan {
        remove: old
            .keys()
            .filter(|a| !new.contains_key(a))
            .copied()
            .collect(),
        ..NeighborPlan::default()
    };
    for (addr, cfg) in new {
        let Some(before) = old.get(&addr) else {
            plan.add.push(cfg);
            continue;
        };
        if **before == cfg {
            plan.unchanged.push(addr);
            continue;
        }
        // Equal once the in-place settings are taken over: only those differ.
        let mut hard = (*before).clone();
        hard.route_reflector_client = cfg.route_reflector_client;
        hard.import = cfg.import;
        hard.export = cfg.export;
        // BFD is a separate session: its timers change by a poll sequence, no BGP reset.
        hard.bfd = cfg.bfd;
        if hard == cfg {
            plan.update.push(SoftChange {
                route_reflector_client: before.route_reflector_client != cfg.route_reflector_client,
                import: before.import != cfg.import,
                export: before.export != cfg.export,
                cfg,
            });
        } else {
            plan.reset.push(cfg);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rib::RouteFilter;
    use crate::types::Family;

    fn n(addr: &str, asn: u32) -> NeighborConfig {
        let address: IpAddr = addr.parse().expect("test address");
        NeighborConfig::new(address, asn)
    }

    fn ip(a: &str) -> IpAddr {
        a.parse().expect("test address")
    }

    #[test]
    fn identical_sets_are_a_noop() {
        let old = vec![n("10.0.0.1", 65001), n("10.0.0.2", 65002)];
        // Order does not matter.
        let plan = plan_neighbor_changes(&old, vec![old[1].clone(), old[0].clone()]);
        assert!(plan.is_noop(), "{plan:?}");
        assert_eq!(plan.unchanged, vec![ip("10.0.0.1"), ip("10.0.0.2")]);
    }

    #[test]
    fn new_and_removed_addresses() {
        let old = vec![n("10.0.0.1", 65001), n("10.0.0.2", 65002)];
        let plan = plan_neighbor_changes(&old, vec![n("10.0.0.2", 65002), n("10.0.0.3", 65003)]);
        assert_eq!(plan.add, vec![n("10.0.0.3", 65003)]);
        assert_eq!(plan.remove, vec![ip("10.0.0.1")]);
        assert_eq!(plan.unchanged, vec![ip("10.0.0.2")]);
        assert!(plan.update.is_empty() && plan.reset.is_empty());

        let plan = plan_neighbor_changes(&old, Vec::new());
        assert_eq!(plan.remove, vec![ip("10.0.0.1"), ip("10.0.0.2")]);
        let plan = plan_neighbor_changes(&[], old.clone());
        assert_eq!(plan.add, old);
    }

    #[test]
    fn policy_and_reflector_changes_are_soft() {
        let old = vec![n("10.0.0.1", 65001)];
        let mut rr = old[0].clone();
        rr.route_reflector_client = true;
        let plan = plan_neighbor_changes(&old, vec![rr.clone()]);
        assert_eq!(
            plan.update,
            vec![SoftChange {
                cfg: rr,
                route_reflector_client: true,
                import: false,
                export: false,
            }]
        );
        assert!(plan.reset.is_empty() && plan.add.is_empty() && plan.remove.is_empty());

        let mut both = old[0].clone();
        both.import = RouteFilter::None;
        both.export = RouteFilter::None;
        let plan = plan_neighbor_changes(&old, vec![both.clone()]);
        assert_eq!(
            plan.update,
            vec![SoftChange {
                cfg: both,
                route_reflector_client: false,
                import: true,
                export: true,
            }]
        );
    }

    #[test]
    fn session_settings_are_hard() {
        let base = n("10.0.0.1", 65001);
        type Change = Box<dyn Fn(&mut NeighborConfig)>;
        let changes: Vec<(&str, Change)> = vec![
            ("asn", Box::new(|c| c.asn = 65009)),
            ("port", Box::new(|c| c.port = 1179)),
            ("password", Box::new(|c| c.password = Some("s3cret".into()))),
            ("ttl_security", Box::new(|c| c.ttl_security = true)),
            (
                "local_address",
                Box::new(|c| c.local_address = Some(ip("10.0.0.9"))),
            ),
            ("hold_time", Box::new(|c| c.hold_time = 30)),
            ("passive", Box::new(|c| c.passive = true)),
            (
                "families",
                Box::new(|c| c.families.push(Family::Ipv6Unicast)),
            ),
            (
                "connect_retry",
                Box::new(|c| c.connect_retry = Duration::from_secs(1)),
            ),
        ];
        for (what, change) in changes {
            let mut cfg = base.clone();
            change(&mut cfg);
            // A soft change riding along does not make a hard one soft.
            cfg.route_reflector_client = true;
            let plan = plan_neighbor_changes([&base], vec![cfg.clone()]);
            assert_eq!(plan.reset, vec![cfg], "{what}");
            assert!(plan.update.is_empty(), "{what}: {plan:?}");
            assert!(plan.add.is_empty() && plan.remove.is_empty(), "{what}");
        }
    }

    #[test]
    fn duplicate_address_keeps_the_last_entry() {
        let old = vec![n("10.0.0.1", 65001)];
        let plan = plan_neighbor_changes(&old, vec![n("10.0.0.1", 65009), n("10.0.0.1", 65001)]);
        assert!(plan.is_noop(), "{plan:?}");
    }
}
