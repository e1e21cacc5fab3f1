//! Heap allocator tuning for the routelet process (glibc malloc only).
//!
//! A node agent holding a full table (a million routes) keeps most of its memory in a few
//! large hash tables that grow by rehashing, and its tokio worker threads allocate path
//! attributes on one thread and free them on another. With glibc's defaults that costs
//! 25–50 MB of fragmentation on top of the live heap, varying from run to run (measured in
//! BENCHMARKS.md): each thread gets its own arena (up to 8 per CPU), and after the first large
//! block is freed the dynamic mmap threshold climbs to 32 MB, so later table rehashes land in
//! the arenas and leave holes there. routelet therefore asks for
//!
//! * at most [`ARENA_MAX`] arenas, and
//! * a fixed mmap threshold of [`MMAP_THRESHOLD`] bytes: every large block (hash table shards,
//!   netlink batches) is its own mapping and goes back to the kernel when freed.
//!
//! An operator who sets `MALLOC_ARENA_MAX` or `MALLOC_MMAP_THRESHOLD_` in the environment keeps
//! glibc's reading of it; those knobs are not overridden.
#![allow(unsafe_code)] // one libc::mallopt call; see `set`

/// Maximum number of malloc arenas.
pub const ARENA_MAX: i32 = 2;
/// Allocations of at least this many bytes are served by `mmap`.
pub const MMAP_THRESHOLD: i32 = 128 * 1024;

/// What [`tune`] did, for the start-up log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocatorTuning {
    /// `Some(n)` if the arena limit was set by routelet.
    pub arena_max: Option<i32>,
    /// `Some(n)` if the mmap threshold was set by routelet.
    pub mmap_threshold: Option<i32>,
}

/// Applies the tuning described in the module docs. Call once, first thing in `main`,
/// before any thread is started.
pub fn tune() -> AllocatorTuning {
    let arena_max = (std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && set(Knob::ArenaMax, ARENA_MAX))
    .then_some(ARENA_MAX);
    let mmap_threshold = (std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none()
        && set(Knob::MmapThreshold, MMAP_THRESHOLD))
    .then_some(MMAP_THRESHOLD);
    AllocatorTuning {
        arena_max,
        mmap_threshold,
    }
}

enum Knob {
    ArenaMax,
    MmapThreshold,
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set(knob: Knob, value: i32) -> bool {
    let param = match knob {
        Knob::ArenaMax => libc::M_ARENA_MAX,
        Knob::MmapThreshold => libc::M_MMAP_THRESHOLD,
    };
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread
    // exists, and glibc takes its own lock anyway. It returns 1 on success, 0 on error.
    unsafe { libc::mallopt(param, value) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set(_knob: Knob, _value: i32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Number of blocks glibc currently serves with `mmap`.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn mmapped_blocks() -> usize {
        // SAFETY: mallinfo2 only reads allocator statistics.
        unsafe { libc::mallinfo2() }.hblks
    }

    #[test]
    fn tuning_is_applied_unless_the_environment_sets_it() {
        let tuning = tune();
        let expect = |var: &str, value: i32| {
            if cfg!(all(target_os = "linux", target_env = "gnu")) && std::env::var_os(var).is_none()
            {
                Some(value)
            } else {
                None
            }
        };
        assert_eq!(tuning.arena_max, expect("MALLOC_ARENA_MAX", ARENA_MAX));
        assert_eq!(
            tuning.mmap_threshold,
            expect("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD)
        );
    }

    /// The point of the fixed threshold: after a large block was freed (which, untuned, raises
    /// glibc's dynamic threshold to that block's size), the next large block is still mapped
    /// on its own instead of being carved out of an arena.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn large_blocks_stay_mmapped_after_a_large_free() {
        if tune().mmap_threshold.is_none() {
            return; // the environment chose the threshold; nothing of ours to check
        }
        let first = std::hint::black_box(vec![1u8; 8 << 20]);
        drop(first);
        let before = mmapped_blocks();
        let second = std::hint::black_box(vec![2u8; 4 * MMAP_THRESHOLD as usize]);
        assert_eq!(
            mmapped_blocks(),
            before + 1,
            "a 512 KiB block is its own mapping"
        );
        assert_eq!(second[second.len() - 1], 2);
    }
}
