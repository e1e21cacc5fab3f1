//! `routelet speaker` config reload (SIGHUP) with real processes in network namespaces: a
//! neighbor added live establishes without disturbing the others, an idempotent reload and a
//! route-reflector-client flip reset nothing, a session setting change restarts only that
//! session (Cease 6/6), a removed neighbor gets Cease/Peer De-configured (6/3), loses its
//! routes and is rejected afterwards, and a broken file keeps the running configuration.

mod interop;

use std::time::Duration;

use interop::netns::veth;
use interop::routelet::{RlNeighbor, Routelet, RouteletConfig, RT_PROTO};
use interop::{ensure, holds_for, wait_until, Lab, Netns, Result};
use serde_json::Value;

const A_B: &str = "10.0.1.1";
const B: &str = "10.0.1.2";
const A_C: &str = "10.0.2.1";
const C: &str = "10.0.2.2";
const A_PFX: &str = "10.244.1.0/24";
const B_PFX: &str = "10.251.0.0/24";
const C_PFX: &str = "10.252.0.0/24";

/// `a` in the middle, `b` and `c` on their own links.
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

fn node_a(neighbors: Vec<RlNeighbor>) -> RouteletConfig {
    let mut cfg = RouteletConfig::new(A_B, 65001);
    cfg.neighbors = neighbors;
    cfg.originate.push(A_PFX.into());
    cfg
}

fn leaf(router_id: &str, asn: u32, peer: &str, originate: &str) -> RouteletConfig {
    let mut cfg = RouteletConfig::new(router_id, asn);
    cfg.neighbors.push(RlNeighbor::new(peer, 65001));
    cfg.originate = vec![originate.to_string()];
    cfg
}

/// Rewrites `a.yaml` (the file `Routelet::start` wrote) and sends SIGHUP.
fn reload(lab: &Lab, a: &Routelet, text: &str) -> Result<()> {
    lab.write("a.yaml", text)?;
    a.daemon.signal("HUP")
}

fn render(a: &Routelet, cfg: &RouteletConfig) -> String {
    cfg.render(&a.socket.to_string_lossy())
}

/// (established_transitions, uptime_seconds, state) of `peer` in `r`'s status.
fn session(r: &Routelet, peer: &str) -> Result<(u64, u64, String)> {
    let n = r.neighbor(peer)?.unwrap_or(Value::Null);
    Ok((
        n["established_transitions"].as_u64().unwrap_or(0),
        n["uptime_seconds"].as_u64().unwrap_or(0),
        n["state"].as_str().unwrap_or("<absent>").to_string(),
    ))
}

/// How many NOTIFICATIONs `code/subcode` `r` received from `peer`.
fn received(r: &Routelet, peer: &str, code: &str) -> Result<u64> {
    let n = r.neighbor(peer)?.unwrap_or(Value::Null);
    Ok(n["notifications_received"][code].as_u64().unwrap_or(0))
}

/// The session `r`–`peer` is up and has been up since the first Established.
fn never_reset(r: &Routelet, peer: &str, seen: &mut String) -> Result<bool> {
    let (transitions, uptime, state) = session(r, peer)?;
    seen.push_str(&format!(
        "{peer}: state {state}, established_transitions {transitions}, uptime {uptime}\n"
    ));
    Ok(state == "established" && transitions == 1)
}

