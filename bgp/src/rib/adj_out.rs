//! Adj-RIB-Out of one peer: what was advertised, what changed since the last drain (flaps in
//! between coalesce), and batching of the changes for packing into UPDATEs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::types::{Family, PathAttributes, Prefix};

/// A group of changes that fits one kind of UPDATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutBatch {
    Withdraw {
        family: Family,
        prefixes: Vec<Prefix>,
    },
    Announce {
        family: Family,
        attrs: Arc<PathAttributes>,
        prefixes: Vec<Prefix>,
    },
}

/// One peer's Adj-RIB-Out, owned by the event loop.
#[derive(Debug, Default)]
pub struct AdjRibOut {
    /// What the peer was last sent (after the last drain).
    advertised: HashMap<Prefix, Arc<PathAttributes>>,
    /// Desired state differing from `advertised` (`None` = withdraw).
    pending: HashMap<Prefix, Option<Arc<PathAttributes>>>,
}

fn same(a: Option<&Arc<PathAttributes>>, b: Option<&Arc<PathAttributes>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => Arc::ptr_eq(x, y) || **x == **y,
        _ => false,
    }
}

impl AdjRibOut {
    pub fn new() -> AdjRibOut {
        AdjRibOut::default()
    }

    /// Record the desired advertisement for `prefix` (`None` = withdrawn). A change that
    /// returns to what was last sent cancels the pending one.
    pub fn set(&mut self, prefix: Prefix, attrs: Option<Arc<PathAttributes>>) {
        if same(attrs.as_ref(), self.advertised.get(&prefix)) {
            self.pending.remove(&prefix);
        } else {
            self.pending.insert(prefix, attrs);
        }
    }

    /// Make the full desired table `desired` pending (export re-run after a policy or role
    /// change): only the difference to what was sent is queued, and prefixes advertised but
    /// no longer desired are withdrawn.
    pub fn resync(&mut self, desired: Vec<(Prefix, Arc<PathAttributes>)>) {
        let desired: HashMap<Prefix, Arc<PathAttributes>> = desired.into_iter().collect();
        self.pending.clear();
        let gone: Vec<Prefix> = self
            .advertised
            .keys()
            .filter(|p| !desired.contains_key(p))
            .copied()
            .collect();
        for prefix in gone {
            self.pending.insert(prefix, None);
        }
        for (prefix, attrs) in desired {
            self.set(prefix, Some(attrs));
        }
    }

    /// Whether `drain` would return anything.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Take every change since the last drain: withdrawals per family first, then
    /// announcements grouped by (family, attribute value). Prefixes are sorted.
    pub fn drain(&mut self) -> Vec<OutBatch> {
        let mut withdraws: BTreeMap<Family, Vec<Prefix>> = BTreeMap::new();
        // Group by attribute identity first (cheap), then merge equal values.
        let mut by_ptr: HashMap<(Family, usize), (Arc<PathAttributes>, Vec<Prefix>)> =
            HashMap::new();
        for (prefix, attrs) in self.pending.drain() {
            let family = Family::of_prefix(&prefix);
            match attrs {
                None => {
                    if self.advertised.remove(&prefix).is_some() {
                        withdraws.entry(family).or_default().push(prefix);
                    }
                }
                Some(attrs) => {
                    self.advertised.insert(prefix, Arc::clone(&attrs));
                    by_ptr
                        .entry((family, Arc::as_ptr(&attrs) as usize))
                        .or_insert_with(|| (attrs, Vec::new()))
                        .1
                        .push(prefix);
                }
            }
        }
        let mut by_value: HashMap<(Family, Arc<PathAttributes>), Vec<Prefix>> = HashMap::new();
        for ((family, _), (attrs, prefixes)) in by_ptr {
            by_value
                .entry((family, attrs))
                .or_default()
                .extend(prefixes);
        }
        let mut out: Vec<OutBatch> = withdraws
            .into_iter()
            .map(|(family, mut prefixes)| {
                prefixes.sort_unstable();
                OutBatch::Withdraw { family, prefixes }
            })
            .collect();
        let mut announces: Vec<OutBatch> = by_value
            .into_iter()
            .map(|((family, attrs), mut prefixes)| {
                prefixes.sort_unstable();
                OutBatch::Announce {
                    family,
                    attrs,
                    prefixes,
                }
            })
            .collect();
        announces.sort_by_key(batch_order);
        out.extend(announces);
        out
    }

    /// Prefixes currently advertised (as of the last drain).
    pub fn advertised(&self) -> usize {
        self.advertised.len()
    }

    /// What was last sent for `prefix`.
    pub fn get(&self, prefix: &Prefix) -> Option<&Arc<PathAttributes>> {
        self.advertised.get(prefix)
    }

    /// The session went down: forget everything.
    pub fn clear(&mut self) {
        self.advertised.clear();
        self.pending.clear();
    }
}

fn batch_order(b: &OutBatch) -> (Family, Option<Prefix>) {
    match b {
        OutBatch::Withdraw { family, prefixes }
        | OutBatch::Announce {
            family, prefixes, ..
        } => (*family, prefixes.first().copied()),
    }
}

#[cfg(test)]
mod resync_tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().expect("test prefix")
    }

    #[test]
    fn resync_queues_only_the_difference() {
        let a = Arc::new(PathAttributes::default());
        let mut out = AdjRibOut::new();
        out.set(p("10.0.0.0/24"), Some(a.clone()));
        out.set(p("10.0.1.0/24"), Some(a.clone()));
        out.drain();
        out.resync(vec![
            (p("10.0.0.0/24"), a.clone()),
            (p("10.0.2.0/24"), a.clone()),
        ]);
        assert_eq!(
            out.drain(),
            vec![
                OutBatch::Withdraw {
                    family: Family::Ipv4Unicast,
                    prefixes: vec![p("10.0.1.0/24")],
                },
                OutBatch::Announce {
                    family: Family::Ipv4Unicast,
                    attrs: a.clone(),
                    prefixes: vec![p("10.0.2.0/24")],
                },
            ]
        );
        out.resync(vec![(p("10.0.0.0/24"), a.clone()), (p("10.0.2.0/24"), a)]);
        assert!(!out.has_pending());
        out.resync(Vec::new());
        assert_eq!(out.drain().len(), 1);
        assert_eq!(out.advertised(), 0);
    }
}
