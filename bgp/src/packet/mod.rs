//! BGP wire codec glue over netgauze-bgp-pkt: framing, decode into `types::Message`, encode,
//! and RFC 7606 classification of malformed attributes. Nothing outside this module sees
//! netgauze types.
//!
//! Layout: this file owns the message header (framing, per-type length rules) and the small
//! fixed-format messages (KEEPALIVE, NOTIFICATION, ROUTE-REFRESH); `open` owns OPEN,
//! `update_decode` the UPDATE decoder with its RFC 7606 error classification, and
//! `update_encode` the (hand-written, size-aware) UPDATE encoder.
//!
//! Decoding walks the TLV framing itself (message header, OPEN parameters, UPDATE sections and
//! attribute headers) and hands every individual element to netgauze's parsers on an exact
//! sub-slice. This keeps a malformed element from desynchronising the rest of the message
//! (netgauze's own "skip malformed attribute" recovery mis-skips for several attribute types)
//! and lets us apply the RFC 7606 action per attribute type.

mod open;
mod update_decode;
mod update_encode;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_rfc7606;

use bytes::{Buf, BufMut, BytesMut};

use crate::types::{notify, Family, Message, Notification, PathAttributes, Prefix, RouteRefresh};

/// Length of the fixed BGP header (marker, length, type).
pub const HEADER_LEN: usize = 19;
/// Maximum length of OPEN and KEEPALIVE messages, even with RFC 8654 extended messages.
pub const MAX_STANDARD_MESSAGE_LEN: usize = 4096;

pub(crate) const MSG_OPEN: u8 = 1;
pub(crate) const MSG_UPDATE: u8 = 2;
pub(crate) const MSG_NOTIFICATION: u8 = 3;
pub(crate) const MSG_KEEPALIVE: u8 = 4;
pub(crate) const MSG_ROUTE_REFRESH: u8 = 5;

/// Why a message could not be decoded; always ends the session with `notification`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (sending {notification})")]
pub struct DecodeError {
    pub notification: Notification,
    pub reason: String,
}

impl DecodeError {
    pub(crate) fn new(code: u8, subcode: u8, data: Vec<u8>, reason: impl Into<String>) -> Self {
        DecodeError {
            notification: Notification::with_data(code, subcode, data),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

impl EncodeError {
    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        EncodeError::Invalid {
            what,
            reason: reason.into(),
        }
    }
}

/// Per-session codec state: what was negotiated in the OPEN exchange.
#[derive(Debug, Clone, Default)]
pub struct SessionCodec {
    /// Both sides sent the 4-octet-AS capability.
    pub asn4: bool,
    /// RFC 8654 extended messages (max 65535 bytes instead of 4096).
    pub extended_message: bool,
}

/// Minimum total message length for a message type (RFC 4271 4.x, RFC 2918).
fn min_len(msg_type: u8) -> usize {
    match msg_type {
        MSG_OPEN => 29,
        MSG_UPDATE => 23,
        MSG_NOTIFICATION => 21,
        MSG_ROUTE_REFRESH => 23,
        _ => HEADER_LEN,
    }
}

impl SessionCodec {
    pub fn new() -> SessionCodec {
        SessionCodec::default()
    }

    pub fn max_message_len(&self) -> usize {
        if self.extended_message {
            65535
        } else {
            4096
        }
    }

    /// Decode one message from the front of `buf` if a complete one is buffered
    /// (consuming it); `Ok(None)` if more bytes are needed.
    ///
    /// Messages that carry nothing routelet can act on (a ROUTE-REFRESH for a family or
    /// subtype we do not know, an UPDATE that only concerns non-unicast families) are consumed
    /// and skipped; decoding then continues with the next buffered message.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        loop {
            let Some(total) = self.check_header(buf)? else {
                return Ok(None);
            };
            let frame = buf.split_to(total);
            let msg_type = frame.get(18).copied().unwrap_or_default();
            let body = frame.get(HEADER_LEN..).unwrap_or_default();
            let decoded = match msg_type {
                MSG_OPEN => Some(Message::Open(open::decode_open(body)?)),
                MSG_UPDATE => update_decode::decode_update(self.asn4, body)?.map(Message::Update),
                MSG_NOTIFICATION => Some(Message::Notification(decode_notification(body))),
                MSG_KEEPALIVE => Some(Message::Keepalive),
                MSG_ROUTE_REFRESH => decode_route_refresh(&frame)?.map(Message::RouteRefresh),
                // check_header rejected every other type already
                other => {
                    return Err(DecodeError::new(
                        notify::MESSAGE_HEADER_ERROR,
                        notify::BAD_MESSAGE_TYPE,
                        vec![other],
                        format!("unknown message type {other}"),
                    ))
                }
            };
            if let Some(msg) = decoded {
                return Ok(Some(msg));
            }
            tracing::debug!(msg_type, "ignoring BGP message with nothing for routelet");
        }
    }

