//! Everything that talks to (or is shaped by) the Kubernetes API: the projection of API
//! objects into the desired-state `Snapshot` (pure); the watches come next.

pub mod convert;
