//! Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<group>[/<version>]`
//! (legacy, unaggregated JSON; clients asking for aggregated discovery fall back to it).

use serde_json::{json, Value};

use super::resources::{group_versions, ResourceType, RESOURCES};

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-routelet-lab",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "none (routelet lab apiserver)",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn verbs(rt: &ResourceType) -> Vec<&'static str> {
    let mut v = vec!["create", "delete"];
    if rt.plural != "namespaces" {
        v.push("deletecollection");
    }
    v.extend(["get", "list", "patch", "update", "watch"]);
    v
}

fn resource_list(group: &str, version: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for rt in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        out.push(json!({
            "name": rt.plural,
            "singularName": rt.kind.to_ascii_lowercase(),
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": verbs(rt),
            "shortNames": rt.short_names,
        }));
        if rt.status {
            out.push(json!({
                "name": format!("{}/status", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    out
}

pub fn core_resources() -> Value {
    json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": resource_list("", "v1")})
}

fn group_doc(group: &str) -> Value {
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

pub fn groups() -> Value {
    let mut names: Vec<&str> = Vec::new();
    for (g, _) in group_versions() {
        if !g.is_empty() && !names.contains(&g) {
            names.push(g);
        }
    }
    let groups: Vec<Value> = names.into_iter().map(group_doc).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(group: &str) -> Value {
    let mut doc = group_doc(group);
    if let Value::Object(m) = &mut doc {
        m.insert("kind".into(), json!("APIGroup"));
        m.insert("apiVersion".into(), json!("v1"));
    }
    doc
}

pub fn group_resources(group: &str, version: &str) -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{group}/{version}"),
        "resources": resource_list(group, version),
    })
}
