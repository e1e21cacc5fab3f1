//! BIRD 2 in a namespace: config generator, foreground start (`bird -f`), `birdc` probes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use super::daemon::Daemon;
use super::{run, same_prefix, Lab, Netns, Result};

#[derive(Clone, Debug)]
pub struct BirdNeighbor {
    /// Protocol name in BIRD (`show protocols NAME`).
    pub name: String,
    pub address: String,
    pub local_address: Option<String>,
    pub asn: u32,
    pub password: Option<String>,
    pub hold_time: u16,
    pub passive: bool,
    /// Channels on this session.
    pub ipv4: bool,
    pub ipv6: bool,
    /// iBGP route-reflector client of this BIRD (`rr client;`): BGP-learned routes are exported
    /// too (reflection), and without `next hop self` (a reflector keeps the next hop).
    pub rr_client: bool,
    /// `graceful restart on;` (BIRD then restarts gracefully on `birdc graceful restart` and
    /// a start with `-R`); off = BIRD's default, helper only ("aware").
    pub graceful_restart: bool,
}

impl BirdNeighbor {
    pub fn new(name: &str, address: &str, asn: u32) -> BirdNeighbor {
        BirdNeighbor {
            name: name.to_string(),
            address: address.to_string(),
            local_address: None,
            asn,
            password: None,
            hold_time: 9,
            passive: false,
            ipv4: !address.contains(':'),
            ipv6: address.contains(':'),
            rr_client: false,
            graceful_restart: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BirdConfig {
    pub router_id: String,
    pub asn: u32,
    pub neighbors: Vec<BirdNeighbor>,
    /// Prefixes originated as static blackhole routes (v4 and v6 mixed), exported to BGP.
    pub statics: Vec<String>,
    /// Kernel table export filter; `None` = everything except direct (interface) routes.
    pub kernel_export: Option<String>,
    /// Route-reflector cluster id (`rr cluster id` in every BGP protocol; `None` = BIRD's
    /// default, the router id).
    pub cluster_id: Option<String>,
}

impl BirdConfig {
    pub fn new(router_id: &str, asn: u32) -> BirdConfig {
        BirdConfig {
            router_id: router_id.to_string(),
            asn,
            neighbors: Vec::new(),
            statics: Vec::new(),
            kernel_export: None,
            cluster_id: None,
        }
    }

    pub fn render(&self) -> String {
        let export_kernel = self
            .kernel_export
            .clone()
            .unwrap_or_else(|| "where source != RTS_DEVICE".to_string());
        let mut c = format!(
            "router id {rid};\n\
             protocol device {{ scan time 10; }}\n\
             protocol direct {{ ipv4; ipv6; }}\n\
             protocol kernel k4 {{ ipv4 {{ export {ek}; }}; learn; scan time 10; }}\n\
             protocol kernel k6 {{ ipv6 {{ export {ek}; }}; learn; scan time 10; }}\n",
            rid = self.router_id,
            ek = export_kernel
        );
        let (v4, v6): (Vec<&String>, Vec<&String>) =
            self.statics.iter().partition(|p| !p.contains(':'));
        for (name, chan, routes) in [("s4", "ipv4", v4), ("s6", "ipv6", v6)] {
            c.push_str(&format!("protocol static {name} {{\n  {chan};\n"));
            for r in routes {
                c.push_str(&format!("  route {r} blackhole;\n"));
            }
            c.push_str("}\n");
        }
        for n in &self.neighbors {
            let ibgp = n.asn == self.asn;
            c.push_str(&format!("protocol bgp {} {{\n", n.name));
            match &n.local_address {
                Some(l) => c.push_str(&format!("  local {l} as {};\n", self.asn)),
                None => c.push_str(&format!("  local as {};\n", self.asn)),
            }
            c.push_str(&format!("  neighbor {} as {};\n", n.address, n.asn));
            c.push_str(&format!("  hold time {};\n", n.hold_time));
            c.push_str("  connect delay time 1;\n  connect retry time 3;\n");
            c.push_str("  error wait time 1, 5;\n");
            if n.passive {
                c.push_str("  passive on;\n");
            }
            if let Some(pw) = &n.password {
                c.push_str(&format!("  password \"{pw}\";\n"));
            }
            if let Some(id) = &self.cluster_id {
                c.push_str(&format!("  rr cluster id {id};\n"));
            }
            if n.rr_client {
                c.push_str("  rr client;\n");
            }
            if n.graceful_restart {
                c.push_str("  graceful restart on;\n");
            }
            for (on, chan) in [(n.ipv4, "ipv4"), (n.ipv6, "ipv6")] {
                if on && n.rr_client {
                    c.push_str(&format!(
                        "  {chan} {{ import all; export where source = RTS_STATIC || source = RTS_BGP; }};\n"
                    ));
                } else if on {
                    let nhs = if ibgp { " next hop self;" } else { "" };
                    c.push_str(&format!(
                        "  {chan} {{ import all; export where source = RTS_STATIC;{nhs} }};\n"
                    ));
                }
            }
            c.push_str("}\n");
        }
        c
    }
}

/// A running BIRD (foreground, PID owned by the test).
pub struct Bird {
    pub daemon: Daemon,
    pub socket: PathBuf,
}

impl Bird {
    /// Writes the config into the lab dir and starts `bird -f -c CONF -s SOCK -P PID` in `ns`.
    pub fn start(lab: &Lab, ns: &Netns, name: &str, cfg: &BirdConfig) -> Result<Bird> {
        Bird::start_with(lab, ns, name, cfg, &[])
    }

    /// `start` with extra `bird` arguments (e.g. `-R`: graceful restart recovery).
    pub fn start_with(
        lab: &Lab,
        ns: &Netns,
        name: &str,
        cfg: &BirdConfig,
        extra: &[&str],
    ) -> Result<Bird> {
        let conf = lab.write(&format!("{name}.conf"), &cfg.render())?;
        // Validate first: a config error is then reported clearly instead of as a dead daemon.
        run(Command::new("bird").args(["-p", "-c"]).arg(&conf))?;
        let socket = lab.path(&format!("{name}.ctl"));
        let pid = lab.path(&format!("{name}.pid"));
        let conf_s = conf.to_string_lossy().into_owned();
        let sock_s = socket.to_string_lossy().into_owned();
        let pid_s = pid.to_string_lossy().into_owned();
        let mut argv = vec!["bird", "-f", "-c", &conf_s, "-s", &sock_s, "-P", &pid_s];
        argv.extend_from_slice(extra);
        let daemon = Daemon::spawn(lab, ns, name, &argv, &[])?;
        let mut bird = Bird { daemon, socket };
        super::wait_until(
            &format!("{name} control socket"),
            std::time::Duration::from_secs(10),
            |seen| {
                bird.daemon.check_running()?;
                seen.push_str(&format!("waiting for {}", bird.socket.display()));
                Ok(bird.birdc(&["show", "status"]).is_ok())
            },
        )?;
        Ok(bird)
    }

    /// `birdc -s SOCK args...` (unix socket: runs from the host namespace).
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        run(Command::new("birdc").arg("-s").arg(&self.socket).args(args))
    }

    /// The `show protocols NAME` line, e.g. `n1 BGP --- up 08:00:18.975 Established`.
    pub fn protocol_line(&self, proto: &str) -> Result<String> {
        let out = self.birdc(&["show", "protocols", proto])?;
        Ok(out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(proto))
            .unwrap_or("")
            .to_string())
    }

    pub fn established(&self, proto: &str, seen: &mut String) -> Result<bool> {
        let line = self.protocol_line(proto)?;
        seen.push_str(&format!("bird: {line}\n"));
        Ok(line.contains("Established"))
    }

    /// Prefixes in BIRD's routing tables (`show route`), optionally only from protocol `proto`.
    pub fn routes(&self, proto: Option<&str>) -> Result<Vec<String>> {
        let out = match proto {
            Some(p) => self.birdc(&["show", "route", "protocol", p])?,
            None => self.birdc(&["show", "route"])?,
        };
        Ok(parse_show_route(&out))
    }

    /// True if BIRD has `prefix` (from `proto` if given); records the table into `seen`.
    pub fn has_route(&self, prefix: &str, proto: Option<&str>, seen: &mut String) -> Result<bool> {
        let routes = self.routes(proto)?;
        seen.push_str(&format!("bird routes (proto {proto:?}): {routes:?}\n"));
        Ok(routes.iter().any(|r| same_prefix(r, prefix)))
    }

    /// Every path BIRD has for exactly `prefix` (`show route PREFIX all`), with its `BGP.*`
    /// attributes.
    pub fn route_paths(&self, prefix: &str) -> Result<Vec<BirdPath>> {
        Ok(parse_show_route_all(
            &self.birdc(&["show", "route", prefix, "all"])?,
        ))
    }

    /// `show route count` -> number of routes (all tables).
    pub fn route_count(&self) -> Result<u64> {
        let out = self.birdc(&["show", "route", "count"])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum())
    }
}

