//! deploy/: every manifest parses into its k8s-openapi type, the all-in-one manifest equals the
//! kustomize base (regenerate with `ROUTELET_UPDATE_MANIFESTS=1 cargo test -p agent --test
//! deploy`), the RBAC rules grant exactly what the agent uses, the DaemonSet has the required
//! security and scheduling settings, and the shipped agent config is valid.
#![allow(clippy::panic)] // a failed check is a panic with the file at fault in its message

use std::path::{Path, PathBuf};

use agent::k8s::rbac::{Scope, NAMESPACE, REQUIRED};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::Deserialize;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document of `text`, as JSON values (empty documents skipped).
fn documents(text: &str, what: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{what}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The base's resources, in kustomization order: (file name, text).
fn base_resources() -> Vec<(String, String)> {
    let base = deploy_dir().join("base");
    let kustomization = documents(&read(&base.join("kustomization.yaml")), "kustomization");
    let resources = kustomization[0]["resources"]
        .as_array()
        .expect("kustomization lists resources");
    resources
        .iter()
        .map(|r| {
            let name = r.as_str().expect("resource is a file name").to_string();
            let text = read(&base.join(&name));
            (name, text)
        })
        .collect()
}

fn all_in_one_text() -> String {
    let mut out = String::from(
        "# Generated from deploy/base by `ROUTELET_UPDATE_MANIFESTS=1 cargo test -p agent --test deploy`.\n# Do not edit: change deploy/base and regenerate.\n",
    );
    for (name, text) in base_resources() {
        out.push_str(&format!("---\n# Source: base/{name}\n"));
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

#[test]
fn all_in_one_manifest_is_current() {
    let path = deploy_dir().join("routelet.yaml");
    let generated = all_in_one_text();
    if std::env::var_os("ROUTELET_UPDATE_MANIFESTS").is_some() {
        std::fs::write(&path, &generated).expect("write deploy/routelet.yaml");
    }
    let current = read(&path);
    assert_eq!(
        documents(&current, "deploy/routelet.yaml"),
        documents(&generated, "base"),
        "deploy/routelet.yaml is stale: run ROUTELET_UPDATE_MANIFESTS=1 cargo test -p agent --test deploy"
    );
}

/// Parses `doc` into `T` and back: a field k8s-openapi does not know (a typo) would be lost on
/// the way, so the round trip must give the same document.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value, what: &str) -> T {
    let t: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&t).expect("serialize");
    assert_eq!(
        &back, doc,
        "{what}: fields unknown to the Kubernetes API type"
    );
    t
}

#[test]
fn every_manifest_parses_into_its_api_type() {
    let mut kinds = Vec::new();
    for (name, text) in base_resources() {
        for doc in documents(&text, &name) {
            let kind = doc["kind"].as_str().expect("kind").to_string();
            match kind.as_str() {
                "Namespace" => drop(typed::<Namespace>(&doc, &name)),
                "ServiceAccount" => drop(typed::<ServiceAccount>(&doc, &name)),
                "ClusterRole" => drop(typed::<ClusterRole>(&doc, &name)),
                "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(&doc, &name)),
                "Role" => drop(typed::<Role>(&doc, &name)),
                "RoleBinding" => drop(typed::<RoleBinding>(&doc, &name)),
                "ConfigMap" => drop(typed::<ConfigMap>(&doc, &name)),
                "DaemonSet" => drop(typed::<DaemonSet>(&doc, &name)),
                other => panic!("{name}: unexpected kind {other}"),
            }
            if kind != "Namespace" && !kind.starts_with("Cluster") {
                assert_eq!(doc["metadata"]["namespace"], NAMESPACE, "{name}");
            }
            kinds.push(kind);
        }
    }
    for k in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
    ] {
        assert!(kinds.iter().any(|x| x == k), "base has a {k}");
    }
}

fn find(kind: &str) -> Value {
    base_resources()
        .iter()
        .flat_map(|(name, text)| documents(text, name))
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// (group, resource, sorted verbs) of every rule.
fn grants(rules: &[PolicyRule]) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for r in rules {
        assert!(r.resource_names.is_none() && r.non_resource_urls.is_none());
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                let mut verbs = r.verbs.clone();
                verbs.sort();
                assert!(!verbs.iter().any(|v| v == "*"), "no wildcard verbs");
                out.push((g.clone(), res.clone(), verbs));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn rbac_grants_exactly_what_the_agent_uses() {
    let cluster: ClusterRole = typed(&find("ClusterRole"), "ClusterRole");
    let role: Role = typed(&find("Role"), "Role");
    for (scope, rules) in [
        (Scope::Cluster, cluster.rules.unwrap_or_default()),
        (Scope::Namespace, role.rules.unwrap_or_default()),
    ] {
        let mut want: Vec<(String, String, Vec<String>)> = REQUIRED
            .iter()
            .filter(|(s, ..)| *s == scope)
            .map(|(_, g, r, verbs)| {
                let mut v: Vec<String> = verbs.iter().map(|s| s.to_string()).collect();
                v.sort();
                (g.to_string(), r.to_string(), v)
            })
            .collect();
        want.sort();
        assert_eq!(grants(&rules), want, "{scope:?} rules");
    }
}

#[test]
fn daemonset_settings() {
    let ds: DaemonSet = typed(&find("DaemonSet"), "DaemonSet");
    let pod = ds.spec.expect("spec").template.spec.expect("pod spec");
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("routelet"));
    let tolerations = pod.tolerations.expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
        "tolerates every taint"
    );
    let c = &pod.containers[0];
    let env = c.env.as_ref().expect("env");
    let node_name = env
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME");
    let field = node_name
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("NODE_NAME from the downward API");
    assert_eq!(field.field_path, "spec.nodeName");
    let sc = c.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let mut add = caps.add.clone().unwrap_or_default();
    add.sort();
    assert_eq!(add, vec!["NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"]);
    for (what, probe) in [
        ("liveness", c.liveness_probe.as_ref()),
        ("readiness", c.readiness_probe.as_ref()),
        ("startup", c.startup_probe.as_ref()),
    ] {
        let http = probe
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{what} probe"));
        assert_eq!(
            http.host.as_deref(),
            Some("127.0.0.1"),
            "{what} probe on loopback"
        );
    }
    let args = c.args.as_ref().expect("args");
    assert_eq!(args[0], "agent");
}

#[test]
fn shipped_agent_config_is_valid() {
    let cm: ConfigMap = typed(&find("ConfigMap"), "ConfigMap");
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("agent.yaml"))
        .expect("agent.yaml");
    let settings = agent::agent_config::parse_agent(text, Path::new("configmap agent.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let ds: DaemonSet = typed(&find("DaemonSet"), "DaemonSet");
    let pod = ds.spec.expect("spec").template.spec.expect("pod spec");
    let c = &pod.containers[0];
    let probe_port = c
        .liveness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .map(|h| h.port.clone())
        .expect("probe port");
    let metrics = settings.metrics.expect("metrics address set");
    assert_eq!(
        probe_port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i32::from(metrics.port())),
        "probes target the agent's metrics/health port"
    );
    assert!(metrics.ip().is_loopback());
}
