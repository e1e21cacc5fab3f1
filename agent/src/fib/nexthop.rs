//! Kernel nexthop objects and groups (Linux >= 5.3, `ip nexthop`): RTM_NEWNEXTHOP /
//! RTM_DELNEXTHOP messages built by hand (netlink-packet-route has none) and a small blocking
//! socket that sends one request and waits for its ACK. A route that references a group by id
//! (RTA_NH_ID) follows the group: replacing the group's members re-points every such route
//! in one kernel operation, deleting a nexthop object removes every route left without a
//! usable next hop. This is the kernel layer of fast FIB repair; the FIB writer does not use
//! it yet.

use std::io;
use std::net::IpAddr;

use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket};

/// RTM_NEWNEXTHOP / RTM_DELNEXTHOP (include/uapi/linux/rtnetlink.h).
const RTM_NEWNEXTHOP: u16 = 104;
const RTM_DELNEXTHOP: u16 = 105;
/// Netlink header flags.
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
/// Nexthop attributes (include/uapi/linux/nexthop.h).
const NHA_ID: u16 = 1;
const NHA_GROUP: u16 = 2;
const NHA_BLACKHOLE: u16 = 4;
const NHA_OIF: u16 = 5;
const NHA_GATEWAY: u16 = 6;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// One nexthop object as routelet wants it in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NexthopSpec {
    /// A gateway reached through interface `oif`.
    Gateway { id: u32, gateway: IpAddr, oif: u32 },
    /// Drops what is routed to it.
    Blackhole { id: u32 },
    /// A multipath group of other nexthop objects: (member id, weight 1..=256).
    Group { id: u32, members: Vec<(u32, u16)> },
}

impl NexthopSpec {
    pub fn id(&self) -> u32 {
        match self {
            NexthopSpec::Gateway { id, .. }
            | NexthopSpec::Blackhole { id }
            | NexthopSpec::Group { id, .. } => *id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NexthopError {
    #[error("netlink socket: {0}")]
    Socket(io::Error),
    #[error("nexthop {id}: {op} refused by the kernel: {source}")]
    Kernel {
        id: u32,
        op: &'static str,
        source: io::Error,
    },
    #[error("nexthop {id}: group weight {weight} out of range 1..=256")]
    Weight { id: u32, weight: u16 },
    #[error("nexthop {id}: no reply from the kernel")]
    NoReply { id: u32 },
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + (4 - len % 4) % 4, 0);
}

fn message(kind: u16, flags: u16, seq: u32, family: u8, protocol: u8, attrs: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(24 + attrs.len());
    let len = (16 + 8 + attrs.len()) as u32;
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | flags).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // struct nhmsg { family, scope, protocol, resvd; u32 flags }
    m.extend_from_slice(&[family, 0, protocol, 0]);
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(attrs);
    m
}

/// RTM_NEWNEXTHOP with NLM_F_CREATE | NLM_F_REPLACE for `spec` (pure).
pub fn encode_replace(spec: &NexthopSpec, protocol: u8, seq: u32) -> Result<Vec<u8>, NexthopError> {
    let mut attrs = Vec::new();
    push_attr(&mut attrs, NHA_ID, &spec.id().to_ne_bytes());
    let family = match spec {
        NexthopSpec::Gateway { gateway, oif, .. } => {
            push_attr(&mut attrs, NHA_OIF, &oif.to_ne_bytes());
            match gateway {
                IpAddr::V4(a) => {
                    push_attr(&mut attrs, NHA_GATEWAY, &a.octets());
                    AF_INET
                }
                IpAddr::V6(a) => {
                    push_attr(&mut attrs, NHA_GATEWAY, &a.octets());
                    AF_INET6
                }
            }
        }
        NexthopSpec::Blackhole { .. } => {
            push_attr(&mut attrs, NHA_BLACKHOLE, &[]);
            // The kernel wants a family even here (as iproute2 sends it).
            AF_INET
        }
        NexthopSpec::Group { id, members } => {
            // struct nexthop_grp { u32 id; u8 weight (weight - 1); u8 resvd1; u16 resvd2 }
            let mut grp = Vec::with_capacity(members.len() * 8);
            for (member, weight) in members {
                if *weight == 0 || *weight > 256 {
                    return Err(NexthopError::Weight {
                        id: *id,
                        weight: *weight,
                    });
                }
                grp.extend_from_slice(&member.to_ne_bytes());
                grp.push((weight - 1) as u8);
                grp.extend_from_slice(&[0, 0, 0]);
            }
            push_attr(&mut attrs, NHA_GROUP, &grp);
            AF_UNSPEC
        }
    };
    Ok(message(
        RTM_NEWNEXTHOP,
        NLM_F_CREATE | NLM_F_REPLACE,
        seq,
        family,
        protocol,
        &attrs,
    ))
}

/// RTM_DELNEXTHOP for `id` (pure).
pub fn encode_delete(id: u32, seq: u32) -> Vec<u8> {
    let mut attrs = Vec::new();
    push_attr(&mut attrs, NHA_ID, &id.to_ne_bytes());
    message(RTM_DELNEXTHOP, 0, seq, AF_UNSPEC, 0, &attrs)
}

/// The errno of the NLMSG_ERROR answering `seq` in `datagram`: `Some(0)` for an ACK, `None`
/// when the datagram holds no answer to it (pure; malformed input is no answer).
pub fn ack_errno(datagram: &[u8], seq: u32) -> Option<i32> {
    let mut rest = datagram;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(rest.get(4..6)?.try_into().ok()?);
        let got = u32::from_ne_bytes(rest.get(8..12)?.try_into().ok()?);
        if len < 16 || len > rest.len() {
            return None;
        }
        if kind == NLMSG_ERROR && got == seq {
            let code = i32::from_ne_bytes(rest.get(16..20)?.try_into().ok()?);
            return Some(-code);
        }
        rest = rest.get(len.next_multiple_of(4).min(rest.len())..)?;
    }
    None
}

