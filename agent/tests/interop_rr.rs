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
use interop::exabgp::{Exabgp, ExabgpConfig};
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

// ------------------------------------------------------------------ routelet as a client

/// Cluster id of the BIRD / FRR / GoBGP reflectors.
const RR_CLUSTER: &str = "10.255.0.9";

/// The routelet clients of a reflector at 10.0.0.1: A (.2) with the default cluster id, and B
/// (.4) configured with the reflector's own cluster id (as a second reflector of the same
/// cluster would be). Each originates its prefix.
struct RouteletClients {
    a: Routelet,
    b: Routelet,
}

fn start_routelet_clients(lab: &Lab, ns2: &Netns, ns4: &Netns) -> Result<RouteletClients> {
    let mut a = RouteletConfig::new(&addr(2), AS);
    a.neighbors.push(RlNeighbor::new(&addr(1), AS));
    a.originate.push(prefix(2));
    let mut b = RouteletConfig::new(&addr(4), AS);
    b.cluster_id = Some(RR_CLUSTER.into());
    b.neighbors.push(RlNeighbor::new(&addr(1), AS));
    b.originate.push(prefix(4));
    Ok(RouteletClients {
        a: Routelet::start(lab, ns2, "rl-a", &a)?,
        b: Routelet::start(lab, ns4, "rl-b", &b)?,
    })
}

impl RouteletClients {
    fn established(&self, seen: &mut String) -> Result<bool> {
        Ok(self.a.established(&addr(1), seen)? && self.b.established(&addr(1), seen)?)
    }

    /// A learns the other clients' prefixes through the reflector (source 10.0.0.1, next hop the
    /// originating client) and installs them; B drops both reflected routes, whose
    /// CLUSTER_LIST holds its own cluster id: received, not accepted, not in its RIB or kernel.
    /// `echo`: the reflector also sends each client its own route back (FRR does, its clients
    /// share one update group); A and B must reject it by its ORIGINATOR_ID (their router id).
    fn check(&self, ns2: &Netns, ns4: &Netns, echo: bool) -> Result<()> {
        wait_routelet(&self.a, ns2, &prefix(3), &addr(1), &addr(3))?;
        wait_routelet(&self.a, ns2, &prefix(4), &addr(1), &addr(4))?;
        let received = if echo { 3 } else { 2 };
        wait_counts(&self.a, &addr(1), received, 2)?;
        wait_counts(&self.b, &addr(1), received, 0)?;
        for (rl, own) in [(&self.a, prefix(2)), (&self.b, prefix(4))] {
            let e = rl.rib_entry(&own)?.unwrap_or_default();
            ensure(
                e["source"] == "local",
                format!("own prefix stays local: {e}"),
            )?;
        }
        let mut seen = String::new();
        for p in [prefix(2), prefix(3)] {
            ensure(
                !self.b.rib_has(&p, &mut seen)?
                    && !ns4.has_kernel_route(&p, RT_PROTO, &mut seen)?,
                format!("B (cluster id {RR_CLUSTER}) must drop the reflected {p}: {seen}"),
            )?;
        }
        Ok(())
    }
}

fn reflector_clients(me: u8) -> impl Iterator<Item = u8> {
    [2u8, 3, 4].into_iter().filter(move |n| *n != me)
}

/// A third-party reflector at 10.0.0.1 (cluster id 10.255.0.9) with a client of its own kind
/// at .3, as the "routelet is a client" tests drive it.
trait ReflectorUnderTest {
    /// The reflector's sessions to .2, .3, .4 and the own-kind client's to .1 are up.
    fn sessions_up(&self, seen: &mut String) -> Result<bool>;
    /// The own-kind client has `r` as reflected by the reflector.
    fn client_has(&self, r: &Reflected<'_>) -> Result<()>;
    /// How the own-kind client names the reflector (`Reflected::from`).
    fn from(&self) -> String;
}

struct BirdReflector<'a> {
    rr: Bird,
    c: Bird,
    ns3: &'a Netns,
}

