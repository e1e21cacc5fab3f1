//! The `routelet speaker` YAML configuration: parsing (unknown keys rejected, errors with the
//! line), validation, and conversion into the bgp crate's `SpeakerConfig`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bgp::config::{BfdTimers, GracefulRestartConfig, NeighborConfig, SpeakerConfig};
use bgp::rib::RouteFilter;
use bgp::types::{Family, Prefix};
use serde::Deserialize;

/// Default path of the local status socket.
pub const DEFAULT_SOCKET: &str = "/run/routelet/routelet.sock";
/// Default Prometheus metrics address.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9179";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}{}: `{key}`: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

pub(crate) fn default_listen_port() -> u16 {
    179
}
pub(crate) fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
pub(crate) fn default_metrics() -> String {
    DEFAULT_METRICS.to_string()
}
pub(crate) fn default_max_paths() -> usize {
    4
}
pub(crate) fn default_convergence_timeout() -> u64 {
    60
}
pub(crate) fn default_true() -> bool {
    true
}
pub(crate) fn default_table() -> u32 {
    254
}
pub(crate) fn default_hold_time() -> u16 {
    90
}
pub(crate) fn default_connect_retry() -> u64 {
    5
}
pub(crate) fn default_peer_port() -> u16 {
    179
}

pub(crate) fn default_restart_time() -> u16 {
    120
}
pub(crate) fn default_stale_routes_time() -> u64 {
    360
}

/// `graceful_restart:` of the speaker and the agent files (RFC 4724 + RFC 8538, both roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GracefulRestartFile {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Seconds peers keep our routes while our sessions are down (1..=4095).
    #[serde(default = "default_restart_time")]
    pub restart_time: u16,
    /// Seconds a restarted peer's stale routes wait for its End-of-RIB (1..=3600).
    #[serde(default = "default_stale_routes_time")]
    pub stale_routes_time: u64,
    /// Keep a peer's routes when its hold timer expires (RFC 8538's reading); default: a
    /// silent peer is a dead node and its routes go at once.
    #[serde(default)]
    pub keep_on_hold_timer_expiry: bool,
}

impl Default for GracefulRestartFile {
    fn default() -> Self {
        GracefulRestartFile {
            enabled: true,
            restart_time: default_restart_time(),
            stale_routes_time: default_stale_routes_time(),
            keep_on_hold_timer_expiry: false,
        }
    }
}

impl GracefulRestartFile {
    /// The validated speaker settings (`None` when disabled; `restarting` is decided at start
    /// from the kernel). Err is (key, message).
    pub(crate) fn settings(&self) -> Result<Option<GracefulRestartConfig>, (&'static str, String)> {
        if !self.enabled {
            return Ok(None);
        }
        if self.restart_time == 0 || self.restart_time > GracefulRestartConfig::MAX_RESTART_TIME {
            return Err((
                "graceful_restart.restart_time",
                format!(
                    "{} is out of range: 1..={} seconds (12 bits in the capability)",
                    self.restart_time,
                    GracefulRestartConfig::MAX_RESTART_TIME
                ),
            ));
        }
        if self.stale_routes_time == 0 || self.stale_routes_time > 3600 {
            return Err((
                "graceful_restart.stale_routes_time",
                format!(
                    "{} is out of range: 1..=3600 seconds",
                    self.stale_routes_time
                ),
            ));
        }
        Ok(Some(GracefulRestartConfig {
            restart_time: self.restart_time,
            stale_routes_time: Duration::from_secs(self.stale_routes_time),
            restarting: false,
            keep_on_hold_timer_expiry: self.keep_on_hold_timer_expiry,
        }))
    }
}

