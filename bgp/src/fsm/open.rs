//! OPEN handling for the session FSM: our OPEN from the config, validation of the peer's OPEN
//! (RFC 4271 6.2, RFC 6286) and capability negotiation (RFC 5492/6793/4760/2918/8950/4724).

use crate::types::{notify, Capabilities, Family, Notification, Open};

use super::{keepalive_for, Negotiated, SessionConfig, BGP_VERSION};

/// RFC 5492 capability code of the multiprotocol capability (RFC 4760).
const CAP_MULTIPROTOCOL: u8 = 1;

/// The families we offer. An empty configured list sends no MP capability, which the peer
/// reads as IPv4 unicast only (RFC 4760 8), so that is what we negotiate with.
fn local_families(cfg: &SessionConfig) -> Vec<Family> {
    effective_families(&cfg.families)
}

/// Families a speaker's MP capabilities stand for: none at all = IPv4 unicast only.
fn effective_families(mp: &[Family]) -> Vec<Family> {
    let mut v = if mp.is_empty() {
        vec![Family::Ipv4Unicast]
    } else {
        mp.to_vec()
    };
    v.sort();
    v.dedup();
    v
}

/// Our OPEN: version 4, the real (4-byte) ASN (the codec puts AS_TRANS in the 2-byte field
/// when needed), and the capabilities routelet supports.
pub(super) fn local_open(cfg: &SessionConfig) -> Open {
    Open {
        version: BGP_VERSION,
        asn: cfg.local_asn,
        hold_time: cfg.hold_time,
        router_id: cfg.local_id,
        capabilities: local_capabilities(cfg),
    }
}

fn local_capabilities(cfg: &SessionConfig) -> Capabilities {
    Capabilities {
        four_octet_asn: Some(cfg.local_asn),
        multiprotocol: cfg.families.clone(),
        route_refresh: true,
        extended_next_hop: if cfg.extended_next_hop {
            vec![Family::Ipv4Unicast]
        } else {
            Vec::new()
        },
        graceful_restart: cfg.graceful_restart.clone(),
        ..Capabilities::default()
    }
}

/// RFC 4271 6.2 checks on the peer's OPEN, in this order: version (2/1, data = the highest
/// version we support as 2 bytes), peer AS (2/2), hold time 1 or 2 (2/6), BGP identifier
/// 0.0.0.0 or, on iBGP, equal to ours (2/3; RFC 6286 allows equal identifiers on eBGP).
pub(super) fn validate(cfg: &SessionConfig, peer: &Open) -> Result<(), Notification> {
    if peer.version != BGP_VERSION {
        return Err(Notification::with_data(
            notify::OPEN_MESSAGE_ERROR,
            notify::UNSUPPORTED_VERSION,
            u16::from(BGP_VERSION).to_be_bytes().to_vec(),
        ));
    }
    if peer.asn != cfg.remote_asn {
        return Err(Notification::new(
            notify::OPEN_MESSAGE_ERROR,
            notify::BAD_PEER_AS,
        ));
    }
    if matches!(peer.hold_time, 1 | 2) {
        return Err(Notification::new(
            notify::OPEN_MESSAGE_ERROR,
            notify::UNACCEPTABLE_HOLD_TIME,
        ));
    }
    let ibgp = cfg.local_asn == cfg.remote_asn;
    if peer.router_id.is_unspecified() || (ibgp && peer.router_id == cfg.local_id) {
        return Err(Notification::new(
            notify::OPEN_MESSAGE_ERROR,
            notify::BAD_BGP_IDENTIFIER,
        ));
    }
    Ok(())
}

/// Negotiate the session parameters from a validated peer OPEN.
///
/// No common family fails the OPEN with 2/7 Unsupported Capability (as FRR does; BIRD keeps
/// a session with no active channel). A session that can carry no route is a configuration
/// error, and failing it makes the mismatch visible on both sides instead of an idle
/// "Established" session. Per RFC 5492 3 the data carries the capabilities that caused it:
/// the MP capabilities we offered (code 1, length 4, AFI, reserved 0, SAFI each).
pub(super) fn negotiate(cfg: &SessionConfig, peer: &Open) -> Result<Negotiated, Notification> {
    let caps = &peer.capabilities;
    let ours = local_capabilities(cfg);
    let peer_families = effective_families(&caps.multiprotocol);
    let families: Vec<Family> = local_families(cfg)
        .into_iter()
        .filter(|f| peer_families.contains(f))
        .collect();
    if families.is_empty() {
        return Err(Notification::with_data(
            notify::OPEN_MESSAGE_ERROR,
            notify::UNSUPPORTED_CAPABILITY,
            mp_capability_data(&local_families(cfg)),
        ));
    }
    let hold_time = match (cfg.hold_time, peer.hold_time) {
        (0, _) | (_, 0) => 0,
        (a, b) => a.min(b),
    };
    let extended_next_hop = cfg.extended_next_hop
        && caps.extended_next_hop.contains(&Family::Ipv4Unicast)
        && families.contains(&Family::Ipv4Unicast);
    Ok(Negotiated {
        remote_asn: peer.asn,
        remote_id: peer.router_id,
        hold_time,
        keepalive_interval: keepalive_for(hold_time).unwrap_or_default(),
        asn4: ours.four_octet_asn.is_some() && caps.four_octet_asn.is_some(),
        families,
        route_refresh: ours.route_refresh && caps.route_refresh,
        extended_next_hop,
        extended_message: ours.extended_message && caps.extended_message,
        peer_graceful_restart: caps.graceful_restart.clone(),
    })
}

/// MP capability TLVs (RFC 5492 encoding) for `families`, for 2/7 NOTIFICATION data.
fn mp_capability_data(families: &[Family]) -> Vec<u8> {
    let mut data = Vec::with_capacity(families.len() * 6);
    for f in families {
        data.push(CAP_MULTIPROTOCOL);
        data.push(4);
        data.extend_from_slice(&f.afi().to_be_bytes());
        data.push(0);
        data.push(f.safi());
    }
    data
}
