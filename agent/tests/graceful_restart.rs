//! Graceful restart (RFC 4724, RFC 8538) in network namespaces, both roles: routelet
//! restarting (kill -9, or SIGTERM as in an upgrade) with routelet, BIRD and FRR as helpers,
//! and routelet as the helper of a peer that does not come back. Every kernel route deletion is
//! watched with `ip monitor route`, so "never removed" is exact, not sampled.

mod interop;

use std::time::Duration;

use interop::bird::{Bird, BirdConfig, BirdNeighbor};
use interop::frr::{Frr, FrrConfig, FrrNeighbor};
use interop::monitor::RouteMonitor;
use interop::netns::Netns;
use interop::routelet::{RlNeighbor, Routelet, RouteletConfig, RT_PROTO};
use interop::{ensure, wait_until, Lab, Pair, Result, P4, R4};

/// Originated by the routelet under test (namespace `r`, 10.0.0.1, AS 65001).
const RL_PREFIX: &str = "10.244.1.0/24";
/// Originated by the peer (namespace `p`, 10.0.0.2, AS 65002).
const PEER_PREFIX: &str = "10.245.0.0/24";
const UP: Duration = Duration::from_secs(20);

fn restarting_routelet(restart_time: Option<u16>) -> RouteletConfig {
    let mut c = RouteletConfig::new(R4, 65001);
    c.neighbors.push(RlNeighbor::new(P4, 65002));
    c.originate.push(RL_PREFIX.to_string());
    c.restart_time = restart_time;
    c
}

fn peer_routelet() -> RouteletConfig {
    let mut c = RouteletConfig::new(P4, 65002);
    c.neighbors.push(RlNeighbor::new(R4, 65001));
    c.originate.push(PEER_PREFIX.to_string());
    c
}

fn wait_routes(pair: &Pair, peer_proto: &str) -> Result<()> {
    wait_until("routes in both kernels", UP, |seen| {
        Ok(pair.p.has_kernel_route(RL_PREFIX, peer_proto, seen)?
            && pair.r.has_kernel_route(PEER_PREFIX, RT_PROTO, seen)?)
    })?;
    Ok(())
}

/// The peer's kernel never lost `RL_PREFIX`, routelet's never lost `PEER_PREFIX`.
fn nothing_deleted(peer: &RouteMonitor, own: &RouteMonitor) -> Result<()> {
    let d = peer.deletions(RL_PREFIX);
    ensure(
        d.is_empty(),
        format!(
            "the peer removed {RL_PREFIX} during routelet's restart: {d:?}\n{}",
            peer.log()
        ),
    )?;
    let d = own.deletions(PEER_PREFIX);
    ensure(
        d.is_empty(),
        format!(
            "routelet's kernel lost {PEER_PREFIX} during its restart: {d:?}\n{}",
            own.log()
        ),
    )
}

/// A routelet started again on `ns` saw the kernel routes of its previous run and said so.
fn restarted_with_forwarding_state(rl: &Routelet) -> Result<()> {
    wait_until("the new routelet converged", UP, |seen| {
        let st = rl.status()?;
        seen.push_str(&format!("converged: {}\n", st["converged"]));
        Ok(st["converged"] == true)
    })?;
    let log = std::fs::read_to_string(rl.daemon.log_path()).unwrap_or_default();
    ensure(
        log.contains("advertising a restart with forwarding state preserved"),
        format!("the restarted routelet did not detect its preserved routes:\n{log}"),
    )
}

