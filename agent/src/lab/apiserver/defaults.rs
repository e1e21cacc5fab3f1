//! Service defaulting and allocation the way kube-apiserver does it: `type`, `sessionAffinity`,
//! port protocol and targetPort, traffic policies, an IPv4 ClusterIP from the service CIDR and
//! NodePorts from 30000-32767; allocated values are kept (and immutable) on update.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::resources::ResourceType;
use super::status::ApiError;
use super::store::Store;

const NODE_PORTS: std::ops::RangeInclusive<u64> = 30000..=32767;

fn services_index() -> usize {
    super::resources::lookup("", "v1", "services").unwrap_or(usize::MAX)
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// Namespaces always carry `kubernetes.io/metadata.name: <name>` (set by kube-apiserver).
fn namespace_label(rt: &ResourceType, obj: &mut Value) {
    if rt.plural != "namespaces" || !rt.group.is_empty() {
        return;
    }
    let name = s(obj, "/metadata/name").to_string();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let labels = meta.entry("labels").or_insert(json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        if let Some(l) = labels.as_object_mut() {
            l.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
}

/// Defaults for a new object (Services; the Namespace name label).
pub fn apply(rt: &ResourceType, obj: &mut Value, store: &Store) -> Result<(), ApiError> {
    namespace_label(rt, obj);
    if rt.plural != "services" || !rt.group.is_empty() {
        return Ok(());
    }
    let name = s(obj, "/metadata/name").to_string();
    if !obj.get("spec").is_some_and(Value::is_object) {
        return Err(ApiError::invalid(
            rt,
            &name,
            &[("spec".into(), "FieldValueRequired", "Required value".into())],
        ));
    }
    defaults_common(rt, &name, obj)?;
    let ty = s(obj, "/spec/type").to_string();
    if ty == "ExternalName" {
        return Ok(());
    }
    let cluster_ip = s(obj, "/spec/clusterIP").to_string();
    let families: Vec<String> = obj
        .pointer("/spec/ipFamilies")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if families.iter().any(|f| f != "IPv4") {
        return Err(ApiError::invalid(
            rt,
            &name,
            &[(
                "spec.ipFamilies[0]".into(),
                "FieldValueInvalid",
                format!(
                    "Invalid value: \"{}\": not configured on this cluster",
                    families.join(",")
                ),
            )],
        ));
    }
    let ip = if cluster_ip.is_empty() {
        allocate_ip(rt, &name, store)?
    } else if cluster_ip == "None" {
        cluster_ip
    } else {
        check_requested_ip(rt, &name, &cluster_ip, store)?;
        cluster_ip
    };
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("clusterIP".into(), json!(ip));
        spec.insert("clusterIPs".into(), json!([ip]));
        spec.insert("ipFamilies".into(), json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
        spec.entry("internalTrafficPolicy")
            .or_insert(json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        allocate_node_ports(obj, store);
    }
    Ok(())
}

fn defaults_common(rt: &ResourceType, name: &str, obj: &mut Value) -> Result<(), ApiError> {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let ty = spec
        .entry("type")
        .or_insert(json!("ClusterIP"))
        .as_str()
        .unwrap_or("")
        .to_string();
    if !matches!(
        ty.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        return Err(ApiError::invalid(rt, name, &[(
            "spec.type".into(),
            "FieldValueNotSupported",
            format!("Unsupported value: \"{ty}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
        )]));
    }
    if ty == "ExternalName" {
        return Ok(());
    }
    spec.entry("sessionAffinity").or_insert(json!("None"));
    if ty == "NodePort" || ty == "LoadBalancer" {
        spec.entry("externalTrafficPolicy")
            .or_insert(json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        spec.entry("allocateLoadBalancerNodePorts")
            .or_insert(json!(true));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (i, p) in ports.iter_mut().enumerate() {
            let Some(p) = p.as_object_mut() else { continue };
            let port = p.get("port").and_then(Value::as_u64).unwrap_or(0);
            if port == 0 || port > 65535 {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    &[(
                        format!("spec.ports[{i}].port"),
                        "FieldValueInvalid",
                        format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
                    )],
                ));
            }
            p.entry("protocol").or_insert(json!("TCP"));
            p.entry("targetPort").or_insert(json!(port));
        }
    }
    Ok(())
}

fn used_ips(store: &Store) -> BTreeSet<String> {
    store
        .all(services_index())
        .filter_map(|o| {
            o.pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .collect()
}

fn allocate_ip(rt: &ResourceType, name: &str, store: &Store) -> Result<String, ApiError> {
    let net = store.service_cidr;
    let used = used_ips(store);
    let first = u32::from(net.network());
    let last = u32::from(net.broadcast());
    // The first address is the `kubernetes` Service's in kube-apiserver; keep it free too.
    for n in first.saturating_add(2)..last {
        let ip = Ipv4Addr::from(n).to_string();
        if !used.contains(&ip) {
            return Ok(ip);
        }
    }
    Err(ApiError::internal(format!(
        "failed to allocate a serviceIP for service {name} ({}): range is full",
        rt.plural
    )))
}

fn check_requested_ip(
    rt: &ResourceType,
    name: &str,
    ip: &str,
    store: &Store,
) -> Result<(), ApiError> {
    let err = |why: &str| {
        ApiError::invalid(
            rt,
            name,
            &[(
                "spec.clusterIPs".into(),
                "FieldValueInvalid",
                format!("Invalid value: [\"{ip}\"]: {why}"),
            )],
        )
    };
    let addr: Ipv4Addr = ip.parse().map_err(|_| err("must be a valid IP address"))?;
    if !store.service_cidr.contains(&addr) {
        return Err(err(&format!("failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}", store.service_cidr)));
    }
    if used_ips(store).contains(ip) {
        return Err(err(&format!(
            "failed to allocate IP {ip}: provided IP is already allocated"
        )));
    }
    Ok(())
}

fn allocate_node_ports(obj: &mut Value, store: &Store) {
    let mut used: BTreeSet<u64> = store
        .all(services_index())
        .flat_map(|o| {
            o.pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .collect();
    if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                used.insert(n);
                continue;
            }
            if let Some(n) = NODE_PORTS.clone().find(|n| !used.contains(n)) {
                used.insert(n);
                p.insert("nodePort".into(), json!(n));
            }
        }
    }
}

/// Keep allocated values on update (and refuse changes to them), as kube-apiserver does.
pub fn apply_update(rt: &ResourceType, old: &Value, new: &mut Value) -> Result<(), ApiError> {
    namespace_label(rt, new);
    if rt.plural != "services" || !rt.group.is_empty() {
        return Ok(());
    }
    let name = s(old, "/metadata/name").to_string();
    let old_ip = s(old, "/spec/clusterIP").to_string();
    let new_ip = s(new, "/spec/clusterIP").to_string();
    if !new_ip.is_empty() && new_ip != old_ip && s(new, "/spec/type") != "ExternalName" {
        return Err(ApiError::invalid(
            rt,
            &name,
            &[(
                "spec.clusterIPs[0]".into(),
                "FieldValueInvalid",
                format!("Invalid value: \"{new_ip}\": may not change once set"),
            )],
        ));
    }
    defaults_common(rt, &name, new)?;
    if let (Some(spec), Some(old_spec)) = (
        new.get_mut("spec").and_then(Value::as_object_mut),
        old.get("spec").and_then(Value::as_object),
    ) {
        for k in [
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
        ] {
            if !spec.contains_key(k) {
                if let Some(v) = old_spec.get(k) {
                    spec.insert(k.into(), v.clone());
                }
            }
        }
        let old_ports = old_spec
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                if p.contains_key("nodePort") {
                    continue;
                }
                let same = old_ports.iter().find(|o| {
                    o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol")
                });
                if let Some(n) = same.and_then(|o| o.get("nodePort")) {
                    p.insert("nodePort".into(), n.clone());
                }
            }
        }
    }
    Ok(())
}
