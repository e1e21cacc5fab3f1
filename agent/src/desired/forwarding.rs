//! How this node forwards pod traffic to every other node, per address family: directly to
//! the node (one L2 segment), through the VXLAN device, via the gateway the fabric offers
//! (`cross_subnet: routed`), or by the route BGP learned. From the settings, the cluster
//! `Snapshot` and the kernel's view of this node's links it yields the static routes, the VTEP
//! peers (neighbour + FDB entries) and this node's own VTEPs. Pure: the controller gathers the
//! `KernelView` and programs the result.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use bgp::types::Prefix;

use super::list;
use super::model::{NodeInfo, ObjectRef, Problem, Snapshot};
use crate::agent_config::{AgentSettings, PodCidrSource};
pub use crate::datapath::{format_mac, parse_mac, vtep_mac, VtepPeer};
use crate::datapath_config::{Backend, CrossSubnet};
use crate::fib::{KernelRoute, NextHop};

/// An Ethernet address.
pub type Mac = [u8; 6];

/// What the kernel tells about this node's links, gathered by the controller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelView {
    /// Subnets of the addresses on this node's links that are up (not loopback, not
    /// routelet's VXLAN devices).
    pub connected: Vec<Prefix>,
    /// For node addresses on no connected subnet: the gateway the kernel routes them through
    /// (absent: no route at all).
    pub gateways: BTreeMap<IpAddr, IpAddr>,
    /// The VXLAN device of each family, once it exists (ifindex).
    pub vxlan_v4: Option<u32>,
    pub vxlan_v6: Option<u32>,
}

impl KernelView {
    fn connected_to(&self, addr: IpAddr) -> bool {
        self.connected.iter().any(|c| c.contains(&addr))
    }

    fn vxlan(&self, v4: bool) -> Option<u32> {
        if v4 {
            self.vxlan_v4
        } else {
            self.vxlan_v6
        }
    }
}

/// How one remote node's pod prefixes of one family are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathKind {
    /// A static route via the node's address (host-gw, same L2 segment).
    Direct,
    /// The route BGP learned (next hop: the node, on a connected subnet).
    Learned,
    /// Through the VXLAN device to the node's VTEP.
    Vxlan,
    /// Via the gateway the kernel uses towards the node (the fabric carries the route).
    Routed,
    /// Not reachable from here (reported as a problem).
    Unreachable,
}

impl PathKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Learned => "learned",
            PathKind::Vxlan => "vxlan",
            PathKind::Routed => "routed",
            PathKind::Unreachable => "unreachable",
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// This node's own VTEP of one family: the VXLAN device's address and MAC, and the underlay
/// address it sends from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalVtep {
    pub vtep: IpAddr,
    pub mac: Mac,
    pub local: IpAddr,
}

/// Everything the datapath programs for the current cluster and kernel view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardingPlan {
    /// (node, IPv4?) -> path, for every remote node with pod prefixes of that family.
    pub paths: BTreeMap<(String, bool), PathKind>,
    /// Static routes to remote pod prefixes (the controller adds its blackholes), by prefix;
    /// one without next hops suppresses its prefix (an overlapping pod CIDR).
    pub routes: Vec<KernelRoute>,
    pub peers_v4: BTreeSet<VtepPeer>,
    pub peers_v6: BTreeSet<VtepPeer>,
    pub problems: Vec<Problem>,
}

