//! The `routelet.io/*` Node annotations routelet reads: parsing and validation. A bad value is
//! reported as a `Problem` on the node and ignored; the node's other annotations still count.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use bgp::config::NeighborConfig;

use super::model::{ObjectRef, Problem};
use crate::config::{neighbor_config, NeighborFile};

/// This node's AS number.
pub const ASN: &str = "routelet.io/asn";
/// This node is a route reflector; the value is its cluster id.
pub const ROUTE_REFLECTOR: &str = "routelet.io/route-reflector";
/// JSON list of extra BGP peers of this node (same fields as `peers` in the config).
pub const PEERS: &str = "routelet.io/peers";
/// The MAC of the node's IPv4 VXLAN device (written by its agent).
pub const VTEP_MAC: &str = "routelet.io/vtep-mac";
/// The MAC of the node's IPv6 VXLAN device (written by its agent).
pub const VTEP_MAC_V6: &str = "routelet.io/vtep-mac-v6";
/// Label: the node does not announce external and LoadBalancer IPs.
pub const EXCLUDE_FROM_EXTERNAL_LB: &str =
    "node.kubernetes.io/exclude-from-external-load-balancers";

/// The routing annotations of one node, valid values only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeAnnotations {
    pub asn: Option<u32>,
    pub route_reflector: Option<Ipv4Addr>,
    pub peers: Vec<NeighborConfig>,
    pub vtep_mac_v4: Option<[u8; 6]>,
    pub vtep_mac_v6: Option<[u8; 6]>,
}

/// Parses the annotations of node `node`; problems are appended to `problems`.
pub fn parse_node_annotations(
    node: &str,
    annotations: &BTreeMap<String, String>,
    problems: &mut Vec<Problem>,
) -> NodeAnnotations {
    let mut report = |message: String| {
        problems.push(Problem {
            object: ObjectRef::Node(node.to_string()),
            reason: "InvalidAnnotation",
            message,
        })
    };
    let mut out = NodeAnnotations::default();
    if let Some(v) = annotations.get(ASN) {
        match parse_asn(v) {
            Ok(asn) => out.asn = Some(asn),
            Err(e) => report(format!("{ASN}: {e}; using the configured default ASN")),
        }
    }
    if let Some(v) = annotations.get(ROUTE_REFLECTOR) {
        match parse_cluster_id(v) {
            Ok(id) => out.route_reflector = Some(id),
            Err(e) => report(format!(
                "{ROUTE_REFLECTOR}: {e}; the node is not made a route reflector"
            )),
        }
    }
    for (key, slot) in [
        (VTEP_MAC, &mut out.vtep_mac_v4),
        (VTEP_MAC_V6, &mut out.vtep_mac_v6),
    ] {
        if let Some(v) = annotations.get(key) {
            match super::forwarding::parse_vtep_mac(v) {
                Ok(mac) => *slot = Some(mac),
                Err(e) => report(format!(
                    "{key}: {e}; using the MAC derived from the node's VTEP address"
                )),
            }
        }
    }
    if let Some(v) = annotations.get(PEERS) {
        match serde_json::from_str::<Vec<serde_json::Value>>(v) {
            Err(e) => report(format!(
                "{PEERS}: not a JSON list of peers ({e}); no extra peers from this annotation"
            )),
            Ok(entries) => {
                let mut seen = HashSet::new();
                for (i, entry) in entries.into_iter().enumerate() {
                    let parsed = serde_json::from_value::<NeighborFile>(entry)
                        .map_err(|e| e.to_string())
                        .and_then(|f| {
                            neighbor_config(&f).map_err(|e| format!("`{}`: {}", e.field, e.message))
                        });
                    match parsed {
                        Ok(n) if !seen.insert(n.address) => report(format!(
                            "{PEERS}[{i}]: duplicate peer {}; ignored",
                            n.address
                        )),
                        Ok(n) => out.peers.push(n),
                        Err(e) => report(format!("{PEERS}[{i}]: {e}; this peer is ignored")),
                    }
                }
            }
        }
    }
    out
}

/// An AS number: 1..=4294967295, decimal or asdot (`1.10`), not AS_TRANS (23456).
pub fn parse_asn(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let asn = match t.split_once('.') {
        Some((hi, lo)) => {
            let hi: u16 = hi
                .parse()
                .map_err(|_| format!("`{t}` is not an AS number"))?;
            let lo: u16 = lo
                .parse()
                .map_err(|_| format!("`{t}` is not an AS number"))?;
            (u32::from(hi) << 16) | u32::from(lo)
        }
        None => t
            .parse::<u32>()
            .map_err(|_| format!("`{t}` is not an AS number (1..=4294967295)"))?,
    };
    match asn {
        0 => Err("AS 0 is reserved (RFC 7607)".into()),
        23456 => Err("AS 23456 is AS_TRANS and cannot be a node's AS (RFC 6793)".into()),
        _ => Ok(asn),
    }
}

