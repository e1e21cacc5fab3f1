//! BGP wire codec glue over netgauze-bgp-pkt: framing, decode into `types::Message`, encode,
//! and RFC 7606 classification of malformed attributes. Nothing outside this module sees
//! netgauze types.

use bytes::BytesMut;

use crate::types::{Family, Message, Notification, PathAttributes, Prefix};

/// Why a message could not be decoded; always ends the session with `notification`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (sending {notification})")]
pub struct DecodeError {
    pub notification: Notification,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

/// Per-session codec state: what was negotiated in the OPEN exchange.
#[derive(Debug, Clone, Default)]
pub struct SessionCodec {
    /// Both sides sent the 4-octet-AS capability.
    pub asn4: bool,
    /// RFC 8654 extended messages (max 65535 bytes instead of 4096).
    pub extended_message: bool,
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
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        let _ = buf;
        unimplemented!()
    }

    /// Append the wire form of `msg` to `out`.
    pub fn encode(&self, msg: &Message, out: &mut BytesMut) -> Result<(), EncodeError> {
        let _ = (msg, out);
        unimplemented!()
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
        let _ = (family, attrs, prefixes, out);
        unimplemented!()
    }

    /// Append as many UPDATEs as needed withdrawing `prefixes` of `family`.
    pub fn encode_withdraw(
        &self,
        family: Family,
        prefixes: &[Prefix],
        out: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let _ = (family, prefixes, out);
        unimplemented!()
    }

    /// Append the End-of-RIB marker for `family` (RFC 4724 2).
    pub fn encode_end_of_rib(&self, family: Family, out: &mut BytesMut) -> Result<(), EncodeError> {
        let _ = (family, out);
        unimplemented!()
    }
}
