//! Interop: route reflection (RFC 4456) with BIRD 2, FRR 8.4, GoBGP 3 and ExaBGP, all iBGP in
//! AS 65000 on one shared L2 segment (a bridge in a hub namespace, 10.0.0.0/24), so reflector
//! and clients are one hop apart and a reflected route's next hop (the originating client) is
//! directly reachable. Each node's router id is its address; each client originates
//! 10.245.N.0/24 (N = last octet of its address). Reflected routes are checked attribute by
//! attribute (ORIGINATOR_ID, exact CLUSTER_LIST, next hop), so a missing reflection or a
//! missing / wrong attribute fails the test. Needs root and the daemons; run via
//! scripts/test.sh.

mod interop;

use std::cell::Cell;
use std::time::Duration;

use interop::bird::{Bird, BirdConfig, BirdNeighbor, BirdPath};
use interop::frr::{Frr, FrrConfig, FrrNeighbor, FrrPath};
use interop::gobgp::{Gobgp, GobgpConfig, GobgpNeighbor, GobgpPath};
use interop::netns::{bridge, veth};
use interop::routelet::{RlNeighbor, Routelet, RouteletConfig, RT_PROTO};
use interop::{ensure, holds_for, wait_until, Lab, Netns, Result};

const AS: u32 = 65000;
const SESSION_UP: Duration = Duration::from_secs(20);
const ROUTE_UP: Duration = Duration::from_secs(15);
/// How long an absence must hold once everything else has converged.
const QUIET: Duration = Duration::from_secs(3);

/// 10.0.0.N
fn addr(n: u8) -> String {
    format!("10.0.0.{n}")
}

/// The prefix node 10.0.0.N originates.
fn prefix(n: u8) -> String {
    format!("10.245.{n}.0/24")
}

/// A shared L2 segment: bridge `br0` in a hub namespace; every node is a namespace joined to it
/// by a veth (`eth0` in the node, `pN` on the bridge), address 10.0.0.N/24.
struct Segment {
    hub: Netns,
    ports: Cell<u32>,
}

impl Segment {
    fn new(lab: &Lab) -> Result<Segment> {
        let hub = lab.netns()?;
        bridge(&hub, "br0")?;
        Ok(Segment {
            hub,
            ports: Cell::new(0),
        })
    }

    /// A new namespace on the segment with address 10.0.0.N/24.
    fn node(&self, lab: &Lab, n: u8) -> Result<Netns> {
        let ns = lab.netns()?;
        let i = self.ports.get() + 1;
        self.ports.set(i);
        let port = format!("p{i}");
        veth(
            &self.hub,
            &port,
            &[],
            &ns,
            "eth0",
            &[&format!("{}/24", addr(n))],
        )?;
        self.hub.ip(&["link", "set", &port, "master", "br0"])?;
        Ok(ns)
    }
}

/// What a reflected route must look like at the receiving client.
struct Reflected<'a> {
    prefix: &'a str,
    /// The reflector it was learned from (address; for BIRD, the protocol name).
    from: &'a str,
    originator: &'a str,
    cluster_list: &'a [&'a str],
    next_hop: &'a str,
}

impl Reflected<'_> {
    fn describe(&self) -> String {
        format!(
            "{} from {} with ORIGINATOR_ID {}, CLUSTER_LIST {:?}, next hop {}",
            self.prefix, self.from, self.originator, self.cluster_list, self.next_hop
        )
    }

    fn bird_ok(&self, p: &BirdPath) -> bool {
        p.proto == self.from
            && p.attr("originator_id") == Some(self.originator)
            && p.cluster_list() == self.cluster_list
            && p.attr("next_hop") == Some(self.next_hop)
            && p.via.as_deref() == Some(self.next_hop)
    }

    fn frr_ok(&self, p: &FrrPath) -> bool {
        p.peer.as_deref() == Some(self.from)
            && p.originator_id.as_deref() == Some(self.originator)
            && p.cluster_list == self.cluster_list
            && p.next_hops == [self.next_hop]
    }

    fn gobgp_ok(&self, p: &GobgpPath) -> bool {
        p.neighbor.as_deref() == Some(self.from)
            && p.originator_id.as_deref() == Some(self.originator)
            && p.cluster_list == self.cluster_list
            && p.next_hop.as_deref() == Some(self.next_hop)
    }
}

