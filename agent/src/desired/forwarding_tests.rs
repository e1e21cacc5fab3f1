//! Table-driven tests of the forwarding plan: per backend and `cross_subnet`, which path each
//! remote node gets (direct, learned, VXLAN, routed), the static routes and VTEP peers that
//! follow, dual stack, and bad input (overlapping pod CIDRs, missing addresses, no route).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use bgp::types::Prefix;

use super::forwarding::*;
use super::model::{NodeInfo, Snapshot};
use crate::agent_config::{parse_agent, AgentSettings};
use crate::fib::NextHop;

fn settings(extra: &str) -> AgentSettings {
    let text = format!(
        "asn: 64512\ncluster_cidr: [10.244.0.0/16, 'fd00:10:244::/56']\nservice_cidr: 10.96.0.0/12\n{extra}"
    );
    parse_agent(&text, Path::new("test.yaml")).expect("test settings are valid")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn pfx(s: &str) -> Prefix {
    s.parse().expect("test prefix")
}

/// Node `nK`: 10.0.R.K on rack R, pod CIDR 10.244.K.0/24.
fn node(k: u8, rack: u8) -> NodeInfo {
    NodeInfo {
        name: format!("n{k}"),
        addresses: vec![ip(&format!("10.0.{rack}.{k}"))],
        pod_cidrs: vec![pfx(&format!("10.244.{k}.0/24"))],
        ..NodeInfo::default()
    }
}

fn snapshot(nodes: Vec<NodeInfo>) -> Snapshot {
    Snapshot {
        nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
        ..Snapshot::default()
    }
}

/// Node n1 on rack 1 (10.0.1.0/24 connected), VXLAN device 7.
fn view() -> KernelView {
    KernelView {
        connected: vec![pfx("10.0.1.0/24")],
        gateways: BTreeMap::from([(ip("10.0.2.3"), ip("10.0.1.254"))]),
        vxlan_v4: Some(7),
        vxlan_v6: Some(8),
    }
}

fn paths(plan: &ForwardingPlan) -> Vec<(&str, PathKind)> {
    plan.paths
        .iter()
        .filter(|((_, v4), _)| *v4)
        .map(|((n, _), p)| (n.as_str(), *p))
        .collect()
}

fn routes(plan: &ForwardingPlan) -> Vec<(String, Vec<NextHop>)> {
    plan.routes
        .iter()
        .map(|r| (r.prefix.to_string(), r.next_hops.clone()))
        .collect()
}

#[test]
fn path_per_backend_and_cross_subnet() {
    // n2 shares rack 1 with n1; n3 is on rack 2 (not connected, reachable via 10.0.1.254).
    let snap = snapshot(vec![node(1, 1), node(2, 1), node(3, 2)]);
    let me = &snap.nodes["n1"];
    let onlink = |gw: &str| vec![NextHop::onlink(ip(gw), 7)];
    let via = |gw: &str| vec![NextHop::from(ip(gw))];
    struct Case {
        config: &'static str,
        paths: Vec<(&'static str, PathKind)>,
        routes: Vec<(String, Vec<NextHop>)>,
        peers: usize,
    }
    let cases = vec![
        Case {
            config: "",
            paths: vec![("n2", PathKind::Learned), ("n3", PathKind::Vxlan)],
            routes: vec![("10.244.3.0/24".into(), onlink("10.244.3.1"))],
            peers: 1,
        },
        Case {
            config: "cross_subnet: routed",
            paths: vec![("n2", PathKind::Learned), ("n3", PathKind::Routed)],
            routes: vec![("10.244.3.0/24".into(), via("10.0.1.254"))],
            peers: 0,
        },
        Case {
            config: "backend: host-gw",
            paths: vec![("n2", PathKind::Direct), ("n3", PathKind::Vxlan)],
            routes: vec![
                ("10.244.2.0/24".into(), via("10.0.1.2")),
                ("10.244.3.0/24".into(), onlink("10.244.3.1")),
            ],
            peers: 1,
        },
        Case {
            config: "backend: host-gw\ncross_subnet: routed",
            paths: vec![("n2", PathKind::Direct), ("n3", PathKind::Routed)],
            routes: vec![
                ("10.244.2.0/24".into(), via("10.0.1.2")),
                ("10.244.3.0/24".into(), via("10.0.1.254")),
            ],
            peers: 0,
        },
        Case {
            config: "backend: vxlan",
            paths: vec![("n2", PathKind::Vxlan), ("n3", PathKind::Vxlan)],
            routes: vec![
                ("10.244.2.0/24".into(), onlink("10.244.2.1")),
                ("10.244.3.0/24".into(), onlink("10.244.3.1")),
            ],
            peers: 2,
        },
    ];
    for case in cases {
        let s = settings(case.config);
        let plan = forwarding_plan(&s, &snap, me, &view());
        assert_eq!(paths(&plan), case.paths, "{}", case.config);
        assert_eq!(routes(&plan), case.routes, "{}", case.config);
        assert_eq!(plan.peers_v4.len(), case.peers, "{}", case.config);
        assert!(
            plan.problems.is_empty(),
            "{}: {:?}",
            case.config,
            plan.problems
        );
    }
}

#[test]
fn vtep_peers_carry_the_derived_or_annotated_mac() {
    let mut n3 = node(3, 2);
    let snap = snapshot(vec![node(1, 1), node(2, 1), n3.clone()]);
    let s = settings("backend: vxlan");
    let plan = forwarding_plan(&s, &snap, &snap.nodes["n1"], &view());
    let peers: Vec<VtepPeer> = plan.peers_v4.iter().copied().collect();
    assert_eq!(
        peers,
        vec![
            VtepPeer {
                vtep: ip("10.244.2.1"),
                mac: [0x0a, 0x58, 10, 244, 2, 1],
                underlay: ip("10.0.1.2"),
            },
            VtepPeer {
                vtep: ip("10.244.3.1"),
                mac: [0x0a, 0x58, 10, 244, 3, 1],
                underlay: ip("10.0.2.3"),
            },
        ]
    );
    n3.vtep_mac_v4 = Some([0x02, 0, 0, 0, 0, 3]);
    let snap = snapshot(vec![node(1, 1), node(2, 1), n3]);
    let plan = forwarding_plan(&s, &snap, &snap.nodes["n1"], &view());
    assert!(plan
        .peers_v4
        .iter()
        .any(|p| p.vtep == ip("10.244.3.1") && p.mac == [0x02, 0, 0, 0, 0, 3]));
}

#[test]
fn local_vteps_only_when_vxlan_may_be_used() {
    let me = node(1, 1);
    let (v4, v6) = local_vteps(&settings(""), &me);
    assert_eq!(
        v4,
        Some(LocalVtep {
            vtep: ip("10.244.1.1"),
            mac: [0x0a, 0x58, 10, 244, 1, 1],
            local: ip("10.0.1.1"),
        })
    );
    assert_eq!(v6, None, "no IPv6 address or pod CIDR");
    assert_eq!(
        local_vteps(&settings("cross_subnet: routed"), &me),
        (None, None)
    );
    assert!(
        local_vteps(&settings("backend: vxlan\ncross_subnet: routed"), &me)
            .0
            .is_some()
    );
}

#[test]
fn dual_stack_nodes_get_one_path_per_family() {
    let dual = |k: u8| NodeInfo {
        addresses: vec![ip(&format!("10.0.1.{k}")), ip(&format!("2001:db8::{k}"))],
        pod_cidrs: vec![
            pfx(&format!("10.244.{k}.0/24")),
            pfx(&format!("fd00:10:244:{k}::/64")),
        ],
        ..node(k, 1)
    };
    let snap = snapshot(vec![dual(1), dual(2)]);
    let mut v = view();
    v.connected.push(pfx("2001:db8::/64"));
    let plan = forwarding_plan(&settings("backend: vxlan"), &snap, &snap.nodes["n1"], &v);
    assert_eq!(
        plan.paths.get(&("n2".into(), false)),
        Some(&PathKind::Vxlan)
    );
    assert_eq!(
        routes(&plan),
        vec![
            (
                "10.244.2.0/24".into(),
                vec![NextHop::onlink(ip("10.244.2.1"), 7)]
            ),
            (
                "fd00:10:244:2::/64".into(),
                vec![NextHop::onlink(ip("fd00:10:244:2::1"), 8)]
            ),
        ]
    );
    assert_eq!(
        plan.peers_v6.iter().next().map(|p| p.underlay),
        Some(ip("2001:db8::2"))
    );
    let (_, v6) = local_vteps(&settings("backend: vxlan"), &snap.nodes["n1"]);
    assert_eq!(v6.map(|v| v.vtep), Some(ip("fd00:10:244:1::1")));
}

#[test]
fn bad_input_is_a_problem_of_the_node_at_fault() {
    // n2 claims n1's pod CIDR; n3 has no address; n4 is on no subnet and has no route.
    let mut n2 = node(2, 1);
    n2.pod_cidrs = vec![pfx("10.244.1.0/25")];
    let mut n3 = node(3, 1);
    n3.addresses.clear();
    let n4 = node(4, 3);
    let snap = snapshot(vec![node(1, 1), n2, n3, n4]);
    let plan = forwarding_plan(
        &settings("backend: host-gw\ncross_subnet: routed"),
        &snap,
        &snap.nodes["n1"],
        &view(),
    );
    let reasons: Vec<(String, &str)> = plan
        .problems
        .iter()
        .map(|p| (p.object.to_string(), p.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("node n2".to_string(), "PodCIDROverlap"),
            ("node n3".to_string(), "NoInternalIP"),
            ("node n4".to_string(), "NodeUnreachable"),
        ]
    );
    // n2's overlapping prefix is suppressed (no learned route may divert n1's traffic).
    assert_eq!(routes(&plan), vec![("10.244.1.0/25".to_string(), vec![])]);
    assert_eq!(
        paths(&plan),
        vec![("n3", PathKind::Unreachable), ("n4", PathKind::Unreachable)]
    );
    // Every node reaches the same verdict: on n2 too, n2 is at fault and n1 is routed.
    let on_n2 = forwarding_plan(
        &settings("backend: host-gw\ncross_subnet: routed"),
        &snap,
        &snap.nodes["n2"],
        &view(),
    );
    assert!(on_n2
        .problems
        .iter()
        .any(|p| p.object.to_string() == "node n2" && p.reason == "PodCIDROverlap"));
    assert_eq!(
        routes(&on_n2),
        vec![(
            "10.244.1.0/24".to_string(),
            vec![NextHop::from(ip("10.0.1.1"))]
        )]
    );
}

#[test]
fn no_vxlan_device_means_no_vxlan_routes() {
    let snap = snapshot(vec![node(1, 1), node(3, 2)]);
    let mut v = view();
    v.vxlan_v4 = None;
    let plan = forwarding_plan(&settings(""), &snap, &snap.nodes["n1"], &v);
    assert!(plan.routes.is_empty());
    assert!(plan.peers_v4.is_empty());
    assert_eq!(paths(&plan), vec![("n3", PathKind::Unreachable)]);
}

#[test]
fn pod_blocks_are_routed_through_one_vtep() {
    let s = settings("pod_cidr_source: blocks\nbackend: vxlan");
    let mut n1 = node(1, 1);
    n1.blocks = vec![pfx("10.244.0.0/26")];
    let mut n2 = node(2, 1);
    n2.blocks = vec![pfx("10.244.0.128/26"), pfx("10.244.0.64/26")];
    let snap = snapshot(vec![n1, n2]);
    let plan = forwarding_plan(&s, &snap, &snap.nodes["n1"], &view());
    let hop = vec![NextHop::onlink(ip("10.244.0.65"), 7)];
    assert_eq!(
        routes(&plan),
        vec![
            ("10.244.0.64/26".into(), hop.clone()),
            ("10.244.0.128/26".into(), hop),
        ]
    );
}

#[test]
fn macs_parse_and_format() {
    assert_eq!(
        parse_vtep_mac("0a:58:0a:f4:01:01"),
        Ok([0x0a, 0x58, 10, 244, 1, 1])
    );
    assert_eq!(
        format_mac(&[0x0a, 0x58, 10, 244, 1, 1]),
        "0a:58:0a:f4:01:01"
    );
    for bad in [
        "",
        "0a:58",
        "0a:58:0a:f4:01:zz",
        "01:00:5e:00:00:01",
        "00:00:00:00:00:00",
    ] {
        assert!(parse_vtep_mac(bad).is_err(), "{bad}");
    }
    assert_eq!(
        vtep_address(&[pfx("10.244.3.0/24")], true),
        Some(ip("10.244.3.1"))
    );
    assert_eq!(vtep_address(&[pfx("10.244.3.0/24")], false), None);
    assert_eq!(vtep_address(&[pfx("10.244.3.7/32")], true), None);
}
