//! Tests of the RIB: decision process, ECMP, import rules, peer down, originated routes,
//! interning, Adj-RIB-Out coalescing, and an ignored micro-benchmark.
#![allow(clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::*;
use crate::types::{
    AsPath, AttributeError, ErrorAction, Family, NextHop, Origin, PathAttributes, Prefix, Reach,
    Unreach, Update,
};

pub(super) const LOCAL_ASN: Asn = 65000;
pub(super) const RID: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip address")
}

pub(super) fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("ipv4 address")
}

pub(super) fn pfx(s: &str) -> Prefix {
    s.parse().expect("prefix")
}

pub(super) fn peer(address: &str, asn: Asn, router_id: &str) -> PeerInfo {
    let address = ip(address);
    PeerInfo {
        address,
        asn,
        router_id: v4(router_id),
        local_address: if address.is_ipv4() {
            ip("10.0.0.1")
        } else {
            ip("2001:db8::1")
        },
        local_address_v6: Some(ip("2001:db8::1")),
        route_reflector_client: false,
        extended_next_hop: false,
        families: Family::ALL.to_vec(),
        import: RouteFilter::All,
        export: RouteFilter::All,
    }
}

pub(super) fn attrs(path: &[Asn]) -> PathAttributes {
    PathAttributes {
        as_path: AsPath::from_sequence(path.to_vec()),
        ..PathAttributes::default()
    }
}

pub(super) fn announce(a: PathAttributes, next_hop: &str, prefixes: &[&str]) -> Update {
    let prefixes: Vec<Prefix> = prefixes.iter().map(|p| pfx(p)).collect();
    let family = prefixes
        .first()
        .map_or(Family::Ipv4Unicast, Family::of_prefix);
    Update {
        unreach: vec![],
        attrs: Some(a),
        reach: vec![Reach {
            family,
            next_hop: NextHop::new(ip(next_hop)),
            prefixes,
        }],
        errors: vec![],
    }
}

pub(super) fn withdraw(prefixes: &[&str]) -> Update {
    let prefixes: Vec<Prefix> = prefixes.iter().map(|p| pfx(p)).collect();
    let family = prefixes
        .first()
        .map_or(Family::Ipv4Unicast, Family::of_prefix);
    Update {
        unreach: vec![Unreach { family, prefixes }],
        attrs: None,
        reach: vec![],
        errors: vec![],
    }
}

pub(super) fn rib() -> Rib {
    Rib::new(LOCAL_ASN, RID, None, 1)
}

// ---------------------------------------------------------------------------------------
// Decision process, one case per tie-break.

struct Case {
    name: &'static str,
    /// (peer, attrs, next hop) announcing 192.0.2.0/24.
    paths: Vec<(PeerInfo, PathAttributes)>,
    local: Option<PathAttributes>,
    winner: PathSource,
    reason: BestPathReason,
}

fn with(mut a: PathAttributes, f: impl FnOnce(&mut PathAttributes)) -> PathAttributes {
    f(&mut a);
    a
}

