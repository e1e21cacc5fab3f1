//! The datapath backends on a cluster of `routelet agent`s in network namespaces, two racks
//! (n1, n2 on rack 0; n3 on rack 1, routed through the hub): which path each node pair takes
//! (BGP-learned or host-gw direct routes on a rack, VXLAN or the fabric across racks), that
//! traffic between "pod" addresses (on each node's `lo`) flows, that same-rack traffic never
//! touches the VXLAN device, VTEP neighbour/FDB entries, repair of a route deleted by hand,
//! routes of other protocols left alone, and cleanup when a node is deleted.

mod interop;

use std::time::Duration;

use interop::cluster::{rack_gateway, Cluster, AGENT_CONFIG};
use interop::{ensure, parse_json, wait_until, Lab, Result};
use serde_json::{json, Value};

const RACKS: [usize; 3] = [0, 0, 1];
const VXLAN: &str = "vxlan.routelet";

fn start(lab: &Lab, extra: &str) -> Result<Cluster> {
    let config = format!("{AGENT_CONFIG}{extra}");
    let mut c = Cluster::with_racks(lab, &RACKS, &config)?;
    // A route of another protocol that must survive everything routelet does.
    c.nodes[0].ip(&[
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        &rack_gateway(0),
        "proto",
        "static",
    ])?;
    for i in 1..=RACKS.len() {
        c.create_node(i, json!({}))?;
        // The node's "pod": an address of its pod CIDR on lo.
        c.nodes[i - 1].ip(&["addr", "add", &format!("{}/32", pod_ip(i)), "dev", "lo"])?;
    }
    for i in 1..=RACKS.len() {
        c.start_agent(lab, i)?;
    }
    Ok(c)
}

fn pod_ip(i: usize) -> String {
    format!("10.244.{i}.5")
}

fn pod_cidr(i: usize) -> String {
    format!("10.244.{i}.0/24")
}

/// Node `i`'s proto-200 route for `prefix`: (gateway, device, onlink), if any.
fn route(c: &Cluster, i: usize, prefix: &str) -> Result<Option<(String, String, bool)>> {
    let out = c.nodes[i - 1].ip(&["-j", "route", "show", prefix, "proto", "200"])?;
    let v = parse_json(
        "ip -j route",
        if out.trim().is_empty() { "[]" } else { &out },
    )?;
    Ok(v.as_array().and_then(|a| a.first()).map(|r| {
        let flags = r["flags"].as_array().cloned().unwrap_or_default();
        (
            r["gateway"].as_str().unwrap_or("").to_string(),
            r["dev"].as_str().unwrap_or("").to_string(),
            flags.iter().any(|f| f == "onlink"),
        )
    }))
}

/// Waits until node `i` routes `prefix` via `gateway` on `dev` (`onlink` as given).
fn wait_route(
    c: &Cluster,
    i: usize,
    prefix: &str,
    gateway: &str,
    dev: &str,
    onlink: bool,
) -> Result<()> {
    let want = Some((gateway.to_string(), dev.to_string(), onlink));
    wait_until(
        &format!("n{i}: {prefix} via {gateway} dev {dev} (onlink {onlink})"),
        Duration::from_secs(30),
        |seen| {
            let got = route(c, i, prefix)?;
            *seen = format!("{got:?}");
            Ok(got == want)
        },
    )?;
    Ok(())
}

/// ping from node `from`'s pod address to node `to`'s; true when it answered.
fn ping(c: &Cluster, from: usize, to: usize) -> Result<bool> {
    let out = c.nodes[from - 1].exec_output(&[
        "ping",
        "-c",
        "1",
        "-W",
        "1",
        "-I",
        &pod_ip(from),
        &pod_ip(to),
    ])?;
    Ok(out.status.success())
}

fn wait_ping(c: &Cluster, from: usize, to: usize) -> Result<()> {
    let res = wait_until(
        &format!("ping n{from} -> n{to} pod"),
        Duration::from_secs(20),
        |_| ping(c, from, to),
    );
    if let Err(e) = res {
        let mut diag = String::new();
        for i in [from, to] {
            let ns = &c.nodes[i - 1];
            diag.push_str(&format!(
                "\n-- n{i} routes:\n{}\n-- n{i} addresses:\n{}",
                ns.ip(&["route", "show"]).unwrap_or_default(),
                ns.ip(&["-br", "addr"]).unwrap_or_default()
            ));
        }
        return Err(interop::LabError::Check(format!("{e}{diag}")));
    }
    Ok(())
}

