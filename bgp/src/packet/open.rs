//! OPEN message codec: header fields and optional parameters (incl. RFC 9072 extended
//! parameters length) walked here, each capability parsed/serialised by netgauze.

use std::net::Ipv4Addr;

use bytes::{BufMut, BytesMut};
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, ExtendedNextHopEncoding, ExtendedNextHopEncodingCapability,
    FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability, UnrecognizedCapability,
};
use netgauze_iana::address_family::{AddressFamily, AddressType};
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFrom;
use netgauze_parse_utils::WritablePdu;

use super::{put_header, DecodeError, EncodeError, HEADER_LEN, MSG_OPEN};
use crate::types::{notify, Capabilities, Family, GracefulRestart, Open, AS_TRANS};

const PARAM_CAPABILITIES: u8 = 2;
const CAP_MULTIPROTOCOL: u8 = 1;
const CAP_ROUTE_REFRESH: u8 = 2;
const CAP_EXTENDED_NEXT_HOP: u8 = 5;
const CAP_EXTENDED_MESSAGE: u8 = 6;
const CAP_GRACEFUL_RESTART: u8 = 64;
const CAP_FOUR_OCTET_AS: u8 = 65;
const CAP_ENHANCED_ROUTE_REFRESH: u8 = 70;
const CAP_CISCO_ROUTE_REFRESH: u8 = 128;

fn open_err(subcode: u8, data: Vec<u8>, reason: impl Into<String>) -> DecodeError {
    DecodeError::new(notify::OPEN_MESSAGE_ERROR, subcode, data, reason)
}

fn family_of(address_type: AddressType) -> Option<Family> {
    match address_type {
        AddressType::Ipv4Unicast => Some(Family::Ipv4Unicast),
        AddressType::Ipv6Unicast => Some(Family::Ipv6Unicast),
        _ => None,
    }
}

fn address_type_of(family: Family) -> AddressType {
    match family {
        Family::Ipv4Unicast => AddressType::Ipv4Unicast,
        Family::Ipv6Unicast => AddressType::Ipv6Unicast,
    }
}

/// Decode an OPEN body (everything after the 19-byte header).
pub(super) fn decode_open(body: &[u8]) -> Result<Open, DecodeError> {
    let version = body.first().copied().unwrap_or_default();
    if version != 4 {
        return Err(open_err(
            notify::UNSUPPORTED_VERSION,
            4u16.to_be_bytes().to_vec(),
            format!("unsupported BGP version {version}"),
        ));
    }
    let Some(&[_, as_hi, as_lo, ht_hi, ht_lo, id0, id1, id2, id3, opt_len]) = body.get(..10) else {
        return Err(open_err(0, Vec::new(), "OPEN too short"));
    };
    let wire_asn = u16::from_be_bytes([as_hi, as_lo]);
    let hold_time = u16::from_be_bytes([ht_hi, ht_lo]);
    if hold_time == 1 || hold_time == 2 {
        return Err(open_err(
            notify::UNACCEPTABLE_HOLD_TIME,
            Vec::new(),
            format!("unacceptable hold time {hold_time}"),
        ));
    }
    // RFC 6286 2.1: the BGP Identifier is any non-zero 32-bit value (no unicast requirement).
    let router_id = Ipv4Addr::new(id0, id1, id2, id3);
    if router_id.is_unspecified() {
        return Err(open_err(
            notify::BAD_BGP_IDENTIFIER,
            vec![id0, id1, id2, id3],
            "BGP identifier 0.0.0.0",
        ));
    }
    let rest = body.get(10..).unwrap_or_default();
    let params = split_params(opt_len, rest)?;
    let mut caps = Capabilities::default();
    for (param_type, value) in params {
        if param_type != PARAM_CAPABILITIES {
            return Err(open_err(
                notify::UNSUPPORTED_OPTIONAL_PARAMETER,
                Vec::new(),
                format!("unsupported optional parameter type {param_type}"),
            ));
        }
        decode_capabilities(value, &mut caps)?;
    }
    let asn = caps.four_octet_asn.unwrap_or(u32::from(wire_asn));
    Ok(Open {
        version,
        asn,
        hold_time,
        router_id,
        capabilities: caps,
    })
}

