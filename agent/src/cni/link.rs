//! The per-pod datapath over rtnetlink (no bridge, Calico style): a veth pair whose host end
//! (`rl` + 12 hex digits, MAC ee:ee:ee:ee:ee:ee, proxy ARP, a /32 or /128 route per pod
//! address with protocol [`CNI_ROUTE_PROTOCOL`]) stays in the node namespace and whose pod
//! end (CNI_IFNAME) lives in the pod namespace with the addresses as /32 and /128 and default
//! routes via 169.254.1.1 and the host end's link-local address. Also the teardown and the
//! CHECK comparison of that state.

use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::netns::{self, NetnsError};

/// Routing protocol of the host routes to pods (the agent's FIB owns protocol 200 and
/// deletes routes of that protocol it does not know).
pub const CNI_ROUTE_PROTOCOL: u8 = 201;
/// MAC of every host-side veth end.
pub const HOST_VETH_MAC: [u8; 6] = [0xee; 6];
/// The pods' IPv4 next hop (answered by proxy ARP / a permanent neighbour entry).
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The pods' IPv6 next hop: the host end's EUI-64 link-local address.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);
/// Prefix of host-side veth names.
pub const HOST_VETH_PREFIX: &str = "rl";

const ENODEV: i32 = 19;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ESRCH: i32 = 3;

/// What went wrong while programming or reading the datapath.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The pod network namespace cannot be opened or entered.
    #[error("{0}")]
    Netns(#[from] NetnsError),
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("cannot write {value} to {path}: {source}")]
    Sysctl {
        path: String,
        value: &'static str,
        source: std::io::Error,
    },
    /// CHECK: the datapath differs from what ADD set up.
    #[error("{0}")]
    Mismatch(String),
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let what = what.into();
    move |source| LinkError::Netlink { what, source }
}

/// The negative-errno of a netlink error reply, made positive.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Host-side veth name for an attachment: `rl` + the first 12 hex digits of the 64-bit
/// FNV-1a hash of `containerID \0 ifname` (14 bytes, within IFNAMSIZ).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(ifname.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{HOST_VETH_PREFIX}{:012x}", h >> 16)
}

/// Format a MAC address the usual way.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One pod attachment's datapath.
#[derive(Debug, Clone)]
pub struct PodLink {
    pub host_veth: String,
    pub ifname: String,
    pub netns: PathBuf,
    pub mtu: Option<u32>,
    pub addrs: Vec<IpAddr>,
}

/// MAC addresses of the two ends after [`setup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Macs {
    pub host: String,
    pub pod: String,
}

/// Run `f(handle)` on a fresh current-thread runtime with a netlink connection opened in the
/// calling thread's network namespace.
fn with_handle<T, F, Fut>(f: F) -> Result<T, LinkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, LinkError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LinkError::Runtime)?;
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(LinkError::Socket)?;
        let task = tokio::spawn(conn);
        let out = f(handle).await;
        task.abort();
        out
    })
}

fn sysctl(path: String, value: &'static str) -> Result<(), LinkError> {
    std::fs::write(&path, value).map_err(|source| LinkError::Sysctl {
        path,
        value,
        source,
    })
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, LinkError> {
    let mut stream = handle.link().get().match_name(name.to_string()).execute();
    match stream.try_next().await {
        Ok(m) => Ok(m),
        Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(None),
        Err(e) => Err(nl(format!("cannot look up link {name}"))(e)),
    }
}

fn link_mac(msg: &LinkMessage) -> String {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(mac) => Some(format_mac(mac)),
            _ => None,
        })
        .unwrap_or_default()
}

async fn set_up(handle: &Handle, index: u32, name: &str) -> Result<(), LinkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("cannot set {name} up")))
}

async fn delete_link(handle: &Handle, name: &str) -> Result<bool, LinkError> {
    let Some(link) = link_by_name(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if matches!(errno(&e), Some(ENODEV) | Some(ENOENT)) => Ok(false),
        Err(e) => Err(nl(format!("cannot delete {name}"))(e)),
    }
}