impl ReflectorUnderTest for BirdReflector<'_> {
    fn sessions_up(&self, seen: &mut String) -> Result<bool> {
        Ok(self.rr.established("c2", seen)?
            && self.rr.established("c3", seen)?
            && self.rr.established("c4", seen)?
            && self.c.established("rr1", seen)?)
    }
    fn client_has(&self, r: &Reflected<'_>) -> Result<()> {
        wait_bird(&self.c, self.ns3, r)
    }
    fn from(&self) -> String {
        "rr1".into()
    }
}

struct FrrReflector<'a> {
    rr: Frr,
    c: Frr,
    ns3: &'a Netns,
}

impl ReflectorUnderTest for FrrReflector<'_> {
    fn sessions_up(&self, seen: &mut String) -> Result<bool> {
        Ok(self.rr.established(&addr(2), seen)?
            && self.rr.established(&addr(3), seen)?
            && self.rr.established(&addr(4), seen)?
            && self.c.established(&addr(1), seen)?)
    }
    fn client_has(&self, r: &Reflected<'_>) -> Result<()> {
        wait_frr(&self.c, self.ns3, r)
    }
    fn from(&self) -> String {
        addr(1)
    }
}

struct GobgpReflector {
    rr: Gobgp,
    c: Gobgp,
}

impl ReflectorUnderTest for GobgpReflector {
    fn sessions_up(&self, seen: &mut String) -> Result<bool> {
        Ok(self.rr.established(&addr(2), seen)?
            && self.rr.established(&addr(3), seen)?
            && self.rr.established(&addr(4), seen)?
            && self.c.established(&addr(1), seen)?)
    }
    fn client_has(&self, r: &Reflected<'_>) -> Result<()> {
        wait_gobgp(&self.c, r)
    }
    fn from(&self) -> String {
        addr(1)
    }
}

/// Routelet clients A (.2) and B (.4, the reflector's cluster id) of the reflector `start`
/// builds in .1 with its own client in .3: the own-kind client gets A's prefix with the
/// reflection attributes, and A and B handle what is reflected to them (see
/// `RouteletClients::check`; `echo`: the reflector sends each client its own route back).
fn routelet_as_client<'n>(
    lab: &Lab,
    nss: &'n [Netns; 4],
    start: impl FnOnce(&Netns, &'n Netns) -> Result<Box<dyn ReflectorUnderTest + 'n>>,
    echo: bool,
) -> Result<()> {
    let [ns1, ns2, ns3, ns4] = nss;
    let rls = start_routelet_clients(lab, ns2, ns4)?;
    let rr = start(ns1, ns3)?;
    wait_until("all sessions established", SESSION_UP, |seen| {
        Ok(rls.established(seen)? && rr.sessions_up(seen)?)
    })?;
    rr.client_has(&Reflected {
        prefix: &prefix(2),
        from: &rr.from(),
        originator: &addr(2),
        cluster_list: &[RR_CLUSTER],
        next_hop: &addr(2),
    })?;
    rls.check(ns2, ns4, echo)
}

fn four_nodes(lab: &Lab, seg: &Segment) -> Result<[Netns; 4]> {
    Ok([
        seg.node(lab, 1)?,
        seg.node(lab, 2)?,
        seg.node(lab, 3)?,
        seg.node(lab, 4)?,
    ])
}

/// BIRD reflector (10.0.0.1, `rr client`, `rr cluster id 10.255.0.9`) with routelet clients
/// A and B and a BIRD client (.3).
#[test]
fn routelet_is_a_client_of_a_bird_reflector() -> Result<()> {
    Lab::run("rrcb", |lab| {
        let seg = Segment::new(lab)?;
        let nss = four_nodes(lab, &seg)?;
        routelet_as_client(
            lab,
            &nss,
            |ns1, ns3| {
                let mut rr = BirdConfig::new(&addr(1), AS);
                rr.cluster_id = Some(RR_CLUSTER.into());
                for n in reflector_clients(1) {
                    let mut nb = BirdNeighbor::new(&format!("c{n}"), &addr(n), AS);
                    nb.rr_client = true;
                    rr.neighbors.push(nb);
                }
                Ok(Box::new(BirdReflector {
                    rr: Bird::start(lab, ns1, "bird-rr", &rr)?,
                    c: Bird::start(lab, ns3, "bird-c", &bird_client(3, &[1]))?,
                    ns3,
                }))
            },
            false,
        )
    })
}

