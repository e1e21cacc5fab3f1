//! UPDATE encoder, written by hand: the path attributes are serialised once per call and the
//! prefixes are packed straight into `out`, splitting over as many messages as the maximum
//! message length requires (no per-prefix allocation, no intermediate message objects).

use std::net::{IpAddr, Ipv4Addr};

use bytes::{BufMut, BytesMut};

use super::update_decode::{
    ATTR_AGGREGATOR, ATTR_AS4_AGGREGATOR, ATTR_AS4_PATH, ATTR_AS_PATH, ATTR_ATOMIC_AGGREGATE,
    ATTR_CLUSTER_LIST, ATTR_COMMUNITIES, ATTR_LARGE_COMMUNITIES, ATTR_LOCAL_PREF, ATTR_MED,
    ATTR_MP_REACH, ATTR_MP_UNREACH, ATTR_NEXT_HOP, ATTR_ORIGIN, ATTR_ORIGINATOR_ID,
    FLAG_EXTENDED_LENGTH, FLAG_OPTIONAL, FLAG_TRANSITIVE,
};
use super::{put_header, EncodeError, SessionCodec, HEADER_LEN, MSG_UPDATE};
use crate::types::{AsPath, AsSegment, Family, NextHop, PathAttributes, Prefix, Update, AS_TRANS};

/// Header + withdrawn routes length + total path attribute length.
const UPDATE_FIXED_LEN: usize = HEADER_LEN + 4;
/// MP_REACH/MP_UNREACH are always written with a 2-byte length: flags, type, length.
const MP_ATTR_HEADER_LEN: usize = 4;

const WELL_KNOWN: u8 = FLAG_TRANSITIVE;
const OPT_NON_TRANSITIVE: u8 = FLAG_OPTIONAL;
const OPT_TRANSITIVE: u8 = FLAG_OPTIONAL | FLAG_TRANSITIVE;

fn prefix_wire_len(p: &Prefix) -> usize {
    1 + (p.prefix_len() as usize).div_ceil(8)
}

fn put_prefix(out: &mut impl BufMut, p: &Prefix) {
    let len = p.prefix_len();
    let n = (len as usize).div_ceil(8);
    out.put_u8(len);
    match p {
        Prefix::V4(net) => out.put_slice(net.network().octets().get(..n).unwrap_or_default()),
        Prefix::V6(net) => out.put_slice(net.network().octets().get(..n).unwrap_or_default()),
    }
}

fn put_attr(buf: &mut Vec<u8>, flags: u8, code: u8, value: &[u8]) -> Result<(), EncodeError> {
    if value.len() > 255 {
        let len = u16::try_from(value.len()).map_err(|_| {
            EncodeError::invalid(
                "UPDATE",
                format!("attribute {code} is {} bytes", value.len()),
            )
        })?;
        buf.extend_from_slice(&[flags | FLAG_EXTENDED_LENGTH, code]);
        buf.extend_from_slice(&len.to_be_bytes());
    } else {
        buf.extend_from_slice(&[flags & !FLAG_EXTENDED_LENGTH, code, value.len() as u8]);
    }
    buf.extend_from_slice(value);
    Ok(())
}

fn segment_parts(seg: &AsSegment) -> (u8, &[u32]) {
    match seg {
        AsSegment::Set(v) => (1, v),
        AsSegment::Sequence(v) => (2, v),
        AsSegment::ConfedSequence(v) => (3, v),
        AsSegment::ConfedSet(v) => (4, v),
    }
}

/// AS_PATH/AS4_PATH value; 2-byte ASNs above 65535 become AS_TRANS. Segments longer than 255
/// ASNs are split (the decoder joins adjacent sequences back).
fn as_path_value(path: &AsPath, four_byte: bool, skip_confed: bool) -> Vec<u8> {
    let mut v = Vec::new();
    for seg in &path.segments {
        let (seg_type, asns) = segment_parts(seg);
        if skip_confed && seg_type >= 3 {
            continue;
        }
        for chunk in asns.chunks(255) {
            v.push(seg_type);
            v.push(chunk.len() as u8);
            for asn in chunk {
                if four_byte {
                    v.extend_from_slice(&asn.to_be_bytes());
                } else {
                    v.extend_from_slice(&u16::try_from(*asn).unwrap_or(AS_TRANS).to_be_bytes());
                }
            }
        }
    }
    v
}