/// Delete the host-side veth `name` (its pod end goes with it) in the calling thread's
/// namespace; `false` when it did not exist.
pub fn delete_host_veth(name: &str) -> Result<bool, LinkError> {
    with_handle(|h| async move { delete_link(&h, name).await })
}

/// Create the pair and program both ends. A host veth left over by an earlier ADD of the
/// same attachment is replaced. On failure everything created here is removed again.
pub fn setup(spec: &PodLink) -> Result<Macs, LinkError> {
    let ns_file = File::open(&spec.netns).map_err(|source| NetnsError::Open {
        path: spec.netns.clone(),
        source,
    })?;
    with_handle(|h| async move {
        delete_link(&h, &spec.host_veth).await?;
        let created = create_pair(&h, spec, &ns_file).await;
        let result = match created {
            Ok(index) => program(&h, spec, index).await,
            Err(e) => return Err(e),
        };
        if result.is_err() {
            let _ = delete_link(&h, &spec.host_veth).await;
        }
        result
    })
}

async fn create_pair(h: &Handle, spec: &PodLink, ns_file: &File) -> Result<u32, LinkError> {
    let mut peer = LinkUnspec::new_with_name(&spec.ifname).setns_by_fd(ns_file.as_raw_fd());
    let mut host = LinkVeth::new(&spec.host_veth, &spec.ifname).address(HOST_VETH_MAC.to_vec());
    if let Some(mtu) = spec.mtu {
        peer = peer.mtu(mtu);
        host = host.mtu(mtu);
    }
    let msg = host
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .build();
    h.link().add(msg).execute().await.map_err(|e| {
        let what = if errno(&e) == Some(EEXIST) {
            format!(
                "cannot create veth {} / {} (does {} already exist in {}?)",
                spec.host_veth,
                spec.ifname,
                spec.ifname,
                spec.netns.display()
            )
        } else {
            format!("cannot create veth {} / {}", spec.host_veth, spec.ifname)
        };
        LinkError::Netlink { what, source: e }
    })?;
    let link = link_by_name(h, &spec.host_veth).await?.ok_or_else(|| {
        LinkError::Mismatch(format!("veth {} vanished after creation", spec.host_veth))
    })?;
    Ok(link.header.index)
}

async fn program(h: &Handle, spec: &PodLink, index: u32) -> Result<Macs, LinkError> {
    let veth = &spec.host_veth;
    let has_v4 = spec.addrs.iter().any(IpAddr::is_ipv4);
    let has_v6 = spec.addrs.iter().any(IpAddr::is_ipv6);
    if has_v4 {
        sysctl(format!("/proc/sys/net/ipv4/conf/{veth}/proxy_arp"), "1")?;
        sysctl(format!("/proc/sys/net/ipv4/conf/{veth}/forwarding"), "1")?;
    }
    if has_v6 {
        // EUI-64 link-local (fe80::ecee:eeff:feee:eeee from the fixed MAC), usable at once.
        sysctl(format!("/proc/sys/net/ipv6/conf/{veth}/addr_gen_mode"), "0")?;
        sysctl(format!("/proc/sys/net/ipv6/conf/{veth}/accept_dad"), "0")?;
        sysctl(format!("/proc/sys/net/ipv6/conf/{veth}/forwarding"), "1")?;
    }
    set_up(h, index, veth).await?;

    let pod = spec.clone();
    let pod_mac = netns::run_in(&spec.netns, move || {
        with_handle(|ph| async move { program_pod(&ph, &pod).await })
    })??;

    for ip in &spec.addrs {
        h.route()
            .add(host_route(*ip, index))
            .replace()
            .execute()
            .await
            .map_err(nl(format!("cannot add route {ip} dev {veth}")))?;
    }
    let host_mac = link_by_name(h, veth)
        .await?
        .map(|l| link_mac(&l))
        .unwrap_or_else(|| format_mac(&HOST_VETH_MAC));
    Ok(Macs {
        host: host_mac,
        pod: pod_mac,
    })
}

