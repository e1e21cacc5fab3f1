//! UPDATE decoder: splits the sections and attribute TLVs itself, parses each attribute value
//! with netgauze on its exact sub-slice, and classifies every malformation per RFC 7606
//! (treat-as-withdraw, attribute-discard or session reset), merging AS4_PATH/AS4_AGGREGATOR
//! on 2-octet-AS sessions per RFC 6793.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use netgauze_bgp_pkt::path_attribute::{
    Aggregator, As4Aggregator, AtomicAggregate, ClusterList, Communities, LargeCommunities,
    LocalPreference, MpReach, MpUnreach, MultiExitDiscriminator, NextHop as NgNextHop,
    Origin as NgOrigin, Originator,
};
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::{
    ParseFrom, ParseFromWithOneInput, ParseFromWithThreeInputs, ParseFromWithTwoInputs,
};

use super::DecodeError;
use crate::types::{
    notify, AsPath, AsSegment, Asn, AttributeError, ErrorAction, Family, LargeCommunity, NextHop,
    Origin, PathAttributes, Prefix, RawAttribute, Reach, Unreach, Update, AS_TRANS,
};

pub(crate) const ATTR_ORIGIN: u8 = 1;
pub(crate) const ATTR_AS_PATH: u8 = 2;
pub(crate) const ATTR_NEXT_HOP: u8 = 3;
pub(crate) const ATTR_MED: u8 = 4;
pub(crate) const ATTR_LOCAL_PREF: u8 = 5;
pub(crate) const ATTR_ATOMIC_AGGREGATE: u8 = 6;
pub(crate) const ATTR_AGGREGATOR: u8 = 7;
pub(crate) const ATTR_COMMUNITIES: u8 = 8;
pub(crate) const ATTR_ORIGINATOR_ID: u8 = 9;
pub(crate) const ATTR_CLUSTER_LIST: u8 = 10;
pub(crate) const ATTR_MP_REACH: u8 = 14;
pub(crate) const ATTR_MP_UNREACH: u8 = 15;
pub(crate) const ATTR_EXT_COMMUNITIES: u8 = 16;
pub(crate) const ATTR_AS4_PATH: u8 = 17;
pub(crate) const ATTR_AS4_AGGREGATOR: u8 = 18;
pub(crate) const ATTR_LARGE_COMMUNITIES: u8 = 32;

pub(crate) const FLAG_OPTIONAL: u8 = RawAttribute::FLAG_OPTIONAL;
pub(crate) const FLAG_TRANSITIVE: u8 = RawAttribute::FLAG_TRANSITIVE;
pub(crate) const FLAG_EXTENDED_LENGTH: u8 = RawAttribute::FLAG_EXTENDED_LENGTH;

/// The Optional/Transitive bits an attribute routelet interprets must carry (RFC 7606 3.c).
pub(crate) fn expected_flags(code: u8) -> Option<u8> {
    match code {
        ATTR_ORIGIN | ATTR_AS_PATH | ATTR_NEXT_HOP | ATTR_LOCAL_PREF | ATTR_ATOMIC_AGGREGATE => {
            Some(FLAG_TRANSITIVE)
        }
        ATTR_MED | ATTR_ORIGINATOR_ID | ATTR_CLUSTER_LIST | ATTR_MP_REACH | ATTR_MP_UNREACH => {
            Some(FLAG_OPTIONAL)
        }
        ATTR_AGGREGATOR
        | ATTR_COMMUNITIES
        | ATTR_EXT_COMMUNITIES
        | ATTR_AS4_PATH
        | ATTR_AS4_AGGREGATOR
        | ATTR_LARGE_COMMUNITIES => Some(FLAG_OPTIONAL | FLAG_TRANSITIVE),
        _ => None,
    }
}

/// RFC 7606 section 7 (and RFC 6793 6, RFC 8092 5) action for a malformed attribute.
pub(crate) fn action_for(code: u8) -> ErrorAction {
    match code {
        ATTR_ATOMIC_AGGREGATE | ATTR_AGGREGATOR | ATTR_AS4_PATH | ATTR_AS4_AGGREGATOR => {
            ErrorAction::AttributeDiscard
        }
        ATTR_MP_REACH | ATTR_MP_UNREACH => ErrorAction::SessionReset,
        _ => ErrorAction::TreatAsWithdraw,
    }
}

