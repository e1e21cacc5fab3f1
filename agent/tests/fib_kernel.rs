//! Kernel integration tests of `agent::fib` (run as root): every test works in its own
//! network namespace and checks real kernel state with `ip -j route`.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::fib::{
    spawn_fib_task, spawn_fib_task_with, Fib, FibCommand, FibError, FibOp, FibStats, FibTaskConfig,
    KernelRoute, NextHop, Prefix, BLACKHOLE, MAIN_TABLE, ROUTELET_PROTOCOL,
};
use support::netns::NetNs;

type RouteMap = BTreeMap<Prefix, Vec<NextHop>>;

fn p(s: &str) -> Prefix {
    s.parse().expect("prefix")
}

fn ip(s: &str) -> NextHop {
    NextHop::from(s.parse::<IpAddr>().expect("address"))
}

fn route(prefix: &str, hops: &[&str]) -> KernelRoute {
    KernelRoute {
        prefix: p(prefix),
        next_hops: hops.iter().map(|h| ip(h)).collect(),
    }
}

fn blackhole(prefix: &str) -> KernelRoute {
    KernelRoute {
        prefix: p(prefix),
        next_hops: vec![BLACKHOLE],
    }
}

fn map(entries: &[(&str, &[&str])]) -> RouteMap {
    entries
        .iter()
        .map(|(prefix, hops)| {
            let mut hops: Vec<NextHop> = hops.iter().map(|h| ip(h)).collect();
            hops.sort();
            (p(prefix), hops)
        })
        .collect()
}

