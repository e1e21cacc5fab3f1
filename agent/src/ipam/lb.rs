//! LoadBalancer IP allocation (MetalLB-like), pure: given the pools and every LoadBalancer
//! Service routelet serves, which addresses each Service should have, or why it must wait.
//!
//! Rules, applied in Service creation order (oldest first, then namespace/name), so the result
//! is stable and an existing assignment is never taken away by a newer Service:
//! 1. a Service keeps the addresses it already has (`status.loadBalancer.ingress`) while they
//!    are still allowed (inside its pool, matching what it requested, not held by an older
//!    Service);
//! 2. requested addresses (`spec.loadBalancerIP` or the `routelet.io/load-balancer-ips`
//!    annotation) are honoured when inside an allowed pool and free, else the Service waits;
//! 3. otherwise one free address per IP family of the Service is taken from its pool
//!    (`routelet.io/pool`) or, without one, from the `auto_assign` pools in config order.
//!
//! The network and broadcast addresses of IPv4 pool CIDRs shorter than /31 are never handed
//! out (some clients and routers drop traffic to x.x.x.0 and x.x.x.255).

use std::collections::BTreeMap;
use std::net::IpAddr;

use bgp::types::Prefix;

use crate::agent_config::Pool;
use crate::desired::ServiceKey;

/// Annotation naming the pool a Service takes its address from.
pub const POOL_ANNOTATION: &str = "routelet.io/pool";
/// Annotation with the addresses a Service asks for (comma-separated, one per family).
pub const IPS_ANNOTATION: &str = "routelet.io/load-balancer-ips";

/// One LoadBalancer Service, as the allocator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LbRequest {
    /// `metadata.creationTimestamp` (RFC 3339 sorts chronologically as text).
    pub created: String,
    /// `routelet.io/pool`.
    pub pool: Option<String>,
    /// Requested addresses; empty = any.
    pub requested: Vec<IpAddr>,
    /// Addresses the Service holds now (`status.loadBalancer.ingress`).
    pub current: Vec<IpAddr>,
    /// Families wanted, from `spec.ipFamilies` (`true` = IPv4); empty means IPv4.
    pub families: Vec<bool>,
    /// `ipFamilyPolicy: RequireDualStack`: every family or nothing.
    pub require_all_families: bool,
}

/// What a Service should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbOutcome {
    /// These addresses (write them to `status.loadBalancer.ingress`).
    Assigned(Vec<IpAddr>),
    /// Nothing yet; the reason goes into a Kubernetes Event on the Service.
    Pending(String),
}

/// Allocates addresses for every Service in `requests`.
pub fn allocate(
    pools: &[Pool],
    requests: &BTreeMap<ServiceKey, LbRequest>,
) -> BTreeMap<ServiceKey, LbOutcome> {
    let mut order: Vec<(&ServiceKey, &LbRequest)> = requests.iter().collect();
    order.sort_by(|a, b| (&a.1.created, a.0).cmp(&(&b.1.created, b.0)));

    let mut used: BTreeMap<IpAddr, &ServiceKey> = BTreeMap::new();
    let mut out = BTreeMap::new();
    // Pass 1: keep what is still valid, oldest first.
    let mut kept: BTreeMap<&ServiceKey, Vec<IpAddr>> = BTreeMap::new();
    for (key, req) in &order {
        let Ok(allowed) = allowed_pools(pools, req) else {
            continue;
        };
        let mut keep = Vec::new();
        for ip in &req.current {
            let valid = !used.contains_key(ip)
                && usable(&allowed, ip)
                && (req.requested.is_empty() || req.requested.contains(ip))
                && wants_family(req, ip)
                && !keep.iter().any(|k: &IpAddr| k.is_ipv4() == ip.is_ipv4());
            if valid {
                used.insert(*ip, key);
                keep.push(*ip);
            }
        }
        kept.insert(key, keep);
    }
    // Pass 2: fill the missing families.
    for (key, req) in &order {
        let allowed = match allowed_pools(pools, req) {
            Ok(a) => a,
            Err(reason) => {
                out.insert((*key).clone(), LbOutcome::Pending(reason));
                continue;
            }
        };
        let mut have = kept.remove(key).unwrap_or_default();
        let mut reasons = Vec::new();
        for v4 in families(req) {
            if have.iter().any(|ip| ip.is_ipv4() == v4) {
                continue;
            }
            let fam = if v4 { "IPv4" } else { "IPv6" };
            let requested: Vec<&IpAddr> = req
                .requested
                .iter()
                .filter(|ip| ip.is_ipv4() == v4)
                .collect();
            let pick = if let Some(ip) = requested.first() {
                if !usable(&allowed, ip) {
                    Err(format!(
                        "requested address {ip} is not in {}",
                        describe_pools(&allowed, req)
                    ))
                } else if let Some(holder) = used.get(*ip) {
                    Err(format!(
                        "requested address {ip} is in use by service {holder}"
                    ))
                } else {
                    Ok(**ip)
                }
            } else {
                free_address(&allowed, v4, &used).ok_or_else(|| {
                    format!("no free {fam} address in {}", describe_pools(&allowed, req))
                })
            };
            match pick {
                Ok(ip) => {
                    used.insert(ip, key);
                    have.push(ip);
                }
                Err(reason) => reasons.push(reason),
            }
        }
        let outcome = if have.is_empty() || (req.require_all_families && !reasons.is_empty()) {
            if req.require_all_families {
                for ip in &have {
                    used.remove(ip);
                }
            }
            LbOutcome::Pending(reasons.join("; "))
        } else {
            have.sort();
            LbOutcome::Assigned(have)
        };
        out.insert((*key).clone(), outcome);
    }
    out
}

