//! The resource types the stand-in serves (group, version, plural, kind, scope, subresources)
//! and their normalisation through the k8s-openapi types, which checks field types and drops
//! unknown fields the way kube-apiserver's typed decoding does.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use k8s_openapi::api::{coordination, core, discovery, events};

/// One served resource.
#[derive(Debug)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Has a `/status` subresource: the main resource ignores `.status`, `/status` changes
    /// only `.status`.
    pub status: bool,
    /// `.status` is reset on create (Services, Pods, Namespaces), as kube-apiserver does.
    pub clear_status_on_create: Option<fn() -> Value>,
    /// Sets `metadata.generation` (1 on create, +1 on spec changes); kube-apiserver's
    /// strategies do this only for some types, so only those get it here.
    pub generation: bool,
    normalize: fn(Value) -> Result<Value, String>,
}

fn roundtrip<T: DeserializeOwned + Serialize>(v: Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

fn empty_status() -> Value {
    json!({})
}
fn pod_status() -> Value {
    json!({"phase": "Pending"})
}
fn namespace_status() -> Value {
    json!({"phase": "Active"})
}

pub static RESOURCES: &[ResourceType] = &[
    ResourceType {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        status: true,
        clear_status_on_create: Some(namespace_status),
        generation: false,
        normalize: roundtrip::<core::v1::Namespace>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        status: true,
        clear_status_on_create: None,
        generation: false,
        normalize: roundtrip::<core::v1::Node>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        status: true,
        clear_status_on_create: Some(empty_status),
        generation: false,
        normalize: roundtrip::<core::v1::Service>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        status: false,
        clear_status_on_create: None,
        generation: false,
        normalize: roundtrip::<core::v1::ConfigMap>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        status: false,
        clear_status_on_create: None,
        generation: false,
        normalize: roundtrip::<core::v1::Event>,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        status: true,
        clear_status_on_create: Some(pod_status),
        generation: false,
        normalize: roundtrip::<core::v1::Pod>,
    },
    ResourceType {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        status: false,
        clear_status_on_create: None,
        generation: true,
        normalize: roundtrip::<discovery::v1::EndpointSlice>,
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        status: false,
        clear_status_on_create: None,
        generation: false,
        normalize: roundtrip::<coordination::v1::Lease>,
    },
    ResourceType {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        status: false,
        clear_status_on_create: None,
        generation: false,
        normalize: roundtrip::<events::v1::Event>,
    },
];

/// Index of the `namespaces` resource in [`RESOURCES`].
pub const NAMESPACES: usize = 0;

impl ResourceType {
    /// `apiVersion` of objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` or `plural.group`, as kube-apiserver names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `details` of a Status about one object.
    pub fn details(&self, name: &str) -> Value {
        if self.group.is_empty() {
            json!({"name": name, "kind": self.plural})
        } else {
            json!({"name": name, "group": self.group, "kind": self.plural})
        }
    }

    /// Type-check and normalise through the k8s-openapi type (unknown fields are dropped).
    pub fn normalize(&self, v: Value) -> Result<Value, String> {
        (self.normalize)(v)
    }
}

/// Find a resource by group, version and plural.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The served group/versions, core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_drops_unknown_fields_and_checks_types() {
        let rt = &RESOURCES[1];
        let v = rt
            .normalize(
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "a"}, "bogus": 1}),
            )
            .expect("valid node");
        assert!(v.get("bogus").is_none());
        assert!(rt
            .normalize(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": 5}}))
            .is_err());
        assert_eq!(lookup("coordination.k8s.io", "v1", "leases"), Some(7));
        assert_eq!(RESOURCES[NAMESPACES].plural, "namespaces");
    }
}