/// Packets sent by node `i`'s VXLAN device (0 without one).
fn vxlan_tx(c: &Cluster, i: usize) -> Result<u64> {
    let out = c.nodes[i - 1].exec_output(&["ip", "-j", "-s", "link", "show", VXLAN])?;
    if !out.status.success() {
        return Ok(0);
    }
    let v = parse_json("ip -j -s link", &String::from_utf8_lossy(&out.stdout))?;
    Ok(v[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or(0))
}

/// (neighbour destinations, FDB destinations) on node `i`'s VXLAN device.
fn vtep_entries(c: &Cluster, i: usize) -> Result<(Vec<String>, Vec<String>)> {
    let ns = &c.nodes[i - 1];
    let neigh = ns.ip(&["-j", "neigh", "show", "dev", VXLAN])?;
    let neigh = parse_json(
        "ip -j neigh",
        if neigh.trim().is_empty() {
            "[]"
        } else {
            &neigh
        },
    )?;
    let fdb = ns.exec(&["bridge", "-j", "fdb", "show", "dev", VXLAN])?;
    let fdb = parse_json(
        "bridge -j fdb",
        if fdb.trim().is_empty() { "[]" } else { &fdb },
    )?;
    let field = |v: &Value, k: &str| -> Vec<String> {
        let mut out: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[k].as_str().map(str::to_string))
            .collect();
        out.sort();
        out
    };
    Ok((field(&neigh, "dst"), field(&fdb, "dst")))
}

/// Same-rack traffic leaves the VXLAN device's counter alone, cross-rack traffic moves it.
fn check_counters(c: &Cluster, same_rack_vxlan: bool) -> Result<()> {
    let before = vxlan_tx(c, 1)?;
    for _ in 0..5 {
        ensure(ping(c, 1, 2)?, "ping n1 -> n2")?;
    }
    let after_same = vxlan_tx(c, 1)?;
    for _ in 0..5 {
        ensure(ping(c, 1, 3)?, "ping n1 -> n3")?;
    }
    let after_cross = vxlan_tx(c, 1)?;
    if same_rack_vxlan {
        ensure(
            after_same >= before + 5,
            format!("same rack through VXLAN: tx {before} -> {after_same}"),
        )?;
    } else {
        ensure(
            after_same == before,
            format!("same-rack pings went through VXLAN: tx {before} -> {after_same}"),
        )?;
    }
    ensure(
        after_cross >= after_same + 5,
        format!("cross-rack pings not through VXLAN: tx {after_same} -> {after_cross}"),
    )
}

fn other_protocol_route_intact(c: &Cluster) -> Result<()> {
    let out = c.nodes[0].ip(&["route", "show", "10.99.0.0/24", "proto", "static"])?;
    ensure(
        out.contains("10.99.0.0/24"),
        format!("static route of another protocol gone: {out:?}"),
    )
}

