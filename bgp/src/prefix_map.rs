//! [`PrefixMap`]: a hash map keyed by IP prefix that stores an IPv4 key in 5 bytes and an
//! IPv6 key in 17 (address + length, alignment 1) instead of `ipnet::IpNet`'s 18-byte enum in
//! every bucket: the Loc-RIB and the FIB tables of a million IPv4 routes shrink by a third.
//!
//! Each family's table is split into [`SHARDS`] hash maps chosen by the key's address bits,
//! so growing a table rehashes one shard at a time: the old and new bucket arrays coexist
//! for 1/64 of the table instead of the whole (a 35 MB spike at a million routes).
//!
//! Keys are stored exactly as given (host bits are not masked); callers that need canonical
//! prefixes truncate before inserting.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct V4Key([u8; 5]);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct V6Key([u8; 17]);

/// Number of hash maps per family.
pub const SHARDS: usize = 64;

/// Fibonacci hashing of the address bits that vary most in a routing table (a /24 or /32
/// table differs in the low bits, a table of short prefixes in the high ones).
fn shard_of(bits: u32) -> usize {
    (bits.wrapping_mul(0x9E37_79B9) >> 26) as usize % SHARDS
}

impl V4Key {
    fn shard(&self) -> usize {
        let [a, b, c, d, _] = self.0;
        shard_of(u32::from_be_bytes([a, b, c, d]))
    }

    fn new(net: &Ipv4Net) -> V4Key {
        let [a, b, c, d] = net.addr().octets();
        V4Key([a, b, c, d, net.prefix_len()])
    }

    fn prefix(&self) -> IpNet {
        let [a, b, c, d, len] = self.0;
        let addr = Ipv4Addr::new(a, b, c, d);
        // Keys only come from valid prefixes; the fallback cannot be reached.
        IpNet::V4(Ipv4Net::new(addr, len).unwrap_or_else(|_| Ipv4Net::from(addr)))
    }
}

impl V6Key {
    fn shard(&self) -> usize {
        // The network part of typical IPv6 routes (/48../64): bytes 4..8.
        let b = &self.0;
        shard_of(u32::from_be_bytes([b[4], b[5], b[6], b[7]]) ^ u32::from(b[3]))
    }

    fn new(net: &Ipv6Net) -> V6Key {
        let mut k = [0u8; 17];
        k[..16].copy_from_slice(&net.addr().octets());
        k[16] = net.prefix_len();
        V6Key(k)
    }

    fn prefix(&self) -> IpNet {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&self.0[..16]);
        let addr = Ipv6Addr::from(octets);
        IpNet::V6(Ipv6Net::new(addr, self.0[16]).unwrap_or_else(|_| Ipv6Net::from(addr)))
    }
}

/// A map from IP prefix to `V`: [`SHARDS`] hash tables per family.
#[derive(Debug, Clone)]
pub struct PrefixMap<V> {
    v4: Vec<HashMap<V4Key, V>>,
    v6: Vec<HashMap<V6Key, V>>,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        PrefixMap {
            v4: (0..SHARDS).map(|_| HashMap::new()).collect(),
            v6: (0..SHARDS).map(|_| HashMap::new()).collect(),
        }
    }
}

