//! Pure translation between routelet's kernel-route model and rtnetlink `RouteMessage`s:
//! building RTM_NEWROUTE / RTM_DELROUTE / RTM_GETROUTE bodies and parsing dumped routes.

use std::net::IpAddr;

use netlink_packet_route::{
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHop,
        RouteNextHopFlags, RouteProtocol, RouteScope, RouteType, RouteVia,
    },
    AddressFamily,
};

use super::{FibError, FibOpKind, KernelRoute, NextHop, Prefix};

/// Which table/protocol/link-local interface a [`super::Fib`] programs; shared by the builders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteParams {
    pub table: u32,
    pub protocol: u8,
    /// Output interface used for IPv6 link-local next hops (they are ambiguous without one).
    pub link_local_ifindex: Option<u32>,
    /// RTA_PRIORITY of our routes; `None` = kernel default (0 for IPv4, 1024 for IPv6).
    pub metric: Option<u32>,
}

fn family_of(prefix: &Prefix) -> AddressFamily {
    match prefix {
        Prefix::V4(_) => AddressFamily::Inet,
        Prefix::V6(_) => AddressFamily::Inet6,
    }
}

fn base_message(prefix: &Prefix, params: &RouteParams) -> RouteMessage {
    let prefix = prefix.trunc();
    let mut msg = RouteMessage::default();
    msg.header.address_family = family_of(&prefix);
    msg.header.destination_prefix_length = prefix.prefix_len();
    // Tables >= 256 only fit in RTA_TABLE; the header carries RT_TABLE_UNSPEC then.
    msg.header.table = u8::try_from(params.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    msg.header.protocol = RouteProtocol::from(params.protocol);
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(
            prefix.addr(),
        )));
    msg.attributes.push(RouteAttribute::Table(params.table));
    if let Some(metric) = params.metric {
        msg.attributes.push(RouteAttribute::Priority(metric));
    }
    msg
}

fn is_ipv6_link_local(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

/// The attribute naming one next hop: RTA_GATEWAY when the family matches the prefix,
/// RTA_VIA otherwise (IPv4 prefix via IPv6 next hop, RFC 5549 style; kernel >= 5.2).
fn gateway_attribute(prefix: &Prefix, next_hop: &IpAddr) -> Result<RouteAttribute, &'static str> {
    match (prefix, next_hop) {
        (Prefix::V4(_), IpAddr::V4(_)) | (Prefix::V6(_), IpAddr::V6(_)) => {
            Ok(RouteAttribute::Gateway(RouteAddress::from(*next_hop)))
        }
        (Prefix::V4(_), IpAddr::V6(v6)) => Ok(RouteAttribute::Via(RouteVia::Inet6(*v6))),
        (Prefix::V6(_), IpAddr::V4(_)) => {
            Err("an IPv6 route cannot use an IPv4 next hop (the kernel has no RTA_VIA for IPv6)")
        }
    }
}

