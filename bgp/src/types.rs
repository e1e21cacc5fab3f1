//! Protocol value types shared by the codec (`packet`), the session FSM (`fsm`) and the RIB (`rib`).
//!
//! These are routelet's own types: the codec converts between them and the wire (via
//! netgauze); nothing outside `packet` sees netgauze types.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// An autonomous system number (always 4 bytes internally; RFC 6793).
pub type Asn = u32;

/// AS_TRANS (RFC 6793): stands in for a 4-byte ASN in 2-byte fields.
pub const AS_TRANS: u16 = 23456;

/// A unicast prefix, IPv4 or IPv6, always in canonical (truncated) form.
pub type Prefix = ipnet::IpNet;

/// Address families routelet speaks (AFI/SAFI pairs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];

    pub const fn afi(self) -> u16 {
        match self {
            Family::Ipv4Unicast => 1,
            Family::Ipv6Unicast => 2,
        }
    }

    pub const fn safi(self) -> u8 {
        1
    }

    pub fn from_afi_safi(afi: u16, safi: u8) -> Option<Family> {
        match (afi, safi) {
            (1, 1) => Some(Family::Ipv4Unicast),
            (2, 1) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    pub fn of_prefix(prefix: &Prefix) -> Family {
        match prefix {
            Prefix::V4(_) => Family::Ipv4Unicast,
            Prefix::V6(_) => Family::Ipv6Unicast,
        }
    }

    pub fn of_addr(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4Unicast,
            IpAddr::V6(_) => Family::Ipv6Unicast,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4Unicast => "ipv4_unicast",
            Family::Ipv6Unicast => "ipv6_unicast",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// ORIGIN attribute values; the derived order is the preference order (lower wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// One AS_PATH segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AsSegment {
    Sequence(Vec<Asn>),
    Set(Vec<Asn>),
    ConfedSequence(Vec<Asn>),
    ConfedSet(Vec<Asn>),
}

/// AS_PATH with 4-byte ASNs (AS4_PATH already merged by the codec, RFC 6793 4.2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    pub fn from_sequence(asns: Vec<Asn>) -> AsPath {
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsSegment::Sequence(asns)],
        }
    }

    /// Path length for best-path selection (RFC 4271 9.1.2.2: a SET counts 1, confed segments 0).
    pub fn length(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s {
                AsSegment::Sequence(v) => v.len(),
                AsSegment::Set(_) => 1,
                AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_) => 0,
            })
            .sum()
    }

    pub fn contains(&self, asn: Asn) -> bool {
        self.segments.iter().any(|s| match s {
            AsSegment::Sequence(v)
            | AsSegment::Set(v)
            | AsSegment::ConfedSequence(v)
            | AsSegment::ConfedSet(v) => v.contains(&asn),
        })
    }

    /// The neighbouring AS: first ASN of the first (non-confed) sequence, if any.
    pub fn first_asn(&self) -> Option<Asn> {
        match self.segments.first() {
            Some(AsSegment::Sequence(v)) => v.first().copied(),
            _ => None,
        }
    }

    /// The originating AS: last ASN of the last sequence segment.
    pub fn origin_asn(&self) -> Option<Asn> {
        match self.segments.last() {
            Some(AsSegment::Sequence(v)) => v.last().copied(),
            _ => None,
        }
    }

    /// Prepend `asn` `times` times (eBGP export, RFC 4271 5.1.2).
    pub fn prepend(&mut self, asn: Asn, times: usize) {
        if times == 0 {
            return;
        }
        match self.segments.first_mut() {
            Some(AsSegment::Sequence(v)) if v.len() + times <= 255 => {
                v.splice(0..0, std::iter::repeat_n(asn, times));
            }
            _ => self
                .segments
                .insert(0, AsSegment::Sequence(vec![asn; times])),
        }
    }
}

impl fmt::Display for AsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.segments {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let (open, close, v) = match seg {
                AsSegment::Sequence(v) => ("", "", v),
                AsSegment::Set(v) => ("{", "}", v),
                AsSegment::ConfedSequence(v) => ("(", ")", v),
                AsSegment::ConfedSet(v) => ("[", "]", v),
            };
            f.write_str(open)?;
            for (i, a) in v.iter().enumerate() {
                if i > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{a}")?;
            }
            f.write_str(close)?;
        }
        Ok(())
    }
}

/// A large community (RFC 8092).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LargeCommunity {
    pub global_admin: u32,
    pub local_data1: u32,
    pub local_data2: u32,
}

/// An attribute this speaker does not interpret, kept as received (flags include the Partial bit).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RawAttribute {
    pub flags: u8,
    pub type_code: u8,
    pub value: Vec<u8>,
}

impl RawAttribute {
    pub const FLAG_OPTIONAL: u8 = 0x80;
    pub const FLAG_TRANSITIVE: u8 = 0x40;
    pub const FLAG_PARTIAL: u8 = 0x20;
    pub const FLAG_EXTENDED_LENGTH: u8 = 0x10;

