//! Table-driven tests of the desired-state function: topology (mesh, reflectors, live switch,
//! ASN groups, dual stack, external peers), service advertisement (traffic policies, exclusion
//! label, allow lists, pools, classes), pod CIDRs and blocks, and bad input.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use bgp::config::NeighborConfig;
use bgp::types::Prefix;

use super::*;
use crate::agent_config::parse_agent;

const SETTINGS: &str = r#"
asn: 64512
cluster_cidr: [10.244.0.0/16, 'fd00:10:244::/56']
service_cidr: [10.96.0.0/12, 'fd00:10:96::/112']
advertise:
  external_ips: [198.51.100.0/24]
pools:
  - name: default
    cidrs: [203.0.113.0/28]
peers:
  - address: 192.0.2.1
    asn: 65000
"#;

fn settings() -> AgentSettings {
    parse_agent(SETTINGS, Path::new("test.yaml")).expect("test settings are valid")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn pfx(s: &str) -> Prefix {
    s.parse().expect("test prefix")
}

/// Node `nK` at 10.0.0.K (and fd00::K when `v6`), pod CIDR 10.244.K.0/24.
fn node(k: u8) -> NodeInfo {
    NodeInfo {
        name: format!("n{k}"),
        addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, k))],
        pod_cidrs: vec![pfx(&format!("10.244.{k}.0/24"))],
        ..NodeInfo::default()
    }
}

fn rr(mut n: NodeInfo) -> NodeInfo {
    n.route_reflector = Some(Ipv4Addr::new(244, 0, 0, 1));
    n
}

fn with_asn(mut n: NodeInfo, asn: u32) -> NodeInfo {
    n.asn = Some(asn);
    n
}

fn snapshot(nodes: Vec<NodeInfo>) -> Snapshot {
    Snapshot {
        nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
        ..Snapshot::default()
    }
}

/// (address, route-reflector client) of every neighbor that is a cluster node.
fn node_sessions(d: &DesiredState) -> Vec<(IpAddr, bool)> {
    d.neighbors
        .iter()
        .filter(|n| n.address != ip("192.0.2.1"))
        .map(|n| (n.address, n.route_reflector_client))
        .collect()
}

