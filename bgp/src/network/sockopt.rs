//! The two socket options no safe crate offers: TCP_MD5SIG (RFC 2385) and IP_MINTTL /
//! IPV6_MINHOPCOUNT (GTSM, RFC 5082). The only `unsafe` in the speaker lives here.
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
}
