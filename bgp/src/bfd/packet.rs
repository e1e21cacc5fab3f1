//! BFD Control packet codec (RFC 5880 section 4.1) and the packet-only receive checks of
//! section 6.8.6. Pure: no I/O, no session state; never panics on any input.

use std::fmt;

/// Protocol version this codec speaks (RFC 5880 4.1 "Vers").
pub const VERSION: u8 = 1;
/// Length of a Control packet without an authentication section.
pub const CONTROL_LEN: usize = 24;
/// Minimum Length when the A bit is set (24 + the smallest auth section).
const CONTROL_LEN_AUTH: usize = 26;

/// Session state (RFC 5880 4.1 "Sta", 6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BfdState {
    AdminDown,
    Down,
    Init,
    Up,
}

impl BfdState {
    fn from_bits(v: u8) -> BfdState {
        match v & 0x3 {
            0 => BfdState::AdminDown,
            1 => BfdState::Down,
            2 => BfdState::Init,
            _ => BfdState::Up,
        }
    }

    fn bits(self) -> u8 {
        match self {
            BfdState::AdminDown => 0,
            BfdState::Down => 1,
            BfdState::Init => 2,
            BfdState::Up => 3,
        }
    }
}

impl fmt::Display for BfdState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BfdState::AdminDown => "AdminDown",
            BfdState::Down => "Down",
            BfdState::Init => "Init",
            BfdState::Up => "Up",
        })
    }
}

/// Diagnostic code (RFC 5880 4.1 "Diag"): why the sender's session last changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diag {
    None,
    ControlDetectionTimeExpired,
    EchoFunctionFailed,
    NeighborSignaledSessionDown,
    ForwardingPlaneReset,
    PathDown,
    ConcatenatedPathDown,
    AdministrativelyDown,
    ReverseConcatenatedPathDown,
    /// 9..=31, reserved for future use; carried through, never generated.
    Reserved(u8),
}

impl Diag {
    pub fn from_code(v: u8) -> Diag {
        match v & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            other => Diag::Reserved(other),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledSessionDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Reserved(v) => v & 0x1f,
        }
    }
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diag::None => f.write_str("no diagnostic"),
            Diag::ControlDetectionTimeExpired => f.write_str("control detection time expired"),
            Diag::EchoFunctionFailed => f.write_str("echo function failed"),
            Diag::NeighborSignaledSessionDown => f.write_str("neighbor signaled session down"),
            Diag::ForwardingPlaneReset => f.write_str("forwarding plane reset"),
            Diag::PathDown => f.write_str("path down"),
            Diag::ConcatenatedPathDown => f.write_str("concatenated path down"),
            Diag::AdministrativelyDown => f.write_str("administratively down"),
            Diag::ReverseConcatenatedPathDown => f.write_str("reverse concatenated path down"),
            Diag::Reserved(v) => write!(f, "reserved diagnostic {v}"),
        }
    }
}

/// A BFD Control packet without authentication section. Intervals are in microseconds, as
/// on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlPacket {
    pub diag: Diag,
    pub state: BfdState,
    /// P: Poll.
    pub poll: bool,
    /// F: Final.
    pub final_: bool,
    /// C: Control Plane Independent.
    pub cpi: bool,
    /// A: Authentication Present (always false when encoding; decoding rejects it).
    pub auth: bool,
    /// D: Demand.
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discr: u32,
    pub your_discr: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub required_min_echo_rx_us: u32,
}

/// Why a received datagram is not a Control packet this implementation accepts (the checks of
/// RFC 5880 6.8.6 that need only the packet itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {payload} bytes is too short to carry a BFD header")]
    Truncated { payload: usize },
    #[error("version {version}, expected {VERSION}")]
    BadVersion { version: u8 },
    #[error("length field {length} invalid for a payload of {payload} bytes (minimum {min})")]
    BadLength {
        length: u8,
        payload: usize,
        min: usize,
    },
    #[error("detect multiplier is zero")]
    ZeroDetectMult,
    #[error("multipoint (M) bit set")]
    Multipoint,
    #[error("my discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("your discriminator is zero with state {state}")]
    ZeroYourDiscriminator { state: BfdState },
    #[error("authentication present (type {auth_type}), not supported")]
    AuthNotSupported { auth_type: u8 },
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

