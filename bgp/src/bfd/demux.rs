//! Receive-side demultiplexing (RFC 5880 6.8.6 session selection, RFC 5881 sections 4-5 TTL
//! check) and the discard reasons with their counters. Pure: a table of discriminators and
//! peer addresses, no sockets.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use super::packet::{ControlPacket, DecodeError};

/// Why a received datagram was dropped, with the context needed to log it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Discard {
    #[error("TTL/hop limit {ttl:?}, single-hop BFD requires 255")]
    BadTtl { ttl: Option<u8> },
    #[error("{0}")]
    Malformed(DecodeError),
    #[error("your discriminator {your_discr:#x} matches no session")]
    UnknownDiscriminator { your_discr: u32 },
    #[error("your discriminator {your_discr:#x} belongs to the session with {expected}")]
    SourceMismatch { your_discr: u32, expected: IpAddr },
    #[error("your discriminator is zero and the source is no configured peer")]
    UnknownSource,
}

/// Counter key of a [`Discard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DiscardKind {
    BadTtl,
    BadVersion,
    /// Length field below 24 (26 with A) or beyond the datagram, or a datagram too short.
    BadLength,
    ZeroDetectMult,
    Multipoint,
    ZeroMyDiscriminator,
    ZeroYourDiscriminator,
    AuthNotSupported,
    UnknownDiscriminator,
    SourceMismatch,
    UnknownSource,
}

impl DiscardKind {
    pub const ALL: [DiscardKind; 11] = [
        DiscardKind::BadTtl,
        DiscardKind::BadVersion,
        DiscardKind::BadLength,
        DiscardKind::ZeroDetectMult,
        DiscardKind::Multipoint,
        DiscardKind::ZeroMyDiscriminator,
        DiscardKind::ZeroYourDiscriminator,
        DiscardKind::AuthNotSupported,
        DiscardKind::UnknownDiscriminator,
        DiscardKind::SourceMismatch,
        DiscardKind::UnknownSource,
    ];

    /// Stable snake_case name (metrics labels, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            DiscardKind::BadTtl => "bad_ttl",
            DiscardKind::BadVersion => "bad_version",
            DiscardKind::BadLength => "bad_length",
            DiscardKind::ZeroDetectMult => "zero_detect_mult",
            DiscardKind::Multipoint => "multipoint",
            DiscardKind::ZeroMyDiscriminator => "zero_my_discriminator",
            DiscardKind::ZeroYourDiscriminator => "zero_your_discriminator",
            DiscardKind::AuthNotSupported => "auth_not_supported",
            DiscardKind::UnknownDiscriminator => "unknown_discriminator",
            DiscardKind::SourceMismatch => "source_mismatch",
            DiscardKind::UnknownSource => "unknown_source",
        }
    }

    fn index(self) -> usize {
        DiscardKind::ALL
            .iter()
            .position(|k| *k == self)
            .unwrap_or_default()
    }
}

impl fmt::Display for DiscardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Discard {
    pub fn kind(&self) -> DiscardKind {
        match self {
            Discard::BadTtl { .. } => DiscardKind::BadTtl,
            Discard::Malformed(e) => match e {
                DecodeError::Truncated { .. } | DecodeError::BadLength { .. } => {
                    DiscardKind::BadLength
                }
                DecodeError::BadVersion { .. } => DiscardKind::BadVersion,
                DecodeError::ZeroDetectMult => DiscardKind::ZeroDetectMult,
                DecodeError::Multipoint => DiscardKind::Multipoint,
                DecodeError::ZeroMyDiscriminator => DiscardKind::ZeroMyDiscriminator,
                DecodeError::ZeroYourDiscriminator { .. } => DiscardKind::ZeroYourDiscriminator,
                DecodeError::AuthNotSupported { .. } => DiscardKind::AuthNotSupported,
            },
            Discard::UnknownDiscriminator { .. } => DiscardKind::UnknownDiscriminator,
            Discard::SourceMismatch { .. } => DiscardKind::SourceMismatch,
            Discard::UnknownSource => DiscardKind::UnknownSource,
        }
    }
}

/// Dropped-packet counters, one per [`DiscardKind`].
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct DiscardCounters([u64; DiscardKind::ALL.len()]);

impl DiscardCounters {
    pub fn get(&self, kind: DiscardKind) -> u64 {
        self.0.get(kind.index()).copied().unwrap_or_default()
    }

    pub fn add(&mut self, kind: DiscardKind) {
        if let Some(c) = self.0.get_mut(kind.index()) {
            *c += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// (kind, count) for every kind, in [`DiscardKind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (DiscardKind, u64)> + '_ {
        DiscardKind::ALL.iter().map(|k| (*k, self.get(*k)))
    }
}

impl fmt::Debug for DiscardCounters {
    /// Only the nonzero counters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(k, n)| (k.as_str(), n)),
            )
            .finish()
    }
}

