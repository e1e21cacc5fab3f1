//! routelet agent library: configuration, the local control socket, metrics, the kernel FIB
//! writer, the `speaker` runtime that wires them to the bgp crate, and `lab` (the Kubernetes API
//! stand-in).

pub mod agent_config;
pub mod allocator;
pub mod cni;
pub mod config;
pub mod control;
pub mod controller;
pub mod datapath;
pub mod datapath_config;
pub mod desired;
pub mod fib;
pub mod ipam;
pub mod k8s;
pub mod lab;
pub mod metrics;
pub mod netns;
pub mod speaker_cmd;