/// `<ip>/32 dev <veth> scope link proto 201` (or /128).
fn host_route(ip: IpAddr, index: u32) -> RouteMessage {
    match ip {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(a, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::from(CNI_ROUTE_PROTOCOL))
            .build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(a, 128)
            .output_interface(index)
            .protocol(RouteProtocol::from(CNI_ROUTE_PROTOCOL))
            .build(),
    }
}

/// Inside the pod namespace: addresses, lo and the interface up, neighbour entries for the
/// gateways, routes. Returns the pod end's MAC.
async fn program_pod(h: &Handle, spec: &PodLink) -> Result<String, LinkError> {
    let ifname = &spec.ifname;
    let link = link_by_name(h, ifname)
        .await?
        .ok_or_else(|| LinkError::Mismatch(format!("{ifname} is missing in the pod namespace")))?;
    let index = link.header.index;
    let has_v4 = spec.addrs.iter().any(IpAddr::is_ipv4);
    let has_v6 = spec.addrs.iter().any(IpAddr::is_ipv6);
    if has_v6 {
        sysctl(format!("/proc/sys/net/ipv6/conf/{ifname}/accept_dad"), "0")?;
    }
    for ip in &spec.addrs {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        let mut req = h.address().add(index, *ip, prefix).replace();
        if ip.is_ipv6() {
            let msg = req.message_mut();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        req.execute()
            .await
            .map_err(nl(format!("cannot add {ip}/{prefix} to {ifname}")))?;
    }
    if let Some(lo) = link_by_name(h, "lo").await? {
        set_up(h, lo.header.index, "lo").await?;
    }
    set_up(h, index, ifname).await?;

    let mut gateways: Vec<IpAddr> = Vec::new();
    if has_v4 {
        gateways.push(GATEWAY_V4.into());
    }
    if has_v6 {
        gateways.push(GATEWAY_V6.into());
    }
    for gw in &gateways {
        h.neighbours()
            .add(index, *gw)
            .link_layer_address(&HOST_VETH_MAC)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("cannot add neighbour {gw} dev {ifname}")))?;
    }
    if has_v4 {
        let onlink = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(GATEWAY_V4, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .build();
        h.route()
            .add(onlink)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("cannot add route {GATEWAY_V4} dev {ifname}")))?;
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(GATEWAY_V4)
            .output_interface(index)
            .build();
        h.route()
            .add(default)
            .replace()
            .execute()
            .await
            .map_err(nl(format!(
                "cannot add default via {GATEWAY_V4} dev {ifname}"
            )))?;
    }
    if has_v6 {
        let default = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(GATEWAY_V6)
            .output_interface(index)
            .build();
        h.route()
            .add(default)
            .replace()
            .execute()
            .await
            .map_err(nl(format!(
                "cannot add default via {GATEWAY_V6} dev {ifname}"
            )))?;
    }
    let mac = link_by_name(h, ifname)
        .await?
        .map(|l| link_mac(&l))
        .unwrap_or_default();
    Ok(mac)
}

// ---- CHECK ----

fn route_dst(r: &RouteMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}

