//! Link and address look-ups through rtnetlink: links by name or local address, the
//! connected subnets of up links, and `ip route get` (RTM_GETROUTE) for one destination.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
    State,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteVia};
use netlink_packet_route::AddressFamily;

use super::error::nl_err;
use super::reach::ConnectedSubnet;
use super::{Netlink, Result};
use crate::datapath_config::{VXLAN_DEVICE_V4, VXLAN_DEVICE_V6};

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub ifindex: u32,
    pub name: String,
    pub mtu: u32,
    /// Administratively up (IFF_UP) and operationally up or unknown.
    pub up: bool,
    /// `IFLA_INFO_KIND` (`veth`, `vxlan`, `bridge`, ...); `None` for plain devices (`lo`,
    /// physical NICs).
    pub kind: Option<String>,
}

/// What the kernel would do with a packet to one destination (`ip route get`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLookup {
    /// The next hop, `None` when the destination is on link.
    pub gateway: Option<IpAddr>,
    /// The output interface.
    pub ifindex: u32,
}

/// VXLAN attributes of a link (those the datapath compares).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VxlanAttrs {
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<IpAddr>,
    pub underlay: Option<u32>,
    pub learning: Option<bool>,
    /// Local6 or Group6 present: the device sends over IPv6.
    pub v6: bool,
    /// Collect-metadata (`external`) device: it receives every VNI on its port.
    pub external: bool,
}

/// A parsed link message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub info: LinkInfo,
    pub admin_up: bool,
    pub mac: Option<Vec<u8>>,
    pub vxlan: Option<VxlanAttrs>,
}

pub(crate) fn parse_link(msg: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut mtu = 0;
    let mut mac = None;
    let mut oper = State::Unknown;
    let mut kind = None;
    let mut vxlan = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::Address(a) => mac = Some(a.clone()),
            LinkAttribute::OperState(s) => oper = *s,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        NlLinkInfo::Kind(k) => kind = Some(k.clone()),
                        NlLinkInfo::Data(InfoData::Vxlan(data)) => {
                            vxlan = Some(parse_vxlan(data));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let admin_up = msg.header.flags.contains(LinkFlags::Up);
    let vxlan = match kind {
        Some(InfoKind::Vxlan) => Some(vxlan.unwrap_or_default()),
        _ => None,
    };
    Some(Link {
        info: LinkInfo {
            ifindex: msg.header.index,
            name: name?,
            mtu,
            up: admin_up && matches!(oper, State::Up | State::Unknown),
            kind: kind.map(|k| k.to_string()),
        },
        admin_up,
        mac,
        vxlan,
    })
}

fn parse_vxlan(data: &[InfoVxlan]) -> VxlanAttrs {
    let mut out = VxlanAttrs::default();
    for item in data {
        match item {
            InfoVxlan::Id(v) => out.vni = Some(*v),
            InfoVxlan::Port(p) => out.port = Some(*p),
            InfoVxlan::Local(a) => out.local = Some(IpAddr::V4(*a)),
            InfoVxlan::Local6(a) => {
                out.local = Some(IpAddr::V6(*a));
                out.v6 = true;
            }
            InfoVxlan::Group6(_) => out.v6 = true,
            InfoVxlan::Link(i) => out.underlay = Some(*i),
            InfoVxlan::Learning(l) => out.learning = Some(*l),
            InfoVxlan::CollectMetadata(m) => out.external = *m,
            _ => {}
        }
    }
    out
}

/// Every link in the namespace.
pub(crate) async fn dump_links(nl: &Netlink) -> Result<Vec<Link>> {
    let messages: Vec<LinkMessage> = nl
        .handle()
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("dump", "links"))?;
    Ok(messages.iter().filter_map(parse_link).collect())
}

/// The interface named `name`, if any.
pub async fn link_by_name(nl: &Netlink, name: &str) -> Result<Option<LinkInfo>> {
    Ok(dump_links(nl)
        .await?
        .into_iter()
        .find(|l| l.info.name == name)
        .map(|l| l.info))
}

/// An address of a link: (ifindex, address, prefix length).
pub(crate) fn parse_address(msg: &AddressMessage) -> Option<(u32, IpAddr, u8)> {
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on point-to-point
    // links); IPv6 only sends IFA_ADDRESS.
    let addr = local.or(address)?;
    Some((msg.header.index, addr, msg.header.prefix_len))
}

/// Every address in the namespace (both families).
pub(crate) async fn dump_addresses(nl: &Netlink) -> Result<Vec<(u32, IpAddr, u8, AddressMessage)>> {
    let messages: Vec<AddressMessage> = nl
        .handle()
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("dump", "addresses"))?;
    Ok(messages
        .into_iter()
        .filter_map(|m| parse_address(&m).map(|(i, a, p)| (i, a, p, m)))
        .collect())
}

