//! Interop: routelet <-> GoBGP (eBGP, routes both ways). GoBGP runs without zebra, so its side
//! is checked in its RIB. Needs root and gobgpd; run via scripts/test.sh.

mod interop;

use std::time::Duration;

use interop::exabgp::{Exabgp, ExabgpConfig};
use interop::gobgp::{Gobgp, GobgpConfig, GobgpNeighbor};
use interop::routelet::{RlNeighbor, Routelet, RouteletConfig, RT_PROTO};
use interop::{ensure, wait_until, Lab, Pair, Result, P4, R4};

const RL_PREFIX: &str = "10.244.1.0/24";
const GOBGP_PREFIX: &str = "10.246.0.0/24";
const SESSION_UP: Duration = Duration::from_secs(15);
const ROUTE_UP: Duration = Duration::from_secs(10);

#[test]
fn gobgp_ebgp_routes_both_ways() -> Result<()> {
    Lab::run("gebgp", |lab| {
        let pair = Pair::new(lab)?;
        let mut rcfg = RouteletConfig::new(R4, 65001);
        rcfg.neighbors.push(RlNeighbor::new(P4, 65003));
        rcfg.originate.push(RL_PREFIX.to_string());
        let rl = Routelet::start(lab, &pair.r, "routelet", &rcfg)?;
        let gcfg = GobgpConfig {
            router_id: P4.into(),
            asn: 65003,
            neighbors: vec![GobgpNeighbor::new(R4, 65001)],
        };
        let gobgp = Gobgp::start(lab, &pair.p, "gobgp", &gcfg)?;
        gobgp.add_route(GOBGP_PREFIX)?;

        wait_until(
            "routelet <-> GoBGP established on both sides",
            SESSION_UP,
            |seen| Ok(rl.established(P4, seen)? && gobgp.established(R4, seen)?),
        )?;
        wait_until("routelet's prefix in GoBGP's RIB", ROUTE_UP, |seen| {
            gobgp.rib_has(RL_PREFIX, seen)
        })?;
        let sources = gobgp.rib_sources(RL_PREFIX)?;
        ensure(
            sources.iter().any(|s| s == R4),
            format!("GoBGP should have learned {RL_PREFIX} from {R4}, sources: {sources:?}"),
        )?;
        wait_until(
            "GoBGP's prefix in routelet's RIB and kernel (proto 200)",
            ROUTE_UP,
            |seen| {
                Ok(rl.rib_has(GOBGP_PREFIX, seen)?
                    && pair.r.has_kernel_route(GOBGP_PREFIX, RT_PROTO, seen)?)
            },
        )?;
        // A withdrawal on GoBGP's side removes the route from routelet's RIB and kernel.
        gobgp.del_route(GOBGP_PREFIX)?;
        wait_until(
            "GoBGP's withdrawn prefix leaves routelet's RIB and kernel",
            ROUTE_UP,
            |seen| {
                Ok(!rl.rib_has(GOBGP_PREFIX, seen)?
                    && !pair.r.has_kernel_route(GOBGP_PREFIX, RT_PROTO, seen)?)
            },
        )?;
        Ok(())
    })
}

/// Harness sanity (no routelet): GoBGP <-> ExaBGP, routes both ways.
#[test]
#[ignore = "daemon-to-daemon harness check; run with --ignored"]
fn sanity_gobgp_peers_with_exabgp() -> Result<()> {
    Lab::run("sgobgp", |lab| {
        let pair = Pair::new(lab)?;
        let gcfg = GobgpConfig {
            router_id: R4.into(),
            asn: 65003,
            neighbors: vec![GobgpNeighbor::new(P4, 65004)],
        };
        let gobgp = Gobgp::start(lab, &pair.r, "gobgp", &gcfg)?;
        gobgp.add_route(GOBGP_PREFIX)?;
        let mut ecfg = ExabgpConfig::new(P4, 65004, R4, 65003);
        ecfg.routes = vec![RL_PREFIX.to_string(), "10.247.0.0/24".to_string()];
        let exa = Exabgp::start(lab, &pair.p, "exabgp", &ecfg)?;
        wait_until("GoBGP <-> ExaBGP established", SESSION_UP, |seen| {
            let v = exa.view()?;
            seen.push_str(&format!("exabgp states {:?}\n", v.states));
            Ok(gobgp.established(P4, seen)? && v.up())
        })?;
        wait_until("routes both ways", ROUTE_UP, |seen| {
            let v = exa.view()?;
            seen.push_str(&format!("exabgp received {:?}\n", v.prefixes));
            Ok(gobgp.rib_has(RL_PREFIX, seen)?
                && gobgp.rib_has("10.247.0.0/24", seen)?
                && v.has(GOBGP_PREFIX))
        })?;
        gobgp.del_route(GOBGP_PREFIX)?;
        wait_until("withdrawal reaches ExaBGP", ROUTE_UP, |seen| {
            let v = exa.view()?;
            seen.push_str(&format!("exabgp received {:?}\n", v.prefixes));
            Ok(!v.has(GOBGP_PREFIX))
        })?;
        Ok(())
    })
}
