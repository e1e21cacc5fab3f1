//! FRR 8.4 in a namespace: zebra + bgpd in the foreground with pathspace `-N NS`
//! (sockets in /var/run/frr/NS, created for the `frr` user), config via `-f`, `vtysh -N` probes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::daemon::Daemon;
use super::{parse_json, run, same_addr, Lab, LabError, Netns, Result};

pub const ZEBRA: &str = "/usr/lib/frr/zebra";
pub const BGPD: &str = "/usr/lib/frr/bgpd";
pub const BFDD: &str = "/usr/lib/frr/bfdd";

#[derive(Clone, Debug)]
pub struct FrrNeighbor {
    pub address: String,
    pub asn: u32,
    pub password: Option<String>,
    pub hold_time: u16,
    pub passive: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    /// Extra `neighbor ADDR ...` lines, e.g. "capability extended-nexthop".
    pub extra: Vec<String>,
    /// `neighbor ADDR route-reflector-client` in each activated address family.
    pub rr_client: bool,
}

impl FrrNeighbor {
    pub fn new(address: &str, asn: u32) -> FrrNeighbor {
        FrrNeighbor {
            address: address.to_string(),
            asn,
            password: None,
            hold_time: 9,
            passive: false,
            ipv4: !address.contains(':'),
            ipv6: address.contains(':'),
            extra: Vec::new(),
            rr_client: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct FrrConfig {
    pub router_id: String,
    pub asn: u32,
    pub neighbors: Vec<FrrNeighbor>,
    /// Prefixes originated with `network` (import-check off: no IGP route needed).
    pub networks: Vec<String>,
    /// `bgp cluster-id` (`None` = FRR's default, the router id).
    pub cluster_id: Option<String>,
}

impl FrrConfig {
    pub fn new(router_id: &str, asn: u32) -> FrrConfig {
        FrrConfig {
            router_id: router_id.to_string(),
            asn,
            neighbors: Vec::new(),
            networks: Vec::new(),
            cluster_id: None,
        }
    }

    pub fn render_bgpd(&self, hostname: &str) -> String {
        let mut c = format!(
            "frr defaults traditional\nhostname {hostname}\nlog stdout informational\n!\n\
             router bgp {asn}\n bgp router-id {rid}\n no bgp ebgp-requires-policy\n\
             \x20no bgp network import-check\n no bgp default ipv4-unicast\n",
            asn = self.asn,
            rid = self.router_id
        );
        if let Some(id) = &self.cluster_id {
            c.push_str(&format!(" bgp cluster-id {id}\n"));
        }
        for n in &self.neighbors {
            let a = &n.address;
            c.push_str(&format!(" neighbor {a} remote-as {}\n", n.asn));
            let keepalive = (n.hold_time / 3).max(1);
            c.push_str(&format!(
                " neighbor {a} timers {keepalive} {}\n",
                n.hold_time
            ));
            c.push_str(&format!(" neighbor {a} timers connect 2\n"));
            if let Some(pw) = &n.password {
                c.push_str(&format!(" neighbor {a} password {pw}\n"));
            }
            if n.passive {
                c.push_str(&format!(" neighbor {a} passive\n"));
            }
            for line in &n.extra {
                c.push_str(&format!(" neighbor {a} {line}\n"));
            }
        }
        for (af, v6) in [("ipv4", false), ("ipv6", true)] {
            c.push_str(&format!(" address-family {af} unicast\n"));
            for p in self.networks.iter().filter(|p| p.contains(':') == v6) {
                c.push_str(&format!("  network {p}\n"));
            }
            for n in self
                .neighbors
                .iter()
                .filter(|n| if v6 { n.ipv6 } else { n.ipv4 })
            {
                c.push_str(&format!("  neighbor {} activate\n", n.address));
                if n.rr_client {
                    c.push_str(&format!(
                        "  neighbor {} route-reflector-client\n",
                        n.address
                    ));
                }
            }
            c.push_str(" exit-address-family\n");
        }
        c.push_str("!\n");
        c
    }
}

/// `bgpd -C -f CONF` (a dry run): Ok when bgpd accepts the config file `conf` (whose text is
/// `text`, for the error). bgpd exits 0 even on unknown commands, so its log is checked too.
pub fn check_bgpd_config(conf: &Path, text: &str) -> Result<()> {
    let out = super::run_output(Command::new(BGPD).args(["-C", "-f"]).arg(conf))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    super::ensure(
        out.status.success() && !log.contains("No such command") && !log.contains("[EC "),
        format!("bgpd -C complained:\n{log}\nconfig:\n{text}"),
    )
}

/// Removes /var/run/frr/NS on Drop (after the daemons, which are declared later in `Frr`).
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// zebra of one namespace with its run dir (pathspace `-N NS`): what every other FRR daemon
/// needs. Fields drop in order: zebra, run dir.
pub struct Zebra {
    pub daemon: Daemon,
    rundir: RunDir,
    pathspace: String,
}

impl Zebra {
    /// Creates /var/run/frr/NS for the `frr` user and starts zebra (foreground) in `ns`.
    pub fn start(lab: &Lab, ns: &Netns, name: &str) -> Result<Zebra> {
        let pathspace = ns.name().to_string();
        let rundir = RunDir(PathBuf::from("/var/run/frr").join(&pathspace));
        std::fs::create_dir_all(&rundir.0)
            .map_err(|e| LabError::io(format!("create {}", rundir.0.display()), e))?;
        run(Command::new("chown").args(["frr:frr"]).arg(&rundir.0))?;
        let conf = lab.write(
            &format!("{name}-zebra.conf"),
            &format!("hostname {name}\nlog stdout informational\n"),
        )?;
        let daemon = spawn_in(
            lab,
            ns,
            (&pathspace, &rundir.0),
            &format!("{name}-zebra"),
            ZEBRA,
            &conf,
            &[],
        )?;
        let mut zebra = Zebra {
            daemon,
            rundir,
            pathspace,
        };
        let zsock = zebra.rundir.0.join("zserv.api");
        super::wait_until(
            &format!("{name} zebra socket"),
            Duration::from_secs(10),
            |seen| {
                zebra.daemon.check_running()?;
                seen.push_str(&format!("waiting for {}", zsock.display()));
                Ok(zsock.exists())
            },
        )?;
        Ok(zebra)
    }

    /// Starts another FRR daemon of this namespace (see `spawn_in`).
    pub fn spawn(
        &self,
        lab: &Lab,
        ns: &Netns,
        name: &str,
        bin: &str,
        conf: &Path,
        extra: &[&str],
    ) -> Result<Daemon> {
        spawn_in(
            lab,
            ns,
            (&self.pathspace, &self.rundir.0),
            name,
            bin,
            conf,
            extra,
        )
    }

    /// `vtysh -N NS -c CMD` (unix sockets: runs from the host namespace).
    pub fn vtysh(&self, cmd: &str) -> Result<String> {
        run(Command::new("vtysh").args(["-N", &self.pathspace, "-c", cmd]))
    }
}

/// Starts the FRR daemon `bin` in the foreground (the guard owns its PID) with pathspace and
/// run dir `space`, config `conf`, its pid file in the run dir and `extra` arguments (each
/// `{rd}` replaced by the run dir).
fn spawn_in(
    lab: &Lab,
    ns: &Netns,
    space: (&str, &Path),
    name: &str,
    bin: &str,
    conf: &Path,
    extra: &[&str],
) -> Result<Daemon> {
    let (pathspace, rundir) = space;
    super::ensure(
        Path::new(bin).exists(),
        format!("{bin} missing: install frr"),
    )?;
    let rd = rundir.to_string_lossy().into_owned();
    let stem = Path::new(bin)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_string());
    let conf = conf.to_string_lossy().into_owned();
    let pid = format!("{rd}/{stem}.pid");
    let extra: Vec<String> = extra.iter().map(|a| a.replace("{rd}", &rd)).collect();
    let mut argv = vec![bin, "-N", pathspace, "-f", &conf, "-i", &pid];
    argv.extend(extra.iter().map(String::as_str));
    Daemon::spawn(lab, ns, name, &argv, &[])
}

/// Running zebra + bgpd for one namespace. Fields drop in order: bgpd, zebra (then its dir).
pub struct Frr {
    pub bgpd: Daemon,
    pub zebra: Zebra,
}

impl Frr {
    pub fn start(lab: &Lab, ns: &Netns, name: &str, cfg: &FrrConfig) -> Result<Frr> {
        let zebra = Zebra::start(lab, ns, name)?;
        let bconf = lab.write(&format!("{name}-bgpd.conf"), &cfg.render_bgpd(name))?;
        let bgpd = zebra.spawn(lab, ns, &format!("{name}-bgpd"), BGPD, &bconf, &[])?;
        let mut frr = Frr { bgpd, zebra };
        super::wait_until(
            &format!("{name} bgpd vty"),
            Duration::from_secs(10),
            |seen| {
                frr.bgpd.check_running()?;
                let out = frr.vtysh("show bgp summary json");
                seen.push_str(&format!("{out:?}"));
                Ok(out.is_ok())
            },
        )?;
        Ok(frr)
    }

    /// `vtysh -N NS -c CMD` (unix sockets: runs from the host namespace).
    pub fn vtysh(&self, cmd: &str) -> Result<String> {
        self.zebra.vtysh(cmd)
    }

    pub fn vtysh_json(&self, cmd: &str) -> Result<serde_json::Value> {
        let out = self.vtysh(cmd)?;
        parse_json(cmd, &out)
    }

    /// BGP FSM state of a neighbor as FRR reports it ("Established", "Active", ...).
    pub fn neighbor_state(&self, addr: &str) -> Result<Option<String>> {
        let v = self.vtysh_json(&format!("show bgp neighbors {addr} json"))?;
        Ok(v.as_object().and_then(|m| {
            m.iter()
                .find(|(k, _)| same_addr(k, addr))
                .and_then(|(_, n)| n.get("bgpState"))
                .and_then(|s| s.as_str())
                .map(str::to_string)
        }))
    }

    pub fn established(&self, addr: &str, seen: &mut String) -> Result<bool> {
        let st = self.neighbor_state(addr)?;
        seen.push_str(&format!("frr neighbor {addr}: {st:?}\n"));
        Ok(st.as_deref() == Some("Established"))
    }

    /// Prefixes in FRR's BGP table for the prefix's family.
    pub fn bgp_prefixes(&self, v6: bool) -> Result<Vec<String>> {
        let af = if v6 { "ipv6" } else { "ipv4" };
        let v = self.vtysh_json(&format!("show bgp {af} unicast json"))?;
        Ok(v.get("routes")
            .and_then(|r| r.as_object())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// True if `prefix` is in FRR's BGP table (zebra's selected route list is checked by
    /// `zebra_has` and the kernel by `Netns::has_kernel_route(.., "bgp", ..)`).
    pub fn bgp_has(&self, prefix: &str, seen: &mut String) -> Result<bool> {
        let p = self.bgp_prefixes(prefix.contains(':'))?;
        seen.push_str(&format!("frr bgp table: {p:?}\n"));
        Ok(p.iter().any(|x| super::same_prefix(x, prefix)))
    }

    /// Every path of `prefix` in FRR's BGP table (`show bgp AF unicast PREFIX json`).
    pub fn bgp_paths(&self, prefix: &str) -> Result<Vec<FrrPath>> {
        let af = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        let v = self.vtysh_json(&format!("show bgp {af} unicast {prefix} json"))?;
        Ok(parse_bgp_paths(&v))
    }

    /// True if zebra has `prefix` as an installed (FIB) route.
    pub fn zebra_has(&self, prefix: &str, seen: &mut String) -> Result<bool> {
        let cmd = if prefix.contains(':') {
            "show ipv6 route json"
        } else {
            "show ip route json"
        };
        let v = self.vtysh_json(cmd)?;
        let installed = v
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| super::same_prefix(k, prefix))
                    .flat_map(|(_, routes)| routes.as_array().cloned().unwrap_or_default())
                    .any(|r| r.get("installed").and_then(|i| i.as_bool()) == Some(true))
            })
            .unwrap_or(false);
        seen.push_str(&format!(
            "zebra routes: {:?}\n",
            v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>())
        ));
        Ok(installed)
    }
}

