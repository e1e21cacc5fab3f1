//! The network configuration the runtime passes on stdin: parsed from JSON and validated,
//! every error naming the field at fault (code 7), an unsupported `cniVersion` as code 1
//! and undecodable input as code 6.

use std::path::PathBuf;

use ipnet::IpNet;
use serde_json::Value;

use super::result::{code, CniError, CniResult, CURRENT_VERSION, SUPPORTED_VERSIONS};

/// Where allocation state lives when `ipam.dataDir` is not given.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/routelet/cni";

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

/// A validated network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    /// MTU of both veth ends; `None` leaves the kernel default.
    pub mtu: Option<u32>,
    /// Pod address ranges (network addresses), in configuration order; may be empty (ADD
    /// then fails with code 7, STATUS with code 50).
    pub ranges: Vec<IpNet>,
    pub data_dir: PathBuf,
    /// `prevResult` as given; parsed by [`NetConf::prev_result`] only where it is used (ADD,
    /// CHECK), so a cached result in a shape we do not read never fails a DEL.
    pub prev_result_raw: Option<Value>,
    /// `cni.dev/valid-attachments` (GC only); `None` when absent.
    pub valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// The parsed `prevResult`, if any (code 7 naming `prevResult` when it is malformed).
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        self.prev_result_raw
            .as_ref()
            .map(|v| {
                serde_json::from_value::<CniResult>(v.clone()).map_err(|e| invalid("prevResult", e))
            })
            .transpose()
    }
}

/// The `cniVersion` to put into an error answer for this input: the config's own when it is
/// one we support, else the newest.
pub fn answer_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| CURRENT_VERSION.to_string())
}

fn invalid(field: &str, problem: impl std::fmt::Display) -> CniError {
    CniError::new(code::INVALID_CONFIG, format!("{field}: {problem}"))
}

/// Network names (and so state directory names): spec rule, which also rules out `/` and `..`.
fn valid_name(name: &str) -> bool {
    super::env::valid_container_id(name)
}

fn string_field<'a>(obj: &'a Value, field: &str) -> Result<Option<&'a str>, CniError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(field, format!("must be a string, not {other}"))),
    }
}

/// Whether spec version `v` (e.g. "0.4.0") is at least `min` (major, minor).
pub fn version_at_least(v: &str, min: (u32, u32)) -> bool {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= min
}

/// Parse and validate the network configuration from stdin.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let root: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE,
            "the network configuration on stdin is not JSON",
        )
        .with_details(e.to_string())
    })?;
    if !root.is_object() {
        return Err(CniError::new(
            code::DECODE,
            "the network configuration on stdin is not a JSON object",
        ));
    }
    let cni_version = string_field(&root, "cniVersion")?
        .ok_or_else(|| invalid("cniVersion", "is missing"))?
        .to_string();
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {cni_version:?} is not supported (supported: {})",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let name = string_field(&root, "name")?
        .ok_or_else(|| invalid("name", "is missing"))?
        .to_string();
    if !valid_name(&name) {
        return Err(invalid(
            "name",
            format!("{name:?} must start with a letter or digit followed by letters, digits, '_', '.' or '-'"),
        ));
    }
    let plugin_type = string_field(&root, "type")?
        .ok_or_else(|| invalid("type", "is missing"))?
        .to_string();

    let ipam = match root.get("ipam") {
        Some(v @ Value::Object(_)) => v,
        None | Some(Value::Null) => return Err(invalid("ipam", "is missing")),
        Some(other) => return Err(invalid("ipam", format!("must be an object, not {other}"))),
    };
    let ranges = parse_ranges(ipam.get("ranges"))?;
    let data_dir = match string_field(ipam, "dataDir")
        .map_err(|_| invalid("ipam.dataDir", "must be a string"))?
    {
        None => PathBuf::from(DEFAULT_DATA_DIR),
        Some(d) => {
            let p = PathBuf::from(d);
            if !p.is_absolute() {
                return Err(invalid(
                    "ipam.dataDir",
                    format!("{d:?} is not an absolute path"),
                ));
            }
            p
        }
    };
    let mtu = parse_mtu(root.get("mtu"), &ranges)?;
    let prev_result_raw = root.get("prevResult").filter(|v| !v.is_null()).cloned();
    let attachments = root
        .get("cni.dev/valid-attachments")
        .map(|v| ("cni.dev/valid-attachments", v))
        .or_else(|| {
            root.get("cni.dev/attachments")
                .map(|v| ("cni.dev/attachments", v))
        });
    let valid_attachments = match attachments {
        None | Some((_, Value::Null)) => None,
        Some((field, v)) => Some(parse_attachments(field, v)?),
    };
    Ok(NetConf {
        cni_version,
        name,
        plugin_type,
        mtu,
        ranges,
        data_dir,
        prev_result_raw,
        valid_attachments,
    })
}

