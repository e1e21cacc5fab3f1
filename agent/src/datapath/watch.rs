//! Link, address and neighbour-deletion notifications for the controller ([`watch_links`])
//! and the forwarding sysctls ([`set_forwarding`]).

use futures::StreamExt;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK, RTMGRP_NEIGH};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use tokio::sync::mpsc;

use super::{DatapathError, Result};

/// Subscribe to link and address notifications (RTNLGRP_LINK, IPV4_IFADDR, IPV6_IFADDR) and
/// neighbour/FDB deletions (RTNLGRP_NEIGH; new entries and state changes, which ARP makes
/// all the time, are ignored) in the calling thread's network namespace. Every such
/// notification (or lost notifications) sends `()` on the returned channel, coalesced
/// (capacity 1): after a receive, re-read whatever state depends on links and addresses, and
/// re-check the VTEP entries. The task and its socket go away when the
/// receiver is dropped.
pub fn watch_links() -> Result<mpsc::Receiver<()>> {
    tokio::runtime::Handle::try_current().map_err(|_| DatapathError::NoRuntime)?;
    let (mut connection, _handle, mut messages) =
        rtnetlink::new_connection().map_err(DatapathError::Socket)?;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(
            0,
            RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_NEIGH,
        ))
        .map_err(|source| DatapathError::Io {
            what: "bind link/address notification socket".into(),
            source,
        })?;
    let (tx, rx) = mpsc::channel(1);
    let connection = tokio::spawn(connection);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                message = messages.next() => {
                    // Any notification but a new/changed neighbour (or an overrun error:
                    // notifications were lost).
                    let Some((message, _)) = message else { break };
                    if matches!(
                        message.payload,
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(_))
                    ) {
                        continue;
                    }
                    if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                        break;
                    }
                }
                () = tx.closed() => break,
            }
        }
        connection.abort();
        tracing::debug!("link watch stopped");
    });
    Ok(rx)
}

/// Turn on IPv4 and IPv6 forwarding (`net.ipv4.ip_forward`,
/// `net.ipv6.conf.all.forwarding`) in the calling thread's network namespace.
pub fn set_forwarding() -> std::io::Result<()> {
    for path in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        std::fs::write(path, b"1")
            .map_err(|e| std::io::Error::new(e.kind(), format!("write 1 to {path}: {e}")))?;
    }
    Ok(())
}
