//! Codec tests: round trips of every message kind, UPDATE splitting, framing errors and a
//! never-panics property test over mutated valid messages.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;
use crate::types::{
    AsPath, AsSegment, Capabilities, GracefulRestart, LargeCommunity, NextHop, Open, Origin,
    RawAttribute, Reach, Unreach, Update,
};

pub(super) fn codec(asn4: bool) -> SessionCodec {
    SessionCodec {
        asn4,
        extended_message: false,
    }
}

fn decode_all(c: &SessionCodec, bytes: &[u8]) -> Vec<Message> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(m) = c.decode(&mut buf).expect("decode") {
        out.push(m);
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    out
}

fn round_trip(c: &SessionCodec, msg: &Message) -> Message {
    let mut buf = BytesMut::new();
    c.encode(msg, &mut buf).expect("encode");
    let mut msgs = decode_all(c, &buf);
    assert_eq!(msgs.len(), 1);
    msgs.pop().expect("one message")
}

fn p(s: &str) -> Prefix {
    s.parse().expect("prefix")
}

pub(super) fn full_attrs() -> PathAttributes {
    PathAttributes {
        origin: Origin::Egp,
        as_path: AsPath {
            segments: vec![
                AsSegment::Sequence(vec![65001, 65002]),
                AsSegment::Set(vec![65010, 65011]),
            ],
        },
        next_hop: None,
        med: Some(50),
        local_pref: Some(200),
        atomic_aggregate: true,
        aggregator: Some((65001, Ipv4Addr::new(192, 0, 2, 9))),
        communities: vec![0xfde8_0001, 0xffff_ff01],
        large_communities: vec![LargeCommunity {
            global_admin: 4_200_000_000,
            local_data1: 1,
            local_data2: 2,
        }],
        originator_id: Some(Ipv4Addr::new(192, 0, 2, 1)),
        cluster_list: vec![Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 3)],
        unknown: vec![RawAttribute {
            flags: RawAttribute::FLAG_OPTIONAL
                | RawAttribute::FLAG_TRANSITIVE
                | RawAttribute::FLAG_PARTIAL,
            type_code: 99,
            value: vec![1, 2, 3, 4, 5],
        }],
    }
}

#[test]
fn keepalive_notification_route_refresh_round_trip() {
    let c = codec(true);
    for msg in [
        Message::Keepalive,
        Message::Notification(Notification::with_data(6, 2, b"bye".to_vec())),
        Message::Notification(Notification::new(4, 0)),
        Message::RouteRefresh(RouteRefresh {
            family: Family::Ipv6Unicast,
            subtype: 1,
        }),
        Message::RouteRefresh(RouteRefresh {
            family: Family::Ipv4Unicast,
            subtype: 0,
        }),
    ] {
        assert_eq!(round_trip(&c, &msg), msg);
    }
}

fn open_with_all_caps(asn: u32) -> Open {
    Open {
        version: 4,
        asn,
        hold_time: 90,
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: Capabilities {
            four_octet_asn: Some(asn),
            multiprotocol: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            route_refresh: true,
            enhanced_route_refresh: true,
            extended_next_hop: vec![Family::Ipv4Unicast],
            graceful_restart: Some(GracefulRestart {
                restart_state: true,
                notification: true,
                restart_time: 120,
                families: vec![(Family::Ipv4Unicast, true), (Family::Ipv6Unicast, false)],
            }),
            extended_message: true,
            unknown: vec![(73, b"\x04node\x00".to_vec()), (200, vec![])],
        },
    }
}

#[test]
fn open_round_trip_with_all_capabilities() {
    let c = codec(false);
    for asn in [65001, 4_200_000_001] {
        let open = open_with_all_caps(asn);
        assert_eq!(
            round_trip(&c, &Message::Open(open.clone())),
            Message::Open(open)
        );
    }
}