fn update_err(subcode: u8, reason: impl Into<String>) -> DecodeError {
    DecodeError::new(notify::UPDATE_MESSAGE_ERROR, subcode, Vec::new(), reason)
}

fn attr_name(code: u8) -> &'static str {
    match code {
        ATTR_ORIGIN => "ORIGIN",
        ATTR_AS_PATH => "AS_PATH",
        ATTR_NEXT_HOP => "NEXT_HOP",
        ATTR_MED => "MULTI_EXIT_DISC",
        ATTR_LOCAL_PREF => "LOCAL_PREF",
        ATTR_ATOMIC_AGGREGATE => "ATOMIC_AGGREGATE",
        ATTR_AGGREGATOR => "AGGREGATOR",
        ATTR_COMMUNITIES => "COMMUNITIES",
        ATTR_ORIGINATOR_ID => "ORIGINATOR_ID",
        ATTR_CLUSTER_LIST => "CLUSTER_LIST",
        ATTR_MP_REACH => "MP_REACH_NLRI",
        ATTR_MP_UNREACH => "MP_UNREACH_NLRI",
        ATTR_EXT_COMMUNITIES => "EXTENDED_COMMUNITIES",
        ATTR_AS4_PATH => "AS4_PATH",
        ATTR_AS4_AGGREGATOR => "AS4_AGGREGATOR",
        ATTR_LARGE_COMMUNITIES => "LARGE_COMMUNITIES",
        _ => "attribute",
    }
}

/// Parse an AS_PATH / AS4_PATH value with `width`-byte ASNs. Netgauze is not used here: it
/// rejects the confederation segment types 3 and 4, which RFC 5065 / RFC 7606 allow.
pub(crate) fn parse_as_path(mut v: &[u8], width: usize) -> Result<AsPath, String> {
    let mut segments: Vec<AsSegment> = Vec::new();
    while let [seg_type, count, rest @ ..] = v {
        let count = *count as usize;
        if count == 0 {
            return Err("segment length 0".into());
        }
        let Some(bytes) = rest.get(..count * width) else {
            return Err("segment overruns the attribute".into());
        };
        let asns: Vec<Asn> = if width == 2 {
            bytes
                .chunks_exact(2)
                .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
                .collect()
        } else {
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let seg = match (*seg_type, segments.last_mut()) {
            // Adjacent sequences are one sequence split at 255 ASNs by the sender.
            (2, Some(AsSegment::Sequence(prev))) => {
                prev.extend(asns);
                None
            }
            (3, Some(AsSegment::ConfedSequence(prev))) => {
                prev.extend(asns);
                None
            }
            (1, _) => Some(AsSegment::Set(asns)),
            (2, _) => Some(AsSegment::Sequence(asns)),
            (3, _) => Some(AsSegment::ConfedSequence(asns)),
            (4, _) => Some(AsSegment::ConfedSet(asns)),
            (t, _) => return Err(format!("undefined segment type {t}")),
        };
        segments.extend(seg);
        v = rest.get(count * width..).unwrap_or_default();
    }
    if !v.is_empty() {
        return Err("truncated segment header".into());
    }
    Ok(AsPath { segments })
}

/// RFC 6793 4.2.3: rebuild the 4-octet path from AS_PATH (2-octet, with AS_TRANS) and AS4_PATH.
pub(crate) fn merge_as4_path(as_path: &AsPath, as4_path: &AsPath) -> AsPath {
    let (n2, n4) = (as_path.length(), as4_path.length());
    if n2 < n4 {
        return as_path.clone();
    }
    let mut keep = n2 - n4;
    let mut segments: Vec<AsSegment> = Vec::new();
    for seg in &as_path.segments {
        match seg {
            AsSegment::Sequence(v) => {
                if keep == 0 {
                    break;
                }
                let take = keep.min(v.len());
                segments.push(AsSegment::Sequence(v.iter().take(take).copied().collect()));
                keep -= take;
            }
            AsSegment::Set(v) => {
                if keep == 0 {
                    break;
                }
                segments.push(AsSegment::Set(v.clone()));
                keep -= 1;
            }
            // Confederation segments count 0 and were prepended by the (2-octet) confed peers.
            AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_) => segments.push(seg.clone()),
        }
    }
    for seg in &as4_path.segments {
        match (seg, segments.last_mut()) {
            (AsSegment::Sequence(v), Some(AsSegment::Sequence(prev))) => prev.extend(v),
            _ => segments.push(seg.clone()),
        }
    }
    AsPath { segments }
}

