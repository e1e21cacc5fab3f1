//! The agent's reconcile loop: cluster caches -> desired state -> speaker and FIB, whole
//! states at a time (`plan` decides what changed).

pub mod blocks;
pub mod datapath;
pub mod drain;
pub mod events;
pub mod lb;
pub mod lease;
pub mod plan;
pub mod publish;
pub mod run;