fn parse_ranges(v: Option<&Value>) -> Result<Vec<IpNet>, CniError> {
    const FIELD: &str = "ipam.ranges";
    let list = match v {
        None | Some(Value::Null) => return Err(invalid(FIELD, "is missing")),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(invalid(
                FIELD,
                format!("must be a list of CIDRs, not {other}"),
            ))
        }
    };
    let mut out: Vec<IpNet> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let field = format!("{FIELD}[{i}]");
        let s = item
            .as_str()
            .ok_or_else(|| invalid(&field, format!("must be a CIDR string, not {item}")))?;
        let net: IpNet = s
            .parse()
            .map_err(|_| invalid(&field, format!("{s:?} is not a CIDR")))?;
        if net.trunc() != net {
            return Err(invalid(
                &field,
                format!("{s:?} has host bits set (did you mean {}?)", net.trunc()),
            ));
        }
        let max_prefix = if net.addr().is_ipv4() { 30 } else { 126 };
        if net.prefix_len() > max_prefix {
            return Err(invalid(
                &field,
                format!("{s:?} is too small: prefix length must be at most /{max_prefix}"),
            ));
        }
        if let Some(other) = out.iter().find(|o| o.contains(&net) || net.contains(*o)) {
            return Err(invalid(&field, format!("{s:?} overlaps {other}")));
        }
        out.push(net);
    }
    Ok(out)
}

fn parse_mtu(v: Option<&Value>, ranges: &[IpNet]) -> Result<Option<u32>, CniError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let mtu = v
        .as_u64()
        .ok_or_else(|| invalid("mtu", format!("must be a positive integer, not {v}")))?;
    let min = if ranges.iter().any(|r| r.addr().is_ipv6()) {
        1280
    } else {
        68
    };
    if !(min..=65535).contains(&mtu) {
        return Err(invalid("mtu", format!("{mtu} is outside {min}..=65535")));
    }
    Ok(Some(mtu as u32))
}

