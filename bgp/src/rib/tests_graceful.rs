//! Tests of graceful restart in the RIB (RFC 4724 4.2, helper): stale marking, re-announce,
//! End-of-RIB flush per family, counters.
#![allow(clippy::panic)]

use super::tests::{announce, attrs, peer, pfx, rib};
use super::*;
use crate::types::Family;

fn gone(changes: &[LocRibChange]) -> Vec<String> {
    let mut v: Vec<String> = changes
        .iter()
        .filter_map(|c| match c {
            LocRibChange::Gone { prefix } => Some(prefix.to_string()),
            LocRibChange::Best { .. } => None,
        })
        .collect();
    v.sort();
    v
}

fn setup() -> Rib {
    let mut r = rib();
    let p = peer("192.0.2.2", 65002, "10.0.0.2");
    r.peer_up(p);
    let from = "192.0.2.2".parse().expect("ip");
    r.apply_update(
        from,
        &announce(
            attrs(&[65002]),
            "192.0.2.2",
            &["198.51.100.0/24", "203.0.113.0/24"],
        ),
    );
    r.apply_update(
        from,
        &announce(attrs(&[65002]), "2001:db8::2", &["2001:db8:1::/48"]),
    );
    r
}

#[test]
fn stale_paths_stay_in_use_and_other_families_go() {
    let mut r = setup();
    let from = "192.0.2.2".parse().expect("ip");
    // The peer's capability listed IPv4 only: its IPv6 route goes, the IPv4 ones stay.
    let changes = r.mark_stale(from, &[Family::Ipv4Unicast]);
    assert_eq!(gone(&changes), vec!["2001:db8:1::/48"]);
    assert_eq!(
        changes.len(),
        1,
        "the stale paths change nothing: {changes:?}"
    );
    assert_eq!(r.stale_paths(from), 2);
    assert!(r.best(&pfx("198.51.100.0/24")).is_some());
    assert_eq!(r.received(from), 2);
    assert_eq!(r.accepted(from), 2);
}

#[test]
fn reannounced_paths_are_fresh_and_end_of_rib_removes_the_rest() {
    let mut r = setup();
    let from = "192.0.2.2".parse().expect("ip");
    r.mark_stale(from, &[Family::Ipv4Unicast, Family::Ipv6Unicast]);
    // The session is back (same address: the slot and the stale paths stay).
    r.peer_up(peer("192.0.2.2", 65002, "10.0.0.2"));
    // Same attributes again: no Loc-RIB change at all (no flap).
    let out = r.apply_update(
        from,
        &announce(attrs(&[65002]), "192.0.2.2", &["198.51.100.0/24"]),
    );
    assert!(out.changes.is_empty(), "{:?}", out.changes);
    assert_eq!(r.stale_paths(from), 2);
    // End-of-RIB for IPv4: the IPv4 route not announced again goes, IPv6 waits for its own.
    let changes = r.flush_stale(from, Some(Family::Ipv4Unicast));
    assert_eq!(gone(&changes), vec!["203.0.113.0/24"]);
    assert!(r.best(&pfx("198.51.100.0/24")).is_some());
    assert_eq!(r.stale_paths(from), 1);
    let changes = r.flush_stale(from, Some(Family::Ipv6Unicast));
    assert_eq!(gone(&changes), vec!["2001:db8:1::/48"]);
    assert_eq!(r.stale_paths(from), 0);
    assert_eq!(r.received(from), 1);
    assert_eq!(r.accepted(from), 1);
}

#[test]
fn changed_attributes_replace_a_stale_path() {
    let mut r = setup();
    let from = "192.0.2.2".parse().expect("ip");
    r.mark_stale(from, &[Family::Ipv4Unicast]);
    r.peer_up(peer("192.0.2.2", 65002, "10.0.0.2"));
    let out = r.apply_update(
        from,
        &announce(attrs(&[65002, 65010]), "192.0.2.2", &["203.0.113.0/24"]),
    );
    assert_eq!(out.changes.len(), 1, "{:?}", out.changes);
    let changes = r.flush_stale(from, None);
    assert_eq!(gone(&changes), vec!["198.51.100.0/24"]);
    let best = r.best(&pfx("203.0.113.0/24")).expect("still routed");
    assert_eq!(best.attrs.as_path, attrs(&[65002, 65010]).as_path);
}

#[test]
fn restart_time_expiry_removes_every_stale_path() {
    let mut r = setup();
    let from = "192.0.2.2".parse().expect("ip");
    r.mark_stale(from, &[Family::Ipv4Unicast, Family::Ipv6Unicast]);
    let changes = r.peer_down(from);
    assert_eq!(
        gone(&changes),
        vec!["198.51.100.0/24", "2001:db8:1::/48", "203.0.113.0/24"]
    );
    assert_eq!(r.loc_rib_len(), 0);
    assert_eq!(r.stale_paths(from), 0);
}

#[test]
fn a_stale_path_loses_to_nothing_but_still_competes() {
    // Another peer's better path wins over the stale one; when it goes, the stale path is
    // still there to take over (RFC 4724: stale routes keep forwarding).
    let mut r = setup();
    let from = "192.0.2.2".parse().expect("ip");
    let other = "192.0.2.3".parse().expect("ip");
    r.peer_up(peer("192.0.2.3", 65003, "10.0.0.3"));
    r.mark_stale(from, &[Family::Ipv4Unicast]);
    r.apply_update(
        other,
        &announce(attrs(&[]), "192.0.2.3", &["198.51.100.0/24"]),
    );
    let best = r.best(&pfx("198.51.100.0/24")).expect("routed");
    assert_eq!(best.source, PathSource::Peer(other));
    r.peer_down(other);
    let best = r
        .best(&pfx("198.51.100.0/24"))
        .expect("stale path takes over");
    assert_eq!(best.source, PathSource::Peer(from));
}