fn v4_prefix(net: Ipv4Net) -> Prefix {
    IpNet::V4(net.trunc())
}

/// Parse a withdrawn-routes or NLRI field (IPv4 unicast). Errors end the session (RFC 7606 5.3).
fn parse_v4_nlri(buf: &[u8], what: &str) -> Result<Vec<Prefix>, DecodeError> {
    let mut out = Vec::with_capacity(buf.len() / 4);
    let mut r = SliceReader::new(buf);
    while !r.is_empty() {
        let net = <Ipv4Net as ParseFrom>::parse(&mut r)
            .map_err(|e| update_err(notify::INVALID_NETWORK_FIELD, format!("{what}: {e}")))?;
        // RFC 4271 6.3: a semantically incorrect (multicast) prefix is ignored.
        if net.prefix_len() >= 4 && net.network().is_multicast() {
            tracing::debug!(%net, "ignoring multicast prefix in {what}");
            continue;
        }
        out.push(v4_prefix(net));
    }
    Ok(out)
}

struct Decoder {
    asn4: bool,
    attrs: PathAttributes,
    errors: Vec<AttributeError>,
    seen: [bool; 256],
    /// Any attribute other than MP_UNREACH_NLRI was present.
    any_attr: bool,
    next_hop: Option<Ipv4Addr>,
    next_hop_error: Option<AttributeError>,
    as4_path: Option<AsPath>,
    as4_aggregator: Option<(Asn, Ipv4Addr)>,
    mp_reach: Option<Reach>,
    mp_unreach: Option<Unreach>,
    /// An MP attribute for a family routelet does not speak was present.
    foreign_family: bool,
}

pub(crate) fn decode_update(asn4: bool, body: &[u8]) -> Result<Option<Update>, DecodeError> {
    let malformed_list = |why: &str| update_err(notify::MALFORMED_ATTRIBUTE_LIST, why.to_string());
    let Some(&[w_hi, w_lo]) = body.get(..2) else {
        return Err(malformed_list("UPDATE too short"));
    };
    let w_len = u16::from_be_bytes([w_hi, w_lo]) as usize;
    let Some(withdrawn) = body.get(2..2 + w_len) else {
        return Err(malformed_list(
            "withdrawn routes length overruns the message",
        ));
    };
    let Some(&[a_hi, a_lo]) = body.get(2 + w_len..4 + w_len) else {
        return Err(malformed_list(
            "withdrawn routes length overruns the message",
        ));
    };
    let a_len = u16::from_be_bytes([a_hi, a_lo]) as usize;
    let Some(attr_section) = body.get(4 + w_len..4 + w_len + a_len) else {
        return Err(malformed_list(
            "total path attribute length overruns the message",
        ));
    };
    let nlri_field = body.get(4 + w_len + a_len..).unwrap_or_default();

    let mut d = Decoder {
        asn4,
        attrs: PathAttributes::default(),
        errors: Vec::new(),
        seen: [false; 256],
        any_attr: false,
        next_hop: None,
        next_hop_error: None,
        as4_path: None,
        as4_aggregator: None,
        mp_reach: None,
        mp_unreach: None,
        foreign_family: false,
    };
    d.walk_attributes(attr_section)?;

    let withdrawn = parse_v4_nlri(withdrawn, "withdrawn routes")?;
    let nlri = parse_v4_nlri(nlri_field, "NLRI")?;
    Ok(d.finish(withdrawn, nlri, !nlri_field.is_empty()))
}