#[test]
fn open_with_large_asn_puts_as_trans_in_two_byte_field() {
    let mut buf = BytesMut::new();
    codec(true)
        .encode(&Message::Open(open_with_all_caps(4_200_000_001)), &mut buf)
        .expect("encode");
    assert_eq!(&buf[20..22], &AS_TRANS_BYTES);
}

const AS_TRANS_BYTES: [u8; 2] = crate::types::AS_TRANS.to_be_bytes();

/// Raw OPEN with the given fields and capability bytes.
fn raw_open(version: u8, asn: u16, hold: u16, id: [u8; 4], caps: &[u8]) -> Vec<u8> {
    let mut v = vec![0xff; 16];
    let params_len = if caps.is_empty() { 0 } else { caps.len() + 2 };
    v.extend_from_slice(&((29 + params_len) as u16).to_be_bytes());
    v.push(1);
    v.push(version);
    v.extend_from_slice(&asn.to_be_bytes());
    v.extend_from_slice(&hold.to_be_bytes());
    v.extend_from_slice(&id);
    v.push(params_len as u8);
    if !caps.is_empty() {
        v.push(2);
        v.push(caps.len() as u8);
        v.extend_from_slice(caps);
    }
    v
}

fn decode_err(c: &SessionCodec, bytes: &[u8]) -> Notification {
    let mut buf = BytesMut::from(bytes);
    match c.decode(&mut buf) {
        Err(e) => e.notification,
        Ok(m) => panic!("expected an error, got {m:?}"),
    }
}

#[test]
fn open_errors() {
    let c = codec(false);
    let n = decode_err(&c, &raw_open(3, 65001, 90, [192, 0, 2, 1], &[]));
    assert_eq!((n.code, n.subcode, n.data), (2, 1, vec![0, 4]));
    for hold in [1, 2] {
        let n = decode_err(&c, &raw_open(4, 65001, hold, [192, 0, 2, 1], &[]));
        assert_eq!((n.code, n.subcode), (2, 6));
    }
    let n = decode_err(&c, &raw_open(4, 65001, 90, [0, 0, 0, 0], &[]));
    assert_eq!((n.code, n.subcode), (2, 3));
    // hold time 0 and 3 are fine
    for hold in [0, 3] {
        let msgs = decode_all(&c, &raw_open(4, 65001, hold, [192, 0, 2, 1], &[]));
        assert!(matches!(&msgs[..], [Message::Open(o)] if o.hold_time == hold && o.asn == 65001));
    }
}

#[test]
fn open_cisco_route_refresh_and_asn_from_capability() {
    // Cisco route refresh (128) + 4-octet AS 4200000001, 2-byte field AS_TRANS
    let caps = [128, 0, 65, 4, 0xfa, 0x56, 0xea, 0x01];
    let msgs = decode_all(
        &codec(false),
        &raw_open(4, 23456, 90, [192, 0, 2, 1], &caps),
    );
    let [Message::Open(o)] = &msgs[..] else {
        panic!("{msgs:?}")
    };
    assert!(o.capabilities.route_refresh);
    assert_eq!(o.asn, 4_200_000_001);
    assert_eq!(o.capabilities.four_octet_asn, Some(4_200_000_001));
    assert!(o.capabilities.unknown.is_empty());
}

fn one_update(c: &SessionCodec, bytes: &[u8]) -> Update {
    match &decode_all(c, bytes)[..] {
        [Message::Update(u)] => u.clone(),
        other => panic!("expected one UPDATE, got {other:?}"),
    }
}

fn update_round_trip(c: &SessionCodec, u: &Update) {
    let mut buf = BytesMut::new();
    c.encode(&Message::Update(u.clone()), &mut buf)
        .expect("encode");
    assert_eq!(&one_update(c, &buf), u);
}

