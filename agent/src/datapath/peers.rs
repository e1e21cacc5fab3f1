//! VTEP peers on the VXLAN device: per remote node a permanent neighbour (VTEP address ->
//! VTEP MAC) and a permanent FDB entry (VTEP MAC -> underlay address, NTF_SELF).
//! [`plan_peers`] is the pure diff; [`sync_peers`] dumps, plans and applies, adding
//! neighbour before FDB and removing FDB before neighbour (flannel's order).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::AddressFamily;

use super::error::nl_err;
use super::reach::format_mac;
use super::{DatapathError, Netlink, Result};

/// One remote node as seen by the VXLAN datapath.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VtepPeer {
    /// The remote VXLAN device's address (next hop of the routes to its pod CIDRs).
    pub vtep: IpAddr,
    /// The remote VXLAN device's MAC ([`super::vtep_mac`] of `vtep`).
    pub mac: [u8; 6],
    /// The remote node's underlay address (outer destination).
    pub underlay: IpAddr,
}

impl VtepPeer {
    /// The peer for a remote node's VTEP and underlay address, with the MAC every node
    /// derives for that VTEP ([`super::vtep_mac`]).
    pub fn new(vtep: IpAddr, underlay: IpAddr) -> VtepPeer {
        VtepPeer {
            vtep,
            mac: super::vtep_mac(vtep),
            underlay,
        }
    }
}

/// The peer entries the kernel has on one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelPeers {
    /// Permanent neighbours: VTEP address -> MAC.
    pub neighbours: BTreeMap<IpAddr, [u8; 6]>,
    /// FDB entries with a destination: MAC -> destinations in kernel order (the first is
    /// the one NLM_F_REPLACE rewrites).
    pub fdb: BTreeMap<[u8; 6], Vec<IpAddr>>,
}

/// One change to the device's peer entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerOp {
    /// Add or replace the permanent neighbour `vtep -> mac`.
    SetNeighbour {
        vtep: IpAddr,
        mac: [u8; 6],
        replace: bool,
    },
    /// Add or replace the FDB entry `mac -> dst`.
    SetFdb {
        mac: [u8; 6],
        dst: IpAddr,
        replace: bool,
    },
    DelNeighbour {
        vtep: IpAddr,
    },
    DelFdb {
        mac: [u8; 6],
        dst: IpAddr,
    },
}

impl std::fmt::Display for PeerOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerOp::SetNeighbour { vtep, mac, replace } => write!(
                f,
                "{} neighbour {vtep} lladdr {}",
                if *replace { "replace" } else { "add" },
                format_mac(mac)
            ),
            PeerOp::SetFdb { mac, dst, replace } => write!(
                f,
                "{} fdb {} dst {dst}",
                if *replace { "replace" } else { "add" },
                format_mac(mac)
            ),
            PeerOp::DelNeighbour { vtep } => write!(f, "delete neighbour {vtep}"),
            PeerOp::DelFdb { mac, dst } => write!(f, "delete fdb {} dst {dst}", format_mac(mac)),
        }
    }
}

/// What [`sync_peers`] did.
#[derive(Debug, Default)]
pub struct PeerSyncReport {
    pub neighbours_added: usize,
    pub neighbours_replaced: usize,
    pub neighbours_removed: usize,
    pub fdb_added: usize,
    pub fdb_replaced: usize,
    pub fdb_removed: usize,
    /// Desired peers whose neighbour and FDB entry were already right.
    pub unchanged: usize,
    /// Each failed change with its error (the others were still applied).
    pub errors: Vec<(PeerOp, DatapathError)>,
}

impl PeerSyncReport {
    /// Number of successful changes.
    pub fn changes(&self) -> usize {
        self.neighbours_added
            + self.neighbours_replaced
            + self.neighbours_removed
            + self.fdb_added
            + self.fdb_replaced
            + self.fdb_removed
    }
}

