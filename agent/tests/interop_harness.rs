//! Checks of the interop lab library itself: every config generator's output is accepted by
//! the real daemon's own config checker, and the output parsers read real-format samples.
//! (The checkers are parse-only: no namespaces, no traffic.)

mod interop;

use std::process::Command;

use interop::bird::{parse_show_route, BirdConfig, BirdNeighbor};
use interop::exabgp::{parse_api_log, ExabgpConfig};
use interop::frr::{FrrConfig, FrrNeighbor};
use interop::gobgp::{GobgpConfig, GobgpNeighbor};
use interop::routelet::{metric_value, RlNeighbor, RouteletConfig};
use interop::{ensure, run, Result};

fn scratch(name: &str, contents: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(interop::unique_name("harness"));
    std::fs::create_dir_all(&dir).map_err(|e| interop::LabError::io("mkdir", e))?;
    let p = dir.join(name);
    std::fs::write(&p, contents).map_err(|e| interop::LabError::io("write", e))?;
    Ok(p)
}

fn cleanup(p: &std::path::Path) {
    if let Some(d) = p.parent() {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn bird_config_passes_bird_parser() -> Result<()> {
    let mut c = BirdConfig::new("10.0.0.2", 65002);
    let mut n = BirdNeighbor::new("rl", "10.0.0.1", 65001);
    n.password = Some("s3cret".into());
    n.passive = true;
    c.neighbors.push(n);
    c.neighbors
        .push(BirdNeighbor::new("rl6", "2001:db8::1", 65002));
    c.statics = vec!["10.245.0.0/24".into(), "2001:db8:245::/64".into()];
    let p = scratch("bird.conf", &c.render())?;
    let r = run(Command::new("bird").args(["-p", "-c"]).arg(&p));
    cleanup(&p);
    r.map(|_| ())
}

#[test]
fn frr_config_passes_bgpd_dry_run() -> Result<()> {
    let mut c = FrrConfig::new("10.0.0.2", 65002);
    let mut n = FrrNeighbor::new("10.0.0.1", 65001);
    n.password = Some("s3cret".into());
    n.hold_time = 3;
    c.neighbors.push(n);
    c.neighbors.push(FrrNeighbor::new("2001:db8::1", 65001));
    c.networks = vec!["10.245.0.0/24".into(), "2001:db8:245::/64".into()];
    let text = c.render_bgpd("t");
    let p = scratch("bgpd.conf", &text)?;
    let r = interop::frr::check_bgpd_config(&p, &text);
    cleanup(&p);
    r
}

#[test]
fn gobgp_config_passes_gobgpd_dry_run() -> Result<()> {
    let mut n = GobgpNeighbor::new("10.0.0.1", 65001);
    n.password = Some("s3cret".into());
    n.passive = true;
    n.ipv6 = true;
    let c = GobgpConfig {
        router_id: "10.0.0.2".into(),
        asn: 65003,
        neighbors: vec![n],
    };
    let p = scratch("gobgp.toml", &c.render())?;
    let r = run(Command::new("gobgpd")
        .args(["-t", "toml", "-d", "-f"])
        .arg(&p));
    cleanup(&p);
    r.map(|_| ())
}

#[test]
fn exabgp_config_passes_exabgp_validate() -> Result<()> {
    let mut c = ExabgpConfig::new("10.0.0.2", 65005, "10.0.0.1", 65001);
    c.password = Some("s3cret".into());
    c.routes = vec!["10.250.0.0/24".into(), "10.250.1.0/24".into()];
    let p = scratch("exabgp.conf", &c.render("/dev/null"))?;
    let mut cmd = Command::new("exabgp");
    cmd.arg("--validate").arg(&p);
    for (k, v) in interop::exabgp::ENV {
        cmd.env(k, v);
    }
    let r = run(&mut cmd);
    cleanup(&p);
    r.map(|_| ())
}

#[test]
fn routelet_config_is_the_contract_yaml() -> Result<()> {
    let mut c = RouteletConfig::new("10.0.0.1", 65001);
    let mut n = RlNeighbor::new("10.0.0.2", 65002);
    n.password = Some("s3cret".into());
    n.local_address = Some("10.0.0.1".into());
    c.neighbors.push(n);
    c.originate.push("10.244.1.0/24".into());
    let text = c.render("/tmp/x/routelet.sock");
    let v: serde_json::Value = serde_norway::from_str(&text)
        .map_err(|e| interop::LabError::Check(format!("YAML does not parse: {e}\n{text}")))?;
    let expect = serde_json::json!({
        "router_id": "10.0.0.1", "asn": 65001, "listen_port": 179, "listen_address": "::",
        "socket": "/tmp/x/routelet.sock", "metrics_address": "", "max_paths": 4,
        "neighbors": [{"address": "10.0.0.2", "asn": 65002, "passive": false, "hold_time": 9,
            "connect_retry": 1, "password": "s3cret", "ttl_security": false,
            "local_address": "10.0.0.1", "route_reflector_client": false,
            "families": ["ipv4_unicast"]}],
        "originate": [{"prefix": "10.244.1.0/24"}],
        "kernel": {"install": true, "table": 254}
    });
    ensure(v == expect, format!("rendered:\n{text}\nparsed: {v}"))?;
    let empty = RouteletConfig::new("10.0.0.1", 65001).render("/s");
    let v: serde_json::Value = serde_norway::from_str(&empty)
        .map_err(|e| interop::LabError::Check(format!("YAML does not parse: {e}\n{empty}")))?;
    ensure(
        v["neighbors"] == serde_json::json!([]) && v["originate"] == serde_json::json!([]),
        format!("empty lists: {empty}"),
    )
}

#[test]
fn parses_birdc_show_route() -> Result<()> {
    let out = "BIRD 2.0.12 ready.\nTable master4:\n10.245.0.0/24        blackhole [s4 07:57:51.886] * (200)\n\
               10.246.0.0/24        unicast [n1 07:58:10.975] * (100) [AS65002i]\n\tvia 10.0.0.2 on va\n\
               \x20                    unicast [n2 07:58:10.975] (100) [AS65003i]\n\tvia 10.0.0.3 on va\n\n\
               Table master6:\n2001:db8::/64        unicast [direct1 07:57:51.887] * (240)\n\tdev va\n";
    let got = parse_show_route(out);
    ensure(
        got == ["10.245.0.0/24", "10.246.0.0/24", "2001:db8::/64"],
        format!("{got:?}"),
    )
}

#[test]
fn replays_exabgp_api_log() -> Result<()> {
    let log = r#"{ "exabgp": "4.0.1", "type": "state", "neighbor": { "address": { "local": "10.0.0.4", "peer": "10.0.0.3" }, "state": "connected" } }
{ "exabgp": "4.0.1", "type": "state", "neighbor": { "address": { "local": "10.0.0.4", "peer": "10.0.0.3" }, "state": "up" } }
{ "exabgp": "4.0.1", "type": "update", "neighbor": { "direction": "receive", "message": { "update": { "attribute": { "origin": "incomplete" }, "announce": { "ipv4 unicast": { "10.0.0.3": [ { "nlri": "10.248.0.0/24" }, { "nlri": "10.248.1.0/24" } ] } } } } } }
{ "exabgp": "4.0.1", "type": "update", "neighbor": { "direction": "receive", "message": { "update": { "withdraw": { "ipv4 unicast": [ { "nlri": "10.248.0.0/24" } ] } } } } }
not json
"#;
    let v = parse_api_log(log);
    ensure(v.up() && v.ever_up(), format!("{v:?}"))?;
    ensure(
        v.prefixes.iter().cloned().collect::<Vec<_>>() == ["10.248.1.0/24"],
        format!("{v:?}"),
    )
}

#[test]
fn reads_prometheus_samples() -> Result<()> {
    let text = "# HELP routelet_bgp_connections_rejected_total x\n# TYPE routelet_bgp_connections_rejected_total counter\n\
                routelet_bgp_connections_rejected_total 3\nrouter_other 7\n\
                routelet_bgp_updates_total{dir=\"in\"} 2\nroutelet_bgp_updates_total{dir=\"out\"} 5\n";
    ensure(
        metric_value(text, "routelet_bgp_connections_rejected_total") == Some(3.0)
            && metric_value(text, "routelet_bgp_updates_total") == Some(7.0)
            && metric_value(text, "missing").is_none(),
        "prometheus parsing",
    )
}