/// Waits until BIRD has the reflected path `r` and has put the prefix into its kernel via the
/// originating client.
fn wait_bird(bird: &Bird, ns: &Netns, r: &Reflected<'_>) -> Result<()> {
    wait_until(&format!("BIRD: {}", r.describe()), ROUTE_UP, |seen| {
        let paths = bird.route_paths(r.prefix)?;
        seen.push_str(&format!("bird paths: {paths:#?}\n"));
        let kernel = ns.ip(&["route", "show", r.prefix])?;
        seen.push_str(&format!("kernel: {kernel}\n"));
        Ok(paths.iter().any(|p| r.bird_ok(p))
            && kernel.contains(&format!("via {} ", r.next_hop))
            && kernel.contains("proto bird"))
    })?;
    Ok(())
}

/// Waits until FRR has the reflected path `r` and zebra installed the prefix via the
/// originating client.
fn wait_frr(frr: &Frr, ns: &Netns, r: &Reflected<'_>) -> Result<()> {
    wait_until(&format!("FRR: {}", r.describe()), ROUTE_UP, |seen| {
        let paths = frr.bgp_paths(r.prefix)?;
        seen.push_str(&format!("frr paths: {paths:#?}\n"));
        let kernel = ns.ip(&["route", "show", r.prefix])?;
        seen.push_str(&format!("kernel: {kernel}\n"));
        Ok(paths.iter().any(|p| r.frr_ok(p))
            && kernel.contains(&format!("via {} ", r.next_hop))
            && kernel.contains("proto bgp"))
    })?;
    Ok(())
}

/// Waits until GoBGP's RIB has the reflected path `r` (GoBGP has no FIB here).
fn wait_gobgp(g: &Gobgp, r: &Reflected<'_>) -> Result<()> {
    wait_until(&format!("GoBGP: {}", r.describe()), ROUTE_UP, |seen| {
        let paths = g.rib_paths(r.prefix)?;
        seen.push_str(&format!("gobgp paths: {paths:#?}\n"));
        Ok(paths.iter().any(|p| r.gobgp_ok(p)))
    })?;
    Ok(())
}

/// Waits until routelet has `prefix` as best path learned from `source`, next hop `next_hop`,
/// and installed it in its kernel (route protocol 200) via `next_hop`.
fn wait_routelet(
    rl: &Routelet,
    ns: &Netns,
    prefix: &str,
    source: &str,
    next_hop: &str,
) -> Result<()> {
    wait_until(
        &format!("routelet: {prefix} from {source} via {next_hop}, in its kernel"),
        ROUTE_UP,
        |seen| {
            let e = rl.rib_entry(prefix)?.unwrap_or_default();
            seen.push_str(&format!("routelet rib entry: {e}\n"));
            let kernel = ns.ip(&["route", "show", prefix, "proto", RT_PROTO])?;
            seen.push_str(&format!("kernel proto {RT_PROTO}: {kernel}\n"));
            Ok(e["source"] == source
                && e["next_hops"] == serde_json::json!([next_hop])
                && e["local_pref"] == 100
                && e["as_path"] == ""
                && kernel.contains(&format!("via {next_hop} ")))
        },
    )?;
    Ok(())
}

/// routelet's status counters for neighbor `peer` reach `received` / `accepted`.
#[allow(dead_code)]
fn wait_counts(rl: &Routelet, peer: &str, received: u64, accepted: u64) -> Result<()> {
    wait_until(
        &format!("routelet counts {received} received / {accepted} accepted from {peer}"),
        ROUTE_UP,
        |seen| {
            let n = rl.neighbor(peer)?.unwrap_or_default();
            seen.push_str(&format!("{n}\n"));
            Ok(n["state"] == "established"
                && n["received"] == received
                && n["accepted"] == accepted)
        },
    )?;
    Ok(())
}

fn rl_client(n: u8) -> RlNeighbor {
    let mut nb = RlNeighbor::new(&addr(n), AS);
    nb.route_reflector_client = true;
    nb
}