#[test]
fn bgp_backend_routes_on_the_rack_and_tunnels_across_racks() -> Result<()> {
    Lab::run("dp-bgp", |lab| {
        let c = start(lab, "")?;
        // Same rack: the BGP-learned route to the node; across racks: VXLAN to its VTEP.
        wait_route(&c, 1, &pod_cidr(2), &c.addrs[1], "eth0", false)?;
        wait_route(&c, 1, &pod_cidr(3), "10.244.3.1", VXLAN, true)?;
        wait_route(&c, 3, &pod_cidr(1), "10.244.1.1", VXLAN, true)?;
        for (a, b) in [(1, 2), (1, 3), (3, 2), (2, 3)] {
            wait_ping(&c, a, b)?;
        }
        check_counters(&c, false)?;
        // One VTEP peer on n1: n3's, reached at n3's node address.
        wait_until("n1's VTEP entries", Duration::from_secs(10), |seen| {
            let e = vtep_entries(&c, 1)?;
            *seen = format!("{e:?}");
            Ok(e == (vec!["10.244.3.1".to_string()], vec![c.addrs[2].clone()]))
        })?;
        // The MAC is published on the node for the others.
        wait_until(
            "n1's vtep-mac annotation",
            Duration::from_secs(10),
            |seen| {
                let n = c.request("GET", "/api/v1/nodes/n1", None, "application/json")?;
                let mac = n["metadata"]["annotations"]["routelet.io/vtep-mac"].clone();
                *seen = mac.to_string();
                Ok(mac == json!("0a:58:0a:f4:01:01"))
            },
        )?;
        // A route deleted by hand is back within 2 s.
        c.nodes[0].ip(&["route", "del", &pod_cidr(3), "proto", "200"])?;
        let took = wait_until(
            "deleted VXLAN route repaired",
            Duration::from_secs(2),
            |_| Ok(route(&c, 1, &pod_cidr(3))?.is_some()),
        )?;
        println!("route repaired after {took:?}");
        // The VXLAN device deleted by hand: a link change, so device, VTEP entries and route
        // are back (with the new device's ifindex) within 2 s.
        c.nodes[0].ip(&["link", "del", VXLAN])?;
        let took = wait_until(
            "VXLAN device, entries and route back",
            Duration::from_secs(2),
            |seen| {
                let r = route(&c, 1, &pod_cidr(3))?;
                let e = vtep_entries(&c, 1).unwrap_or_default();
                *seen = format!("{r:?} {e:?}");
                Ok(r == Some(("10.244.3.1".into(), VXLAN.into(), true))
                    && e.1 == vec![c.addrs[2].clone()])
            },
        )?;
        println!("VXLAN device repaired after {took:?}");
        wait_ping(&c, 1, 3)?;
        // An FDB entry deleted by hand is back within 2 s (neighbour deletions are watched).
        let fdb = c.nodes[0].exec(&["bridge", "-j", "fdb", "show", "dev", VXLAN])?;
        let fdb = parse_json("bridge -j fdb", &fdb)?;
        let mac = fdb[0]["mac"].as_str().unwrap_or("").to_string();
        c.nodes[0].exec(&[
            "bridge",
            "fdb",
            "del",
            &mac,
            "dev",
            VXLAN,
            "dst",
            &c.addrs[2],
        ])?;
        let took = wait_until("FDB entry back", Duration::from_secs(2), |seen| {
            let e = vtep_entries(&c, 1)?;
            *seen = format!("{e:?}");
            Ok(e.1 == vec![c.addrs[2].clone()])
        })?;
        println!("FDB entry repaired after {took:?}");
        // Node n3 deleted: its route, neighbour and FDB entry go everywhere.
        c.request("DELETE", "/api/v1/nodes/n3", None, "application/json")?;
        for i in [1, 2] {
            wait_until(
                &format!("n{i} forgot n3"),
                Duration::from_secs(15),
                |seen| {
                    let r = route(&c, i, &pod_cidr(3))?;
                    let e = vtep_entries(&c, i)?;
                    *seen = format!("{r:?} {e:?}");
                    Ok(r.is_none() && e.0.is_empty() && e.1.is_empty())
                },
            )?;
        }
        other_protocol_route_intact(&c)
    })
}

