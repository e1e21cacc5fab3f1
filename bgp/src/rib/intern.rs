//! Attribute-set interner: one `Arc<PathAttributes>` per distinct value, shared by every path
//! that carries it; entries go away when no path uses them any more.

use std::collections::HashSet;
use std::sync::Arc;

use crate::types::PathAttributes;

/// Never sweep below this many entries (sweeping is O(entries)).
const MIN_SWEEP: usize = 1024;

/// Interns attribute sets by value.
///
/// Lifetime: the RIB hands every reference it drops back through [`AttrInterner::release`],
/// which removes the entry when the released reference was the last one outside the
/// interner. References kept elsewhere (e.g. in `LocRibChange`s held by consumers) delay
/// that; [`AttrInterner::sweep`] (run automatically when the table has doubled) collects
/// those entries later.
#[derive(Debug)]
pub(super) struct AttrInterner {
    set: HashSet<Arc<PathAttributes>>,
    sweep_at: usize,
}

impl Default for AttrInterner {
    fn default() -> Self {
        AttrInterner {
            set: HashSet::new(),
            sweep_at: MIN_SWEEP,
        }
    }
}

impl AttrInterner {
    /// The shared `Arc` for `attrs`' value (created if new).
    pub(super) fn intern(&mut self, attrs: PathAttributes) -> Arc<PathAttributes> {
        if let Some(existing) = self.set.get(&attrs) {
            return Arc::clone(existing);
        }
        if self.set.len() >= self.sweep_at {
            self.sweep();
        }
        let arc = Arc::new(attrs);
        self.set.insert(Arc::clone(&arc));
        arc
    }

    /// Drop one reference obtained from [`AttrInterner::intern`].
    pub(super) fn release(&mut self, attrs: Arc<PathAttributes>) {
        // 2 = the interner's own reference + the one being released.
        if Arc::strong_count(&attrs) == 2 {
            let ours = self
                .set
                .get(&*attrs)
                .is_some_and(|entry| Arc::ptr_eq(entry, &attrs));
            if ours {
                self.set.remove(&*attrs);
            }
        }
    }

    /// Remove every entry nobody else references.
    pub(super) fn sweep(&mut self) {
        self.set.retain(|a| Arc::strong_count(a) > 1);
        self.sweep_at = (self.set.len() * 2).max(MIN_SWEEP);
    }

    /// Entries still referenced outside the interner.
    pub(super) fn live(&self) -> usize {
        self.set.iter().filter(|a| Arc::strong_count(a) > 1).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::AsPath;

    fn attrs(asn: u32) -> PathAttributes {
        PathAttributes {
            as_path: AsPath::from_sequence(vec![asn]),
            ..PathAttributes::default()
        }
    }

    #[test]
    fn equal_values_share_one_arc_and_last_release_removes_it() {
        let mut i = AttrInterner::default();
        let a = i.intern(attrs(1));
        let b = i.intern(attrs(1));
        let c = i.intern(attrs(2));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(i.live(), 2);
        i.release(a);
        assert_eq!(i.set.len(), 2, "still used by b");
        i.release(b);
        assert_eq!(i.set.len(), 1, "last user gone");
        let held_elsewhere = Arc::clone(&c);
        i.release(c);
        assert_eq!(
            i.set.len(),
            1,
            "an outside holder keeps it until it is dropped"
        );
        drop(held_elsewhere);
        i.sweep();
        assert_eq!(i.set.len(), 0);
    }
}