/// Serialised path attributes (without MP_REACH/MP_UNREACH), in ascending type order, split
/// into those that sort before MP_REACH_NLRI (type 14) and those after MP_UNREACH_NLRI.
struct AttrBlock {
    low: Vec<u8>,
    high: Vec<u8>,
}

fn encode_attrs(
    asn4: bool,
    a: &PathAttributes,
    next_hop: Option<Ipv4Addr>,
) -> Result<AttrBlock, EncodeError> {
    let mut list: Vec<(u8, u8, Vec<u8>)> = Vec::with_capacity(12 + a.unknown.len());
    list.push((ATTR_ORIGIN, WELL_KNOWN, vec![a.origin as u8]));
    list.push((
        ATTR_AS_PATH,
        WELL_KNOWN,
        as_path_value(&a.as_path, asn4, false),
    ));
    let needs_as4 = !asn4
        && a.as_path
            .segments
            .iter()
            .any(|s| segment_parts(s).1.iter().any(|x| *x > 0xffff));
    if needs_as4 {
        list.push((
            ATTR_AS4_PATH,
            OPT_TRANSITIVE,
            as_path_value(&a.as_path, true, true),
        ));
    }
    if let Some(nh) = next_hop {
        list.push((ATTR_NEXT_HOP, WELL_KNOWN, nh.octets().to_vec()));
    }
    if let Some(med) = a.med {
        list.push((ATTR_MED, OPT_NON_TRANSITIVE, med.to_be_bytes().to_vec()));
    }
    if let Some(lp) = a.local_pref {
        list.push((ATTR_LOCAL_PREF, WELL_KNOWN, lp.to_be_bytes().to_vec()));
    }
    if a.atomic_aggregate {
        list.push((ATTR_ATOMIC_AGGREGATE, WELL_KNOWN, Vec::new()));
    }
    if let Some((asn, ip)) = a.aggregator {
        let mut v = Vec::with_capacity(8);
        if asn4 {
            v.extend_from_slice(&asn.to_be_bytes());
        } else {
            v.extend_from_slice(&u16::try_from(asn).unwrap_or(AS_TRANS).to_be_bytes());
            if asn > 0xffff {
                let mut v4 = asn.to_be_bytes().to_vec();
                v4.extend_from_slice(&ip.octets());
                list.push((ATTR_AS4_AGGREGATOR, OPT_TRANSITIVE, v4));
            }
        }
        v.extend_from_slice(&ip.octets());
        list.push((ATTR_AGGREGATOR, OPT_TRANSITIVE, v));
    }
    if !a.communities.is_empty() {
        let v = a.communities.iter().flat_map(|c| c.to_be_bytes()).collect();
        list.push((ATTR_COMMUNITIES, OPT_TRANSITIVE, v));
    }
    if let Some(id) = a.originator_id {
        list.push((ATTR_ORIGINATOR_ID, OPT_NON_TRANSITIVE, id.octets().to_vec()));
    }
    if !a.cluster_list.is_empty() {
        let v = a.cluster_list.iter().flat_map(|c| c.octets()).collect();
        list.push((ATTR_CLUSTER_LIST, OPT_NON_TRANSITIVE, v));
    }
    if !a.large_communities.is_empty() {
        let mut v = Vec::with_capacity(12 * a.large_communities.len());
        for c in &a.large_communities {
            v.extend_from_slice(&c.global_admin.to_be_bytes());
            v.extend_from_slice(&c.local_data1.to_be_bytes());
            v.extend_from_slice(&c.local_data2.to_be_bytes());
        }
        list.push((ATTR_LARGE_COMMUNITIES, OPT_TRANSITIVE, v));
    }
    for raw in &a.unknown {
        let generated = matches!(
            raw.type_code,
            ATTR_ORIGIN
                ..=ATTR_ORIGINATOR_ID
                    | ATTR_CLUSTER_LIST
                    | ATTR_MP_REACH
                    | ATTR_MP_UNREACH
                    | ATTR_AS4_PATH
                    | ATTR_AS4_AGGREGATOR
                    | ATTR_LARGE_COMMUNITIES
        );
        if generated {
            // would duplicate an attribute we write from the typed fields
            continue;
        }
        list.push((raw.type_code, raw.flags, raw.value.clone()));
    }
    list.sort_by_key(|(code, _, _)| *code);
    let mut block = AttrBlock {
        low: Vec::with_capacity(64),
        high: Vec::new(),
    };
    for (code, flags, value) in &list {
        let buf = if *code < ATTR_MP_REACH {
            &mut block.low
        } else {
            &mut block.high
        };
        put_attr(buf, *flags, *code, value)?;
    }
    Ok(block)
}

