//! Everything that talks to (or is shaped by) the Kubernetes API: the projection of API
//! objects into the desired-state `Snapshot` (pure) and the watches that keep local caches.

pub mod client;
pub mod convert;
pub mod rbac;
pub mod watch;