#[test]
fn update_v4_round_trip_general_and_announce() {
    let c = codec(true);
    let attrs = full_attrs();
    let prefixes = vec![
        p("10.0.0.0/8"),
        p("198.51.100.0/24"),
        p("0.0.0.0/0"),
        p("203.0.113.7/32"),
    ];
    let nh = NextHop::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254)));
    let u = Update {
        unreach: vec![Unreach {
            family: Family::Ipv4Unicast,
            prefixes: vec![p("10.1.0.0/16")],
        }],
        attrs: Some(attrs.clone()),
        reach: vec![Reach {
            family: Family::Ipv4Unicast,
            next_hop: nh,
            prefixes: prefixes.clone(),
        }],
        errors: vec![],
    };
    update_round_trip(&c, &u);

    let mut buf = BytesMut::new();
    let with_nh = PathAttributes {
        next_hop: Some(nh),
        ..attrs.clone()
    };
    assert_eq!(
        c.encode_announce(Family::Ipv4Unicast, &with_nh, &prefixes, &mut buf),
        Ok(1)
    );
    let got = one_update(&c, &buf);
    assert_eq!(got.attrs, Some(attrs));
    assert_eq!(got.reach, u.reach);
    assert!(got.errors.is_empty());
}

#[test]
fn update_v6_with_link_local_round_trip() {
    let c = codec(true);
    let nh = NextHop {
        addr: IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().expect("v6")),
        link_local: Some("fe80::1".parse().expect("ll")),
    };
    let prefixes = vec![p("2001:db8:1::/48"), p("2001:db8:2:3::/64"), p("::/0")];
    let attrs = PathAttributes {
        next_hop: Some(nh),
        ..full_attrs()
    };
    let mut buf = BytesMut::new();
    assert_eq!(
        c.encode_announce(Family::Ipv6Unicast, &attrs, &prefixes, &mut buf),
        Ok(1)
    );
    let u = one_update(&c, &buf);
    assert_eq!(
        u.reach,
        vec![Reach {
            family: Family::Ipv6Unicast,
            next_hop: nh,
            prefixes
        }]
    );
    assert_eq!(u.attrs, Some(full_attrs()));
    assert!(u.errors.is_empty());
    // general form too, with an IPv6 withdrawal alongside
    let mut general = u.clone();
    general.unreach = vec![Unreach {
        family: Family::Ipv6Unicast,
        prefixes: vec![p("2001:db8:9::/48")],
    }];
    update_round_trip(&c, &general);
}

#[test]
fn update_v4_over_v6_next_hop_round_trip() {
    let c = codec(true);
    let nh = NextHop::new(IpAddr::V6("2001:db8::7".parse::<Ipv6Addr>().expect("v6")));
    let prefixes = vec![p("198.51.100.0/24"), p("10.2.0.0/16")];
    let attrs = PathAttributes {
        next_hop: Some(nh),
        ..PathAttributes::default()
    };
    let mut buf = BytesMut::new();
    c.encode_announce(Family::Ipv4Unicast, &attrs, &prefixes, &mut buf)
        .expect("encode");
    let u = one_update(&c, &buf);
    assert_eq!(
        u.reach,
        vec![Reach {
            family: Family::Ipv4Unicast,
            next_hop: nh,
            prefixes
        }]
    );
    assert!(u.errors.is_empty(), "{:?}", u.errors);
}

#[test]
fn withdraws_and_end_of_rib_round_trip() {
    let c = codec(true);
    for (family, prefixes) in [
        (
            Family::Ipv4Unicast,
            vec![p("10.0.0.0/8"), p("192.0.2.128/25")],
        ),
        (
            Family::Ipv6Unicast,
            vec![p("2001:db8::/32"), p("2001:db8:ff::1/128")],
        ),
    ] {
        let mut buf = BytesMut::new();
        assert_eq!(c.encode_withdraw(family, &prefixes, &mut buf), Ok(1));
        let u = one_update(&c, &buf);
        assert_eq!(u.unreach, vec![Unreach { family, prefixes }]);
        assert!(u.reach.is_empty() && u.attrs.is_none() && u.errors.is_empty());
        assert_eq!(u.end_of_rib(), None);

        let mut buf = BytesMut::new();
        c.encode_end_of_rib(family, &mut buf).expect("eor");
        let eor = one_update(&c, &buf);
        assert_eq!(eor.end_of_rib(), Some(family));
        update_round_trip(&c, &eor);
    }
}