/// The YAML document of `routelet speaker --config FILE`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakerFile {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    /// Address to listen on; default `::` (dual stack).
    #[serde(default)]
    pub listen_address: Option<IpAddr>,
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// `host:port` for Prometheus metrics; empty string disables.
    #[serde(default = "default_metrics")]
    pub metrics_address: String,
    #[serde(default = "default_max_paths")]
    pub max_paths: usize,
    #[serde(default)]
    pub cluster_id: Option<Ipv4Addr>,
    /// Seconds to wait for every neighbor's End-of-RIB before removing old kernel routes.
    #[serde(default = "default_convergence_timeout")]
    pub convergence_timeout: u64,
    #[serde(default)]
    pub graceful_restart: GracefulRestartFile,
    #[serde(default)]
    pub neighbors: Vec<NeighborFile>,
    #[serde(default)]
    pub originate: Vec<OriginateFile>,
    #[serde(default)]
    pub kernel: KernelFile,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighborFile {
    pub address: IpAddr,
    pub asn: u32,
    #[serde(default = "default_peer_port")]
    pub port: u16,
    #[serde(default)]
    pub passive: bool,
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    #[serde(default = "default_connect_retry")]
    pub connect_retry: u64,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub ttl_security: bool,
    #[serde(default)]
    pub local_address: Option<IpAddr>,
    #[serde(default)]
    pub route_reflector_client: bool,
    /// Default: the family of `address`.
    #[serde(default)]
    pub families: Option<Vec<Family>>,
    /// `all` (default) or `none`: accept this neighbor's routes.
    #[serde(default)]
    pub import: RouteFilter,
    /// `all` (default) or `none`: advertise routes to this neighbor.
    #[serde(default)]
    pub export: RouteFilter,
    /// `true` (300 ms x 3) or `{min_rx, min_tx, multiplier}` (ms); absent or `false` = off.
    #[serde(default)]
    pub bfd: Option<BfdFile>,
}

/// `bfd:` of a neighbor: a switch, or the timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum BfdFile {
    Enabled(bool),
    Timers(BfdTimersFile),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BfdTimersFile {
    /// Milliseconds.
    #[serde(default = "default_bfd_interval")]
    pub min_rx: u64,
    /// Milliseconds.
    #[serde(default = "default_bfd_interval")]
    pub min_tx: u64,
    #[serde(default = "default_bfd_multiplier")]
    pub multiplier: u8,
}

fn default_bfd_interval() -> u64 {
    300
}
fn default_bfd_multiplier() -> u8 {
    3
}

