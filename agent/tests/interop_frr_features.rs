//! Interop with FRR 8.4 for the session features beyond plain routing: RFC 8950 extended next
//! hop (IPv4 routes over an IPv6 session, in both RIBs and routelet's kernel) and GTSM
//! (RFC 5082: up with `ttl-security hops 1`, down against a peer that sends TTL 1).

mod interop;

use std::time::Duration;

use interop::frr::{Frr, FrrConfig, FrrNeighbor};
use interop::routelet::{RlNeighbor, Routelet, RouteletConfig, RT_PROTO};
use interop::{ensure, holds_for, wait_until, Lab, Pair, Result, P4, P6, R4, R6};

const RL_V4: &str = "10.244.1.0/24";
const FRR_V4: &str = "10.245.0.0/24";
const RL_V6: &str = "2001:db8:244:1::/64";
const FRR_V6: &str = "2001:db8:245::/64";

struct Setup {
    frr: Frr,
    rl: Routelet,
    pair: Pair,
}

#[test]
fn frr_ipv4_routes_over_ipv6_session_with_extended_next_hop() -> Result<()> {
    Lab::run("fextnh", |lab| {
        let pair = Pair::new(lab)?;
        let mut rcfg = RouteletConfig::new(R4, 65001);
        let mut n = RlNeighbor::new(P6, 65002);
        n.families = vec!["ipv4_unicast".into(), "ipv6_unicast".into()];
        rcfg.neighbors.push(n);
        rcfg.originate
            .extend([RL_V4.to_string(), RL_V6.to_string()]);
        let rl = Routelet::start(lab, &pair.r, "routelet", &rcfg)?;
        let mut fcfg = FrrConfig::new(P4, 65002);
        let mut fnb = FrrNeighbor::new(R6, 65001);
        fnb.ipv4 = true;
        fnb.ipv6 = true;
        fnb.extra.push("capability extended-nexthop".into());
        fcfg.neighbors.push(fnb);
        fcfg.networks
            .extend([FRR_V4.to_string(), FRR_V6.to_string()]);
        let frr = Frr::start(lab, &pair.p, "frr", &fcfg)?;
        let s = Setup { frr, rl, pair };

        wait_until(
            "IPv6 session established on both sides",
            Duration::from_secs(15),
            |seen| Ok(s.rl.established(P6, seen)? && s.frr.established(R6, seen)?),
        )?;
        wait_until(
            "routelet's IPv4 and IPv6 prefixes in FRR's BGP table",
            Duration::from_secs(10),
            |seen| Ok(s.frr.bgp_has(RL_V4, seen)? && s.frr.bgp_has(RL_V6, seen)?),
        )?;
        wait_until(
            "FRR's IPv4 prefix in routelet's RIB and kernel via an IPv6 next hop",
            Duration::from_secs(10),
            |seen| {
                let r = s.rl.rib_has(FRR_V4, seen)?;
                let k = s.pair.r.has_kernel_route(FRR_V4, RT_PROTO, seen)?;
                let k6 = s.pair.r.has_kernel_route(FRR_V6, RT_PROTO, seen)?;
                Ok(r && k && k6)
            },
        )?;
        let route = s.pair.r.ip(&["route", "show", FRR_V4, "proto", RT_PROTO])?;
        ensure(
            route.contains("via inet6 2001:db8::2"),
            format!("{FRR_V4} should be installed via FRR's IPv6 address: {route}"),
        )?;
        // FRR learned routelet's IPv4 prefix with routelet's IPv6 address as next hop.
        let json = s
            .frr
            .vtysh_json(&format!("show bgp ipv4 unicast {RL_V4} json"))?;
        let text = json.to_string();
        ensure(
            text.contains(R6),
            format!("FRR's path for {RL_V4} should carry next hop {R6}: {text}"),
        )
    })
}

fn gtsm_setup(lab: &Lab, frr_gtsm: bool) -> Result<Setup> {
    let pair = Pair::new(lab)?;
    let mut rcfg = RouteletConfig::new(R4, 65001);
    let mut n = RlNeighbor::new(P4, 65002);
    n.ttl_security = true;
    rcfg.neighbors.push(n);
    rcfg.originate.push(RL_V4.to_string());
    let rl = Routelet::start(lab, &pair.r, "routelet", &rcfg)?;
    let mut fcfg = FrrConfig::new(P4, 65002);
    let mut fnb = FrrNeighbor::new(R4, 65001);
    if frr_gtsm {
        fnb.extra.push("ttl-security hops 1".into());
    }
    fcfg.neighbors.push(fnb);
    fcfg.networks.push(FRR_V4.to_string());
    let frr = Frr::start(lab, &pair.p, "frr", &fcfg)?;
    Ok(Setup { frr, rl, pair })
}

#[test]
fn frr_gtsm_both_sides_establishes() -> Result<()> {
    Lab::run("fgtsm", |lab| {
        let s = gtsm_setup(lab, true)?;
        wait_until(
            "GTSM session established",
            Duration::from_secs(15),
            |seen| Ok(s.rl.established(P4, seen)? && s.frr.established(R4, seen)?),
        )?;
        wait_until(
            "FRR's prefix in routelet's kernel",
            Duration::from_secs(10),
            |seen| s.pair.r.has_kernel_route(FRR_V4, RT_PROTO, seen),
        )?;
        Ok(())
    })
}

#[test]
fn frr_without_gtsm_is_not_accepted_by_gtsm_neighbor() -> Result<()> {
    Lab::run("fgtsmno", |lab| {
        // FRR sends eBGP with TTL 1; routelet accepts only TTL >= 254 from this neighbor.
        let s = gtsm_setup(lab, false)?;
        holds_for(
            "session stays down without GTSM on the peer",
            Duration::from_secs(8),
            |seen| Ok(!s.rl.established(P4, seen)? && !s.frr.established(R4, seen)?),
        )?;
        let mut seen = String::new();
        ensure(
            !s.pair.r.has_kernel_route(FRR_V4, RT_PROTO, &mut seen)?,
            format!("no route may be learned without GTSM: {seen}"),
        )
    })
}