/// FRR reflector (10.0.0.1, `route-reflector-client`, `bgp cluster-id 10.255.0.9`) with
/// routelet clients A and B and an FRR client (.3). FRR sends each client its own route back.
#[test]
fn routelet_is_a_client_of_an_frr_reflector() -> Result<()> {
    Lab::run("rrcf", |lab| {
        let seg = Segment::new(lab)?;
        let nss = four_nodes(lab, &seg)?;
        routelet_as_client(
            lab,
            &nss,
            |ns1, ns3| {
                let mut rr = FrrConfig::new(&addr(1), AS);
                rr.cluster_id = Some(RR_CLUSTER.into());
                for n in reflector_clients(1) {
                    let mut nb = FrrNeighbor::new(&addr(n), AS);
                    nb.rr_client = true;
                    rr.neighbors.push(nb);
                }
                Ok(Box::new(FrrReflector {
                    rr: Frr::start(lab, ns1, "frr-rr", &rr)?,
                    c: Frr::start(lab, ns3, "frr-c", &frr_client(3, &[1]))?,
                    ns3,
                }))
            },
            true,
        )
    })
}

/// GoBGP reflector (10.0.0.1, `route-reflector-client = true`, `route-reflector-cluster-id =
/// 10.255.0.9`) with routelet clients A and B and a GoBGP client (.3).
#[test]
fn routelet_is_a_client_of_a_gobgp_reflector() -> Result<()> {
    Lab::run("rrcg", |lab| {
        let seg = Segment::new(lab)?;
        let nss = four_nodes(lab, &seg)?;
        routelet_as_client(
            lab,
            &nss,
            |ns1, ns3| {
                let rr = GobgpConfig {
                    router_id: addr(1),
                    asn: AS,
                    neighbors: reflector_clients(1)
                        .map(|n| {
                            let mut nb = GobgpNeighbor::new(&addr(n), AS);
                            nb.rr_client = true;
                            nb.rr_cluster_id = Some(RR_CLUSTER.into());
                            nb
                        })
                        .collect(),
                };
                Ok(Box::new(GobgpReflector {
                    rr: Gobgp::start(lab, ns1, "gobgp-rr", &rr)?,
                    c: start_gobgp(lab, ns3, 3, vec![GobgpNeighbor::new(&addr(1), AS)])?,
                }))
            },
            false,
        )
    })
}

// ------------------------------------------------------------------ two reflectors, one cluster

