//! Kernel change notifications for the FIB task: routes of ours deleted by someone else, and
//! link or address changes (after which the kernel may have flushed routes without telling:
//! IPv4 routes through a downed interface vanish silently).

use futures::StreamExt;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::constants::{
    RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE, RTMGRP_LINK,
};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use tokio::sync::mpsc;
use tracing::debug;

use super::message::{self, RouteParams};
use super::Prefix;

/// What the FIB task hears from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KernelEvent {
    /// A route of ours (table, protocol, metric) was deleted.
    RouteDeleted(Prefix),
    /// A link or address changed, or notifications were lost: routes may be gone.
    Resync,
}

/// Subscribe to route, link and address notifications in the calling thread's network
/// namespace; events arrive on the returned channel until it is dropped.
pub(crate) fn spawn_monitor(params: RouteParams) -> std::io::Result<mpsc::Receiver<KernelEvent>> {
    let (mut connection, _handle, mut messages) = rtnetlink::new_connection()?;
    let groups = RTMGRP_LINK
        | RTMGRP_IPV4_IFADDR
        | RTMGRP_IPV6_IFADDR
        | RTMGRP_IPV4_ROUTE
        | RTMGRP_IPV6_ROUTE;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, groups))?;
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(connection);
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            let event = match msg.payload {
                NetlinkPayload::InnerMessage(inner) => classify(&inner, &params),
                // An overrun (ENOBUFS) surfaces as an error message: we may have missed
                // deletions.
                NetlinkPayload::Error(_) | NetlinkPayload::Overrun(_) => Some(KernelEvent::Resync),
                _ => None,
            };
            let Some(event) = event else { continue };
            match tx.try_send(event) {
                Ok(()) => {}
                // The task is behind: one resync covers whatever was dropped.
                Err(mpsc::error::TrySendError::Full(_)) => {
                    let _ = tx.send(KernelEvent::Resync).await;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        debug!("kernel monitor stopped");
    });
    Ok(rx)
}

/// Which notifications matter to the FIB task (pure).
pub(crate) fn classify(msg: &RouteNetlinkMessage, params: &RouteParams) -> Option<KernelEvent> {
    match msg {
        RouteNetlinkMessage::DelRoute(route) => {
            message::parse_route(route, params).map(|r| KernelEvent::RouteDeleted(r.prefix))
        }
        RouteNetlinkMessage::NewLink(_)
        | RouteNetlinkMessage::DelLink(_)
        | RouteNetlinkMessage::DelAddress(_) => Some(KernelEvent::Resync),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::fib::{KernelRoute, NextHop};

    const PARAMS: RouteParams = RouteParams {
        table: 254,
        protocol: 200,
        link_local_ifindex: None,
        metric: None,
    };

    #[test]
    fn deletions_of_our_routes_and_link_changes_are_reported() {
        let route = KernelRoute {
            prefix: "10.244.2.0/24".parse().unwrap(),
            next_hops: vec![NextHop::from(
                "10.0.0.2".parse::<std::net::IpAddr>().unwrap(),
            )],
        };
        let msg = message::build_replace(&route, &PARAMS).unwrap();
        assert_eq!(
            classify(&RouteNetlinkMessage::DelRoute(msg.clone()), &PARAMS),
            Some(KernelEvent::RouteDeleted(route.prefix))
        );
        // Our own additions are not news; other protocols' deletions are not ours.
        assert_eq!(
            classify(&RouteNetlinkMessage::NewRoute(msg.clone()), &PARAMS),
            None
        );
        let mut other = msg;
        other.header.protocol = netlink_packet_route::route::RouteProtocol::Static;
        assert_eq!(
            classify(&RouteNetlinkMessage::DelRoute(other), &PARAMS),
            None
        );
        assert_eq!(
            classify(&RouteNetlinkMessage::DelLink(Default::default()), &PARAMS),
            Some(KernelEvent::Resync)
        );
    }
}