    /// Validate the header at the front of `buf`. Returns the total length of the message
    /// when it is complete, `None` when more bytes are needed.
    fn check_header(&self, buf: &BytesMut) -> Result<Option<usize>, DecodeError> {
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        if header.iter().take(16).any(|b| *b != 0xff) {
            return Err(DecodeError::new(
                notify::MESSAGE_HEADER_ERROR,
                notify::CONNECTION_NOT_SYNCHRONIZED,
                Vec::new(),
                "message marker is not all ones",
            ));
        }
        let len_bytes = [header[16], header[17]];
        let len = u16::from_be_bytes(len_bytes) as usize;
        let msg_type = header[18];
        let bad_len = |why: String| {
            DecodeError::new(
                notify::MESSAGE_HEADER_ERROR,
                notify::BAD_MESSAGE_LENGTH,
                len_bytes.to_vec(),
                why,
            )
        };
        if len < HEADER_LEN || len > self.max_message_len() {
            return Err(bad_len(format!(
                "message length {len} outside {HEADER_LEN}..={}",
                self.max_message_len()
            )));
        }
        if !(MSG_OPEN..=MSG_ROUTE_REFRESH).contains(&msg_type) {
            return Err(DecodeError::new(
                notify::MESSAGE_HEADER_ERROR,
                notify::BAD_MESSAGE_TYPE,
                vec![msg_type],
                format!("unknown message type {msg_type}"),
            ));
        }
        if len < min_len(msg_type) {
            return Err(bad_len(format!(
                "message length {len} below the minimum {} for type {msg_type}",
                min_len(msg_type)
            )));
        }
        if matches!(msg_type, MSG_OPEN | MSG_KEEPALIVE) && len > MAX_STANDARD_MESSAGE_LEN {
            return Err(bad_len(format!(
                "OPEN/KEEPALIVE length {len} above {MAX_STANDARD_MESSAGE_LEN}"
            )));
        }
        if msg_type == MSG_KEEPALIVE && len != HEADER_LEN {
            return Err(bad_len(format!(
                "KEEPALIVE length {len} is not {HEADER_LEN}"
            )));
        }
        if buf.len() < len {
            return Ok(None);
        }
        Ok(Some(len))
    }

    /// Append the wire form of `msg` to `out`.
    pub fn encode(&self, msg: &Message, out: &mut BytesMut) -> Result<(), EncodeError> {
        match msg {
            Message::Open(o) => open::encode_open(o, out),
            Message::Update(u) => update_encode::encode_update(self, u, out),
            Message::Notification(n) => {
                let len = HEADER_LEN + 2 + n.data.len();
                if len > self.max_message_len() {
                    return Err(EncodeError::invalid(
                        "NOTIFICATION",
                        format!("{} data bytes do not fit", n.data.len()),
                    ));
                }
                put_header(out, len, MSG_NOTIFICATION);
                out.put_u8(n.code);
                out.put_u8(n.subcode);
                out.put_slice(&n.data);
                Ok(())
            }
            Message::Keepalive => {
                put_header(out, HEADER_LEN, MSG_KEEPALIVE);
                Ok(())
            }
            Message::RouteRefresh(rr) => {
                put_header(out, HEADER_LEN + 4, MSG_ROUTE_REFRESH);
                out.put_u16(rr.family.afi());
                out.put_u8(rr.subtype);
                out.put_u8(rr.family.safi());
                Ok(())
            }
        }
    }

    /// Append as many UPDATEs as needed (each within `max_message_len`) announcing `prefixes`
    /// of `family` with `attrs` (`attrs.next_hop` is the next hop: NEXT_HOP for IPv4 with an
    /// IPv4 next hop, MP_REACH_NLRI otherwise, including IPv4 over an IPv6 next hop per
    /// RFC 8950). Returns the number of messages written.
    pub fn encode_announce(
        &self,
        family: Family,
        attrs: &PathAttributes,
        prefixes: &[Prefix],
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        update_encode::encode_announce(self, family, attrs, prefixes, out)
    }

    /// Append as many UPDATEs as needed withdrawing `prefixes` of `family`.
    pub fn encode_withdraw(
        &self,
        family: Family,
        prefixes: &[Prefix],
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        update_encode::encode_withdraw(self, family, prefixes, out)
    }

    /// Append the End-of-RIB marker for `family` (RFC 4724 2).
    pub fn encode_end_of_rib(&self, family: Family, out: &mut BytesMut) -> Result<(), EncodeError> {
        update_encode::encode_end_of_rib(family, out);
        Ok(())
    }
}

/// Write the 19-byte header. `len` must already be checked to fit in a u16.
pub(crate) fn put_header(out: &mut BytesMut, len: usize, msg_type: u8) {
    out.reserve(len);
    out.put_bytes(0xff, 16);
    out.put_u16(len as u16);
    out.put_u8(msg_type);
}

fn decode_notification(mut body: &[u8]) -> Notification {
    // framing guarantees at least 2 bytes
    let code = if body.is_empty() { 0 } else { body.get_u8() };
    let subcode = if body.is_empty() { 0 } else { body.get_u8() };
    Notification::with_data(code, subcode, body.to_vec())
}

/// ROUTE-REFRESH (RFC 2918 / RFC 7313). `frame` is the whole message.
fn decode_route_refresh(frame: &[u8]) -> Result<Option<RouteRefresh>, DecodeError> {
    let Some(&[afi_hi, afi_lo, subtype, safi]) = frame.get(HEADER_LEN..) else {
        // RFC 7313 5: a ROUTE-REFRESH with a bad length is answered with 7/1 and the message.
        return Err(DecodeError::new(
            notify::ROUTE_REFRESH_ERROR,
            1,
            frame.to_vec(),
            format!("ROUTE-REFRESH length {} is not 23", frame.len()),
        ));
    };
    let afi = u16::from_be_bytes([afi_hi, afi_lo]);
    let Some(family) = Family::from_afi_safi(afi, safi) else {
        tracing::debug!(
            afi,
            safi,
            "ignoring ROUTE-REFRESH for a family we do not speak"
        );
        return Ok(None);
    };
    if subtype > 2 {
        tracing::debug!(subtype, "ignoring ROUTE-REFRESH with reserved subtype");
        return Ok(None);
    }
    Ok(Some(RouteRefresh { family, subtype }))
}
