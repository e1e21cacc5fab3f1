//! routelet's BGP-4 speaker library: wire codec glue, sans-IO session FSM, RIB and the tokio
//! tasks that drive them. Knows nothing of Kubernetes or netlink.

pub mod bfd;
pub mod config;
pub mod fsm;
pub mod neighbor;
pub mod neighbor_plan;
pub mod network;
pub mod packet;
pub mod prefix_map;
pub mod rib;
pub mod speaker;
pub mod status;
pub mod types;
