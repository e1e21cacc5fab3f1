//! Tests of the export rules (`Rib::export_for` / `export_all`).

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::tests::{announce, attrs, ip, peer, pfx, v4, LOCAL_ASN};
use super::*;
use crate::types::{AsPath, Family, NextHop, PathAttributes, RawAttribute};

const CLUSTER: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 1);

struct Net {
    rib: Rib,
    c1: PeerInfo,
    c2: PeerInfo,
    n1: PeerInfo,
    n2: PeerInfo,
    e1: PeerInfo,
    e2: PeerInfo,
}

fn unknown(flags: u8, type_code: u8) -> RawAttribute {
    RawAttribute {
        flags,
        type_code,
        value: vec![1, 2, 3],
    }
}

/// Rib with two RR clients, two iBGP non-clients, two eBGP peers and routes:
/// 192.0.2.0/24 from c1, 198.51.100.0/24 from n1 (with ORIGINATOR_ID/CLUSTER_LIST),
/// 203.0.113.0/24 + 2001:db8:7::/48 from e1 (MED + unknown attributes), 10.10.0.0/16 local.
fn net() -> Net {
    let mut rib = Rib::new(LOCAL_ASN, v4("10.255.0.1"), Some(CLUSTER), 1);
    let mut c1 = peer("10.0.0.2", LOCAL_ASN, "10.255.0.2");
    c1.route_reflector_client = true;
    let mut c2 = peer("10.0.0.3", LOCAL_ASN, "10.255.0.3");
    c2.route_reflector_client = true;
    let n1 = peer("10.0.0.4", LOCAL_ASN, "10.255.0.4");
    let n2 = peer("10.0.0.5", LOCAL_ASN, "10.255.0.5");
    let e1 = peer("10.0.1.2", 65001, "10.255.1.2");
    let e2 = peer("10.0.2.2", 65002, "10.255.2.2");
    for p in [&c1, &c2, &n1, &n2, &e1, &e2] {
        rib.peer_up(p.clone());
    }
    let a = |f: &dyn Fn(&mut PathAttributes)| {
        let mut a = attrs(&[65009]);
        f(&mut a);
        a
    };
    rib.apply_update(
        c1.address,
        &announce(
            a(&|a| a.local_pref = Some(120)),
            "10.0.0.2",
            &["192.0.2.0/24"],
        ),
    );
    rib.apply_update(
        n1.address,
        &announce(
            a(&|a| {
                a.originator_id = Some(v4("1.1.1.1"));
                a.cluster_list = vec![v4("2.2.2.2")];
            }),
            "10.0.0.4",
            &["198.51.100.0/24"],
        ),
    );
    let e_attrs = PathAttributes {
        as_path: AsPath::from_sequence(vec![65001, 65010]),
        med: Some(5),
        unknown: vec![
            unknown(
                RawAttribute::FLAG_OPTIONAL | RawAttribute::FLAG_TRANSITIVE,
                99,
            ),
            unknown(RawAttribute::FLAG_OPTIONAL, 98),
        ],
        ..PathAttributes::default()
    };
    rib.apply_update(
        e1.address,
        &announce(e_attrs.clone(), "10.0.1.2", &["203.0.113.0/24"]),
    );
    rib.apply_update(
        e1.address,
        &announce(e_attrs, "2001:db8:e1::2", &["2001:db8:7::/48"]),
    );
    rib.set_originated(vec![(
        pfx("10.10.0.0/16"),
        PathAttributes {
            med: Some(9),
            unknown: vec![unknown(
                RawAttribute::FLAG_OPTIONAL | RawAttribute::FLAG_TRANSITIVE,
                97,
            )],
            ..PathAttributes::default()
        },
    )]);
    Net {
        rib,
        c1,
        c2,
        n1,
        n2,
        e1,
        e2,
    }
}

/// Expected shape of an exported attribute set.
#[derive(Debug)]
struct Want {
    as_path: Vec<u32>,
    next_hop: &'static str,
    local_pref: Option<u32>,
    med: Option<u32>,
    originator: Option<&'static str>,
    cluster_list: Vec<&'static str>,
}

fn check(name: &str, got: Option<Arc<PathAttributes>>, want: Option<Want>) {
    let (got, want) = match (got, want) {
        (None, None) => return,
        (Some(g), Some(w)) => (g, w),
        (g, w) => {
            assert_eq!(g.is_some(), w.is_some(), "{name}: got {g:?}, want {w:?}");
            return;
        }
    };
    assert_eq!(
        got.as_path,
        AsPath::from_sequence(want.as_path.clone()),
        "{name}"
    );
    assert_eq!(
        got.next_hop,
        Some(NextHop::new(ip(want.next_hop))),
        "{name}"
    );
    assert_eq!(got.local_pref, want.local_pref, "{name}");
    assert_eq!(got.med, want.med, "{name}");
    assert_eq!(got.originator_id, want.originator.map(v4), "{name}");
    let cl: Vec<Ipv4Addr> = want.cluster_list.iter().map(|s| v4(s)).collect();
    assert_eq!(got.cluster_list, cl, "{name}");
}

