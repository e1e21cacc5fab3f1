//! Which service addresses a node originates: the service CIDR aggregate, ClusterIP /32s for
//! traffic-policy Local services with a ready local endpoint, allow-listed externalIPs and
//! LoadBalancer IPs from routelet's pools (honouring externalTrafficPolicy and the
//! exclude-from-external-load-balancers label).

use std::collections::BTreeSet;
use std::net::IpAddr;

use bgp::types::Prefix;

use super::model::{NodeInfo, ObjectRef, Problem, ServiceInfo, ServiceKind, Snapshot};
use crate::agent_config::AgentSettings;

/// The `spec.loadBalancerClass` routelet serves (besides unset).
pub const LOAD_BALANCER_CLASS: &str = "routelet.io/bgp";

/// The host prefix (/32 or /128) of `addr`.
pub fn host_prefix(addr: IpAddr) -> Prefix {
    Prefix::from(addr)
}

/// Is this Service ours to advertise (not another load balancer's)?
pub fn is_ours(svc: &ServiceInfo) -> bool {
    svc.kind != ServiceKind::ExternalName
        && svc
            .load_balancer_class
            .as_deref()
            .is_none_or(|c| c == LOAD_BALANCER_CLASS)
}

pub(super) fn advertise(
    settings: &AgentSettings,
    snapshot: &Snapshot,
    me: &NodeInfo,
    originate: &mut BTreeSet<Prefix>,
    problems: &mut Vec<Problem>,
) {
    if settings.advertise.cluster_ips {
        originate.extend(settings.service_cidrs.iter().copied());
    }
    for (key, svc) in &snapshot.services {
        if !is_ours(svc) {
            continue;
        }
        let local_ready = svc.ready_nodes.contains(&me.name);
        let mut problem = |reason: &'static str, message: String| {
            problems.push(Problem {
                object: ObjectRef::Service(key.clone()),
                reason,
                message,
            })
        };

        if settings.advertise.cluster_ips {
            let local_policy = svc.internal_traffic_local || svc.external_traffic_local;
            for ip in &svc.cluster_ips {
                if !settings.service_cidrs.iter().any(|c| c.contains(ip)) {
                    problem(
                        "ClusterIPOutsideServiceCIDR",
                        format!(
                            "cluster IP {ip} is not inside service_cidr; the aggregate does not cover it"
                        ),
                    );
                }
                if local_policy && local_ready {
                    originate.insert(host_prefix(*ip));
                }
            }
        }

        // External and LoadBalancer addresses: from every node while the Service has a ready
        // endpoint (Cluster policy), or only from nodes with a ready local one (Local).
        let external_ok = !me.exclude_from_external_lb
            && if svc.external_traffic_local {
                local_ready
            } else {
                svc.has_ready_endpoints
            };
        for ip in &svc.external_ips {
            if !settings
                .advertise
                .external_ips
                .iter()
                .any(|c| c.contains(ip))
            {
                problem(
                    "ExternalIPNotAllowed",
                    format!("externalIP {ip} is not inside advertise.external_ips; not advertised"),
                );
            } else if external_ok {
                originate.insert(host_prefix(*ip));
            }
        }
        if settings.advertise.load_balancer_ips && svc.kind == ServiceKind::LoadBalancer {
            for ip in &svc.load_balancer_ips {
                if !in_pools(settings, ip) {
                    problem(
                        "LoadBalancerIPNotInPool",
                        format!(
                            "status.loadBalancer.ingress IP {ip} is in none of routelet's pools; not advertised"
                        ),
                    );
                } else if external_ok {
                    originate.insert(host_prefix(*ip));
                }
            }
        }
    }
}

fn in_pools(settings: &AgentSettings, ip: &IpAddr) -> bool {
    settings
        .pools
        .iter()
        .any(|p| p.cidrs.iter().any(|c| c.contains(ip)))
}