/// Split the optional parameters into (type, value), handling RFC 9072 extended lengths.
fn split_params(opt_len: u8, rest: &[u8]) -> Result<Vec<(u8, &[u8])>, DecodeError> {
    let malformed = |why: &str| {
        open_err(
            0,
            Vec::new(),
            format!("malformed optional parameters: {why}"),
        )
    };
    let extended = opt_len == 255 && rest.first() == Some(&255);
    let (section, len_width) = if extended {
        let Some(&[_, hi, lo]) = rest.get(..3) else {
            return Err(malformed("truncated extended length"));
        };
        let len = u16::from_be_bytes([hi, lo]) as usize;
        (rest.get(3..).filter(|s| s.len() == len), 2usize)
    } else {
        (Some(rest).filter(|s| s.len() == opt_len as usize), 1usize)
    };
    let Some(mut section) = section else {
        return Err(malformed("length does not match the message"));
    };
    let mut out = Vec::new();
    while let Some((&param_type, tail)) = section.split_first() {
        let (len, tail) = if len_width == 2 {
            match tail {
                [hi, lo, t @ ..] => (u16::from_be_bytes([*hi, *lo]) as usize, t),
                _ => return Err(malformed("truncated parameter header")),
            }
        } else {
            match tail {
                [l, t @ ..] => (*l as usize, t),
                _ => return Err(malformed("truncated parameter header")),
            }
        };
        let Some(value) = tail.get(..len) else {
            return Err(malformed("parameter overruns the section"));
        };
        out.push((param_type, value));
        section = tail.get(len..).unwrap_or_default();
    }
    Ok(out)
}

fn decode_capabilities(mut section: &[u8], caps: &mut Capabilities) -> Result<(), DecodeError> {
    while let [code, len, tail @ ..] = section {
        let len = *len as usize;
        let Some(value) = tail.get(..len) else {
            return Err(open_err(0, Vec::new(), "capability overruns its parameter"));
        };
        // The whole capability TLV (code, length, value) for netgauze.
        let tlv = section.get(..2 + len).unwrap_or_default();
        decode_capability(*code, value, tlv, caps);
        section = tail.get(len..).unwrap_or_default();
    }
    if !section.is_empty() {
        return Err(open_err(0, Vec::new(), "truncated capability header"));
    }
    Ok(())
}

fn keep_raw(caps: &mut Capabilities, code: u8, value: &[u8]) {
    caps.unknown.push((code, value.to_vec()));
}

/// Interpret one capability; anything routelet does not model (or cannot parse) is kept raw
/// (RFC 5492: unknown capabilities are ignored, not an error).
fn decode_capability(code: u8, value: &[u8], tlv: &[u8], caps: &mut Capabilities) {
    if !matches!(
        code,
        CAP_MULTIPROTOCOL
            | CAP_ROUTE_REFRESH
            | CAP_EXTENDED_NEXT_HOP
            | CAP_EXTENDED_MESSAGE
            | CAP_GRACEFUL_RESTART
            | CAP_FOUR_OCTET_AS
            | CAP_ENHANCED_ROUTE_REFRESH
            | CAP_CISCO_ROUTE_REFRESH
    ) {
        keep_raw(caps, code, value);
        return;
    }
    let mut reader = SliceReader::new(tlv);
    let parsed = match BgpCapability::parse(&mut reader) {
        Ok(cap) if reader.is_empty() => cap,
        Ok(_) | Err(_) => {
            tracing::debug!(code, "malformed capability kept as unknown");
            keep_raw(caps, code, value);
            return;
        }
    };
    match parsed {
        BgpCapability::MultiProtocolExtensions(mp) => match family_of(mp.address_type()) {
            Some(f) if !caps.multiprotocol.contains(&f) => caps.multiprotocol.push(f),
            Some(_) => {}
            None => keep_raw(caps, code, value),
        },
        BgpCapability::RouteRefresh | BgpCapability::CiscoRouteRefresh => caps.route_refresh = true,
        BgpCapability::EnhancedRouteRefresh => caps.enhanced_route_refresh = true,
        BgpCapability::ExtendedMessage => caps.extended_message = true,
        BgpCapability::FourOctetAs(a) => caps.four_octet_asn = Some(a.asn4()),
        BgpCapability::ExtendedNextHopEncoding(enh) => {
            for e in enh.encodings() {
                if e.next_hop_afi() == AddressFamily::IPv6 {
                    if let Some(f) = family_of(e.address_type()) {
                        if !caps.extended_next_hop.contains(&f) {
                            caps.extended_next_hop.push(f);
                        }
                    }
                }
            }
        }
        BgpCapability::GracefulRestartCapability(gr) => {
            caps.graceful_restart = Some(GracefulRestart {
                restart_state: gr.restart(),
                notification: gr.graceful_notification(),
                restart_time: gr.time(),
                families: gr
                    .address_families()
                    .iter()
                    .filter_map(|af| {
                        family_of(af.address_type()).map(|f| (f, af.forwarding_state()))
                    })
                    .collect(),
            });
        }
        _ => keep_raw(caps, code, value),
    }
}

