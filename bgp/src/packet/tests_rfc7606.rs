//! RFC 7606 table tests: hand-built UPDATE bytes for each malformation class, asserting the
//! action the decoder reports (treat-as-withdraw, attribute-discard, session reset).
#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr};

use bytes::BytesMut;

use super::tests::codec;
use super::*;
use crate::types::{AsPath, AsSegment, ErrorAction, Update};

fn attr(flags: u8, code: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, code];
    if flags & 0x10 != 0 {
        v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        v.push(value.len() as u8);
    }
    v.extend_from_slice(value);
    v
}

fn raw_update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    let len = 23 + withdrawn.len() + attrs.len() + nlri.len();
    m.extend_from_slice(&(len as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    m.extend_from_slice(withdrawn);
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(attrs);
    m.extend_from_slice(nlri);
    m
}

fn origin() -> Vec<u8> {
    attr(0x40, 1, &[0])
}
fn as_path4() -> Vec<u8> {
    attr(0x40, 2, &[2, 1, 0, 0, 0xfd, 0xe9]) // SEQUENCE [65001]
}
fn next_hop() -> Vec<u8> {
    attr(0x40, 3, &[192, 0, 2, 1])
}
fn med(v: u32) -> Vec<u8> {
    attr(0x80, 4, &v.to_be_bytes())
}
const NLRI: [u8; 4] = [24, 198, 51, 100];

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn decode_one(asn4: bool, m: &[u8]) -> Result<Option<Update>, DecodeError> {
    let mut buf = BytesMut::from(m);
    let r = codec(asn4).decode(&mut buf);
    if r.is_ok() {
        assert!(buf.is_empty());
    }
    r.map(|o| {
        o.map(|msg| match msg {
            Message::Update(u) => u,
            other => panic!("not an UPDATE: {other:?}"),
        })
    })
}

fn update(asn4: bool, attrs: &[u8], nlri: &[u8]) -> Update {
    decode_one(asn4, &raw_update(&[], attrs, nlri))
        .expect("decodes")
        .expect("an UPDATE")
}

/// The single error the decoder reported: (type code, action).
fn only_error(u: &Update) -> (u8, ErrorAction) {
    assert_eq!(u.errors.len(), 1, "{:?}", u.errors);
    (u.errors[0].type_code, u.errors[0].action)
}

fn reset(m: &[u8]) -> (u8, u8) {
    match decode_one(true, m) {
        Err(e) => (e.notification.code, e.notification.subcode),
        Ok(u) => panic!("expected a session reset, got {u:?}"),
    }
}

#[test]
fn valid_baseline_has_no_errors() {
    let u = update(
        true,
        &cat(&[origin(), as_path4(), next_hop(), med(7)]),
        &NLRI,
    );
    assert!(u.errors.is_empty());
    assert_eq!(
        u.reach[0].prefixes,
        vec!["198.51.100.0/24".parse::<Prefix>().expect("p")]
    );
    assert_eq!(u.attrs.expect("attrs").med, Some(7));
}

#[test]
fn bad_origin_value_is_treat_as_withdraw() {
    let u = update(
        true,
        &cat(&[attr(0x40, 1, &[3]), as_path4(), next_hop(), med(7)]),
        &NLRI,
    );
    assert_eq!(only_error(&u), (1, ErrorAction::TreatAsWithdraw));
    assert!(u.treat_as_withdraw());
    // the NLRI is still reported (so the session can withdraw it) and later attributes parsed
    assert_eq!(u.reach.len(), 1);
    assert_eq!(u.attrs.expect("attrs").med, Some(7));
}

#[test]
fn origin_with_wrong_length_does_not_desync_the_rest() {
    let u = update(
        true,
        &cat(&[attr(0x40, 1, &[0, 0]), as_path4(), next_hop(), med(9)]),
        &NLRI,
    );
    assert_eq!(only_error(&u), (1, ErrorAction::TreatAsWithdraw));
    let a = u.attrs.expect("attrs");
    assert_eq!(a.med, Some(9));
    assert_eq!(a.as_path, AsPath::from_sequence(vec![65001]));
}

#[test]
fn as_path_segment_length_lying_is_treat_as_withdraw() {
    // SEQUENCE claiming 3 ASNs, carrying 1
    let bad = attr(0x40, 2, &[2, 3, 0, 0, 0xfd, 0xe9]);
    let u = update(true, &cat(&[origin(), bad, next_hop(), med(1)]), &NLRI);
    assert_eq!(only_error(&u), (2, ErrorAction::TreatAsWithdraw));
    assert_eq!(u.attrs.expect("attrs").med, Some(1));
    // zero-length segment and undefined segment type
    for v in [vec![2u8, 0], vec![9u8, 1, 0, 0, 0, 1]] {
        let u = update(
            true,
            &cat(&[origin(), attr(0x40, 2, &v), next_hop()]),
            &NLRI,
        );
        assert_eq!(only_error(&u), (2, ErrorAction::TreatAsWithdraw));
    }
}

#[test]
fn confederation_segments_are_valid() {
    let path = attr(0x40, 2, &[3, 1, 0, 0, 0xfd, 0xea, 2, 1, 0, 0, 0xfd, 0xe9]);
    let u = update(true, &cat(&[origin(), path, next_hop()]), &NLRI);
    assert!(u.errors.is_empty(), "{:?}", u.errors);
    assert_eq!(
        u.attrs.expect("attrs").as_path.segments,
        vec![
            AsSegment::ConfedSequence(vec![65002]),
            AsSegment::Sequence(vec![65001])
        ]
    );
}

#[test]
fn next_hop_wrong_length_is_treat_as_withdraw() {
    let bad = attr(0x40, 3, &[192, 0, 2, 1, 0]);
    let u = update(true, &cat(&[origin(), as_path4(), bad, med(3)]), &NLRI);
    assert_eq!(only_error(&u), (3, ErrorAction::TreatAsWithdraw));
    assert_eq!(u.attrs.expect("attrs").med, Some(3));
}

#[test]
fn malformed_next_hop_is_ignored_without_nlri_field() {
    // MP_REACH (IPv6) only: NEXT_HOP is meaningless (RFC 4760 3) and its error irrelevant.
    let mut mp = vec![0, 2, 1, 16];
    mp.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .expect("v6")
            .octets(),
    );
    mp.extend_from_slice(&[0, 32, 0x20, 0x01, 0x0d, 0xb8]);
    let u = update(
        true,
        &cat(&[
            origin(),
            as_path4(),
            attr(0x40, 3, &[1, 2]),
            attr(0x80, 14, &mp),
        ]),
        &[],
    );
    assert!(u.errors.is_empty(), "{:?}", u.errors);
    assert_eq!(u.reach[0].family, Family::Ipv6Unicast);
}

