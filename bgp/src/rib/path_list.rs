//! [`PathList`]: the paths of one destination, stored inline when there is just one (the
//! usual case in a large table) so a single-path prefix costs no heap allocation.

use std::ops::{Deref, DerefMut};

use super::loc_rib::Path;

/// A list of paths that derefs to `[Path]`. 16 bytes: the variant tag lives in a niche of
/// the inline path.
#[derive(Debug, Clone, Default)]
pub(super) enum PathList {
    #[default]
    Empty,
    One(Path),
    // A thin pointer on purpose: a bare Vec (24 bytes) would make every destination bigger
    // to save one allocation on the rare multi-path prefix.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Path>>),
}

impl PathList {
    pub(super) fn push(&mut self, path: Path) {
        *self = match std::mem::take(self) {
            PathList::Empty => PathList::One(path),
            PathList::One(first) => PathList::Many(Box::new(vec![first, path])),
            PathList::Many(mut v) => {
                // Most multi-path prefixes have two or three paths: grow one at a time.
                v.reserve_exact(1);
                v.push(path);
                PathList::Many(v)
            }
        };
    }

    /// Remove and return the path at `index` (`None` when out of range).
    pub(super) fn remove(&mut self, index: usize) -> Option<Path> {
        if index >= self.len() {
            return None;
        }
        match std::mem::take(self) {
            PathList::Empty => None,
            PathList::One(p) => Some(p),
            PathList::Many(mut v) => {
                let removed = v.remove(index);
                *self = match v.len() {
                    0 => PathList::Empty,
                    1 => v.pop().map(PathList::One).unwrap_or_default(),
                    _ => PathList::Many(v),
                };
                Some(removed)
            }
        }
    }
}

impl Deref for PathList {
    type Target = [Path];

    fn deref(&self) -> &[Path] {
        match self {
            PathList::Empty => &[],
            PathList::One(p) => std::slice::from_ref(p),
            PathList::Many(v) => v,
        }
    }
}

impl DerefMut for PathList {
    fn deref_mut(&mut self) -> &mut [Path] {
        match self {
            PathList::Empty => &mut [],
            PathList::One(p) => std::slice::from_mut(p),
            PathList::Many(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PathAttributes;
    use std::sync::Arc;

    fn path(peer: u32) -> Path {
        Path {
            stale: false,
            attrs: Arc::new(PathAttributes::default()),
            peer,
            accepted: true,
        }
    }

    fn peers(l: &PathList) -> Vec<u32> {
        l.iter().map(|p| p.peer).collect()
    }

    #[test]
    fn push_remove_and_slice_view() {
        let mut l = PathList::default();
        assert!(l.is_empty());
        l.push(path(1));
        assert!(matches!(l, PathList::One(_)));
        l.push(path(2));
        l.push(path(3));
        assert_eq!(peers(&l), vec![1, 2, 3]);
        l.swap(0, 2);
        assert_eq!(peers(&l), vec![3, 2, 1]);
        assert_eq!(l.remove(1).map(|p| p.peer), Some(2));
        assert_eq!(l.remove(5).map(|p| p.peer), None);
        assert_eq!(l.remove(0).map(|p| p.peer), Some(3));
        assert!(matches!(l, PathList::One(_)), "back to inline");
        assert_eq!(peers(&l), vec![1]);
        if let Some(p) = l.first_mut() {
            p.peer = 9;
        }
        assert_eq!(l.remove(0).map(|p| p.peer), Some(9));
        assert!(matches!(l, PathList::Empty));
        assert_eq!(l.remove(0).map(|p| p.peer), None);
    }

    #[test]
    fn one_inline_path_costs_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Path>(), 16);
        assert_eq!(std::mem::size_of::<PathList>(), 16);
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn destination_is_twenty_four_bytes() {
        // The Loc-RIB's bucket: 5-byte IPv4 key + padding + Destination = 32 bytes.
        assert_eq!(
            std::mem::size_of::<super::super::loc_rib::Destination>(),
            24
        );
    }
}