/// The interface carrying the local address `addr` (the node's underlay interface).
pub async fn link_with_address(nl: &Netlink, addr: IpAddr) -> Result<Option<LinkInfo>> {
    let addresses = dump_addresses(nl).await?;
    let Some((ifindex, ..)) = addresses.iter().find(|(_, a, ..)| *a == addr) else {
        return Ok(None);
    };
    Ok(dump_links(nl)
        .await?
        .into_iter()
        .find(|l| l.info.ifindex == *ifindex)
        .map(|l| l.info))
}

pub(crate) fn is_link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Pure part of [`connected_subnets`]: subnets of `addresses` on usable `links`.
pub(crate) fn subnets_of(links: &[Link], addresses: &[(u32, IpAddr, u8)]) -> Vec<ConnectedSubnet> {
    let usable = |ifindex: u32| {
        links.iter().any(|l| {
            l.info.ifindex == ifindex
                && l.info.up
                && l.info.name != "lo"
                && l.info.name != VXLAN_DEVICE_V4
                && l.info.name != VXLAN_DEVICE_V6
        })
    };
    let mut out: Vec<ConnectedSubnet> = addresses
        .iter()
        .filter(|(ifindex, addr, len)| {
            let host = match addr {
                IpAddr::V4(_) => *len >= 32,
                IpAddr::V6(_) => *len >= 128,
            };
            !host && !is_link_local(*addr) && !addr.is_loopback() && usable(*ifindex)
        })
        .filter_map(|(ifindex, addr, len)| {
            ipnet::IpNet::new(*addr, *len)
                .ok()
                .map(|n| ConnectedSubnet {
                    prefix: n.trunc(),
                    ifindex: *ifindex,
                })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The subnets of the addresses on links that are up (IFF_UP, operstate up or unknown),
/// excluding `lo`, host addresses (/32, /128), link-local addresses and routelet's VXLAN
/// devices.
pub async fn connected_subnets(nl: &Netlink) -> Result<Vec<ConnectedSubnet>> {
    let links = dump_links(nl).await?;
    let addresses: Vec<(u32, IpAddr, u8)> = dump_addresses(nl)
        .await?
        .into_iter()
        .map(|(i, a, p, _)| (i, a, p))
        .collect();
    Ok(subnets_of(&links, &addresses))
}

fn route_address(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// Pure part of [`route_lookup`]: the gateway and output interface of a RTM_NEWROUTE reply.
pub(crate) fn parse_lookup(msg: &RouteMessage) -> Option<RouteLookup> {
    let mut gateway = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Gateway(g) => gateway = route_address(g),
            RouteAttribute::Via(RouteVia::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Via(RouteVia::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    oif.map(|ifindex| RouteLookup { gateway, ifindex })
}

/// What the kernel would do with a packet to `dst` (RTM_GETROUTE, as `ip route get`):
/// `None` when it has no route (network or host unreachable).
pub async fn route_lookup(nl: &Netlink, dst: IpAddr) -> Result<Option<RouteLookup>> {
    let mut request = nl.handle().route().get(RouteMessage::default());
    let msg = request.message_mut();
    msg.header.address_family = match dst {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.destination_prefix_length = match dst {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    msg.header.table = 0;
    msg.header.protocol = netlink_packet_route::route::RouteProtocol::Unspec;
    msg.header.scope = netlink_packet_route::route::RouteScope::Universe;
    msg.header.kind = netlink_packet_route::route::RouteType::Unspec;
    msg.attributes = vec![RouteAttribute::Destination(match dst {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    })];
    let replies: std::result::Result<Vec<RouteMessage>, _> = request.execute().try_collect().await;
    match replies {
        Ok(replies) => Ok(replies.iter().find_map(parse_lookup)),
        Err(e) => {
            let err = nl_err("route get", dst)(e);
            match err.errno() {
                Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) => Ok(None),
                _ => Err(err),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn link(ifindex: u32, name: &str, up: bool) -> Link {
        Link {
            info: LinkInfo {
                ifindex,
                name: name.into(),
                mtu: 1500,
                up,
                kind: None,
            },
            admin_up: up,
            mac: None,
            vxlan: None,
        }
    }

    #[test]
    fn connected_subnets_skip_lo_host_routes_link_local_down_links_and_our_vxlan() {
        let links = [
            link(1, "lo", true),
            link(2, "eth0", true),
            link(3, "eth1", false),
            link(4, VXLAN_DEVICE_V4, true),
        ];
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        let addresses = [
            (1, a("127.0.0.1"), 8),
            (1, a("10.244.1.2"), 32),
            (2, a("10.0.0.7"), 24),
            (2, a("2001:db8::7"), 64),
            (2, a("fe80::1"), 64),
            (2, a("169.254.3.3"), 16),
            (2, a("10.9.9.9"), 32),
            (3, a("10.1.0.1"), 24),
            (4, a("10.244.1.0"), 24),
        ];
        let got = subnets_of(&links, &addresses);
        let want: Vec<ConnectedSubnet> = [("10.0.0.0/24", 2), ("2001:db8::/64", 2)]
            .iter()
            .map(|(p, i)| ConnectedSubnet {
                prefix: p.parse().unwrap(),
                ifindex: *i,
            })
            .collect();
        assert_eq!(got, want);
    }
}