#[test]
fn flags_conflicting_with_type_follow_the_attribute_action() {
    // ORIGIN marked optional
    let u = update(
        true,
        &cat(&[attr(0xc0, 1, &[0]), as_path4(), next_hop()]),
        &NLRI,
    );
    assert_eq!(only_error(&u), (1, ErrorAction::TreatAsWithdraw));
    // MED marked transitive
    let u = update(
        true,
        &cat(&[
            origin(),
            as_path4(),
            next_hop(),
            attr(0xc0, 4, &[0, 0, 0, 1]),
        ]),
        &NLRI,
    );
    assert_eq!(only_error(&u), (4, ErrorAction::TreatAsWithdraw));
    // AGGREGATOR marked well-known: attribute-discard
    let agg = attr(0x40, 7, &[0, 0, 0xfd, 0xe9, 192, 0, 2, 1]);
    let u = update(true, &cat(&[origin(), as_path4(), next_hop(), agg]), &NLRI);
    assert_eq!(only_error(&u), (7, ErrorAction::AttributeDiscard));
    // the Partial bit on a well-known attribute is tolerated
    let u = update(
        true,
        &cat(&[attr(0x60, 1, &[0]), as_path4(), next_hop()]),
        &NLRI,
    );
    assert!(u.errors.is_empty());
}