/// A namespace with a veth pair `d0`/`d1` (both ends inside it), `d0` carrying 10.0.0.254/24 and 2001:db8::fe/64, so that
/// gateways 10.0.0.x and 2001:db8::x are on-link. Nothing here ever leaves the namespace.
fn setup() -> NetNs {
    let ns = NetNs::new("fib");
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d1", "up"]);
    ns.ip(&["addr", "add", "10.0.0.254/24", "dev", "d0"]);
    ns.ip(&["-6", "addr", "add", "2001:db8::fe/64", "dev", "d0", "nodad"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns
}

fn parse_ip_routes(ns: &NetNs, value: &serde_json::Value, v6: bool) -> RouteMap {
    let mut out = RouteMap::new();
    let gateway = |h: &serde_json::Value| -> Option<NextHop> {
        let mut hop = h
            .get("gateway")
            .or_else(|| h.get("via").and_then(|v| v.get("host")))
            .and_then(|g| g.as_str())
            .map(ip)?;
        let onlink = h
            .get("flags")
            .and_then(|f| f.as_array())
            .is_some_and(|f| f.iter().any(|f| f.as_str() == Some("onlink")));
        if onlink {
            hop.onlink_dev = h
                .get("dev")
                .and_then(|d| d.as_str())
                .map(|d| ifindex_of(ns, d));
        }
        Some(hop)
    };
    for entry in value.as_array().expect("route list") {
        let dst = entry["dst"].as_str().expect("dst");
        let dst = match (dst, v6) {
            ("default", false) => "0.0.0.0/0".to_string(),
            ("default", true) => "::/0".to_string(),
            (d, false) if !d.contains('/') => format!("{d}/32"),
            (d, true) if !d.contains('/') => format!("{d}/128"),
            (d, _) => d.to_string(),
        };
        let mut hops: Vec<NextHop> = match entry.get("nexthops").and_then(|n| n.as_array()) {
            Some(nhs) => nhs.iter().filter_map(gateway).collect(),
            None if entry.get("type").and_then(|t| t.as_str()) == Some("blackhole") => {
                vec![BLACKHOLE]
            }
            None => gateway(entry).into_iter().collect(),
        };
        hops.sort();
        out.insert(p(&dst), hops);
    }
    out
}

/// The interface index of `name` in `ns`.
fn ifindex_of(ns: &NetNs, name: &str) -> u32 {
    ns.ip_json(&["link", "show", "dev", name])
        .get(0)
        .and_then(|l| l.get("ifindex"))
        .and_then(|i| i.as_u64())
        .and_then(|i| u32::try_from(i).ok())
        .expect("ifindex")
}

/// Routes in the main table with the given protocol, both families, as the kernel reports.
fn kernel_routes_proto(ns: &NetNs, proto: &str) -> RouteMap {
    let mut routes = parse_ip_routes(
        ns,
        &ns.ip_json(&["-4", "route", "show", "table", "main", "proto", proto]),
        false,
    );
    routes.extend(parse_ip_routes(
        ns,
        &ns.ip_json(&["-6", "route", "show", "table", "main", "proto", proto]),
        true,
    ));
    routes
}

fn kernel_routes(ns: &NetNs) -> RouteMap {
    kernel_routes_proto(ns, "200")
}

fn dump_map(routes: Vec<KernelRoute>) -> RouteMap {
    routes
        .into_iter()
        .map(|r| (r.prefix, r.next_hops))
        .collect()
}

async fn apply_ok(fib: &Fib, ops: Vec<FibOp>) {
    let n = ops.len();
    let report = fib.apply(ops).await;
    let errors: Vec<String> = report.errors.iter().map(|(_, e)| e.to_string()).collect();
    assert!(errors.is_empty(), "unexpected FIB errors: {errors:?}");
    assert_eq!(report.ok, n);
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn new_fib() -> Fib {
    Fib::new(MAIN_TABLE, ROUTELET_PROTOCOL).expect("Fib::new")
}

#[test]
fn installs_ipv4_single_and_ecmp_routes() {
    let ns = setup();
    ns.block_on(|| async {
        let fib = new_fib();
        apply_ok(
            &fib,
            vec![
                FibOp::Replace(route("10.1.0.0/16", &["10.0.0.1"])),
                FibOp::Replace(route("10.2.0.0/24", &["10.0.0.2", "10.0.0.1"])),
                FibOp::Replace(route("10.3.0.7/32", &["10.0.0.3"])),
            ],
        )
        .await;
        let expected = map(&[
            ("10.1.0.0/16", &["10.0.0.1"]),
            ("10.2.0.0/24", &["10.0.0.1", "10.0.0.2"]),
            ("10.3.0.7/32", &["10.0.0.3"]),
        ]);
        assert_eq!(kernel_routes(&ns), expected);
        // The ECMP route is one multipath route, not two routes.
        let raw = ns.ip_json(&["-4", "route", "show", "10.2.0.0/24", "proto", "200"]);
        assert_eq!(raw.as_array().map(Vec::len), Some(1));
        assert_eq!(dump_map(fib.dump().await.expect("dump")), expected);
    });
}

#[test]
fn installs_ipv6_single_and_ecmp_routes() {
    let ns = setup();
    ns.block_on(|| async {
        let fib = new_fib();
        apply_ok(
            &fib,
            vec![
                FibOp::Replace(route("2001:db8:1::/48", &["2001:db8::1"])),
                FibOp::Replace(route(
                    "2001:db8:2::/64",
                    &["2001:db8::2", "2001:db8::1", "2001:db8::3"],
                )),
            ],
        )
        .await;
        let expected = map(&[
            ("2001:db8:1::/48", &["2001:db8::1"]),
            (
                "2001:db8:2::/64",
                &["2001:db8::1", "2001:db8::2", "2001:db8::3"],
            ),
        ]);
        assert_eq!(kernel_routes(&ns), expected);
        assert_eq!(dump_map(fib.dump().await.expect("dump")), expected);
    });
}

#[test]
fn installs_ipv4_route_via_ipv6_next_hop() {
    let ns = setup();
    ns.block_on(|| async {
        let fib = new_fib();
        let report = fib
            .apply(vec![
                FibOp::Replace(route("10.4.0.0/16", &["2001:db8::1"])),
                FibOp::Replace(route("10.5.0.0/16", &["2001:db8::1", "2001:db8::2"])),
            ])
            .await;
        if let Some((_, e)) = report.errors.first() {
            if e.errno() == Some(libc::EINVAL) {
                eprintln!("kernel does not support IPv4 via IPv6 next hops here: {e}");
                return;
            }
            assert!(report.errors.is_empty(), "unexpected error: {e}");
        }
        let expected = map(&[
            ("10.4.0.0/16", &["2001:db8::1"]),
            ("10.5.0.0/16", &["2001:db8::1", "2001:db8::2"]),
        ]);
        assert_eq!(kernel_routes(&ns), expected);
        assert_eq!(dump_map(fib.dump().await.expect("dump")), expected);
    });
}

#[test]
fn replace_changes_next_hops() {
    let ns = setup();
    ns.block_on(|| async {
        let fib = new_fib();
        apply_ok(
            &fib,
            vec![
                FibOp::Replace(route("10.1.0.0/16", &["10.0.0.1"])),
                FibOp::Replace(route("2001:db8:1::/48", &["2001:db8::1", "2001:db8::2"])),
            ],
        )
        .await;
        // single -> ECMP (v4), ECMP -> single (v6)
        apply_ok(
            &fib,
            vec![
                FibOp::Replace(route("10.1.0.0/16", &["10.0.0.1", "10.0.0.2"])),
                FibOp::Replace(route("2001:db8:1::/48", &["2001:db8::3"])),
            ],
        )
        .await;
        assert_eq!(
            kernel_routes(&ns),
            map(&[
                ("10.1.0.0/16", &["10.0.0.1", "10.0.0.2"]),
                ("2001:db8:1::/48", &["2001:db8::3"]),
            ])
        );
        // ECMP -> different single (v4), single -> ECMP (v6)
        apply_ok(
            &fib,
            vec![
                FibOp::Replace(route("10.1.0.0/16", &["10.0.0.9"])),
                FibOp::Replace(route("2001:db8:1::/48", &["2001:db8::4", "2001:db8::5"])),
            ],
        )
        .await;
        let expected = map(&[
            ("10.1.0.0/16", &["10.0.0.9"]),
            ("2001:db8:1::/48", &["2001:db8::4", "2001:db8::5"]),
        ]);
        assert_eq!(kernel_routes(&ns), expected);
        assert_eq!(dump_map(fib.dump().await.expect("dump")), expected);
    });
}

#[test]
fn delete_removes_routes_and_is_idempotent() {
    let ns = setup();
    ns.block_on(|| async {
        let fib = new_fib();
        apply_ok(
            &fib,
            vec![
                FibOp::Replace(route("10.1.0.0/16", &["10.0.0.1", "10.0.0.2"])),
                FibOp::Replace(route("10.2.0.0/16", &["10.0.0.1"])),
                FibOp::Replace(route("2001:db8:1::/48", &["2001:db8::1", "2001:db8::2"])),
            ],
        )
        .await;
        apply_ok(
            &fib,
            vec![
                FibOp::Delete(p("10.1.0.0/16")),
                FibOp::Delete(p("2001:db8:1::/48")),
            ],
        )
        .await;
        assert_eq!(kernel_routes(&ns), map(&[("10.2.0.0/16", &["10.0.0.1"])]));
        // Deleting again (and deleting never-installed prefixes) succeeds.
        apply_ok(
            &fib,
            vec![
                FibOp::Delete(p("10.1.0.0/16")),
                FibOp::Delete(p("2001:db8:1::/48")),
                FibOp::Delete(p("10.99.0.0/16")),
            ],
        )
        .await;
        assert_eq!(kernel_routes(&ns), map(&[("10.2.0.0/16", &["10.0.0.1"])]));
    });
}

#[test]
fn never_returns_or_touches_other_protocols_routes() {
    let ns = setup();
    ns.ip(&[
        "route",
        "add",
        "10.50.0.0/16",
        "via",
        "10.0.0.1",
        "proto",
        "static",
    ]);
    ns.ip(&[
        "route",
        "add",
        "10.51.0.0/16",
        "via",
        "10.0.0.1",
        "proto",
        "201",
    ]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:50::/48",
        "via",
        "2001:db8::1",
        "proto",
        "static",
    ]);
    // Our protocol, but another table.
    ns.ip(&[
        "route",
        "add",
        "10.52.0.0/16",
        "via",
        "10.0.0.1",
        "proto",
        "200",
        "table",
        "100",
    ]);
    let others_before = kernel_routes_proto(&ns, "static");
    ns.block_on(|| async {
        let fib = new_fib();
        apply_ok(
            &fib,
            vec![FibOp::Replace(route("10.1.0.0/16", &["10.0.0.1"]))],
        )
        .await;
        assert_eq!(
            dump_map(fib.dump().await.expect("dump")),
            map(&[("10.1.0.0/16", &["10.0.0.1"])])
        );
        // Deleting the same prefixes through our protocol must not remove theirs.
        apply_ok(
            &fib,
            vec![
                FibOp::Delete(p("10.50.0.0/16")),
                FibOp::Delete(p("10.51.0.0/16")),
                FibOp::Delete(p("10.52.0.0/16")),
                FibOp::Delete(p("2001:db8:50::/48")),
            ],
        )
        .await;
    });
    assert_eq!(kernel_routes_proto(&ns, "static"), others_before);
    assert_eq!(others_before.len(), 2);
    assert_eq!(kernel_routes_proto(&ns, "201").len(), 1);
    let table100 = ns.ip_json(&["route", "show", "table", "100", "proto", "200"]);
    assert_eq!(table100.as_array().map(Vec::len), Some(1));
}

#[test]
fn with_metric_coexists_with_other_protocols_same_prefix() {
    let ns = setup();
    ns.ip(&[
        "route",
        "add",
        "10.50.0.0/16",
        "via",
        "10.0.0.1",
        "proto",
        "static",
    ]);
    ns.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:50::/48",
        "via",
        "2001:db8::1",
        "proto",
        "static",
    ]);
    let theirs = kernel_routes_proto(&ns, "static");
    ns.block_on(|| async {
        let fib = new_fib().with_metric(50);
        apply_ok(
            &fib,
            vec![
                FibOp::Replace(route("10.50.0.0/16", &["10.0.0.2"])),
                FibOp::Replace(route("2001:db8:50::/48", &["2001:db8::2"])),
            ],
        )
        .await;
        let ours = map(&[
            ("10.50.0.0/16", &["10.0.0.2"]),
            ("2001:db8:50::/48", &["2001:db8::2"]),
        ]);
        assert_eq!(kernel_routes(&ns), ours);
        assert_eq!(kernel_routes_proto(&ns, "static"), theirs);
        assert_eq!(dump_map(fib.dump().await.expect("dump")), ours);
        let raw = ns.ip_json(&["-4", "route", "show", "10.50.0.0/16", "proto", "200"]);
        assert_eq!(raw[0]["metric"].as_u64(), Some(50));
        apply_ok(
            &fib,
            vec![
                FibOp::Delete(p("10.50.0.0/16")),
                FibOp::Delete(p("2001:db8:50::/48")),
            ],
        )
        .await;
        assert!(kernel_routes(&ns).is_empty());
    });
    assert_eq!(kernel_routes_proto(&ns, "static"), theirs);
    assert_eq!(theirs.len(), 2);
}