fn route_gateway(r: &RouteMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Gateway(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}

fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

/// The main-table routes of one family.
async fn main_routes(h: &Handle, v4: bool) -> Result<Vec<RouteMessage>, LinkError> {
    let req = if v4 {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv6Addr>::new().build()
    };
    let routes: Vec<RouteMessage> = h
        .route()
        .get(req)
        .execute()
        .try_collect()
        .await
        .map_err(nl("cannot dump routes"))?;
    Ok(routes
        .into_iter()
        .filter(|r| route_table(r) == u32::from(RouteHeader::RT_TABLE_MAIN))
        .collect())
}

/// Compare the datapath with what ADD sets up for `spec`; a [`LinkError::Mismatch`] names
/// the first difference.
pub fn check(spec: &PodLink) -> Result<(), LinkError> {
    with_handle(|h| async move {
        let veth = &spec.host_veth;
        let link = link_by_name(&h, veth)
            .await?
            .ok_or_else(|| LinkError::Mismatch(format!("host veth {veth} does not exist")))?;
        if !link.header.flags.contains(LinkFlags::Up) {
            return Err(LinkError::Mismatch(format!("host veth {veth} is down")));
        }
        let index = link.header.index;
        for ip in &spec.addrs {
            let routes = main_routes(&h, ip.is_ipv4()).await?;
            let plen = if ip.is_ipv4() { 32 } else { 128 };
            let found = routes.iter().any(|r| {
                route_dst(r) == Some(*ip)
                    && r.header.destination_prefix_length == plen
                    && route_oif(r) == Some(index)
                    && u8::from(r.header.protocol) == CNI_ROUTE_PROTOCOL
            });
            if !found {
                return Err(LinkError::Mismatch(format!(
                    "host route {ip}/{plen} dev {veth} proto {CNI_ROUTE_PROTOCOL} is missing"
                )));
            }
        }
        Ok(())
    })?;
    let pod = spec.clone();
    netns::run_in(&spec.netns, move || {
        with_handle(|h| async move { check_pod(&h, &pod).await })
    })?
}

async fn check_pod(h: &Handle, spec: &PodLink) -> Result<(), LinkError> {
    let ifname = &spec.ifname;
    let link = link_by_name(h, ifname).await?.ok_or_else(|| {
        LinkError::Mismatch(format!(
            "interface {ifname} does not exist in {}",
            spec.netns.display()
        ))
    })?;
    let index = link.header.index;
    if !link.header.flags.contains(LinkFlags::Up) {
        return Err(LinkError::Mismatch(format!("interface {ifname} is down")));
    }
    let addrs: Vec<IpAddr> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(nl(format!("cannot list addresses of {ifname}")))?
        .iter()
        .flat_map(|m| {
            m.attributes.iter().filter_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })
        .collect();
    for ip in &spec.addrs {
        if !addrs.contains(ip) {
            return Err(LinkError::Mismatch(format!(
                "address {ip} is missing on {ifname} in {}",
                spec.netns.display()
            )));
        }
    }
    for v4 in [true, false] {
        if !spec.addrs.iter().any(|a| a.is_ipv4() == v4) {
            continue;
        }
        let gw: IpAddr = if v4 {
            GATEWAY_V4.into()
        } else {
            GATEWAY_V6.into()
        };
        let routes = main_routes(h, v4).await?;
        let found = routes.iter().any(|r| {
            r.header.destination_prefix_length == 0
                && route_gateway(r) == Some(gw)
                && route_oif(r) == Some(index)
        });
        if !found {
            return Err(LinkError::Mismatch(format!(
                "default route via {gw} dev {ifname} is missing in {}",
                spec.netns.display()
            )));
        }
    }
    Ok(())
}

/// Whether an error means the pod's namespace is gone (DEL treats that as done).
pub fn is_missing_netns(e: &LinkError) -> bool {
    matches!(e, LinkError::Netns(NetnsError::Open { .. }))
}

/// Whether a netlink error says the object does not exist.
pub fn is_not_found(e: &LinkError) -> bool {
    match e {
        LinkError::Netlink { source, .. } => {
            matches!(errno(source), Some(ENODEV) | Some(ENOENT) | Some(ESRCH))
        }
        _ => false,
    }
}

/// The namespace path as given (for result `sandbox` fields).
pub fn sandbox(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_short_stable_and_distinct() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("rl"));
        assert!(a[2..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(host_veth_name("ab", "ceth0"), host_veth_name("abc", "eth0"));
    }

    #[test]
    fn the_v6_gateway_is_the_eui64_of_the_host_mac() {
        // EUI-64: flip the U/L bit of the first octet, insert ff:fe in the middle.
        let m = HOST_VETH_MAC;
        let iid = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
        let mut octets = [0u8; 16];
        octets[0] = 0xfe;
        octets[1] = 0x80;
        octets[8..].copy_from_slice(&iid);
        assert_eq!(Ipv6Addr::from(octets), GATEWAY_V6);
        assert_eq!(format_mac(&m), "ee:ee:ee:ee:ee:ee");
    }
}
