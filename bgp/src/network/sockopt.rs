//! The socket options no safe crate offers: TCP_MD5SIG (RFC 2385), IP_MINTTL /
//! IPV6_MINHOPCOUNT (GTSM, RFC 5082) and TCP_SAVE_SYN / TCP_SAVED_SYN (the TTL of an accepted
//! connection's SYN). The only `unsafe` in the speaker lives here.
#![allow(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// Kernel `TCP_MD5SIG_MAXKEYLEN`.
pub const MD5_MAX_KEY_LEN: usize = 80;

/// Size of the kernel's `struct tcp_md5sig`: sockaddr_storage (128) + flags (1) + prefixlen (1)
/// + keylen (2) + ifindex (4) + key (80).
const TCP_MD5SIG_LEN: usize = 216;

/// Builds `struct tcp_md5sig` for `peer` as raw bytes. `v6_socket` selects the address form:
/// on an AF_INET6 socket an IPv4 peer is given as a v4-mapped address (the kernel then stores
/// it as an AF_INET key, which is what a dual-stack listener needs).
fn md5sig_bytes(peer: IpAddr, key: &[u8], v6_socket: bool) -> [u8; TCP_MD5SIG_LEN] {
    let mut buf = [0u8; TCP_MD5SIG_LEN];
    match (peer, v6_socket) {
        (IpAddr::V4(v4), false) => {
            buf[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            buf[4..8].copy_from_slice(&v4.octets());
        }
        (addr, _) => {
            let v6 = match addr {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            buf[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            // sin6_port (2..4) and sin6_flowinfo (4..8) stay zero.
            buf[8..24].copy_from_slice(&v6.octets());
        }
    }
    let keylen = key.len().min(MD5_MAX_KEY_LEN);
    buf[130..132].copy_from_slice(&(keylen as u16).to_ne_bytes());
    buf[136..136 + keylen].copy_from_slice(&key[..keylen]);
    buf
}

/// Install (or with an empty key, remove) the TCP MD5 key for `peer` on `sock`.
pub fn set_tcp_md5(
    sock: &impl AsRawFd,
    peer: IpAddr,
    key: &[u8],
    v6_socket: bool,
) -> io::Result<()> {
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP MD5 key longer than {MD5_MAX_KEY_LEN} bytes"),
        ));
    }
    let buf = md5sig_bytes(peer, key, v6_socket);
    // SAFETY: `buf` is a fully initialised `struct tcp_md5sig` of the size passed; the kernel
    // only reads it during the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            buf.as_ptr().cast(),
            TCP_MD5SIG_LEN as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_int(
    sock: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// GTSM receive side: drop segments whose TTL (hop limit) is below `min`.
pub fn set_min_ttl(sock: &impl AsRawFd, v6_socket: bool, min: u8) -> io::Result<()> {
    if v6_socket {
        set_int(sock, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, min.into())?;
        // A dual-stack socket may carry IPv4 too; IP_MINTTL also applies to v4-mapped traffic.
        let _ = set_int(sock, libc::IPPROTO_IP, libc::IP_MINTTL, min.into());
        Ok(())
    } else {
        set_int(sock, libc::IPPROTO_IP, libc::IP_MINTTL, min.into())
    }
}

/// Keep each incoming SYN's IP and TCP headers on the listener (`TCP_SAVE_SYN`), so the TTL a
/// connection arrived with can be checked after accept.
pub fn set_save_syn(sock: &impl AsRawFd) -> io::Result<()> {
    set_int(sock, libc::IPPROTO_TCP, libc::TCP_SAVE_SYN, 1)
}

/// The TTL (IPv4) or hop limit (IPv6) of the SYN that opened this accepted connection, from
/// `TCP_SAVED_SYN`. `None` when the listener did not save it (or it was already read: the kernel
/// hands it out once).
pub fn saved_syn_ttl(sock: &impl AsRawFd) -> io::Result<Option<u8>> {
    // IPv6 header (40) + options + TCP header with options (<= 60): 512 is ample.
    let mut buf = [0u8; 512];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is writable for `len` bytes and `len` is a live socklen_t the kernel updates.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_SAVED_SYN,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ttl_of_ip_header(&buf[..(len as usize).min(buf.len())]))
}

/// TTL / hop limit of a raw IPv4 or IPv6 header.
fn ttl_of_ip_header(h: &[u8]) -> Option<u8> {
    match h.first().map(|b| b >> 4) {
        Some(4) => h.get(8).copied(),
        Some(6) => h.get(7).copied(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn md5sig_layout_v4_and_mapped() {
        let b = md5sig_bytes(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), b"s3cret", false);
        assert_eq!(u16::from_ne_bytes([b[0], b[1]]), libc::AF_INET as u16);
        assert_eq!(&b[4..8], &[10, 0, 0, 2]);
        assert_eq!(u16::from_ne_bytes([b[130], b[131]]), 6);
        assert_eq!(&b[136..142], b"s3cret");
        let m = md5sig_bytes(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), b"k", true);
        assert_eq!(u16::from_ne_bytes([m[0], m[1]]), libc::AF_INET6 as u16);
        assert_eq!(
            &m[8..24],
            &Ipv4Addr::new(10, 0, 0, 2).to_ipv6_mapped().octets()
        );
        let v6 = md5sig_bytes(IpAddr::V6(Ipv6Addr::LOCALHOST), b"", true);
        assert_eq!(u16::from_ne_bytes([v6[130], v6[131]]), 0);
    }

    #[test]
    fn md5_on_real_socket_accepts_and_rejects_oversized_key() {
        let sock = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        set_tcp_md5(&sock, IpAddr::V4(Ipv4Addr::LOCALHOST), b"secret", false).expect("set md5");
        set_tcp_md5(&sock, IpAddr::V4(Ipv4Addr::LOCALHOST), b"", false).expect("remove md5");
        let long = [b'x'; 81];
        assert!(set_tcp_md5(&sock, IpAddr::V4(Ipv4Addr::LOCALHOST), &long, false).is_err());
        set_min_ttl(&sock, false, 254).expect("min ttl");
    }

    #[test]
    fn ttl_from_ip_headers() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[8] = 64;
        assert_eq!(ttl_of_ip_header(&v4), Some(64));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[7] = 255;
        assert_eq!(ttl_of_ip_header(&v6), Some(255));
        assert_eq!(ttl_of_ip_header(&[]), None);
        assert_eq!(ttl_of_ip_header(&[0x45, 0, 0]), None);
        assert_eq!(ttl_of_ip_header(&[0x00; 20]), None);
    }

    #[test]
    fn saved_syn_reports_the_ttl_of_a_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        set_save_syn(&listener).expect("save syn");
        let addr = listener.local_addr().expect("addr");
        let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        client.set_ttl_v4(77).expect("ttl");
        client.connect(&addr.into()).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        assert_eq!(saved_syn_ttl(&server).expect("saved syn"), Some(77));
    }
}
