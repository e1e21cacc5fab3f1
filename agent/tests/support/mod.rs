//! Shared helpers for agent integration tests.

pub mod netns;