// Shard indices come from `shard_of` (< SHARDS) and both vectors hold SHARDS maps, so the
// indexing below cannot go out of bounds.
impl<V> PrefixMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.v4.iter().map(HashMap::len).sum::<usize>()
            + self.v6.iter().map(HashMap::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.iter().all(HashMap::is_empty) && self.v6.iter().all(HashMap::is_empty)
    }

    /// Buckets allocated over all shards.
    pub fn capacity(&self) -> usize {
        self.v4.iter().map(HashMap::capacity).sum::<usize>()
            + self.v6.iter().map(HashMap::capacity).sum::<usize>()
    }

    pub fn get(&self, prefix: &IpNet) -> Option<&V> {
        match prefix {
            IpNet::V4(n) => {
                let k = V4Key::new(n);
                self.v4[k.shard()].get(&k)
            }
            IpNet::V6(n) => {
                let k = V6Key::new(n);
                self.v6[k.shard()].get(&k)
            }
        }
    }

    pub fn get_mut(&mut self, prefix: &IpNet) -> Option<&mut V> {
        match prefix {
            IpNet::V4(n) => {
                let k = V4Key::new(n);
                self.v4[k.shard()].get_mut(&k)
            }
            IpNet::V6(n) => {
                let k = V6Key::new(n);
                self.v6[k.shard()].get_mut(&k)
            }
        }
    }

    pub fn contains_key(&self, prefix: &IpNet) -> bool {
        self.get(prefix).is_some()
    }

    /// Insert, returning the previous value.
    pub fn insert(&mut self, prefix: IpNet, value: V) -> Option<V> {
        match prefix {
            IpNet::V4(n) => {
                let k = V4Key::new(&n);
                self.v4[k.shard()].insert(k, value)
            }
            IpNet::V6(n) => {
                let k = V6Key::new(&n);
                self.v6[k.shard()].insert(k, value)
            }
        }
    }

    pub fn remove(&mut self, prefix: &IpNet) -> Option<V> {
        match prefix {
            IpNet::V4(n) => {
                let k = V4Key::new(n);
                self.v4[k.shard()].remove(&k)
            }
            IpNet::V6(n) => {
                let k = V6Key::new(n);
                self.v6[k.shard()].remove(&k)
            }
        }
    }

    /// The value for `prefix`, inserted with `make` if absent.
    pub fn get_or_insert_with(&mut self, prefix: IpNet, make: impl FnOnce() -> V) -> &mut V {
        match prefix {
            IpNet::V4(n) => {
                let k = V4Key::new(&n);
                self.v4[k.shard()].entry(k).or_insert_with(make)
            }
            IpNet::V6(n) => {
                let k = V6Key::new(&n);
                self.v6[k.shard()].entry(k).or_insert_with(make)
            }
        }
    }

    /// Keep only the entries for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(IpNet, &mut V) -> bool) {
        for shard in &mut self.v4 {
            shard.retain(|k, v| keep(k.prefix(), v));
        }
        for shard in &mut self.v6 {
            shard.retain(|k, v| keep(k.prefix(), v));
        }
    }

    /// All entries, IPv4 first, in no particular order within a family.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &V)> + '_ {
        let v4 = self
            .v4
            .iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.prefix(), v)));
        let v6 = self
            .v6
            .iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.prefix(), v)));
        v4.chain(v6)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (IpNet, &mut V)> + '_ {
        let v4 = self
            .v4
            .iter_mut()
            .flat_map(|m| m.iter_mut().map(|(k, v)| (k.prefix(), v)));
        let v6 = self
            .v6
            .iter_mut()
            .flat_map(|m| m.iter_mut().map(|(k, v)| (k.prefix(), v)));
        v4.chain(v6)
    }

    pub fn keys(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        let v4 = self.v4.iter().flat_map(HashMap::values);
        let v6 = self.v6.iter().flat_map(HashMap::values);
        v4.chain(v6)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> + '_ {
        let v4 = self.v4.iter_mut().flat_map(HashMap::values_mut);
        let v6 = self.v6.iter_mut().flat_map(HashMap::values_mut);
        v4.chain(v6)
    }

    /// Consume the map, yielding every entry.
    pub fn into_entries(self) -> impl Iterator<Item = (IpNet, V)> {
        let v4 = self
            .v4
            .into_iter()
            .flat_map(|m| m.into_iter().map(|(k, v)| (k.prefix(), v)));
        let v6 = self
            .v6
            .into_iter()
            .flat_map(|m| m.into_iter().map(|(k, v)| (k.prefix(), v)));
        v4.chain(v6)
    }

    /// Release memory the tables no longer need (after a large withdrawal).
    pub fn shrink_to_fit(&mut self) {
        self.v4.iter_mut().for_each(HashMap::shrink_to_fit);
        self.v6.iter_mut().for_each(HashMap::shrink_to_fit);
    }
}