/// The TTL / hop limit every single-hop BFD packet must arrive with (RFC 5881 section 5).
pub const REQUIRED_TTL: u8 = 255;

/// Session look-up tables: local discriminator -> peer, peer -> local discriminator.
#[derive(Debug, Default, Clone)]
pub struct Demux {
    by_discr: HashMap<u32, IpAddr>,
    by_peer: HashMap<IpAddr, u32>,
}

impl Demux {
    pub fn insert(&mut self, peer: IpAddr, local_discr: u32) {
        self.remove(peer);
        self.by_discr.insert(local_discr, peer);
        self.by_peer.insert(peer, local_discr);
    }

    pub fn remove(&mut self, peer: IpAddr) {
        if let Some(d) = self.by_peer.remove(&peer) {
            self.by_discr.remove(&d);
        }
    }

    pub fn discr_in_use(&self, discr: u32) -> bool {
        self.by_discr.contains_key(&discr)
    }

    /// Checks a datagram from `src` received with `ttl` and selects its session (keyed by
    /// peer address): TTL 255 (RFC 5881), the codec checks, then Your Discriminator if
    /// nonzero (and the source must be that session's peer), else the source address.
    pub fn classify(
        &self,
        payload: &[u8],
        src: IpAddr,
        ttl: Option<u8>,
    ) -> Result<(IpAddr, ControlPacket), Discard> {
        if ttl != Some(REQUIRED_TTL) {
            return Err(Discard::BadTtl { ttl });
        }
        let pkt = ControlPacket::decode(payload).map_err(Discard::Malformed)?;
        if pkt.your_discr != 0 {
            return match self.by_discr.get(&pkt.your_discr) {
                None => Err(Discard::UnknownDiscriminator {
                    your_discr: pkt.your_discr,
                }),
                Some(peer) if *peer != src => Err(Discard::SourceMismatch {
                    your_discr: pkt.your_discr,
                    expected: *peer,
                }),
                Some(peer) => Ok((*peer, pkt)),
            };
        }
        if self.by_peer.contains_key(&src) {
            Ok((src, pkt))
        } else {
            Err(Discard::UnknownSource)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::bfd::packet::BfdState;

    fn pkt(your: u32) -> ControlPacket {
        let state = if your == 0 {
            BfdState::Down
        } else {
            BfdState::Up
        };
        ControlPacket::new(state, 99, your)
    }

    #[test]
    fn selection_and_every_discard_reason() {
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.9".parse().unwrap();
        let mut d = Demux::default();
        d.insert(peer, 7);
        let ok = |p: ControlPacket, src| d.classify(&p.encode(), src, Some(255));
        assert_eq!(ok(pkt(7), peer), Ok((peer, pkt(7))));
        assert_eq!(ok(pkt(0), peer), Ok((peer, pkt(0))));
        assert_eq!(
            ok(pkt(8), peer),
            Err(Discard::UnknownDiscriminator { your_discr: 8 })
        );
        assert_eq!(
            ok(pkt(7), other),
            Err(Discard::SourceMismatch {
                your_discr: 7,
                expected: peer
            })
        );
        assert_eq!(ok(pkt(0), other), Err(Discard::UnknownSource));
        assert_eq!(
            d.classify(&pkt(7).encode(), peer, Some(254)),
            Err(Discard::BadTtl { ttl: Some(254) })
        );
        assert_eq!(
            d.classify(&pkt(7).encode(), peer, None)
                .map_err(|e| e.kind()),
            Err(DiscardKind::BadTtl)
        );
        let mut bad = pkt(7).encode();
        bad[0] = 0;
        assert_eq!(
            d.classify(&bad, peer, Some(255)).map_err(|e| e.kind()),
            Err(DiscardKind::BadVersion)
        );
        d.remove(peer);
        assert_eq!(
            d.classify(&pkt(0).encode(), peer, Some(255)),
            Err(Discard::UnknownSource)
        );
        assert!(!d.discr_in_use(7));
    }

    #[test]
    fn counters_count_per_kind() {
        let mut c = DiscardCounters::default();
        c.add(DiscardKind::BadTtl);
        c.add(DiscardKind::BadTtl);
        c.add(DiscardKind::UnknownSource);
        assert_eq!(c.get(DiscardKind::BadTtl), 2);
        assert_eq!(c.get(DiscardKind::UnknownSource), 1);
        assert_eq!(c.get(DiscardKind::Multipoint), 0);
        assert_eq!(c.total(), 3);
        assert_eq!(format!("{c:?}"), r#"{"bad_ttl": 2, "unknown_source": 1}"#);
        for (i, k) in DiscardKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }
}