/// One path of `birdc show route ... all`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BirdPath {
    /// The protocol it came from (`[NAME time]`).
    pub proto: String,
    /// `via ADDR` gateway, if any.
    pub via: Option<String>,
    /// `BGP.NAME: VALUE` lines, NAME without the `BGP.` prefix (e.g. "originator_id").
    pub bgp: BTreeMap<String, String>,
}

impl BirdPath {
    /// A `BGP.*` attribute as printed (e.g. "10.0.0.2"), if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.bgp.get(name).map(String::as_str)
    }

    /// `BGP.cluster_list` as a list (BIRD prints the ids space-separated); empty if absent.
    pub fn cluster_list(&self) -> Vec<String> {
        self.attr("cluster_list")
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

/// Paths from `birdc show route ... all` output: a path starts with a line holding
/// `[PROTO ...]` (the first path's line starts with the prefix, further paths' lines with
/// spaces); its `via` and attribute lines are indented with a tab.
pub fn parse_show_route_all(out: &str) -> Vec<BirdPath> {
    let mut paths: Vec<BirdPath> = Vec::new();
    for line in out.lines() {
        if line.starts_with('\t') {
            let Some(p) = paths.last_mut() else { continue };
            let l = line.trim();
            if let Some(rest) = l.strip_prefix("via ") {
                p.via = rest.split_whitespace().next().map(str::to_string);
            } else if let Some(rest) = l.strip_prefix("BGP.") {
                if let Some((k, v)) = rest.split_once(':') {
                    p.bgp.insert(k.trim().to_string(), v.trim().to_string());
                }
            }
        } else if let Some((_, after)) = line.split_once('[') {
            let proto = after.split_whitespace().next().unwrap_or("").to_string();
            paths.push(BirdPath {
                proto,
                ..BirdPath::default()
            });
        }
    }
    paths
}

/// Prefixes from `birdc show route` output: lines that start with a prefix (continuation lines
/// for further paths and `via` lines are indented).
pub fn parse_show_route(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|tok| tok.parse::<ipnet::IpNet>().is_ok())
        .map(str::to_string)
        .collect()
}