#[test]
fn missing_mandatory_attributes_with_nlri() {
    let u = update(true, &cat(&[origin(), next_hop()]), &NLRI);
    assert_eq!(only_error(&u), (2, ErrorAction::TreatAsWithdraw));
    let u = update(true, &cat(&[as_path4(), next_hop()]), &NLRI);
    assert_eq!(only_error(&u), (1, ErrorAction::TreatAsWithdraw));
    let u = update(true, &cat(&[origin(), as_path4()]), &NLRI);
    assert_eq!(only_error(&u), (3, ErrorAction::TreatAsWithdraw));
    // no attributes at all with NLRI
    let u = update(true, &[], &NLRI);
    assert!(u.treat_as_withdraw());
    assert_eq!(u.errors.len(), 3);
    // without NLRI nothing is mandatory
    let u = update(true, &cat(&[med(1)]), &[]);
    assert!(u.errors.is_empty());
}

#[test]
fn malformed_communities_are_treat_as_withdraw() {
    for value in [vec![0u8, 0, 0, 1, 2], vec![]] {
        let u = update(
            true,
            &cat(&[
                origin(),
                as_path4(),
                next_hop(),
                attr(0xc0, 8, &value),
                med(4),
            ]),
            &NLRI,
        );
        assert_eq!(only_error(&u), (8, ErrorAction::TreatAsWithdraw));
        assert_eq!(u.attrs.expect("attrs").med, Some(4));
    }
    let u = update(
        true,
        &cat(&[origin(), as_path4(), next_hop(), attr(0xc0, 32, &[0; 13])]),
        &NLRI,
    );
    assert_eq!(only_error(&u), (32, ErrorAction::TreatAsWithdraw));
    for (code, value) in [(9u8, vec![1u8, 2, 3, 4, 5, 6, 7, 8]), (10, vec![1, 2, 3])] {
        let u = update(
            true,
            &cat(&[origin(), as_path4(), next_hop(), attr(0x80, code, &value)]),
            &NLRI,
        );
        assert_eq!(only_error(&u), (code, ErrorAction::TreatAsWithdraw));
    }
    let u = update(
        true,
        &cat(&[origin(), as_path4(), next_hop(), attr(0x40, 5, &[0, 0, 1])]),
        &NLRI,
    );
    assert_eq!(only_error(&u), (5, ErrorAction::TreatAsWithdraw));
}

#[test]
fn malformed_aggregator_and_atomic_aggregate_are_discarded() {
    let agg = attr(0xc0, 7, &[0, 0, 0xfd, 0xe9, 192]);
    let u = update(
        true,
        &cat(&[origin(), as_path4(), next_hop(), agg, med(5)]),
        &NLRI,
    );
    assert_eq!(only_error(&u), (7, ErrorAction::AttributeDiscard));
    assert!(!u.treat_as_withdraw());
    let a = u.attrs.expect("attrs");
    assert_eq!((a.aggregator, a.med), (None, Some(5)));
    // a 6-byte (2-octet) AGGREGATOR on a 4-octet session is malformed
    let agg2 = attr(0xc0, 7, &[0xfd, 0xe9, 192, 0, 2, 1]);
    let u = update(true, &cat(&[origin(), as_path4(), next_hop(), agg2]), &NLRI);
    assert_eq!(only_error(&u), (7, ErrorAction::AttributeDiscard));
    let u = update(
        true,
        &cat(&[origin(), as_path4(), next_hop(), attr(0x40, 6, &[1])]),
        &NLRI,
    );
    assert_eq!(only_error(&u), (6, ErrorAction::AttributeDiscard));
    assert!(!u.attrs.expect("attrs").atomic_aggregate);
}

#[test]
fn duplicate_attribute_keeps_the_first() {
    let u = update(
        true,
        &cat(&[origin(), as_path4(), next_hop(), med(1), med(2)]),
        &NLRI,
    );
    assert_eq!(only_error(&u), (4, ErrorAction::AttributeDiscard));
    assert_eq!(u.attrs.expect("attrs").med, Some(1));
}