#[test]
fn errors_carry_context_and_do_not_stop_the_batch() {
    let ns = setup();
    ns.block_on(|| async {
        let fib = new_fib();
        let report = fib
            .apply(vec![
                FibOp::Replace(route("10.1.0.0/16", &["10.0.0.1"])),
                // No route to 192.0.2.1 in this namespace.
                FibOp::Replace(route("10.2.0.0/16", &["192.0.2.1"])),
                FibOp::Replace(route("2001:db8:5::/48", &["10.0.0.1"])),
                FibOp::Replace(route("10.3.0.0/16", &["10.0.0.2"])),
            ])
            .await;
        assert_eq!(report.ok, 2);
        assert_eq!(report.errors.len(), 2, "{:?}", report.errors);
        let kernel_err = report
            .errors
            .iter()
            .find(|(op, _)| op.prefix() == p("10.2.0.0/16"))
            .expect("error for 10.2.0.0/16");
        assert!(
            matches!(kernel_err.1, FibError::Kernel { prefix, .. } if prefix == p("10.2.0.0/16")),
            "{:?}",
            kernel_err.1
        );
        assert_eq!(kernel_err.1.errno(), Some(libc::ENETUNREACH));
        let text = kernel_err.1.to_string();
        assert!(
            text.contains("10.2.0.0/16") && text.contains("replace"),
            "{text}"
        );
        eprintln!("kernel error rendered as: {text}");
        assert!(report
            .errors
            .iter()
            .any(|(op, e)| op.prefix() == p("2001:db8:5::/48")
                && matches!(e, FibError::InvalidRoute { .. })));
        assert_eq!(
            kernel_routes(&ns),
            map(&[
                ("10.1.0.0/16", &["10.0.0.1"]),
                ("10.3.0.0/16", &["10.0.0.2"])
            ])
        );
    });
}

fn bulk_prefix(i: u32) -> Prefix {
    let a = 1 + i / 65536;
    let b = (i / 256) % 256;
    let c = i % 256;
    p(&format!("10.{a}.{b}.{c}/32"))
}

