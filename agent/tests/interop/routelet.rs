//! routelet itself: YAML config generator, `routelet speaker --config FILE` in a namespace, and
//! `routelet status --socket PATH --json` probes (unix socket: run from the host namespace).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::daemon::Daemon;
use super::{parse_json, run, same_addr, same_prefix, Lab, LabError, Netns, Result};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_routelet");

/// Kernel route protocol number routelet installs its routes with.
pub const RT_PROTO: &str = "200";

#[derive(Clone, Debug)]
pub struct RlNeighbor {
    pub address: String,
    pub asn: u32,
    pub passive: bool,
    pub hold_time: u16,
    pub connect_retry: u16,
    pub password: Option<String>,
    pub ttl_security: bool,
    pub local_address: Option<String>,
    pub route_reflector_client: bool,
    pub families: Vec<String>,
    /// `bfd: true` (300 ms x 3).
    pub bfd: bool,
}

impl RlNeighbor {
    /// Active neighbor, hold 9 s, connect-retry 1 s, the family of its address.
    pub fn new(address: &str, asn: u32) -> RlNeighbor {
        let fam = if address.contains(':') {
            "ipv6_unicast"
        } else {
            "ipv4_unicast"
        };
        RlNeighbor {
            address: address.to_string(),
            asn,
            passive: false,
            hold_time: 9,
            connect_retry: 1,
            password: None,
            ttl_security: false,
            local_address: None,
            route_reflector_client: false,
            families: vec![fam.to_string()],
            bfd: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RouteletConfig {
    pub router_id: String,
    pub asn: u32,
    pub listen_port: u16,
    pub listen_address: Option<String>,
    /// `None` = no metrics endpoint (rendered as "").
    pub metrics_address: Option<String>,
    pub max_paths: u32,
    pub neighbors: Vec<RlNeighbor>,
    pub originate: Vec<String>,
    pub kernel_install: bool,
    pub kernel_table: u32,
    /// `graceful_restart.enabled` (`None` = the default, on).
    pub graceful_restart: Option<bool>,
    /// `graceful_restart.restart_time` (`None` = the default).
    pub restart_time: Option<u16>,
    /// Route-reflector `cluster_id` (`None` = not rendered: the default, the router id).
    pub cluster_id: Option<String>,
}

/// A YAML (JSON-compatible) quoted string.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

impl RouteletConfig {
    pub fn new(router_id: &str, asn: u32) -> RouteletConfig {
        RouteletConfig {
            router_id: router_id.to_string(),
            asn,
            listen_port: 179,
            listen_address: Some("::".to_string()),
            metrics_address: None,
            max_paths: 4,
            neighbors: Vec::new(),
            originate: Vec::new(),
            kernel_install: true,
            kernel_table: 254,
            graceful_restart: None,
            restart_time: None,
            cluster_id: None,
        }
    }

    pub fn render(&self, socket: &str) -> String {
        let mut c = format!(
            "router_id: {}\nasn: {}\nlisten_port: {}\n",
            q(&self.router_id),
            self.asn,
            self.listen_port
        );
        if let Some(l) = &self.listen_address {
            c.push_str(&format!("listen_address: {}\n", q(l)));
        }
        c.push_str(&format!("socket: {}\n", q(socket)));
        c.push_str(&format!(
            "metrics_address: {}\n",
            q(self.metrics_address.as_deref().unwrap_or(""))
        ));
        c.push_str(&format!("max_paths: {}\n", self.max_paths));
        if let Some(id) = &self.cluster_id {
            c.push_str(&format!("cluster_id: {}\n", q(id)));
        }
        c.push_str("neighbors:\n");
        if self.neighbors.is_empty() {
            c.truncate(c.len() - 1);
            c.push_str(" []\n");
        }
        for n in &self.neighbors {
            c.push_str(&format!(
                "  - address: {}\n    asn: {}\n",
                q(&n.address),
                n.asn
            ));
            c.push_str(&format!("    passive: {}\n", n.passive));
            c.push_str(&format!("    hold_time: {}\n", n.hold_time));
            c.push_str(&format!("    connect_retry: {}\n", n.connect_retry));
            if let Some(pw) = &n.password {
                c.push_str(&format!("    password: {}\n", q(pw)));
            }
            c.push_str(&format!("    ttl_security: {}\n", n.ttl_security));
            if let Some(l) = &n.local_address {
                c.push_str(&format!("    local_address: {}\n", q(l)));
            }
            c.push_str(&format!(
                "    route_reflector_client: {}\n",
                n.route_reflector_client
            ));
            c.push_str(&format!("    families: [{}]\n", n.families.join(", ")));
            if n.bfd {
                c.push_str("    bfd: true\n");
            }
        }
        c.push_str("originate:\n");
        if self.originate.is_empty() {
            c.truncate(c.len() - 1);
            c.push_str(" []\n");
        }
        for p in &self.originate {
            c.push_str(&format!("  - prefix: {}\n", q(p)));
        }
        c.push_str(&format!(
            "kernel:\n  install: {}\n  table: {}\n",
            self.kernel_install, self.kernel_table
        ));
        if self.graceful_restart.is_some() || self.restart_time.is_some() {
            c.push_str("graceful_restart:\n");
            if let Some(on) = self.graceful_restart {
                c.push_str(&format!("  enabled: {on}\n"));
            }
            if let Some(t) = self.restart_time {
                c.push_str(&format!("  restart_time: {t}\n"));
            }
        }
        c
    }
}

pub struct Routelet {
    pub daemon: Daemon,
    pub socket: PathBuf,
    ns: String,
    metrics_address: Option<String>,
}

impl Routelet {
    /// Writes `<name>.yaml`, starts `routelet speaker --config` in `ns`, waits until its status
    /// socket answers (fails with the daemon log if it exits or never answers).
    pub fn start(lab: &Lab, ns: &Netns, name: &str, cfg: &RouteletConfig) -> Result<Routelet> {
        let socket = lab.path(&format!("{name}.sock"));
        let conf = lab.write(
            &format!("{name}.yaml"),
            &cfg.render(&socket.to_string_lossy()),
        )?;
        let daemon = Daemon::spawn(
            lab,
            ns,
            name,
            &[BIN, "speaker", "--config", &conf.to_string_lossy()],
            &[(
                "RUST_LOG",
                &std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string()),
            )],
        )?;
        let mut r = Routelet {
            daemon,
            socket,
            ns: ns.name().to_string(),
            metrics_address: cfg.metrics_address.clone(),
        };
        super::wait_until(
            &format!("{name} status socket to answer"),
            Duration::from_secs(10),
            |seen| {
                r.daemon.check_running()?;
                let st = r.status();
                seen.push_str(&format!("{st:?}"));
                Ok(st.is_ok())
            },
        )?;
        Ok(r)
    }

    /// Wraps an already started routelet process (e.g. `routelet agent`) whose status socket is
    /// `socket`, so that the status helpers below work for it.
    pub fn from_daemon(
        daemon: Daemon,
        socket: PathBuf,
        ns: &Netns,
        metrics_address: Option<String>,
    ) -> Routelet {
        Routelet {
            daemon,
            socket,
            ns: ns.name().to_string(),
            metrics_address,
        }
    }

    /// `routelet status --socket PATH --json`, parsed.
    pub fn status(&self) -> Result<Value> {
        let out = run(Command::new(BIN)
            .args(["status", "--socket"])
            .arg(&self.socket)
            .arg("--json"))?;
        parse_json("routelet status --json", &out)
    }

    /// The status entry of neighbor `addr`, if listed.
    pub fn neighbor(&self, addr: &str) -> Result<Option<Value>> {
        Ok(find_neighbor(&self.status()?, addr))
    }

    /// Session state ("established", "active", ...) of `addr`; writes the entry into `seen`.
    pub fn neighbor_state(&self, addr: &str, seen: &mut String) -> Result<Option<String>> {
        let n = self.neighbor(addr)?;
        seen.push_str(&format!(
            "routelet neighbor {addr}: {}\n",
            compact(n.as_ref())
        ));
        Ok(n.and_then(|n| n.get("state").and_then(|s| s.as_str()).map(str::to_string)))
    }

    pub fn established(&self, addr: &str, seen: &mut String) -> Result<bool> {
        Ok(self.neighbor_state(addr, seen)?.as_deref() == Some("established"))
    }

    /// `uptime_seconds` of a neighbor (None if not listed / absent).
    pub fn uptime(&self, addr: &str) -> Result<Option<f64>> {
        Ok(self
            .neighbor(addr)?
            .and_then(|n| n.get("uptime_seconds").and_then(Value::as_f64)))
    }

    /// The RIB entry for `prefix`, if present.
    pub fn rib_entry(&self, prefix: &str) -> Result<Option<Value>> {
        Ok(find_rib(&self.status()?, prefix))
    }

    /// True if the RIB has `prefix`; writes the RIB's prefixes into `seen`.
    pub fn rib_has(&self, prefix: &str, seen: &mut String) -> Result<bool> {
        let st = self.status()?;
        let prefixes = rib_prefixes(&st);
        let shown: Vec<&String> = prefixes.iter().take(20).collect();
        seen.push_str(&format!(
            "routelet rib ({} entries, first 20): {shown:?}\n",
            prefixes.len()
        ));
        Ok(find_rib(&st, prefix).is_some())
    }

    /// Number of RIB entries.
    pub fn rib_len(&self) -> Result<usize> {
        Ok(rib_prefixes(&self.status()?).len())
    }

    /// Top-level `connections_rejected` counter from the status JSON.
    pub fn connections_rejected(&self) -> Result<Option<u64>> {
        Ok(self
            .status()?
            .get("connections_rejected")
            .and_then(Value::as_u64))
    }

    /// GET http://METRICS_ADDRESS/metrics from inside the namespace (python3 urllib).
    pub fn metrics(&self) -> Result<String> {
        self.http_get("/metrics")
    }

    /// `GET path` on the metrics address from inside the namespace: the body, or an error
    /// naming the HTTP status.
    pub fn http_get(&self, path: &str) -> Result<String> {
        let addr = self
            .metrics_address
            .clone()
            .ok_or_else(|| LabError::Check("metrics_address not configured".into()))?;
        super::netns::exec_in(
            &self.ns,
            &[
                "/usr/bin/python3",
                "-c",
                "import sys, urllib.request; \
                 print(urllib.request.urlopen('http://' + sys.argv[1] + sys.argv[2], timeout=3).read().decode())",
                &addr,
                path,
            ],
        )
    }
}

/// Compact JSON for messages.
pub fn compact(v: Option<&Value>) -> String {
    v.map(Value::to_string).unwrap_or_else(|| "<absent>".into())
}

pub fn find_neighbor(status: &Value, addr: &str) -> Option<Value> {
    status
        .get("neighbors")?
        .as_array()?
        .iter()
        .find(|n| {
            n.get("address")
                .and_then(Value::as_str)
                .is_some_and(|a| same_addr(a, addr))
        })
        .cloned()
}

pub fn find_rib(status: &Value, prefix: &str) -> Option<Value> {
    status
        .get("rib")?
        .as_array()?
        .iter()
        .find(|e| {
            e.get("prefix")
                .and_then(Value::as_str)
                .is_some_and(|p| same_prefix(p, prefix))
        })
        .cloned()
}

pub fn rib_prefixes(status: &Value) -> Vec<String> {
    status
        .get("rib")
        .and_then(Value::as_array)
        .map(|rib| {
            rib.iter()
                .filter_map(|e| e.get("prefix").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Value of a Prometheus sample (`name` with no labels, or the sum over all label sets).
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(val)) = (parts.next(), parts.next()) else {
            continue;
        };
        let base = key.split('{').next().unwrap_or(key);
        if base == name {
            if let Ok(v) = val.parse::<f64>() {
                found = Some(found.unwrap_or(0.0) + v);
            }
        }
    }
    found
}
