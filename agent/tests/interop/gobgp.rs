//! GoBGP in a namespace: TOML config, `gobgpd` in the foreground with its gRPC API on the
//! namespace's own loopback, `gobgp` CLI probes run inside the namespace. GoBGP has no FIB
//! (no zebra here): assertions use its RIB.

use std::time::Duration;

use super::daemon::Daemon;
use super::netns::exec_in;
use super::{parse_json, same_addr, same_prefix, Lab, Netns, Result};

/// gRPC API port (on 127.0.0.1 of the GoBGP namespace).
pub const API_PORT: u16 = 50051;

#[derive(Clone, Debug)]
pub struct GobgpNeighbor {
    pub address: String,
    pub asn: u32,
    pub password: Option<String>,
    pub hold_time: u16,
    pub passive: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    /// `[neighbors.route-reflector.config] route-reflector-client = true`.
    pub rr_client: bool,
    /// `route-reflector-cluster-id` of an `rr_client` neighbor (GoBGP keeps the cluster id per
    /// neighbor; `None` = its default, the router id).
    pub rr_cluster_id: Option<String>,
}

impl GobgpNeighbor {
    pub fn new(address: &str, asn: u32) -> GobgpNeighbor {
        GobgpNeighbor {
            address: address.to_string(),
            asn,
            password: None,
            hold_time: 9,
            passive: false,
            ipv4: !address.contains(':'),
            ipv6: address.contains(':'),
            rr_client: false,
            rr_cluster_id: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct GobgpConfig {
    pub router_id: String,
    pub asn: u32,
    pub neighbors: Vec<GobgpNeighbor>,
}

impl GobgpConfig {
    pub fn render(&self) -> String {
        let mut c = format!(
            "[global.config]\n  as = {}\n  router-id = \"{}\"\n  port = 179\n",
            self.asn, self.router_id
        );
        for n in &self.neighbors {
            c.push_str(&format!(
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}\n",
                n.address, n.asn
            ));
            if let Some(pw) = &n.password {
                c.push_str(&format!("    auth-password = \"{pw}\"\n"));
            }
            c.push_str(&format!(
                "  [neighbors.timers.config]\n    hold-time = {}\n    keepalive-interval = {}\n    connect-retry = 2\n",
                n.hold_time,
                (n.hold_time / 3).max(1)
            ));
            if n.passive {
                c.push_str("  [neighbors.transport.config]\n    passive-mode = true\n");
            }
            if n.rr_client {
                c.push_str(
                    "  [neighbors.route-reflector.config]\n    route-reflector-client = true\n",
                );
                if let Some(id) = &n.rr_cluster_id {
                    c.push_str(&format!("    route-reflector-cluster-id = \"{id}\"\n"));
                }
            }
            for (on, name) in [(n.ipv4, "ipv4-unicast"), (n.ipv6, "ipv6-unicast")] {
                if on {
                    c.push_str(&format!(
                        "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{name}\"\n"
                    ));
                }
            }
        }
        c
    }
}

pub struct Gobgp {
    pub daemon: Daemon,
    ns: String,
}

impl Gobgp {
    pub fn start(lab: &Lab, ns: &Netns, name: &str, cfg: &GobgpConfig) -> Result<Gobgp> {
        let conf = lab.write(&format!("{name}.toml"), &cfg.render())?;
        let api = format!("127.0.0.1:{API_PORT}");
        let daemon = Daemon::spawn(
            lab,
            ns,
            name,
            &[
                "gobgpd",
                "-f",
                &conf.to_string_lossy(),
                "-t",
                "toml",
                "--api-hosts",
                &api,
            ],
            &[],
        )?;
        let mut g = Gobgp {
            daemon,
            ns: ns.name().to_string(),
        };
        super::wait_until(
            &format!("{name} gRPC API"),
            Duration::from_secs(10),
            |seen| {
                g.daemon.check_running()?;
                let r = g.cli(&["global"]);
                seen.push_str(&format!("{r:?}"));
                Ok(r.is_ok())
            },
        )?;
        Ok(g)
    }

    /// `gobgp -u 127.0.0.1 -p PORT args...` inside the namespace.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let port = API_PORT.to_string();
        let mut argv = vec!["gobgp", "-u", "127.0.0.1", "-p", &port];
        argv.extend_from_slice(args);
        exec_in(&self.ns, &argv)
    }

    /// Originates `prefix` (`gobgp global rib add PREFIX [-a ipv6]`).
    pub fn add_route(&self, prefix: &str) -> Result<()> {
        if prefix.contains(':') {
            self.cli(&["global", "rib", "add", prefix, "-a", "ipv6"])?;
        } else {
            self.cli(&["global", "rib", "add", prefix])?;
        }
        Ok(())
    }

    pub fn del_route(&self, prefix: &str) -> Result<()> {
        if prefix.contains(':') {
            self.cli(&["global", "rib", "del", prefix, "-a", "ipv6"])?;
        } else {
            self.cli(&["global", "rib", "del", prefix])?;
        }
        Ok(())
    }

    /// Session state code of a neighbor (`neighbor -j`: 1 idle .. 6 established).
    pub fn session_state(&self, addr: &str) -> Result<Option<i64>> {
        let v = parse_json("gobgp neighbor -j", &self.cli(&["neighbor", "-j"])?)?;
        Ok(v.as_array().and_then(|peers| {
            peers
                .iter()
                .find(|p| {
                    p.pointer("/conf/neighbor_address")
                        .and_then(|a| a.as_str())
                        .is_some_and(|a| same_addr(a, addr))
                })
                .and_then(|p| p.pointer("/state/session_state"))
                .and_then(|s| s.as_i64())
        }))
    }

    pub fn established(&self, addr: &str, seen: &mut String) -> Result<bool> {
        let st = self.session_state(addr)?;
        seen.push_str(&format!(
            "gobgp neighbor {addr} session_state {st:?} (6 = established)\n"
        ));
        Ok(st == Some(6))
    }

    /// Prefixes in GoBGP's global RIB for the family.
    pub fn rib(&self, v6: bool) -> Result<Vec<String>> {
        let out = if v6 {
            self.cli(&["global", "rib", "-a", "ipv6", "-j"])?
        } else {
            self.cli(&["global", "rib", "-j"])?
        };
        let v = parse_json("gobgp global rib -j", &out)?;
        Ok(v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default())
    }

    pub fn rib_has(&self, prefix: &str, seen: &mut String) -> Result<bool> {
        let rib = self.rib(prefix.contains(':'))?;
        seen.push_str(&format!("gobgp rib: {rib:?}\n"));
        Ok(rib.iter().any(|p| same_prefix(p, prefix)))
    }

    /// Every path of `prefix` in the global RIB with its next hop, ORIGINATOR_ID and
    /// CLUSTER_LIST (from `global rib -j`: attribute type 9 and 10).
    pub fn rib_paths(&self, prefix: &str) -> Result<Vec<GobgpPath>> {
        let out = if prefix.contains(':') {
            self.cli(&["global", "rib", "-a", "ipv6", "-j"])?
        } else {
            self.cli(&["global", "rib", "-j"])?
        };
        Ok(parse_rib_paths(
            &parse_json("gobgp global rib -j", &out)?,
            prefix,
        ))
    }

    /// Neighbor of a RIB entry: `neighbor-ip` of the paths for `prefix` (None if local).
    pub fn rib_sources(&self, prefix: &str) -> Result<Vec<String>> {
        let v = parse_json("gobgp global rib -j", &self.cli(&["global", "rib", "-j"])?)?;
        Ok(v.as_object()
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|(k, _)| same_prefix(k, prefix))
            .flat_map(|(_, paths)| paths.as_array().cloned().unwrap_or_default())
            .filter_map(|p| {
                p.get("neighbor-ip")
                    .and_then(|n| n.as_str())
                    .map(str::to_string)
            })
            .collect())
    }
}

