//! routelet <-> routelet in network namespaces: ECMP multipath into the kernel, a crash
//! (SIGKILL) and restart that never removes a still-valid kernel route and releases stale ones
//! after End-of-RIB, a clean stop without graceful restart that withdraws at once (Cease), and
//! the metrics and health endpoints.

mod interop;

use std::time::{Duration, Instant};

use interop::netns::veth;
use interop::routelet::{metric_value, RlNeighbor, Routelet, RouteletConfig, RT_PROTO};
use interop::{ensure, wait_until, Lab, Netns, Result};

const SHARED: &str = "10.250.0.0/24";
const ONLY_B: &str = "10.251.0.0/24";
const A_PFX: &str = "10.244.1.0/24";

/// `a` in the middle, `b` and `c` on their own links: a-b 10.0.1.0/24, a-c 10.0.2.0/24.
struct Triangle {
    a: Netns,
    b: Netns,
    c: Netns,
}

fn triangle(lab: &Lab) -> Result<Triangle> {
    let a = lab.netns()?;
    let b = lab.netns()?;
    let c = lab.netns()?;
    veth(&a, "ab", &["10.0.1.1/24"], &b, "ba", &["10.0.1.2/24"])?;
    veth(&a, "ac", &["10.0.2.1/24"], &c, "ca", &["10.0.2.2/24"])?;
    Ok(Triangle { a, b, c })
}

fn node_a(with_c: bool) -> RouteletConfig {
    let mut cfg = RouteletConfig::new("10.0.1.1", 65001);
    cfg.neighbors.push(RlNeighbor::new("10.0.1.2", 65002));
    if with_c {
        cfg.neighbors.push(RlNeighbor::new("10.0.2.2", 65002));
    }
    cfg.originate.push(A_PFX.into());
    cfg.metrics_address = Some("127.0.0.1:9179".into());
    cfg
}

fn leaf(router_id: &str, peer: &str, originate: &[&str]) -> RouteletConfig {
    let mut cfg = RouteletConfig::new(router_id, 65002);
    cfg.neighbors.push(RlNeighbor::new(peer, 65001));
    cfg.originate = originate.iter().map(|s| s.to_string()).collect();
    cfg
}

/// Next hops of our kernel route for `prefix` in `ns` (one entry per ECMP leg).
fn kernel_next_hops(ns: &Netns, prefix: &str) -> Result<Vec<String>> {
    let out = ns.ip(&["-j", "route", "show", prefix, "proto", RT_PROTO])?;
    let v: serde_json::Value = interop::parse_json(
        "ip -j route",
        if out.trim().is_empty() { "[]" } else { &out },
    )?;
    let mut hops = Vec::new();
    for r in v.as_array().into_iter().flatten() {
        if let Some(g) = r.get("gateway").and_then(|g| g.as_str()) {
            hops.push(g.to_string());
        }
        for nh in r
            .get("nexthops")
            .and_then(|n| n.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(g) = nh.get("gateway").and_then(|g| g.as_str()) {
                hops.push(g.to_string());
            }
        }
    }
    hops.sort();
    Ok(hops)
}

#[test]
fn ecmp_paths_become_one_multipath_kernel_route() -> Result<()> {
    Lab::run("e2eecmp", |lab| {
        let t = triangle(lab)?;
        let a = Routelet::start(lab, &t.a, "a", &node_a(true))?;
        let _b = Routelet::start(lab, &t.b, "b", &leaf("10.0.1.2", "10.0.1.1", &[SHARED]))?;
        let _c = Routelet::start(lab, &t.c, "c", &leaf("10.0.2.2", "10.0.2.1", &[SHARED]))?;
        wait_until(
            "both sessions established",
            Duration::from_secs(15),
            |seen| Ok(a.established("10.0.1.2", seen)? && a.established("10.0.2.2", seen)?),
        )?;
        wait_until(
            "a two-leg multipath route for the shared prefix",
            Duration::from_secs(10),
            |seen| {
                let hops = kernel_next_hops(&t.a, SHARED)?;
                seen.push_str(&format!("kernel next hops: {hops:?}\n"));
                Ok(hops == ["10.0.1.2", "10.0.2.2"])
            },
        )?;
        let entry = a.rib_entry(SHARED)?.unwrap_or_default();
        let hops = entry["next_hops"].as_array().map(Vec::len);
        ensure(
            hops == Some(2),
            format!("status shows both next hops: {entry}"),
        )?;
        // Equal up to the router id: the best path says so.
        ensure(
            entry["reason"] == "router_id",
            format!("best path reason: {entry}"),
        )
    })
}