/// The changes that turn `kernel` into `desired` (pure), in application order: stale FDB
/// entries, stale neighbours, then per desired peer its neighbour followed by its FDB entry
/// (and removal of extra destinations of that MAC).
pub fn plan_peers(kernel: &KernelPeers, desired: &BTreeSet<VtepPeer>) -> (Vec<PeerOp>, usize) {
    let desired_macs: BTreeSet<[u8; 6]> = desired.iter().map(|p| p.mac).collect();
    let desired_vteps: BTreeSet<IpAddr> = desired.iter().map(|p| p.vtep).collect();
    let mut ops = Vec::new();
    for (mac, dsts) in &kernel.fdb {
        if !desired_macs.contains(mac) {
            ops.extend(dsts.iter().map(|dst| PeerOp::DelFdb {
                mac: *mac,
                dst: *dst,
            }));
        }
    }
    for vtep in kernel.neighbours.keys() {
        if !desired_vteps.contains(vtep) {
            ops.push(PeerOp::DelNeighbour { vtep: *vtep });
        }
    }
    let mut unchanged = 0;
    for peer in desired {
        let before = ops.len();
        match kernel.neighbours.get(&peer.vtep) {
            Some(mac) if *mac == peer.mac => {}
            present => ops.push(PeerOp::SetNeighbour {
                vtep: peer.vtep,
                mac: peer.mac,
                replace: present.is_some(),
            }),
        }
        let dsts = kernel.fdb.get(&peer.mac).map(Vec::as_slice).unwrap_or(&[]);
        if dsts.contains(&peer.underlay) {
            ops.extend(
                dsts.iter()
                    .filter(|d| **d != peer.underlay)
                    .map(|dst| PeerOp::DelFdb {
                        mac: peer.mac,
                        dst: *dst,
                    }),
            );
        } else {
            ops.push(PeerOp::SetFdb {
                mac: peer.mac,
                dst: peer.underlay,
                replace: !dsts.is_empty(),
            });
            // NLM_F_REPLACE rewrote the first destination; any others are stale.
            ops.extend(dsts.iter().skip(1).map(|dst| PeerOp::DelFdb {
                mac: peer.mac,
                dst: *dst,
            }));
        }
        if ops.len() == before {
            unchanged += 1;
        }
    }
    (ops, unchanged)
}

fn neighbour_ip(addr: &NeighbourAddress) -> Option<IpAddr> {
    match addr {
        NeighbourAddress::Inet(a) => Some(IpAddr::V4(*a)),
        NeighbourAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        NeighbourAddress::Other(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
            16 => <[u8; 16]>::try_from(bytes.as_slice())
                .ok()
                .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
            _ => None,
        },
        _ => None,
    }
}

fn parse_entry(msg: &NeighbourMessage) -> (Option<IpAddr>, Option<[u8; 6]>) {
    let mut dst = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(a) => dst = neighbour_ip(a),
            NeighbourAttribute::LinkLayerAddress(l) => {
                mac = <[u8; 6]>::try_from(l.as_slice()).ok();
            }
            _ => {}
        }
    }
    (dst, mac)
}

/// Fold dumped neighbour messages (any family) into the peer entries of `ifindex` (pure).
pub(crate) fn collect_kernel_peers(ifindex: u32, messages: &[NeighbourMessage]) -> KernelPeers {
    let mut out = KernelPeers::default();
    for msg in messages.iter().filter(|m| m.header.ifindex == ifindex) {
        let (dst, mac) = parse_entry(msg);
        let (Some(dst), Some(mac)) = (dst, mac) else {
            continue;
        };
        match msg.header.family {
            // Unicast MACs only: the all-zeros default destination and multicast entries
            // are not per-node entries.
            AddressFamily::Bridge if mac[0] & 0x01 == 0 && mac != [0; 6] => {
                out.fdb.entry(mac).or_default().push(dst);
            }
            AddressFamily::Inet | AddressFamily::Inet6
                if msg.header.state == NeighbourState::Permanent =>
            {
                out.neighbours.insert(dst, mac);
            }
            _ => {}
        }
    }
    out
}

async fn dump_family(nl: &Netlink, family: AddressFamily) -> Result<Vec<NeighbourMessage>> {
    nl.handle()
        .neighbours()
        .get()
        .set_address_family(family)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("dump neighbours of family", format!("{family:?}")))
}

/// The neighbour and FDB entries of device `ifindex`.
pub(crate) async fn dump_kernel_peers(nl: &Netlink, ifindex: u32) -> Result<KernelPeers> {
    let mut messages = dump_family(nl, AddressFamily::Inet).await?;
    messages.extend(dump_family(nl, AddressFamily::Inet6).await?);
    messages.extend(dump_family(nl, AddressFamily::Bridge).await?);
    Ok(collect_kernel_peers(ifindex, &messages))
}

