//! Interop: routelet <-> ExaBGP 4.2 (many static routes into routelet's RIB and kernel,
//! routelet's route into ExaBGP's receive log, an unconfigured peer refused).
//! Needs root and exabgp; run via scripts/test.sh.

mod interop;

use std::time::Duration;

use interop::bird::{Bird, BirdConfig, BirdNeighbor};
use interop::exabgp::{Exabgp, ExabgpConfig};
use interop::netns::add_addr;
use interop::routelet::{metric_value, RlNeighbor, Routelet, RouteletConfig, RT_PROTO};
use interop::{ensure, holds_for, same_addr, wait_until, Lab, Pair, Result, P4, R4};

const RL_PREFIX: &str = "10.244.1.0/24";
const ROUTES: usize = 200;
const SESSION_UP: Duration = Duration::from_secs(15);
const ROUTE_UP: Duration = Duration::from_secs(15);

/// 10.250.0.0/24, 10.250.1.0/24, ... (n <= 65536).
fn exa_prefixes(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.0/24", 250 + i / 256, i % 256))
        .collect()
}

#[test]
fn exabgp_routes_both_ways() -> Result<()> {
    Lab::run("xboth", |lab| {
        let pair = Pair::new(lab)?;
        let mut rcfg = RouteletConfig::new(R4, 65001);
        rcfg.neighbors.push(RlNeighbor::new(P4, 65005));
        rcfg.originate.push(RL_PREFIX.to_string());
        let rl = Routelet::start(lab, &pair.r, "routelet", &rcfg)?;
        let prefixes = exa_prefixes(ROUTES);
        let mut ecfg = ExabgpConfig::new(P4, 65005, R4, 65001);
        ecfg.routes = prefixes.clone();
        let exa = Exabgp::start(lab, &pair.p, "exabgp", &ecfg)?;

        wait_until("routelet <-> ExaBGP established", SESSION_UP, |seen| {
            let v = exa.view()?;
            seen.push_str(&format!("exabgp states {:?}\n", v.states));
            Ok(rl.established(P4, seen)? && v.up())
        })?;
        wait_until(
            &format!("all {ROUTES} ExaBGP routes in routelet's RIB and kernel"),
            ROUTE_UP,
            |seen| {
                let st = rl.status()?;
                let rib = interop::routelet::rib_prefixes(&st);
                let in_rib = prefixes
                    .iter()
                    .filter(|p| rib.iter().any(|r| interop::same_prefix(r, p)))
                    .count();
                let kernel = pair.r.kernel_routes(false, RT_PROTO)?;
                let in_kernel = prefixes
                    .iter()
                    .filter(|p| kernel.iter().any(|r| interop::same_prefix(r, p)))
                    .count();
                seen.push_str(&format!(
                    "{in_rib}/{ROUTES} in RIB, {in_kernel}/{ROUTES} in kernel\n"
                ));
                Ok(in_rib == ROUTES && in_kernel == ROUTES)
            },
        )?;
        let accepted = rl
            .neighbor(P4)?
            .and_then(|n| n.get("accepted").and_then(|a| a.as_u64()));
        ensure(
            accepted == Some(ROUTES as u64),
            format!("status should count {ROUTES} accepted routes from {P4}, got {accepted:?}"),
        )?;
        wait_until(
            "routelet's prefix in ExaBGP's receive log",
            ROUTE_UP,
            |seen| {
                let v = exa.view()?;
                seen.push_str(&format!("exabgp received {:?}\n", v.prefixes));
                Ok(v.has(RL_PREFIX))
            },
        )?;
        // ExaBGP only receives what routelet advertises: its own routes must not be echoed back.
        let v = exa.view()?;
        ensure(
            v.prefixes.len() == 1,
            format!(
                "ExaBGP should receive exactly routelet's prefix, got {:?}",
                v.prefixes
            ),
        )
    })
}