/// A BIRD client of the reflectors `rrs` (protocols `rr<N>`), originating `prefix(me)`.
fn bird_client(me: u8, rrs: &[u8]) -> BirdConfig {
    let mut c = BirdConfig::new(&addr(me), AS);
    for &r in rrs {
        c.neighbors
            .push(BirdNeighbor::new(&format!("rr{r}"), &addr(r), AS));
    }
    c.statics.push(prefix(me));
    c
}

/// An FRR client of the reflectors `rrs`, originating `prefix(me)`.
fn frr_client(me: u8, rrs: &[u8]) -> FrrConfig {
    let mut c = FrrConfig::new(&addr(me), AS);
    for &r in rrs {
        c.neighbors.push(FrrNeighbor::new(&addr(r), AS));
    }
    c.networks.push(prefix(me));
    c
}

/// Starts GoBGP at 10.0.0.`me` with `neighbors` and originates `prefix(me)` (next hop self).
fn start_gobgp(lab: &Lab, ns: &Netns, me: u8, neighbors: Vec<GobgpNeighbor>) -> Result<Gobgp> {
    let cfg = GobgpConfig {
        router_id: addr(me),
        asn: AS,
        neighbors,
    };
    let g = Gobgp::start(lab, ns, &format!("gobgp{me}"), &cfg)?;
    g.cli(&["global", "rib", "add", &prefix(me), "nexthop", &addr(me)])?;
    Ok(g)
}

