//! BGP transport sockets: the listener and outgoing connections, with TCP MD5 (RFC 2385),
//! GTSM (RFC 5082) and a configurable source address.

mod sockopt;

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub use sockopt::MD5_MAX_KEY_LEN;

/// TTL/hop limit sent with GTSM, and the minimum accepted (one hop away).
const GTSM_TTL: u32 = 255;
const GTSM_MIN_TTL: u8 = 254;

/// Per-connection transport options of one neighbor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportOptions {
    pub password: Option<String>,
    pub ttl_security: bool,
    pub local_address: Option<IpAddr>,
}

/// Maps v4-mapped IPv6 addresses (from a dual-stack socket) back to IPv4.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn apply_gtsm(sock: &Socket, v6: bool) -> io::Result<()> {
    if v6 {
        sock.set_unicast_hops_v6(GTSM_TTL)?;
        // v4-mapped traffic on a v6 socket uses the IPv4 TTL.
        let _ = sock.set_ttl_v4(GTSM_TTL);
    } else {
        sock.set_ttl_v4(GTSM_TTL)?;
    }
    sockopt::set_min_ttl(sock, v6, GTSM_MIN_TTL)
}

/// Open an outgoing BGP connection to `peer` with the neighbor's transport options.
pub async fn connect(
    peer: SocketAddr,
    opts: &TransportOptions,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let v6 = peer.is_ipv6();
    let sock = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    if let Some(pw) = &opts.password {
        sockopt::set_tcp_md5(&sock, peer.ip(), pw.as_bytes(), v6)?;
    }
    if opts.ttl_security {
        apply_gtsm(&sock, v6)?;
    }
    if let Some(local) = opts.local_address {
        sock.set_reuse_address(true)?;
        sock.bind(&SocketAddr::new(local, 0).into())?;
    }
    let socket = TcpSocket::from_std_stream(sock.into());
    match tokio::time::timeout(timeout, socket.connect(peer)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// The passive side: one listening socket for all neighbors.
#[derive(Debug)]
pub struct BgpListener {
    listener: TcpListener,
    v6: bool,
}

impl BgpListener {
    /// Bind `addr`. An unspecified IPv6 address gives a dual-stack socket, falling back to
    /// IPv4 only (`0.0.0.0`) on a host without IPv6.
    pub fn bind(addr: SocketAddr) -> io::Result<BgpListener> {
        match Self::bind_exact(addr) {
            Err(e)
                if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                    && e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
            {
                Self::bind_exact(SocketAddr::new(
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    addr.port(),
                ))
            }
            r => r,
        }
    }

    fn bind_exact(addr: SocketAddr) -> io::Result<BgpListener> {
        let v6 = addr.is_ipv6();
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        if v6 {
            sock.set_only_v6(addr.ip() != IpAddr::V6(Ipv6Addr::UNSPECIFIED))?;
        }
        // Send with TTL 255 on every session so peers using GTSM accept our SYN-ACK; the
        // minimum-TTL check is applied per neighbor after accept.
        if v6 {
            sock.set_unicast_hops_v6(GTSM_TTL)?;
        }
        if !v6 || addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
            let _ = sock.set_ttl_v4(GTSM_TTL);
        }
        // The minimum TTL differs per neighbor, so it cannot be enforced on the shared listener
        // before accept; the saved SYN lets `secure_accepted` check what the peer really sent.
        sockopt::set_save_syn(&sock)?;
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        sock.listen(128)?;
        let listener = TcpListener::from_std(sock.into())?;
        Ok(BgpListener { listener, v6 })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Install the TCP MD5 key for a neighbor on the listening socket (accepted connections
    /// inherit it); an empty key removes it.
    pub fn set_password(&self, peer: IpAddr, key: &str) -> io::Result<()> {
        sockopt::set_tcp_md5(&self.listener, peer, key.as_bytes(), self.v6)
    }

    /// Remove the TCP MD5 key of a neighbor from the listening socket.
    pub fn remove_password(&self, peer: IpAddr) -> io::Result<()> {
        self.set_password(peer, "")
    }

    /// Accept one connection; returns the stream and the peer's canonical address.
    pub async fn accept(&self) -> io::Result<(TcpStream, IpAddr)> {
        let (stream, addr) = self.listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, canonical(addr.ip())))
    }
}

/// Apply GTSM to an accepted connection (per neighbor, so not on the shared listener).
///
/// Segments that arrived between the handshake and this call (typically the peer's OPEN) are
/// already queued and would slip past `IP_MINTTL`, so the TTL of the connection's SYN is
/// checked too: a connection that did not arrive with TTL >= 254 is refused
/// (`PermissionDenied`) before a byte of it is read. The saved SYN is read (and freed) for
/// every accepted connection.
pub fn secure_accepted(stream: &TcpStream, ttl_security: bool) -> io::Result<()> {
    let syn_ttl = sockopt::saved_syn_ttl(stream).ok().flatten();
    if !ttl_security {
        return Ok(());
    }
    if let Some(ttl) = syn_ttl {
        if ttl < GTSM_MIN_TTL {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("GTSM: connection arrived with TTL {ttl}, below {GTSM_MIN_TTL}"),
            ));
        }
    }
    let v6 = stream.local_addr()?.is_ipv6();
    let sock = socket2::SockRef::from(stream);
    apply_gtsm(&sock, v6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[tokio::test]
    async fn connect_and_accept_over_loopback_with_md5() {
        let listener =
            BgpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener
            .set_password(IpAddr::V4(Ipv4Addr::LOCALHOST), "s3cret")
            .expect("md5 on listener");
        let opts = TransportOptions {
            password: Some("s3cret".into()),
            ttl_security: true,
            local_address: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };
        let (client, server) = tokio::join!(connect(addr, &opts, Duration::from_secs(2)), async {
            tokio::time::timeout(Duration::from_secs(2), listener.accept()).await
        });
        let client = client.expect("connect with md5");
        let (server, peer) = server.expect("accept in time").expect("accept");
        assert_eq!(peer, IpAddr::V4(Ipv4Addr::LOCALHOST));
        secure_accepted(&server, true).expect("gtsm on accepted");
        drop(client);
    }

    #[tokio::test]
    async fn gtsm_refuses_a_connection_that_arrived_with_a_low_ttl() {
        let listener =
            BgpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Without ttl_security the client sends the default TTL (64 on loopback).
        let plain = TransportOptions::default();
        let (client, server) = tokio::join!(connect(addr, &plain, Duration::from_secs(2)), async {
            tokio::time::timeout(Duration::from_secs(2), listener.accept()).await
        });
        let _client = client.expect("connect");
        let (server, _) = server.expect("accept in time").expect("accept");
        let err = secure_accepted(&server, true).expect_err("low TTL must be refused");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }

    #[tokio::test]
    async fn md5_mismatch_never_connects() {
        let listener =
            BgpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener
            .set_password(IpAddr::V4(Ipv4Addr::LOCALHOST), "right")
            .expect("md5 on listener");
        let opts = TransportOptions {
            password: Some("wrong".into()),
            ..Default::default()
        };
        let r = connect(addr, &opts, Duration::from_millis(700)).await;
        assert!(
            r.is_err(),
            "a wrong MD5 key must not complete the handshake"
        );
    }

    #[test]
    fn canonical_unmaps_v4() {
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
        assert_eq!(canonical(mapped), IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
    }
}