/// Validated BFD timers of a neighbor (`None` = off). Err is (field, message).
pub(crate) fn bfd_timers(b: Option<BfdFile>) -> Result<Option<BfdTimers>, (&'static str, String)> {
    let t = match b {
        None | Some(BfdFile::Enabled(false)) => return Ok(None),
        Some(BfdFile::Enabled(true)) => BfdTimersFile {
            min_rx: default_bfd_interval(),
            min_tx: default_bfd_interval(),
            multiplier: default_bfd_multiplier(),
        },
        Some(BfdFile::Timers(t)) => t,
    };
    for (field, v) in [("bfd.min_rx", t.min_rx), ("bfd.min_tx", t.min_tx)] {
        if !(10..=60_000).contains(&v) {
            return Err((field, format!("{v} ms is out of range: 10..=60000 ms")));
        }
    }
    if t.multiplier == 0 {
        return Err((
            "bfd.multiplier",
            "0 is not allowed: at least 1 (RFC 5880 6.8.1)".into(),
        ));
    }
    Ok(Some(BfdTimers {
        min_rx: Duration::from_millis(t.min_rx),
        min_tx: Duration::from_millis(t.min_tx),
        multiplier: t.multiplier,
    }))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginateFile {
    pub prefix: Prefix,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelFile {
    #[serde(default = "default_true")]
    pub install: bool,
    #[serde(default = "default_table")]
    pub table: u32,
}

impl Default for KernelFile {
    fn default() -> Self {
        KernelFile {
            install: true,
            table: default_table(),
        }
    }
}

/// Everything `routelet speaker` runs with, validated.
#[derive(Debug, Clone)]
pub struct SpeakerSettings {
    pub bgp: SpeakerConfig,
    pub socket: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub originate: Vec<Prefix>,
    pub kernel: KernelFile,
}

/// 1-based line of the `occurrence`-th line containing `needle` (for error messages).
pub(crate) fn locate(text: &str, needle: &str, occurrence: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .nth(occurrence)
        .map(|(i, _)| i + 1)
}

pub fn load_speaker(path: &Path) -> Result<SpeakerSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_speaker(&text, path)
}

pub fn parse_speaker(text: &str, path: &Path) -> Result<SpeakerSettings, ConfigError> {
    let file: SpeakerFile = serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let invalid =
        |key: String, needle: &str, occurrence: usize, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: locate(text, needle, occurrence),
            key,
            message,
        };
    if file.asn == 0 {
        return Err(invalid(
            "asn".into(),
            "asn:",
            0,
            "AS number 0 is reserved (RFC 7607)".into(),
        ));
    }
    if file.router_id.is_unspecified() || file.router_id.is_multicast() {
        return Err(invalid(
            "router_id".into(),
            "router_id:",
            0,
            format!("{} is not a usable BGP identifier", file.router_id),
        ));
    }
    let metrics = common_settings(file.max_paths, &file.metrics_address)
        .map_err(|(key, message)| invalid(key.into(), &format!("{key}:"), 0, message))?;
    let graceful_restart = file.graceful_restart.settings().map_err(|(key, message)| {
        let needle = key.rsplit('.').next().unwrap_or(key);
        invalid(key.into(), &format!("{needle}:"), 0, message)
    })?;
    let mut seen = HashSet::new();
    let mut neighbors = Vec::new();
    for (i, n) in file.neighbors.iter().enumerate() {
        let key = |k: &str| format!("neighbors[{i}].{k}");
        let addr_text = n.address.to_string();
        if !seen.insert(n.address) {
            return Err(invalid(
                key("address"),
                &addr_text,
                1,
                format!("duplicate neighbor {}", n.address),
            ));
        }
        let neighbor = neighbor_config(n).map_err(|e| {
            // Point at the line of the offending key (the value's line for the address).
            let (needle, occurrence) = match e.field {
                "asn" | "address" => (addr_text.clone(), 0),
                "local_address" => (
                    n.local_address.map(|a| a.to_string()).unwrap_or_default(),
                    0,
                ),
                other => (
                    // `bfd.min_rx` is written `min_rx:` under `bfd:`.
                    format!("{}:", other.rsplit('.').next().unwrap_or(other)),
                    if other == "hold_time" { i } else { 0 },
                ),
            };
            invalid(key(e.field), &needle, occurrence, e.message)
        })?;
        neighbors.push(neighbor);
    }
    let mut originate = Vec::new();
    let mut seen_prefixes = HashSet::new();
    for (i, o) in file.originate.iter().enumerate() {
        let p = o.prefix;
        if p.trunc() != p {
            return Err(invalid(
                format!("originate[{i}].prefix"),
                &p.to_string(),
                0,
                format!("{p} has host bits set (did you mean {}?)", p.trunc()),
            ));
        }
        if !seen_prefixes.insert(p) {
            return Err(invalid(
                format!("originate[{i}].prefix"),
                &p.to_string(),
                1,
                format!("duplicate prefix {p}"),
            ));
        }
        originate.push(p);
    }
    let listen = if file.listen_port == 0 {
        None
    } else {
        Some(SocketAddr::new(
            file.listen_address
                .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
            file.listen_port,
        ))
    };
    Ok(SpeakerSettings {
        bgp: SpeakerConfig {
            router_id: file.router_id,
            asn: file.asn,
            listen,
            max_paths: file.max_paths,
            cluster_id: file.cluster_id,
            convergence_timeout: Duration::from_secs(file.convergence_timeout),
            graceful_restart,
            neighbors,
        },
        socket: file.socket,
        metrics,
        originate,
        kernel: file.kernel,
    })
}

/// Settings the speaker and the agent files share: `max_paths` (1..=64) and
/// `metrics_address` (host:port, empty = off). Err is (key, message).
pub(crate) fn common_settings(
    max_paths: usize,
    metrics_address: &str,
) -> Result<Option<SocketAddr>, (&'static str, String)> {
    if max_paths == 0 || max_paths > 64 {
        return Err(("max_paths", "must be 1..=64".into()));
    }
    if metrics_address.is_empty() {
        return Ok(None);
    }
    metrics_address
        .parse::<SocketAddr>()
        .map(Some)
        .map_err(|e| {
            (
                "metrics_address",
                format!("`{metrics_address}` is not host:port ({e})"),
            )
        })
}

/// A neighbor field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Key of the field inside the neighbor entry (`asn`, `hold_time`, ...).
    pub field: &'static str,
    pub message: String,
}