#[test]
fn two_byte_session_as_trans_and_as4_path_merge() {
    let c = codec(false);
    let original = AsPath {
        segments: vec![
            AsSegment::Sequence(vec![65001, 4_200_000_000, 65002, 4_200_000_001]),
            AsSegment::Set(vec![65010, 4_200_000_002]),
        ],
    };
    let attrs = PathAttributes {
        as_path: original.clone(),
        aggregator: Some((4_200_000_005, Ipv4Addr::new(192, 0, 2, 5))),
        next_hop: Some(NextHop::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254)))),
        ..PathAttributes::default()
    };
    let mut buf = BytesMut::new();
    c.encode_announce(Family::Ipv4Unicast, &attrs, &[p("10.0.0.0/8")], &mut buf)
        .expect("encode");
    // The AS_PATH on the wire has AS_TRANS (read it with a 2-byte path parser, no merge).
    let wire = &buf[23..];
    let mut found_as_trans = false;
    let mut rest = wire;
    while let [flags, code, rest2 @ ..] = rest {
        let (len, hdr) = if flags & 0x10 != 0 {
            (u16::from_be_bytes([rest2[0], rest2[1]]) as usize, 2)
        } else {
            (rest2[0] as usize, 1)
        };
        if *code == 2 {
            let path = update_decode::parse_as_path(&rest2[hdr..hdr + len], 2).expect("as path");
            found_as_trans = path.contains(u32::from(crate::types::AS_TRANS));
            assert!(!path.contains(4_200_000_000));
            break;
        }
        rest = &rest2[hdr + len..];
    }
    assert!(found_as_trans);
    let u = one_update(&c, &buf);
    let got = u.attrs.expect("attrs");
    assert_eq!(got.as_path, original);
    assert_eq!(got.aggregator, attrs.aggregator);
    assert!(u.errors.is_empty(), "{:?}", u.errors);
}

#[test]
fn as4_path_merge_keeps_leading_two_byte_asns() {
    // RFC 6793 4.2.3: AS_PATH longer than AS4_PATH (an OLD speaker prepended 65100).
    let as_path = AsPath::from_sequence(vec![65100, 65001, 23456]);
    let as4 = AsPath::from_sequence(vec![65001, 4_200_000_000]);
    assert_eq!(
        update_decode::merge_as4_path(&as_path, &as4),
        AsPath::from_sequence(vec![65100, 65001, 4_200_000_000])
    );
    // AS4_PATH longer than AS_PATH: ignored
    let short = AsPath::from_sequence(vec![23456]);
    assert_eq!(update_decode::merge_as4_path(&short, &as4), short);
}