/// One path of `gobgp global rib -j`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GobgpPath {
    /// `neighbor-ip` (absent for local routes).
    pub neighbor: Option<String>,
    /// NEXT_HOP (type 3) or MP_REACH next hop (type 14).
    pub next_hop: Option<String>,
    /// ORIGINATOR_ID (type 9).
    pub originator_id: Option<String>,
    /// CLUSTER_LIST (type 10); empty if absent.
    pub cluster_list: Vec<String>,
}

/// The paths of `prefix` in `gobgp global rib -j` output (prefix -> [path]).
pub fn parse_rib_paths(v: &serde_json::Value, prefix: &str) -> Vec<GobgpPath> {
    v.as_object()
        .into_iter()
        .flat_map(|m| m.iter())
        .filter(|(k, _)| same_prefix(k, prefix))
        .flat_map(|(_, paths)| paths.as_array().cloned().unwrap_or_default())
        .map(|p| {
            let mut out = GobgpPath {
                neighbor: p
                    .get("neighbor-ip")
                    .and_then(|n| n.as_str())
                    .map(str::to_string),
                ..GobgpPath::default()
            };
            for a in p
                .get("attrs")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
            {
                match a.get("type").and_then(|t| t.as_u64()) {
                    Some(3) => {
                        out.next_hop = a
                            .get("nexthop")
                            .and_then(|n| n.as_str())
                            .map(str::to_string)
                    }
                    Some(14) => {
                        out.next_hop = a
                            .get("nexthop")
                            .and_then(|n| n.as_str())
                            .map(str::to_string)
                    }
                    Some(9) => {
                        out.originator_id =
                            a.get("value").and_then(|n| n.as_str()).map(str::to_string)
                    }
                    Some(10) => {
                        out.cluster_list = a
                            .get("value")
                            .and_then(|l| l.as_array())
                            .map(|l| {
                                l.iter()
                                    .filter_map(|x| x.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default()
                    }
                    _ => {}
                }
            }
            out
        })
        .collect()
}