/// Validates one neighbor entry (from the speaker's `neighbors`, the agent's `peers` or a
/// `routelet.io/peers` annotation) and converts it into the speaker's form.
pub fn neighbor_config(n: &NeighborFile) -> Result<NeighborConfig, FieldError> {
    let fail = |field: &'static str, message: String| Err(FieldError { field, message });
    if n.asn == 0 {
        return fail("asn", "AS number 0 is reserved".into());
    }
    if n.hold_time == 1 || n.hold_time == 2 {
        return fail(
            "hold_time",
            format!(
                "{} is not allowed: must be 0 or at least 3 seconds (RFC 4271)",
                n.hold_time
            ),
        );
    }
    if n.connect_retry == 0 {
        return fail("connect_retry", "must be at least 1 second".into());
    }
    if let Some(pw) = &n.password {
        if pw.is_empty() || pw.len() > bgp::network::MD5_MAX_KEY_LEN {
            return fail(
                "password",
                format!(
                    "TCP MD5 keys are 1..={} bytes",
                    bgp::network::MD5_MAX_KEY_LEN
                ),
            );
        }
    }
    if let Some(local) = n.local_address {
        if local.is_ipv4() != n.address.is_ipv4() {
            return fail(
                "local_address",
                format!(
                    "{local} is not of the same family as neighbor {}",
                    n.address
                ),
            );
        }
    }
    if n.address.is_unspecified() || n.address.is_multicast() {
        return fail(
            "address",
            format!("{} is not a usable neighbor address", n.address),
        );
    }
    let families = n
        .families
        .clone()
        .unwrap_or_else(|| vec![Family::of_addr(&n.address)]);
    if families.is_empty() {
        return fail("families", "at least one family is needed".into());
    }
    let bfd = match bfd_timers(n.bfd) {
        Ok(b) => b,
        Err((field, message)) => return fail(field, message),
    };
    Ok(NeighborConfig {
        bfd,
        address: n.address,
        port: n.port,
        asn: n.asn,
        passive: n.passive,
        hold_time: n.hold_time,
        connect_retry: Duration::from_secs(n.connect_retry),
        password: n.password.clone(),
        ttl_security: n.ttl_security,
        local_address: n.local_address,
        route_reflector_client: n.route_reflector_client,
        families,
        import: n.import,
        export: n.export,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
router_id: 192.0.2.2
asn: 65002
listen_port: 179            # 0 = do not listen
socket: /run/routelet/routelet.sock   # local status API (default shown)
neighbors:
  - address: 192.0.2.1
    asn: 65001
    passive: false
    hold_time: 90
    password: s3cret          # optional, TCP MD5
    ttl_security: false       # GTSM
    route_reflector_client: false
    families: [ipv4_unicast, ipv6_unicast]
originate:
  - prefix: 10.244.2.0/24
kernel:
  install: true               # best paths into the Linux FIB
"#;

    fn parse(t: &str) -> Result<SpeakerSettings, ConfigError> {
        parse_speaker(t, Path::new("test.yaml"))
    }

    #[test]
    fn issue_example_parses() {
        let s = parse(ISSUE_EXAMPLE).expect("example config is valid");
        assert_eq!(s.bgp.asn, 65002);
        assert_eq!(s.bgp.neighbors.len(), 1);
        let n = &s.bgp.neighbors[0];
        assert_eq!(n.password.as_deref(), Some("s3cret"));
        assert_eq!(n.families, vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
        assert_eq!(
            s.originate,
            vec!["10.244.2.0/24".parse::<Prefix>().expect("prefix")]
        );
        assert_eq!(s.bgp.listen.map(|l| l.port()), Some(179));
        assert!(s.kernel.install);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let t = ISSUE_EXAMPLE.replace("passive: false", "pasive: false");
        let e = parse(&t)
            .expect_err("unknown key must be rejected")
            .to_string();
        assert!(e.contains("pasive"), "{e}");
        assert!(e.contains("line 9"), "{e}");
    }

    #[test]
    fn bad_prefix_is_rejected_with_line() {
        let t = ISSUE_EXAMPLE.replace("10.244.2.0/24", "10.244.2.0/33");
        let e = parse(&t).expect_err("bad prefix").to_string();
        assert!(e.contains("line 16"), "{e}");
        let t = ISSUE_EXAMPLE.replace("10.244.2.0/24", "10.244.2.1/24");
        let e = parse(&t).expect_err("host bits").to_string();
        assert!(
            e.contains("originate[0].prefix") && e.contains(":16"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_neighbor_names_second_occurrence() {
        let t = ISSUE_EXAMPLE.replace(
            "originate:",
            "  - address: 192.0.2.1\n    asn: 65003\noriginate:",
        );
        let e = parse(&t).expect_err("duplicate neighbor").to_string();
        assert!(
            e.contains("neighbors[1].address") && e.contains("duplicate neighbor 192.0.2.1"),
            "{e}"
        );
        assert!(e.contains("test.yaml:15"), "{e}");
    }

    #[test]
    fn hold_time_and_other_semantic_errors() {
        let e = parse(&ISSUE_EXAMPLE.replace("hold_time: 90", "hold_time: 2")).expect_err("hold 2");
        assert!(e.to_string().contains("neighbors[0].hold_time"), "{e}");
        let e = parse(&ISSUE_EXAMPLE.replace("asn: 65002", "asn: 0")).expect_err("asn 0");
        assert!(e.to_string().contains("`asn`"), "{e}");
        let e = parse(&ISSUE_EXAMPLE.replace("router_id: 192.0.2.2", "router_id: 0.0.0.0"))
            .expect_err("router id 0");
        assert!(e.to_string().contains("router_id"), "{e}");
        let e = parse(&ISSUE_EXAMPLE.replace("asn: 65002", "asn: lots")).expect_err("type error");
        assert!(e.to_string().contains("line 3"), "{e}");
        assert!(parse("").is_err());
        assert!(parse(":::\n- [").is_err());
    }

    #[test]
    fn bfd_and_graceful_restart_keys() {
        let base =
            "router_id: 10.0.0.1\nasn: 65001\nneighbors:\n  - address: 10.0.0.2\n    asn: 65002\n";
        let s = parse(base).expect("no bfd");
        assert_eq!(s.bgp.neighbors[0].bfd, None);
        let gr = s
            .bgp
            .graceful_restart
            .expect("graceful restart is on by default");
        assert_eq!((gr.restart_time, gr.restarting), (120, false));
        let s = parse(&format!("{base}    bfd: true\n")).expect("bfd true");
        assert_eq!(s.bgp.neighbors[0].bfd, Some(BfdTimers::default()));
        let s = parse(&format!("{base}    bfd: false\n")).expect("bfd false");
        assert_eq!(s.bgp.neighbors[0].bfd, None);
        let s = parse(&format!(
            "{base}    bfd:\n      min_rx: 100\n      multiplier: 5\n"
        ))
        .expect("bfd timers");
        let t = s.bgp.neighbors[0].bfd.expect("bfd on");
        assert_eq!(
            (t.min_rx, t.min_tx, t.multiplier),
            (Duration::from_millis(100), Duration::from_millis(300), 5)
        );
        let e = parse(&format!("{base}    bfd:\n      multiplier: 0\n")).expect_err("mult 0");
        assert!(e.to_string().contains("neighbors[0].bfd.multiplier"), "{e}");
        assert!(e.to_string().contains(".yaml:7:"), "{e}");
        let e = parse(&format!("{base}    bfd:\n      min_tx: 5\n")).expect_err("5 ms");
        assert!(e.to_string().contains("bfd.min_tx"), "{e}");
        let s = parse(&format!("{base}graceful_restart:\n  enabled: false\n")).expect("gr off");
        assert_eq!(s.bgp.graceful_restart, None);
        let e = parse(&format!("{base}graceful_restart:\n  restart_time: 5000\n"))
            .expect_err("restart time > 4095");
        assert!(
            e.to_string().contains("graceful_restart.restart_time"),
            "{e}"
        );
        assert!(e.to_string().contains(".yaml:7:"), "{e}");
    }

    #[test]
    fn defaults() {
        let s = parse("router_id: 10.0.0.1\nasn: 65001\n").expect("minimal config");
        assert_eq!(s.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(s.bgp.max_paths, 4);
        assert_eq!(s.kernel.table, 254);
        assert!(s.bgp.neighbors.is_empty());
        let s = parse("router_id: 10.0.0.1\nasn: 65001\nlisten_port: 0\nmetrics_address: ''\n")
            .expect("no listen");
        assert!(s.bgp.listen.is_none());
        assert!(s.metrics.is_none());
    }

    /// Every speaker YAML example in the README parses and validates.
    #[test]
    fn readme_examples_are_valid() {
        let readme = include_str!("../../README.md");
        let mut found = 0;
        for block in readme.split("```yaml").skip(1) {
            let body = block.split("```").next().unwrap_or_default();
            if body.contains("router_id:") {
                found += 1;
                let error = parse(body).err().map(|e| e.to_string());
                assert_eq!(error, None, "README example does not load:\n{body}");
            }
        }
        assert!(found >= 1, "no speaker example found in README");
    }
}