impl Decoder {
    fn walk_attributes(&mut self, section: &[u8]) -> Result<(), DecodeError> {
        let mut rest = section;
        while !rest.is_empty() {
            let flags = rest.first().copied().unwrap_or_default();
            let code = rest.get(1).copied().unwrap_or_default();
            let ext = flags & FLAG_EXTENDED_LENGTH != 0;
            let hdr = if ext { 4 } else { 3 };
            let len = match (ext, rest.get(2..hdr)) {
                (true, Some(&[hi, lo])) => Some(u16::from_be_bytes([hi, lo]) as usize),
                (false, Some(&[l])) => Some(l as usize),
                _ => None,
            };
            let Some(tlv) = len.and_then(|len| rest.get(..hdr + len)) else {
                // RFC 7606 4: an attribute overrunning the section (or a truncated header) is
                // treat-as-withdraw; the Total Attribute Length still locates the NLRI. It can
                // only hit the last attribute, so an MP attribute is never silently lost unless
                // it is this one, which makes the NLRI unparseable: session reset.
                if len.is_some() && (code == ATTR_MP_REACH || code == ATTR_MP_UNREACH) {
                    return Err(update_err(
                        notify::MALFORMED_ATTRIBUTE_LIST,
                        format!("{} overruns the path attribute section", attr_name(code)),
                    ));
                }
                self.any_attr = true;
                self.errors.push(AttributeError {
                    type_code: if len.is_some() { code } else { 0 },
                    action: ErrorAction::TreatAsWithdraw,
                    reason: "path attribute overruns the path attribute section".into(),
                });
                return Ok(());
            };
            rest = rest.get(tlv.len()..).unwrap_or_default();
            let value = tlv.get(hdr..).unwrap_or_default();
            // length field + value: what netgauze's per-attribute parsers expect
            let len_and_value = tlv.get(2..).unwrap_or_default();
            self.attribute(flags, code, ext, value, len_and_value)?;
        }
        Ok(())
    }

    /// Record a malformed attribute per its RFC 7606 action.
    fn malformed(&mut self, code: u8, why: impl std::fmt::Display) -> Result<(), DecodeError> {
        let reason = format!("malformed {}: {why}", attr_name(code));
        let action = action_for(code);
        if action == ErrorAction::SessionReset {
            return Err(update_err(notify::MALFORMED_ATTRIBUTE_LIST, reason));
        }
        let err = AttributeError {
            type_code: code,
            action,
            reason,
        };
        if code == ATTR_NEXT_HOP {
            // Only matters when the NLRI field is used (RFC 4760 3; decided in finish()).
            self.next_hop_error = Some(err);
        } else {
            self.errors.push(err);
        }
        Ok(())
    }