#[test]
fn best_path_tie_breaks() {
    let ibgp_a = peer("10.0.0.2", LOCAL_ASN, "10.255.0.2");
    let ibgp_b = peer("10.0.0.3", LOCAL_ASN, "10.255.0.3");
    let ebgp_a = peer("10.0.1.2", 65001, "10.255.1.2");
    let ebgp_a2 = peer("10.0.1.3", 65001, "10.255.1.3");
    let ebgp_b = peer("10.0.2.2", 65002, "10.255.2.2");
    let cases = vec![
        Case {
            name: "single path",
            paths: vec![(ebgp_a.clone(), attrs(&[65001]))],
            local: None,
            winner: PathSource::Peer(ebgp_a.address),
            reason: BestPathReason::OnlyPath,
        },
        Case {
            name: "local beats higher local-pref",
            paths: vec![(
                ibgp_a.clone(),
                with(attrs(&[]), |a| a.local_pref = Some(500)),
            )],
            local: Some(attrs(&[])),
            winner: PathSource::Local,
            reason: BestPathReason::LocallyOriginated,
        },
        Case {
            name: "higher local-pref",
            paths: vec![
                (
                    ibgp_a.clone(),
                    with(attrs(&[]), |a| a.local_pref = Some(90)),
                ),
                (
                    ibgp_b.clone(),
                    with(attrs(&[1, 2, 3]), |a| a.local_pref = Some(200)),
                ),
            ],
            local: None,
            winner: PathSource::Peer(ibgp_b.address),
            reason: BestPathReason::LocalPref,
        },
        Case {
            name: "missing local-pref on iBGP is 100, eBGP local-pref is ignored",
            paths: vec![
                (
                    ebgp_a.clone(),
                    with(attrs(&[65001]), |a| a.local_pref = Some(500)),
                ),
                (
                    ibgp_a.clone(),
                    with(attrs(&[1, 2, 3]), |a| a.local_pref = Some(101)),
                ),
                (ibgp_b.clone(), attrs(&[])),
            ],
            local: None,
            winner: PathSource::Peer(ibgp_a.address),
            reason: BestPathReason::LocalPref,
        },
        Case {
            name: "shorter as path",
            paths: vec![
                (ebgp_a.clone(), attrs(&[65001, 7, 8])),
                (ebgp_b.clone(), attrs(&[65002, 8])),
            ],
            local: None,
            winner: PathSource::Peer(ebgp_b.address),
            reason: BestPathReason::AsPathLength,
        },
        Case {
            name: "lower origin",
            paths: vec![
                (
                    ebgp_a.clone(),
                    with(attrs(&[65001]), |a| a.origin = Origin::Incomplete),
                ),
                (
                    ebgp_b.clone(),
                    with(attrs(&[65002]), |a| a.origin = Origin::Egp),
                ),
            ],
            local: None,
            winner: PathSource::Peer(ebgp_b.address),
            reason: BestPathReason::Origin,
        },
        Case {
            name: "lower med within the same neighbor AS",
            paths: vec![
                (ebgp_a.clone(), with(attrs(&[65001]), |a| a.med = Some(50))),
                (ebgp_a2.clone(), with(attrs(&[65001]), |a| a.med = Some(10))),
            ],
            local: None,
            winner: PathSource::Peer(ebgp_a2.address),
            reason: BestPathReason::Med,
        },
        Case {
            name: "missing med counts as 0",
            paths: vec![
                (ebgp_a.clone(), with(attrs(&[65001]), |a| a.med = Some(1))),
                (ebgp_a2.clone(), attrs(&[65001])),
            ],
            local: None,
            winner: PathSource::Peer(ebgp_a2.address),
            reason: BestPathReason::Med,
        },
        Case {
            name: "med not compared across neighbor ASes: router id decides",
            paths: vec![
                (ebgp_a.clone(), with(attrs(&[65001]), |a| a.med = Some(500))),
                (ebgp_b.clone(), with(attrs(&[65002]), |a| a.med = Some(1))),
            ],
            local: None,
            winner: PathSource::Peer(ebgp_a.address),
            reason: BestPathReason::RouterId,
        },
        Case {
            name: "ebgp over ibgp",
            paths: vec![
                (ibgp_a.clone(), attrs(&[65009])),
                (ebgp_b.clone(), attrs(&[65002])),
            ],
            local: None,
            winner: PathSource::Peer(ebgp_b.address),
            reason: BestPathReason::EbgpOverIbgp,
        },
        Case {
            name: "lower router id",
            paths: vec![
                (ibgp_b.clone(), attrs(&[65009])),
                (ibgp_a.clone(), attrs(&[65009])),
            ],
            local: None,
            winner: PathSource::Peer(ibgp_a.address),
            reason: BestPathReason::RouterId,
        },
        Case {
            name: "originator id replaces the peer router id",
            paths: vec![
                (ibgp_a.clone(), attrs(&[65009])),
                (
                    ibgp_b.clone(),
                    with(attrs(&[65009]), |a| {
                        a.originator_id = Some(v4("1.1.1.1"));
                        a.cluster_list = vec![v4("9.9.9.9")];
                    }),
                ),
            ],
            local: None,
            winner: PathSource::Peer(ibgp_b.address),
            reason: BestPathReason::RouterId,
        },
        Case {
            name: "shorter cluster list",
            paths: vec![
                (
                    ibgp_a.clone(),
                    with(attrs(&[65009]), |a| {
                        a.originator_id = Some(v4("1.1.1.1"));
                        a.cluster_list = vec![v4("9.9.9.9"), v4("8.8.8.8")];
                    }),
                ),
                (
                    ibgp_b.clone(),
                    with(attrs(&[65009]), |a| {
                        a.originator_id = Some(v4("1.1.1.1"));
                        a.cluster_list = vec![v4("9.9.9.9")];
                    }),
                ),
            ],
            local: None,
            winner: PathSource::Peer(ibgp_b.address),
            reason: BestPathReason::ClusterListLength,
        },
        Case {
            name: "lower neighbor address",
            paths: vec![
                (
                    ibgp_b.clone(),
                    with(attrs(&[65009]), |a| {
                        a.originator_id = Some(v4("1.1.1.1"));
                    }),
                ),
                (
                    ibgp_a.clone(),
                    with(attrs(&[65009]), |a| {
                        a.originator_id = Some(v4("1.1.1.1"));
                    }),
                ),
            ],
            local: None,
            winner: PathSource::Peer(ibgp_a.address),
            reason: BestPathReason::NeighborAddress,
        },
    ];
    let prefix = pfx("192.0.2.0/24");
    for case in cases {
        // Both insertion orders must give the same result.
        for reversed in [false, true] {
            let mut r = rib();
            let mut paths = case.paths.clone();
            if reversed {
                paths.reverse();
            }
            if let Some(local) = &case.local {
                r.set_originated(vec![(prefix, local.clone())]);
            }
            for (i, (p, a)) in paths.iter().enumerate() {
                r.peer_up(p.clone());
                let nh = format!("10.1.0.{}", i + 1);
                let out = r.apply_update(p.address, &announce(a.clone(), &nh, &["192.0.2.0/24"]));
                assert_eq!(out.accepted, 1, "{}", case.name);
            }
            let best = r.best(&prefix).expect(case.name);
            assert_eq!(
                best.source, case.winner,
                "{} (reversed {reversed})",
                case.name
            );
            assert_eq!(
                best.reason, case.reason,
                "{} (reversed {reversed})",
                case.name
            );
            // Locally originated routes here carry no next hop.
            let hops = usize::from(case.winner != PathSource::Local);
            assert_eq!(best.next_hops.len(), hops, "{}", case.name);
        }
    }
}

#[test]
fn ebgp_local_pref_and_reflection_attrs_are_stripped_on_import() {
    let mut r = rib();
    let e = peer("10.0.1.2", 65001, "10.255.1.2");
    r.peer_up(e.clone());
    let a = with(attrs(&[65001]), |a| {
        a.local_pref = Some(500);
        a.originator_id = Some(v4("1.1.1.1"));
        a.cluster_list = vec![v4("2.2.2.2")];
    });
    r.apply_update(e.address, &announce(a, "10.0.1.2", &["192.0.2.0/24"]));
    let best = r.best(&pfx("192.0.2.0/24")).expect("best");
    assert_eq!(best.attrs.local_pref, None);
    assert_eq!(best.attrs.originator_id, None);
    assert!(best.attrs.cluster_list.is_empty());
    assert_eq!(best.attrs.next_hop, Some(NextHop::new(ip("10.0.1.2"))));
}