#[test]
fn crash_and_restart_keeps_valid_routes_and_releases_stale_ones() -> Result<()> {
    Lab::run("e2erestart", |lab| {
        let t = triangle(lab)?;
        let mut a = Routelet::start(lab, &t.a, "a", &node_a(false))?;
        let mut b = Routelet::start(
            lab,
            &t.b,
            "b",
            &leaf("10.0.1.2", "10.0.1.1", &[SHARED, ONLY_B]),
        )?;
        wait_until(
            "both prefixes in a's kernel",
            Duration::from_secs(15),
            |seen| {
                Ok(t.a.has_kernel_route(SHARED, RT_PROTO, seen)?
                    && t.a.has_kernel_route(ONLY_B, RT_PROTO, seen)?)
            },
        )?;
        // a crashes.
        a.daemon.signal("KILL")?;
        a.daemon.stop();
        let mut seen = String::new();
        ensure(
            t.a.has_kernel_route(SHARED, RT_PROTO, &mut seen)?
                && t.a.has_kernel_route(ONLY_B, RT_PROTO, &mut seen)?,
            format!("routes must survive a crash of routelet: {seen}"),
        )?;
        // While a is down, b stops originating ONLY_B.
        b.daemon.stop();
        b = Routelet::start(lab, &t.b, "b2", &leaf("10.0.1.2", "10.0.1.1", &[SHARED]))?;
        let a2 = Routelet::start(lab, &t.a, "a2", &node_a(false))?;
        // Throughout a's restart SHARED stays installed; ONLY_B goes once a has converged.
        let start = Instant::now();
        let mut converged_at = None;
        while start.elapsed() < Duration::from_secs(20) {
            let mut seen = String::new();
            ensure(
                t.a.has_kernel_route(SHARED, RT_PROTO, &mut seen)?,
                format!("the still-valid route vanished during the restart: {seen}"),
            )?;
            let st = a2.status()?;
            if st["converged"] == true && !t.a.has_kernel_route(ONLY_B, RT_PROTO, &mut seen)? {
                converged_at = Some(start.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        ensure(
            converged_at.is_some(),
            "a never converged and removed the stale route",
        )?;
        let mut seen = String::new();
        ensure(
            b.established("10.0.1.1", &mut seen)?,
            format!("b sees a again: {seen}"),
        )
    })
}

#[test]
fn clean_stop_withdraws_at_once_and_metrics_are_served() -> Result<()> {
    Lab::run("e2estop", |lab| {
        let t = triangle(lab)?;
        // Without graceful restart a stop is a withdrawal (with it, an upgrade: see
        // tests/graceful_restart.rs).
        let mut cfg_a = node_a(false);
        cfg_a.graceful_restart = Some(false);
        let mut a = Routelet::start(lab, &t.a, "a", &cfg_a)?;
        // Hold time 9 s: a withdrawal faster than that proves the Cease was received.
        let b = Routelet::start(lab, &t.b, "b", &leaf("10.0.1.2", "10.0.1.1", &[ONLY_B]))?;
        wait_until(
            "a's prefix in b's kernel",
            Duration::from_secs(15),
            |seen| {
                Ok(t.b.has_kernel_route(A_PFX, RT_PROTO, seen)?
                    && t.a.has_kernel_route(ONLY_B, RT_PROTO, seen)?)
            },
        )?;
        let metrics = a.metrics()?;
        for name in [
            "routelet_bgp_session_state",
            "routelet_bgp_prefixes_received",
            "routelet_bgp_prefixes_advertised",
            "routelet_bgp_updates_received_total",
            "routelet_bgp_connections_rejected_total",
            "routelet_kernel_routes_installed",
        ] {
            ensure(
                metric_value(&metrics, name).is_some(),
                format!("metric {name} missing:\n{metrics}"),
            )?;
        }
        ensure(
            metrics.contains(
                "routelet_bgp_session_state{neighbor=\"10.0.1.2\",state=\"established\"} 1",
            ),
            format!("session state metric:\n{metrics}"),
        )?;
        ensure(
            metric_value(&metrics, "routelet_kernel_routes_installed") == Some(1.0),
            format!("one learned route installed:\n{metrics}"),
        )?;
        ensure(
            a.http_get("/healthz")?.trim() == "ok",
            "healthz answers ok while the speaker runs",
        )?;
        wait_until(
            "a reports ready (converged)",
            Duration::from_secs(10),
            |_| Ok(a.http_get("/readyz").is_ok_and(|b| b.trim() == "ok")),
        )?;
        ensure(
            a.http_get("/nothing").is_err(),
            "unknown paths are 404 (python raises)",
        )?;
        a.daemon.signal("TERM")?;
        let took = wait_until(
            "b removed a's prefix after a's Cease",
            Duration::from_secs(5),
            |seen| Ok(!t.b.has_kernel_route(A_PFX, RT_PROTO, seen)?),
        )?;
        ensure(took < Duration::from_secs(5), "withdrawal took a hold time")?;
        let st = b.neighbor("10.0.1.1")?.unwrap_or_default();
        ensure(
            st["notifications_received"]["6/2"] == 1,
            format!("b counted Cease/Administrative Shutdown: {st}"),
        )?;
        a.daemon.stop();
        Ok(())
    })
}