/// One path of `show bgp AF unicast PREFIX json`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrrPath {
    /// `peer.peerId`: the neighbor it came from.
    pub peer: Option<String>,
    /// `nexthops[].ip`.
    pub next_hops: Vec<String>,
    /// `originatorId`.
    pub originator_id: Option<String>,
    /// `clusterList.list` (FRR 8.4; a plain array is read too); empty if absent.
    pub cluster_list: Vec<String>,
    pub best: bool,
}

/// The `paths` of FRR's per-prefix JSON (an empty or prefix-less answer gives no paths).
pub fn parse_bgp_paths(v: &serde_json::Value) -> Vec<FrrPath> {
    let strs = |v: Option<&serde_json::Value>| -> Vec<String> {
        v.and_then(|x| x.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    v.get("paths")
        .and_then(|p| p.as_array())
        .map(|paths| {
            paths
                .iter()
                .map(|p| {
                    let cl = p.get("clusterList");
                    FrrPath {
                        peer: p
                            .pointer("/peer/peerId")
                            .and_then(|x| x.as_str())
                            .map(str::to_string),
                        next_hops: p
                            .get("nexthops")
                            .and_then(|n| n.as_array())
                            .map(|n| {
                                n.iter()
                                    .filter_map(|h| h.get("ip").and_then(|i| i.as_str()))
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_default(),
                        originator_id: p
                            .get("originatorId")
                            .and_then(|x| x.as_str())
                            .map(str::to_string),
                        cluster_list: if cl.is_some_and(|c| c.is_array()) {
                            strs(cl)
                        } else {
                            strs(cl.and_then(|c| c.get("list")))
                        },
                        best: p.pointer("/bestpath/overall").and_then(|b| b.as_bool())
                            == Some(true),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}
