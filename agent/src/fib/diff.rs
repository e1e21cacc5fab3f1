//! Pure reconciliation: which [`FibOp`]s turn the kernel's view of our routes into the
//! desired one (next-hop order-insensitive).

use std::collections::HashMap;

use super::message::canonical_next_hops;
use super::{FibOp, KernelRoute, NextHop, Prefix};

/// Operations turning `kernel` (our routes as dumped) into `desired`.
///
/// * a desired prefix missing from the kernel is `Add`ed (exclusively: never over another
///   protocol's route), one present with a different next-hop set is `Replace`d (next hops compared as sets: order and duplicates do not matter);
/// * a kernel route whose prefix is not desired (or desired with no next hops) is `Delete`d;
/// * prefixes are compared after masking host bits.
///
/// The output is sorted (deletes after replaces, each by prefix) so it is deterministic.
pub fn diff(desired: &HashMap<Prefix, Vec<NextHop>>, kernel: &[KernelRoute]) -> Vec<FibOp> {
    let desired: HashMap<Prefix, Vec<NextHop>> = desired
        .iter()
        .filter(|(_, nh)| !nh.is_empty())
        .map(|(p, nh)| (p.trunc(), canonical_next_hops(nh)))
        .collect();
    let mut kernel_map: HashMap<Prefix, Vec<NextHop>> = HashMap::with_capacity(kernel.len());
    for route in kernel {
        // Duplicate dumps of one prefix (should not happen in one table) merge their hops.
        kernel_map
            .entry(route.prefix.trunc())
            .or_default()
            .extend(route.next_hops.iter().copied());
    }
    for hops in kernel_map.values_mut() {
        *hops = canonical_next_hops(hops);
    }

    let mut replaces: Vec<FibOp> = desired
        .iter()
        .filter_map(|(p, want)| {
            route_op(*p, Some(want), kernel_map.get(p).map(Vec::as_slice), true)
        })
        .collect();
    replaces.sort_by_key(|op| op.prefix());
    let mut deletes: Vec<Prefix> = kernel_map
        .keys()
        .filter(|p| !desired.contains_key(p))
        .copied()
        .collect();
    deletes.sort();
    replaces
        .into_iter()
        .chain(deletes.into_iter().map(FibOp::Delete))
        .collect()
}