/// MP_REACH_NLRI next hop bytes (RFC 4760 / RFC 2545 / RFC 8950).
fn mp_next_hop(family: Family, nh: &NextHop) -> Result<Vec<u8>, EncodeError> {
    match (family, nh.addr) {
        (Family::Ipv4Unicast, IpAddr::V4(a)) => Ok(a.octets().to_vec()),
        (_, IpAddr::V6(a)) => {
            let mut v = a.octets().to_vec();
            if let Some(ll) = nh.link_local {
                v.extend_from_slice(&ll.octets());
            }
            Ok(v)
        }
        (Family::Ipv6Unicast, IpAddr::V4(a)) => Err(EncodeError::invalid(
            "UPDATE",
            format!("IPv6 routes cannot use the IPv4 next hop {a}"),
        )),
    }
}

fn check_family(family: Family, prefixes: &[Prefix]) -> Result<(), EncodeError> {
    match prefixes.iter().find(|p| Family::of_prefix(p) != family) {
        Some(p) => Err(EncodeError::invalid(
            "UPDATE",
            format!("prefix {p} is not {family}"),
        )),
        None => Ok(()),
    }
}

/// Split `prefixes` into runs whose encoded size fits `budget`; calls `emit(run, bytes)`.
fn for_each_chunk(
    prefixes: &[Prefix],
    budget: usize,
    mut emit: impl FnMut(&[Prefix], usize),
) -> Result<usize, EncodeError> {
    let mut messages = 0;
    let mut rest = prefixes;
    while !rest.is_empty() {
        let mut bytes = 0;
        let mut n = 0;
        for p in rest {
            let s = prefix_wire_len(p);
            if bytes + s > budget {
                break;
            }
            bytes += s;
            n += 1;
        }
        if n == 0 {
            return Err(EncodeError::invalid(
                "UPDATE",
                "path attributes leave no room for a prefix",
            ));
        }
        let (run, tail) = rest.split_at(n);
        emit(run, bytes);
        messages += 1;
        rest = tail;
    }
    Ok(messages)
}

fn room(max: usize, used: usize) -> Result<usize, EncodeError> {
    max.checked_sub(used).ok_or_else(|| {
        EncodeError::invalid("UPDATE", format!("{used} bytes of attributes exceed {max}"))
    })
}

fn put_mp_attr_header(out: &mut BytesMut, code: u8, value_len: usize) {
    out.put_u8(FLAG_OPTIONAL | FLAG_EXTENDED_LENGTH);
    out.put_u8(code);
    out.put_u16(value_len as u16);
}