impl ControlPacket {
    /// A packet in `state` from `my_discr` to `your_discr`: no flags, no diagnostic, detect
    /// multiplier 3, 300 ms intervals, no echo. A base for the fields a caller sets.
    pub fn new(state: BfdState, my_discr: u32, your_discr: u32) -> ControlPacket {
        ControlPacket {
            diag: Diag::None,
            state,
            poll: false,
            final_: false,
            cpi: false,
            auth: false,
            demand: false,
            detect_mult: 3,
            my_discr,
            your_discr,
            desired_min_tx_us: 300_000,
            required_min_rx_us: 300_000,
            required_min_echo_rx_us: 0,
        }
    }

    /// Encodes into the 24-byte wire form (version 1, Length 24, M bit clear).
    pub fn encode(&self) -> [u8; CONTROL_LEN] {
        let mut b = [0u8; CONTROL_LEN];
        b[0] = (VERSION << 5) | self.diag.code();
        b[1] = (self.state.bits() << 6)
            | (u8::from(self.poll) << 5)
            | (u8::from(self.final_) << 4)
            | (u8::from(self.cpi) << 3)
            | (u8::from(self.auth) << 2)
            | (u8::from(self.demand) << 1);
        b[2] = self.detect_mult;
        b[3] = CONTROL_LEN as u8;
        b[4..8].copy_from_slice(&self.my_discr.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discr.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx_us.to_be_bytes());
        b
    }