// ---------------------------------------------------------------------------------------
// ECMP

fn ecmp_rib(max_paths: usize) -> (Rib, Vec<PeerInfo>) {
    let mut r = Rib::new(LOCAL_ASN, RID, None, max_paths);
    let mut peers = Vec::new();
    for i in 1..=5u8 {
        let p = peer(&format!("10.0.1.{i}"), 65001, &format!("10.255.1.{i}"));
        r.peer_up(p.clone());
        peers.push(p);
    }
    (r, peers)
}

#[test]
fn ecmp_width_follows_max_paths() {
    for (max_paths, expected) in [(1usize, 1usize), (2, 2), (4, 4), (8, 5)] {
        let (mut r, peers) = ecmp_rib(max_paths);
        let mut all_changes = Vec::new();
        for p in &peers {
            let nh = p.address.to_string();
            let out = r.apply_update(
                p.address,
                &announce(attrs(&[65001, 3]), &nh, &["192.0.2.0/24"]),
            );
            all_changes.extend(out.changes);
        }
        let best = r.best(&pfx("192.0.2.0/24")).expect("best");
        assert_eq!(best.next_hops.len(), expected, "max_paths {max_paths}");
        // Best = lowest router id; companions in router-id order.
        assert_eq!(best.source, PathSource::Peer(ip("10.0.1.1")));
        assert_eq!(best.reason, BestPathReason::RouterId);
        let want: Vec<NextHop> = (1..=expected)
            .map(|i| NextHop::new(ip(&format!("10.0.1.{i}"))))
            .collect();
        assert_eq!(best.next_hops, want);
        // The last change carries the final next-hop set.
        match all_changes.last() {
            Some(LocRibChange::Best { next_hops, .. }) => assert_eq!(next_hops, &want),
            other => panic!("unexpected last change {other:?}"),
        }
        if max_paths == 1 {
            assert_eq!(all_changes.len(), 1, "only the first path changes the best");
        }
    }
}