#[test]
fn host_gw_backend_routes_directly_without_node_sessions() -> Result<()> {
    Lab::run("dp-hostgw", |lab| {
        let c = start(lab, "backend: host-gw\n")?;
        wait_route(&c, 1, &pod_cidr(2), &c.addrs[1], "eth0", false)?;
        wait_route(&c, 2, &pod_cidr(1), &c.addrs[0], "eth0", false)?;
        wait_route(&c, 1, &pod_cidr(3), "10.244.3.1", VXLAN, true)?;
        for (a, b) in [(1, 2), (2, 1), (1, 3), (3, 1)] {
            wait_ping(&c, a, b)?;
        }
        check_counters(&c, false)?;
        // No BGP between nodes.
        let st = c.agent(1)?.status()?;
        let nodes: Vec<&Value> = st["neighbors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| c.addrs.iter().any(|a| n["address"] == json!(a)))
            .collect();
        ensure(
            nodes.is_empty(),
            format!("host-gw node sessions: {nodes:?}"),
        )?;
        other_protocol_route_intact(&c)
    })
}

#[test]
fn vxlan_backend_tunnels_every_node() -> Result<()> {
    Lab::run("dp-vxlan", |lab| {
        let c = start(lab, "backend: vxlan\n")?;
        wait_route(&c, 1, &pod_cidr(2), "10.244.2.1", VXLAN, true)?;
        wait_route(&c, 1, &pod_cidr(3), "10.244.3.1", VXLAN, true)?;
        for (a, b) in [(1, 2), (2, 3), (3, 1)] {
            wait_ping(&c, a, b)?;
        }
        check_counters(&c, true)?;
        // The device: learning off, the configured VNI and port, MTU = underlay - 50.
        let out = c.nodes[0].ip(&["-d", "-j", "link", "show", VXLAN])?;
        let v = parse_json("ip -d -j link", &out)?;
        let data = &v[0]["linkinfo"]["info_data"];
        ensure(data["id"] == json!(4096), format!("VNI: {data}"))?;
        ensure(data["port"] == json!(4789), format!("port: {data}"))?;
        ensure(
            data["learning"] == json!(false),
            format!("learning: {data}"),
        )?;
        ensure(v[0]["mtu"] == json!(1450), format!("MTU: {}", v[0]["mtu"]))
    })
}

#[test]
fn routed_cross_subnet_goes_through_the_fabric() -> Result<()> {
    Lab::run("dp-routed", |lab| {
        let c = start(lab, "backend: host-gw\ncross_subnet: routed\n")?;
        // The hub plays the ToR that learned every pod CIDR.
        for i in 1..=RACKS.len() {
            c.hub
                .ip(&["route", "add", &pod_cidr(i), "via", &c.addrs[i - 1]])?;
        }
        wait_route(&c, 1, &pod_cidr(2), &c.addrs[1], "eth0", false)?;
        wait_route(&c, 1, &pod_cidr(3), &rack_gateway(0), "eth0", false)?;
        wait_route(&c, 3, &pod_cidr(1), &rack_gateway(1), "eth0", false)?;
        for (a, b) in [(1, 3), (3, 1), (2, 3)] {
            wait_ping(&c, a, b)?;
        }
        let out = c.nodes[0].exec_output(&["ip", "link", "show", VXLAN])?;
        ensure(
            !out.status.success(),
            "a VXLAN device exists although nothing may use it",
        )?;
        other_protocol_route_intact(&c)
    })
}

#[test]
fn bad_datapath_input_is_reported_and_the_rest_keeps_working() -> Result<()> {
    Lab::run("dp-bad", |lab| {
        // An underlay interface that does not exist: no VXLAN, an Event on each node, and the
        // same-rack routes (BGP) still work.
        let c = start(lab, "interface: nosuch0\n")?;
        wait_route(&c, 1, &pod_cidr(2), &c.addrs[1], "eth0", false)?;
        wait_ping(&c, 1, 2)?;
        wait_until(
            "VXLANUnderlay event on n1",
            Duration::from_secs(15),
            |seen| {
                let notes = c.event_notes("VXLANUnderlay", "n1")?;
                *seen = format!("{notes:?}");
                Ok(notes.iter().any(|n| n.contains("nosuch0")))
            },
        )?;
        ensure(
            route(&c, 1, &pod_cidr(3))?.is_none(),
            "a route to n3 without VXLAN",
        )?;
        // A node claiming another node's pod CIDR: reported on it, the owner's route stays.
        c.request(
            "PATCH",
            "/api/v1/nodes/n3",
            Some(&json!({"spec": {"podCIDR": "10.244.2.0/25", "podCIDRs": ["10.244.2.0/25"]}})),
            "application/merge-patch+json",
        )?;
        wait_until(
            "PodCIDROverlap event on n3",
            Duration::from_secs(15),
            |seen| {
                let notes = c.event_notes("PodCIDROverlap", "n3")?;
                *seen = format!("{notes:?}");
                Ok(!notes.is_empty())
            },
        )?;
        ensure(
            ping(&c, 1, 2)?,
            "n1 -> n2 still works after n3's bad pod CIDR",
        )?;
        let r = route(&c, 1, &pod_cidr(2))?;
        ensure(
            r == Some((c.addrs[1].clone(), "eth0".into(), false)),
            format!("n1's route to n2 changed: {r:?}"),
        )
    })
}

/// Runs the CNI plugin in node `i`'s namespace exactly as a runtime does (argv[0]
/// `routelet-cni`, CNI_* variables, the network config on stdin); its stdout as JSON.
fn cni_add(
    c: &Cluster,
    i: usize,
    container: &str,
    pod_ns: &str,
    conf_dir: &std::path::Path,
) -> Result<Value> {
    use std::io::Write;
    let list_text = std::fs::read_to_string(conf_dir.join("10-routelet.conflist"))
        .map_err(|e| interop::LabError::io("read the conflist", e))?;
    let list = parse_json("conflist", &list_text)?;
    let mut conf = list["plugins"][0].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    let mut child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            c.nodes[i - 1].name(),
            "bash",
            "-c",
            "exec -a routelet-cni \"$0\"",
            interop::routelet::BIN,
        ])
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", format!("/var/run/netns/{pod_ns}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| interop::LabError::io("spawn the CNI plugin", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(conf.to_string().as_bytes())
            .map_err(|e| interop::LabError::io("write the CNI config", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| interop::LabError::io("wait for the CNI plugin", e))?;
    parse_json("CNI result", &String::from_utf8_lossy(&out.stdout))
}

#[test]
fn a_node_whose_pod_blocks_fill_up_claims_another() -> Result<()> {
    Lab::run("dp-refill", |lab| {
        // /29 blocks: 5 addresses for pods (network, VTEP and broadcast are not handed out).
        let mut c = Cluster::with_racks(
            lab,
            &[0],
            &format!("{AGENT_CONFIG}pod_cidr_source: blocks\nblock_size: 29\n"),
        )?;
        c.request(
            "POST",
            "/api/v1/namespaces",
            Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "routelet-system"}})),
            "application/json",
        )?;
        c.create_node(1, json!({}))?;
        c.start_agent(lab, 1)?;
        let conf_dir = lab.path("n1-net.d");
        let blocks = |c: &Cluster| -> Result<Vec<String>> {
            let n = c.request("GET", "/api/v1/nodes/n1", None, "application/json")?;
            Ok(n["metadata"]["annotations"]["routelet.io/blocks"]
                .as_str()
                .map(|s| {
                    s.split(',')
                        .filter(|b| !b.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default())
        };
        wait_until(
            "the first block and the conflist",
            Duration::from_secs(15),
            |seen| {
                let b = blocks(&c)?;
                *seen = format!("{b:?}");
                Ok(b.len() == 1 && conf_dir.join("10-routelet.conflist").exists())
            },
        )?;
        let mut pods = Vec::new();
        let mut ips = Vec::new();
        for k in 0..5 {
            let pod = lab.netns()?;
            let res = cni_add(&c, 1, &format!("pod{k}"), pod.name(), &conf_dir)?;
            let ip = res["ips"][0]["address"].as_str().unwrap_or("").to_string();
            ensure(!ip.is_empty(), format!("ADD {k}: {res}"))?;
            ips.push(ip);
            pods.push(pod);
        }
        // Full: the agent claims a second block and lists it in the conflist.
        wait_until(
            "a second block in the conflist",
            Duration::from_secs(25),
            |seen| {
                let b = blocks(&c)?;
                let text = std::fs::read_to_string(conf_dir.join("10-routelet.conflist"))
                    .unwrap_or_default();
                *seen = format!("{b:?} {text}");
                Ok(b.len() == 2 && b.iter().all(|blk| text.contains(blk.as_str())))
            },
        )?;
        let pod = lab.netns()?;
        let res = cni_add(&c, 1, "pod5", pod.name(), &conf_dir)?;
        let ip = res["ips"][0]["address"].as_str().unwrap_or("").to_string();
        ensure(
            !ip.is_empty() && !ips.contains(&ip),
            format!("sixth pod: {res}"),
        )?;
        pods.push(pod);
        Ok(())
    })
}