/// Sorted, de-duplicated next hops: the canonical form used for comparisons and requests.
pub fn canonical_next_hops(next_hops: &[NextHop]) -> Vec<NextHop> {
    let mut v = next_hops.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// RTM_NEWROUTE body for `route` (one unicast route; >1 next hop becomes RTA_MULTIPATH).
pub(crate) fn build_replace(
    route: &KernelRoute,
    params: &RouteParams,
) -> Result<RouteMessage, FibError> {
    let invalid = |reason: &'static str| FibError::InvalidRoute {
        op: FibOpKind::Replace,
        prefix: route.prefix,
        reason,
    };
    let next_hops = canonical_next_hops(&route.next_hops);
    let mut msg = base_message(&route.prefix, params);
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    match next_hops.as_slice() {
        [] => return Err(invalid("a route needs at least one next hop")),
        [super::BLACKHOLE] => msg.header.kind = RouteType::BlackHole,
        hops if hops.contains(&super::BLACKHOLE) => {
            return Err(invalid("0.0.0.0 is not a next hop"))
        }
        [single] => {
            msg.attributes
                .push(gateway_attribute(&route.prefix, &single.gateway).map_err(invalid)?);
            if let Some(dev) = single.onlink_dev {
                msg.header.flags |= RouteFlags::Onlink;
                msg.attributes.push(RouteAttribute::Oif(dev));
            } else if is_ipv6_link_local(&single.gateway) {
                let ifindex = params.link_local_ifindex.ok_or_else(|| {
                    invalid("IPv6 link-local next hop needs an interface (Fib::with_ifindex)")
                })?;
                msg.attributes.push(RouteAttribute::Oif(ifindex));
            }
        }
        many => {
            let mut hops = Vec::with_capacity(many.len());
            for nh in many {
                let mut hop = RouteNextHop::default();
                hop.attributes
                    .push(gateway_attribute(&route.prefix, &nh.gateway).map_err(invalid)?);
                if let Some(dev) = nh.onlink_dev {
                    hop.flags |= RouteNextHopFlags::Onlink;
                    hop.interface_index = dev;
                } else if is_ipv6_link_local(&nh.gateway) {
                    hop.interface_index = params.link_local_ifindex.ok_or_else(|| {
                        invalid("IPv6 link-local next hop needs an interface (Fib::with_ifindex)")
                    })?;
                }
                hops.push(hop);
            }
            msg.attributes.push(RouteAttribute::MultiPath(hops));
        }
    }
    Ok(msg)
}

/// RTM_DELROUTE body: matches the prefix in our table *and* our protocol only, whatever its
/// next hops (the kernel compares rtm_protocol when it is non-zero).
pub(crate) fn build_delete(prefix: &Prefix, params: &RouteParams) -> RouteMessage {
    let mut msg = base_message(prefix, params);
    // RT_SCOPE_NOWHERE = "any scope", as `ip route del` does.
    msg.header.scope = RouteScope::NoWhere;
    msg.header.kind = RouteType::Unspec;
    msg
}

/// RTM_GETROUTE dump request filtered (with NETLINK_GET_STRICT_CHK) by table and protocol.
pub(crate) fn build_dump_request(family: AddressFamily, params: &RouteParams) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family;
    msg.header.table = u8::try_from(params.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    msg.header.protocol = RouteProtocol::from(params.protocol);
    msg.attributes.push(RouteAttribute::Table(params.table));
    msg
}