#[test]
fn large_batches_attribute_errors_to_the_right_ops() {
    let ns = setup();
    ns.block_on(|| async {
        let fib = new_fib();
        let n = 3000u32;
        let ops: Vec<FibOp> = (0..n)
            .map(|i| {
                let gw = if i % 100 == 37 {
                    "192.0.2.1"
                } else {
                    "10.0.0.1"
                };
                FibOp::Replace(KernelRoute {
                    prefix: bulk_prefix(i),
                    next_hops: vec![ip(gw)],
                })
            })
            .collect();
        let report = fib.apply(ops).await;
        let mut failed: Vec<Prefix> = report.errors.iter().map(|(op, _)| op.prefix()).collect();
        failed.sort();
        let mut expected_failed: Vec<Prefix> =
            (0..n).filter(|i| i % 100 == 37).map(bulk_prefix).collect();
        expected_failed.sort();
        assert_eq!(failed, expected_failed);
        assert_eq!(report.ok, 2970);
        let dumped = fib.dump().await.expect("dump");
        assert_eq!(dumped.len(), 2970);
        assert_eq!(kernel_routes(&ns).len(), 2970);
        assert_eq!(dump_map(dumped), kernel_routes(&ns));
        // The compact dump spans many datagrams and shares the one next-hop set.
        let compact = fib.dump_compact().await.expect("compact dump");
        assert_eq!(compact.routes.len(), 2970);
        assert_eq!(compact.hop_sets, vec![vec![ip("10.0.0.1")]]);
        assert_eq!(compact.unparsable, 0);
        // Delete everything, including the 30 never installed.
        let deletes = (0..n).map(|i| FibOp::Delete(bulk_prefix(i))).collect();
        apply_ok(&fib, deletes).await;
        assert!(kernel_routes(&ns).is_empty());
    });
}

#[test]
fn link_local_next_hop_uses_configured_interface() {
    let ns = setup();
    let ifindex: u32 = ns.ip_json(&["link", "show", "d0"])[0]["ifindex"]
        .as_u64()
        .expect("ifindex") as u32;
    ns.block_on(|| async {
        let fib = new_fib().with_ifindex(ifindex);
        apply_ok(
            &fib,
            vec![
                FibOp::Replace(route("2001:db8:7::/48", &["fe80::1"])),
                FibOp::Replace(route("2001:db8:8::/48", &["fe80::1", "fe80::2"])),
            ],
        )
        .await;
        assert_eq!(
            kernel_routes(&ns),
            map(&[
                ("2001:db8:7::/48", &["fe80::1"]),
                ("2001:db8:8::/48", &["fe80::1", "fe80::2"]),
            ])
        );
        let raw = ns.ip_json(&["-6", "route", "show", "2001:db8:7::/48", "proto", "200"]);
        assert_eq!(raw[0]["dev"].as_str(), Some("d0"));
    });
}

fn set(prefix: &str, hops: &[&str]) -> FibCommand {
    FibCommand::Set {
        prefix: p(prefix),
        next_hops: hops.iter().map(|h| ip(h)).collect(),
    }
}

/// Static on-link routes (the VXLAN datapath's `via VTEP dev vxlan onlink`): installed with
/// RTNH_F_ONLINK through a gateway on no connected subnet, read back by the dump as the same
/// next hop, shadowing a learned route which comes back when the static route goes.
#[test]
fn fib_task_barrier_answers_once_earlier_commands_are_in_the_kernel() {
    let ns = setup();
    ns.block_on(|| async {
        let stats = Arc::new(FibStats::default());
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let task = spawn_fib_task(new_fib(), rx, Arc::clone(&stats));
        for k in 0..50u8 {
            tx.send(set(&format!("10.245.{k}.0/24"), &["10.0.0.9"]))
                .await
                .expect("send");
        }
        let (ack, done) = tokio::sync::oneshot::channel();
        tx.send(FibCommand::Barrier(ack)).await.expect("send");
        tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("barrier answered")
            .expect("barrier sender kept");
        // No waiting: everything sent before the barrier is already in the kernel.
        assert_eq!(kernel_routes(&ns).len(), 50);
        tx.send(FibCommand::Shutdown).await.expect("send");
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    });
}

#[test]
fn fib_task_static_without_next_hops_suppresses_the_learned_route() {
    let ns = setup();
    ns.block_on(|| async {
        let stats = Arc::new(FibStats::default());
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let task = spawn_fib_task(new_fib(), rx, Arc::clone(&stats));
        tx.send(set("10.244.9.0/25", &["10.0.0.9"]))
            .await
            .expect("send");
        let learned = map(&[("10.244.9.0/25", &["10.0.0.9"])]);
        wait_for("learned route", Duration::from_secs(5), || {
            kernel_routes(&ns) == learned
        })
        .await;
        let suppress = vec![KernelRoute {
            prefix: p("10.244.9.0/25"),
            next_hops: vec![],
        }];
        tx.send(FibCommand::SetStatic(suppress))
            .await
            .expect("send");
        wait_for("suppressed", Duration::from_secs(5), || {
            kernel_routes(&ns).is_empty()
        })
        .await;
        // A new learned path for it stays suppressed...
        tx.send(set("10.244.9.0/25", &["10.0.0.8"]))
            .await
            .expect("send");
        let (ack, done) = tokio::sync::oneshot::channel();
        tx.send(FibCommand::Barrier(ack)).await.expect("send");
        let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        assert!(kernel_routes(&ns).is_empty());
        // ...until the suppression goes.
        tx.send(FibCommand::SetStatic(vec![])).await.expect("send");
        let back = map(&[("10.244.9.0/25", &["10.0.0.8"])]);
        wait_for("learned route back", Duration::from_secs(5), || {
            kernel_routes(&ns) == back
        })
        .await;
        tx.send(FibCommand::Shutdown).await.expect("send");
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    });
}