#[test]
fn exabgp_unconfigured_peer_is_refused() -> Result<()> {
    Lab::run("xrefuse", |lab| {
        let pair = Pair::new(lab)?;
        const STRANGER: &str = "10.0.0.9";
        add_addr(&pair.p, "vp", "10.0.0.9/24")?;
        let mut rcfg = RouteletConfig::new(R4, 65001);
        rcfg.metrics_address = Some("127.0.0.1:9179".into());
        rcfg.neighbors.push(RlNeighbor::new(P4, 65005));
        let rl = Routelet::start(lab, &pair.r, "routelet", &rcfg)?;
        // Positive control: the configured peer comes up.
        let known = Exabgp::start(
            lab,
            &pair.p,
            "exabgp-known",
            &ExabgpConfig::new(P4, 65005, R4, 65001),
        )?;
        let mut scfg = ExabgpConfig::new(STRANGER, 65009, R4, 65001);
        scfg.routes = vec!["10.251.0.0/24".into()];
        let stranger = Exabgp::start(lab, &pair.p, "exabgp-stranger", &scfg)?;

        wait_until("configured ExaBGP peer established", SESSION_UP, |seen| {
            let v = known.view()?;
            seen.push_str(&format!("known exabgp states {:?}\n", v.states));
            Ok(rl.established(P4, seen)? && v.up())
        })?;
        wait_until(
            "routelet counts the refused connection",
            Duration::from_secs(10),
            |seen| {
                let n = rl.connections_rejected()?;
                seen.push_str(&format!("connections_rejected = {n:?}\n"));
                Ok(n.is_some_and(|n| n >= 1))
            },
        )?;
        holds_for(
            "unconfigured peer never gets a session",
            Duration::from_secs(8),
            |seen| {
                let v = stranger.view()?;
                let st = rl.status()?;
                let listed = st
                    .get("neighbors")
                    .and_then(|n| n.as_array())
                    .is_some_and(|ns| {
                        ns.iter().any(|n| {
                            n.get("address")
                                .and_then(|a| a.as_str())
                                .is_some_and(|a| same_addr(a, STRANGER))
                        })
                    });
                let rib_ok = !rl.rib_has("10.251.0.0/24", seen)?;
                seen.push_str(&format!(
                    "stranger exabgp states {:?}, listed in status: {listed}\n",
                    v.states
                ));
                Ok(!v.ever_up() && !listed && rib_ok)
            },
        )?;
        let metrics = rl.metrics()?;
        let rejected = metric_value(&metrics, "routelet_bgp_connections_rejected_total");
        ensure(
            rejected.is_some_and(|n| n >= 1.0),
            format!("/metrics should count the refused connection: {rejected:?}"),
        )
    })
}

/// Harness sanity (no routelet): ExaBGP feeds many static routes to BIRD and logs BIRD's route.
#[test]
#[ignore = "daemon-to-daemon harness check; run with --ignored"]
fn sanity_exabgp_feeds_bird() -> Result<()> {
    Lab::run("sexa", |lab| {
        let pair = Pair::new(lab)?;
        let mut bcfg = BirdConfig::new(R4, 65001);
        bcfg.neighbors.push(BirdNeighbor::new("exa", P4, 65005));
        bcfg.statics.push(RL_PREFIX.to_string());
        let bird = Bird::start(lab, &pair.r, "bird", &bcfg)?;
        let mut ecfg = ExabgpConfig::new(P4, 65005, R4, 65001);
        ecfg.routes = exa_prefixes(ROUTES);
        let exa = Exabgp::start(lab, &pair.p, "exabgp", &ecfg)?;
        wait_until(
            "BIRD has all ExaBGP routes in its table and kernel",
            ROUTE_UP + SESSION_UP,
            |seen| {
                let t = bird.routes(Some("exa"))?.len();
                let k = pair.r.kernel_routes(false, "bird")?.len();
                seen.push_str(&format!(
                    "bird table {t}, kernel {k}\n{}",
                    bird.protocol_line("exa")?
                ));
                Ok(t == ROUTES && k == ROUTES + 1)
            },
        )?;
        wait_until("BIRD's route in ExaBGP's log", ROUTE_UP, |seen| {
            let v = exa.view()?;
            seen.push_str(&format!("exabgp {v:?}\n"));
            Ok(v.up() && v.has(RL_PREFIX) && v.prefixes.len() == 1)
        })?;
        Ok(())
    })
}
