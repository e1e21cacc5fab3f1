//! `routelet lab`: a whole cluster on one machine in network namespaces — the Kubernetes API
//! stand-in (`apiserver`), and `up | check | down` (topology, ToR, agents under a supervisor,
//! pods through the CNI plugin, a LoadBalancer Service, probes).

pub mod api;
pub mod apiserver;
pub mod check;
pub mod cmd;
pub mod down;
pub mod error;
pub mod responder;
pub mod state;
pub mod supervise;
pub mod topology;
pub mod tor;
pub mod up;