#[test]
fn fib_task_installs_onlink_static_routes() {
    let ns = setup();
    ns.block_on(|| async {
        let dev = ifindex_of(&ns, "d0");
        let vtep = |gw: &str| NextHop::onlink(gw.parse().expect("ip"), dev);
        let stats = Arc::new(FibStats::default());
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let task = spawn_fib_task(new_fib(), rx, Arc::clone(&stats));
        tx.send(set("10.244.2.0/24", &["10.0.0.9"]))
            .await
            .expect("send");
        let statics = vec![
            KernelRoute {
                prefix: p("10.244.2.0/24"),
                next_hops: vec![vtep("10.244.2.0")],
            },
            KernelRoute {
                prefix: p("10.244.3.0/24"),
                next_hops: vec![vtep("10.244.3.0"), ip("10.0.0.8")],
            },
        ];
        tx.send(FibCommand::SetStatic(statics.clone()))
            .await
            .expect("send");
        let mut want = RouteMap::new();
        for r in &statics {
            let mut hops = r.next_hops.clone();
            hops.sort();
            want.insert(r.prefix, hops);
        }
        wait_for("on-link routes installed", Duration::from_secs(5), || {
            kernel_routes(&ns) == want
        })
        .await;
        let out = ns.ip(&["-4", "route", "show", "10.244.2.0/24", "proto", "200"]);
        assert!(
            out.contains("via 10.244.2.0 dev d0") && out.contains("onlink"),
            "{out}"
        );
        let mut dumped = dump_map(new_fib().dump().await.expect("dump"));
        for hops in dumped.values_mut() {
            hops.sort();
        }
        assert_eq!(
            dumped, want,
            "the dump reads on-link next hops back unchanged"
        );
        // A resync finds nothing to repair (the dump matches what we asked for).
        let errors = stats.install_errors.load(Ordering::Relaxed);
        assert_eq!(errors, 0);
        // The static routes go: the learned route comes back, the other prefix is removed.
        tx.send(FibCommand::SetStatic(vec![])).await.expect("send");
        let learned = map(&[("10.244.2.0/24", &["10.0.0.9"])]);
        wait_for("learned route back", Duration::from_secs(5), || {
            kernel_routes(&ns) == learned
        })
        .await;
        tx.send(FibCommand::Shutdown).await.expect("send");
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    });
}

/// With the default (slow) periodic resync, the kernel monitor repairs a route of ours
/// deleted by hand and the routes an interface bounce flushed, without waiting for the
/// resync period.
#[test]
fn fib_task_monitor_repairs_deleted_and_flushed_routes_quickly() {
    let ns = setup();
    ns.block_on(|| async {
        let stats = Arc::new(FibStats::default());
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let config = FibTaskConfig {
            resync_interval: Duration::from_secs(60),
            ..FibTaskConfig::default()
        };
        let task = spawn_fib_task_with(new_fib(), rx, Arc::clone(&stats), config);
        tx.send(set("10.1.0.0/16", &["10.0.0.1"]))
            .await
            .expect("send");
        tx.send(set("2001:db8:1::/48", &["2001:db8::1"]))
            .await
            .expect("send");
        let want = map(&[
            ("10.1.0.0/16", &["10.0.0.1"]),
            ("2001:db8:1::/48", &["2001:db8::1"]),
        ]);
        wait_for("routes installed", Duration::from_secs(5), || {
            kernel_routes(&ns) == want
        })
        .await;
        ns.ip(&["route", "del", "10.1.0.0/16", "proto", "200"]);
        wait_for(
            "deleted route repaired by the monitor",
            Duration::from_secs(2),
            || kernel_routes(&ns) == want,
        )
        .await;
        // A link bounce flushes routes through the link (IPv4 silently; the IPv6 address,
        // and with it the IPv6 route's gateway, goes with the link, so only IPv4 can come
        // back).
        ns.ip(&["link", "set", "d0", "down"]);
        wait_for("IPv4 route flushed", Duration::from_secs(2), || {
            !kernel_routes(&ns).contains_key(&p("10.1.0.0/16"))
        })
        .await;
        ns.ip(&["link", "set", "d0", "up"]);
        wait_for(
            "flushed route repaired after the link came back",
            Duration::from_secs(2),
            || kernel_routes(&ns).get(&p("10.1.0.0/16")) == Some(&vec![ip("10.0.0.1")]),
        )
        .await;
        tx.send(FibCommand::Shutdown).await.expect("send");
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    });
}