/// routelet reflectors RR1 (.1) and RR2 (.2) with the same cluster id, a BIRD client (.3) and an
/// FRR client (.4) each peering with both. Every client gets the other's route from both
/// reflectors (CLUSTER_LIST exactly [cluster id]); with `peering`, RR1 and RR2 are iBGP
/// non-clients of each other and each rejects what the other reflects (its own cluster id in
/// the CLUSTER_LIST): received 2, accepted 0. When RR1 stops (graceful restart off: its routes
/// are withdrawn at once), the clients keep the routes through RR2.
fn two_reflectors_one_cluster(lab: &Lab, peering: bool) -> Result<()> {
    let seg = Segment::new(lab)?;
    let (ns1, ns2, ns3, ns4) = (
        seg.node(lab, 1)?,
        seg.node(lab, 2)?,
        seg.node(lab, 3)?,
        seg.node(lab, 4)?,
    );
    let rr_cfg = |me: u8, other: u8| {
        let mut c = RouteletConfig::new(&addr(me), AS);
        c.cluster_id = Some(RL_CLUSTER.into());
        c.graceful_restart = Some(false);
        c.neighbors = vec![rl_client(3), rl_client(4)];
        if peering {
            c.neighbors.push(RlNeighbor::new(&addr(other), AS));
        }
        c
    };
    let mut rr1 = Routelet::start(lab, &ns1, "rr1", &rr_cfg(1, 2))?;
    let rr2 = Routelet::start(lab, &ns2, "rr2", &rr_cfg(2, 1))?;
    let bird = Bird::start(lab, &ns3, "bird", &bird_client(3, &[1, 2]))?;
    let frr = Frr::start(lab, &ns4, "frr", &frr_client(4, &[1, 2]))?;
    wait_until("all sessions established", SESSION_UP, |seen| {
        let mut up = true;
        for (rr, other) in [(&rr1, 2u8), (&rr2, 1u8)] {
            up &= rr.established(&addr(3), seen)? && rr.established(&addr(4), seen)?;
            if peering {
                up &= rr.established(&addr(other), seen)?;
            }
        }
        Ok(up
            && bird.established("rr1", seen)?
            && bird.established("rr2", seen)?
            && frr.established(&addr(1), seen)?
            && frr.established(&addr(2), seen)?)
    })?;
    for (rr, name) in [(1u8, "rr1"), (2u8, "rr2")] {
        wait_bird(
            &bird,
            &ns3,
            &Reflected {
                prefix: &prefix(4),
                from: name,
                originator: &addr(4),
                cluster_list: &[RL_CLUSTER],
                next_hop: &addr(4),
            },
        )?;
        wait_frr(
            &frr,
            &ns4,
            &Reflected {
                prefix: &prefix(3),
                from: &addr(rr),
                originator: &addr(3),
                cluster_list: &[RL_CLUSTER],
                next_hop: &addr(3),
            },
        )?;
    }
    for (rr, ns, other) in [(&rr1, &ns1, 2u8), (&rr2, &ns2, 1u8)] {
        wait_routelet(rr, ns, &prefix(3), &addr(3), &addr(3))?;
        wait_routelet(rr, ns, &prefix(4), &addr(4), &addr(4))?;
        if peering {
            // The other reflector's copies carry our cluster id: kept out of the Loc-RIB.
            wait_counts(rr, &addr(other), 2, 0)?;
        }
    }
    // Only one path per client prefix at each reflector: the client's own.
    for rr in [&rr1, &rr2] {
        for p in [prefix(3), prefix(4)] {
            let e = rr.rib_entry(&p)?.unwrap_or_default();
            ensure(
                e["reason"] == "only_path",
                format!("{p} at a reflector: {e}"),
            )?;
        }
    }

    rr1.daemon.stop();
    wait_until(
        "with RR1 gone, BIRD keeps FRR's route through RR2 only",
        ROUTE_UP,
        |seen| {
            let paths = bird.route_paths(&prefix(4))?;
            seen.push_str(&format!("{paths:#?}\n"));
            Ok(paths.len() == 1 && paths.iter().all(|p| p.proto == "rr2"))
        },
    )?;
    wait_until(
        "with RR1 gone, FRR keeps BIRD's route through RR2 only",
        ROUTE_UP,
        |seen| {
            let paths = frr.bgp_paths(&prefix(3))?;
            seen.push_str(&format!("{paths:#?}\n"));
            Ok(paths.len() == 1
                && paths
                    .iter()
                    .all(|p| p.peer.as_deref() == Some(addr(2).as_str())))
        },
    )?;
    let mut seen = String::new();
    ensure(
        ns3.has_kernel_route(&prefix(4), "bird", &mut seen)?
            && ns4.has_kernel_route(&prefix(3), "bgp", &mut seen)?,
        format!("both clients still route to each other: {seen}"),
    )
}

#[test]
fn two_routelet_reflectors_sharing_a_cluster_id_not_peering() -> Result<()> {
    Lab::run("rr2n", |lab| two_reflectors_one_cluster(lab, false))
}

#[test]
fn two_routelet_reflectors_sharing_a_cluster_id_peering() -> Result<()> {
    Lab::run("rr2p", |lab| two_reflectors_one_cluster(lab, true))
}

// ------------------------------------------------------------------ loop checks, crafted peer

