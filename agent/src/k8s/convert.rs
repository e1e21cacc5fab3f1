//! Projection of Kubernetes objects (Node, Service, EndpointSlice) into the desired-state
//! `Snapshot`: pure, tolerant of bad values (each becomes a `Problem` on its object).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use bgp::types::Prefix;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::desired::annotations::{parse_node_annotations, EXCLUDE_FROM_EXTERNAL_LB};
use crate::desired::services::LOAD_BALANCER_CLASS;
use crate::desired::{
    NodeInfo, ObjectRef, Problem, ServiceInfo, ServiceKey, ServiceKind, Snapshot,
};
use crate::ipam::lb::{LbRequest, IPS_ANNOTATION, POOL_ANNOTATION};

/// EndpointSlice label naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Builds the snapshot from the current lists of objects.
pub fn snapshot<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Snapshot {
    let mut problems = Vec::new();
    let mut node_map = BTreeMap::new();
    for n in nodes {
        if let Some(info) = node_info(n, &mut problems) {
            node_map.insert(info.name.clone(), info);
        }
    }
    let mut by_service: BTreeMap<ServiceKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let ns = s.metadata.namespace.as_deref().unwrap_or("default");
        if let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            by_service
                .entry(ServiceKey::new(ns, svc))
                .or_default()
                .push(s);
        }
    }
    let mut service_map = BTreeMap::new();
    for s in services {
        let Some(key) = service_key(s) else { continue };
        let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
        let info = service_info(&key, s, slices, &mut problems);
        service_map.insert(key, info);
    }
    Snapshot {
        nodes: node_map,
        services: service_map,
        problems,
    }
}

fn service_key(s: &Service) -> Option<ServiceKey> {
    let name = s.metadata.name.as_deref()?;
    Some(ServiceKey::new(
        s.metadata.namespace.as_deref().unwrap_or("default"),
        name,
    ))
}

/// A Node's routing view; `None` for a nameless object.
pub fn node_info(node: &Node, problems: &mut Vec<Problem>) -> Option<NodeInfo> {
    let name = node.metadata.name.clone()?;
    let mut report = |reason: &'static str, message: String| {
        problems.push(Problem {
            object: ObjectRef::Node(name.clone()),
            reason,
            message,
        })
    };
    let mut addresses = Vec::new();
    for a in node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
    {
        match a.address.parse::<IpAddr>() {
            Ok(ip) if !addresses.contains(&ip) => addresses.push(ip),
            Ok(_) => {}
            Err(_) => report(
                "InvalidAddress",
                format!(
                    "status.addresses InternalIP `{}` is not an IP address",
                    a.address
                ),
            ),
        }
    }
    let spec = node.spec.as_ref();
    let cidr_texts: Vec<String> = match spec.and_then(|s| s.pod_cidrs.clone()) {
        Some(list) if !list.is_empty() => list,
        _ => spec.and_then(|s| s.pod_cidr.clone()).into_iter().collect(),
    };
    let mut pod_cidrs = Vec::new();
    for t in cidr_texts {
        match t.parse::<Prefix>() {
            Ok(p) if p.trunc() == p => pod_cidrs.push(p),
            Ok(p) => report(
                "InvalidPodCIDR",
                format!("spec.podCIDRs {p} has host bits set; not advertised"),
            ),
            Err(_) => report(
                "InvalidPodCIDR",
                format!("spec.podCIDRs `{t}` is not a CIDR; not advertised"),
            ),
        }
    }
    let empty = BTreeMap::new();
    let annotations = node.metadata.annotations.as_ref().unwrap_or(&empty);
    let parsed = parse_node_annotations(&name, annotations, problems);
    let exclude_from_external_lb = node
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EXCLUDE_FROM_EXTERNAL_LB));
    Some(NodeInfo {
        name,
        addresses,
        asn: parsed.asn,
        route_reflector: parsed.route_reflector,
        peers: parsed.peers,
        pod_cidrs,
        blocks: Vec::new(),
        exclude_from_external_lb,
        vtep_mac_v4: parsed.vtep_mac_v4,
        vtep_mac_v6: parsed.vtep_mac_v6,
    })
}