/// Waits until routelet `b`'s status of `neighbor` satisfies `ok`.
fn wait_view(
    b: &Routelet,
    neighbor: &str,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Result<()> {
    wait_until(what, UP, |seen| {
        let n = b.neighbor(neighbor)?.unwrap_or_default();
        seen.push_str(&format!("{n}\n"));
        Ok(ok(&n))
    })?;
    Ok(())
}

fn start_again(lab: &Lab, ns: &Netns, name: &str) -> Result<Routelet> {
    Routelet::start(lab, ns, name, &restarting_routelet(None))
}

/// kill -9 then start again: the routelet helper keeps the routes (stale), the restarted
/// routelet's kernel keeps the learned ones, neither kernel ever deletes a route, and the
/// stale mark is gone after End-of-RIB.
#[test]
fn routelet_helper_keeps_routes_across_kill_and_restart() -> Result<()> {
    Lab::run("grkill", |lab| {
        let pair = Pair::new(lab)?;
        let mut a = Routelet::start(lab, &pair.r, "a", &restarting_routelet(None))?;
        let b = Routelet::start(lab, &pair.p, "b", &peer_routelet())?;
        wait_routes(&pair, RT_PROTO)?;
        let mon_b = RouteMonitor::start(lab, &pair.p, "mon-b")?;
        let mon_a = RouteMonitor::start(lab, &pair.r, "mon-a")?;
        a.daemon.signal("KILL")?;
        a.daemon.stop();
        wait_view(&b, R4, "b keeps a's route as stale", |n| {
            n["stale_routes"] == 1 && n["state"] != "established"
        })?;
        let a2 = start_again(lab, &pair.r, "a2")?;
        wait_view(&b, R4, "b: a is back, nothing stale", |n| {
            n["state"] == "established" && n["stale_routes"] == 0
        })?;
        restarted_with_forwarding_state(&a2)?;
        let mut seen = String::new();
        ensure(
            pair.p.has_kernel_route(RL_PREFIX, RT_PROTO, &mut seen)?,
            format!("b still routes to a's prefix: {seen}"),
        )?;
        nothing_deleted(&mon_b, &mon_a)
    })
}

/// SIGTERM (an upgrade): both sides do RFC 8538, so routelet sends Cease / Administrative
/// Shutdown and the helper still keeps the routes.
#[test]
fn sigterm_is_a_graceful_restart_for_the_routelet_helper() -> Result<()> {
    Lab::run("grterm", |lab| {
        let pair = Pair::new(lab)?;
        let mut a = Routelet::start(lab, &pair.r, "a", &restarting_routelet(None))?;
        let b = Routelet::start(lab, &pair.p, "b", &peer_routelet())?;
        wait_routes(&pair, RT_PROTO)?;
        let mon_b = RouteMonitor::start(lab, &pair.p, "mon-b")?;
        let mon_a = RouteMonitor::start(lab, &pair.r, "mon-a")?;
        a.daemon.signal("TERM")?;
        wait_view(&b, R4, "b keeps a's route after a's Cease", |n| {
            n["stale_routes"] == 1 && n["notifications_received"]["6/2"] == 1
        })?;
        a.daemon.stop();
        let a2 = start_again(lab, &pair.r, "a2")?;
        wait_view(&b, R4, "b: a is back, nothing stale", |n| {
            n["state"] == "established" && n["stale_routes"] == 0
        })?;
        restarted_with_forwarding_state(&a2)?;
        nothing_deleted(&mon_b, &mon_a)
    })
}

/// A peer that does not come back within the restart time it advertised loses its routes.
#[test]
fn routes_of_a_peer_that_stays_away_go_after_its_restart_time() -> Result<()> {
    Lab::run("grexpire", |lab| {
        let pair = Pair::new(lab)?;
        let mut a = Routelet::start(lab, &pair.r, "a", &restarting_routelet(Some(3)))?;
        let b = Routelet::start(lab, &pair.p, "b", &peer_routelet())?;
        wait_routes(&pair, RT_PROTO)?;
        a.daemon.signal("KILL")?;
        a.daemon.stop();
        wait_view(&b, R4, "b keeps a's route as stale", |n| {
            n["stale_routes"] == 1
        })?;
        let took = wait_until("b removes a's route after 3 s", UP, |seen| {
            Ok(!pair.p.has_kernel_route(RL_PREFIX, RT_PROTO, seen)?)
        })?;
        eprintln!("stale route removed {took:?} after the helper saw the restart");
        let n = b.neighbor(R4)?.unwrap_or_default();
        ensure(n["stale_routes"] == 0, format!("nothing stale left: {n}"))
    })
}

/// Graceful restart off: a clean stop withdraws at once (Cease, no stale routes).
#[test]
fn without_graceful_restart_a_stop_withdraws_at_once() -> Result<()> {
    Lab::run("groff", |lab| {
        let pair = Pair::new(lab)?;
        let mut cfg = restarting_routelet(None);
        cfg.graceful_restart = Some(false);
        let mut a = Routelet::start(lab, &pair.r, "a", &cfg)?;
        let b = Routelet::start(lab, &pair.p, "b", &peer_routelet())?;
        wait_routes(&pair, RT_PROTO)?;
        a.daemon.signal("KILL")?;
        a.daemon.stop();
        wait_until(
            "b removes a's route at once",
            Duration::from_secs(5),
            |seen| Ok(!pair.p.has_kernel_route(RL_PREFIX, RT_PROTO, seen)?),
        )?;
        let n = b.neighbor(R4)?.unwrap_or_default();
        ensure(n["stale_routes"] == 0, format!("nothing stale: {n}"))
    })
}

/// A routing daemon as the helper: `a` (routelet, in `pair.r`) is killed and started again;
/// the daemon (in `pair.p`, installing with route protocol `proto`) keeps routelet's route
/// while the session is down (`up` false, `has_route` true) and after it is back, and neither
/// kernel ever deletes a route.
fn daemon_helper_keeps_routes(
    lab: &Lab,
    pair: &Pair,
    mut a: Routelet,
    proto: &str,
    up: impl Fn(&mut String) -> Result<bool>,
    has_route: impl Fn(&mut String) -> Result<bool>,
) -> Result<()> {
    wait_routes(pair, proto)?;
    let mon_b = RouteMonitor::start(lab, &pair.p, "mon-b")?;
    let mon_a = RouteMonitor::start(lab, &pair.r, "mon-a")?;
    a.daemon.signal("KILL")?;
    a.daemon.stop();
    wait_until(
        "the helper sees routelet gone and keeps its route",
        UP,
        |seen| Ok(!up(seen)? && has_route(seen)?),
    )?;
    let a2 = start_again(lab, &pair.r, "a2")?;
    wait_until("routelet and the helper established again", UP, |seen| {
        Ok(up(seen)? && a2.established(P4, seen)?)
    })?;
    restarted_with_forwarding_state(&a2)?;
    // The helper flushes what routelet did not announce again after its End-of-RIB.
    std::thread::sleep(Duration::from_secs(1));
    let mut seen = String::new();
    ensure(
        has_route(&mut seen)?,
        format!("the helper has routelet's route: {seen}"),
    )?;
    nothing_deleted(&mon_b, &mon_a)
}

/// BIRD 2 as the helper ("graceful restart aware", its default).
#[test]
fn bird_helper_keeps_routes_across_routelet_kill_and_restart() -> Result<()> {
    Lab::run("grbird", |lab| {
        let pair = Pair::new(lab)?;
        let a = Routelet::start(lab, &pair.r, "a", &restarting_routelet(None))?;
        let mut bcfg = BirdConfig::new(P4, 65002);
        bcfg.neighbors.push(BirdNeighbor::new("rl", R4, 65001));
        bcfg.statics.push(PEER_PREFIX.to_string());
        let bird = Bird::start(lab, &pair.p, "bird", &bcfg)?;
        daemon_helper_keeps_routes(
            lab,
            &pair,
            a,
            "bird",
            |seen| bird.established("rl", seen),
            |seen| bird.has_route(RL_PREFIX, Some("rl"), seen),
        )
    })
}

/// FRR 8.4 as the helper (helper mode is FRR's default).
#[test]
fn frr_helper_keeps_routes_across_routelet_kill_and_restart() -> Result<()> {
    Lab::run("grfrr", |lab| {
        let pair = Pair::new(lab)?;
        let a = Routelet::start(lab, &pair.r, "a", &restarting_routelet(None))?;
        let mut fcfg = FrrConfig::new(P4, 65002);
        fcfg.neighbors.push(FrrNeighbor::new(R4, 65001));
        fcfg.networks.push(PEER_PREFIX.to_string());
        let frr = Frr::start(lab, &pair.p, "frr", &fcfg)?;
        daemon_helper_keeps_routes(
            lab,
            &pair,
            a,
            "bgp",
            |seen| frr.established(R4, seen),
            |seen| frr.bgp_has(RL_PREFIX, seen),
        )
    })
}

/// routelet as the helper of a restarting BIRD (`graceful restart on`): `birdc graceful
/// restart` stops BIRD without flushing its peers, BIRD starts again with `-R`; routelet keeps
/// BIRD's route (stale) the whole time, its kernel never deletes it, and nothing is stale once
/// BIRD's End-of-RIB has arrived.
#[test]
fn routelet_helper_keeps_routes_of_a_restarting_bird() -> Result<()> {
    Lab::run("grbirdrs", |lab| {
        let pair = Pair::new(lab)?;
        let rl = Routelet::start(lab, &pair.r, "a", &restarting_routelet(None))?;
        let mut bcfg = BirdConfig::new(P4, 65002);
        let mut n = BirdNeighbor::new("rl", R4, 65001);
        n.graceful_restart = true;
        bcfg.neighbors.push(n);
        bcfg.statics.push(PEER_PREFIX.to_string());
        let mut bird = Bird::start(lab, &pair.p, "bird", &bcfg)?;
        wait_routes(&pair, "bird")?;
        let mon = RouteMonitor::start(lab, &pair.r, "mon-a")?;
        bird.birdc(&["graceful", "restart"])?;
        wait_until("BIRD exited", UP, |seen| {
            seen.push_str("waiting for BIRD to exit after `graceful restart`\n");
            Ok(bird.daemon.check_running().is_err())
        })?;
        bird.daemon.stop();
        wait_view(&rl, P4, "routelet keeps BIRD's route as stale", |n| {
            n["stale_routes"] == 1 && n["state"] != "established"
        })?;
        let bird2 = Bird::start_with(lab, &pair.p, "bird2", &bcfg, &["-R"])?;
        wait_view(&rl, P4, "BIRD is back, nothing stale", |n| {
            n["state"] == "established" && n["stale_routes"] == 0
        })?;
        let mut seen = String::new();
        ensure(
            bird2.established("rl", &mut seen)?
                && pair.r.has_kernel_route(PEER_PREFIX, RT_PROTO, &mut seen)?,
            format!("BIRD's route still in routelet's kernel: {seen}"),
        )?;
        let d = mon.deletions(PEER_PREFIX);
        ensure(
            d.is_empty(),
            format!(
                "routelet's kernel lost {PEER_PREFIX} during BIRD's restart: {d:?}\n{}",
                mon.log()
            ),
        )
    })
}