    /// Decodes a UDP payload and applies the packet-only checks of RFC 5880 6.8.6, in the
    /// RFC's order. The session look-up by Your Discriminator is the caller's.
    pub fn decode(payload: &[u8]) -> Result<ControlPacket, DecodeError> {
        let (b0, b1, b2, b3) = match payload {
            [b0, b1, b2, b3, ..] => (*b0, *b1, *b2, *b3),
            [b0, ..] if b0 >> 5 != VERSION => {
                return Err(DecodeError::BadVersion { version: b0 >> 5 })
            }
            _ => {
                return Err(DecodeError::Truncated {
                    payload: payload.len(),
                })
            }
        };
        let version = b0 >> 5;
        if version != VERSION {
            return Err(DecodeError::BadVersion { version });
        }
        let auth = b1 & 0x04 != 0;
        let min = if auth { CONTROL_LEN_AUTH } else { CONTROL_LEN };
        let length = usize::from(b3);
        if length < min || length > payload.len() {
            return Err(DecodeError::BadLength {
                length: b3,
                payload: payload.len(),
                min,
            });
        }
        if b2 == 0 {
            return Err(DecodeError::ZeroDetectMult);
        }
        if b1 & 0x01 != 0 {
            return Err(DecodeError::Multipoint);
        }
        let pkt = ControlPacket {
            diag: Diag::from_code(b0),
            state: BfdState::from_bits(b1 >> 6),
            poll: b1 & 0x20 != 0,
            final_: b1 & 0x10 != 0,
            cpi: b1 & 0x08 != 0,
            auth,
            demand: b1 & 0x02 != 0,
            detect_mult: b2,
            my_discr: be32(payload, 4),
            your_discr: be32(payload, 8),
            desired_min_tx_us: be32(payload, 12),
            required_min_rx_us: be32(payload, 16),
            required_min_echo_rx_us: be32(payload, 20),
        };
        if pkt.my_discr == 0 {
            return Err(DecodeError::ZeroMyDiscriminator);
        }
        if pkt.your_discr == 0 && !matches!(pkt.state, BfdState::Down | BfdState::AdminDown) {
            return Err(DecodeError::ZeroYourDiscriminator { state: pkt.state });
        }
        if auth {
            return Err(DecodeError::AuthNotSupported {
                auth_type: payload.get(CONTROL_LEN).copied().unwrap_or(0),
            });
        }
        Ok(pkt)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    fn sample() -> ControlPacket {
        ControlPacket {
            diag: Diag::ControlDetectionTimeExpired,
            poll: true,
            required_min_rx_us: 250_000,
            ..ControlPacket::new(BfdState::Up, 0x0102_0304, 0x0a0b_0c0d)
        }
    }

    #[test]
    fn encode_matches_the_rfc_layout() {
        let b = sample().encode();
        assert_eq!(b[0], 0x21, "version 1, diag 1");
        assert_eq!(b[1], 0xe0, "state Up (3) << 6 | P");
        assert_eq!(b[2], 3);
        assert_eq!(b[3], 24);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(&b[8..12], &[0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(&b[12..16], &300_000u32.to_be_bytes());
        assert_eq!(&b[16..20], &250_000u32.to_be_bytes());
    }

    #[test]
    fn round_trip() {
        let p = sample();
        assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
        let mut q = sample();
        q.poll = false;
        q.final_ = true;
        q.state = BfdState::Init;
        q.diag = Diag::Reserved(17);
        assert_eq!(ControlPacket::decode(&q.encode()), Ok(q));
    }

    #[test]
    fn trailing_bytes_beyond_length_are_ignored() {
        let mut v = sample().encode().to_vec();
        v.extend_from_slice(&[0xff; 8]);
        assert_eq!(ControlPacket::decode(&v), Ok(sample()));
    }

    #[test]
    fn each_rfc_check_has_its_error() {
        let good = sample().encode();
        let mut b = good;
        b[0] = (2 << 5) | 1;
        assert_eq!(
            ControlPacket::decode(&b),
            Err(DecodeError::BadVersion { version: 2 })
        );
        let mut b = good;
        b[3] = 20;
        assert!(matches!(
            ControlPacket::decode(&b),
            Err(DecodeError::BadLength { length: 20, .. })
        ));
        let mut b = good;
        b[3] = 48;
        assert!(matches!(
            ControlPacket::decode(&b),
            Err(DecodeError::BadLength {
                length: 48,
                payload: 24,
                ..
            })
        ));
        assert!(matches!(
            ControlPacket::decode(&good[..23]),
            Err(DecodeError::BadLength { payload: 23, .. })
        ));
        assert_eq!(
            ControlPacket::decode(&good[..2]),
            Err(DecodeError::Truncated { payload: 2 })
        );
        let mut b = good;
        b[2] = 0;
        assert_eq!(ControlPacket::decode(&b), Err(DecodeError::ZeroDetectMult));
        let mut b = good;
        b[1] |= 0x01;
        assert_eq!(ControlPacket::decode(&b), Err(DecodeError::Multipoint));
        let mut b = good;
        b[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(
            ControlPacket::decode(&b),
            Err(DecodeError::ZeroMyDiscriminator)
        );
        let mut b = good;
        b[8..12].copy_from_slice(&[0; 4]);
        assert_eq!(
            ControlPacket::decode(&b),
            Err(DecodeError::ZeroYourDiscriminator {
                state: BfdState::Up
            })
        );
        // Your Discriminator zero is fine while Down or AdminDown.
        for st in [BfdState::Down, BfdState::AdminDown] {
            let mut p = sample();
            p.state = st;
            p.your_discr = 0;
            assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
        }
        // A bit: Length must be at least 26, then the packet is refused as authenticated.
        let mut b = good.to_vec();
        b[1] |= 0x04;
        assert!(matches!(
            ControlPacket::decode(&b),
            Err(DecodeError::BadLength { min: 26, .. })
        ));
        b[3] = 28;
        b.extend_from_slice(&[1, 4, 0, 0]);
        assert_eq!(
            ControlPacket::decode(&b),
            Err(DecodeError::AuthNotSupported { auth_type: 1 })
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = ControlPacket::decode(&bytes);
        }

        #[test]
        fn decode_of_mostly_valid_headers_never_panics(
            b1 in any::<u8>(), b2 in any::<u8>(), len in any::<u8>(),
            rest in proptest::collection::vec(any::<u8>(), 0..60),
        ) {
            let mut v = vec![0x20, b1, b2, len];
            v.extend(rest);
            if let Ok(p) = ControlPacket::decode(&v) {
                // Whatever decodes re-encodes to the same first 24 bytes (modulo M and length).
                let e = p.encode();
                prop_assert_eq!(&e[4..24], v.get(4..24).unwrap_or_default());
            }
        }
    }
}