/// A Service's routing view, with the readiness of `slices` (its EndpointSlices).
pub fn service_info(
    key: &ServiceKey,
    svc: &Service,
    slices: &[&EndpointSlice],
    problems: &mut Vec<Problem>,
) -> ServiceInfo {
    let mut report = |message: String| {
        problems.push(Problem {
            object: ObjectRef::Service(key.clone()),
            reason: "InvalidAddress",
            message,
        })
    };
    let mut ips = |field: &str, texts: Vec<String>| -> Vec<IpAddr> {
        let mut out = Vec::new();
        for t in texts {
            if t.is_empty() || t == "None" {
                continue;
            }
            match t.parse::<IpAddr>() {
                Ok(ip) if !out.contains(&ip) => out.push(ip),
                Ok(_) => {}
                Err(_) => report(format!("{field} `{t}` is not an IP address; ignored")),
            }
        }
        out
    };
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = match spec.type_.as_deref() {
        Some("LoadBalancer") => ServiceKind::LoadBalancer,
        Some("NodePort") => ServiceKind::NodePort,
        Some("ExternalName") => ServiceKind::ExternalName,
        _ => ServiceKind::ClusterIp,
    };
    let cluster_texts = match spec.cluster_ips.clone() {
        Some(list) if !list.is_empty() => list,
        _ => spec.cluster_ip.clone().into_iter().collect(),
    };
    let cluster_ips = ips("spec.clusterIPs", cluster_texts);
    let external_ips = ips(
        "spec.externalIPs",
        spec.external_ips.clone().unwrap_or_default(),
    );
    let ingress: Vec<String> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect();
    let load_balancer_ips = ips("status.loadBalancer.ingress", ingress);

    let mut ready_nodes = BTreeSet::new();
    let mut has_ready_endpoints = false;
    for slice in slices {
        for ep in &slice.endpoints {
            // A missing `ready` is "unknown", which consumers treat as ready (API docs).
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            has_ready_endpoints = true;
            if let Some(n) = &ep.node_name {
                ready_nodes.insert(n.clone());
            }
        }
    }
    ServiceInfo {
        kind,
        cluster_ips,
        external_ips,
        load_balancer_ips,
        external_traffic_local: spec.external_traffic_policy.as_deref() == Some("Local"),
        internal_traffic_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        load_balancer_class: spec.load_balancer_class.clone(),
        ready_nodes,
        has_ready_endpoints,
    }
}