fn families(req: &LbRequest) -> Vec<bool> {
    if req.families.is_empty() {
        vec![true]
    } else {
        let mut f = req.families.clone();
        f.dedup();
        f
    }
}

fn wants_family(req: &LbRequest, ip: &IpAddr) -> bool {
    families(req).contains(&ip.is_ipv4())
}

/// The pools a Service may take addresses from (`Err` = its named pool does not exist).
fn allowed_pools<'a>(pools: &'a [Pool], req: &LbRequest) -> Result<Vec<&'a Pool>, String> {
    match &req.pool {
        Some(name) => pools
            .iter()
            .find(|p| &p.name == name)
            .map(|p| vec![p])
            .ok_or_else(|| format!("pool `{name}` ({POOL_ANNOTATION}) does not exist")),
        None if !req.requested.is_empty() => Ok(pools.iter().collect()),
        None => Ok(pools.iter().filter(|p| p.auto_assign).collect()),
    }
}

fn describe_pools(allowed: &[&Pool], req: &LbRequest) -> String {
    if allowed.is_empty() {
        return "any pool (no pool has auto_assign)".into();
    }
    let names: Vec<String> = allowed.iter().map(|p| format!("`{}`", p.name)).collect();
    match &req.pool {
        Some(_) => format!("pool {}", names.join(", ")),
        None => format!("pools {}", names.join(", ")),
    }
}

/// Inside one of `allowed` and not a reserved network/broadcast address.
fn usable(allowed: &[&Pool], ip: &IpAddr) -> bool {
    allowed
        .iter()
        .flat_map(|p| &p.cidrs)
        .any(|c| c.contains(ip) && !reserved(c, ip))
}

fn reserved(cidr: &Prefix, ip: &IpAddr) -> bool {
    match cidr {
        Prefix::V4(n) if n.prefix_len() < 31 => {
            *ip == IpAddr::V4(n.network()) || *ip == IpAddr::V4(n.broadcast())
        }
        _ => false,
    }
}

/// The lowest free address of family `v4` in `allowed`, pools and CIDRs in config order.
fn free_address(
    allowed: &[&Pool],
    v4: bool,
    used: &BTreeMap<IpAddr, &ServiceKey>,
) -> Option<IpAddr> {
    for cidr in allowed.iter().flat_map(|p| &p.cidrs) {
        if matches!(cidr, Prefix::V4(_)) != v4 {
            continue;
        }
        // Skip over used addresses without walking a huge IPv6 range: at most |used| + 3
        // candidates can be taken or reserved before a free one.
        let limit = used.len() + 3;
        let found = cidr
            .hosts_and_edges()
            .take(limit)
            .find(|ip| !used.contains_key(ip) && !reserved(cidr, ip));
        if found.is_some() {
            return found;
        }
    }
    None
}

trait AllAddresses {
    /// Every address of the CIDR, network and broadcast included, in order.
    fn hosts_and_edges(&self) -> Box<dyn Iterator<Item = IpAddr>>;
}

impl AllAddresses for Prefix {
    fn hosts_and_edges(&self) -> Box<dyn Iterator<Item = IpAddr>> {
        match self {
            Prefix::V4(n) => {
                let start = u32::from(n.network());
                let end = u32::from(n.broadcast());
                Box::new((start..=end).map(|a| IpAddr::V4(a.into())))
            }
            Prefix::V6(n) => {
                let start = u128::from(n.network());
                let end = u128::from(n.broadcast());
                Box::new((start..=end).map(|a| IpAddr::V6(a.into())))
            }
        }
    }
}

#[cfg(test)]
#[path = "lb_tests.rs"]
mod tests;