#[test]
fn duplicate_mp_reach_is_session_reset() {
    let mp = attr(0x80, 15, &[0, 2, 1]);
    let m = raw_update(&[], &cat(&[mp.clone(), mp]), &[]);
    assert_eq!(reset(&m), (3, 1));
}

#[test]
fn bad_nlri_prefix_length_is_session_reset() {
    let m = raw_update(
        &[],
        &cat(&[origin(), as_path4(), next_hop()]),
        &[33, 10, 0, 0, 0, 0],
    );
    assert_eq!(reset(&m), (3, 10));
    // truncated prefix in the withdrawn routes
    let m = raw_update(&[24, 10, 0], &[], &[]);
    assert_eq!(reset(&m), (3, 10));
}

#[test]
fn mp_reach_malformations_are_session_reset() {
    // NLRI inside MP_REACH claims /64 but carries 2 bytes
    let mut mp = vec![0, 2, 1, 16];
    mp.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    mp.extend_from_slice(&[0, 64, 0x20, 0x01]);
    let m = raw_update(&[], &cat(&[origin(), as_path4(), attr(0x80, 14, &mp)]), &[]);
    assert_eq!(reset(&m), (3, 10));
    // IPv6 next hop length 4
    let m = raw_update(
        &[],
        &cat(&[
            origin(),
            as_path4(),
            attr(0x80, 14, &[0, 2, 1, 4, 1, 2, 3, 4, 0]),
        ]),
        &[],
    );
    assert_eq!(reset(&m), (3, 1));
    // next hop length larger than the attribute
    let m = raw_update(
        &[],
        &cat(&[origin(), as_path4(), attr(0x80, 14, &[0, 2, 1, 16, 1, 2])]),
        &[],
    );
    assert_eq!(reset(&m), (3, 1));
    // MP_REACH whose attribute length overruns the path attribute section
    let mut attrs = cat(&[origin(), as_path4()]);
    attrs.extend_from_slice(&[0x80, 14, 40, 0, 2, 1]);
    let m = raw_update(&[], &attrs, &[]);
    assert_eq!(reset(&m), (3, 1));
    // MP_UNREACH truncated header
    let m = raw_update(&[], &attr(0x80, 15, &[0, 2]), &[]);
    assert_eq!(reset(&m), (3, 1));
}

#[test]
fn attribute_overrunning_the_section_is_treat_as_withdraw() {
    // MED claims 8 bytes, 4 remain in the section (RFC 7606 4)
    let mut attrs = cat(&[origin(), as_path4(), next_hop()]);
    attrs.extend_from_slice(&[0x80, 4, 8, 0, 0, 0, 1]);
    let u = update(true, &attrs, &NLRI);
    assert_eq!(only_error(&u), (4, ErrorAction::TreatAsWithdraw));
    assert_eq!(u.reach.len(), 1);
    // fewer than 3 bytes left for an attribute header
    let mut attrs = cat(&[origin(), as_path4(), next_hop()]);
    attrs.extend_from_slice(&[0x80, 4]);
    let u = update(true, &attrs, &NLRI);
    assert_eq!(only_error(&u), (0, ErrorAction::TreatAsWithdraw));
}

#[test]
fn section_lengths_overrunning_the_message_are_session_reset() {
    let mut m = raw_update(&[], &[], &[]);
    m[19..21].copy_from_slice(&5u16.to_be_bytes()); // withdrawn length 5, nothing there
    assert_eq!(reset(&m), (3, 1));
    let mut m = raw_update(&[], &[], &[]);
    m[21..23].copy_from_slice(&5u16.to_be_bytes());
    assert_eq!(reset(&m), (3, 1));
}