#[test]
fn export_rules_table() {
    let n = net();
    let (c1, c2, n1, n2, e1, e2) = (&n.c1, &n.c2, &n.n1, &n.n2, &n.e1, &n.e2);
    let from_c1 = "192.0.2.0/24";
    let from_n1 = "198.51.100.0/24";
    let from_e1 = "203.0.113.0/24";
    let local = "10.10.0.0/16";
    let ibgp_reflected = |originator, cluster_list: Vec<&'static str>, nh, lp| Want {
        as_path: vec![65009],
        next_hop: nh,
        local_pref: Some(lp),
        med: None,
        originator: Some(originator),
        cluster_list,
    };
    let cases: Vec<(&str, &str, &PeerInfo, Option<Want>)> = vec![
        ("never back to the source (client)", from_c1, c1, None),
        ("never back to the source (ebgp)", from_e1, e1, None),
        (
            "client -> client reflected",
            from_c1,
            c2,
            Some(ibgp_reflected(
                "10.255.0.2",
                vec!["10.255.255.1"],
                "10.0.0.2",
                120,
            )),
        ),
        (
            "client -> non-client reflected",
            from_c1,
            n1,
            Some(ibgp_reflected(
                "10.255.0.2",
                vec!["10.255.255.1"],
                "10.0.0.2",
                120,
            )),
        ),
        (
            "non-client -> non-client blocked (ibgp split horizon)",
            from_n1,
            n2,
            None,
        ),
        (
            "non-client -> client keeps originator, prepends cluster id",
            from_n1,
            c1,
            Some(ibgp_reflected(
                "1.1.1.1",
                vec!["10.255.255.1", "2.2.2.2"],
                "10.0.0.4",
                100,
            )),
        ),
        (
            "ibgp -> ebgp: prepend, next-hop-self, no local-pref/originator/cluster list",
            from_n1,
            e1,
            Some(Want {
                as_path: vec![LOCAL_ASN, 65009],
                next_hop: "10.0.0.1",
                local_pref: None,
                med: None,
                originator: None,
                cluster_list: vec![],
            }),
        ),
        (
            "ebgp -> ibgp: next hop kept, local-pref 100, med kept",
            from_e1,
            n1,
            Some(Want {
                as_path: vec![65001, 65010],
                next_hop: "10.0.1.2",
                local_pref: Some(100),
                med: Some(5),
                originator: None,
                cluster_list: vec![],
            }),
        ),
        (
            "ebgp -> ebgp: prepend, next-hop-self, learned med dropped",
            from_e1,
            e2,
            Some(Want {
                as_path: vec![LOCAL_ASN, 65001, 65010],
                next_hop: "10.0.0.1",
                local_pref: None,
                med: None,
                originator: None,
                cluster_list: vec![],
            }),
        ),
        (
            "local -> ibgp: next-hop-self, local-pref 100, med kept",
            local,
            n2,
            Some(Want {
                as_path: vec![],
                next_hop: "10.0.0.1",
                local_pref: Some(100),
                med: Some(9),
                originator: None,
                cluster_list: vec![],
            }),
        ),
        (
            "local -> ebgp: prepend, next-hop-self, local med kept",
            local,
            e1,
            Some(Want {
                as_path: vec![LOCAL_ASN],
                next_hop: "10.0.0.1",
                local_pref: None,
                med: Some(9),
                originator: None,
                cluster_list: vec![],
            }),
        ),
    ];
    for (name, prefix, to, want) in cases {
        check(name, n.rib.export_for(to, &pfx(prefix)), want);
    }
}

#[test]
fn unknown_attributes_partial_bit_and_non_transitive_dropped() {
    let n = net();
    let out = n
        .rib
        .export_for(&n.e2, &pfx("203.0.113.0/24"))
        .expect("exported");
    assert_eq!(
        out.unknown,
        vec![unknown(
            RawAttribute::FLAG_OPTIONAL
                | RawAttribute::FLAG_TRANSITIVE
                | RawAttribute::FLAG_PARTIAL,
            99
        )]
    );
    let out = n
        .rib
        .export_for(&n.n1, &pfx("203.0.113.0/24"))
        .expect("exported");
    assert_eq!(out.unknown.len(), 1);
    assert_ne!(out.unknown[0].flags & RawAttribute::FLAG_PARTIAL, 0);
    // Our own routes' attributes are not marked partial.
    let out = n
        .rib
        .export_for(&n.e2, &pfx("10.10.0.0/16"))
        .expect("exported");
    assert_eq!(
        out.unknown,
        vec![unknown(
            RawAttribute::FLAG_OPTIONAL | RawAttribute::FLAG_TRANSITIVE,
            97
        )]
    );
}