/// The allocator's view of a LoadBalancer Service routelet serves (`None` for any other).
/// Unparsable requested addresses are problems; the Service then waits for a valid request
/// instead of getting an address it did not ask for.
pub fn lb_request(
    key: &ServiceKey,
    svc: &Service,
    problems: &mut Vec<Problem>,
) -> Option<LbRequest> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return None;
    }
    if spec
        .load_balancer_class
        .as_deref()
        .is_some_and(|c| c != LOAD_BALANCER_CLASS)
    {
        return None;
    }
    let annotations = svc.metadata.annotations.as_ref();
    let mut requested = Vec::new();
    let mut bad = false;
    let texts = annotations
        .and_then(|a| a.get(IPS_ANNOTATION))
        .map(|v| (IPS_ANNOTATION, v.clone()))
        .or_else(|| {
            spec.load_balancer_ip
                .clone()
                .filter(|v| !v.is_empty())
                .map(|v| ("spec.loadBalancerIP", v))
        });
    if let Some((field, text)) = texts {
        for t in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match t.parse::<IpAddr>() {
                Ok(ip)
                    if requested
                        .iter()
                        .any(|r: &IpAddr| r.is_ipv4() == ip.is_ipv4()) =>
                {
                    bad = true;
                    problems.push(Problem {
                        object: ObjectRef::Service(key.clone()),
                        reason: "InvalidLoadBalancerIP",
                        message: format!("{field}: more than one address of the family of {ip}"),
                    });
                }
                Ok(ip) => requested.push(ip),
                Err(_) => {
                    bad = true;
                    problems.push(Problem {
                        object: ObjectRef::Service(key.clone()),
                        reason: "InvalidLoadBalancerIP",
                        message: format!("{field}: `{t}` is not an IP address"),
                    });
                }
            }
        }
    }
    if bad {
        return None;
    }
    let current = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref().and_then(|t| t.parse().ok()))
        .collect();
    let families = spec
        .ip_families
        .iter()
        .flatten()
        .filter_map(|f| match f.as_str() {
            "IPv4" => Some(true),
            "IPv6" => Some(false),
            _ => None,
        })
        .collect();
    Some(LbRequest {
        created: svc
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        pool: annotations.and_then(|a| a.get(POOL_ANNOTATION)).cloned(),
        requested,
        current,
        families,
        require_all_families: spec.ip_family_policy.as_deref() == Some("RequireDualStack"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("test object is valid JSON for its type")
    }

    #[test]
    fn node_projection() {
        let node: Node = from_json(serde_json::json!({
            "metadata": {
                "name": "n1",
                "labels": {"node.kubernetes.io/exclude-from-external-load-balancers": ""},
                "annotations": {"routelet.io/asn": "65001", "routelet.io/route-reflector": "bogus"}
            },
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64", "10.244.9.1/24", "x"]},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "10.0.0.1"},
                {"type": "ExternalIP", "address": "198.51.100.1"},
                {"type": "InternalIP", "address": "fd00::1"},
                {"type": "InternalIP", "address": "not-an-ip"}
            ]}
        }));
        let mut problems = Vec::new();
        let n = node_info(&node, &mut problems).expect("named node");
        assert_eq!(n.name, "n1");
        assert_eq!(
            n.addresses,
            vec![
                "10.0.0.1".parse::<IpAddr>().expect("ip"),
                "fd00::1".parse().expect("ip")
            ]
        );
        assert_eq!(n.asn, Some(65001));
        assert_eq!(n.route_reflector, None);
        assert!(n.exclude_from_external_lb);
        assert_eq!(
            n.pod_cidrs,
            vec![
                "10.244.1.0/24".parse::<Prefix>().expect("p"),
                "fd00:10:244:1::/64".parse().expect("p")
            ]
        );
        let reasons: Vec<&str> = problems.iter().map(|p| p.reason).collect();
        assert_eq!(
            reasons,
            vec![
                "InvalidAddress",
                "InvalidPodCIDR",
                "InvalidPodCIDR",
                "InvalidAnnotation"
            ]
        );
        assert!(node_info(&Node::default(), &mut problems).is_none());
    }

    #[test]
    fn service_and_endpoint_slices() {
        let svc: Service = from_json(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:10:96::a"],
                     "externalIPs": ["198.51.100.9", "nope"], "externalTrafficPolicy": "Local",
                     "loadBalancerClass": "routelet.io/bgp"},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}, {"hostname": "lb.example"}]}}
        }));
        let headless: Service = from_json(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None"}
        }));
        let slice = |name: &str, svc: &str, eps: serde_json::Value| -> EndpointSlice {
            from_json(serde_json::json!({
                "metadata": {"name": name, "namespace": "shop", "labels": {"kubernetes.io/service-name": svc}},
                "addressType": "IPv4",
                "endpoints": eps
            }))
        };
        let slices = [
            slice(
                "web-1",
                "web",
                serde_json::json!([
                    {"addresses": ["10.244.1.5"], "nodeName": "n1", "conditions": {"ready": true}},
                    {"addresses": ["10.244.2.5"], "nodeName": "n2", "conditions": {"ready": false}},
                    {"addresses": ["10.244.3.5"], "nodeName": "n3"}
                ]),
            ),
            slice(
                "web-2",
                "web",
                serde_json::json!([
                    {"addresses": ["10.244.4.5"], "nodeName": "n4", "conditions": {"ready": true}}
                ]),
            ),
            slice(
                "other",
                "db",
                serde_json::json!([
                    {"addresses": ["10.244.2.6"], "nodeName": "n2", "conditions": {"ready": false}}
                ]),
            ),
        ];
        let snap = snapshot([], [&svc, &headless], slices.iter());
        let web = &snap.services[&ServiceKey::new("shop", "web")];
        assert_eq!(web.kind, ServiceKind::LoadBalancer);
        assert_eq!(web.cluster_ips.len(), 2);
        assert_eq!(
            web.external_ips,
            vec!["198.51.100.9".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(
            web.load_balancer_ips,
            vec!["203.0.113.5".parse::<IpAddr>().expect("ip")]
        );
        assert!(web.external_traffic_local && !web.internal_traffic_local);
        assert_eq!(web.load_balancer_class.as_deref(), Some("routelet.io/bgp"));
        let ready: Vec<&str> = web.ready_nodes.iter().map(String::as_str).collect();
        assert_eq!(ready, vec!["n1", "n3", "n4"], "unset ready counts as ready");
        assert!(web.has_ready_endpoints);
        let db = &snap.services[&ServiceKey::new("shop", "db")];
        assert!(db.cluster_ips.is_empty(), "headless");
        assert!(!db.has_ready_endpoints && db.ready_nodes.is_empty());
        assert_eq!(snap.problems.len(), 1, "{:?}", snap.problems);
        assert!(snap.problems[0].message.contains("`nope`"));
    }

    #[test]
    fn load_balancer_requests() {
        let svc = |v: serde_json::Value| -> Service { from_json(v) };
        let key = ServiceKey::new("shop", "web");
        let mut problems = Vec::new();
        let r = lb_request(
            &key,
            &svc(serde_json::json!({
                "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2026-12-01T10:00:00Z",
                             "annotations": {"routelet.io/pool": "gold", "routelet.io/load-balancer-ips": "203.0.113.5, 2001:db8::5"}},
                "spec": {"type": "LoadBalancer", "loadBalancerIP": "203.0.113.9", "ipFamilies": ["IPv4", "IPv6"],
                         "ipFamilyPolicy": "RequireDualStack"},
                "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}
            })),
            &mut problems,
        )
        .expect("a LoadBalancer service");
        assert_eq!(problems, vec![]);
        assert_eq!(r.pool.as_deref(), Some("gold"));
        assert_eq!(
            r.requested.len(),
            2,
            "the annotation wins over spec.loadBalancerIP"
        );
        assert_eq!(
            r.current,
            vec!["203.0.113.5".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(r.families, vec![true, false]);
        assert!(r.require_all_families);
        assert!(r.created.starts_with("2026-12-01"));

        let r = lb_request(
            &key,
            &svc(serde_json::json!({"metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "loadBalancerIP": "203.0.113.9"}})),
            &mut problems,
        )
        .expect("spec.loadBalancerIP");
        assert_eq!(
            r.requested,
            vec!["203.0.113.9".parse::<IpAddr>().expect("ip")]
        );

        for spec in [
            serde_json::json!({"type": "ClusterIP"}),
            serde_json::json!({"type": "LoadBalancer", "loadBalancerClass": "example.com/other"}),
        ] {
            assert_eq!(
                lb_request(
                    &key,
                    &svc(serde_json::json!({"metadata": {"name": "web"}, "spec": spec})),
                    &mut problems
                ),
                None
            );
        }
        let bad = lb_request(
            &key,
            &svc(
                serde_json::json!({"metadata": {"name": "web", "annotations": {"routelet.io/load-balancer-ips": "203.0.113.5,lots"}},
                                    "spec": {"type": "LoadBalancer"}}),
            ),
            &mut problems,
        );
        assert_eq!(
            bad, None,
            "a bad request waits instead of getting some other address"
        );
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("`lots`"), "{:?}", problems);
    }
}
