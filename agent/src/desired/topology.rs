//! Which BGP neighbors a node has: the iBGP full mesh of its AS, or route-reflector sessions
//! once a node of the AS carries `routelet.io/route-reflector`, plus the configured and
//! annotated external peers.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use bgp::config::NeighborConfig;
use bgp::rib::RouteFilter;

use super::model::{NodeInfo, ObjectRef, Problem, Snapshot};
use super::Role;
use crate::agent_config::AgentSettings;
use crate::datapath_config::Backend;

pub(super) struct Topology {
    pub asn: u32,
    pub role: Role,
    pub cluster_id: Option<Ipv4Addr>,
    pub neighbors: Vec<NeighborConfig>,
}

pub(super) fn neighbors(
    settings: &AgentSettings,
    snapshot: &Snapshot,
    me: &NodeInfo,
    problems: &mut Vec<Problem>,
) -> Topology {
    let asn_of = |n: &NodeInfo| n.asn.unwrap_or(settings.asn);
    let asn = asn_of(me);
    // host-gw and vxlan route between nodes without BGP: no node-to-node sessions (external
    // peers stay).
    let node_bgp = settings.datapath.backend == Backend::Bgp;
    let same_as: Vec<&NodeInfo> = snapshot
        .nodes
        .values()
        .filter(|n| node_bgp && n.name != me.name && asn_of(n) == asn)
        .collect();
    let role = if !node_bgp {
        Role::FullMesh
    } else if me.route_reflector.is_some() {
        Role::Reflector
    } else if same_as.iter().any(|n| n.route_reflector.is_some()) {
        Role::ReflectorClient
    } else {
        Role::FullMesh
    };

    let mut out: BTreeMap<IpAddr, NeighborConfig> = BTreeMap::new();
    for other in same_as {
        // Some(is the other node my route-reflector client?), None = no session.
        let session = match role {
            Role::FullMesh => Some(false),
            Role::ReflectorClient => other.route_reflector.is_some().then_some(false),
            Role::Reflector => Some(other.route_reflector.is_none()),
        };
        let Some(rr_client) = session else { continue };
        if other.addresses.is_empty() {
            problems.push(Problem {
                object: ObjectRef::Node(other.name.clone()),
                reason: "NoInternalIP",
                message: "no InternalIP in status.addresses; other nodes cannot peer with it"
                    .into(),
            });
            continue;
        }
        // One session per address family both nodes have, carrying that family.
        for v4 in [true, false] {
            let (Some(local), Some(remote)) = (me.address(v4), other.address(v4)) else {
                continue;
            };
            let mut n = NeighborConfig::new(remote, asn);
            n.local_address = Some(local);
            n.hold_time = settings.mesh_hold_time;
            n.password = settings.mesh_password.clone();
            n.bfd = settings.mesh_bfd;
            n.route_reflector_client = rr_client;
            out.insert(remote, n);
        }
    }

    // External peers: the config's (every node), then this node's annotation, which wins for
    // the same address. A peer that is a cluster node is left to the mesh logic above.
    let mut external: BTreeMap<IpAddr, NeighborConfig> = BTreeMap::new();
    for p in settings.peers.iter().chain(&me.peers) {
        external.insert(p.address, p.clone());
    }
    for (addr, p) in external {
        if me.addresses.contains(&addr) {
            problems.push(Problem {
                object: ObjectRef::Node(me.name.clone()),
                reason: "InvalidPeer",
                message: format!("peer {addr} is this node's own address; ignored"),
            });
            continue;
        }
        if let Some(node) = snapshot
            .nodes
            .values()
            .find(|n| n.addresses.contains(&addr))
        {
            problems.push(Problem {
                object: ObjectRef::Node(me.name.clone()),
                reason: "InvalidPeer",
                message: format!(
                    "peer {addr} is the address of node {}; node sessions follow the cluster topology, so this peer entry is ignored",
                    node.name
                ),
            });
            continue;
        }
        // Towards the fabric a node announces only what it originates (its pod CIDRs and
        // service IPs): a route learned from another node or peer would make it a transit
        // hop it may be unable to forward (a /32 of an eTP-Local service whose endpoint is
        // elsewhere, a pod CIDR behind a next hop it cannot reach).
        let mut p = p;
        if p.export == RouteFilter::All {
            p.export = RouteFilter::Originated;
        }
        out.insert(addr, p);
    }

    Topology {
        asn,
        role,
        cluster_id: me.route_reflector.filter(|_| role == Role::Reflector),
        neighbors: out.into_values().collect(),
    }
}