#[test]
fn ecmp_requires_equal_med_same_neighbor_as_and_distinct_next_hops() {
    let (mut r, peers) = ecmp_rib(4);
    let [p1, p2, p3, p4, p5] = [&peers[0], &peers[1], &peers[2], &peers[3], &peers[4]];
    let r1 = r.apply_update(
        p1.address,
        &announce(attrs(&[65001, 3]), "10.9.0.1", &["192.0.2.0/24"]),
    );
    assert_eq!(r1.changes.len(), 1);
    // Same next hop as p1: deduplicated.
    r.apply_update(
        p2.address,
        &announce(attrs(&[65001, 3]), "10.9.0.1", &["192.0.2.0/24"]),
    );
    // Different MED within the same neighbor AS: loses at MED, not in ECMP.
    r.apply_update(
        p3.address,
        &announce(
            with(attrs(&[65001, 3]), |a| a.med = Some(5)),
            "10.9.0.3",
            &["192.0.2.0/24"],
        ),
    );
    // Same length but another neighbor AS: eBGP multipath needs the same neighbor AS.
    r.apply_update(
        p4.address,
        &announce(attrs(&[65077, 3]), "10.9.0.4", &["192.0.2.0/24"]),
    );
    // A real companion.
    r.apply_update(
        p5.address,
        &announce(attrs(&[65001, 4]), "10.9.0.5", &["192.0.2.0/24"]),
    );
    let best = r.best(&pfx("192.0.2.0/24")).expect("best");
    assert_eq!(best.source, PathSource::Peer(p1.address));
    assert_eq!(
        best.next_hops,
        vec![NextHop::new(ip("10.9.0.1")), NextHop::new(ip("10.9.0.5"))]
    );
    // Withdrawing the companion changes only the next-hop set.
    let out = r.apply_update(p5.address, &withdraw(&["192.0.2.0/24"]));
    match out.changes.as_slice() {
        [LocRibChange::Best {
            source, next_hops, ..
        }] => {
            assert_eq!(*source, PathSource::Peer(p1.address));
            assert_eq!(next_hops, &vec![NextHop::new(ip("10.9.0.1"))]);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn ibgp_and_ebgp_paths_are_never_mixed_in_ecmp() {
    let mut r = Rib::new(LOCAL_ASN, RID, None, 4);
    let e = peer("10.0.1.2", 65001, "10.255.1.2");
    let i = peer("10.0.0.2", LOCAL_ASN, "10.255.0.2");
    r.peer_up(e.clone());
    r.peer_up(i.clone());
    r.apply_update(
        e.address,
        &announce(attrs(&[65001]), "10.0.1.2", &["192.0.2.0/24"]),
    );
    r.apply_update(
        i.address,
        &announce(attrs(&[65001]), "10.0.0.2", &["192.0.2.0/24"]),
    );
    let best = r.best(&pfx("192.0.2.0/24")).expect("best");
    assert_eq!(best.reason, BestPathReason::EbgpOverIbgp);
    assert_eq!(best.next_hops, vec![NextHop::new(ip("10.0.1.2"))]);
}

// ---------------------------------------------------------------------------------------
// Import rules

#[test]
fn loops_are_rejected_but_counted_as_received() {
    let mut r = Rib::new(LOCAL_ASN, RID, Some(v4("10.255.255.1")), 1);
    let e = peer("10.0.1.2", 65001, "10.255.1.2");
    let i = peer("10.0.0.2", LOCAL_ASN, "10.255.0.2");
    r.peer_up(e.clone());
    r.peer_up(i.clone());
    let cases: Vec<(&str, &PeerInfo, PathAttributes)> = vec![
        ("own asn in as path", &e, attrs(&[65001, LOCAL_ASN, 7])),
        (
            "originator id is us",
            &i,
            with(attrs(&[]), |a| a.originator_id = Some(RID)),
        ),
        (
            "cluster list has our cluster id",
            &i,
            with(attrs(&[]), |a| {
                a.cluster_list = vec![v4("1.2.3.4"), v4("10.255.255.1")]
            }),
        ),
    ];
    for (name, p, a) in cases {
        let out = r.apply_update(p.address, &announce(a, "10.9.9.9", &["198.51.100.0/24"]));
        assert_eq!(
            (out.received, out.accepted, out.rejected),
            (1, 0, 1),
            "{name}"
        );
        assert!(out.changes.is_empty(), "{name}");
        assert!(r.best(&pfx("198.51.100.0/24")).is_none(), "{name}");
        assert_eq!(r.received(p.address), 1, "{name}");
        assert_eq!(r.accepted(p.address), 0, "{name}");
    }
    // A valid replacement from the same peer is accepted and counted once.
    let out = r.apply_update(
        i.address,
        &announce(attrs(&[]), "10.9.9.9", &["198.51.100.0/24"]),
    );
    assert_eq!(out.accepted, 1);
    assert_eq!((r.received(i.address), r.accepted(i.address)), (1, 1));
    assert_eq!(out.changes.len(), 1);
    // Our own ASN in an iBGP path is not an eBGP loop.
    let out = r.apply_update(
        i.address,
        &announce(attrs(&[LOCAL_ASN]), "10.9.9.9", &["198.51.100.0/24"]),
    );
    assert_eq!(out.accepted, 1);
    // Then a looped replacement makes the route disappear.
    let out = r.apply_update(
        i.address,
        &announce(
            with(attrs(&[]), |a| a.originator_id = Some(RID)),
            "10.9.9.9",
            &["198.51.100.0/24"],
        ),
    );
    assert_eq!(
        out.changes,
        vec![LocRibChange::Gone {
            prefix: pfx("198.51.100.0/24")
        }]
    );
    assert_eq!((r.received(i.address), r.accepted(i.address)), (1, 0));
}

#[test]
fn cluster_loop_uses_router_id_without_cluster_id() {
    let mut r = rib();
    let i = peer("10.0.0.2", LOCAL_ASN, "10.255.0.2");
    r.peer_up(i.clone());
    let a = with(attrs(&[]), |a| a.cluster_list = vec![RID]);
    let out = r.apply_update(i.address, &announce(a, "10.9.9.9", &["198.51.100.0/24"]));
    assert_eq!(out.rejected, 1);
}

/// Becoming a reflector of cluster X while running: a path that already carries X in its
/// CLUSTER_LIST is now a loop and leaves the Loc-RIB; dropping the id brings it back.
#[test]
fn set_cluster_id_reevaluates_received_paths() {
    let mut r = rib();
    let i = peer("10.0.0.2", LOCAL_ASN, "10.255.0.2");
    r.peer_up(i.clone());
    let x = std::net::Ipv4Addr::new(244, 0, 0, 1);
    let a = with(attrs(&[]), |a| a.cluster_list = vec![x]);
    let out = r.apply_update(i.address, &announce(a, "10.9.9.9", &["198.51.100.0/24"]));
    assert_eq!(out.accepted, 1);
    assert_eq!(r.cluster_id(), RID);
    let changes = r.set_cluster_id(Some(x));
    assert_eq!(r.cluster_id(), x);
    assert_eq!(
        changes,
        vec![LocRibChange::Gone {
            prefix: pfx("198.51.100.0/24")
        }]
    );
    assert!(
        r.set_cluster_id(Some(x)).is_empty(),
        "same id: nothing to do"
    );
    let changes = r.set_cluster_id(None);
    assert_eq!(changes.len(), 1);
    assert!(r.best(&pfx("198.51.100.0/24")).is_some());
}

#[test]
fn sole_paths_counts_prefixes_without_an_alternative() {
    let mut r = rib();
    let a = peer("10.0.0.2", LOCAL_ASN, "10.255.0.2");
    let b = peer("10.0.0.3", LOCAL_ASN, "10.255.0.3");
    r.peer_up(a.clone());
    r.peer_up(b.clone());
    r.apply_update(
        a.address,
        &announce(
            attrs(&[]),
            "10.0.0.9",
            &["198.51.100.0/24", "203.0.113.0/24"],
        ),
    );
    assert_eq!(r.sole_paths(a.address), 2);
    assert_eq!(r.sole_paths(b.address), 0);
    // b (a reflector, say) now also has one of them: a is the sole source of one prefix.
    r.apply_update(
        b.address,
        &announce(attrs(&[]), "10.0.0.9", &["198.51.100.0/24"]),
    );
    assert_eq!(r.sole_paths(a.address), 1);
    // A rejected path is no alternative.
    let looped = with(attrs(&[]), |x| x.cluster_list = vec![RID]);
    r.apply_update(
        b.address,
        &announce(looped, "10.0.0.9", &["203.0.113.0/24"]),
    );
    assert_eq!(r.sole_paths(a.address), 1);
    assert_eq!(r.sole_paths("10.0.0.99".parse().expect("ip")), 0);
}

#[test]
fn treat_as_withdraw_removes_reach_prefixes() {
    let mut r = rib();
    let e = peer("10.0.1.2", 65001, "10.255.1.2");
    r.peer_up(e.clone());
    r.apply_update(
        e.address,
        &announce(
            attrs(&[65001]),
            "10.0.1.2",
            &["192.0.2.0/24", "198.51.100.0/24"],
        ),
    );
    assert_eq!(r.received(e.address), 2);
    let mut bad = announce(attrs(&[65001]), "10.0.1.2", &["192.0.2.0/24"]);
    bad.errors.push(AttributeError {
        type_code: 1,
        action: ErrorAction::TreatAsWithdraw,
        reason: "bad origin".into(),
    });
    let out = r.apply_update(e.address, &bad);
    assert_eq!(out.withdrawn, 1);
    assert_eq!(out.received, 0);
    assert_eq!(
        out.changes,
        vec![LocRibChange::Gone {
            prefix: pfx("192.0.2.0/24")
        }]
    );
    assert!(r.best(&pfx("192.0.2.0/24")).is_none());
    assert!(r.best(&pfx("198.51.100.0/24")).is_some());
    assert_eq!(r.received(e.address), 1);
}

#[test]
fn end_of_rib_and_unknown_peers_change_nothing() {
    let mut r = rib();
    let e = peer("10.0.1.2", 65001, "10.255.1.2");
    let out = r.apply_update(
        e.address,
        &announce(attrs(&[65001]), "10.0.1.2", &["192.0.2.0/24"]),
    );
    assert!(out.unknown_peer);
    assert_eq!(r.loc_rib().count(), 0);
    r.peer_up(e.clone());
    r.apply_update(
        e.address,
        &announce(attrs(&[65001]), "10.0.1.2", &["192.0.2.0/24"]),
    );
    let out = r.apply_update(e.address, &Update::default());
    assert_eq!(out.end_of_rib, Some(Family::Ipv4Unicast));
    assert!(out.changes.is_empty());
    let out = r.apply_update(e.address, &withdraw(&[]));
    assert_eq!(out.end_of_rib, Some(Family::Ipv4Unicast));
    assert_eq!(r.loc_rib().count(), 1);
}

#[test]
fn reach_is_combined_with_its_own_next_hop_and_family() {
    let mut r = rib();
    let e = peer("10.0.1.2", 65001, "10.255.1.2");
    r.peer_up(e.clone());
    let update = Update {
        unreach: vec![],
        attrs: Some(attrs(&[65001])),
        reach: vec![
            Reach {
                family: Family::Ipv4Unicast,
                next_hop: NextHop::new(ip("10.0.1.2")),
                prefixes: vec![pfx("192.0.2.0/24")],
            },
            Reach {
                family: Family::Ipv6Unicast,
                next_hop: NextHop {
                    addr: ip("2001:db8::2"),
                    link_local: Some("fe80::2".parse().expect("ll")),
                },
                // The IPv4 prefix is in the wrong Reach and is ignored.
                prefixes: vec![pfx("2001:db8:1::/48"), pfx("203.0.113.0/24")],
            },
        ],
        errors: vec![],
    };
    let out = r.apply_update(e.address, &update);
    assert_eq!((out.received, out.invalid), (2, 1));
    let b4 = r.best(&pfx("192.0.2.0/24")).expect("v4");
    let b6 = r.best(&pfx("2001:db8:1::/48")).expect("v6");
    assert_eq!(b4.next_hops, vec![NextHop::new(ip("10.0.1.2"))]);
    assert_eq!(
        b6.next_hops[0].link_local,
        Some("fe80::2".parse().expect("ll"))
    );
    assert!(r.best(&pfx("203.0.113.0/24")).is_none());
}

// ---------------------------------------------------------------------------------------
// Peer down, originated routes, interning

#[test]
fn peer_down_removes_its_paths_and_reports_changes() {
    let mut r = rib();
    let a = peer("10.0.1.2", 65001, "10.255.1.2");
    let b = peer("10.0.2.2", 65002, "10.255.2.2");
    r.peer_up(a.clone());
    r.peer_up(b.clone());
    r.apply_update(
        a.address,
        &announce(
            attrs(&[65001]),
            "10.0.1.2",
            &["192.0.2.0/24", "198.51.100.0/24"],
        ),
    );
    r.apply_update(
        b.address,
        &announce(attrs(&[65002, 9]), "10.0.2.2", &["192.0.2.0/24"]),
    );
    assert_eq!(
        r.best(&pfx("192.0.2.0/24")).map(|b| b.source),
        Some(PathSource::Peer(a.address))
    );
    let mut changes = r.peer_down(a.address);
    changes.sort_by_key(|c| match c {
        LocRibChange::Best { prefix, .. } | LocRibChange::Gone { prefix } => *prefix,
    });
    match changes.as_slice() {
        [LocRibChange::Best {
            prefix,
            source,
            next_hops,
            reason,
            ..
        }, LocRibChange::Gone { prefix: gone }] => {
            assert_eq!(*prefix, pfx("192.0.2.0/24"));
            assert_eq!(*source, PathSource::Peer(b.address));
            assert_eq!(next_hops, &vec![NextHop::new(ip("10.0.2.2"))]);
            assert_eq!(*reason, BestPathReason::OnlyPath);
            assert_eq!(*gone, pfx("198.51.100.0/24"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(r.received(a.address), 0);
    assert_eq!(r.loc_rib().count(), 1);
    assert!(r.peer_down(a.address).is_empty(), "second down is a no-op");
    // The slot is reused by a new peer without confusion.
    let c = peer("10.0.3.2", 65003, "10.255.3.2");
    r.peer_up(c.clone());
    r.apply_update(
        c.address,
        &announce(attrs(&[65003]), "10.0.3.2", &["192.0.2.0/24"]),
    );
    assert_eq!(
        r.best(&pfx("192.0.2.0/24")).map(|b| b.source),
        Some(PathSource::Peer(c.address))
    );
    // Consumers holding changes keep attribute sets alive; drop ours.
    drop(changes);
    assert_eq!(r.peer_down(b.address).len(), 0, "b was not best");
    assert_eq!(
        r.peer_down(c.address),
        vec![LocRibChange::Gone {
            prefix: pfx("192.0.2.0/24")
        }]
    );
    assert_eq!(r.interned_attrs(), 0);
}

#[test]
fn set_originated_is_declarative_and_diffs() {
    let mut r = rib();
    let p1 = pfx("192.0.2.0/24");
    let p2 = pfx("198.51.100.0/24");
    let p3 = pfx("2001:db8:5::/48");
    let changes = r.set_originated(vec![(p1, attrs(&[])), (p2, attrs(&[]))]);
    assert_eq!(changes.len(), 2);
    assert!(changes.iter().all(|c| matches!(
        c,
        LocRibChange::Best {
            source: PathSource::Local,
            reason: BestPathReason::OnlyPath,
            ..
        }
    )));
    let changes = r.set_originated(vec![(p2, attrs(&[])), (p3, attrs(&[]))]);
    assert_eq!(changes.len(), 2);
    assert!(changes.contains(&LocRibChange::Gone { prefix: p1 }));
    assert!(changes
        .iter()
        .any(|c| matches!(c, LocRibChange::Best { prefix, .. } if *prefix == p3)));
    assert!(r
        .set_originated(vec![(p3, attrs(&[])), (p2, attrs(&[]))])
        .is_empty());
    let changes = r.set_originated(vec![
        (p3, attrs(&[])),
        (p2, with(attrs(&[]), |a| a.med = Some(7))),
    ]);
    match changes.as_slice() {
        [LocRibChange::Best { prefix, attrs, .. }] => {
            assert_eq!(*prefix, p2);
            assert_eq!(attrs.med, Some(7));
        }
        other => panic!("unexpected {other:?}"),
    }
    // A peer path under a local one takes over when the local route goes.
    let e = peer("10.0.1.2", 65001, "10.255.1.2");
    r.peer_up(e.clone());
    let out = r.apply_update(
        e.address,
        &announce(attrs(&[65001]), "10.0.1.2", &["198.51.100.0/24"]),
    );
    assert!(out.changes.is_empty());
    assert_eq!(
        r.best(&p2).map(|b| b.reason),
        Some(BestPathReason::LocallyOriginated)
    );
    let changes = r.set_originated(vec![]);
    assert_eq!(changes.len(), 2);
    assert!(changes.contains(&LocRibChange::Gone { prefix: p3 }));
    assert_eq!(
        r.best(&p2).map(|b| b.source),
        Some(PathSource::Peer(e.address))
    );
}

#[test]
fn identical_attribute_sets_share_one_arc() {
    let mut r = rib();
    let e = peer("10.0.1.2", 65001, "10.255.1.2");
    let f = peer("10.0.2.2", 65002, "10.255.2.2");
    r.peer_up(e.clone());
    r.peer_up(f.clone());
    r.apply_update(
        e.address,
        &announce(attrs(&[65001]), "10.0.1.2", &["192.0.2.0/24"]),
    );
    r.apply_update(
        e.address,
        &announce(attrs(&[65001]), "10.0.1.2", &["198.51.100.0/24"]),
    );
    r.apply_update(
        f.address,
        &announce(attrs(&[65002]), "10.0.2.2", &["203.0.113.0/24"]),
    );
    let a = r.best(&pfx("192.0.2.0/24")).expect("a").attrs.clone();
    let b = r.best(&pfx("198.51.100.0/24")).expect("b").attrs.clone();
    let c = r.best(&pfx("203.0.113.0/24")).expect("c").attrs.clone();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(r.interned_attrs(), 2);
    drop((a, b, c));
    r.apply_update(e.address, &withdraw(&["192.0.2.0/24", "198.51.100.0/24"]));
    assert_eq!(r.interned_attrs(), 1, "unused sets are dropped");
    // Re-announcing an identical set does not report a change.
    let out = r.apply_update(
        f.address,
        &announce(attrs(&[65002]), "10.0.2.2", &["203.0.113.0/24"]),
    );
    assert!(out.changes.is_empty());
    assert_eq!(out.received, 1);
    assert_eq!(r.received(f.address), 1);
}

// ---------------------------------------------------------------------------------------
// Adj-RIB-Out

fn arc(a: PathAttributes) -> Arc<PathAttributes> {
    Arc::new(a)
}

#[test]
fn adj_rib_out_coalesces_flaps() {
    let mut out = AdjRibOut::new();
    let p = pfx("192.0.2.0/24");
    let a = arc(attrs(&[1]));
    // Announce then withdraw, never advertised: nothing.
    out.set(p, Some(a.clone()));
    out.set(p, None);
    assert!(out.drain().is_empty());
    assert_eq!(out.advertised(), 0);
    // Announce, drain: advertised.
    out.set(p, Some(a.clone()));
    assert_eq!(
        out.drain(),
        vec![OutBatch::Announce {
            family: Family::Ipv4Unicast,
            attrs: a.clone(),
            prefixes: vec![p]
        }]
    );
    assert_eq!(out.advertised(), 1);
    // Same value again (another Arc): no-op.
    out.set(p, Some(arc(attrs(&[1]))));
    assert!(out.drain().is_empty());
    // Change then change back: nothing.
    out.set(p, Some(arc(attrs(&[2]))));
    out.set(p, Some(a.clone()));
    assert!(!out.has_pending());
    // Announce something else then withdraw: only the withdraw.
    out.set(p, Some(arc(attrs(&[3]))));
    out.set(p, None);
    assert_eq!(
        out.drain(),
        vec![OutBatch::Withdraw {
            family: Family::Ipv4Unicast,
            prefixes: vec![p]
        }]
    );
    assert_eq!(out.advertised(), 0);
    out.set(p, Some(a));
    out.drain();
    out.clear();
    assert_eq!(out.advertised(), 0);
    assert!(out.drain().is_empty());
}

#[test]
fn adj_rib_out_groups_by_family_and_attribute_value() {
    let mut out = AdjRibOut::new();
    let a1 = arc(attrs(&[1]));
    let a1_copy = arc(attrs(&[1]));
    let b = arc(attrs(&[2]));
    out.set(pfx("192.0.2.0/24"), Some(a1.clone()));
    out.set(pfx("198.51.100.0/24"), Some(a1_copy));
    out.set(pfx("203.0.113.0/24"), Some(b.clone()));
    out.set(pfx("2001:db8:1::/48"), Some(a1.clone()));
    out.set(pfx("10.1.0.0/16"), Some(b.clone()));
    out.set(pfx("2001:db8:2::/48"), Some(b.clone()));
    out.drain();
    out.set(pfx("10.1.0.0/16"), None);
    out.set(pfx("2001:db8:2::/48"), None);
    out.set(pfx("203.0.113.0/24"), Some(a1.clone()));
    out.set(pfx("192.0.2.0/24"), Some(b.clone()));
    let batches = out.drain();
    assert_eq!(
        batches,
        vec![
            OutBatch::Withdraw {
                family: Family::Ipv4Unicast,
                prefixes: vec![pfx("10.1.0.0/16")]
            },
            OutBatch::Withdraw {
                family: Family::Ipv6Unicast,
                prefixes: vec![pfx("2001:db8:2::/48")]
            },
            OutBatch::Announce {
                family: Family::Ipv4Unicast,
                attrs: b.clone(),
                prefixes: vec![pfx("192.0.2.0/24")]
            },
            OutBatch::Announce {
                family: Family::Ipv4Unicast,
                attrs: a1.clone(),
                prefixes: vec![pfx("203.0.113.0/24")]
            },
        ]
    );
    assert_eq!(out.advertised(), 4);
    // First drain grouped equal values from distinct Arcs together.
    let mut fresh = AdjRibOut::new();
    fresh.set(pfx("192.0.2.0/24"), Some(a1.clone()));
    fresh.set(pfx("198.51.100.0/24"), Some(arc(attrs(&[1]))));
    fresh.set(pfx("2001:db8:1::/48"), Some(a1.clone()));
    let batches = fresh.drain();
    assert_eq!(batches.len(), 2);
    assert_eq!(
        batches[0],
        OutBatch::Announce {
            family: Family::Ipv4Unicast,
            attrs: a1.clone(),
            prefixes: vec![pfx("192.0.2.0/24"), pfx("198.51.100.0/24")]
        }
    );
}

// ---------------------------------------------------------------------------------------
// Micro-benchmark: cargo test -p bgp --release --lib rib::tests::bench -- --ignored --nocapture

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
#[ignore = "micro-benchmark; run with --release --ignored --nocapture"]
fn bench_10_peers_100k_prefixes() {
    const PEERS: u32 = 10;
    const PREFIXES: u32 = 100_000;
    const PER_UPDATE: u32 = 500;
    // Pre-build the UPDATEs (like a decoder would) so only the RIB is timed.
    let mut updates = Vec::new();
    for p in 0..PEERS {
        let addr = IpAddr::V4(Ipv4Addr::new(10, 0, 1, (p + 1) as u8));
        let asn = 65001 + p;
        let mut chunk = 0;
        while chunk * PER_UPDATE < PREFIXES {
            let prefixes: Vec<Prefix> = (chunk * PER_UPDATE
                ..((chunk + 1) * PER_UPDATE).min(PREFIXES))
                .map(|i| {
                    // RIB_BENCH_UNIQUE=1: every peer its own prefixes (1M /32s, the layout of
                    // bench/bgp_convergence.sh) instead of 10 paths per /24.
                    if std::env::var_os("RIB_BENCH_UNIQUE").is_some() {
                        let n = 0x0a40_0000u32 + p * PREFIXES + i;
                        Prefix::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(n), 32).expect("prefix"))
                    } else {
                        let n = 0x0b00_0000u32 + (i << 8);
                        Prefix::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(n), 24).expect("prefix"))
                    }
                })
                .collect();
            let a = PathAttributes {
                as_path: AsPath::from_sequence(vec![
                    asn,
                    64512 + chunk % 50,
                    4_200_000_000 + chunk,
                ]),
                med: Some(chunk % 7),
                communities: vec![(asn << 16) | (chunk % 10)],
                ..PathAttributes::default()
            };
            updates.push((
                addr,
                Update {
                    unreach: vec![],
                    attrs: Some(a),
                    reach: vec![Reach {
                        family: Family::Ipv4Unicast,
                        next_hop: NextHop::new(addr),
                        prefixes,
                    }],
                    errors: vec![],
                },
            ));
            chunk += 1;
        }
    }
    let rss_before = rss_kib();
    let mut r = Rib::new(LOCAL_ASN, RID, None, 4);
    for p in 0..PEERS {
        let mut info = peer(
            &format!("10.0.1.{}", p + 1),
            65001 + p,
            &format!("10.255.1.{}", p + 1),
        );
        info.asn = 65001 + p;
        r.peer_up(info);
    }
    let start = std::time::Instant::now();
    let mut changes = 0usize;
    for (from, u) in &updates {
        changes += r.apply_update(*from, u).changes.len();
    }
    let applied = start.elapsed();
    let interned = r.interned_attrs();
    let rss_after = rss_kib();
    let target = peer("10.0.9.9", 65100, "10.255.9.9");
    let start = std::time::Instant::now();
    let dump = r.export_all(&target);
    let exported = start.elapsed();
    let mut out = AdjRibOut::new();
    let start = std::time::Instant::now();
    for (prefix, attrs) in dump {
        out.set(prefix, Some(attrs));
    }
    let batches = out.drain();
    let drained = start.elapsed();
    let start = std::time::Instant::now();
    let mut down_changes = 0;
    for p in 0..PEERS {
        down_changes += r
            .peer_down(IpAddr::V4(Ipv4Addr::new(10, 0, 1, (p + 1) as u8)))
            .len();
    }
    let downed = start.elapsed();
    println!(
        "apply {} paths: {:?} ({} Loc-RIB changes), interned attr sets live: {}",
        PEERS * PREFIXES,
        applied,
        changes,
        interned
    );
    println!(
        "export_all {} prefixes: {:?}; AdjRibOut set+drain: {:?} ({} batches); peer_down x{}: {:?} ({} changes)",
        out.advertised(),
        exported,
        drained,
        batches.len(),
        PEERS,
        downed,
        down_changes
    );
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        println!(
            "RSS growth while loading: {} MiB",
            a.saturating_sub(b) / 1024
        );
    }
    assert_eq!(r.loc_rib().count(), 0);
}

#[test]
fn import_and_export_filters_none() {
    let mut r = Rib::new(LOCAL_ASN, RID, None, 1);
    let mut deaf = peer("10.0.1.2", 65001, "10.255.1.2");
    deaf.import = RouteFilter::None;
    let mut mute = peer("10.0.2.2", 65002, "10.255.2.2");
    mute.export = RouteFilter::None;
    r.peer_up(deaf.clone());
    r.peer_up(mute.clone());
    let out = r.apply_update(
        deaf.address,
        &announce(attrs(&[65001]), "10.0.1.2", &["198.51.100.0/24"]),
    );
    assert_eq!((out.received, out.accepted, out.rejected), (1, 0, 1));
    assert!(out.changes.is_empty());
    assert!(r.best(&pfx("198.51.100.0/24")).is_none());
    let out = r.apply_update(
        mute.address,
        &announce(attrs(&[65002]), "10.0.2.2", &["203.0.113.0/24"]),
    );
    assert_eq!(out.accepted, 1);
    // Routes are still exported to the deaf peer, nothing to the mute one.
    assert!(r.export_for(&deaf, &pfx("203.0.113.0/24")).is_some());
    assert!(r.export_for(&mute, &pfx("203.0.113.0/24")).is_none());
    assert!(r.export_all(&mute).is_empty());
    assert_eq!(r.export_all(&deaf).len(), 1);
}

#[test]
fn import_filter_change_reevaluates_received_paths() {
    let mut r = Rib::new(LOCAL_ASN, RID, None, 1);
    let mut p = peer("10.0.1.2", 65001, "10.255.1.2");
    p.import = RouteFilter::None;
    r.peer_up(p.clone());
    r.apply_update(
        p.address,
        &announce(attrs(&[65001]), "10.0.1.2", &["198.51.100.0/24"]),
    );
    // A looped path stays rejected whatever the filter says.
    r.apply_update(
        p.address,
        &announce(attrs(&[65001, LOCAL_ASN]), "10.0.1.2", &["203.0.113.0/24"]),
    );
    assert_eq!((r.received(p.address), r.accepted(p.address)), (2, 0));

    p.import = RouteFilter::All;
    let changes = r.update_peer(p.clone());
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        matches!(&changes[0], LocRibChange::Best { prefix, .. } if *prefix == pfx("198.51.100.0/24"))
    );
    assert_eq!((r.received(p.address), r.accepted(p.address)), (2, 1));
    assert!(r.best(&pfx("203.0.113.0/24")).is_none());

    // Same filter again: nothing to do.
    assert!(r.update_peer(p.clone()).is_empty());

    p.import = RouteFilter::None;
    let changes = r.update_peer(p.clone());
    assert_eq!(
        changes,
        vec![LocRibChange::Gone {
            prefix: pfx("198.51.100.0/24")
        }]
    );
    assert_eq!((r.received(p.address), r.accepted(p.address)), (2, 0));
    assert_eq!(r.peer(p.address).map(|i| i.import), Some(RouteFilter::None));
}

#[test]
fn reflector_client_change_is_taken_over_by_export() {
    let mut r = Rib::new(LOCAL_ASN, RID, None, 1);
    let mut a = peer("10.0.0.2", LOCAL_ASN, "10.255.0.2");
    let b = peer("10.0.0.3", LOCAL_ASN, "10.255.0.3");
    r.peer_up(a.clone());
    r.peer_up(b.clone());
    r.apply_update(
        a.address,
        &announce(attrs(&[]), "10.0.0.2", &["198.51.100.0/24"]),
    );
    // iBGP to iBGP, neither a client: not reflected.
    assert!(r.export_for(&b, &pfx("198.51.100.0/24")).is_none());
    a.route_reflector_client = true;
    assert!(r.update_peer(a.clone()).is_empty());
    let out = r
        .export_for(&b, &pfx("198.51.100.0/24"))
        .expect("reflected from a client");
    assert_eq!(out.originator_id, Some(v4("10.255.0.2")));
}