/// ExaBGP (10.0.0.2, route-reflector client of routelet 10.0.0.1, cluster id 10.255.0.1)
/// announces routes with crafted ORIGINATOR_ID / CLUSTER_LIST; a BIRD client (.3) watches what
/// routelet reflects. Looped routes (ORIGINATOR_ID = routelet's router id; routelet's cluster
/// id anywhere in the CLUSTER_LIST) are counted as received but not accepted, stay out of the
/// RIB, the kernel and the reflected set, and are logged; the session stays up; the other
/// routes are accepted and reflected with ORIGINATOR_ID kept and the cluster id prepended.
#[test]
fn looped_routes_from_a_crafted_peer_are_dropped() -> Result<()> {
    const OWN_ORIGINATOR: &str = "10.251.0.0/24";
    const OWN_CLUSTER: &str = "10.251.1.0/24";
    const OWN_CLUSTER_SECOND: &str = "10.251.2.0/24";
    const PLAIN: &str = "10.251.3.0/24";
    const OTHER_CLUSTER: &str = "10.251.4.0/24";
    Lab::run("rrloop", |lab| {
        let seg = Segment::new(lab)?;
        let (ns1, ns2, ns3) = (seg.node(lab, 1)?, seg.node(lab, 2)?, seg.node(lab, 3)?);
        let mut rcfg = RouteletConfig::new(&addr(1), AS);
        rcfg.cluster_id = Some(RL_CLUSTER.into());
        rcfg.neighbors = vec![rl_client(2), rl_client(3)];
        let rl = Routelet::start(lab, &ns1, "rr", &rcfg)?;
        let mut ecfg = ExabgpConfig::new(&addr(2), AS, &addr(1), AS);
        ecfg.routes = vec![
            format!("{OWN_ORIGINATOR} originator-id {}", addr(1)),
            format!("{OWN_CLUSTER} cluster-list [ {RL_CLUSTER} ]"),
            format!("{OWN_CLUSTER_SECOND} cluster-list [ 10.255.9.9 {RL_CLUSTER} ]"),
            PLAIN.to_string(),
            format!("{OTHER_CLUSTER} originator-id 10.0.0.99 cluster-list [ 10.255.9.9 ]"),
        ];
        let exa = Exabgp::start(lab, &ns2, "exabgp", &ecfg)?;
        let bird = Bird::start(lab, &ns3, "bird", &bird_client(3, &[1]))?;
        wait_until("all sessions established", SESSION_UP, |seen| {
            let v = exa.view()?;
            seen.push_str(&format!("exabgp states {:?}\n", v.states));
            Ok(v.up()
                && rl.established(&addr(2), seen)?
                && rl.established(&addr(3), seen)?
                && bird.established("rr1", seen)?)
        })?;
        wait_counts(&rl, &addr(2), 5, 2)?;
        wait_routelet(&rl, &ns1, PLAIN, &addr(2), &addr(2))?;
        wait_routelet(&rl, &ns1, OTHER_CLUSTER, &addr(2), &addr(2))?;
        wait_bird(
            &bird,
            &ns3,
            &Reflected {
                prefix: PLAIN,
                from: "rr1",
                originator: &addr(2),
                cluster_list: &[RL_CLUSTER],
                next_hop: &addr(2),
            },
        )?;
        wait_bird(
            &bird,
            &ns3,
            &Reflected {
                prefix: OTHER_CLUSTER,
                from: "rr1",
                originator: "10.0.0.99",
                cluster_list: &[RL_CLUSTER, "10.255.9.9"],
                next_hop: &addr(2),
            },
        )?;
        let looped = [OWN_ORIGINATOR, OWN_CLUSTER, OWN_CLUSTER_SECOND];
        holds_for(
            "looped routes stay out, the session stays up",
            QUIET,
            |seen| {
                let n = rl.neighbor(&addr(2))?.unwrap_or_default();
                seen.push_str(&format!("{n}\n"));
                let mut ok = n["state"] == "established"
                    && n["established_transitions"] == 1
                    && n["received"] == 5
                    && n["accepted"] == 2
                    && n["loop_rejected"]["originator_id"] == 1
                    && n["loop_rejected"]["cluster_list"] == 2
                    && n["loop_rejected"]["as_path"] == 0;
                for p in looped {
                    ok &= !rl.rib_has(p, seen)?
                        && !ns1.has_kernel_route(p, RT_PROTO, seen)?
                        && !bird.has_route(p, None, seen)?;
                }
                Ok(ok)
            },
        )?;
        let log = std::fs::read_to_string(rl.daemon.log_path())
            .map_err(|e| interop::LabError::io("read routelet log", e))?;
        for (what, needle) in [("ORIGINATOR_ID", "originator"), ("CLUSTER_LIST", "cluster")] {
            ensure(
                log.lines().any(|l| {
                    let l = l.to_lowercase();
                    l.contains("loop check") && l.contains(&addr(2)) && l.contains(needle)
                }),
                format!(
                    "routelet's log should name the {what} loop from {}:\n{log}",
                    addr(2)
                ),
            )?;
        }
        Ok(())
    })
}

