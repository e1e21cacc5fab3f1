//! Pod address blocks (`pod_cidr_source: blocks`), pure: which `block_size` blocks of the
//! cluster CIDRs belong to which node, how a node picks a new block, and which claims are
//! released when their node is gone. The table lives in one ConfigMap (`blocks.json`, a JSON
//! object block -> node) that agents update with resourceVersion-checked writes, so two agents
//! racing for a block never both win: the loser re-reads and picks again.

use std::collections::{BTreeMap, BTreeSet};

use bgp::types::Prefix;

/// Key of the claim table inside the ConfigMap's `data`.
pub const TABLE_KEY: &str = "blocks.json";

/// Block -> owning node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockTable {
    pub claims: BTreeMap<Prefix, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockTableError {
    #[error("{TABLE_KEY} is not a JSON object of block -> node: {0}")]
    Json(String),
    #[error("{TABLE_KEY}: `{0}` is not a block (CIDR without host bits)")]
    BadBlock(String),
}

impl BlockTable {
    /// Parses the ConfigMap value (absent = empty table).
    pub fn parse(text: Option<&str>) -> Result<BlockTable, BlockTableError> {
        let Some(text) = text else {
            return Ok(BlockTable::default());
        };
        let raw: BTreeMap<String, String> =
            serde_json::from_str(text).map_err(|e| BlockTableError::Json(e.to_string()))?;
        let mut claims = BTreeMap::new();
        for (k, v) in raw {
            let p: Prefix = k
                .parse()
                .map_err(|_| BlockTableError::BadBlock(k.clone()))?;
            if p.trunc() != p {
                return Err(BlockTableError::BadBlock(k));
            }
            claims.insert(p, v);
        }
        Ok(BlockTable { claims })
    }

    /// The ConfigMap value.
    pub fn to_json(&self) -> String {
        let raw: BTreeMap<String, &String> = self
            .claims
            .iter()
            .map(|(p, n)| (p.to_string(), n))
            .collect();
        serde_json::to_string(&raw).unwrap_or_else(|_| "{}".into())
    }