#[test]
fn splitting_10k_prefixes_stays_within_4096_and_round_trips() {
    let c = codec(true);
    let v4: Vec<Prefix> = (0..10_000u32)
        .map(|i| {
            Prefix::V4(
                ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).expect("net"),
            )
        })
        .collect();
    let v6: Vec<Prefix> = (0..10_000u32)
        .map(|i| {
            let a = Ipv6Addr::from((0x2001_0db8u128 << 96) | (u128::from(i) << 64));
            Prefix::V6(ipnet::Ipv6Net::new(a, 64).expect("net"))
        })
        .collect();
    for (family, prefixes, nh) in [
        (
            Family::Ipv4Unicast,
            &v4,
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        ),
        (
            Family::Ipv6Unicast,
            &v6,
            IpAddr::V6("2001:db8::1".parse().expect("v6")),
        ),
    ] {
        let attrs = PathAttributes {
            next_hop: Some(NextHop::new(nh)),
            ..full_attrs()
        };
        for withdraw in [false, true] {
            let mut buf = BytesMut::new();
            let n = if withdraw {
                c.encode_withdraw(family, prefixes, &mut buf)
            } else {
                c.encode_announce(family, &attrs, prefixes, &mut buf)
            }
            .expect("encode");
            assert!(n > 1, "{family} split into {n}");
            let msgs = decode_all(&c, &buf);
            assert_eq!(msgs.len(), n);
            let mut got = Vec::new();
            let mut off = 0;
            for m in &msgs {
                let len = u16::from_be_bytes([buf[off + 16], buf[off + 17]]) as usize;
                assert!(len <= 4096);
                off += len;
                let Message::Update(u) = m else {
                    panic!("{m:?}")
                };
                assert!(u.errors.is_empty());
                if withdraw {
                    got.extend(u.unreach.iter().flat_map(|r| r.prefixes.clone()));
                } else {
                    assert_eq!(u.attrs.as_ref(), Some(&full_attrs()));
                    got.extend(u.reach.iter().flat_map(|r| r.prefixes.clone()));
                }
            }
            assert_eq!(&got, prefixes);
        }
    }
}

#[test]
fn extended_message_allows_bigger_updates() {
    let c = SessionCodec {
        asn4: true,
        extended_message: true,
    };
    // 20k /24s = 80000 bytes of withdrawn routes: two messages of up to 65535 bytes
    let prefixes: Vec<Prefix> = (0..20_000u32)
        .map(|i| {
            Prefix::V4(
                ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).expect("net"),
            )
        })
        .collect();
    let mut buf = BytesMut::new();
    let n = c
        .encode_withdraw(Family::Ipv4Unicast, &prefixes, &mut buf)
        .expect("encode");
    assert_eq!(n, 2);
    let first_len = u16::from_be_bytes([buf[16], buf[17]]) as usize;
    assert!(first_len > 4096);
    assert_eq!(decode_all(&c, &buf).len(), n);
    // a session without extended messages rejects it
    let n = decode_err(&codec(true), &buf);
    assert_eq!((n.code, n.subcode), (1, 2));
}

#[test]
fn framing_errors() {
    let c = codec(true);
    let mut ka = BytesMut::new();
    c.encode(&Message::Keepalive, &mut ka).expect("encode");

    // partial message: nothing consumed
    let mut buf = BytesMut::from(&ka[..10]);
    assert_eq!(c.decode(&mut buf), Ok(None));
    assert_eq!(buf.len(), 10);

    let mut bad_marker = ka.to_vec();
    bad_marker[3] = 0;
    let n = decode_err(&c, &bad_marker);
    assert_eq!((n.code, n.subcode), (1, 1));

    for len in [18u16, 4097, 0xffff] {
        let mut m = ka.to_vec();
        m[16..18].copy_from_slice(&len.to_be_bytes());
        let n = decode_err(&c, &m);
        assert_eq!(
            (n.code, n.subcode, n.data),
            (1, 2, len.to_be_bytes().to_vec())
        );
    }
    // KEEPALIVE longer than 19
    let mut m = ka.to_vec();
    m[16..18].copy_from_slice(&20u16.to_be_bytes());
    m.push(0);
    assert_eq!(decode_err(&c, &m).subcode, 2);
    // UPDATE shorter than 23, OPEN shorter than 29
    for (t, len) in [(2u8, 22u16), (1, 28), (3, 20)] {
        let mut m = ka.to_vec();
        m[16..18].copy_from_slice(&len.to_be_bytes());
        m[18] = t;
        let n = decode_err(&c, &m);
        assert_eq!(
            (n.code, n.subcode, n.data),
            (1, 2, len.to_be_bytes().to_vec())
        );
    }
    // unknown type, reported before the rest of the message arrives
    let mut m = ka.to_vec();
    m[16..18].copy_from_slice(&100u16.to_be_bytes());
    m[18] = 9;
    let n = decode_err(&c, &m);
    assert_eq!((n.code, n.subcode, n.data), (1, 3, vec![9]));
}

