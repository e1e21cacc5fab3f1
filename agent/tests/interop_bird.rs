//! Interop: routelet <-> BIRD 2 (eBGP, iBGP, TCP MD5, hold timer, link failure).
//! Needs root and bird2; run via scripts/test.sh.

mod interop;

use std::time::Duration;

use interop::bird::{Bird, BirdConfig, BirdNeighbor};
use interop::frr::{Frr, FrrConfig, FrrNeighbor};
use interop::routelet::{RlNeighbor, Routelet, RouteletConfig, RT_PROTO};
use interop::{ensure, holds_for, wait_until, Lab, Pair, Result, P4, R4};

const RL_PREFIX: &str = "10.244.1.0/24";
const BIRD_PREFIX: &str = "10.245.0.0/24";
const SESSION_UP: Duration = Duration::from_secs(15);
const ROUTE_UP: Duration = Duration::from_secs(10);

/// Daemons first: fields drop in declaration order, so daemons stop before the namespaces go.
struct Setup {
    bird: Bird,
    rl: Routelet,
    pair: Pair,
}

struct Opts {
    bird_asn: u32,
    rl_password: Option<&'static str>,
    bird_password: Option<&'static str>,
    hold_time: u16,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            bird_asn: 65002,
            rl_password: None,
            bird_password: None,
            hold_time: 9,
        }
    }
}

/// routelet (AS 65001, 10.0.0.1, originates 10.244.1.0/24) <-> BIRD (10.0.0.2, static 10.245.0.0/24).
fn setup(lab: &Lab, o: Opts) -> Result<Setup> {
    let pair = Pair::new(lab)?;
    let mut rcfg = RouteletConfig::new(R4, 65001);
    let mut n = RlNeighbor::new(P4, o.bird_asn);
    n.password = o.rl_password.map(str::to_string);
    n.hold_time = o.hold_time;
    rcfg.neighbors.push(n);
    rcfg.originate.push(RL_PREFIX.to_string());
    let rl = Routelet::start(lab, &pair.r, "routelet", &rcfg)?;

    let mut bcfg = BirdConfig::new(P4, o.bird_asn);
    let mut bn = BirdNeighbor::new("rl", R4, 65001);
    bn.password = o.bird_password.map(str::to_string);
    bn.hold_time = o.hold_time;
    bcfg.neighbors.push(bn);
    bcfg.statics.push(BIRD_PREFIX.to_string());
    let bird = Bird::start(lab, &pair.p, "bird", &bcfg)?;
    Ok(Setup { bird, rl, pair })
}

fn wait_established(s: &Setup) -> Result<()> {
    wait_until(
        "routelet <-> BIRD session established on both sides",
        SESSION_UP,
        |seen| {
            let a = s.rl.established(P4, seen)?;
            let b = s.bird.established("rl", seen)?;
            Ok(a && b)
        },
    )?;
    Ok(())
}

/// Routes flow both ways and reach both kernels.
fn assert_routes_both_ways(s: &Setup) -> Result<()> {
    wait_until(
        "routelet's prefix in BIRD's table and BIRD's kernel",
        ROUTE_UP,
        |seen| {
            let t = s.bird.has_route(RL_PREFIX, Some("rl"), seen)?;
            let k = s.pair.p.has_kernel_route(RL_PREFIX, "bird", seen)?;
            Ok(t && k)
        },
    )?;
    wait_until(
        "BIRD's prefix in routelet's RIB and kernel (proto 200)",
        ROUTE_UP,
        |seen| {
            let r = s.rl.rib_has(BIRD_PREFIX, seen)?;
            let k = s.pair.r.has_kernel_route(BIRD_PREFIX, RT_PROTO, seen)?;
            Ok(r && k)
        },
    )?;
    let entry = s.rl.rib_entry(BIRD_PREFIX)?;
    let nh_ok = entry
        .as_ref()
        .and_then(|e| e.get("next_hops"))
        .and_then(|n| n.as_array())
        .is_some_and(|n| n.iter().any(|h| h.as_str() == Some(P4)));
    ensure(
        nh_ok,
        format!("routelet RIB entry for {BIRD_PREFIX} should have next hop {P4}: {entry:?}"),
    )?;
    let route = s.pair.r.ip(&["route", "show", BIRD_PREFIX])?;
    ensure(
        route.contains(&format!("via {P4}")),
        format!("kernel route for {BIRD_PREFIX} should go via {P4}: {route}"),
    )
}

#[test]
fn bird_ebgp_routes_both_ways() -> Result<()> {
    Lab::run("bebgp", |lab| {
        let s = setup(lab, Opts::default())?;
        wait_established(&s)?;
        assert_routes_both_ways(&s)
    })
}

#[test]
fn bird_ibgp_routes_both_ways() -> Result<()> {
    Lab::run("bibgp", |lab| {
        let s = setup(
            lab,
            Opts {
                bird_asn: 65001,
                ..Opts::default()
            },
        )?;
        wait_established(&s)?;
        assert_routes_both_ways(&s)
    })
}

