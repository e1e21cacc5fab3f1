//! BGP with BFD in network namespaces: a neighbor with `bfd: true` whose path fails loses its
//! session and its routes when BFD says so (well inside the 9 s hold time), without graceful
//! restart; the session and the routes come back when the path does. The BFD protocol itself
//! (FRR bfdd, BIRD, malformed packets) is tested in `interop_bfd.rs`.

mod interop;

use std::time::{Duration, Instant};

use interop::routelet::{RlNeighbor, Routelet, RouteletConfig, RT_PROTO};
use interop::{ensure, wait_until, Lab, Pair, Result, P4, R4};

const A_PREFIX: &str = "10.244.1.0/24";
const B_PREFIX: &str = "10.245.0.0/24";

fn node(me: &str, asn: u32, peer: &str, peer_asn: u32, prefix: &str) -> RouteletConfig {
    let mut c = RouteletConfig::new(me, asn);
    let mut n = RlNeighbor::new(peer, peer_asn);
    n.bfd = true;
    c.neighbors.push(n);
    c.originate.push(prefix.to_string());
    c
}

#[test]
fn bfd_down_takes_the_session_and_its_routes_down_at_once() -> Result<()> {
    Lab::run("bgpbfd", |lab| {
        let pair = Pair::new(lab)?;
        let a = Routelet::start(lab, &pair.r, "a", &node(R4, 65001, P4, 65002, A_PREFIX))?;
        let b = Routelet::start(lab, &pair.p, "b", &node(P4, 65002, R4, 65001, B_PREFIX))?;
        wait_until("routes in both kernels", Duration::from_secs(20), |seen| {
            Ok(pair.r.has_kernel_route(B_PREFIX, RT_PROTO, seen)?
                && pair.p.has_kernel_route(A_PREFIX, RT_PROTO, seen)?)
        })?;
        // BFD comes up after BGP (it starts on Established at 1 s per packet until Up).
        let a_log = a.daemon.log_path().to_path_buf();
        wait_until("BFD up on a", Duration::from_secs(10), |seen| {
            let log = std::fs::read_to_string(&a_log).unwrap_or_default();
            seen.push_str("waiting for \"BFD up\" in a's log\n");
            Ok(log.contains("BFD up"))
        })?;
        // b's path fails: its interface goes down. a's routes via it stay in the kernel
        // (only flagged linkdown) and TCP notices nothing: without BFD they would stay for the
        // 9 s hold time.
        let cut = Instant::now();
        pair.p.ip(&["link", "set", "vp", "down"])?;
        wait_until("a removed b's route", Duration::from_secs(8), |seen| {
            Ok(!pair.r.has_kernel_route(B_PREFIX, RT_PROTO, seen)?)
        })?;
        let took = cut.elapsed();
        eprintln!("BFD 300 ms x 3: b's route left a's kernel {took:?} after the link went down");
        let n = a.neighbor(P4)?.unwrap_or_default();
        ensure(
            n["notifications_sent"]["6/10"] == 1,
            format!("a reset the session with Cease/BFD Down (6/10): {n}"),
        )?;
        ensure(
            n["stale_routes"] == 0,
            format!("no graceful restart after a BFD Down: {n}"),
        )?;
        // The path is back: BFD and BGP come back, and so do the routes.
        pair.p.ip(&["link", "set", "vp", "up"])?;
        wait_until(
            "routes back in both kernels",
            Duration::from_secs(30),
            |seen| {
                Ok(pair.r.has_kernel_route(B_PREFIX, RT_PROTO, seen)?
                    && pair.p.has_kernel_route(A_PREFIX, RT_PROTO, seen)?)
            },
        )?;
        let mut seen = String::new();
        ensure(
            b.established(R4, &mut seen)?,
            format!("b established again: {seen}"),
        )
    })
}