fn parse_attachments(field: &str, v: &Value) -> Result<Vec<Attachment>, CniError> {
    let list = v
        .as_array()
        .ok_or_else(|| invalid(field, "must be a list of {containerID, ifname}"))?;
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            let get = |key: &str| {
                a.get(key)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        invalid(&format!("{field}[{i}].{key}"), "is missing or not a string")
                    })
            };
            Ok(Attachment {
                container_id: get("containerID")?,
                ifname: get("ifname")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn conf(v: Value) -> Result<NetConf, CniError> {
        parse(v.to_string().as_bytes())
    }

    fn base() -> Value {
        json!({"cniVersion":"1.1.0","name":"routelet","type":"routelet-cni","mtu":1450,
               "ipam":{"ranges":["10.244.1.0/24","2001:db8:244:1::/64"],"dataDir":"/var/lib/x"}})
    }

    #[test]
    fn the_agent_written_config_parses() {
        let c = conf(base()).unwrap();
        assert_eq!(c.name, "routelet");
        assert_eq!(c.mtu, Some(1450));
        assert_eq!(c.ranges.len(), 2);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/x"));
        assert!(c.prev_result().unwrap().is_none());
        assert!(c.valid_attachments.is_none());
    }

    #[test]
    fn optional_fields_and_runtime_additions() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("mtu");
        v["ipam"].as_object_mut().unwrap().remove("dataDir");
        v["runtimeConfig"] = json!({"portMappings": []});
        v["args"] = json!({"labels": {"a": "b"}});
        v["cni.dev/valid-attachments"] = json!([{"containerID":"c1","ifname":"eth0"}]);
        v["prevResult"] = json!({"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}],
            "ips":[{"address":"10.244.1.2/32","interface":0}]});
        let c = conf(v).unwrap();
        assert_eq!(c.mtu, None);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.valid_attachments.as_ref().unwrap()[0].container_id, "c1");
        assert_eq!(c.prev_result().unwrap().unwrap().ips.len(), 1);
    }

    #[test]
    fn a_malformed_prev_result_fails_only_where_it_is_read() {
        let mut v = base();
        v["prevResult"] = json!({"ip4": {"ip": "10.0.0.2/24"}, "ips": [{"address": "zz"}]});
        let c = conf(v).unwrap();
        let e = c.prev_result().unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.starts_with("prevResult"), "{}", e.msg);
    }

    fn err(v: Value) -> CniError {
        conf(v).unwrap_err()
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = base();
        v["ipam"].as_object_mut().unwrap().remove("ranges");
        let e = err(v);
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("ipam.ranges"), "{}", e.msg);

        let mut v = base();
        v["ipam"]["ranges"] = json!(["10.244.1.1/24"]);
        let e = err(v);
        assert!(e.msg.contains("ipam.ranges[0]"), "{}", e.msg);

        let mut v = base();
        v["ipam"]["ranges"] = json!([]);
        assert!(conf(v).unwrap().ranges.is_empty());

        let mut v = base();
        v["ipam"]["ranges"] = json!(["10.244.1.0/24", "10.244.0.0/16"]);
        assert!(err(v).msg.contains("overlaps"));

        let mut v = base();
        v["ipam"]["ranges"] = json!(["10.244.1.0/31"]);
        assert!(err(v).msg.contains("too small"));

        let mut v = base();
        v["mtu"] = json!(1000);
        assert!(err(v).msg.starts_with("mtu"));

        let mut v = base();
        v["name"] = json!("../x");
        assert!(err(v).msg.starts_with("name"));

        let mut v = base();
        v["ipam"]["dataDir"] = json!("relative");
        assert!(err(v).msg.starts_with("ipam.dataDir"));

        let mut v = base();
        v.as_object_mut().unwrap().remove("type");
        assert!(err(v).msg.starts_with("type"));

        let mut v = base();
        v["cni.dev/valid-attachments"] = json!([{"containerID": 1}]);
        assert!(err(v).msg.contains("containerID"));
    }

    #[test]
    fn version_and_decode_errors() {
        let mut v = base();
        v["cniVersion"] = json!("0.2.0");
        assert_eq!(err(v).code, 1);
        let mut v = base();
        v.as_object_mut().unwrap().remove("cniVersion");
        assert_eq!(err(v).code, 7);
        assert_eq!(parse(b"not json").unwrap_err().code, 6);
        assert_eq!(parse(b"[1]").unwrap_err().code, 6);
        assert_eq!(answer_version(b"{\"cniVersion\":\"0.4.0\"}"), "0.4.0");
        assert_eq!(answer_version(b"{\"cniVersion\":\"9.9.9\"}"), "1.1.0");
        assert_eq!(answer_version(b"garbage"), "1.1.0");
        assert!(version_at_least("0.4.0", (0, 4)));
        assert!(version_at_least("1.0.0", (0, 4)));
        assert!(!version_at_least("0.3.1", (0, 4)));
        assert!(!version_at_least("1.0.0", (1, 1)));
        assert!(version_at_least("1.1.0", (1, 1)));
    }
}
