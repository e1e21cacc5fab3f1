//! ExaBGP 4.2 in a namespace: config with static routes and an API process
//! (`exabgp_log.py`) that logs received updates and neighbor state changes as JSON lines.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::daemon::Daemon;
use super::{same_prefix, Lab, Netns, Result};

/// The API process script (run by ExaBGP with /usr/bin/python3).
pub const LOG_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/exabgp_log.py");

/// Environment that keeps ExaBGP in the foreground as root without the CLI named pipes.
pub const ENV: &[(&str, &str)] = &[
    ("exabgp.daemon.user", "root"),
    ("exabgp.daemon.daemonize", "false"),
    ("exabgp.api.cli", "false"),
    ("exabgp.api.ack", "false"),
    ("exabgp.log.destination", "stdout"),
];

#[derive(Clone, Debug)]
pub struct ExabgpConfig {
    pub router_id: String,
    pub local_address: String,
    pub local_asn: u32,
    pub peer_address: String,
    pub peer_asn: u32,
    pub hold_time: u16,
    pub password: Option<String>,
    pub passive: bool,
    /// Originated prefixes (same family as the session), next-hop self.
    pub routes: Vec<String>,
}

impl ExabgpConfig {
    pub fn new(
        local_address: &str,
        local_asn: u32,
        peer_address: &str,
        peer_asn: u32,
    ) -> ExabgpConfig {
        ExabgpConfig {
            router_id: if local_address.contains(':') {
                "10.255.255.1".to_string()
            } else {
                local_address.to_string()
            },
            local_address: local_address.to_string(),
            local_asn,
            peer_address: peer_address.to_string(),
            peer_asn,
            hold_time: 9,
            password: None,
            passive: false,
            routes: Vec::new(),
        }
    }

    pub fn render(&self, log_file: &str) -> String {
        let mut c = format!(
            "process logger {{\n  run /usr/bin/python3 {LOG_SCRIPT} {log_file};\n  encoder json;\n}}\n\
             neighbor {peer} {{\n  router-id {rid};\n  local-address {la};\n  local-as {las};\n\
             \x20 peer-as {pas};\n  hold-time {ht};\n",
            peer = self.peer_address,
            rid = self.router_id,
            la = self.local_address,
            las = self.local_asn,
            pas = self.peer_asn,
            ht = self.hold_time
        );
        if let Some(pw) = &self.password {
            c.push_str(&format!("  md5-password {pw};\n"));
        }
        if self.passive {
            c.push_str("  passive true;\n");
        }
        let fam = if self.peer_address.contains(':') {
            "ipv6 unicast"
        } else {
            "ipv4 unicast"
        };
        c.push_str(&format!("  family {{ {fam}; }}\n"));
        c.push_str(
            "  api {\n    processes [ logger ];\n    neighbor-changes;\n    receive { parsed; update; }\n  }\n",
        );
        c.push_str("  static {\n");
        for r in &self.routes {
            c.push_str(&format!("    route {r} next-hop self;\n"));
        }
        c.push_str("  }\n}\n");
        c
    }
}

pub struct Exabgp {
    pub daemon: Daemon,
    pub log: PathBuf,
}

/// What the API log says: the neighbor state changes seen and the prefixes currently received.
#[derive(Debug, Default)]
pub struct ExaView {
    pub states: Vec<String>,
    pub prefixes: BTreeSet<String>,
}

impl ExaView {
    pub fn up(&self) -> bool {
        self.states.last().map(String::as_str) == Some("up")
    }

    pub fn ever_up(&self) -> bool {
        self.states.iter().any(|s| s == "up")
    }

    pub fn has(&self, prefix: &str) -> bool {
        self.prefixes.iter().any(|p| same_prefix(p, prefix))
    }
}

impl Exabgp {
    pub fn start(lab: &Lab, ns: &Netns, name: &str, cfg: &ExabgpConfig) -> Result<Exabgp> {
        let log = lab.path(&format!("{name}.api.jsonl"));
        std::fs::write(&log, "").map_err(|e| super::LabError::io("create exabgp api log", e))?;
        let conf = lab.write(&format!("{name}.conf"), &cfg.render(&log.to_string_lossy()))?;
        let daemon = Daemon::spawn(lab, ns, name, &["exabgp", &conf.to_string_lossy()], ENV)?;
        Ok(Exabgp { daemon, log })
    }

    /// Replays the API log.
    pub fn view(&self) -> Result<ExaView> {
        let text = std::fs::read_to_string(&self.log)
            .map_err(|e| super::LabError::io(format!("read {}", self.log.display()), e))?;
        Ok(parse_api_log(&text))
    }
}

/// Replays ExaBGP JSON API lines: neighbor states and announce/withdraw of unicast prefixes.
pub fn parse_api_log(text: &str) -> ExaView {
    let mut view = ExaView::default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match v.get("type").and_then(|t| t.as_str()) {
            Some("state") => {
                if let Some(s) = v.pointer("/neighbor/state").and_then(|s| s.as_str()) {
                    view.states.push(s.to_string());
                }
            }
            Some("update") => {
                let Some(update) = v.pointer("/neighbor/message/update") else {
                    continue;
                };
                if let Some(withdraw) = update.get("withdraw").and_then(|w| w.as_object()) {
                    for nlris in withdraw.values() {
                        for n in nlris.as_array().into_iter().flatten() {
                            if let Some(p) = n.get("nlri").and_then(|p| p.as_str()) {
                                view.prefixes.retain(|x| !same_prefix(x, p));
                            }
                        }
                    }
                }
                if let Some(announce) = update.get("announce").and_then(|a| a.as_object()) {
                    for by_nh in announce.values().filter_map(|f| f.as_object()) {
                        for nlris in by_nh.values() {
                            for n in nlris.as_array().into_iter().flatten() {
                                if let Some(p) = n.get("nlri").and_then(|p| p.as_str()) {
                                    view.prefixes.insert(p.to_string());
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    view
}