    fn attribute(
        &mut self,
        flags: u8,
        code: u8,
        ext: bool,
        value: &[u8],
        len_and_value: &[u8],
    ) -> Result<(), DecodeError> {
        if code != ATTR_MP_UNREACH {
            self.any_attr = true;
        }
        if self.seen[code as usize] {
            if code == ATTR_MP_REACH || code == ATTR_MP_UNREACH {
                return Err(update_err(
                    notify::MALFORMED_ATTRIBUTE_LIST,
                    format!("{} appears more than once", attr_name(code)),
                ));
            }
            // RFC 7606 3.g: keep the first, discard the rest.
            self.errors.push(AttributeError {
                type_code: code,
                action: ErrorAction::AttributeDiscard,
                reason: format!("duplicate {} (type {code}) discarded", attr_name(code)),
            });
            return Ok(());
        }
        self.seen[code as usize] = true;
        if let Some(expected) = expected_flags(code) {
            let got = flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE);
            if got != expected {
                return self.malformed(
                    code,
                    format_args!("attribute flags {flags:#04x} conflict with the type"),
                );
            }
        }
        let mut r = SliceReader::new(len_and_value);
        let len = value.len();
        match code {
            ATTR_ORIGIN => match NgOrigin::parse(&mut r, ext) {
                Ok(o) => {
                    self.attrs.origin = match o {
                        NgOrigin::IGP => Origin::Igp,
                        NgOrigin::EGP => Origin::Egp,
                        NgOrigin::Incomplete => Origin::Incomplete,
                    }
                }
                Err(e) => return self.malformed(code, e),
            },
            ATTR_AS_PATH => match parse_as_path(value, if self.asn4 { 4 } else { 2 }) {
                Ok(p) => self.attrs.as_path = p,
                Err(e) => return self.malformed(code, e),
            },
            ATTR_NEXT_HOP => match NgNextHop::parse(&mut r, ext) {
                Ok(nh) => self.next_hop = Some(nh.next_hop()),
                Err(e) => return self.malformed(code, e),
            },
            ATTR_MED => match MultiExitDiscriminator::parse(&mut r, ext) {
                Ok(m) => self.attrs.med = Some(m.metric()),
                Err(e) => return self.malformed(code, e),
            },
            ATTR_LOCAL_PREF => match LocalPreference::parse(&mut r, ext) {
                Ok(m) => self.attrs.local_pref = Some(m.metric()),
                Err(e) => return self.malformed(code, e),
            },
            ATTR_ATOMIC_AGGREGATE => match AtomicAggregate::parse(&mut r, ext) {
                Ok(_) => self.attrs.atomic_aggregate = true,
                Err(e) => return self.malformed(code, e),
            },
            ATTR_AGGREGATOR => match Aggregator::parse(&mut r, ext, self.asn4) {
                Ok(Aggregator::As2Aggregator(a)) => {
                    self.attrs.aggregator = Some((u32::from(*a.asn()), a.origin()))
                }
                Ok(Aggregator::As4Aggregator(a)) => {
                    self.attrs.aggregator = Some((*a.asn(), a.origin()))
                }
                Err(e) => return self.malformed(code, e),
            },
            ATTR_COMMUNITIES => {
                // RFC 7606 7.8: malformed unless a non-zero multiple of 4 (netgauze accepts 0).
                if len == 0 || !len.is_multiple_of(4) {
                    return self.malformed(code, format_args!("length {len}"));
                }
                match Communities::parse(&mut r, ext) {
                    Ok(c) => {
                        self.attrs.communities = c.communities().iter().map(|c| c.value()).collect()
                    }
                    Err(e) => return self.malformed(code, e),
                }
            }
            ATTR_ORIGINATOR_ID => {
                // netgauze does not check the length of ORIGINATOR_ID
                if len != 4 {
                    return self.malformed(code, format_args!("length {len}"));
                }
                match Originator::parse(&mut r, ext) {
                    Ok(o) => self.attrs.originator_id = Some(o.id()),
                    Err(e) => return self.malformed(code, e),
                }
            }
            ATTR_CLUSTER_LIST => {
                if len == 0 || !len.is_multiple_of(4) {
                    return self.malformed(code, format_args!("length {len}"));
                }
                match ClusterList::parse(&mut r, ext) {
                    Ok(c) => {
                        self.attrs.cluster_list = c.cluster_list().iter().map(|c| c.id()).collect()
                    }
                    Err(e) => return self.malformed(code, e),
                }
            }
            ATTR_LARGE_COMMUNITIES => {
                // RFC 8092 5: malformed unless a non-zero multiple of 12 -> treat-as-withdraw
                if len == 0 || !len.is_multiple_of(12) {
                    return self.malformed(code, format_args!("length {len}"));
                }
                match LargeCommunities::parse(&mut r, ext) {
                    Ok(c) => {
                        self.attrs.large_communities = c
                            .communities()
                            .iter()
                            .map(|c| LargeCommunity {
                                global_admin: c.global_admin(),
                                local_data1: c.local_data1(),
                                local_data2: c.local_data2(),
                            })
                            .collect()
                    }
                    Err(e) => return self.malformed(code, e),
                }
            }
            ATTR_AS4_PATH | ATTR_AS4_AGGREGATOR if self.asn4 => {
                // RFC 6793 6: never valid between two NEW speakers; discard and carry on.
                self.errors.push(AttributeError {
                    type_code: code,
                    action: ErrorAction::AttributeDiscard,
                    reason: format!("{} received on a 4-octet-AS session", attr_name(code)),
                });
            }
            ATTR_AS4_PATH => match parse_as_path(value, 4) {
                Ok(mut p) => {
                    // RFC 6793 6: confederation segments must not appear in AS4_PATH.
                    p.segments
                        .retain(|s| matches!(s, AsSegment::Sequence(_) | AsSegment::Set(_)));
                    self.as4_path = Some(p);
                }
                Err(e) => return self.malformed(code, e),
            },
            ATTR_AS4_AGGREGATOR => match As4Aggregator::parse(&mut r, ext) {
                Ok(a) => self.as4_aggregator = Some((*a.asn(), a.origin())),
                Err(e) => return self.malformed(code, e),
            },
            ATTR_MP_REACH => self.mp_reach(value, len_and_value, ext)?,
            ATTR_MP_UNREACH => self.mp_unreach(value, len_and_value, ext)?,
            ATTR_EXT_COMMUNITIES if len == 0 || !len.is_multiple_of(8) => {
                // RFC 7606 7.14; otherwise kept raw like any attribute we do not interpret.
                return self.malformed(code, format_args!("length {len}"));
            }
            _ => self.attrs.unknown.push(RawAttribute {
                flags: flags & !FLAG_EXTENDED_LENGTH,
                type_code: code,
                value: value.to_vec(),
            }),
        }
        Ok(())
    }

    fn mp_reach(
        &mut self,
        value: &[u8],
        len_and_value: &[u8],
        ext: bool,
    ) -> Result<(), DecodeError> {
        let Some(&[afi_hi, afi_lo, safi, nh_len]) = value.get(..4) else {
            return self.malformed(ATTR_MP_REACH, "truncated header");
        };
        let afi = u16::from_be_bytes([afi_hi, afi_lo]);
        let Some(family) = Family::from_afi_safi(afi, safi) else {
            self.foreign_family = true;
            return Ok(());
        };
        let nh_ok = match family {
            Family::Ipv4Unicast => matches!(nh_len, 4 | 16 | 32),
            Family::Ipv6Unicast => matches!(nh_len, 16 | 32),
        };
        // RFC 7606 7.11: next hop length inconsistent with the AFI/SAFI -> session reset.
        if !nh_ok || value.len() < 5 + nh_len as usize {
            return self.malformed(ATTR_MP_REACH, format_args!("next hop length {nh_len}"));
        }
        let mut r = SliceReader::new(len_and_value);
        let parsed =
            MpReach::parse(&mut r, ext, &HashMap::new(), &HashMap::new()).map_err(|e| {
                update_err(notify::INVALID_NETWORK_FIELD, format!("MP_REACH_NLRI: {e}"))
            })?;
        let link_local = |ll: Option<Ipv6Addr>| ll.filter(|a| !a.is_unspecified());
        let reach = match parsed {
            MpReach::Ipv4Unicast {
                next_hop,
                next_hop_local,
                nlri,
            } => Reach {
                family,
                next_hop: NextHop {
                    addr: next_hop,
                    link_local: link_local(next_hop_local),
                },
                prefixes: nlri
                    .iter()
                    .map(|a| v4_prefix(a.network().address()))
                    .collect(),
            },
            MpReach::Ipv6Unicast {
                next_hop_global,
                next_hop_local,
                nlri,
            } => Reach {
                family,
                next_hop: NextHop {
                    addr: IpAddr::V6(next_hop_global),
                    link_local: link_local(next_hop_local),
                },
                prefixes: nlri
                    .iter()
                    .map(|a| IpNet::V6(a.network().address().trunc()))
                    .collect(),
            },
            _ => {
                self.foreign_family = true;
                return Ok(());
            }
        };
        self.mp_reach = Some(reach);
        Ok(())
    }

    fn mp_unreach(
        &mut self,
        value: &[u8],
        len_and_value: &[u8],
        ext: bool,
    ) -> Result<(), DecodeError> {
        let Some(&[afi_hi, afi_lo, safi]) = value.get(..3) else {
            return self.malformed(ATTR_MP_UNREACH, "truncated header");
        };
        let afi = u16::from_be_bytes([afi_hi, afi_lo]);
        let Some(family) = Family::from_afi_safi(afi, safi) else {
            self.foreign_family = true;
            return Ok(());
        };
        let mut r = SliceReader::new(len_and_value);
        let parsed =
            MpUnreach::parse(&mut r, ext, &HashMap::new(), &HashMap::new()).map_err(|e| {
                update_err(
                    notify::INVALID_NETWORK_FIELD,
                    format!("MP_UNREACH_NLRI: {e}"),
                )
            })?;
        let prefixes = match parsed {
            MpUnreach::Ipv4Unicast { nlri } => nlri
                .iter()
                .map(|a| v4_prefix(a.network().address()))
                .collect(),
            MpUnreach::Ipv6Unicast { nlri } => nlri
                .iter()
                .map(|a| IpNet::V6(a.network().address().trunc()))
                .collect(),
            _ => {
                self.foreign_family = true;
                return Ok(());
            }
        };
        self.mp_unreach = Some(Unreach { family, prefixes });
        Ok(())
    }

    fn finish(
        mut self,
        withdrawn: Vec<Prefix>,
        nlri: Vec<Prefix>,
        nlri_present: bool,
    ) -> Option<Update> {
        // RFC 6793 4.2.3 on 2-octet sessions.
        if !self.asn4 {
            let mut use_as4_path = true;
            if let Some((asn, _)) = self.attrs.aggregator {
                if asn != u32::from(AS_TRANS) {
                    // A 2-octet aggregator after the 4-octet one: AS4_* are stale.
                    use_as4_path = self.as4_aggregator.is_none();
                } else if let Some(agg4) = self.as4_aggregator {
                    self.attrs.aggregator = Some(agg4);
                }
            }
            if let (true, Some(as4)) = (
                use_as4_path && self.seen[ATTR_AS_PATH as usize],
                &self.as4_path,
            ) {
                self.attrs.as_path = merge_as4_path(&self.attrs.as_path, as4);
            }
        }

        let mut reach = Vec::new();
        if nlri_present {
            if let Some(e) = self.next_hop_error.take() {
                self.errors.push(e);
            } else if self.next_hop.is_none() {
                self.errors.push(AttributeError {
                    type_code: ATTR_NEXT_HOP,
                    action: ErrorAction::TreatAsWithdraw,
                    reason: "missing well-known attribute NEXT_HOP".into(),
                });
            }
        }
        if !nlri.is_empty() {
            let nh = self.next_hop.unwrap_or(Ipv4Addr::UNSPECIFIED);
            reach.push(Reach {
                family: Family::Ipv4Unicast,
                next_hop: NextHop::new(IpAddr::V4(nh)),
                prefixes: nlri,
            });
        }
        let mp_reach_present = self.mp_reach.is_some();
        reach.extend(self.mp_reach.take());
        if nlri_present || mp_reach_present {
            // RFC 7606 3.d: missing well-known mandatory attributes -> treat-as-withdraw.
            for code in [ATTR_ORIGIN, ATTR_AS_PATH] {
                if !self.seen[code as usize] {
                    self.errors.push(AttributeError {
                        type_code: code,
                        action: ErrorAction::TreatAsWithdraw,
                        reason: format!("missing well-known attribute {}", attr_name(code)),
                    });
                }
            }
        }

        let mut unreach: Vec<Unreach> = Vec::new();
        if !withdrawn.is_empty() {
            unreach.push(Unreach {
                family: Family::Ipv4Unicast,
                prefixes: withdrawn,
            });
        }
        if let Some(mp) = self.mp_unreach.take() {
            match unreach.iter_mut().find(|u| u.family == mp.family) {
                Some(u) => u.prefixes.extend(mp.prefixes),
                None => unreach.push(mp),
            }
        }
        if self.foreign_family && reach.is_empty() && unreach.is_empty() {
            // Only about families we do not speak: not an End-of-RIB, nothing to do.
            return None;
        }
        Some(Update {
            unreach,
            attrs: self.any_attr.then_some(self.attrs),
            reach,
            errors: self.errors,
        })
    }
}