fn vtysh_many(ns: &Netns, cmds: &[&str]) -> Result<String> {
    let mut c = std::process::Command::new("vtysh");
    c.args(["-N", ns.name()]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    interop::run(&mut c)
}

// ------------------------------------------------------------------ routelet as the reflector

const RL_CLUSTER: &str = "10.255.0.1";

/// routelet (10.0.0.1, cluster id 10.255.0.1) reflects between a BIRD client (.2) and an FRR
/// client (.3) that peer only with it: each client gets the other's prefix with ORIGINATOR_ID =
/// the originating client, CLUSTER_LIST = [10.255.0.1] and the originating client as next hop,
/// installs it, and loses it again when the originating client withdraws it.
#[test]
fn routelet_reflects_between_bird_and_frr_clients() -> Result<()> {
    Lab::run("rrrl", |lab| {
        let seg = Segment::new(lab)?;
        let (ns1, ns2, ns3) = (seg.node(lab, 1)?, seg.node(lab, 2)?, seg.node(lab, 3)?);
        let mut rcfg = RouteletConfig::new(&addr(1), AS);
        rcfg.cluster_id = Some(RL_CLUSTER.into());
        rcfg.neighbors = vec![rl_client(2), rl_client(3)];
        let rl = Routelet::start(lab, &ns1, "rr", &rcfg)?;
        let bird = Bird::start(lab, &ns2, "bird", &bird_client(2, &[1]))?;
        let frr = Frr::start(lab, &ns3, "frr", &frr_client(3, &[1]))?;
        wait_until("all sessions established", SESSION_UP, |seen| {
            Ok(rl.established(&addr(2), seen)?
                && rl.established(&addr(3), seen)?
                && bird.established("rr1", seen)?
                && frr.established(&addr(1), seen)?)
        })?;

        wait_frr(
            &frr,
            &ns3,
            &Reflected {
                prefix: &prefix(2),
                from: &addr(1),
                originator: &addr(2),
                cluster_list: &[RL_CLUSTER],
                next_hop: &addr(2),
            },
        )?;
        wait_bird(
            &bird,
            &ns2,
            &Reflected {
                prefix: &prefix(3),
                from: "rr1",
                originator: &addr(3),
                cluster_list: &[RL_CLUSTER],
                next_hop: &addr(3),
            },
        )?;
        // The reflector itself uses both client routes.
        wait_routelet(&rl, &ns1, &prefix(2), &addr(2), &addr(2))?;
        wait_routelet(&rl, &ns1, &prefix(3), &addr(3), &addr(3))?;

        // Withdrawals travel through the reflector too.
        bird.birdc(&["disable", "s4"])?;
        wait_until("BIRD's withdrawal reaches FRR", ROUTE_UP, |seen| {
            Ok(
                !frr.bgp_has(&prefix(2), seen)?
                    && !ns3.has_kernel_route(&prefix(2), "bgp", seen)?,
            )
        })?;
        vtysh_many(
            &ns3,
            &[
                "configure terminal",
                &format!("router bgp {AS}"),
                "address-family ipv4 unicast",
                &format!("no network {}", prefix(3)),
            ],
        )?;
        wait_until("FRR's withdrawal reaches BIRD", ROUTE_UP, |seen| {
            Ok(!bird.has_route(&prefix(3), None, seen)?
                && !ns2.has_kernel_route(&prefix(3), "bird", seen)?)
        })?;
        wait_until("the reflector dropped both", ROUTE_UP, |seen| {
            Ok(!rl.rib_has(&prefix(2), seen)? && !rl.rib_has(&prefix(3), seen)?)
        })?;
        Ok(())
    })
}

/// Non-client rules at a routelet reflector (10.0.0.1) with a BIRD client (.2) and two GoBGP
/// non-clients (.4, .5): client routes go to the non-clients and non-client routes to the
/// client (both with ORIGINATOR_ID and CLUSTER_LIST), but a non-client's route never goes to
/// the other non-client.
#[test]
fn routelet_reflector_keeps_non_client_routes_from_non_clients() -> Result<()> {
    Lab::run("rrnc", |lab| {
        let seg = Segment::new(lab)?;
        let (ns1, ns2) = (seg.node(lab, 1)?, seg.node(lab, 2)?);
        let (ns4, ns5) = (seg.node(lab, 4)?, seg.node(lab, 5)?);
        let mut rcfg = RouteletConfig::new(&addr(1), AS);
        rcfg.cluster_id = Some(RL_CLUSTER.into());
        rcfg.neighbors = vec![
            rl_client(2),
            RlNeighbor::new(&addr(4), AS),
            RlNeighbor::new(&addr(5), AS),
        ];
        let rl = Routelet::start(lab, &ns1, "rr", &rcfg)?;
        let bird = Bird::start(lab, &ns2, "bird", &bird_client(2, &[1]))?;
        let g4 = start_gobgp(lab, &ns4, 4, vec![GobgpNeighbor::new(&addr(1), AS)])?;
        let g5 = start_gobgp(lab, &ns5, 5, vec![GobgpNeighbor::new(&addr(1), AS)])?;
        wait_until("all sessions established", SESSION_UP, |seen| {
            Ok(rl.established(&addr(2), seen)?
                && rl.established(&addr(4), seen)?
                && rl.established(&addr(5), seen)?
                && bird.established("rr1", seen)?
                && g4.established(&addr(1), seen)?
                && g5.established(&addr(1), seen)?)
        })?;

        for (g, n) in [(&g4, 4u8), (&g5, 5u8)] {
            // client -> non-client
            wait_gobgp(
                g,
                &Reflected {
                    prefix: &prefix(2),
                    from: &addr(1),
                    originator: &addr(2),
                    cluster_list: &[RL_CLUSTER],
                    next_hop: &addr(2),
                },
            )?;
            // non-client -> client
            wait_bird(
                &bird,
                &ns2,
                &Reflected {
                    prefix: &prefix(n),
                    from: "rr1",
                    originator: &addr(n),
                    cluster_list: &[RL_CLUSTER],
                    next_hop: &addr(n),
                },
            )?;
            wait_routelet(&rl, &ns1, &prefix(n), &addr(n), &addr(n))?;
        }
        // non-client -> non-client: never (the reflector has both, has sent everything else).
        holds_for(
            "no non-client route reflected to the other non-client",
            QUIET,
            |seen| {
                let a = g4.rib_paths(&prefix(5))?;
                let b = g5.rib_paths(&prefix(4))?;
                seen.push_str(&format!(
                    "gobgp4 has {}: {a:?}\ngobgp5 has {}: {b:?}\n",
                    prefix(5),
                    prefix(4)
                ));
                Ok(a.is_empty() && b.is_empty())
            },
        )?;
        for n in [4, 5] {
            let st = rl.neighbor(&addr(n))?.unwrap_or_default();
            ensure(
                st["advertised"] == 1,
                format!(
                    "the reflector advertises only the client's prefix to non-client {}: {st}",
                    addr(n)
                ),
            )?;
        }
        Ok(())
    })
}
