//! The CNI plugin `routelet-cni` (CNI spec 1.1: ADD, DEL, CHECK, STATUS, VERSION, GC) run
//! by the container runtime once per operation, plus the conflist the agent writes for it.
//! See docs/cni.md.

pub mod commands;
pub mod config;
pub mod conflist;
pub mod env;
pub mod ipam;
pub mod link;
pub mod result;

pub use commands::main;
pub use link::CNI_ROUTE_PROTOCOL;
