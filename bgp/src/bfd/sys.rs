//! The two socket calls no safe crate offers for BFD receive sockets: `IP_RECVTTL` and
//! `recvmsg(2)` with the TTL / hop limit control message (RFC 5881 section 5 GTSM check).
//! The only `unsafe` of the BFD module lives here.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// Asks the kernel to attach the received IPv4 TTL to every datagram (`IP_RECVTTL`).
pub fn set_recv_ttl_v4<S: AsRawFd>(sock: &S) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid fd and a pointer to a live c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVTTL,
            (&one as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One received datagram: its length in the caller's buffer, the sender, and the TTL / hop
/// limit from the control message (`None` if the kernel attached none).
#[derive(Debug, Clone, Copy)]
pub struct Datagram {
    pub len: usize,
    pub from: SocketAddr,
    pub ttl: Option<u8>,
}

/// Non-blocking `recvmsg` into `buf`, collecting `IP_TTL` / `IPV6_HOPLIMIT` control messages.
pub fn recv_with_ttl<S: AsRawFd>(sock: &S, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // 8-byte aligned room for several cmsgs (a TTL one needs 20 bytes).
    let mut control = [0u64; 16];
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` refers to a live buffer of the declared size.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    let len = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let mut ttl = None;
    // SAFETY: the CMSG_* helpers walk the control buffer the kernel filled, bounded by the
    // msg_controllen it wrote back; CMSG_DATA of an IP_TTL / IPV6_HOPLIMIT message is an int.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let (level, ty) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            if (level == libc::IPPROTO_IP && ty == libc::IP_TTL)
                || (level == libc::IPPROTO_IPV6 && ty == libc::IPV6_HOPLIMIT)
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                ttl = u8::try_from(v).ok();
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Datagram {
        len: len.min(buf.len()),
        from: to_socket_addr(&addr)?,
        ttl,
    })
}

fn to_socket_addr(ss: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in (smaller than storage).
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((ss as *const libc::sockaddr_storage).cast()) };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6 (smaller than storage).
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((ss as *const libc::sockaddr_storage).cast()) };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        family => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("recvmsg returned address family {family}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use socket2::{Domain, Protocol, Socket, Type};

    #[test]
    fn the_ttl_of_a_loopback_datagram_is_reported() {
        let rx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        set_recv_ttl_v4(&rx).unwrap();
        rx.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let to = rx.local_addr().unwrap();
        let tx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        for ttl in [255u32, 254, 1] {
            tx.set_ttl_v4(ttl).unwrap();
            tx.send_to(b"hello", &to).unwrap();
            let mut buf = [0u8; 64];
            let mut got = None;
            for _ in 0..100 {
                match recv_with_ttl(&rx, &mut buf) {
                    Ok(d) => {
                        got = Some(d);
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(5))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            let d = got.unwrap();
            assert_eq!(d.len, 5);
            assert_eq!(&buf[..5], b"hello");
            assert_eq!(d.ttl, Some(ttl as u8));
            assert_eq!(d.from.ip(), std::net::IpAddr::from([127, 0, 0, 1]));
        }
    }
}
