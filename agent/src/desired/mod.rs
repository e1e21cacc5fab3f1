//! The desired state of one node, computed by a pure function from the agent's settings and a
//! `Snapshot` of the cluster: its BGP identity and neighbors (full mesh or route reflectors,
//! plus external peers), the prefixes it originates (pod CIDRs, service IPs) and its blackhole
//! routes. No I/O here: the controller hands the result, whole, to the speaker and the FIB.

pub mod annotations;
pub mod forwarding;
#[cfg(test)]
mod forwarding_tests;
pub mod model;
pub mod services;
#[cfg(test)]
mod tests;
mod topology;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use bgp::config::NeighborConfig;
use bgp::types::Prefix;

use crate::agent_config::{AgentSettings, PodCidrSource};
pub use model::{NodeInfo, ObjectRef, Problem, ServiceInfo, ServiceKey, ServiceKind, Snapshot};

/// How this node takes part in the cluster's iBGP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No reflector in this node's AS: it peers with every other node of the AS.
    FullMesh,
    /// It peers only with the reflectors of its AS.
    ReflectorClient,
    /// It is a reflector: peers with the other reflectors and with every client of its AS.
    Reflector,
}

/// What one node should be doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredState {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    pub role: Role,
    /// Route-reflector cluster id (reflectors only).
    pub cluster_id: Option<Ipv4Addr>,
    /// Every BGP neighbor, sorted by address.
    pub neighbors: Vec<NeighborConfig>,
    /// Prefixes this node originates.
    pub originate: BTreeSet<Prefix>,
    /// Local blackhole routes (own IPAM blocks: unallocated addresses are dropped here
    /// instead of looping towards the default route).
    pub blackholes: BTreeSet<Prefix>,
    /// Bad input found on the way (the snapshot's own problems included), sorted.
    pub problems: Vec<Problem>,
}

/// Why no desired state can be computed for this node (the previous one stays in force).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesiredError {
    #[error("node {0} is not in the cluster (yet)")]
    UnknownNode(String),
    #[error("node {0} has no InternalIP address in status.addresses")]
    NoAddress(String),
}

/// Computes the desired state of node `node` (pure).
pub fn desired_state(
    settings: &AgentSettings,
    snapshot: &Snapshot,
    node: &str,
) -> Result<DesiredState, DesiredError> {
    let me = snapshot
        .nodes
        .get(node)
        .ok_or_else(|| DesiredError::UnknownNode(node.to_string()))?;
    if me.addresses.is_empty() {
        return Err(DesiredError::NoAddress(node.to_string()));
    }
    let mut problems = snapshot.problems.clone();
    let topo = topology::neighbors(settings, snapshot, me, &mut problems);

    let mut originate = BTreeSet::new();
    let mut blackholes = BTreeSet::new();
    match settings.pod_cidr_source {
        PodCidrSource::NodeSpec => {
            for p in &me.pod_cidrs {
                if settings.cluster_cidrs.iter().any(|c| c.contains(p)) {
                    originate.insert(*p);
                } else {
                    problems.push(Problem {
                        object: ObjectRef::Node(me.name.clone()),
                        reason: "PodCIDROutsideClusterCIDR",
                        message: format!(
                            "spec.podCIDRs {p} is not inside cluster_cidr ({}); not advertised",
                            list(&settings.cluster_cidrs)
                        ),
                    });
                }
            }
        }
        PodCidrSource::Blocks => {
            for b in &me.blocks {
                if settings.cluster_cidrs.iter().any(|c| c.contains(b)) {
                    originate.insert(*b);
                    blackholes.insert(*b);
                }
            }
        }
    }
    services::advertise(settings, snapshot, me, &mut originate, &mut problems);

    problems.sort();
    problems.dedup();
    Ok(DesiredState {
        router_id: router_id(me),
        asn: topo.asn,
        role: topo.role,
        cluster_id: topo.cluster_id,
        neighbors: topo.neighbors,
        originate,
        blackholes,
        problems,
    })
}

/// The node's first IPv4 InternalIP; an IPv6-only node gets a stable id derived from its name
/// (FNV-1a), kept out of 0.0.0.0/8, multicast and reserved space.
pub fn router_id(node: &NodeInfo) -> Ipv4Addr {
    for a in &node.addresses {
        if let std::net::IpAddr::V4(v4) = a {
            return *v4;
        }
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in node.name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // 1.0.0.0 ..= 223.255.255.255
    Ipv4Addr::from(0x0100_0000 + h % (0xe000_0000 - 0x0100_0000))
}

/// `a, b, c`.
pub(crate) fn list(prefixes: &[Prefix]) -> String {
    prefixes
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