    pub fn is_optional_transitive(&self) -> bool {
        self.flags & (Self::FLAG_OPTIONAL | Self::FLAG_TRANSITIVE)
            == (Self::FLAG_OPTIONAL | Self::FLAG_TRANSITIVE)
    }
}

/// A next hop as carried in NEXT_HOP or MP_REACH_NLRI (IPv6 may add a link-local address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NextHop {
    pub addr: IpAddr,
    pub link_local: Option<Ipv6Addr>,
}

impl NextHop {
    pub fn new(addr: IpAddr) -> NextHop {
        NextHop {
            addr,
            link_local: None,
        }
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.link_local {
            Some(ll) => write!(f, "{} ({ll})", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// The path attributes of a route. One value is shared (interned behind an `Arc`) by every
/// prefix that carries the same set. `next_hop` is the next hop for this route's family
/// (from NEXT_HOP for IPv4 NLRI, from MP_REACH_NLRI otherwise).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathAttributes {
    pub origin: Origin,
    pub as_path: AsPath,
    pub next_hop: Option<NextHop>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<(Asn, Ipv4Addr)>,
    pub communities: Vec<u32>,
    pub large_communities: Vec<LargeCommunity>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    /// Unrecognised attributes, in received order (optional transitive ones are propagated
    /// with the Partial bit set; non-transitive ones are dropped by the RIB before export).
    pub unknown: Vec<RawAttribute>,
}

impl Default for PathAttributes {
    fn default() -> Self {
        PathAttributes {
            origin: Origin::Igp,
            as_path: AsPath::default(),
            next_hop: None,
            med: None,
            local_pref: None,
            atomic_aggregate: false,
            aggregator: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
            originator_id: None,
            cluster_list: Vec::new(),
            unknown: Vec::new(),
        }
    }
}

/// Graceful-restart capability (RFC 4724) as advertised or received.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GracefulRestart {
    /// R bit: the sender has restarted (its peers should not wait for its End-of-RIB).
    pub restart_state: bool,
    /// N bit (RFC 8538): NOTIFICATION-based graceful restart is supported.
    pub notification: bool,
    /// Seconds the peer keeps our routes while waiting for the session to come back (12 bits).
    pub restart_time: u16,
    /// (family, forwarding state preserved)
    pub families: Vec<(Family, bool)>,
}

/// Capabilities from an OPEN message (RFC 5492).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capabilities {
    /// RFC 6793; `Some(asn)` when the 4-octet-AS capability is present.
    pub four_octet_asn: Option<Asn>,
    /// RFC 4760 multiprotocol families.
    pub multiprotocol: Vec<Family>,
    /// RFC 2918.
    pub route_refresh: bool,
    /// RFC 7313.
    pub enhanced_route_refresh: bool,
    /// RFC 8950: NLRI families that may carry an IPv6 next hop (only Ipv4Unicast is meaningful).
    pub extended_next_hop: Vec<Family>,
    /// RFC 4724.
    pub graceful_restart: Option<GracefulRestart>,
    /// RFC 8654.
    pub extended_message: bool,
    /// Capabilities we do not interpret: (code, value).
    pub unknown: Vec<(u8, Vec<u8>)>,
}

/// An OPEN message. `asn` is the speaker's real ASN (from the 4-octet capability when present,
/// else the 2-byte field); `wire_asn` is the 2-byte field as sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Open {
    pub version: u8,
    pub asn: Asn,
    pub hold_time: u16,
    pub router_id: Ipv4Addr,
    pub capabilities: Capabilities,
}

/// Routes announced with one next hop for one family (NEXT_HOP + NLRI or one MP_REACH_NLRI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    pub family: Family,
    pub next_hop: NextHop,
    pub prefixes: Vec<Prefix>,
}

/// Withdrawals for one family (withdrawn routes field or MP_UNREACH_NLRI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreach {
    pub family: Family,
    pub prefixes: Vec<Prefix>,
}

/// What RFC 7606 prescribes for a malformed attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorAction {
    /// The attribute is dropped, the rest of the UPDATE is used.
    AttributeDiscard,
    /// All NLRI in the UPDATE are treated as withdrawn.
    TreatAsWithdraw,
    /// The session is reset with a NOTIFICATION.
    SessionReset,
}

/// A malformed attribute the decoder tolerated (RFC 7606), reported to the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeError {
    /// Attribute type code (0 when unknown).
    pub type_code: u8,
    pub action: ErrorAction,
    pub reason: String,
}

/// An UPDATE message in routelet's terms.
///
/// `attrs.next_hop` is unused here: next hops travel in `reach`. An UPDATE with no reach,
/// no unreach prefixes and no attributes is the IPv4 End-of-RIB; an UPDATE whose only
/// content is an empty MP_UNREACH_NLRI for a family is that family's End-of-RIB.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub unreach: Vec<Unreach>,
    pub attrs: Option<PathAttributes>,
    pub reach: Vec<Reach>,
    /// Errors tolerated while decoding (RFC 7606). If any has `TreatAsWithdraw`, the
    /// session must treat every prefix in `reach` as withdrawn.
    pub errors: Vec<AttributeError>,
}