    /// Blocks owned by `node`.
    pub fn blocks_of(&self, node: &str) -> Vec<Prefix> {
        self.claims
            .iter()
            .filter(|(_, n)| n.as_str() == node)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Drops the claims of nodes not in `nodes`; returns the released blocks.
    pub fn release_missing(&mut self, nodes: &BTreeSet<String>) -> Vec<Prefix> {
        let gone: Vec<Prefix> = self
            .claims
            .iter()
            .filter(|(_, n)| !nodes.contains(*n))
            .map(|(p, _)| *p)
            .collect();
        for p in &gone {
            self.claims.remove(p);
        }
        gone
    }

    /// A free block of `size` in `cidr` for `node`, or `None` when the CIDR is full. The search
    /// starts at an offset derived from the node name, so agents starting together mostly try
    /// different blocks instead of all racing for the first one.
    pub fn free_block(&self, cidr: &Prefix, size: u8, node: &str) -> Option<Prefix> {
        let count = block_count(cidr, size)?;
        let start = name_hash(node) % count;
        (0..count)
            .map(|i| (start + i) % count)
            .filter_map(|i| nth_block(cidr, size, i))
            .find(|b| !self.claims.keys().any(|c| c.contains(b) || b.contains(c)))
    }
}

/// Number of `size` blocks in `cidr` (capped at 2^24: enough choice for any cluster).
fn block_count(cidr: &Prefix, size: u8) -> Option<u64> {
    let max = match cidr {
        Prefix::V4(_) => 32,
        Prefix::V6(_) => 128,
    };
    if size < cidr.prefix_len() || size > max {
        return None;
    }
    let bits = u32::from(size - cidr.prefix_len()).min(24);
    Some(1u64 << bits)
}

fn nth_block(cidr: &Prefix, size: u8, i: u64) -> Option<Prefix> {
    match cidr {
        Prefix::V4(n) => {
            let step = 1u64 << (32 - u32::from(size));
            let base = u64::from(u32::from(n.network()));
            let addr = u32::try_from(base + i * step).ok()?;
            ipnet::Ipv4Net::new(addr.into(), size).ok().map(Prefix::V4)
        }
        Prefix::V6(n) => {
            let step = 1u128 << (128 - u32::from(size));
            let base = u128::from(n.network());
            let addr = base.checked_add(u128::from(i).checked_mul(step)?)?;
            ipnet::Ipv6Net::new(addr.into(), size).ok().map(Prefix::V6)
        }
    }
}

fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().expect("test prefix")
    }

    #[test]
    fn table_round_trip_and_bad_input() {
        let mut t = BlockTable::default();
        t.claims.insert(p("10.244.0.64/26"), "n1".into());
        t.claims.insert(p("fd00:10:244::40/122"), "n2".into());
        let back = BlockTable::parse(Some(&t.to_json())).expect("round trip");
        assert_eq!(back, t);
        assert_eq!(BlockTable::parse(None), Ok(BlockTable::default()));
        assert!(matches!(
            BlockTable::parse(Some("[")),
            Err(BlockTableError::Json(_))
        ));
        assert!(matches!(
            BlockTable::parse(Some(r#"{"10.244.0.65/26": "n1"}"#)),
            Err(BlockTableError::BadBlock(_))
        ));
        assert!(matches!(
            BlockTable::parse(Some(r#"{"x": "n1"}"#)),
            Err(BlockTableError::BadBlock(_))
        ));
    }

    #[test]
    fn free_blocks_fill_the_cidr_without_overlap() {
        let cidr = p("10.244.0.0/24");
        let mut t = BlockTable::default();
        for i in 0..4 {
            let node = format!("n{i}");
            let b = t.free_block(&cidr, 26, &node).expect("a /24 has four /26");
            assert!(cidr.contains(&b) && b.prefix_len() == 26);
            assert!(!t.claims.contains_key(&b));
            t.claims.insert(b, node);
        }
        assert_eq!(t.free_block(&cidr, 26, "n9"), None, "full");
        // A claim of another size that overlaps blocks them too.
        let mut t = BlockTable::default();
        t.claims.insert(p("10.244.0.0/25"), "old".into());
        for _ in 0..2 {
            let b = t.free_block(&cidr, 26, "n1").expect("upper half is free");
            assert!(p("10.244.0.128/25").contains(&b));
            t.claims.insert(b, "n1".into());
        }
        assert_eq!(t.free_block(&cidr, 26, "n1"), None);
        assert_eq!(t.blocks_of("n1").len(), 2);
        assert_eq!(
            t.free_block(&cidr, 20, "n1"),
            None,
            "block larger than the CIDR"
        );
    }

    #[test]
    fn different_nodes_start_at_different_blocks_and_v6_works() {
        let cidr = p("10.244.0.0/16");
        let t = BlockTable::default();
        let firsts: BTreeSet<Prefix> = (0..5)
            .filter_map(|i| t.free_block(&cidr, 26, &format!("node-{i}")))
            .collect();
        assert!(firsts.len() >= 4, "{firsts:?}");
        let v6 = p("fd00:10:244::/56");
        let b = t.free_block(&v6, 122, "n1").expect("v6 block");
        assert!(v6.contains(&b) && b.prefix_len() == 122);
    }

    #[test]
    fn release_claims_of_deleted_nodes() {
        let mut t = BlockTable::default();
        t.claims.insert(p("10.244.0.0/26"), "n1".into());
        t.claims.insert(p("10.244.0.64/26"), "gone".into());
        let nodes: BTreeSet<String> = ["n1".to_string()].into();
        assert_eq!(t.release_missing(&nodes), vec![p("10.244.0.64/26")]);
        assert_eq!(t.blocks_of("n1"), vec![p("10.244.0.0/26")]);
        assert_eq!(t.claims.len(), 1);
    }
}