#[test]
fn as4_attributes_on_two_octet_session() {
    // AS_PATH [65001, AS_TRANS] + AS4_PATH [65001, 4200000000]
    let as_path2 = attr(0x40, 2, &[2, 2, 0xfd, 0xe9, 0x5b, 0xa0]);
    let as4 = attr(0xc0, 17, &[2, 2, 0, 0, 0xfd, 0xe9, 0xfa, 0x56, 0xea, 0x00]);
    let u = update(
        false,
        &cat(&[origin(), as_path2.clone(), next_hop(), as4]),
        &NLRI,
    );
    assert!(u.errors.is_empty(), "{:?}", u.errors);
    assert_eq!(
        u.attrs.expect("attrs").as_path,
        AsPath::from_sequence(vec![65001, 4_200_000_000])
    );
    // malformed AS4_PATH: attribute-discard, AS_PATH used as is
    let bad4 = attr(0xc0, 17, &[2, 5, 0, 0, 0xfd, 0xe9]);
    let u = update(false, &cat(&[origin(), as_path2, next_hop(), bad4]), &NLRI);
    assert_eq!(only_error(&u), (17, ErrorAction::AttributeDiscard));
    assert_eq!(
        u.attrs.expect("attrs").as_path,
        AsPath::from_sequence(vec![65001, 23456])
    );
    // AS4_PATH between two 4-octet speakers is discarded
    let as4 = attr(0xc0, 17, &[2, 1, 0, 0, 0, 1]);
    let u = update(true, &cat(&[origin(), as_path4(), next_hop(), as4]), &NLRI);
    assert_eq!(only_error(&u), (17, ErrorAction::AttributeDiscard));
    // AGGREGATOR AS_TRANS + AS4_AGGREGATOR
    let agg = attr(0xc0, 7, &[0x5b, 0xa0, 192, 0, 2, 1]);
    let agg4 = attr(0xc0, 18, &[0xfa, 0x56, 0xea, 0x00, 192, 0, 2, 1]);
    let path = attr(0x40, 2, &[2, 1, 0xfd, 0xe9]);
    let u = update(false, &cat(&[origin(), path, next_hop(), agg, agg4]), &NLRI);
    assert!(u.errors.is_empty());
    assert_eq!(
        u.attrs.expect("attrs").aggregator,
        Some((4_200_000_000, Ipv4Addr::new(192, 0, 2, 1)))
    );
}

#[test]
fn non_unicast_families_are_ignored() {
    // MP_REACH for IPv4 multicast (SAFI 2) only: skipped entirely, not an End-of-RIB
    let mp = attr(0x80, 14, &[0, 1, 2, 4, 192, 0, 2, 1, 0, 24, 10, 0, 0]);
    let m = raw_update(&[], &cat(&[origin(), as_path4(), mp.clone()]), &[]);
    assert_eq!(decode_one(true, &m), Ok(None));
    let unreach = attr(0x80, 15, &[0, 2, 128]);
    assert_eq!(decode_one(true, &raw_update(&[], &unreach, &[])), Ok(None));
    // alongside unicast NLRI: the unicast part is used
    let u = update(true, &cat(&[origin(), as_path4(), next_hop(), mp]), &NLRI);
    assert!(u.errors.is_empty());
    assert_eq!(u.reach.len(), 1);
    assert_eq!(
        u.reach[0].next_hop.addr,
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    );
}

#[test]
fn unknown_attribute_kept_with_flags_including_extended_length_values() {
    let value = vec![7u8; 300];
    let unknown = attr(0xf0, 200, &value); // optional transitive partial, extended length
    let u = update(
        true,
        &cat(&[origin(), as_path4(), next_hop(), unknown]),
        &NLRI,
    );
    assert!(u.errors.is_empty());
    let a = u.attrs.expect("attrs");
    assert_eq!(a.unknown.len(), 1);
    assert_eq!((a.unknown[0].flags, a.unknown[0].type_code), (0xe0, 200));
    assert_eq!(a.unknown[0].value, value);
    // and it is written back identically
    let c = codec(true);
    let mut buf = BytesMut::new();
    let mut attrs = a.clone();
    attrs.next_hop = Some(crate::types::NextHop::new(IpAddr::V4(Ipv4Addr::new(
        192, 0, 2, 1,
    ))));
    c.encode_announce(Family::Ipv4Unicast, &attrs, &u.reach[0].prefixes, &mut buf)
        .expect("encode");
    let again = decode_one(true, &buf).expect("ok").expect("update");
    assert_eq!(again.attrs.expect("attrs").unknown, a.unknown);
}