impl Update {
    /// The family this UPDATE ends the initial table for, if it is an End-of-RIB marker.
    pub fn end_of_rib(&self) -> Option<Family> {
        if !self.reach.is_empty() || !self.errors.is_empty() {
            return None;
        }
        match (self.attrs.as_ref(), self.unreach.as_slice()) {
            (None, []) => Some(Family::Ipv4Unicast),
            (_, [u]) if u.prefixes.is_empty() => Some(u.family),
            _ => None,
        }
    }

    pub fn treat_as_withdraw(&self) -> bool {
        self.errors
            .iter()
            .any(|e| e.action == ErrorAction::TreatAsWithdraw)
    }
}

/// NOTIFICATION error codes (RFC 4271 4.5) and the subcodes routelet uses.
pub mod notify {
    pub const MESSAGE_HEADER_ERROR: u8 = 1;
    pub const OPEN_MESSAGE_ERROR: u8 = 2;
    pub const UPDATE_MESSAGE_ERROR: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM_ERROR: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH_ERROR: u8 = 7;

    // Message header error subcodes
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;

    // OPEN message error subcodes
    pub const UNSUPPORTED_VERSION: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;

    // UPDATE message error subcodes
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE: u8 = 2;
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    pub const INVALID_ORIGIN_ATTRIBUTE: u8 = 6;
    pub const INVALID_NEXT_HOP_ATTRIBUTE: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;

    // Cease subcodes (RFC 4486)
    pub const CEASE_MAX_PREFIXES: u8 = 1;
    pub const CEASE_ADMIN_SHUTDOWN: u8 = 2;
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    pub const CEASE_ADMIN_RESET: u8 = 4;
    pub const CEASE_CONNECTION_REJECTED: u8 = 5;
    pub const CEASE_OTHER_CONFIG_CHANGE: u8 = 6;
    pub const CEASE_COLLISION_RESOLUTION: u8 = 7;
    pub const CEASE_OUT_OF_RESOURCES: u8 = 8;
    /// RFC 8538: the session ends without graceful restart, whatever was negotiated.
    pub const CEASE_HARD_RESET: u8 = 9;
    /// RFC 9384: the session ended because BFD declared the path down.
    pub const CEASE_BFD_DOWN: u8 = 10;
}

/// A NOTIFICATION message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8) -> Notification {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    pub fn with_data(code: u8, subcode: u8, data: Vec<u8>) -> Notification {
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// Human name of the code/subcode, for logs and metrics labels.
    pub fn describe(&self) -> String {
        use notify::*;
        let code = match self.code {
            MESSAGE_HEADER_ERROR => "message header error",
            OPEN_MESSAGE_ERROR => "open message error",
            UPDATE_MESSAGE_ERROR => "update message error",
            HOLD_TIMER_EXPIRED => "hold timer expired",
            FSM_ERROR => "fsm error",
            CEASE => "cease",
            ROUTE_REFRESH_ERROR => "route refresh error",
            _ => "unknown error",
        };
        format!("{code} ({}/{})", self.code, self.subcode)
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A ROUTE-REFRESH message (RFC 2918; subtype from RFC 7313, 0 = normal request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRefresh {
    pub family: Family,
    pub subtype: u8,
}

/// A BGP message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Open(_) => "open",
            Message::Update(_) => "update",
            Message::Notification(_) => "notification",
            Message::Keepalive => "keepalive",
            Message::RouteRefresh(_) => "route_refresh",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_path_length_counts_sets_once() {
        let p = AsPath {
            segments: vec![
                AsSegment::Sequence(vec![1, 2, 3]),
                AsSegment::Set(vec![4, 5]),
                AsSegment::ConfedSequence(vec![9]),
            ],
        };
        assert_eq!(p.length(), 4);
        assert!(p.contains(5));
        assert!(!p.contains(7));
        assert_eq!(p.first_asn(), Some(1));
    }

    #[test]
    fn prepend_extends_leading_sequence_or_adds_one() {
        let mut p = AsPath::from_sequence(vec![2]);
        p.prepend(1, 2);
        assert_eq!(p.segments, vec![AsSegment::Sequence(vec![1, 1, 2])]);
        let mut s = AsPath {
            segments: vec![AsSegment::Set(vec![7])],
        };
        s.prepend(3, 1);
        assert_eq!(s.to_string(), "3 {7}");
    }

    #[test]
    fn end_of_rib_detection() {
        assert_eq!(Update::default().end_of_rib(), Some(Family::Ipv4Unicast));
        let u = Update {
            unreach: vec![Unreach {
                family: Family::Ipv6Unicast,
                prefixes: vec![],
            }],
            attrs: None,
            reach: vec![],
            errors: vec![],
        };
        assert_eq!(u.end_of_rib(), Some(Family::Ipv6Unicast));
    }
}