#[test]
fn fib_task_keeps_stale_routes_until_converged() {
    let ns = setup();
    ns.block_on(|| async {
        // A previous run left three routes.
        {
            let previous = new_fib();
            apply_ok(
                &previous,
                vec![
                    FibOp::Replace(route("10.1.0.0/16", &["10.0.0.1"])),
                    FibOp::Replace(route("10.2.0.0/16", &["10.0.0.1"])),
                    FibOp::Replace(route("2001:db8:2::/48", &["2001:db8::1"])),
                ],
            )
            .await;
        }
        let stats = Arc::new(FibStats::default());
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let config = FibTaskConfig {
            resync_interval: Duration::from_millis(150),
            ..FibTaskConfig::default()
        };
        let task = spawn_fib_task_with(new_fib(), rx, Arc::clone(&stats), config);
        // Routing restarts: 10.1 stays (new next hops), 10.3 is new; 10.2 and the v6 route
        // are not (yet) re-announced.
        tx.send(set("10.1.0.0/16", &["10.0.0.1", "10.0.0.2"]))
            .await
            .expect("send");
        tx.send(set("10.3.0.0/16", &["10.0.0.3"]))
            .await
            .expect("send");
        let with_stale = map(&[
            ("10.1.0.0/16", &["10.0.0.1", "10.0.0.2"]),
            ("10.2.0.0/16", &["10.0.0.1"]),
            ("10.3.0.0/16", &["10.0.0.3"]),
            ("2001:db8:2::/48", &["2001:db8::1"]),
        ]);
        wait_for("desired routes installed", Duration::from_secs(5), || {
            kernel_routes(&ns) == with_stale
        })
        .await;
        // Several resyncs happen before convergence: stale routes must survive them.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(kernel_routes(&ns), with_stale);
        assert_eq!(stats.installed.load(Ordering::Relaxed), 4);
        assert_eq!(stats.removed.load(Ordering::Relaxed), 0);

        tx.send(FibCommand::Converged).await.expect("send");
        let converged = map(&[
            ("10.1.0.0/16", &["10.0.0.1", "10.0.0.2"]),
            ("10.3.0.0/16", &["10.0.0.3"]),
        ]);
        wait_for("stale routes removed", Duration::from_secs(5), || {
            kernel_routes(&ns) == converged
        })
        .await;
        wait_for("stats updated", Duration::from_secs(2), || {
            stats.installed.load(Ordering::Relaxed) == 2
        })
        .await;
        assert_eq!(stats.removed.load(Ordering::Relaxed), 2);
        assert_eq!(stats.install_errors.load(Ordering::Relaxed), 0);

        // Explicit removal after convergence.
        tx.send(set("10.3.0.0/16", &[])).await.expect("send");
        let after_removal = map(&[("10.1.0.0/16", &["10.0.0.1", "10.0.0.2"])]);
        wait_for("withdrawn route removed", Duration::from_secs(5), || {
            kernel_routes(&ns) == after_removal
        })
        .await;

        // Shutdown leaves routes in place.
        tx.send(FibCommand::Shutdown).await.expect("send");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("task exits")
            .expect("task ok");
        assert_eq!(kernel_routes(&ns), after_removal);
    });
}

/// Blackholes for own pod blocks: installed as `blackhole` routes, they shadow a learned route
/// for the same prefix (which comes back when the blackhole goes), survive a restart of the
/// task like any route of ours, and are removed when no longer wanted.
#[test]
fn fib_task_blackholes_shadow_learned_routes() {
    let ns = setup();
    ns.block_on(|| async {
        let stats = Arc::new(FibStats::default());
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let task = spawn_fib_task(new_fib(), rx, Arc::clone(&stats));
        tx.send(set("10.244.0.0/26", &["10.0.0.9"]))
            .await
            .expect("send");
        tx.send(FibCommand::SetStatic(vec![
            blackhole("10.244.0.0/26"),
            blackhole("fd00:10:244::/122"),
        ]))
        .await
        .expect("send");
        let blackholed = map(&[
            ("10.244.0.0/26", &["0.0.0.0"]),
            ("fd00:10:244::/122", &["0.0.0.0"]),
        ]);
        wait_for("blackholes installed", Duration::from_secs(5), || {
            kernel_routes(&ns) == blackholed
        })
        .await;
        let out = ns.ip(&["-4", "route", "show", "proto", "200"]);
        assert!(out.contains("blackhole 10.244.0.0/26"), "{out}");
        // A learned route for a blackholed prefix waits behind the blackhole.
        tx.send(set("10.244.0.0/26", &["10.0.0.7"]))
            .await
            .expect("send");
        tx.send(set("10.9.0.0/16", &["10.0.0.7"]))
            .await
            .expect("send");
        let with_other = map(&[
            ("10.244.0.0/26", &["0.0.0.0"]),
            ("fd00:10:244::/122", &["0.0.0.0"]),
            ("10.9.0.0/16", &["10.0.0.7"]),
        ]);
        wait_for("other route installed", Duration::from_secs(5), || {
            kernel_routes(&ns) == with_other
        })
        .await;
        // The block is released: the shadowed learned route comes back, the v6 one goes.
        tx.send(FibCommand::SetStatic(vec![])).await.expect("send");
        let released = map(&[
            ("10.244.0.0/26", &["10.0.0.7"]),
            ("10.9.0.0/16", &["10.0.0.7"]),
        ]);
        wait_for(
            "blackholes replaced/removed",
            Duration::from_secs(5),
            || kernel_routes(&ns) == released,
        )
        .await;
        assert_eq!(stats.install_errors.load(Ordering::Relaxed), 0);
        // Blackholes are read back by the dump as such.
        tx.send(FibCommand::SetStatic(vec![blackhole("10.244.1.0/26")]))
            .await
            .expect("send");
        wait_for("new blackhole", Duration::from_secs(5), || {
            kernel_routes(&ns).get(&p("10.244.1.0/26")) == Some(&vec![BLACKHOLE])
        })
        .await;
        let dumped = new_fib().dump().await.expect("dump");
        assert!(
            dumped
                .iter()
                .any(|r| r.prefix == p("10.244.1.0/26") && r.next_hops == vec![BLACKHOLE]),
            "{dumped:?}"
        );
        tx.send(FibCommand::Shutdown).await.expect("send");
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    });
}