// ------------------------------------------------------------------ config generators

/// The RR options of the config generators pass the daemons' own parsers (as
/// `interop_harness.rs` does for the plain configs; parse-only, no namespaces).
#[test]
fn rr_configs_pass_the_daemons_parsers() -> Result<()> {
    let dir = std::env::temp_dir().join(interop::unique_name("rrparse"));
    std::fs::create_dir_all(&dir).map_err(|e| interop::LabError::io("mkdir", e))?;
    let write = |name: &str, text: &str| -> Result<std::path::PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| interop::LabError::io("write", e))?;
        Ok(p)
    };
    let result = (|| -> Result<()> {
        let mut b = BirdConfig::new(&addr(1), AS);
        b.cluster_id = Some(RR_CLUSTER.into());
        let mut bn = BirdNeighbor::new("c2", &addr(2), AS);
        bn.rr_client = true;
        b.neighbors.push(bn);
        b.neighbors.push(BirdNeighbor::new("n3", &addr(3), AS));
        let text = b.render();
        ensure(
            text.contains("rr client;") && text.contains(&format!("rr cluster id {RR_CLUSTER};")),
            format!("BIRD render: {text}"),
        )?;
        interop::run(
            std::process::Command::new("bird")
                .args(["-p", "-c"])
                .arg(write("bird.conf", &text)?),
        )?;

        let mut f = FrrConfig::new(&addr(1), AS);
        f.cluster_id = Some(RR_CLUSTER.into());
        let mut fnb = FrrNeighbor::new(&addr(2), AS);
        fnb.rr_client = true;
        f.neighbors.push(fnb);
        let text = f.render_bgpd("t");
        ensure(
            text.contains(&format!("neighbor {} route-reflector-client", addr(2)))
                && text.contains(&format!("bgp cluster-id {RR_CLUSTER}")),
            format!("FRR render: {text}"),
        )?;
        interop::frr::check_bgpd_config(&write("bgpd.conf", &text)?, &text)?;

        let mut gn = GobgpNeighbor::new(&addr(2), AS);
        gn.rr_client = true;
        gn.rr_cluster_id = Some(RR_CLUSTER.into());
        let g = GobgpConfig {
            router_id: addr(1),
            asn: AS,
            neighbors: vec![gn],
        };
        interop::run(
            std::process::Command::new("gobgpd")
                .args(["-t", "toml", "-d", "-f"])
                .arg(write("gobgp.toml", &g.render())?),
        )?;

        let mut r = RouteletConfig::new(&addr(1), AS);
        r.cluster_id = Some(RL_CLUSTER.into());
        r.neighbors.push(rl_client(2));
        let text = r.render("/s");
        let v: serde_json::Value = serde_norway::from_str(&text)
            .map_err(|e| interop::LabError::Check(format!("YAML does not parse: {e}\n{text}")))?;
        ensure(
            v["cluster_id"] == RL_CLUSTER && v["neighbors"][0]["route_reflector_client"] == true,
            format!("routelet render: {text}"),
        )
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
