//! `routelet lab`: pieces that let a whole cluster run on one machine (for now the Kubernetes
//! API stand-in).

pub mod apiserver;
