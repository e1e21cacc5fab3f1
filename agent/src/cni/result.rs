//! CNI wire types the plugin prints or reads back: the success `Result` (also parsed from
//! `prevResult`), the error object with its code, and the VERSION answer.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The newest spec version, used for answers when the config's own version is unknown.
pub const CURRENT_VERSION: &str = "1.1.0";
/// Spec versions this plugin accepts in `cniVersion` (results use the 1.x shape for all).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Well-known (0-99) and plugin-specific (>= 100) error codes.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Container unknown or does not exist (its network namespace is missing).
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid or missing necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (state directory, lock, sysctl files).
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (stdin is not JSON).
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// STATUS: plugin not available (state unusable or no free address).
    pub const NOT_AVAILABLE: u32 = 50;
    /// Plugin specific: no free address left in the ranges of one family.
    pub const EXHAUSTED: u32 = 100;
    /// Plugin specific: a netlink request (veth, address, route, neighbour) failed.
    pub const DATAPATH: u32 = 101;
    /// Plugin specific: CHECK found the attachment differs from `prevResult`.
    pub const CHECK_MISMATCH: u32 = 102;
}

/// A CNI error: printed as `{"cniVersion","code","msg","details"}` with exit status 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The error object for stdout.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({"cniVersion": cni_version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "code {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// One interface of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConfig {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// A success result (ADD output, `prevResult` input). Unknown keys are ignored when read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub dns: Value,
}

impl CniResult {
    /// The JSON for stdout. 0.3.x/0.4.0 results also carry `"version": "4"|"6"` per address
    /// (those versions require it); otherwise the shape is the 1.x one.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if self.dns.is_null() {
            v["dns"] = json!({});
        }
        if self.cni_version.starts_with("0.") {
            if let Some(ips) = v.get_mut("ips").and_then(Value::as_array_mut) {
                for (ip, cfg) in ips.iter_mut().zip(&self.ips) {
                    let family = if cfg.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    ip["version"] = Value::String(family.into());
                }
            }
        }
        v
    }
}

/// The VERSION answer.
pub fn version_json() -> Value {
    json!({"cniVersion": CURRENT_VERSION, "supportedVersions": SUPPORTED_VERSIONS})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn error_json_has_the_spec_fields_and_omits_empty_details() {
        let e = CniError::new(7, "ipam.ranges is missing");
        assert_eq!(
            e.to_json("1.0.0"),
            json!({"cniVersion":"1.0.0","code":7,"msg":"ipam.ranges is missing"})
        );
        let e = e.with_details("more");
        assert_eq!(e.to_json("1.1.0")["details"], "more");
    }

    #[test]
    fn result_round_trips_and_old_versions_get_ip_version() {
        let r = CniResult {
            cni_version: "0.4.0".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some("02:00:00:00:00:01".into()),
                mtu: None,
                sandbox: Some("/var/run/netns/x".into()),
            }],
            ips: vec![IpConfig {
                address: "10.244.1.2/32".parse().unwrap(),
                gateway: Some("169.254.1.1".parse().unwrap()),
                interface: Some(0),
            }],
            routes: vec![RouteConfig {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("169.254.1.1".parse().unwrap()),
            }],
            dns: Value::Null,
        };
        let v = r.to_json();
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["dns"], json!({}));
        let back: CniResult = serde_json::from_value(v).unwrap();
        assert_eq!(back.ips, r.ips);
        assert_eq!(back.interfaces, r.interfaces);
    }

    #[test]
    fn version_lists_all_supported() {
        let v = version_json();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["supportedVersions"].as_array().map(Vec::len), Some(5));
    }
}