#[test]
fn decodes_back_to_back_messages_and_waits_for_the_rest() {
    let c = codec(true);
    let mut wire = BytesMut::new();
    c.encode(&Message::Keepalive, &mut wire).expect("ka");
    c.encode_end_of_rib(Family::Ipv6Unicast, &mut wire)
        .expect("eor");
    c.encode(&Message::Keepalive, &mut wire).expect("ka");
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for b in wire.iter() {
        buf.extend_from_slice(&[*b]);
        while let Some(m) = c.decode(&mut buf).expect("decode") {
            got.push(m.kind());
        }
    }
    assert_eq!(got, vec!["keepalive", "update", "keepalive"]);
}

#[test]
fn route_refresh_for_unknown_family_is_skipped() {
    let c = codec(true);
    let mut wire = vec![0xff; 16];
    wire.extend_from_slice(&[0, 23, 5, 0, 1, 0, 128]); // IPv4 / SAFI 128
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(c.decode(&mut buf), Ok(None));
    assert!(buf.is_empty());
}

/// Timing of the benchmark-scale work (run with `--ignored --nocapture`, release mode).
#[test]
#[ignore]
fn timing_100k_prefixes() {
    let c = codec(true);
    let v4: Vec<Prefix> = (0..100_000u32)
        .map(|i| {
            Prefix::V4(
                ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).expect("net"),
            )
        })
        .collect();
    let attrs = PathAttributes {
        next_hop: Some(NextHop::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))),
        ..full_attrs()
    };
    let t = std::time::Instant::now();
    let mut buf = BytesMut::new();
    let n = c
        .encode_announce(Family::Ipv4Unicast, &attrs, &v4, &mut buf)
        .expect("encode");
    let enc = t.elapsed();
    let t = std::time::Instant::now();
    let msgs = decode_all(&c, &buf);
    let dec = t.elapsed();
    assert_eq!(msgs.len(), n);
    println!(
        "100k IPv4 prefixes: encode {enc:?} ({n} msgs, {} bytes), decode {dec:?}",
        buf.len()
    );

    let v6: Vec<Prefix> = (0..100_000u32)
        .map(|i| {
            let a = Ipv6Addr::from((0x2001_0db8u128 << 96) | (u128::from(i) << 64));
            Prefix::V6(ipnet::Ipv6Net::new(a, 64).expect("net"))
        })
        .collect();
    let attrs = PathAttributes {
        next_hop: Some(NextHop {
            addr: IpAddr::V6("2001:db8::1".parse().expect("v6")),
            link_local: Some("fe80::1".parse().expect("ll")),
        }),
        ..full_attrs()
    };
    let t = std::time::Instant::now();
    let mut buf = BytesMut::new();
    let n = c
        .encode_announce(Family::Ipv6Unicast, &attrs, &v6, &mut buf)
        .expect("encode");
    let enc = t.elapsed();
    let t = std::time::Instant::now();
    let msgs = decode_all(&c, &buf);
    let dec = t.elapsed();
    assert_eq!(msgs.len(), n);
    println!(
        "100k IPv6 prefixes: encode {enc:?} ({n} msgs, {} bytes), decode {dec:?}",
        buf.len()
    );
}