/// The operation bringing one prefix from what the kernel has (`installed`) to what is
/// wanted (`desired`), both canonical; `None` when they already agree. A prefix we have no
/// route for is `Add`ed (exclusively: never over another protocol's route), one with other
/// next hops `Replace`d; an installed route nobody wants is `Delete`d only with
/// `delete_stale` (before routing has converged, routes left by a previous run stay).
pub fn route_op(
    prefix: Prefix,
    desired: Option<&[NextHop]>,
    installed: Option<&[NextHop]>,
    delete_stale: bool,
) -> Option<FibOp> {
    let route = |hops: &[NextHop]| KernelRoute {
        prefix,
        next_hops: hops.to_vec(),
    };
    match (desired, installed) {
        (Some(want), None) => Some(FibOp::Add(route(want))),
        (Some(want), Some(have)) if want != have => Some(FibOp::Replace(route(want))),
        (None, Some(_)) if delete_stale => Some(FibOp::Delete(prefix)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }
    fn ips(v: &[&str]) -> Vec<NextHop> {
        v.iter()
            .map(|s| NextHop::from(s.parse::<std::net::IpAddr>().unwrap()))
            .collect()
    }
    fn kr(prefix: &str, hops: &[&str]) -> KernelRoute {
        KernelRoute {
            prefix: p(prefix),
            next_hops: ips(hops),
        }
    }

    #[test]
    fn empty_inputs_give_no_ops() {
        assert!(diff(&HashMap::new(), &[]).is_empty());
    }

    #[test]
    fn missing_routes_are_added_extra_routes_deleted() {
        let desired = HashMap::from([
            (p("10.1.0.0/16"), ips(&["10.0.0.1"])),
            (p("2001:db8:1::/48"), ips(&["2001:db8::1", "2001:db8::2"])),
        ]);
        let kernel = vec![kr("10.9.0.0/16", &["10.0.0.1"])];
        let ops = diff(&desired, &kernel);
        assert_eq!(
            ops,
            vec![
                FibOp::Add(kr("10.1.0.0/16", &["10.0.0.1"])),
                FibOp::Add(kr("2001:db8:1::/48", &["2001:db8::1", "2001:db8::2"])),
                FibOp::Delete(p("10.9.0.0/16")),
            ]
        );
    }

    #[test]
    fn next_hop_order_and_duplicates_do_not_matter() {
        let desired =
            HashMap::from([(p("10.1.0.0/16"), ips(&["10.0.0.2", "10.0.0.1", "10.0.0.2"]))]);
        let kernel = vec![kr("10.1.0.0/16", &["10.0.0.1", "10.0.0.2"])];
        assert!(diff(&desired, &kernel).is_empty());
    }

    #[test]
    fn changed_next_hops_are_replaced_with_canonical_order() {
        let desired = HashMap::from([(p("10.1.0.0/16"), ips(&["10.0.0.3", "10.0.0.1"]))]);
        let kernel = vec![kr("10.1.0.0/16", &["10.0.0.1", "10.0.0.2"])];
        assert_eq!(
            diff(&desired, &kernel),
            vec![FibOp::Replace(kr("10.1.0.0/16", &["10.0.0.1", "10.0.0.3"]))]
        );
        // A subset (one ECMP leg lost) is a change too.
        let desired = HashMap::from([(p("10.1.0.0/16"), ips(&["10.0.0.1"]))]);
        assert_eq!(
            diff(&desired, &kernel),
            vec![FibOp::Replace(kr("10.1.0.0/16", &["10.0.0.1"]))]
        );
    }

    #[test]
    fn desired_with_no_next_hops_means_absent() {
        let desired = HashMap::from([(p("10.1.0.0/16"), vec![])]);
        let kernel = vec![kr("10.1.0.0/16", &["10.0.0.1"])];
        assert_eq!(
            diff(&desired, &kernel),
            vec![FibOp::Delete(p("10.1.0.0/16"))]
        );
        assert!(diff(&desired, &[]).is_empty());
    }

    #[test]
    fn host_bits_and_families_are_normalised() {
        let desired = HashMap::from([(p("10.1.2.3/16"), ips(&["10.0.0.1"]))]);
        let kernel = vec![kr("10.1.0.0/16", &["10.0.0.1"])];
        assert!(diff(&desired, &kernel).is_empty());
        // Same address bits, different family/length are distinct prefixes.
        let desired = HashMap::from([(p("10.1.0.0/24"), ips(&["10.0.0.1"]))]);
        assert_eq!(
            diff(&desired, &kernel),
            vec![
                FibOp::Add(kr("10.1.0.0/24", &["10.0.0.1"])),
                FibOp::Delete(p("10.1.0.0/16")),
            ]
        );
    }

    #[test]
    fn kernel_route_without_next_hops_is_repaired() {
        let desired = HashMap::from([(p("10.1.0.0/16"), ips(&["10.0.0.1"]))]);
        let kernel = vec![kr("10.1.0.0/16", &[])];
        assert_eq!(
            diff(&desired, &kernel),
            vec![FibOp::Replace(kr("10.1.0.0/16", &["10.0.0.1"]))]
        );
    }

    #[test]
    fn route_op_keeps_stale_routes_until_asked() {
        let one = ips(&["10.0.0.1"]);
        let two = ips(&["10.0.0.1", "10.0.0.2"]);
        let prefix = p("10.1.0.0/16");
        assert_eq!(route_op(prefix, Some(&one), Some(&one), true), None);
        assert_eq!(route_op(prefix, None, None, true), None);
        assert_eq!(
            route_op(prefix, Some(&two), None, false),
            Some(FibOp::Add(kr("10.1.0.0/16", &["10.0.0.1", "10.0.0.2"])))
        );
        assert_eq!(
            route_op(prefix, Some(&two), Some(&one), false),
            Some(FibOp::Replace(kr("10.1.0.0/16", &["10.0.0.1", "10.0.0.2"])))
        );
        assert_eq!(route_op(prefix, None, Some(&one), false), None);
        assert_eq!(
            route_op(prefix, None, Some(&one), true),
            Some(FibOp::Delete(prefix))
        );
    }
}
