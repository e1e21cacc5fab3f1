//! Kernel nexthop objects through `agent::fib::nexthop` (run as root, each test in its own
//! namespace): gateway objects and a group are created, 100k routes reference the group, one
//! group replace re-points all of them and one delete removes them; the in-process time of
//! those single operations is printed (a measurement, not an assertion).

mod support;

use std::time::Instant;

use agent::fib::nexthop::{NexthopError, NexthopSocket, NexthopSpec};
use agent::fib::ROUTELET_PROTOCOL;
use support::netns::NetNs;

const ROUTES: usize = 100_000;

/// A namespace with veth `v0` (10.9.0.1/24) and static neighbours .2 and .3.
fn setup(tag: &str) -> (NetNs, u32) {
    let ns = NetNs::new(tag);
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
    ns.ip(&["link", "set", "v0", "up"]);
    ns.ip(&["link", "set", "v1", "up"]);
    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", "v0"]);
    for (ip, mac) in [
        ("10.9.0.2", "02:00:00:00:00:02"),
        ("10.9.0.3", "02:00:00:00:00:03"),
    ] {
        ns.ip(&["neigh", "add", ip, "lladdr", mac, "dev", "v0"]);
    }
    let links = ns.ip_json(&["link", "show", "v0"]);
    let oif = links[0]["ifindex"].as_u64().expect("ifindex") as u32;
    (ns, oif)
}

fn gateway(id: u32, ip: &str, oif: u32) -> NexthopSpec {
    NexthopSpec::Gateway {
        id,
        gateway: ip.parse().expect("ip"),
        oif,
    }
}

/// How many routes of protocol 200 `ns` has.
fn count(ns: &NetNs) -> usize {
    ns.ip(&["route", "show", "proto", "200"])
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .count()
}

/// The kernel's answer for 100.0.0.1 (which gateway it uses now).
fn first(ns: &NetNs) -> String {
    ns.ip(&["route", "get", "100.0.0.1"])
}

#[test]
fn a_group_replace_repoints_and_a_delete_removes_100k_routes_in_one_step() {
    let (ns, oif) = setup("nh");
    ns.block_on(|| async {
        let mut s = NexthopSocket::new(ROUTELET_PROTOCOL).expect("socket");
        assert!(s.supported(u32::MAX), "this kernel has nexthop objects");
        s.replace(&gateway(1, "10.9.0.2", oif)).expect("nexthop 1");
        s.replace(&gateway(2, "10.9.0.3", oif)).expect("nexthop 2");
        s.replace(&NexthopSpec::Group {
            id: 10,
            members: vec![(1, 1), (2, 1)],
        })
        .expect("group 10");
    });
    let nh = ns.ip_json(&["nexthop", "show", "id", "10"]);
    assert_eq!(nh[0]["protocol"], "200", "our protocol: {nh}");
    let batch: String = (0..ROUTES)
        .map(|i| {
            format!(
                "route add {}.{}.{}.0/24 nhid 10 proto 200\n",
                100 + (i >> 16),
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect();
    let file = std::env::temp_dir().join(format!("rl-nh-batch-{}.txt", std::process::id()));
    std::fs::write(&file, batch).expect("batch file");
    let ok = std::process::Command::new("ip")
        .args(["-n", ns.name(), "-batch"])
        .arg(&file)
        .status()
        .expect("ip -batch");
    let _ = std::fs::remove_file(&file);
    assert!(ok.success());
    assert_eq!(count(&ns), ROUTES);
    let via = first(&ns);
    assert!(
        via.contains("10.9.0.2") || via.contains("10.9.0.3"),
        "{via}"
    );

    // Nexthop 1 fails: one replace of the group re-points every route to 10.9.0.3.
    let took = ns.block_on(|| async {
        let mut s = NexthopSocket::new(ROUTELET_PROTOCOL).expect("socket");
        let t = Instant::now();
        s.replace(&NexthopSpec::Group {
            id: 10,
            members: vec![(2, 1)],
        })
        .expect("group 10 without nexthop 1");
        t.elapsed()
    });
    eprintln!("group replace for {ROUTES} routes: {took:?}");
    assert_eq!(count(&ns), ROUTES, "no route lost");
    let via = first(&ns);
    assert!(
        via.contains("via 10.9.0.3") && !via.contains("10.9.0.2"),
        "{via}"
    );
    let sample = ns.ip(&["route", "show", "100.200.7.0/24"]);
    assert!(
        sample.contains("nhid 10"),
        "routes still reference the group: {sample}"
    );

    // Nexthop 2 fails too: one delete removes every route that has no next hop left.
    let took = ns.block_on(|| async {
        let mut s = NexthopSocket::new(ROUTELET_PROTOCOL).expect("socket");
        let t = Instant::now();
        s.delete(2).expect("delete nexthop 2");
        t.elapsed()
    });
    eprintln!("nexthop delete removing {ROUTES} routes: {took:?}");
    assert_eq!(count(&ns), 0);
}

#[test]
fn the_kernel_refuses_a_group_with_an_unknown_member_and_nothing_changes() {
    let (ns, oif) = setup("nhbad");
    ns.block_on(|| async {
        let mut s = NexthopSocket::new(ROUTELET_PROTOCOL).expect("socket");
        s.replace(&gateway(1, "10.9.0.2", oif)).expect("nexthop 1");
        let e = s
            .replace(&NexthopSpec::Group {
                id: 10,
                members: vec![(1, 1), (99, 1)],
            })
            .expect_err("member 99 does not exist");
        assert!(
            matches!(
                &e,
                NexthopError::Kernel {
                    id: 10,
                    op: "replace",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("nexthop 10"), "{e}");
        let e = s.delete(42).expect_err("no nexthop 42");
        assert!(
            matches!(
                e,
                NexthopError::Kernel {
                    id: 42,
                    op: "delete",
                    ..
                }
            ),
            "{e}"
        );
    });
    let all = ns.ip_json(&["nexthop", "show"]);
    assert_eq!(
        all.as_array().map(Vec::len),
        Some(1),
        "only nexthop 1: {all}"
    );
}