/// A netlink socket for nexthop requests, in the namespace of the thread that opened it.
pub struct NexthopSocket {
    socket: Socket,
    seq: u32,
    protocol: u8,
}

impl NexthopSocket {
    /// Nexthop objects created through this socket carry route protocol `protocol`.
    pub fn new(protocol: u8) -> Result<NexthopSocket, NexthopError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NexthopError::Socket)?;
        socket.bind_auto().map_err(NexthopError::Socket)?;
        Ok(NexthopSocket {
            socket,
            seq: 0,
            protocol,
        })
    }

    /// Create or replace `spec`. Replacing a group re-points every route that uses it.
    pub fn replace(&mut self, spec: &NexthopSpec) -> Result<(), NexthopError> {
        let seq = self.next_seq();
        let msg = encode_replace(spec, self.protocol, seq)?;
        self.request(&msg, seq, spec.id(), "replace")
    }

    /// Delete nexthop `id` (routes left without a usable next hop go with it).
    pub fn delete(&mut self, id: u32) -> Result<(), NexthopError> {
        let seq = self.next_seq();
        self.request(&encode_delete(id, seq), seq, id, "delete")
    }

    /// Whether this kernel has nexthop objects: creates and deletes a blackhole nexthop with
    /// `probe_id` (an id routelet reserves for this).
    pub fn supported(&mut self, probe_id: u32) -> bool {
        self.replace(&NexthopSpec::Blackhole { id: probe_id })
            .is_ok()
            && self.delete(probe_id).is_ok()
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn request(
        &mut self,
        msg: &[u8],
        seq: u32,
        id: u32,
        op: &'static str,
    ) -> Result<(), NexthopError> {
        self.socket.send(msg, 0).map_err(NexthopError::Socket)?;
        let mut buf = vec![0u8; 16 * 1024];
        for _ in 0..64 {
            let n = self
                .socket
                .recv(&mut &mut buf[..], 0)
                .map_err(NexthopError::Socket)?;
            match ack_errno(buf.get(..n).unwrap_or_default(), seq) {
                Some(0) => return Ok(()),
                Some(errno) => {
                    return Err(NexthopError::Kernel {
                        id,
                        op,
                        source: io::Error::from_raw_os_error(errno),
                    })
                }
                None => continue,
            }
        }
        Err(NexthopError::NoReply { id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], i: usize) -> u16 {
        u16::from_ne_bytes([b[i], b[i + 1]])
    }

    #[test]
    fn gateway_message_layout() {
        let spec = NexthopSpec::Gateway {
            id: 7,
            gateway: "10.0.0.2".parse().expect("ip"),
            oif: 3,
        };
        let m = encode_replace(&spec, 200, 9).expect("encodes");
        assert_eq!(m.len(), 16 + 8 + 8 + 8 + 8);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().expect("4")),
            m.len() as u32
        );
        assert_eq!(u16_at(&m, 4), RTM_NEWNEXTHOP);
        assert_eq!(
            u16_at(&m, 6),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        );
        assert_eq!((m[16], m[18]), (AF_INET, 200), "family, protocol");
        // NHA_ID 7, NHA_OIF 3, NHA_GATEWAY 10.0.0.2
        assert_eq!((u16_at(&m, 24), u16_at(&m, 26)), (8, NHA_ID));
        assert_eq!(u32::from_ne_bytes(m[28..32].try_into().expect("4")), 7);
        assert_eq!(u16_at(&m, 34), NHA_OIF);
        assert_eq!(u16_at(&m, 42), NHA_GATEWAY);
        assert_eq!(&m[44..48], &[10, 0, 0, 2]);
    }

    #[test]
    fn group_weights_are_encoded_minus_one_and_checked() {
        let spec = NexthopSpec::Group {
            id: 10,
            members: vec![(1, 1), (2, 256)],
        };
        let m = encode_replace(&spec, 200, 1).expect("encodes");
        assert_eq!(m[16], AF_UNSPEC);
        assert_eq!((u16_at(&m, 32), u16_at(&m, 34)), (4 + 16, NHA_GROUP));
        assert_eq!(&m[36..44], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&m[44..52], &[2, 0, 0, 0, 255, 0, 0, 0]);
        for weight in [0, 257] {
            let bad = NexthopSpec::Group {
                id: 10,
                members: vec![(1, weight)],
            };
            assert!(matches!(
                encode_replace(&bad, 200, 1),
                Err(NexthopError::Weight { id: 10, .. })
            ));
        }
    }

    #[test]
    fn acks_errors_and_garbage() {
        let mut ack = vec![0u8; 36];
        ack[0..4].copy_from_slice(&36u32.to_ne_bytes());
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack[8..12].copy_from_slice(&5u32.to_ne_bytes());
        assert_eq!(ack_errno(&ack, 5), Some(0));
        assert_eq!(ack_errno(&ack, 6), None);
        ack[16..20].copy_from_slice(&(-22i32).to_ne_bytes());
        assert_eq!(ack_errno(&ack, 5), Some(22));
        assert_eq!(ack_errno(&ack[..10], 5), None);
        let mut bad_len = ack.clone();
        bad_len[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(ack_errno(&bad_len, 5), None);
        bad_len[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(ack_errno(&bad_len, 5), None);
    }
}