/// The pod prefixes of `node` routelet routes (inside `cluster_cidr`), sorted.
pub fn pod_prefixes(settings: &AgentSettings, node: &NodeInfo) -> Vec<Prefix> {
    let source = match settings.pod_cidr_source {
        PodCidrSource::NodeSpec => &node.pod_cidrs,
        PodCidrSource::Blocks => &node.blocks,
    };
    let mut out: Vec<Prefix> = source
        .iter()
        .filter(|p| settings.cluster_cidrs.iter().any(|c| c.contains(*p)))
        .copied()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A node's VTEP address of one family: the first address of its first pod prefix of that
/// family (never handed to a pod by the CNI plugin).
pub fn vtep_address(prefixes: &[Prefix], v4: bool) -> Option<IpAddr> {
    let p = prefixes.iter().find(|p| p.addr().is_ipv4() == v4)?;
    match p {
        Prefix::V4(n) => {
            let first = u32::from(n.network()).checked_add(1)?;
            n.contains(&std::net::Ipv4Addr::from(first))
                .then(|| IpAddr::V4(first.into()))
        }
        Prefix::V6(n) => {
            let first = u128::from(n.network()).checked_add(1)?;
            n.contains(&std::net::Ipv6Addr::from(first))
                .then(|| IpAddr::V6(first.into()))
        }
    }
}

/// Parses a node's `routelet.io/vtep-mac` value: a unicast MAC address.
pub fn parse_vtep_mac(text: &str) -> Result<Mac, String> {
    match parse_mac(text) {
        Some(mac) if mac[0] & 1 == 0 && mac != [0; 6] => Ok(mac),
        Some(_) => Err(format!("`{text}` is not a unicast MAC address")),
        None => Err(format!("`{text}` is not a MAC address (six hex octets)")),
    }
}

/// This node's VTEPs (IPv4, IPv6), when the settings may use VXLAN and the node has both an
/// underlay address and a pod prefix of the family.
pub fn local_vteps(
    settings: &AgentSettings,
    me: &NodeInfo,
) -> (Option<LocalVtep>, Option<LocalVtep>) {
    if !settings.datapath.may_use_vxlan() {
        return (None, None);
    }
    let prefixes = pod_prefixes(settings, me);
    let vtep = |v4: bool| {
        let local = me.address(v4)?;
        let vtep = vtep_address(&prefixes, v4)?;
        Some(LocalVtep {
            vtep,
            mac: vtep_mac(vtep),
            local,
        })
    };
    (vtep(true), vtep(false))
}

/// The forwarding plan of node `me` (pure).
pub fn forwarding_plan(
    settings: &AgentSettings,
    snapshot: &Snapshot,
    me: &NodeInfo,
    view: &KernelView,
) -> ForwardingPlan {
    let mut plan = ForwardingPlan::default();
    let dp = &settings.datapath;

    // Pod prefixes by owner; a prefix overlapping one already taken by a node earlier by name
    // (the same verdict on every node) is a problem of the later node: not routed, and its
    // BGP route (if any) suppressed so it cannot divert the owner's traffic.
    let mut taken: Vec<(Prefix, String)> = Vec::new();
    let mut remote: Vec<(&NodeInfo, Vec<Prefix>)> = Vec::new();
    for node in snapshot.nodes.values() {
        let mut kept = Vec::new();
        for p in pod_prefixes(settings, node) {
            match taken
                .iter()
                .find(|(t, _)| t.contains(&p.network()) || p.contains(&t.network()))
            {
                Some((t, owner)) => {
                    plan.problems.push(Problem {
                        object: ObjectRef::Node(node.name.clone()),
                        reason: "PodCIDROverlap",
                        message: format!(
                            "pod CIDR {p} overlaps {t} of node {owner}; not routed to this node"
                        ),
                    });
                    if node.name != me.name {
                        plan.routes.push(KernelRoute {
                            prefix: p,
                            next_hops: Vec::new(),
                        });
                    }
                }
                None => {
                    taken.push((p, node.name.clone()));
                    kept.push(p);
                }
            }
        }
        if !kept.is_empty() && node.name != me.name {
            remote.push((node, kept));
        }
    }

    for (node, prefixes) in remote {
        for v4 in [true, false] {
            let fam: Vec<Prefix> = prefixes
                .iter()
                .filter(|p| p.addr().is_ipv4() == v4)
                .copied()
                .collect();
            if fam.is_empty() {
                continue;
            }
            let family = if v4 { "IPv4" } else { "IPv6" };
            let Some(addr) = node.address(v4) else {
                plan.problems.push(Problem {
                    object: ObjectRef::Node(node.name.clone()),
                    reason: "NoInternalIP",
                    message: format!(
                        "no {family} InternalIP: its pod CIDR {} is not routed from node {}",
                        list(&fam),
                        me.name
                    ),
                });
                plan.paths
                    .insert((node.name.clone(), v4), PathKind::Unreachable);
                continue;
            };
            let connected = view.connected_to(addr);
            let path = match (dp.backend, connected, dp.cross_subnet) {
                (Backend::Vxlan, _, _) | (_, false, CrossSubnet::Vxlan) => PathKind::Vxlan,
                (Backend::HostGw, true, _) => PathKind::Direct,
                (Backend::Bgp, true, _) => PathKind::Learned,
                (_, false, CrossSubnet::Routed) => PathKind::Routed,
            };
            let path = match path {
                PathKind::Direct => {
                    for p in &fam {
                        plan.routes.push(KernelRoute {
                            prefix: *p,
                            next_hops: vec![NextHop::from(addr)],
                        });
                    }
                    PathKind::Direct
                }
                PathKind::Vxlan => {
                    let all = pod_prefixes(settings, node);
                    vxlan_routes(me, node, v4, addr, (&all, &fam), view, &mut plan)
                }
                PathKind::Routed => match view.gateways.get(&addr) {
                    Some(gw) => {
                        for p in &fam {
                            plan.routes.push(KernelRoute {
                                prefix: *p,
                                next_hops: vec![NextHop::from(*gw)],
                            });
                        }
                        PathKind::Routed
                    }
                    None => {
                        plan.problems.push(Problem {
                            object: ObjectRef::Node(node.name.clone()),
                            reason: "NodeUnreachable",
                            message: format!(
                                "{addr} is on no subnet of node {} and no route leads there \
                                 (backend {}, cross_subnet: routed): pod CIDR {} is not routed",
                                me.name,
                                dp.backend.as_str(),
                                list(&fam)
                            ),
                        });
                        PathKind::Unreachable
                    }
                },
                other => other,
            };
            plan.paths.insert((node.name.clone(), v4), path);
        }
    }
    plan.routes.sort_by_key(|r| r.prefix);
    plan.problems.sort();
    plan.problems.dedup();
    plan
}

/// Routes and the VTEP peer for a node reached through VXLAN; the path taken.
fn vxlan_routes(
    me: &NodeInfo,
    node: &NodeInfo,
    v4: bool,
    underlay: IpAddr,
    (all, prefixes): (&[Prefix], &[Prefix]),
    view: &KernelView,
    plan: &mut ForwardingPlan,
) -> PathKind {
    let problem = |reason: &'static str, message: String| Problem {
        object: ObjectRef::Node(node.name.clone()),
        reason,
        message,
    };
    let family = if v4 { "IPv4" } else { "IPv6" };
    if me.address(v4).is_none() {
        plan.problems.push(Problem {
            object: ObjectRef::Node(me.name.clone()),
            reason: "NoInternalIP",
            message: format!("no {family} InternalIP: no {family} VXLAN underlay"),
        });
        return PathKind::Unreachable;
    }
    let Some(ifindex) = view.vxlan(v4) else {
        // The device could not be made (the controller reported why): nothing to route into.
        return PathKind::Unreachable;
    };
    // From all its prefixes, as the node itself computes it.
    let Some(vtep) = vtep_address(all, v4) else {
        plan.problems.push(problem(
            "NoVTEPAddress",
            format!("pod CIDR {} leaves no VTEP address", list(prefixes)),
        ));
        return PathKind::Unreachable;
    };
    let mac = if v4 {
        node.vtep_mac_v4
    } else {
        node.vtep_mac_v6
    }
    .unwrap_or(vtep_mac(vtep));
    let peer = VtepPeer {
        vtep,
        mac,
        underlay,
    };
    if v4 {
        plan.peers_v4.insert(peer);
    } else {
        plan.peers_v6.insert(peer);
    }
    for p in prefixes {
        plan.routes.push(KernelRoute {
            prefix: *p,
            next_hops: vec![NextHop::onlink(vtep, ifindex)],
        });
    }
    PathKind::Vxlan
}
