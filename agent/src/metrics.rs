//! Prometheus metrics: rendered from a status snapshot and the FIB counters at scrape time
//! (prometheus-client text format), served over a minimal HTTP endpoint.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bgp::speaker::Speaker;
use bgp::status::SpeakerStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::fib::FibStats;

type Labels = Vec<(String, String)>;

fn neighbor_labels(address: &str) -> Labels {
    vec![("neighbor".to_string(), address.to_string())]
}

const STATES: [&str; 6] = [
    "idle",
    "connect",
    "active",
    "opensent",
    "openconfirm",
    "established",
];

/// Render every metric for one scrape.
pub fn render(status: &SpeakerStatus, fib: Option<&FibStats>) -> String {
    let mut reg = Registry::with_prefix("routelet");
    let session_state = Family::<Labels, Gauge>::default();
    let received = Family::<Labels, Gauge>::default();
    let accepted = Family::<Labels, Gauge>::default();
    let advertised = Family::<Labels, Gauge>::default();
    let updates_in = Family::<Labels, Counter>::default();
    let updates_out = Family::<Labels, Counter>::default();
    let notif_sent = Family::<Labels, Counter>::default();
    let notif_recv = Family::<Labels, Counter>::default();
    let malformed = Family::<Labels, Counter>::default();
    let looped = Family::<Labels, Counter>::default();
    for n in &status.neighbors {
        let addr = n.address.to_string();
        for s in STATES {
            let mut l = neighbor_labels(&addr);
            l.push(("state".into(), s.into()));
            session_state.get_or_create(&l).set(i64::from(n.state == s));
        }
        let l = neighbor_labels(&addr);
        received.get_or_create(&l).set(n.received as i64);
        accepted.get_or_create(&l).set(n.accepted as i64);
        advertised.get_or_create(&l).set(n.advertised as i64);
        updates_in.get_or_create(&l).inc_by(n.updates_received);
        updates_out.get_or_create(&l).inc_by(n.updates_sent);
        for (fam, key, counts) in [
            (
                &malformed,
                "action",
                [
                    ("attribute_discard", n.malformed.attribute_discard),
                    ("treat_as_withdraw", n.malformed.treat_as_withdraw),
                    ("session_reset", n.malformed.session_reset),
                ],
            ),
            (
                &looped,
                "check",
                [
                    ("as_path", n.loop_rejected.as_path),
                    ("originator_id", n.loop_rejected.originator_id),
                    ("cluster_list", n.loop_rejected.cluster_list),
                ],
            ),
        ] {
            for (value, count) in counts {
                let mut l = neighbor_labels(&addr);
                l.push((key.into(), value.into()));
                fam.get_or_create(&l).inc_by(count);
            }
        }
        for (fam, map) in [
            (&notif_sent, &n.notifications_sent),
            (&notif_recv, &n.notifications_received),
        ] {
            for (code, count) in map {
                let (c, s) = code.split_once('/').unwrap_or((code.as_str(), "0"));
                let mut l = neighbor_labels(&addr);
                l.push(("code".into(), c.into()));
                l.push(("subcode".into(), s.into()));
                fam.get_or_create(&l).inc_by(*count);
            }
        }
    }
    reg.register(
        "bgp_session_state",
        "1 for the neighbor's current FSM state",
        session_state,
    );
    reg.register(
        "bgp_prefixes_received",
        "Prefixes in the neighbor's Adj-RIB-In",
        received,
    );
    reg.register(
        "bgp_prefixes_accepted",
        "Prefixes from the neighbor accepted by import",
        accepted,
    );
    reg.register(
        "bgp_prefixes_advertised",
        "Prefixes in the neighbor's Adj-RIB-Out",
        advertised,
    );
    reg.register(
        "bgp_updates_received",
        "UPDATE messages received",
        updates_in,
    );
    reg.register("bgp_updates_sent", "UPDATE messages sent", updates_out);
    reg.register(
        "bgp_notifications_sent",
        "NOTIFICATION messages sent by code",
        notif_sent,
    );
    reg.register(
        "bgp_notifications_received",
        "NOTIFICATION messages received by code",
        notif_recv,
    );
    reg.register(
        "bgp_malformed_attributes",
        "Malformed path attributes received, by RFC 7606 action",
        malformed,
    );
    reg.register(
        "bgp_loop_rejected_prefixes",
        "Prefixes received that failed a loop check (kept, not used), by check",
        looped,
    );
    let rejected = Counter::<u64>::default();
    rejected.inc_by(status.connections_rejected);
    reg.register(
        "bgp_connections_rejected",
        "Incoming connections from addresses that are not configured neighbors",
        rejected,
    );
    let loc_rib = Gauge::<i64>::default();
    loc_rib.set(status.rib_size as i64);
    reg.register("bgp_loc_rib_prefixes", "Prefixes with a best path", loc_rib);
    if let Some(f) = fib {
        let installed = Gauge::<i64>::default();
        installed.set(f.installed.load(Ordering::Relaxed) as i64);
        reg.register(
            "kernel_routes_installed",
            "Routes routelet has in the kernel",
            installed,
        );
        let errors = Counter::<u64>::default();
        errors.inc_by(f.install_errors.load(Ordering::Relaxed));
        reg.register(
            "kernel_route_install_errors",
            "Failed kernel route writes",
            errors,
        );
    }
    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        warn!("metrics encoding failed");
    }
    out
}

/// Serve `GET /metrics`, `/healthz` and `/readyz` on `addr` until the process exits.
pub async fn serve(
    addr: SocketAddr,
    speaker: Speaker,
    fib: Option<Arc<FibStats>>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        loop {
            if let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(respond(stream, speaker.clone(), fib.clone()));
            }
        }
    });
    Ok(())
}

async fn respond(mut stream: TcpStream, speaker: Speaker, fib: Option<Arc<FibStats>>) {
    let mut req = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 8192 {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => req.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let line = String::from_utf8_lossy(&req);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) =
        if line.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
            match speaker.summary().await {
                Ok(s) => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    render(&s, fib.as_deref()),
                ),
                Err(e) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
            }
        } else if line.starts_with("GET ") && (path == "/healthz" || path == "/readyz") {
            // healthz: the speaker's core loop answers. readyz: and routing has converged
            // (every neighbor sent End-of-RIB, or the convergence timeout passed).
            match speaker.summary().await {
                Ok(s) if path == "/healthz" || s.converged => {
                    ("200 OK", "text/plain", "ok\n".to_string())
                }
                Ok(_) => (
                    "503 Service Unavailable",
                    "text/plain",
                    "not converged\n".to_string(),
                ),
                Err(e) => ("503 Service Unavailable", "text/plain", format!("{e}\n")),
            }
        } else {
            (
                "404 Not Found",
                "text/plain",
                "try /metrics, /healthz or /readyz\n".to_string(),
            )
        };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}
