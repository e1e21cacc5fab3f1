//! The datapath kernel layer: the VXLAN device, its VTEP neighbour and FDB entries per remote
//! node, and the reachability facts (connected subnets, route lookups, link changes) the
//! controller uses to choose between direct routes and the tunnel.
//!
//! * [`vxlan`]: create / repair / remove the VXLAN device ([`ensure_vxlan`], [`remove_vxlan`]);
//! * [`peers`]: VTEP neighbour + FDB reconciliation ([`sync_peers`], [`dump_peers`]);
//! * [`links`]: link and address look-ups, [`connected_subnets`], [`route_lookup`];
//! * [`reach`]: pure helpers ([`classify`], [`vtep_mac`], [`vxlan_mtu`], MAC text);
//! * [`watch`]: link/address change notifications ([`watch_links`]), [`set_forwarding`].
//!
//! Everything works in the network namespace of the thread that opened the [`Netlink`]
//! connection.

mod error;
mod links;
mod peers;
mod reach;
mod vxlan;
mod watch;

pub use error::DatapathError;
pub use links::{
    connected_subnets, link_by_name, link_with_address, route_lookup, LinkInfo, RouteLookup,
};
pub use peers::{
    dump_peers, plan_peers, sync_peers, KernelPeers, PeerOp, PeerSyncReport, VtepPeer,
};
pub use reach::{classify, format_mac, parse_mac, vtep_mac, vxlan_mtu, ConnectedSubnet, Reach};
pub use vxlan::{ensure_vxlan, remove_vxlan, VxlanSpec};
pub use watch::{set_forwarding, watch_links};

/// Result of datapath operations.
pub type Result<T> = std::result::Result<T, DatapathError>;

/// An rtnetlink connection (its I/O task runs on the tokio runtime that created it) in the
/// network namespace of the thread that called [`Netlink::new`].
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Open an rtnetlink socket in the calling thread's network namespace and spawn its
    /// connection task on the current tokio runtime.
    pub fn new() -> Result<Netlink> {
        tokio::runtime::Handle::try_current().map_err(|_| DatapathError::NoRuntime)?;
        let (connection, handle, _) = rtnetlink::new_connection().map_err(DatapathError::Socket)?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// Wrap an existing handle (its connection task must already be running).
    pub fn from_handle(handle: rtnetlink::Handle) -> Netlink {
        Netlink { handle }
    }

    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }
}