#[test]
fn export_filters_families_and_picks_next_hop_family() {
    let n = net();
    let v6 = pfx("2001:db8:7::/48");
    let out = n.rib.export_for(&n.e2, &v6).expect("v6 exported");
    assert_eq!(out.next_hop, Some(NextHop::new(ip("2001:db8::1"))));
    let mut v4_only = n.e2.clone();
    v4_only.families = vec![Family::Ipv4Unicast];
    assert!(n.rib.export_for(&v4_only, &v6).is_none());
    assert!(n.rib.export_for(&v4_only, &pfx("203.0.113.0/24")).is_some());
    // IPv4 over an IPv6-only session: only with extended next hop (RFC 8950).
    let mut v6_session = peer("2001:db8::3", 65003, "10.255.3.3");
    v6_session.local_address = ip("2001:db8::9");
    v6_session.local_address_v6 = None;
    assert!(n
        .rib
        .export_for(&v6_session, &pfx("203.0.113.0/24"))
        .is_none());
    v6_session.extended_next_hop = true;
    let out = n
        .rib
        .export_for(&v6_session, &pfx("203.0.113.0/24"))
        .expect("extended next hop");
    assert_eq!(out.next_hop, Some(NextHop::new(ip("2001:db8::9"))));
    // An IPv4 session without any IPv6 address cannot carry IPv6 routes.
    let mut plain = n.e2.clone();
    plain.local_address_v6 = None;
    assert!(n.rib.export_for(&plain, &v6).is_none());
}

#[test]
fn reflection_skips_the_originator() {
    let mut n = net();
    let a = PathAttributes {
        originator_id: Some(n.c2.router_id),
        ..attrs(&[])
    };
    n.rib
        .apply_update(n.c1.address, &announce(a, "10.0.0.2", &["192.0.2.128/25"]));
    assert!(n.rib.export_for(&n.c2, &pfx("192.0.2.128/25")).is_none());
    assert!(n.rib.export_for(&n.n1, &pfx("192.0.2.128/25")).is_some());
}

#[test]
fn ibgp_without_reflection_is_split_horizon() {
    let mut rib = Rib::new(LOCAL_ASN, v4("10.255.0.1"), None, 1);
    let i1 = peer("10.0.0.2", LOCAL_ASN, "10.255.0.2");
    let i2 = peer("10.0.0.3", LOCAL_ASN, "10.255.0.3");
    let e = peer("10.0.1.2", 65001, "10.255.1.2");
    for p in [&i1, &i2, &e] {
        rib.peer_up(p.clone());
    }
    rib.apply_update(
        i1.address,
        &announce(attrs(&[]), "10.0.0.2", &["192.0.2.0/24"]),
    );
    assert!(rib.export_for(&i2, &pfx("192.0.2.0/24")).is_none());
    assert!(rib.export_for(&e, &pfx("192.0.2.0/24")).is_some());
}

#[test]
fn export_originated_sends_only_local_routes() {
    let n = net();
    let mut e = n.e2.clone();
    e.export = RouteFilter::Originated;
    // Local: sent; learned over iBGP (client, non-client) or eBGP: not.
    assert!(n.rib.export_for(&e, &pfx("10.10.0.0/16")).is_some());
    for learned in ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"] {
        assert!(n.rib.export_for(&e, &pfx(learned)).is_none(), "{learned}");
    }
    let all: Vec<String> = n
        .rib
        .export_all(&e)
        .into_iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(all, vec!["10.10.0.0/16".to_string()]);
}

#[test]
fn export_all_matches_export_for_and_shares_arcs() {
    let mut n = net();
    // A second prefix with the same attributes as 203.0.113.0/24 from e1.
    let same = n
        .rib
        .best(&pfx("203.0.113.0/24"))
        .expect("best")
        .attrs
        .as_ref()
        .clone();
    let mut resend = same.clone();
    resend.next_hop = None;
    n.rib.apply_update(
        n.e1.address,
        &announce(resend, "10.0.1.2", &["203.0.113.128/25"]),
    );
    for to in [&n.c1, &n.c2, &n.n1, &n.n2, &n.e1, &n.e2] {
        let all = n.rib.export_all(to);
        let mut expected = 0;
        for (prefix, _) in n.rib.loc_rib() {
            if let Some(a) = n.rib.export_for(to, &prefix) {
                expected += 1;
                let dumped = all.iter().find(|(p, _)| *p == prefix).expect("in dump");
                assert!(Arc::ptr_eq(&dumped.1, &a), "cached export is reused");
            }
        }
        assert_eq!(all.len(), expected, "{}", to.address);
    }
    let n2_all = n.rib.export_all(&n.n2);
    assert_eq!(n2_all.len(), 5, "all but the non-client route");
    let a = n.rib.export_for(&n.e2, &pfx("203.0.113.0/24")).expect("a");
    let b = n
        .rib
        .export_for(&n.e2, &pfx("203.0.113.128/25"))
        .expect("b");
    assert!(Arc::ptr_eq(&a, &b));
    // Empty families: nothing.
    let mut none = n.e2.clone();
    none.families.clear();
    assert!(n.rib.export_all(&none).is_empty());
}