/// The peers the kernel has on `ifindex`: permanent neighbours joined with the FDB entry
/// of their MAC (its first destination), sorted.
pub async fn dump_peers(nl: &Netlink, ifindex: u32) -> Result<Vec<VtepPeer>> {
    let kernel = dump_kernel_peers(nl, ifindex).await?;
    Ok(kernel
        .neighbours
        .iter()
        .filter_map(|(vtep, mac)| {
            kernel
                .fdb
                .get(mac)
                .and_then(|dsts| dsts.first())
                .map(|underlay| VtepPeer {
                    vtep: *vtep,
                    mac: *mac,
                    underlay: *underlay,
                })
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect())
}

fn fdb_message(ifindex: u32, mac: [u8; 6], dst: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = ifindex;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes = vec![
        NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
        NeighbourAttribute::Destination(dst.into()),
    ];
    msg
}

async fn apply(nl: &Netlink, ifindex: u32, op: PeerOp) -> Result<()> {
    let target = format!("{op} on ifindex {ifindex}");
    let handle = nl.handle().neighbours();
    let result = match op {
        PeerOp::SetNeighbour { vtep, mac, .. } => {
            handle
                .add(ifindex, vtep)
                .link_layer_address(&mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
        }
        PeerOp::SetFdb { mac, dst, .. } => {
            handle
                .add_bridge(ifindex, &mac)
                .destination(dst)
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
        }
        PeerOp::DelNeighbour { vtep } => {
            let mut msg = NeighbourMessage::default();
            msg.header.family = match vtep {
                IpAddr::V4(_) => AddressFamily::Inet,
                IpAddr::V6(_) => AddressFamily::Inet6,
            };
            msg.header.ifindex = ifindex;
            msg.attributes = vec![NeighbourAttribute::Destination(vtep.into())];
            handle.del(msg).execute().await
        }
        PeerOp::DelFdb { mac, dst } => handle.del(fdb_message(ifindex, mac, dst)).execute().await,
    };
    match result.map_err(nl_err("peer sync", target)) {
        // Already gone: deletions are idempotent.
        Err(e)
            if matches!(op, PeerOp::DelNeighbour { .. } | PeerOp::DelFdb { .. })
                && e.errno() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Make the permanent neighbours and FDB entries of device `ifindex` exactly `desired`.
/// Entries of other devices are never touched; one failed change does not stop the others.
pub async fn sync_peers(
    nl: &Netlink,
    ifindex: u32,
    desired: &BTreeSet<VtepPeer>,
) -> Result<PeerSyncReport> {
    let kernel = dump_kernel_peers(nl, ifindex).await?;
    let (ops, unchanged) = plan_peers(&kernel, desired);
    let mut report = PeerSyncReport {
        unchanged,
        ..PeerSyncReport::default()
    };
    for op in ops {
        match apply(nl, ifindex, op).await {
            Ok(()) => {
                let counter = match op {
                    PeerOp::SetNeighbour { replace: false, .. } => &mut report.neighbours_added,
                    PeerOp::SetNeighbour { replace: true, .. } => &mut report.neighbours_replaced,
                    PeerOp::DelNeighbour { .. } => &mut report.neighbours_removed,
                    PeerOp::SetFdb { replace: false, .. } => &mut report.fdb_added,
                    PeerOp::SetFdb { replace: true, .. } => &mut report.fdb_replaced,
                    PeerOp::DelFdb { .. } => &mut report.fdb_removed,
                };
                *counter += 1;
            }
            Err(e) => report.errors.push((op, e)),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn peer(vtep: &str, mac_last: u8, underlay: &str) -> VtepPeer {
        VtepPeer {
            vtep: ip(vtep),
            mac: [0x0a, 0x58, 0, 0, 0, mac_last],
            underlay: ip(underlay),
        }
    }

    fn mac(last: u8) -> [u8; 6] {
        [0x0a, 0x58, 0, 0, 0, last]
    }

    #[test]
    fn missing_peers_are_added_neighbour_first() {
        let desired: BTreeSet<VtepPeer> = [peer("10.244.2.0", 2, "10.0.0.2")].into();
        let (ops, unchanged) = plan_peers(&KernelPeers::default(), &desired);
        assert_eq!(unchanged, 0);
        assert_eq!(
            ops,
            vec![
                PeerOp::SetNeighbour {
                    vtep: ip("10.244.2.0"),
                    mac: mac(2),
                    replace: false
                },
                PeerOp::SetFdb {
                    mac: mac(2),
                    dst: ip("10.0.0.2"),
                    replace: false
                },
            ]
        );
    }

    #[test]
    fn stale_peers_are_removed_fdb_first_and_in_sync_ones_left_alone() {
        let mut kernel = KernelPeers::default();
        kernel.neighbours.insert(ip("10.244.2.0"), mac(2));
        kernel.fdb.insert(mac(2), vec![ip("10.0.0.2")]);
        kernel.neighbours.insert(ip("10.244.3.0"), mac(3));
        kernel.fdb.insert(mac(3), vec![ip("10.0.0.3")]);
        let desired: BTreeSet<VtepPeer> = [peer("10.244.2.0", 2, "10.0.0.2")].into();
        let (ops, unchanged) = plan_peers(&kernel, &desired);
        assert_eq!(unchanged, 1);
        assert_eq!(
            ops,
            vec![
                PeerOp::DelFdb {
                    mac: mac(3),
                    dst: ip("10.0.0.3")
                },
                PeerOp::DelNeighbour {
                    vtep: ip("10.244.3.0")
                },
            ]
        );
        let (ops, _) = plan_peers(&kernel, &BTreeSet::new());
        let first_neighbour = ops
            .iter()
            .position(|o| matches!(o, PeerOp::DelNeighbour { .. }))
            .unwrap();
        assert!(ops[..first_neighbour]
            .iter()
            .all(|o| matches!(o, PeerOp::DelFdb { .. })));
        assert_eq!(ops.len(), 4);
    }

    #[test]
    fn changed_peers_are_replaced() {
        let mut kernel = KernelPeers::default();
        // Node moved to a new underlay address, and its VTEP got a new MAC.
        kernel.neighbours.insert(ip("10.244.2.0"), mac(9));
        kernel
            .fdb
            .insert(mac(2), vec![ip("10.0.0.9"), ip("10.0.0.8")]);
        let desired: BTreeSet<VtepPeer> = [peer("10.244.2.0", 2, "10.0.0.2")].into();
        let (ops, unchanged) = plan_peers(&kernel, &desired);
        assert_eq!(unchanged, 0);
        assert_eq!(
            ops,
            vec![
                PeerOp::SetNeighbour {
                    vtep: ip("10.244.2.0"),
                    mac: mac(2),
                    replace: true
                },
                PeerOp::SetFdb {
                    mac: mac(2),
                    dst: ip("10.0.0.2"),
                    replace: true
                },
                PeerOp::DelFdb {
                    mac: mac(2),
                    dst: ip("10.0.0.8")
                },
            ]
        );
    }

    #[test]
    fn dumps_keep_only_our_device_permanent_neighbours_and_unicast_fdb() {
        let neigh = |ifindex: u32, dst: &str, state: NeighbourState, last: u8| {
            let mut m = NeighbourMessage::default();
            m.header.family = if ip(dst).is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            m.header.ifindex = ifindex;
            m.header.state = state;
            m.attributes = vec![
                NeighbourAttribute::Destination(ip(dst).into()),
                NeighbourAttribute::LinkLayerAddress(mac(last).to_vec()),
            ];
            m
        };
        let mut fdb_v6 = fdb_message(5, mac(4), ip("2001:db8::4"));
        // As the kernel sends it back: NDA_DST parsed as raw bytes for AF_BRIDGE.
        fdb_v6.attributes[1] = NeighbourAttribute::Destination(NeighbourAddress::Other(
            ip("2001:db8::4")
                .to_string()
                .parse::<Ipv6Addr>()
                .unwrap()
                .octets()
                .to_vec(),
        ));
        let mut zero = fdb_message(5, [0; 6], ip("10.0.0.99"));
        zero.attributes[0] = NeighbourAttribute::LinkLayerAddress(vec![0; 6]);
        let messages = vec![
            neigh(5, "10.244.2.0", NeighbourState::Permanent, 2),
            neigh(5, "10.244.7.0", NeighbourState::Reachable, 7),
            neigh(6, "10.244.3.0", NeighbourState::Permanent, 3),
            fdb_message(5, mac(2), ip("10.0.0.2")),
            fdb_message(6, mac(3), ip("10.0.0.3")),
            fdb_v6,
            zero,
        ];
        let kernel = collect_kernel_peers(5, &messages);
        assert_eq!(
            kernel.neighbours,
            [(ip("10.244.2.0"), mac(2))].into_iter().collect()
        );
        assert_eq!(
            kernel.fdb,
            [
                (mac(2), vec![ip("10.0.0.2")]),
                (mac(4), vec![ip("2001:db8::4")])
            ]
            .into_iter()
            .collect()
        );
    }
}
