//! routelet agent library: the node-local pieces of the agent (kernel FIB programming, ...)
//! that the `routelet` binary wires together.

pub mod fib;
