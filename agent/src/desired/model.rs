//! The cluster as the desired-state function sees it: nodes and services already projected out
//! of the Kubernetes objects (annotations parsed, ready endpoints grouped by node), plus the
//! `Problem`s found in them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use bgp::config::NeighborConfig;
use bgp::types::Prefix;

/// A Service's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: &str, name: &str) -> ServiceKey {
        ServiceKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The Kubernetes object a problem is about (where its Event goes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectRef {
    Node(String),
    Service(ServiceKey),
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectRef::Node(n) => write!(f, "node {n}"),
            ObjectRef::Service(s) => write!(f, "service {s}"),
        }
    }
}

/// Bad input found in an object: logged and reported as a Kubernetes Event on `object`; the
/// offending value is ignored and everything else goes on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Problem {
    pub object: ObjectRef,
    /// Short CamelCase reason, as Kubernetes Events carry (`InvalidAnnotation`, ...).
    pub reason: &'static str,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.reason, self.message)
    }
}

/// A Node, as far as routing cares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub name: String,
    /// `status.addresses` of type InternalIP, in their order (both families).
    pub addresses: Vec<IpAddr>,
    /// `routelet.io/asn`, when present and valid.
    pub asn: Option<u32>,
    /// `routelet.io/route-reflector`: this node is a reflector of this cluster id.
    pub route_reflector: Option<Ipv4Addr>,
    /// `routelet.io/peers`: valid entries only.
    pub peers: Vec<NeighborConfig>,
    /// `spec.podCIDRs`.
    pub pod_cidrs: Vec<Prefix>,
    /// Pod address blocks routelet's IPAM has given this node.
    pub blocks: Vec<Prefix>,
    /// Labelled `node.kubernetes.io/exclude-from-external-load-balancers`.
    pub exclude_from_external_lb: bool,
    /// `routelet.io/vtep-mac` / `routelet.io/vtep-mac-v6`: the MAC of its VXLAN devices
    /// (default: derived from the VTEP address, as the node itself does).
    pub vtep_mac_v4: Option<[u8; 6]>,
    pub vtep_mac_v6: Option<[u8; 6]>,
}

impl NodeInfo {
    /// The node's first InternalIP of `v4`'s family.
    pub fn address(&self, v4: bool) -> Option<IpAddr> {
        self.addresses.iter().copied().find(|a| a.is_ipv4() == v4)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceKind {
    #[default]
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalName,
}

/// A Service with the readiness of its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceInfo {
    pub kind: ServiceKind,
    /// `spec.clusterIPs` (headless `None` left out).
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.externalTrafficPolicy: Local`.
    pub external_traffic_local: bool,
    /// `spec.internalTrafficPolicy: Local`.
    pub internal_traffic_local: bool,
    /// `spec.loadBalancerClass`.
    pub load_balancer_class: Option<String>,
    /// Nodes with at least one ready endpoint of this Service (EndpointSlice
    /// `conditions.ready` and `nodeName`).
    pub ready_nodes: BTreeSet<String>,
    /// At least one ready endpoint anywhere (also counts endpoints without `nodeName`).
    pub has_ready_endpoints: bool,
}

/// Everything the desired-state function reads from the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub nodes: BTreeMap<String, NodeInfo>,
    pub services: BTreeMap<ServiceKey, ServiceInfo>,
    /// Problems found while projecting the objects (bad annotations, unparsable addresses).
    pub problems: Vec<Problem>,
}