fn sample_messages() -> Vec<Vec<u8>> {
    let c = codec(false);
    let mut out = Vec::new();
    let mut push = |m: &Message| {
        let mut b = BytesMut::new();
        c.encode(m, &mut b).expect("encode");
        out.push(b.to_vec());
    };
    push(&Message::Open(open_with_all_caps(4_200_000_001)));
    push(&Message::Keepalive);
    push(&Message::Notification(Notification::with_data(
        3,
        1,
        vec![1, 2],
    )));
    push(&Message::RouteRefresh(RouteRefresh {
        family: Family::Ipv4Unicast,
        subtype: 0,
    }));
    let mut attrs = full_attrs();
    attrs.as_path = AsPath::from_sequence(vec![65001, 4_200_000_000]);
    push(&Message::Update(Update {
        unreach: vec![
            Unreach {
                family: Family::Ipv4Unicast,
                prefixes: vec![p("10.9.0.0/16")],
            },
            Unreach {
                family: Family::Ipv6Unicast,
                prefixes: vec![p("2001:db8:9::/48")],
            },
        ],
        attrs: Some(attrs),
        reach: vec![
            Reach {
                family: Family::Ipv4Unicast,
                next_hop: NextHop::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
                prefixes: vec![p("10.0.0.0/8"), p("198.51.100.0/25")],
            },
            Reach {
                family: Family::Ipv6Unicast,
                next_hop: NextHop {
                    addr: IpAddr::V6("2001:db8::1".parse().expect("v6")),
                    link_local: Some("fe80::1".parse().expect("ll")),
                },
                prefixes: vec![p("2001:db8:1::/48")],
            },
        ],
        errors: vec![],
    }));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decode_never_panics_on_mutated_messages(
        which in 0usize..5,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        truncate in proptest::option::of(any::<usize>()),
        extend in proptest::collection::vec(any::<u8>(), 0..8),
        keep_length in any::<bool>(),
        asn4 in any::<bool>(),
    ) {
        let samples = sample_messages();
        let mut m = samples[which % samples.len()].clone();
        for (pos, byte) in edits {
            let i = pos % m.len();
            // mostly leave the marker intact so the body gets exercised
            if i >= 16 || byte == 0 {
                m[i] = byte;
            }
        }
        if let Some(t) = truncate {
            m.truncate(t % (m.len() + 1));
        }
        m.extend_from_slice(&extend);
        if keep_length && m.len() >= 19 && m.len() <= 0xffff {
            let len = (m.len() as u16).to_be_bytes();
            m[16..18].copy_from_slice(&len);
        }
        let c = codec(asn4);
        let mut buf = BytesMut::from(&m[..]);
        // Ok(Some/None) or Err, never a panic; and decoding makes progress or stops.
        for _ in 0..4 {
            match c.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }

    #[test]
    fn decode_never_panics_on_random_bodies(
        msg_type in 1u8..6,
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        m.push(msg_type);
        m.extend_from_slice(&body);
        for asn4 in [false, true] {
            let _ = codec(asn4).decode(&mut BytesMut::from(&m[..]));
        }
    }
}

#[test]
fn encode_rejects_inconsistent_input_without_writing() {
    let c = codec(true);
    let v4nh = PathAttributes {
        next_hop: Some(NextHop::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)))),
        ..PathAttributes::default()
    };
    let mut buf = BytesMut::new();
    // IPv6 routes with an IPv4 next hop
    assert!(c
        .encode_announce(Family::Ipv6Unicast, &v4nh, &[p("2001:db8::/32")], &mut buf)
        .is_err());
    // prefix of the wrong family
    assert!(c
        .encode_announce(Family::Ipv4Unicast, &v4nh, &[p("2001:db8::/32")], &mut buf)
        .is_err());
    assert!(c
        .encode_withdraw(Family::Ipv6Unicast, &[p("10.0.0.0/8")], &mut buf)
        .is_err());
    // no next hop
    assert!(c
        .encode_announce(
            Family::Ipv4Unicast,
            &PathAttributes::default(),
            &[p("10.0.0.0/8")],
            &mut buf
        )
        .is_err());
    assert!(buf.is_empty());
    assert_eq!(
        c.encode_announce(Family::Ipv4Unicast, &v4nh, &[], &mut buf),
        Ok(0)
    );
}
