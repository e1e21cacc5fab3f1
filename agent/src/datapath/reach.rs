//! Pure datapath helpers: which remote addresses are directly reachable, the VTEP MAC every
//! node derives for a VTEP address, MAC text form, and the VXLAN MTU.

use std::net::IpAddr;

/// The subnet of an address on an up link (see [`super::connected_subnets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectedSubnet {
    pub prefix: ipnet::IpNet,
    pub ifindex: u32,
}

/// How this node reaches an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach {
    /// On a directly connected subnet of this interface.
    Direct { ifindex: u32 },
    /// On no connected subnet: a router (or the tunnel) is needed.
    NotConnected,
}

/// Whether `addr` is on one of the `connected` subnets (the longest matching prefix wins).
pub fn classify(addr: IpAddr, connected: &[ConnectedSubnet]) -> Reach {
    connected
        .iter()
        .filter(|c| c.prefix.contains(&addr))
        .max_by_key(|c| c.prefix.prefix_len())
        .map_or(Reach::NotConnected, |c| Reach::Direct {
            ifindex: c.ifindex,
        })
}

/// The MAC address of the VXLAN device whose VTEP address is `vtep`: locally administered
/// unicast (first octet 0x0a), the same on every node without asking. IPv4:
/// `0a:58:` + the four address bytes (10.244.1.0 -> 0a:58:0a:f4:01:00); IPv6: `0a:` + five
/// bytes of the 64-bit FNV-1a hash of the sixteen address bytes.
pub fn vtep_mac(vtep: IpAddr) -> [u8; 6] {
    match vtep {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            [0x0a, 0x58, a, b, c, d]
        }
        IpAddr::V6(v6) => {
            let hash = v6
                .octets()
                .iter()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, byte| {
                    (h ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
                })
                .to_be_bytes();
            [0x0a, hash[0], hash[1], hash[2], hash[3], hash[4]]
        }
    }
}

/// `0a:58:0a:f4:01:00`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Parse `0a:58:0a:f4:01:00` (either case; `-` separators accepted).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.trim().split([':', '-']);
    for byte in &mut out {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The VXLAN device MTU for an underlay MTU: 50 bytes of outer IPv4 + UDP + VXLAN + inner
/// Ethernet headers, 70 with an IPv6 underlay.
pub fn vxlan_mtu(underlay_mtu: u32, v6_underlay: bool) -> u32 {
    underlay_mtu.saturating_sub(if v6_underlay { 70 } else { 50 })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn subnet(prefix: &str, ifindex: u32) -> ConnectedSubnet {
        ConnectedSubnet {
            prefix: prefix.parse().unwrap(),
            ifindex,
        }
    }

    #[test]
    fn classify_finds_the_longest_connected_subnet() {
        let connected = [
            subnet("10.0.0.0/16", 2),
            subnet("10.0.1.0/24", 3),
            subnet("2001:db8::/64", 2),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            classify(ip("10.0.1.7"), &connected),
            Reach::Direct { ifindex: 3 }
        );
        assert_eq!(
            classify(ip("10.0.9.7"), &connected),
            Reach::Direct { ifindex: 2 }
        );
        assert_eq!(
            classify(ip("2001:db8::9"), &connected),
            Reach::Direct { ifindex: 2 }
        );
        assert_eq!(classify(ip("10.1.0.1"), &connected), Reach::NotConnected);
        assert_eq!(
            classify(ip("2001:db8:1::9"), &connected),
            Reach::NotConnected
        );
        assert_eq!(classify(ip("10.0.1.7"), &[]), Reach::NotConnected);
    }

    #[test]
    fn vtep_macs_are_deterministic_local_unicast() {
        let v4 = vtep_mac("10.244.1.0".parse().unwrap());
        assert_eq!(format_mac(&v4), "0a:58:0a:f4:01:00");
        let a = vtep_mac("2001:db8::1".parse().unwrap());
        let b = vtep_mac("2001:db8::2".parse().unwrap());
        assert_ne!(a, b);
        assert_eq!(a, vtep_mac("2001:db8::1".parse().unwrap()));
        for mac in [v4, a, b] {
            assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
            assert_eq!(mac[0] & 0x01, 0x00, "unicast");
        }
    }

    #[test]
    fn macs_round_trip_through_text() {
        let mac = [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0xff];
        assert_eq!(parse_mac(&format_mac(&mac)), Some(mac));
        assert_eq!(parse_mac("0A-58-0A-F4-01-FF"), Some(mac));
        assert_eq!(parse_mac("0a:58:0a:f4:01"), None);
        assert_eq!(parse_mac("0a:58:0a:f4:01:ff:00"), None);
        assert_eq!(parse_mac("0a:58:0a:f4:01:g0"), None);
        assert_eq!(parse_mac("0a:58:0a:f4:1:ff0"), None);
    }

    #[test]
    fn vxlan_overhead_by_underlay_family() {
        assert_eq!(vxlan_mtu(1500, false), 1450);
        assert_eq!(vxlan_mtu(1500, true), 1430);
        assert_eq!(vxlan_mtu(9000, false), 8950);
        assert_eq!(vxlan_mtu(20, true), 0);
    }
}