fn attribute_next_hop(attr: &RouteAttribute) -> Option<IpAddr> {
    match attr {
        RouteAttribute::Gateway(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Gateway(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        RouteAttribute::Via(RouteVia::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Via(RouteVia::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// Turn a dumped route into a [`KernelRoute`] if it is ours (table + protocol, not a cache
/// clone); `None` for anything else. Routes of ours without a gateway (e.g. a blackhole left
/// by someone) come back with no next hops so that reconciliation replaces or deletes them.
pub(crate) fn parse_route(msg: &RouteMessage, params: &RouteParams) -> Option<KernelRoute> {
    let header = &msg.header;
    if u8::from(header.protocol) != params.protocol || header.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let table = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(header.table));
    if table != params.table {
        return None;
    }
    if let Some(metric) = params.metric {
        let priority = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Priority(p) => Some(*p),
                _ => None,
            })
            .unwrap_or(0);
        if priority != metric {
            return None;
        }
    }
    let len = header.destination_prefix_length;
    let dst = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    });
    let dst = match (dst, header.address_family) {
        (Some(d), _) => d,
        (None, AddressFamily::Inet) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        (None, _) => return None,
    };
    let prefix = Prefix::new(dst, len).ok()?.trunc();
    if header.kind == RouteType::BlackHole {
        return Some(KernelRoute {
            prefix,
            next_hops: vec![super::BLACKHOLE],
        });
    }
    let mut next_hops = Vec::new();
    // The output interface only matters for on-link next hops (elsewhere the kernel derives
    // it from the gateway).
    let onlink_oif = if header.flags.contains(RouteFlags::Onlink) {
        msg.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        })
    } else {
        None
    };
    for attr in &msg.attributes {
        if let RouteAttribute::MultiPath(hops) = attr {
            for hop in hops {
                let dev = hop
                    .flags
                    .contains(RouteNextHopFlags::Onlink)
                    .then_some(hop.interface_index);
                next_hops.extend(hop.attributes.iter().filter_map(attribute_next_hop).map(
                    |gateway| NextHop {
                        gateway,
                        onlink_dev: dev,
                    },
                ));
            }
        } else if let Some(gateway) = attribute_next_hop(attr) {
            next_hops.push(NextHop {
                gateway,
                onlink_dev: onlink_oif,
            });
        }
    }
    Some(KernelRoute {
        prefix,
        next_hops: canonical_next_hops(&next_hops),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rtnetlink::packet_core::{Emitable, Parseable};

    const PARAMS: RouteParams = RouteParams {
        table: 254,
        protocol: 200,
        link_local_ifindex: None,
        metric: None,
    };

    fn hop(s: &str) -> NextHop {
        NextHop::from(s.parse::<IpAddr>().unwrap())
    }

    fn round_trip(msg: &RouteMessage) -> RouteMessage {
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        RouteMessage::parse(buf.as_slice()).unwrap()
    }

    fn check_round_trip(prefix: &str, hops: &[&str]) {
        let route = KernelRoute {
            prefix: prefix.parse().unwrap(),
            next_hops: hops.iter().map(|h| hop(h)).collect(),
        };
        let msg = build_replace(&route, &PARAMS).unwrap();
        let parsed = parse_route(&round_trip(&msg), &PARAMS).unwrap();
        assert_eq!(parsed.prefix, route.prefix);
        assert_eq!(parsed.next_hops, canonical_next_hops(&route.next_hops));
    }

    #[test]
    fn replace_messages_round_trip() {
        check_round_trip("10.1.0.0/16", &["10.0.0.1"]);
        check_round_trip("10.1.0.0/16", &["10.0.0.2", "10.0.0.1"]);
        check_round_trip("2001:db8:1::/48", &["2001:db8::1", "2001:db8::2"]);
        check_round_trip("10.2.0.0/24", &["2001:db8::1"]);
        check_round_trip("0.0.0.0/0", &["10.0.0.1"]);
        check_round_trip("10.244.0.0/26", &["0.0.0.0"]);
        check_round_trip("fd00:10:244::/122", &["0.0.0.0"]);
        let mixed = KernelRoute {
            prefix: "10.3.0.0/16".parse().unwrap(),
            next_hops: vec![hop("0.0.0.0"), hop("10.0.0.1")],
        };
        assert!(build_replace(&mixed, &PARAMS).is_err());
    }

    #[test]
    fn onlink_next_hops_round_trip_single_and_multipath() {
        let vtep = |s: &str, dev| NextHop::onlink(s.parse().unwrap(), dev);
        for hops in [
            vec![vtep("10.244.2.0", 7)],
            vec![vtep("10.244.2.0", 7), hop("10.0.0.1")],
        ] {
            let route = KernelRoute {
                prefix: "10.244.2.0/24".parse().unwrap(),
                next_hops: hops.clone(),
            };
            let msg = build_replace(&route, &PARAMS).unwrap();
            let parsed = parse_route(&round_trip(&msg), &PARAMS).unwrap();
            assert_eq!(parsed.next_hops, canonical_next_hops(&hops));
        }
        // A plain route's output interface (which the kernel reports) is not an on-link hop.
        let route = KernelRoute {
            prefix: "10.1.0.0/16".parse().unwrap(),
            next_hops: vec![hop("10.0.0.1")],
        };
        let mut msg = build_replace(&route, &PARAMS).unwrap();
        msg.attributes.push(RouteAttribute::Oif(3));
        let parsed = parse_route(&round_trip(&msg), &PARAMS).unwrap();
        assert_eq!(parsed.next_hops, vec![hop("10.0.0.1")]);
    }

    #[test]
    fn multipath_uses_one_attribute_and_via_for_cross_family() {
        let route = KernelRoute {
            prefix: "10.2.0.0/24".parse().unwrap(),
            next_hops: vec![hop("2001:db8::1"), hop("2001:db8::2")],
        };
        let msg = build_replace(&route, &PARAMS).unwrap();
        let hops = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::MultiPath(h) => Some(h.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(hops.len(), 2);
        assert!(hops.iter().all(|h| matches!(
            h.attributes.as_slice(),
            [RouteAttribute::Via(RouteVia::Inet6(_))]
        )));
        assert!(!msg
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Gateway(_))));
    }

    #[test]
    fn host_bits_are_masked_and_invalid_routes_rejected() {
        let route = KernelRoute {
            prefix: "10.1.2.3/16".parse().unwrap(),
            next_hops: vec![hop("10.0.0.1")],
        };
        let parsed = parse_route(
            &round_trip(&build_replace(&route, &PARAMS).unwrap()),
            &PARAMS,
        )
        .unwrap();
        assert_eq!(parsed.prefix, "10.1.0.0/16".parse::<Prefix>().unwrap());

        let v6_via_v4 = KernelRoute {
            prefix: "2001:db8:1::/48".parse().unwrap(),
            next_hops: vec![hop("10.0.0.1")],
        };
        assert!(matches!(
            build_replace(&v6_via_v4, &PARAMS),
            Err(FibError::InvalidRoute { .. })
        ));
        let empty = KernelRoute {
            prefix: "10.1.0.0/16".parse().unwrap(),
            next_hops: vec![],
        };
        assert!(build_replace(&empty, &PARAMS).is_err());
        let link_local = KernelRoute {
            prefix: "2001:db8:1::/48".parse().unwrap(),
            next_hops: vec![hop("fe80::1")],
        };
        assert!(build_replace(&link_local, &PARAMS).is_err());
        let with_if = RouteParams {
            link_local_ifindex: Some(7),
            ..PARAMS
        };
        let msg = build_replace(&link_local, &with_if).unwrap();
        assert!(msg.attributes.contains(&RouteAttribute::Oif(7)));
    }

    #[test]
    fn parse_ignores_other_protocols_tables_and_clones() {
        let route = KernelRoute {
            prefix: "10.1.0.0/16".parse().unwrap(),
            next_hops: vec![hop("10.0.0.1")],
        };
        let msg = build_replace(&route, &PARAMS).unwrap();
        let mut other_proto = msg.clone();
        other_proto.header.protocol = RouteProtocol::Static;
        assert_eq!(parse_route(&other_proto, &PARAMS), None);
        let other_table = RouteParams {
            table: 100,
            ..PARAMS
        };
        assert_eq!(parse_route(&msg, &other_table), None);
        let mut clone = msg.clone();
        clone.header.flags = RouteFlags::Cloned;
        assert_eq!(parse_route(&clone, &PARAMS), None);
        assert!(parse_route(&msg, &PARAMS).is_some());
    }

    #[test]
    fn metric_is_sent_and_filters_dumps() {
        let params = RouteParams {
            metric: Some(50),
            ..PARAMS
        };
        let route = KernelRoute {
            prefix: "10.1.0.0/16".parse().unwrap(),
            next_hops: vec![hop("10.0.0.1")],
        };
        let msg = build_replace(&route, &params).unwrap();
        assert!(msg.attributes.contains(&RouteAttribute::Priority(50)));
        assert!(build_delete(&route.prefix, &params)
            .attributes
            .contains(&RouteAttribute::Priority(50)));
        assert!(parse_route(&msg, &params).is_some());
        // Same protocol, default metric: not one of ours under this configuration.
        let default_metric = build_replace(&route, &PARAMS).unwrap();
        assert_eq!(parse_route(&default_metric, &params), None);
    }

    #[test]
    fn large_table_ids_go_in_rta_table() {
        let params = RouteParams {
            table: 1000,
            ..PARAMS
        };
        let msg = build_delete(&"10.1.0.0/16".parse().unwrap(), &params);
        assert_eq!(msg.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert!(msg.attributes.contains(&RouteAttribute::Table(1000)));
        assert_eq!(u8::from(msg.header.protocol), 200);
    }
}