impl<V> FromIterator<(IpNet, V)> for PrefixMap<V> {
    fn from_iter<I: IntoIterator<Item = (IpNet, V)>>(iter: I) -> Self {
        let mut map = PrefixMap::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn keys_round_trip_exactly_both_families() {
        let prefixes = [
            "0.0.0.0/0",
            "10.1.2.3/32",
            "10.1.2.0/24",
            "10.1.2.3/24",
            "::/0",
            "2001:db8::/32",
            "2001:db8::1/128",
        ];
        let mut m = PrefixMap::new();
        for (i, s) in prefixes.iter().enumerate() {
            assert_eq!(m.insert(p(s), i), None);
        }
        assert_eq!(m.len(), prefixes.len());
        for (i, s) in prefixes.iter().enumerate() {
            assert_eq!(m.get(&p(s)), Some(&i), "{s}");
        }
        let mut seen: Vec<IpNet> = m.keys().collect();
        seen.sort();
        let mut want: Vec<IpNet> = prefixes.iter().map(|s| p(s)).collect();
        want.sort();
        assert_eq!(seen, want);
        // Same bits, other length or family: distinct keys.
        assert_eq!(m.get(&p("10.1.2.0/25")), None);
        assert_eq!(m.get(&p("::a01:200/120")), None);
    }

    #[test]
    fn insert_remove_retain_and_entry() {
        let mut m: PrefixMap<u32> = PrefixMap::new();
        *m.get_or_insert_with(p("10.0.0.0/8"), || 1) += 1;
        *m.get_or_insert_with(p("10.0.0.0/8"), || 100) += 1;
        assert_eq!(m.get(&p("10.0.0.0/8")), Some(&3));
        m.insert(p("2001:db8::/48"), 7);
        m.insert(p("192.0.2.0/24"), 8);
        *m.get_mut(&p("2001:db8::/48")).unwrap() = 9;
        m.retain(|prefix, v| prefix.addr().is_ipv6() || *v == 8);
        assert_eq!(m.len(), 2);
        assert_eq!(m.remove(&p("192.0.2.0/24")), Some(8));
        assert_eq!(m.remove(&p("192.0.2.0/24")), None);
        let all: Vec<(IpNet, u32)> = m.into_entries().collect();
        assert_eq!(all, vec![(p("2001:db8::/48"), 9)]);
    }

    #[test]
    fn many_keys_spread_over_shards_and_all_come_back() {
        let mut m = PrefixMap::new();
        for i in 0..5000u32 {
            let v4 = IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap());
            let v6 = IpNet::V6(
                Ipv6Net::new(
                    Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i) << 64),
                    64,
                )
                .unwrap(),
            );
            m.insert(v4, i);
            m.insert(v6, i);
        }
        assert_eq!(m.len(), 10_000);
        let busy = m.v4.iter().filter(|s| !s.is_empty()).count();
        assert!(
            busy > SHARDS / 2,
            "sequential /32s use {busy} of {SHARDS} shards"
        );
        let busy6 = m.v6.iter().filter(|s| !s.is_empty()).count();
        assert!(
            busy6 > SHARDS / 2,
            "sequential /64s use {busy6} of {SHARDS} shards"
        );
        let mut sum = 0u64;
        for (prefix, v) in m.iter() {
            assert_eq!(m.get(&prefix), Some(v));
            sum += u64::from(*v);
        }
        assert_eq!(sum, 2 * (0..5000u64).sum::<u64>());
        m.retain(|p, _| p.addr().is_ipv4());
        assert_eq!(m.len(), 5000);
        assert!(m.capacity() >= 5000);
    }

    #[test]
    fn entries_are_smaller_than_with_ipnet_keys() {
        assert_eq!(std::mem::size_of::<(V4Key, u64)>(), 16);
        assert!(std::mem::size_of::<(IpNet, u64)>() > 16);
    }
}