#[test]
fn fib_task_coalesces_queued_updates() {
    let ns = setup();
    ns.block_on(|| async {
        let stats = Arc::new(FibStats::default());
        let (tx, rx) = tokio::sync::mpsc::channel(10_000);
        // Queue everything before the task runs: the last value for each prefix wins.
        for i in 0..2000u32 {
            let hop = if i % 2 == 0 { "10.0.0.1" } else { "10.0.0.2" };
            tx.send(FibCommand::Set {
                prefix: bulk_prefix(i % 1000),
                next_hops: vec![ip(hop)],
            })
            .await
            .expect("send");
        }
        tx.send(FibCommand::Converged).await.expect("send");
        tx.send(FibCommand::Shutdown).await.expect("send");
        let task = spawn_fib_task_with(new_fib(), rx, Arc::clone(&stats), FibTaskConfig::default());
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("task exits")
            .expect("task ok");
        let routes = kernel_routes(&ns);
        assert_eq!(routes.len(), 1000);
        // i and i+1000 have the same parity, so prefix k ends with k's parity hop.
        for k in 0..1000u32 {
            let want = if k % 2 == 0 { "10.0.0.1" } else { "10.0.0.2" };
            assert_eq!(routes.get(&bulk_prefix(k)), Some(&vec![ip(want)]));
        }
        assert_eq!(stats.installed.load(Ordering::Relaxed), 1000);
    });
}

#[test]
fn fib_task_resync_repairs_kernel_changes() {
    let ns = setup();
    ns.ip(&[
        "route",
        "add",
        "10.60.0.0/16",
        "via",
        "10.0.0.1",
        "proto",
        "static",
    ]);
    ns.block_on(|| async {
        let stats = Arc::new(FibStats::default());
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let config = FibTaskConfig {
            resync_interval: Duration::from_millis(300),
            ..FibTaskConfig::default()
        };
        let task = spawn_fib_task_with(new_fib(), rx, Arc::clone(&stats), config);
        tx.send(set("10.1.0.0/16", &["10.0.0.1"]))
            .await
            .expect("send");
        tx.send(set("10.2.0.0/16", &["10.0.0.1", "10.0.0.2"]))
            .await
            .expect("send");
        tx.send(set("2001:db8:1::/48", &["2001:db8::1", "2001:db8::2"]))
            .await
            .expect("send");
        tx.send(FibCommand::Converged).await.expect("send");
        let desired = map(&[
            ("10.1.0.0/16", &["10.0.0.1"]),
            ("10.2.0.0/16", &["10.0.0.1", "10.0.0.2"]),
            ("2001:db8:1::/48", &["2001:db8::1", "2001:db8::2"]),
        ]);
        wait_for("routes installed", Duration::from_secs(5), || {
            kernel_routes(&ns) == desired
        })
        .await;

        // Someone deletes one of our routes, rewrites another, and adds one with our protocol.
        ns.ip(&["route", "del", "10.1.0.0/16", "proto", "200"]);
        ns.ip(&["-6", "route", "del", "2001:db8:1::/48", "proto", "200"]);
        ns.ip(&[
            "route",
            "replace",
            "10.2.0.0/16",
            "via",
            "10.0.0.9",
            "proto",
            "200",
        ]);
        ns.ip(&[
            "route",
            "add",
            "10.70.0.0/16",
            "via",
            "10.0.0.1",
            "proto",
            "200",
        ]);
        assert_ne!(kernel_routes(&ns), desired);
        wait_for("resync repaired the kernel", Duration::from_secs(3), || {
            kernel_routes(&ns) == desired
        })
        .await;
        // The static route was never touched.
        assert_eq!(
            kernel_routes_proto(&ns, "static"),
            map(&[("10.60.0.0/16", &["10.0.0.1"])])
        );
        tx.send(FibCommand::Shutdown).await.expect("send");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("task exits")
            .expect("task ok");
    });
}

// ---------------------------------------------------------------------------------------
// Benchmark: 100k /32 routes through Fib::apply vs. a raw batched-netlink baseline.
// cargo test --release -p agent --test fib_kernel -- --ignored --nocapture

const BENCH_ROUTES: u32 = 100_000;

fn bench_ops() -> Vec<FibOp> {
    (0..BENCH_ROUTES)
        .map(|i| {
            FibOp::Replace(KernelRoute {
                prefix: bulk_prefix(i),
                next_hops: vec![ip("10.0.0.1")],
            })
        })
        .collect()
}

