//! The Kubernetes API permissions the agent uses, verb by verb; `deploy/base`'s ClusterRole and
//! Role must grant exactly these (a test compares them).

/// Where a permission is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// ClusterRole.
    Cluster,
    /// Role in routelet's own namespace.
    Namespace,
}

/// (scope, API group, resource, verbs).
pub const REQUIRED: &[(Scope, &str, &str, &[&str])] = &[
    // k8s::watch reflectors; own node annotations (published by the controller).
    (
        Scope::Cluster,
        "",
        "nodes",
        &["get", "list", "watch", "patch"],
    ),
    (Scope::Cluster, "", "services", &["get", "list", "watch"]),
    // LoadBalancer IP allocation writes status.loadBalancer.
    (Scope::Cluster, "", "services/status", &["patch"]),
    (
        Scope::Cluster,
        "discovery.k8s.io",
        "endpointslices",
        &["list", "watch"],
    ),
    // controller::events (kube-runtime's Recorder creates events and patches their series).
    (
        Scope::Cluster,
        "events.k8s.io",
        "events",
        &["create", "patch"],
    ),
    // Leader election of the LoadBalancer allocator.
    (
        Scope::Namespace,
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
    // ipam::blocks claim table.
    (
        Scope::Namespace,
        "",
        "configmaps",
        &["get", "create", "update"],
    ),
];

/// routelet's namespace in `deploy/`.
pub const NAMESPACE: &str = "routelet-system";