pub(super) fn encode_announce(
    codec: &SessionCodec,
    family: Family,
    attrs: &PathAttributes,
    prefixes: &[Prefix],
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    check_family(family, prefixes)?;
    if prefixes.is_empty() {
        return Ok(0);
    }
    let nh = attrs
        .next_hop
        .ok_or_else(|| EncodeError::invalid("UPDATE", "announcement without a next hop"))?;
    let max = codec.max_message_len();
    match (family, nh.addr) {
        (Family::Ipv4Unicast, IpAddr::V4(v4)) => {
            let block = encode_attrs(codec.asn4, attrs, Some(v4))?;
            let attr_len = block.low.len() + block.high.len();
            let budget = room(max, UPDATE_FIXED_LEN + attr_len)?;
            for_each_chunk(prefixes, budget, |run, bytes| {
                put_header(out, UPDATE_FIXED_LEN + attr_len + bytes, MSG_UPDATE);
                out.put_u16(0);
                out.put_u16(attr_len as u16);
                out.put_slice(&block.low);
                out.put_slice(&block.high);
                for p in run {
                    put_prefix(out, p);
                }
            })
        }
        _ => {
            let nh_bytes = mp_next_hop(family, &nh)?;
            let block = encode_attrs(codec.asn4, attrs, None)?;
            let mp_fixed = 5 + nh_bytes.len();
            let other = block.low.len() + block.high.len();
            let budget = room(
                max,
                UPDATE_FIXED_LEN + other + MP_ATTR_HEADER_LEN + mp_fixed,
            )?;
            for_each_chunk(prefixes, budget, |run, bytes| {
                let mp_len = mp_fixed + bytes;
                let attr_len = other + MP_ATTR_HEADER_LEN + mp_len;
                put_header(out, UPDATE_FIXED_LEN + attr_len, MSG_UPDATE);
                out.put_u16(0);
                out.put_u16(attr_len as u16);
                out.put_slice(&block.low);
                put_mp_attr_header(out, ATTR_MP_REACH, mp_len);
                out.put_u16(family.afi());
                out.put_u8(family.safi());
                out.put_u8(nh_bytes.len() as u8);
                out.put_slice(&nh_bytes);
                out.put_u8(0);
                for p in run {
                    put_prefix(out, p);
                }
                out.put_slice(&block.high);
            })
        }
    }
}

pub(super) fn encode_withdraw(
    codec: &SessionCodec,
    family: Family,
    prefixes: &[Prefix],
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    check_family(family, prefixes)?;
    let max = codec.max_message_len();
    match family {
        Family::Ipv4Unicast => for_each_chunk(prefixes, max - UPDATE_FIXED_LEN, |run, bytes| {
            put_header(out, UPDATE_FIXED_LEN + bytes, MSG_UPDATE);
            out.put_u16(bytes as u16);
            for p in run {
                put_prefix(out, p);
            }
            out.put_u16(0);
        }),
        Family::Ipv6Unicast => {
            let budget = max - UPDATE_FIXED_LEN - MP_ATTR_HEADER_LEN - 3;
            for_each_chunk(prefixes, budget, |run, bytes| {
                let attr_len = MP_ATTR_HEADER_LEN + 3 + bytes;
                put_header(out, UPDATE_FIXED_LEN + attr_len, MSG_UPDATE);
                out.put_u16(0);
                out.put_u16(attr_len as u16);
                put_mp_attr_header(out, ATTR_MP_UNREACH, 3 + bytes);
                out.put_u16(family.afi());
                out.put_u8(family.safi());
                for p in run {
                    put_prefix(out, p);
                }
            })
        }
    }
}

pub(super) fn encode_end_of_rib(family: Family, out: &mut BytesMut) {
    match family {
        Family::Ipv4Unicast => {
            put_header(out, UPDATE_FIXED_LEN, MSG_UPDATE);
            out.put_u32(0);
        }
        Family::Ipv6Unicast => {
            put_header(out, UPDATE_FIXED_LEN + 6, MSG_UPDATE);
            out.put_u16(0);
            out.put_u16(6);
            out.put_u8(FLAG_OPTIONAL);
            out.put_u8(ATTR_MP_UNREACH);
            out.put_u8(3);
            out.put_u16(family.afi());
            out.put_u8(family.safi());
        }
    }
}

