//! The speaker's validated runtime configuration (built by the agent from YAML or from
//! Kubernetes state); plain data, no parsing here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::network::TransportOptions;
use crate::rib::RouteFilter;
use crate::types::{Asn, Family};

/// Configuration of the whole speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerConfig {
    pub router_id: Ipv4Addr,
    pub asn: Asn,
    /// `None` = do not listen (active sessions only).
    pub listen: Option<SocketAddr>,
    /// ECMP width (1 = no multipath).
    pub max_paths: usize,
    /// Route-reflector cluster id; `None` = router id when acting as reflector.
    pub cluster_id: Option<Ipv4Addr>,
    /// Old kernel routes are removed once every neighbor has sent End-of-RIB, or after this.
    pub convergence_timeout: Duration,
    /// Graceful restart (RFC 4724, RFC 8538); `None` = not advertised: every session end
    /// flushes the peer's routes here and ours there.
    pub graceful_restart: Option<GracefulRestartConfig>,
    pub neighbors: Vec<NeighborConfig>,
}

/// Graceful restart settings of the speaker (both roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// Advertised restart time in seconds (at most 4095): how long peers keep our routes
    /// while the session is down.
    pub restart_time: u16,
    /// Helper: how long a restarted peer's stale routes are kept once its session is back,
    /// waiting for its End-of-RIB.
    pub stale_routes_time: Duration,
    /// This run is a restart and the forwarding state survived it (the kernel still holds our
    /// routes): the OPENs carry the Restart State bit and the Forwarding State bits, and
    /// End-of-RIB is sent once routing has converged (every peer's End-of-RIB, or the
    /// convergence timeout), so peers keep our old routes until our table is complete.
    pub restarting: bool,
    /// Helper: keep a peer's routes when its hold timer expires (the RFC 8538 reading). Off
    /// by default: a silent peer is taken for a dead node and its routes go at once; a
    /// restarting peer closes its TCP connection, which keeps them either way.
    pub keep_on_hold_timer_expiry: bool,
}

impl Default for GracefulRestartConfig {
    fn default() -> Self {
        GracefulRestartConfig {
            restart_time: 120,
            stale_routes_time: Duration::from_secs(360),
            restarting: false,
            keep_on_hold_timer_expiry: false,
        }
    }
}

impl GracefulRestartConfig {
    /// Largest restart time the capability can carry (12 bits).
    pub const MAX_RESTART_TIME: u16 = 4095;
}

/// One configured neighbor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborConfig {
    pub address: IpAddr,
    /// TCP port to connect to (179).
    pub port: u16,
    pub asn: Asn,
    /// Never connect; only accept.
    pub passive: bool,
    /// Proposed hold time in seconds (0 or >= 3).
    pub hold_time: u16,
    /// Base of the connect-retry backoff.
    pub connect_retry: Duration,
    pub password: Option<String>,
    pub ttl_security: bool,
    pub local_address: Option<IpAddr>,
    pub route_reflector_client: bool,
    pub families: Vec<Family>,
    pub import: RouteFilter,
    pub export: RouteFilter,
    /// BFD (RFC 5880/5881) towards this neighbor; a BFD Down takes the session down at once
    /// and its routes out (no graceful restart). `None` = off.
    pub bfd: Option<BfdTimers>,
}

/// Local BFD timers of one neighbor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdTimers {
    /// Required Min RX Interval.
    pub min_rx: Duration,
    /// Desired Min TX Interval.
    pub min_tx: Duration,
    /// Detect Mult.
    pub multiplier: u8,
}

impl Default for BfdTimers {
    fn default() -> Self {
        BfdTimers {
            min_rx: Duration::from_millis(300),
            min_tx: Duration::from_millis(300),
            multiplier: 3,
        }
    }
}

impl NeighborConfig {
    /// A neighbor with routelet's defaults.
    pub fn new(address: IpAddr, asn: Asn) -> NeighborConfig {
        NeighborConfig {
            address,
            port: 179,
            asn,
            passive: false,
            hold_time: 90,
            connect_retry: Duration::from_secs(5),
            password: None,
            ttl_security: false,
            local_address: None,
            route_reflector_client: false,
            families: vec![Family::of_addr(&address)],
            import: RouteFilter::All,
            export: RouteFilter::All,
            bfd: None,
        }
    }

    pub fn transport(&self) -> TransportOptions {
        TransportOptions {
            password: self.password.clone(),
            ttl_security: self.ttl_security,
            local_address: self.local_address,
        }
    }

    /// IPv4 over an IPv6 session needs RFC 8950 extended next hop.
    pub fn wants_extended_next_hop(&self) -> bool {
        self.address.is_ipv6() && self.families.contains(&Family::Ipv4Unicast)
    }
}