/// The kernel's own limit, roughly: all RTM_NEWROUTE messages serialized up front, then
/// sent back-to-back on one socket in chunks of 256 (each with NLM_F_ACK), reading the
/// chunk's ACKs after each send.
fn raw_baseline(table: u32, protocol: u8) -> Duration {
    use netlink_packet_route::{
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
        AddressFamily, RouteNetlinkMessage,
    };
    use rtnetlink::packet_core::{
        NetlinkBuffer, NetlinkMessage, NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
        NLM_F_REQUEST,
    };
    use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

    const CHUNK: usize = 256;
    let mut chunks: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut current = Vec::new();
    let mut in_chunk = 0;
    for i in 0..BENCH_ROUTES {
        let prefix = bulk_prefix(i);
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = prefix.prefix_len();
        msg.header.table = table as u8;
        msg.header.protocol = RouteProtocol::from(protocol);
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                prefix.addr(),
            )));
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(
                ip("10.0.0.1").gateway,
            )));
        let mut nl = NetlinkMessage::from(RouteNetlinkMessage::NewRoute(msg));
        nl.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        nl.header.sequence_number = i + 1;
        nl.finalize();
        let start = current.len();
        current.resize(start + nl.buffer_len(), 0);
        nl.serialize(&mut current[start..]);
        in_chunk += 1;
        if in_chunk == CHUNK {
            chunks.push((std::mem::take(&mut current), in_chunk));
            in_chunk = 0;
        }
    }
    if in_chunk > 0 {
        chunks.push((current, in_chunk));
    }

    let mut socket = Socket::new(NETLINK_ROUTE).expect("socket");
    socket.bind_auto().expect("bind");
    socket.set_cap_ack(true).expect("cap ack");
    let _ = socket.set_rx_buf_sz(4 * 1024 * 1024);
    let kernel = SocketAddr::new(0, 0);
    let mut rbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let started = Instant::now();
    let mut errors = 0usize;
    for (bytes, count) in &chunks {
        socket.send_to(bytes, &kernel, 0).expect("send");
        let mut acks = 0;
        while acks < *count {
            rbuf.clear();
            socket.recv_from(&mut rbuf, 0).expect("recv");
            let mut rest: &[u8] = &rbuf;
            while let Ok(nl) = NetlinkBuffer::new_checked(rest) {
                let len = nl.length() as usize;
                if nl.message_type() == NLMSG_ERROR {
                    acks += 1;
                    if nl.payload().get(0..4) != Some(&[0, 0, 0, 0][..]) {
                        errors += 1;
                    }
                }
                rest = match rest.get(((len + 3) & !3)..) {
                    Some(r) if len > 0 && !r.is_empty() => r,
                    _ => break,
                };
            }
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(errors, 0, "baseline had kernel errors");
    elapsed
}

fn rate(n: u32, d: Duration) -> f64 {
    f64::from(n) / d.as_secs_f64()
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn bench_100k_routes() {
    // Fib::apply
    let ns_fib = setup();
    let (fib_time, dump_time) = ns_fib.block_on(|| async {
        let fib = new_fib();
        let ops = bench_ops();
        let started = Instant::now();
        let report = fib.apply(ops).await;
        let elapsed = started.elapsed();
        assert_eq!(
            report.ok,
            BENCH_ROUTES as usize,
            "{:?}",
            report.errors.first()
        );
        let started = Instant::now();
        let dumped = fib.dump().await.expect("dump");
        let dump_time = started.elapsed();
        assert_eq!(dumped.len(), BENCH_ROUTES as usize);
        (elapsed, dump_time)
    });
    drop(ns_fib);

    // Raw baseline.
    let ns_raw = setup();
    let raw_time = ns_raw.block_on(|| async { raw_baseline(MAIN_TABLE, ROUTELET_PROTOCOL) });
    let installed = ns_raw
        .ip(&["-4", "route", "show", "proto", "200"])
        .lines()
        .count();
    assert_eq!(installed, BENCH_ROUTES as usize);
    drop(ns_raw);

    // For comparison: rtnetlink request/response, 256 requests in flight on one handle.
    let ns_rtnl = setup();
    let rtnl_time = ns_rtnl.block_on(|| async {
        use futures::StreamExt;
        let (conn, handle, _) = rtnetlink::new_connection().expect("connection");
        tokio::spawn(conn);
        let messages: Vec<_> = (0..BENCH_ROUTES)
            .map(|i| {
                let prefix = bulk_prefix(i);
                let IpAddr::V4(addr) = prefix.addr() else {
                    unreachable!("bench prefixes are IPv4")
                };
                rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(addr, prefix.prefix_len())
                    .gateway("10.0.0.1".parse().expect("gw"))
                    .protocol(netlink_packet_route::route::RouteProtocol::from(
                        ROUTELET_PROTOCOL,
                    ))
                    .build()
            })
            .collect();
        let started = Instant::now();
        let results: Vec<_> = futures::stream::iter(messages)
            .map(|m| handle.route().add(m).replace().execute())
            .buffer_unordered(256)
            .collect()
            .await;
        let elapsed = started.elapsed();
        assert!(results.iter().all(Result::is_ok));
        elapsed
    });
    drop(ns_rtnl);

    println!(
        "BENCH {BENCH_ROUTES} /32 routes: Fib::apply {:.3}s ({:.0} routes/s); raw baseline \
         {:.3}s ({:.0} routes/s); ratio Fib/raw = {:.2}; rtnetlink pipelined (256 in flight) \
         {:.3}s ({:.0} routes/s, ratio {:.2}); Fib::dump of {BENCH_ROUTES}: {:.3}s",
        fib_time.as_secs_f64(),
        rate(BENCH_ROUTES, fib_time),
        raw_time.as_secs_f64(),
        rate(BENCH_ROUTES, raw_time),
        raw_time.as_secs_f64() / fib_time.as_secs_f64(),
        rtnl_time.as_secs_f64(),
        rate(BENCH_ROUTES, rtnl_time),
        raw_time.as_secs_f64() / rtnl_time.as_secs_f64(),
        dump_time.as_secs_f64(),
    );
}

#[test]
fn fib_task_never_overwrites_another_protocols_route() {
    let ns = setup();
    // Another daemon owns 10.60.0.0/16 (same table, same metric as ours would be).
    ns.ip(&[
        "route",
        "add",
        "10.60.0.0/16",
        "via",
        "10.0.0.1",
        "proto",
        "static",
    ]);
    let theirs = kernel_routes_proto(&ns, "static");
    ns.block_on(|| async {
        let stats = Arc::new(FibStats::default());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let task = spawn_fib_task(new_fib(), rx, Arc::clone(&stats));
        tx.send(set("10.60.0.0/16", &["10.0.0.2"]))
            .await
            .expect("send");
        tx.send(set("10.61.0.0/16", &["10.0.0.2"]))
            .await
            .expect("send");
        wait_for("our free prefix installed", Duration::from_secs(5), || {
            kernel_routes(&ns) == map(&[("10.61.0.0/16", &["10.0.0.2"])])
        })
        .await;
        wait_for("the refused add is counted", Duration::from_secs(5), || {
            stats.install_errors.load(Ordering::Relaxed) >= 1
        })
        .await;
        tx.send(FibCommand::Shutdown).await.expect("send");
        task.await.expect("fib task exits");
    });
    assert_eq!(kernel_routes_proto(&ns, "static"), theirs);
    assert_eq!(theirs.len(), 1);
}