/// The general form: one UPDATE carrying exactly what `u` says (must fit one message).
pub(super) fn encode_update(
    codec: &SessionCodec,
    u: &Update,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let mut withdrawn: Vec<u8> = Vec::new();
    let mut mp_unreach: Option<(Family, Vec<u8>)> = None;
    for un in &u.unreach {
        check_family(un.family, &un.prefixes)?;
        let buf = match un.family {
            Family::Ipv4Unicast => &mut withdrawn,
            Family::Ipv6Unicast => &mut mp_unreach.get_or_insert_with(|| (un.family, Vec::new())).1,
        };
        for p in &un.prefixes {
            put_prefix(buf, p);
        }
    }
    let mut nlri: Option<(Ipv4Addr, Vec<u8>)> = None;
    let mut mp_reach: Option<Vec<u8>> = None;
    for r in &u.reach {
        check_family(r.family, &r.prefixes)?;
        match (r.family, r.next_hop.addr) {
            (Family::Ipv4Unicast, IpAddr::V4(nh)) if nlri.is_none() => {
                let mut v = Vec::new();
                r.prefixes.iter().for_each(|p| put_prefix(&mut v, p));
                nlri = Some((nh, v));
            }
            _ if mp_reach.is_none() => {
                let nh = mp_next_hop(r.family, &r.next_hop)?;
                let mut v = Vec::with_capacity(5 + nh.len());
                v.extend_from_slice(&r.family.afi().to_be_bytes());
                v.push(r.family.safi());
                v.push(nh.len() as u8);
                v.extend_from_slice(&nh);
                v.push(0);
                r.prefixes.iter().for_each(|p| put_prefix(&mut v, p));
                mp_reach = Some(v);
            }
            _ => {
                return Err(EncodeError::invalid(
                    "UPDATE",
                    "more than one NLRI field or MP_REACH_NLRI needed",
                ))
            }
        }
    }
    let block = match &u.attrs {
        Some(a) => encode_attrs(codec.asn4, a, nlri.as_ref().map(|(nh, _)| *nh))?,
        None if nlri.is_some() || mp_reach.is_some() => {
            return Err(EncodeError::invalid(
                "UPDATE",
                "reachability without path attributes",
            ))
        }
        None => AttrBlock {
            low: Vec::new(),
            high: Vec::new(),
        },
    };
    let mut attr_bytes = block.low;
    if let Some(v) = &mp_reach {
        put_attr(&mut attr_bytes, FLAG_OPTIONAL, ATTR_MP_REACH, v)?;
    }
    if let Some((family, prefixes)) = &mp_unreach {
        let mut v = Vec::with_capacity(3 + prefixes.len());
        v.extend_from_slice(&family.afi().to_be_bytes());
        v.push(family.safi());
        v.extend_from_slice(prefixes);
        put_attr(&mut attr_bytes, FLAG_OPTIONAL, ATTR_MP_UNREACH, &v)?;
    }
    attr_bytes.extend_from_slice(&block.high);
    let nlri_bytes = nlri.map(|(_, v)| v).unwrap_or_default();
    let len = UPDATE_FIXED_LEN + withdrawn.len() + attr_bytes.len() + nlri_bytes.len();
    if len > codec.max_message_len() {
        return Err(EncodeError::invalid(
            "UPDATE",
            format!(
                "{len} bytes exceed the maximum message length {}",
                codec.max_message_len()
            ),
        ));
    }
    put_header(out, len, MSG_UPDATE);
    out.put_u16(withdrawn.len() as u16);
    out.put_slice(&withdrawn);
    out.put_u16(attr_bytes.len() as u16);
    out.put_slice(&attr_bytes);
    out.put_slice(&nlri_bytes);
    Ok(())
}
