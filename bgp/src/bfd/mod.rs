//! BFD (RFC 5880 / RFC 5881): single-hop asynchronous mode over UDP 3784, no echo, no
//! authentication. Public API: [`Bfd`] handle, peer config, events and status.

pub mod packet;
pub mod session;