#[test]
fn bird_md5_right_password_establishes() -> Result<()> {
    Lab::run("bmd5ok", |lab| {
        let s = setup(
            lab,
            Opts {
                rl_password: Some("s3cret"),
                bird_password: Some("s3cret"),
                ..Opts::default()
            },
        )?;
        wait_established(&s)?;
        assert_routes_both_ways(&s)
    })
}

#[test]
fn bird_md5_wrong_password_stays_down() -> Result<()> {
    Lab::run("bmd5bad", |lab| {
        let s = setup(
            lab,
            Opts {
                rl_password: Some("s3cret"),
                bird_password: Some("wrong"),
                ..Opts::default()
            },
        )?;
        holds_for(
            "session with mismatched MD5 passwords stays down",
            Duration::from_secs(8),
            |seen| {
                let a = s.rl.established(P4, seen)?;
                let b = s.bird.established("rl", seen)?;
                Ok(!a && !b)
            },
        )?;
        // The neighbor is configured, so it must still be listed (just not established).
        ensure(
            s.rl.neighbor(P4)?.is_some(),
            format!("routelet status should still list neighbor {P4}"),
        )?;
        let mut seen = String::new();
        ensure(
            !s.pair
                .r
                .has_kernel_route(BIRD_PREFIX, RT_PROTO, &mut seen)?,
            format!("no route may be learned over a session that never came up: {seen}"),
        )
    })
}

#[test]
fn bird_session_survives_three_hold_times() -> Result<()> {
    Lab::run("bhold", |lab| {
        let s = setup(
            lab,
            Opts {
                hold_time: 3,
                ..Opts::default()
            },
        )?;
        wait_established(&s)?;
        let before = s.rl.uptime(P4)?;
        holds_for(
            "session with hold time 3 stays established for 10 s (keepalives flow)",
            Duration::from_secs(10),
            |seen| {
                let a = s.rl.established(P4, seen)?;
                let b = s.bird.established("rl", seen)?;
                Ok(a && b)
            },
        )?;
        let after = s.rl.uptime(P4)?;
        match (before, after) {
            (Some(b), Some(a)) => ensure(
                a >= b + 9.0,
                format!("uptime should grow by ~10 s without reset: before {b}, after {a}"),
            ),
            _ => ensure(
                false,
                format!("uptime_seconds missing in status: before {before:?}, after {after:?}"),
            ),
        }
    })
}

#[test]
fn bird_link_down_detected_at_hold_expiry() -> Result<()> {
    Lab::run("blink", |lab| {
        let s = setup(
            lab,
            Opts {
                hold_time: 3,
                ..Opts::default()
            },
        )?;
        wait_established(&s)?;
        assert_routes_both_ways(&s)?;
        // Silence the peer: the far end goes down, routelet sees no more keepalives.
        s.pair.p.ip(&["link", "set", "vp", "down"])?;
        let took = wait_until(
            "routelet drops the session and withdraws BIRD's route from its kernel table",
            Duration::from_secs(8),
            |seen| {
                let up = s.rl.established(P4, seen)?;
                let k = s.pair.r.has_kernel_route(BIRD_PREFIX, RT_PROTO, seen)?;
                let r = s.rl.rib_has(BIRD_PREFIX, seen)?;
                Ok(!up && !k && !r)
            },
        )?;
        ensure(
            took <= Duration::from_secs(5),
            format!("hold time is 3 s, detection took {took:?}"),
        )
    })
}

/// Harness sanity (no routelet): BIRD <-> FRR eBGP, routes into both kernels.
#[test]
#[ignore = "daemon-to-daemon harness check; run with --ignored"]
fn sanity_bird_peers_with_frr() -> Result<()> {
    Lab::run("sbird", |lab| {
        let pair = Pair::new(lab)?;
        let mut bcfg = BirdConfig::new(R4, 65001);
        bcfg.neighbors.push(BirdNeighbor::new("frr", P4, 65002));
        bcfg.statics.push(RL_PREFIX.to_string());
        let bird = Bird::start(lab, &pair.r, "bird", &bcfg)?;
        let mut fcfg = FrrConfig::new(P4, 65002);
        fcfg.neighbors.push(FrrNeighbor::new(R4, 65001));
        fcfg.networks.push(BIRD_PREFIX.to_string());
        let frr = Frr::start(lab, &pair.p, "frr", &fcfg)?;
        wait_until("BIRD <-> FRR established", SESSION_UP, |seen| {
            Ok(bird.established("frr", seen)? && frr.established(R4, seen)?)
        })?;
        wait_until("routes both ways incl. kernels", ROUTE_UP, |seen| {
            let a = bird.has_route(BIRD_PREFIX, Some("frr"), seen)?;
            let b = pair.r.has_kernel_route(BIRD_PREFIX, "bird", seen)?;
            let c = frr.bgp_has(RL_PREFIX, seen)?;
            let d = frr.zebra_has(RL_PREFIX, seen)?;
            let e = pair.p.has_kernel_route(RL_PREFIX, "bgp", seen)?;
            Ok(a && b && c && d && e)
        })?;
        drop(frr);
        drop(bird);
        Ok(())
    })
}