/// A route-reflector cluster id: dotted quad (`244.0.0.1`) or a 32-bit number; not 0.
pub fn parse_cluster_id(text: &str) -> Result<Ipv4Addr, String> {
    let t = text.trim();
    let id = t
        .parse::<Ipv4Addr>()
        .or_else(|_| t.parse::<u32>().map(Ipv4Addr::from))
        .map_err(|_| {
            format!("`{t}` is not a cluster id (an IPv4-style dotted quad or a 32-bit number)")
        })?;
    if id.is_unspecified() {
        return Err("cluster id 0.0.0.0 is not allowed".into());
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn valid_annotations() {
        let mut problems = Vec::new();
        let a = parse_node_annotations(
            "n1",
            &annotations(&[
                (ASN, "65010"),
                (ROUTE_REFLECTOR, "244.0.0.1"),
                (
                    PEERS,
                    r#"[{"address": "192.0.2.1", "asn": 65000}, {"address": "2001:db8::1", "asn": 65000, "hold_time": 9}]"#,
                ),
            ]),
            &mut problems,
        );
        assert_eq!(problems, vec![]);
        assert_eq!(a.asn, Some(65010));
        assert_eq!(a.route_reflector, Some(Ipv4Addr::new(244, 0, 0, 1)));
        assert_eq!(a.peers.len(), 2);
        assert_eq!(a.peers[1].hold_time, 9);
    }

    /// Each malformed value is one problem naming the annotation; good values still count.
    #[test]
    fn malformed_annotations_are_problems() {
        let cases: &[(&str, &str, &str)] = &[
            (ASN, "0", "AS 0 is reserved"),
            (ASN, "4294967296", "not an AS number"),
            (ASN, "-5", "not an AS number"),
            (ASN, "23456", "AS_TRANS"),
            (ASN, "sixty", "not an AS number"),
            (ROUTE_REFLECTOR, "", "not a cluster id"),
            (ROUTE_REFLECTOR, "0.0.0.0", "not allowed"),
            (ROUTE_REFLECTOR, "1.2.3", "not a cluster id"),
            (PEERS, "{", "not a JSON list"),
            (PEERS, r#"{"address": "192.0.2.1"}"#, "not a JSON list"),
            (
                PEERS,
                r#"[{"address": "not-an-ip", "asn": 1}]"#,
                "routelet.io/peers[0]",
            ),
            (PEERS, r#"[{"address": "192.0.2.1", "asn": 0}]"#, "`asn`"),
            (
                PEERS,
                r#"[{"address": "192.0.2.1", "asn": 4294967296}]"#,
                "routelet.io/peers[0]",
            ),
            (
                PEERS,
                r#"[{"address": "192.0.2.1", "asn": 1, "colour": "red"}]"#,
                "colour",
            ),
            (
                PEERS,
                r#"[{"address": "192.0.2.1", "asn": 1, "hold_time": 2}]"#,
                "hold_time",
            ),
        ];
        for (key, value, expect) in cases {
            let mut problems = Vec::new();
            let a = parse_node_annotations("n1", &annotations(&[(key, value)]), &mut problems);
            assert_eq!(problems.len(), 1, "{key}={value}: {problems:?}");
            let p = &problems[0];
            assert_eq!(p.object, ObjectRef::Node("n1".into()));
            assert!(p.message.contains(key), "{key}={value}: {}", p.message);
            assert!(p.message.contains(expect), "{key}={value}: {}", p.message);
            assert_eq!(a, NodeAnnotations::default(), "{key}={value}");
        }
        // One bad peer among good ones: the good ones stay.
        let mut problems = Vec::new();
        let a = parse_node_annotations(
            "n1",
            &annotations(&[
                (ASN, "1.10"),
                (
                    PEERS,
                    r#"[{"address": "192.0.2.1", "asn": 65000}, {"address": "x", "asn": 1}, {"address": "192.0.2.1", "asn": 65001}]"#,
                ),
            ]),
            &mut problems,
        );
        assert_eq!(a.asn, Some(65546));
        assert_eq!(a.peers.len(), 1);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[1].message.contains("duplicate peer 192.0.2.1"));
    }
}