fn capability_list(open: &Open) -> Vec<BgpCapability> {
    let c = &open.capabilities;
    let mut out = Vec::new();
    for f in &c.multiprotocol {
        out.push(BgpCapability::MultiProtocolExtensions(
            MultiProtocolExtensionsCapability::new(address_type_of(*f)),
        ));
    }
    if c.route_refresh {
        out.push(BgpCapability::RouteRefresh);
    }
    if c.enhanced_route_refresh {
        out.push(BgpCapability::EnhancedRouteRefresh);
    }
    if !c.extended_next_hop.is_empty() {
        let encodings: Vec<_> = c
            .extended_next_hop
            .iter()
            .map(|f| ExtendedNextHopEncoding::new(address_type_of(*f), AddressFamily::IPv6))
            .collect();
        out.push(BgpCapability::ExtendedNextHopEncoding(
            ExtendedNextHopEncodingCapability::new(encodings),
        ));
    }
    if c.extended_message {
        out.push(BgpCapability::ExtendedMessage);
    }
    if let Some(gr) = &c.graceful_restart {
        let families: Vec<_> = gr
            .families
            .iter()
            .map(|(f, fwd)| GracefulRestartAddressFamily::new(*fwd, address_type_of(*f)))
            .collect();
        out.push(BgpCapability::GracefulRestartCapability(
            GracefulRestartCapability::new(
                gr.restart_state,
                gr.notification,
                gr.restart_time & 0x0fff,
                families,
            ),
        ));
    }
    // Always announce our real ASN (RFC 6793); the FSM decides what else to advertise.
    out.push(BgpCapability::FourOctetAs(FourOctetAsCapability::new(
        open.asn,
    )));
    for (code, value) in &c.unknown {
        out.push(BgpCapability::Unrecognized(UnrecognizedCapability::new(
            *code,
            value.clone(),
        )));
    }
    out
}

pub(super) fn encode_open(open: &Open, out: &mut BytesMut) -> Result<(), EncodeError> {
    let mut params: Vec<u8> = Vec::with_capacity(64);
    for cap in capability_list(open) {
        if cap.len() > 257 {
            return Err(EncodeError::invalid(
                "OPEN",
                "capability value longer than 255 bytes",
            ));
        }
        // One capability per parameter: old speakers handle that best and it keeps each
        // parameter far below the 255-byte limit.
        params.push(super::open::PARAM_CAPABILITIES);
        params.push(cap.len() as u8);
        cap.write(&mut params)
            .map_err(|e| EncodeError::invalid("OPEN", format!("capability: {e:?}")))?;
    }
    if params.len() > 255 {
        return Err(EncodeError::invalid(
            "OPEN",
            format!("{} bytes of optional parameters do not fit", params.len()),
        ));
    }
    let wire_asn = u16::try_from(open.asn).unwrap_or(AS_TRANS);
    let len = HEADER_LEN + 10 + params.len();
    put_header(out, len, MSG_OPEN);
    out.put_u8(open.version);
    out.put_u16(wire_asn);
    out.put_u16(open.hold_time);
    out.put_slice(&open.router_id.octets());
    out.put_u8(params.len() as u8);
    out.put_slice(&params);
    Ok(())
}