#[test]
fn topology_table() {
    struct Case {
        name: &'static str,
        nodes: Vec<NodeInfo>,
        me: &'static str,
        role: Role,
        sessions: Vec<(&'static str, bool)>,
    }
    let cases = vec![
        Case {
            name: "no reflector: full mesh",
            nodes: vec![node(1), node(2), node(3)],
            me: "n1",
            role: Role::FullMesh,
            sessions: vec![("10.0.0.2", false), ("10.0.0.3", false)],
        },
        Case {
            name: "one reflector: a client peers only with it",
            nodes: vec![node(1), node(2), rr(node(3))],
            me: "n1",
            role: Role::ReflectorClient,
            sessions: vec![("10.0.0.3", false)],
        },
        Case {
            name: "one reflector: it peers with every client",
            nodes: vec![node(1), node(2), rr(node(3))],
            me: "n3",
            role: Role::Reflector,
            sessions: vec![("10.0.0.1", true), ("10.0.0.2", true)],
        },
        Case {
            name: "two reflectors: client",
            nodes: vec![node(1), node(2), rr(node(3)), rr(node(4))],
            me: "n2",
            role: Role::ReflectorClient,
            sessions: vec![("10.0.0.3", false), ("10.0.0.4", false)],
        },
        Case {
            name: "two reflectors: reflector peers with the other as non-client",
            nodes: vec![node(1), node(2), rr(node(3)), rr(node(4))],
            me: "n4",
            role: Role::Reflector,
            sessions: vec![("10.0.0.1", true), ("10.0.0.2", true), ("10.0.0.3", false)],
        },
        Case {
            name: "mesh per ASN: a node in its own AS has no node sessions",
            nodes: vec![with_asn(node(1), 65001), node(2), node(3)],
            me: "n1",
            role: Role::FullMesh,
            sessions: vec![],
        },
        Case {
            name: "mesh per ASN: the others mesh without it",
            nodes: vec![with_asn(node(1), 65001), node(2), node(3)],
            me: "n2",
            role: Role::FullMesh,
            sessions: vec![("10.0.0.3", false)],
        },
        Case {
            name: "a reflector in another AS does not change this AS's mesh",
            nodes: vec![rr(with_asn(node(1), 65001)), node(2), node(3)],
            me: "n2",
            role: Role::FullMesh,
            sessions: vec![("10.0.0.3", false)],
        },
        Case {
            name: "a node without addresses is skipped",
            nodes: vec![
                node(1),
                NodeInfo {
                    addresses: vec![],
                    ..node(2)
                },
            ],
            me: "n1",
            role: Role::FullMesh,
            sessions: vec![],
        },
    ];
    let s = settings();
    for c in cases {
        let d = desired_state(&s, &snapshot(c.nodes), c.me).expect(c.name);
        assert_eq!(d.role, c.role, "{}", c.name);
        let expect: Vec<(IpAddr, bool)> = c.sessions.iter().map(|(a, r)| (ip(a), *r)).collect();
        assert_eq!(node_sessions(&d), expect, "{}", c.name);
        assert_eq!(
            d.cluster_id.is_some(),
            c.role == Role::Reflector,
            "{}",
            c.name
        );
        // The configured ToR peer is on every node, whatever the topology.
        assert!(
            d.neighbors
                .iter()
                .any(|n| n.address == ip("192.0.2.1") && n.asn == 65000),
            "{}",
            c.name
        );
    }
}

/// Annotating a node as reflector changes every node's neighbor set at once; the sessions
/// that survive the switch (client <-> reflector) keep identical settings except the client
/// flag on the reflector's side, so the speaker need not reset them.
#[test]
fn topology_switch_keeps_reflector_sessions() {
    let s = settings();
    let before = snapshot(vec![node(1), node(2), node(3)]);
    let after = snapshot(vec![node(1), node(2), rr(node(3))]);
    let n1_before = desired_state(&s, &before, "n1").expect("n1 before");
    let n1_after = desired_state(&s, &after, "n1").expect("n1 after");
    let kept = |d: &DesiredState| -> Option<NeighborConfig> {
        d.neighbors
            .iter()
            .find(|n| n.address == ip("10.0.0.3"))
            .cloned()
    };
    assert_eq!(
        kept(&n1_before),
        kept(&n1_after),
        "n1's session to n3 is unchanged"
    );
    assert!(n1_after
        .neighbors
        .iter()
        .all(|n| n.address != ip("10.0.0.2")));
    let n3_before = desired_state(&s, &before, "n3").expect("n3 before");
    let n3_after = desired_state(&s, &after, "n3").expect("n3 after");
    for addr in ["10.0.0.1", "10.0.0.2"] {
        let b = n3_before.neighbors.iter().find(|n| n.address == ip(addr));
        let a = n3_after.neighbors.iter().find(|n| n.address == ip(addr));
        let b = b.expect("n3 had a session to the node before");
        let a = a.expect("n3 keeps its session to the node after");
        assert!(!b.route_reflector_client && a.route_reflector_client);
        let mut a = a.clone();
        a.route_reflector_client = false;
        assert_eq!(&a, b, "only the client flag differs");
    }
}

#[test]
fn dual_stack_nodes_peer_per_family_with_local_addresses() {
    let mut a = node(1);
    a.addresses.push(ip("fd00::1"));
    let mut b = node(2);
    b.addresses.push(ip("fd00::2"));
    let c = node(3); // IPv4 only
    let d = desired_state(&settings(), &snapshot(vec![a, b, c]), "n1").expect("n1");
    let sessions: Vec<(IpAddr, Option<IpAddr>, Vec<bgp::types::Family>)> = d
        .neighbors
        .iter()
        .filter(|n| n.address != ip("192.0.2.1"))
        .map(|n| (n.address, n.local_address, n.families.clone()))
        .collect();
    use bgp::types::Family::{Ipv4Unicast, Ipv6Unicast};
    assert_eq!(
        sessions,
        vec![
            (ip("10.0.0.2"), Some(ip("10.0.0.1")), vec![Ipv4Unicast]),
            (ip("10.0.0.3"), Some(ip("10.0.0.1")), vec![Ipv4Unicast]),
            (ip("fd00::2"), Some(ip("fd00::1")), vec![Ipv6Unicast]),
        ]
    );
}

#[test]
fn mesh_sessions_carry_the_mesh_bfd_setting() {
    let mut s = settings();
    let d = desired_state(&s, &snapshot(vec![node(1), node(2)]), "n1").expect("n1");
    assert!(
        d.neighbors.iter().all(|n| n.bfd.is_none()),
        "off by default"
    );
    s.mesh_bfd = Some(bgp::config::BfdTimers::default());
    let d = desired_state(&s, &snapshot(vec![node(1), node(2)]), "n1").expect("n1");
    let mesh = d
        .neighbors
        .iter()
        .find(|n| n.address == ip("10.0.0.2"))
        .expect("mesh session to n2");
    assert_eq!(mesh.bfd, Some(bgp::config::BfdTimers::default()));
    let tor = d
        .neighbors
        .iter()
        .find(|n| n.address == ip("192.0.2.1"))
        .expect("ToR peer");
    assert_eq!(tor.bfd, None, "external peers have their own bfd setting");
}

#[test]
fn external_peers_from_config_and_annotation() {
    let s = settings();
    let mut n1 = node(1);
    let mut override_tor = NeighborConfig::new(ip("192.0.2.1"), 65099);
    override_tor.hold_time = 9;
    n1.peers = vec![
        override_tor,
        NeighborConfig::new(ip("198.51.100.7"), 65007),
        NeighborConfig::new(ip("10.0.0.2"), 64512), // a cluster node: ignored
        NeighborConfig::new(ip("10.0.0.1"), 64512), // itself: ignored
    ];
    let d = desired_state(&s, &snapshot(vec![n1, node(2)]), "n1").expect("n1");
    let tor = d
        .neighbors
        .iter()
        .find(|n| n.address == ip("192.0.2.1"))
        .expect("ToR peer");
    assert_eq!((tor.asn, tor.hold_time), (65099, 9), "annotation wins");
    assert!(d.neighbors.iter().any(|n| n.address == ip("198.51.100.7")));
    let mesh = d
        .neighbors
        .iter()
        .find(|n| n.address == ip("10.0.0.2"))
        .expect("mesh session to n2");
    assert_eq!(
        mesh.local_address,
        Some(ip("10.0.0.1")),
        "the mesh session, not the peer entry"
    );
    let reasons: Vec<&str> = d.problems.iter().map(|p| p.reason).collect();
    assert_eq!(
        reasons,
        vec!["InvalidPeer", "InvalidPeer"],
        "{:?}",
        d.problems
    );
    let addrs: Vec<IpAddr> = d.neighbors.iter().map(|n| n.address).collect();
    let mut sorted = addrs.clone();
    sorted.sort();
    assert_eq!(addrs, sorted, "neighbors are sorted by address");
}

fn lb_service() -> ServiceInfo {
    ServiceInfo {
        kind: ServiceKind::LoadBalancer,
        cluster_ips: vec![ip("10.96.0.10")],
        load_balancer_ips: vec![ip("203.0.113.5")],
        external_ips: vec![ip("198.51.100.9")],
        ready_nodes: ["n2".to_string()].into_iter().collect(),
        has_ready_endpoints: true,
        ..ServiceInfo::default()
    }
}

#[test]
fn service_advertisement_table() {
    struct Case {
        name: &'static str,
        svc: ServiceInfo,
        me: NodeInfo,
        advertised: Vec<&'static str>,
        not_advertised: Vec<&'static str>,
        problem: Option<&'static str>,
    }
    let n1 = node(1);
    let n2 = node(2);
    let excluded = NodeInfo {
        exclude_from_external_lb: true,
        ..node(2)
    };
    let cases = vec![
        Case {
            name: "eTP Cluster: LB and external IPs from every node",
            svc: lb_service(),
            me: n1.clone(),
            advertised: vec!["203.0.113.5/32", "198.51.100.9/32", "10.96.0.0/12"],
            not_advertised: vec!["10.96.0.10/32"],
            problem: None,
        },
        Case {
            name: "eTP Cluster without any ready endpoint: withdrawn",
            svc: ServiceInfo {
                ready_nodes: BTreeSet::new(),
                has_ready_endpoints: false,
                ..lb_service()
            },
            me: n1.clone(),
            advertised: vec!["10.96.0.0/12"],
            not_advertised: vec!["203.0.113.5/32", "198.51.100.9/32"],
            problem: None,
        },
        Case {
            name: "eTP Local, no local endpoint",
            svc: ServiceInfo {
                external_traffic_local: true,
                ..lb_service()
            },
            me: n1.clone(),
            advertised: vec![],
            not_advertised: vec!["203.0.113.5/32", "198.51.100.9/32", "10.96.0.10/32"],
            problem: None,
        },
        Case {
            name: "eTP Local, ready local endpoint: LB, external and cluster /32",
            svc: ServiceInfo {
                external_traffic_local: true,
                ..lb_service()
            },
            me: n2.clone(),
            advertised: vec!["203.0.113.5/32", "198.51.100.9/32", "10.96.0.10/32"],
            not_advertised: vec![],
            problem: None,
        },
        Case {
            name: "iTP Local: cluster /32 only where an endpoint is ready",
            svc: ServiceInfo {
                internal_traffic_local: true,
                ..lb_service()
            },
            me: n2.clone(),
            advertised: vec!["10.96.0.10/32"],
            not_advertised: vec![],
            problem: None,
        },
        Case {
            name: "excluded node: no external or LB IPs, aggregate stays",
            svc: ServiceInfo {
                external_traffic_local: true,
                ..lb_service()
            },
            me: excluded,
            advertised: vec!["10.96.0.0/12", "10.96.0.10/32"],
            not_advertised: vec!["203.0.113.5/32", "198.51.100.9/32"],
            problem: None,
        },
        Case {
            name: "externalIP outside the allow list",
            svc: ServiceInfo {
                external_ips: vec![ip("192.0.2.99")],
                ..lb_service()
            },
            me: n1.clone(),
            advertised: vec!["203.0.113.5/32"],
            not_advertised: vec!["192.0.2.99/32"],
            problem: Some("ExternalIPNotAllowed"),
        },
        Case {
            name: "LB ingress IP in no pool",
            svc: ServiceInfo {
                load_balancer_ips: vec![ip("203.0.113.200")],
                ..lb_service()
            },
            me: n1.clone(),
            advertised: vec!["198.51.100.9/32"],
            not_advertised: vec!["203.0.113.200/32"],
            problem: Some("LoadBalancerIPNotInPool"),
        },
        Case {
            name: "another load balancer's class: left alone",
            svc: ServiceInfo {
                load_balancer_class: Some("example.com/other".into()),
                ..lb_service()
            },
            me: n2.clone(),
            advertised: vec![],
            not_advertised: vec!["203.0.113.5/32", "198.51.100.9/32"],
            problem: None,
        },
        Case {
            name: "our class",
            svc: ServiceInfo {
                load_balancer_class: Some(services::LOAD_BALANCER_CLASS.into()),
                ..lb_service()
            },
            me: n1.clone(),
            advertised: vec!["203.0.113.5/32"],
            not_advertised: vec![],
            problem: None,
        },
        Case {
            name: "ingress IPs of a non-LoadBalancer service are not ours",
            svc: ServiceInfo {
                kind: ServiceKind::ClusterIp,
                ..lb_service()
            },
            me: n1.clone(),
            advertised: vec!["198.51.100.9/32"],
            not_advertised: vec!["203.0.113.5/32"],
            problem: None,
        },
        Case {
            name: "cluster IP outside service_cidr",
            svc: ServiceInfo {
                cluster_ips: vec![ip("172.16.0.1")],
                ..lb_service()
            },
            me: n1.clone(),
            advertised: vec![],
            not_advertised: vec!["172.16.0.1/32"],
            problem: Some("ClusterIPOutsideServiceCIDR"),
        },
        Case {
            name: "IPv6 LB address: /128",
            svc: ServiceInfo {
                load_balancer_ips: vec![ip("2001:db8::5")],
                ..lb_service()
            },
            me: n1.clone(),
            advertised: vec!["fd00:10:96::/112"],
            not_advertised: vec!["2001:db8::5/128"],
            problem: Some("LoadBalancerIPNotInPool"),
        },
    ];
    let s = settings();
    for c in cases {
        let mut snap = snapshot(vec![node(1), node(2)]);
        snap.nodes.insert(c.me.name.clone(), c.me.clone());
        snap.services
            .insert(ServiceKey::new("default", "web"), c.svc);
        let d = desired_state(&s, &snap, &c.me.name).expect(c.name);
        for p in &c.advertised {
            assert!(
                d.originate.contains(&pfx(p)),
                "{}: {p} missing from {:?}",
                c.name,
                d.originate
            );
        }
        for p in &c.not_advertised {
            assert!(!d.originate.contains(&pfx(p)), "{}: {p} advertised", c.name);
        }
        let reasons: Vec<&str> = d.problems.iter().map(|p| p.reason).collect();
        assert_eq!(
            reasons,
            c.problem.into_iter().collect::<Vec<_>>(),
            "{}",
            c.name
        );
        for p in &d.problems {
            assert_eq!(
                p.object,
                ObjectRef::Service(ServiceKey::new("default", "web"))
            );
        }
    }
}

#[test]
fn cluster_ips_off_means_no_aggregate_and_no_cluster_host_routes() {
    let text = SETTINGS.replace("advertise:\n", "advertise:\n  cluster_ips: false\n");
    let s = parse_agent(&text, Path::new("t.yaml")).expect("valid");
    let mut snap = snapshot(vec![node(1), node(2)]);
    snap.services.insert(
        ServiceKey::new("default", "web"),
        ServiceInfo {
            internal_traffic_local: true,
            ..lb_service()
        },
    );
    let d = desired_state(&s, &snap, "n2").expect("n2");
    assert!(!d.originate.contains(&pfx("10.96.0.0/12")));
    assert!(!d.originate.contains(&pfx("10.96.0.10/32")));
    assert!(d.originate.contains(&pfx("203.0.113.5/32")));
}

#[test]
fn pod_cidrs_from_node_spec() {
    let mut n1 = node(1);
    n1.pod_cidrs.push(pfx("172.20.0.0/24")); // outside cluster_cidr
    n1.pod_cidrs.push(pfx("fd00:10:244:1::/64"));
    let d = desired_state(&settings(), &snapshot(vec![n1, node(2)]), "n1").expect("n1");
    assert!(d.originate.contains(&pfx("10.244.1.0/24")));
    assert!(d.originate.contains(&pfx("fd00:10:244:1::/64")));
    assert!(!d.originate.contains(&pfx("172.20.0.0/24")));
    assert!(
        !d.originate.contains(&pfx("10.244.2.0/24")),
        "not another node's CIDR"
    );
    assert!(d.blackholes.is_empty());
    assert_eq!(d.problems.len(), 1, "{:?}", d.problems);
    assert_eq!(d.problems[0].reason, "PodCIDROutsideClusterCIDR");
    assert_eq!(d.problems[0].object, ObjectRef::Node("n1".into()));
}

#[test]
fn pod_blocks_are_originated_and_blackholed() {
    let text = SETTINGS.replace("asn: 64512", "asn: 64512\npod_cidr_source: blocks");
    let s = parse_agent(&text, Path::new("t.yaml")).expect("valid");
    let mut n1 = node(1);
    n1.blocks = vec![pfx("10.244.0.0/26"), pfx("10.244.0.64/26")];
    let d = desired_state(&s, &snapshot(vec![n1, node(2)]), "n1").expect("n1");
    let blocks: BTreeSet<Prefix> = [pfx("10.244.0.0/26"), pfx("10.244.0.64/26")].into();
    assert_eq!(d.blackholes, blocks);
    assert!(blocks.is_subset(&d.originate));
    assert!(
        !d.originate.contains(&pfx("10.244.1.0/24")),
        "spec.podCIDRs unused"
    );
}

#[test]
fn unknown_node_and_node_without_address() {
    let s = settings();
    assert_eq!(
        desired_state(&s, &snapshot(vec![node(1)]), "n9"),
        Err(DesiredError::UnknownNode("n9".into()))
    );
    let bare = NodeInfo {
        addresses: vec![],
        ..node(1)
    };
    assert_eq!(
        desired_state(&s, &snapshot(vec![bare]), "n1"),
        Err(DesiredError::NoAddress("n1".into()))
    );
}

#[test]
fn router_id_is_the_ipv4_address_or_a_stable_hash() {
    assert_eq!(router_id(&node(7)), Ipv4Addr::new(10, 0, 0, 7));
    let v6 = NodeInfo {
        name: "worker-v6".into(),
        addresses: vec![ip("fd00::7")],
        ..NodeInfo::default()
    };
    let id = router_id(&v6);
    assert_eq!(id, router_id(&v6.clone()));
    assert!(
        !id.is_unspecified() && !id.is_multicast() && id.octets()[0] != 0 && id.octets()[0] < 224
    );
    let other = NodeInfo {
        name: "worker-v6b".into(),
        ..v6
    };
    assert_ne!(router_id(&other), id);
}

#[test]
fn snapshot_problems_are_passed_on_and_results_are_deterministic() {
    let mut snap = snapshot(vec![node(3), node(1), node(2)]);
    snap.problems.push(Problem {
        object: ObjectRef::Node("n2".into()),
        reason: "InvalidAnnotation",
        message: "routelet.io/asn: `x` is not an AS number".into(),
    });
    let a = desired_state(&settings(), &snap, "n1").expect("n1");
    let b = desired_state(&settings(), &snap.clone(), "n1").expect("n1 again");
    assert_eq!(a, b);
    assert_eq!(a.problems, snap.problems);
}

#[test]
fn host_gw_and_vxlan_backends_have_no_node_sessions() {
    let snap = snapshot(vec![node(1), rr(node(2)), node(3)]);
    for backend in ["host-gw", "vxlan"] {
        let text = format!("{SETTINGS}backend: {backend}\n");
        let s = parse_agent(&text, Path::new("t.yaml")).expect("valid");
        for name in ["n1", "n2"] {
            let d = desired_state(&s, &snap, name).expect("desired state");
            assert_eq!(node_sessions(&d), vec![], "{backend} {name}");
            assert_eq!(d.role, Role::FullMesh, "{backend} {name}");
            assert_eq!(d.cluster_id, None, "{backend} {name}");
            // The ToR peer stays (sent only what the node originates), and the pod CIDR is
            // still advertised to it.
            assert!(d
                .neighbors
                .iter()
                .any(|n| n.address == ip("192.0.2.1")
                    && n.export == bgp::rib::RouteFilter::Originated));
            assert!(d
                .originate
                .contains(&pfx(&format!("10.244.{}.0/24", &name[1..]))));
        }
    }
}
