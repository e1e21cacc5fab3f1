//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch
//! (merge semantics plus kube-apiserver's list merge keys for the served types).

use serde_json::{Map, Value};

/// The PATCH content types the stand-in applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
}

pub const MERGE: &str = "application/merge-patch+json";
pub const STRATEGIC: &str = "application/strategic-merge-patch+json";
pub const JSON: &str = "application/json-patch+json";
pub const APPLY: &str = "application/apply-patch+yaml";

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            MERGE => Some(Self::Merge),
            STRATEGIC => Some(Self::Strategic),
            JSON => Some(Self::Json),
            _ => None,
        }
    }
}

/// Apply a patch to `target` (the current object). Errors are messages for `400`/`422`.
pub fn apply(
    kind: PatchType,
    plural: &str,
    target: &Value,
    patch: &Value,
) -> Result<Value, String> {
    match kind {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err("merge patch body must be a JSON object".into());
            }
            let mut out = target.clone();
            json_patch::merge(&mut out, patch);
            Ok(out)
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| format!("invalid JSON patch: {e}"))?;
            let mut out = target.clone();
            json_patch::patch(&mut out, &ops).map_err(|e| e.to_string())?;
            Ok(out)
        }
        PatchType::Strategic => {
            let Value::Object(p) = patch else {
                return Err("strategic merge patch body must be a JSON object".into());
            };
            let mut out = target.clone();
            if merge_map(&mut out, p, plural, "")? {
                return Err("$patch: delete of the whole object is not allowed".into());
            }
            Ok(out)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ListStrategy {
    Replace,
    Key(&'static str),
    Primitive,
}

/// kube-apiserver's `patchStrategy: merge` lists for the served types (others are replaced).
fn list_strategy(plural: &str, path: &str) -> ListStrategy {
    use ListStrategy::*;
    match (plural, path) {
        (_, "metadata.ownerReferences") => Key("uid"),
        (_, "metadata.finalizers") => Primitive,
        ("nodes", "status.addresses") => Key("type"),
        ("nodes" | "pods" | "services" | "namespaces", "status.conditions") => Key("type"),
        ("nodes", "spec.podCIDRs") => Primitive,
        ("nodes", "status.volumesAttached") => Key("name"),
        ("services", "spec.ports") => Key("port"),
        ("pods", "spec.containers" | "spec.initContainers" | "spec.ephemeralContainers") => {
            Key("name")
        }
        ("pods", "spec.containers.env" | "spec.initContainers.env") => Key("name"),
        ("pods", "spec.containers.ports" | "spec.initContainers.ports") => Key("containerPort"),
        ("pods", "spec.containers.volumeMounts" | "spec.initContainers.volumeMounts") => {
            Key("mountPath")
        }
        ("pods", "spec.volumes" | "spec.imagePullSecrets") => Key("name"),
        ("pods", "status.podIPs") => Key("ip"),
        _ => Replace,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Merge `patch` into `target` (made an object if it is not). Returns true if the patch says
/// `$patch: delete` (the caller removes `target`).
fn merge_map(
    target: &mut Value,
    patch: &Map<String, Value>,
    plural: &str,
    path: &str,
) -> Result<bool, String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(true),
        Some("replace") => {
            *target = strip_directives(&Value::Object(patch.clone()));
            return Ok(false);
        }
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other}")),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return Ok(false);
    };
    for (k, v) in patch {
        if k == "$patch" || k.starts_with("$setElementOrder/") {
            continue; // ordering hints: the stand-in keeps the merged order
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = v.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = t.get_mut(field) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            return Err(format!(
                "strategic merge patch directive {k} is not supported by this server"
            ));
        }
        let sub = join(path, k);
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(pm) => {
                let entry = t.entry(k.clone()).or_insert(Value::Null);
                if merge_map(entry, pm, plural, &sub)? {
                    t.remove(k);
                }
            }
            Value::Array(items) => {
                let merged = merge_list(t.get(k), items, plural, &sub)?;
                t.insert(k.clone(), merged);
            }
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
    }
    Ok(false)
}

fn merge_list(
    target: Option<&Value>,
    items: &[Value],
    plural: &str,
    path: &str,
) -> Result<Value, String> {
    let replace_all = items.iter().any(|i| {
        i.get("$patch").and_then(Value::as_str) == Some("replace")
            && i.as_object().is_some_and(|m| m.len() == 1)
    });
    let current: Vec<Value> = target
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let strategy = list_strategy(plural, path);
    if replace_all || strategy == ListStrategy::Replace {
        let kept = items
            .iter()
            .filter(|i| !(i.get("$patch").is_some() && i.as_object().is_some_and(|m| m.len() == 1)))
            .map(strip_directives)
            .collect();
        return Ok(Value::Array(kept));
    }
    let mut out = current;
    match strategy {
        ListStrategy::Primitive => {
            for i in items {
                if !out.contains(i) {
                    out.push(i.clone());
                }
            }
        }
        ListStrategy::Key(key) => {
            for item in items {
                let Value::Object(pm) = item else {
                    return Err(format!(
                        "{path}: list elements must be objects with the merge key {key}"
                    ));
                };
                let Some(kv) = pm.get(key) else {
                    return Err(format!(
                        "map: {item} does not contain declared merge key: {key}"
                    ));
                };
                let pos = out.iter().position(|e| e.get(key) == Some(kv));
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.retain(|e| e.get(key) != Some(kv));
                    continue;
                }
                match pos {
                    Some(p) => {
                        if merge_map(&mut out[p], pm, plural, path)? {
                            out.remove(p);
                        }
                    }
                    None => out.push(strip_directives(item)),
                }
            }
        }
        ListStrategy::Replace => {}
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> Value {
        json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}, "finalizers": ["f1"]},
               "spec": {"podCIDRs": ["10.0.0.0/24"], "taints": [{"key": "k", "effect": "NoSchedule"}]},
               "status": {"addresses": [{"type": "InternalIP", "address": "10.1.1.1"},
                                        {"type": "Hostname", "address": "a"}]}})
    }

    #[test]
    fn merge_patch_is_rfc7386() {
        let out = apply(PatchType::Merge, "nodes", &node(),
            &json!({"metadata": {"labels": {"x": null, "z": "3"}}, "status": {"addresses": [{"type": "ExternalIP", "address": "1.2.3.4"}]}}))
            .expect("applies");
        assert_eq!(out["metadata"]["labels"], json!({"y": "2", "z": "3"}));
        assert_eq!(out["status"]["addresses"].as_array().map(Vec::len), Some(1));
        assert!(apply(PatchType::Merge, "nodes", &node(), &json!([1])).is_err());
    }

    #[test]
    fn strategic_merges_keyed_lists() {
        let out = apply(
            PatchType::Strategic,
            "nodes",
            &node(),
            &json!({"metadata": {"labels": {"x": null}, "finalizers": ["f2"]},
                    "spec": {"podCIDRs": ["10.0.0.0/24", "fd00::/64"], "taints": []},
                    "status": {"addresses": [{"type": "InternalIP", "address": "10.1.1.2"},
                                             {"type": "Hostname", "$patch": "delete"},
                                             {"type": "ExternalIP", "address": "1.2.3.4"}]}}),
        )
        .expect("applies");
        assert_eq!(out["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["f1", "f2"]));
        assert_eq!(out["spec"]["podCIDRs"], json!(["10.0.0.0/24", "fd00::/64"]));
        assert_eq!(out["spec"]["taints"], json!([]));
        assert_eq!(
            out["status"]["addresses"],
            json!([
            {"type": "InternalIP", "address": "10.1.1.2"}, {"type": "ExternalIP", "address": "1.2.3.4"}])
        );
    }

    #[test]
    fn strategic_directives() {
        let out = apply(PatchType::Strategic, "nodes", &node(),
            &json!({"metadata": {"labels": {"$patch": "replace", "only": "me"},
                                 "$deleteFromPrimitiveList/finalizers": ["f1"]},
                    "status": {"addresses": [{"$patch": "replace"}, {"type": "Hostname", "address": "b"}],
                               "$setElementOrder/addresses": [{"type": "Hostname"}]},
                    "spec": {"$patch": "delete"}}))
            .expect("applies");
        assert_eq!(out["metadata"]["labels"], json!({"only": "me"}));
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        assert_eq!(
            out["status"]["addresses"],
            json!([{"type": "Hostname", "address": "b"}])
        );
        assert!(out.get("spec").is_none());
        assert!(apply(
            PatchType::Strategic,
            "nodes",
            &node(),
            &json!({"$retainKeys": []})
        )
        .is_err());
        assert!(apply(
            PatchType::Strategic,
            "nodes",
            &node(),
            &json!({"status": {"addresses": [{"address": "x"}]}})
        )
        .is_err());
    }

    #[test]
    fn json_patch_ops() {
        let out = apply(
            PatchType::Json,
            "nodes",
            &node(),
            &json!([{"op": "add", "path": "/metadata/labels/z", "value": "3"},
                    {"op": "remove", "path": "/spec/taints/0"},
                    {"op": "test", "path": "/metadata/name", "value": "a"}]),
        )
        .expect("applies");
        assert_eq!(out["metadata"]["labels"]["z"], "3");
        assert_eq!(out["spec"]["taints"], json!([]));
        assert!(apply(
            PatchType::Json,
            "nodes",
            &node(),
            &json!([{"op": "test", "path": "/metadata/name", "value": "b"}])
        )
        .is_err());
        assert!(apply(PatchType::Json, "nodes", &node(), &json!({"op": "add"})).is_err());
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchType::Merge)
        );
        assert_eq!(PatchType::from_content_type(APPLY), None);
    }
}