#[test]
fn sighup_adds_removes_and_updates_neighbors_live() -> Result<()> {
    Lab::run("reload", |lab| {
        let t = triangle(lab)?;
        let nb = RlNeighbor::new(B, 65002);
        let nc = RlNeighbor::new(C, 65003);
        let mut a = Routelet::start(lab, &t.a, "a", &node_a(vec![nb.clone()]))?;
        let b = Routelet::start(lab, &t.b, "b", &leaf(B, 65002, A_B, B_PFX))?;
        // C dials A from the start; A rejects it until C is configured.
        let c = Routelet::start(lab, &t.c, "c", &leaf(C, 65003, A_C, C_PFX))?;
        wait_until(
            "A-B established, B's route in A's kernel",
            Duration::from_secs(20),
            |seen| Ok(a.established(B, seen)? && t.a.has_kernel_route(B_PFX, RT_PROTO, seen)?),
        )?;
        let (_, uptime_before, _) = session(&a, B)?;

        // 1. Add C.
        reload(lab, &a, &render(&a, &node_a(vec![nb.clone(), nc.clone()])))?;
        wait_until(
            "A-C established, C's route in A's kernel",
            Duration::from_secs(20),
            |seen| Ok(a.established(C, seen)? && t.a.has_kernel_route(C_PFX, RT_PROTO, seen)?),
        )?;
        wait_until(
            "B learns C's route through A",
            Duration::from_secs(10),
            |seen| t.b.has_kernel_route(C_PFX, RT_PROTO, seen),
        )?;
        let mut seen = String::new();
        ensure(
            never_reset(&a, B, &mut seen)? && never_reset(&b, A_B, &mut seen)?,
            format!("adding C reset A-B:\n{seen}"),
        )?;
        let (_, uptime_after, _) = session(&a, B)?;
        ensure(
            uptime_after >= uptime_before,
            format!("A-B uptime went back from {uptime_before} to {uptime_after}"),
        )?;
        ensure(
            received(&b, A_B, "6/6")? == 0 && received(&b, A_B, "6/3")? == 0,
            format!("B got a Cease: {:?}", b.neighbor(A_B)?),
        )?;

        // 2. The same file again, then a route_reflector_client flip: nothing resets.
        a.daemon.signal("HUP")?;
        let mut rr = nc.clone();
        rr.route_reflector_client = true;
        reload(lab, &a, &render(&a, &node_a(vec![nb.clone(), rr])))?;
        holds_for(
            "idempotent reload and RR-client flip keep both sessions",
            Duration::from_secs(3),
            |seen| {
                Ok(never_reset(&a, B, seen)?
                    && never_reset(&a, C, seen)?
                    && never_reset(&b, A_B, seen)?
                    && never_reset(&c, A_C, seen)?)
            },
        )?;

        // 3. A session setting of C changes: only A-C restarts, with Cease/Other Config Change.
        let mut slow = nc.clone();
        slow.hold_time = 6;
        reload(
            lab,
            &a,
            &render(&a, &node_a(vec![nb.clone(), slow.clone()])),
        )?;
        wait_until(
            "C gets Cease 6/6 and A-C comes back with the new hold time",
            Duration::from_secs(20),
            |seen| {
                let n = a.neighbor(C)?.unwrap_or(Value::Null);
                seen.push_str(&format!("A's view of C: {n}\n"));
                Ok(received(&c, A_C, "6/6")? >= 1
                    && a.established(C, seen)?
                    && n["hold_time"].as_u64() == Some(6))
            },
        )?;
        let mut seen = String::new();
        ensure(
            never_reset(&a, B, &mut seen)? && never_reset(&b, A_B, &mut seen)?,
            format!("changing C reset A-B:\n{seen}"),
        )?;

        // 4. Remove B.
        let rejected_before = a.connections_rejected()?.unwrap_or(0);
        reload(lab, &a, &render(&a, &node_a(vec![slow.clone()])))?;
        wait_until(
            "B gets Cease/Peer De-configured and its route leaves A's kernel",
            Duration::from_secs(15),
            |seen| {
                let cease = received(&b, A_B, "6/3")?;
                seen.push_str(&format!("B received 6/3: {cease}\n"));
                Ok(cease >= 1
                    && a.neighbor(B)?.is_none()
                    && !t.a.has_kernel_route(B_PFX, RT_PROTO, seen)?)
            },
        )?;
        wait_until(
            "B's next connection is rejected (6/5) and counted",
            Duration::from_secs(20),
            |seen| {
                let rejected = a.connections_rejected()?.unwrap_or(0);
                let cease = received(&b, A_B, "6/5")?;
                seen.push_str(&format!(
                    "A connections_rejected {rejected} (before {rejected_before}), B received 6/5: {cease}\n"
                ));
                Ok(rejected > rejected_before && cease >= 1)
            },
        )?;
        ensure(
            !b.established(A_B, &mut String::new())?,
            "B must not be established any more",
        )?;

        // 5. A broken file: A keeps running with C and without B.
        reload(lab, &a, "router_id: [\nneighbors: {\n")?;
        holds_for(
            "A keeps running with its previous neighbors after a bad reload",
            Duration::from_secs(3),
            |seen| {
                a.daemon.check_running()?;
                let st = a.status()?;
                let listed: Vec<String> = st["neighbors"]
                    .as_array()
                    .map(|ns| {
                        ns.iter()
                            .filter_map(|n| n["address"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                seen.push_str(&format!("A neighbors: {listed:?}\n"));
                Ok(listed == [C] && a.established(C, seen)?)
            },
        )?;
        let log = a.daemon.log_tail(200);
        ensure(
            log.contains("configuration reload failed") && log.contains("a.yaml"),
            format!("A's log names the bad file:\n{log}"),
        )?;
        a.daemon.check_running()
    })
}

/// Adds `lines` (each already indented for a neighbor entry) to the entry of neighbor `addr`
/// in a rendered config (the harness's generator has no import/export keys).
fn with_neighbor_keys(text: &str, addr: &str, lines: &str) -> String {
    let entry = format!("  - address: \"{addr}\"\n");
    text.replace(&entry, &format!("{entry}{lines}"))
}

#[test]
fn empty_start_md5_neighbor_added_live_and_policy_changes_without_reset() -> Result<()> {
    Lab::run("reloadpol", |lab| {
        let t = triangle(lab)?;
        // A starts without any neighbor.
        let a = Routelet::start(lab, &t.a, "a", &node_a(Vec::new()))?;
        let mut b_cfg = leaf(B, 65002, A_B, B_PFX);
        b_cfg.neighbors[0].password = Some("s3cret".into());
        let b = Routelet::start(lab, &t.b, "b", &b_cfg)?;
        let c = Routelet::start(lab, &t.c, "c", &leaf(C, 65003, A_C, C_PFX))?;

        // B is passive on A's side: its session can only come in through A's listener, which
        // needs B's TCP MD5 key installed at the reload.
        let mut nb = RlNeighbor::new(B, 65002);
        nb.password = Some("s3cret".into());
        nb.passive = true;
        let nc = RlNeighbor::new(C, 65003);
        let base = render(&a, &node_a(vec![nb, nc]));
        reload(lab, &a, &base)?;
        wait_until(
            "A-B (MD5, incoming) and A-C established, both routes in A's kernel",
            Duration::from_secs(20),
            |seen| {
                Ok(a.established(B, seen)?
                    && a.established(C, seen)?
                    && t.a.has_kernel_route(B_PFX, RT_PROTO, seen)?
                    && t.a.has_kernel_route(C_PFX, RT_PROTO, seen)?)
            },
        )?;
        wait_until(
            "B has A's and C's routes",
            Duration::from_secs(10),
            |seen| {
                Ok(t.b.has_kernel_route(A_PFX, RT_PROTO, seen)?
                    && t.b.has_kernel_route(C_PFX, RT_PROTO, seen)?)
            },
        )?;

        // Import from C off: C's route leaves A (and B), the session stays.
        let no_import = with_neighbor_keys(&base, C, "    import: none\n");
        reload(lab, &a, &no_import)?;
        wait_until(
            "C's route gone from A's and B's kernels",
            Duration::from_secs(10),
            |seen| {
                Ok(!t.a.has_kernel_route(C_PFX, RT_PROTO, seen)?
                    && !t.b.has_kernel_route(C_PFX, RT_PROTO, seen)?)
            },
        )?;
        // Export to B off as well: B loses A's route.
        let no_export = with_neighbor_keys(&no_import, B, "    export: none\n");
        reload(lab, &a, &no_export)?;
        wait_until(
            "A's route gone from B's kernel",
            Duration::from_secs(10),
            |seen| Ok(!t.b.has_kernel_route(A_PFX, RT_PROTO, seen)?),
        )?;
        // Both back on: C's route returns from A's Adj-RIB-In (no route refresh, no reset).
        reload(lab, &a, &base)?;
        wait_until(
            "C's route back in A's kernel, A's and C's routes back in B's",
            Duration::from_secs(10),
            |seen| {
                Ok(t.a.has_kernel_route(C_PFX, RT_PROTO, seen)?
                    && t.b.has_kernel_route(A_PFX, RT_PROTO, seen)?
                    && t.b.has_kernel_route(C_PFX, RT_PROTO, seen)?)
            },
        )?;
        let mut seen = String::new();
        ensure(
            never_reset(&a, B, &mut seen)?
                && never_reset(&a, C, &mut seen)?
                && never_reset(&b, A_B, &mut seen)?
                && never_reset(&c, A_C, &mut seen)?,
            format!("a policy change reset a session:\n{seen}"),
        )
    })
}
