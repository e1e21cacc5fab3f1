//! Kernel integration tests of `agent::datapath` (run as root): two "node" namespaces joined
//! by a veth, each with routelet's VXLAN device, VTEP peers and a pod-ish address on `lo`;
//! traffic between the pod addresses must cross the tunnel. Namespaces are
//! `rld-<pid>-<tag>`, removed on drop (success or failure).

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agent::datapath::{
    classify, connected_subnets, dump_peers, ensure_vxlan, format_mac, link_by_name,
    link_with_address, remove_vxlan, route_lookup, set_forwarding, sync_peers, vtep_mac, vxlan_mtu,
    watch_links, ConnectedSubnet, DatapathError, Netlink, Reach, RouteLookup, VtepPeer, VxlanSpec,
};
use agent::datapath_config::{DEFAULT_VNI, DEFAULT_VXLAN_PORT, VXLAN_DEVICE_V4, VXLAN_DEVICE_V6};
use serde_json::Value;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A namespace `rld-<pid>-<tag><n>` with `lo` up, deleted on drop.
struct Ns {
    name: String,
}

impl Ns {
    fn new(tag: &str) -> Ns {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("rld-{}-{tag}{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Ns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn path(&self) -> PathBuf {
        agent::netns::named(&self.name)
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    fn try_ip(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn json(&self, tool: &str, args: &[&str]) -> Value {
        let mut full = vec!["-n", self.name.as_str(), "-j"];
        full.extend_from_slice(args);
        let out = run(tool, &full);
        if out.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&out).unwrap()
    }

    fn ip_json(&self, args: &[&str]) -> Value {
        self.json("ip", args)
    }

    fn link(&self, dev: &str) -> Value {
        self.ip_json(&["-d", "-s", "link", "show", "dev", dev])[0].clone()
    }

    /// Run `f(netlink)` inside this namespace on a current-thread runtime.
    fn run<T, F, Fut>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Netlink) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        agent::netns::run_in(&self.path(), move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let nl = Netlink::new().unwrap();
                f(nl).await
            })
        })
        .unwrap()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One simulated node: underlay address on `u0`, pod CIDR 10.244.<n>.0/24, VTEP
/// 10.244.<n>.0, pod-ish address 10.244.<n>.2/32 on `lo`.
struct Node {
    ns: Ns,
    underlay: IpAddr,
    vtep: IpAddr,
    pod: IpAddr,
    cidr: String,
    device: &'static str,
    v6: bool,
}

impl Node {
    fn peer(&self) -> VtepPeer {
        VtepPeer {
            vtep: self.vtep,
            mac: vtep_mac(self.vtep),
            underlay: self.underlay,
        }
    }

    /// ensure_vxlan with the spec the agent would compute (underlay = the link with our
    /// address, MTU from it).
    fn ensure(&self) -> (VxlanSpec, u32) {
        let (underlay, vtep, v6, device) = (self.underlay, self.vtep, self.v6, self.device);
        self.ns.run(move |nl| async move {
            let link = link_with_address(&nl, underlay).await.unwrap().unwrap();
            let spec = VxlanSpec {
                name: device.to_string(),
                vni: DEFAULT_VNI,
                port: DEFAULT_VXLAN_PORT,
                local: underlay,
                underlay_ifindex: link.ifindex,
                mtu: vxlan_mtu(link.mtu, v6),
                mac: vtep_mac(vtep),
                vtep,
            };
            let ifindex = ensure_vxlan(&nl, &spec).await.unwrap();
            (spec, ifindex)
        })
    }
}

/// Two nodes joined by a veth `u0` -- `u0`, IPv4 (10.0.0.1, .2) or IPv6 (2001:db8::1, ::2)
/// underlay.
fn two_nodes(tag: &str, v6: bool) -> (Node, Node) {
    let a = Ns::new(&format!("{tag}a"));
    let b = Ns::new(&format!("{tag}b"));
    a.ip(&[
        "link", "add", "u0", "type", "veth", "peer", "name", "u0", "netns", &b.name,
    ]);
    let mut nodes = Vec::new();
    for (n, ns) in [(1u8, a), (2u8, b)] {
        let underlay = if v6 {
            let addr = format!("2001:db8::{n}");
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                "u0",
                "nodad",
            ]);
            ip(&addr)
        } else {
            let addr = format!("10.0.0.{n}");
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "u0"]);
            ip(&addr)
        };
        ns.ip(&["link", "set", "u0", "up"]);
        let pod = format!("10.244.{n}.2");
        ns.ip(&["addr", "add", &format!("{pod}/32"), "dev", "lo"]);
        nodes.push(Node {
            ns,
            underlay,
            vtep: ip(&format!("10.244.{n}.0")),
            pod: ip(&pod),
            cidr: format!("10.244.{n}.0/24"),
            device: if v6 { VXLAN_DEVICE_V6 } else { VXLAN_DEVICE_V4 },
            v6,
        });
    }
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    (a, b)
}

/// Echo 5 bytes over TCP from `from`'s pod address to `to`'s pod address.
fn tcp_echo(from: &Node, to: &Node, port: u16) -> Result<Vec<u8>, String> {
    let listen = SocketAddr::new(to.pod, port);
    let listener = agent::netns::run_in(&to.ns.path(), move || TcpListener::bind(listen))
        .unwrap()
        .unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
    });
    let source = SocketAddr::new(from.pod, 0);
    let reply = agent::netns::run_in(&from.ns.path(), move || -> Result<Vec<u8>, String> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(listen),
            socket2::Type::STREAM,
            None,
        )
        .map_err(|e| e.to_string())?;
        socket.bind(&source.into()).map_err(|e| e.to_string())?;
        socket
            .connect_timeout(&listen.into(), Duration::from_secs(5))
            .map_err(|e| format!("connect {listen} from {source}: {e}"))?;
        let mut stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        stream.write_all(b"hello").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).map_err(|e| e.to_string())?;
        Ok(buf.to_vec())
    })
    .unwrap();
    if reply.is_ok() {
        server.join().unwrap();
    }
    reply
}

fn stat(link: &Value, dir: &str) -> u64 {
    link["stats64"][dir]["packets"].as_u64().unwrap()
}

/// The whole VXLAN datapath between two nodes over an IPv4 or IPv6 underlay.
fn tunnel_between_two_nodes(v6: bool) {
    let (a, b) = two_nodes(if v6 { "t6" } else { "t4" }, v6);
    let (spec_a, idx_a) = a.ensure();
    let (_, idx_b) = b.ensure();

    // The device as `ip -d link` sees it.
    let link = a.ns.link(a.device);
    let data = &link["linkinfo"]["info_data"];
    assert_eq!(link["linkinfo"]["info_kind"], "vxlan", "{link}");
    assert_eq!(data["id"], DEFAULT_VNI, "{link}");
    assert_eq!(data["port"], DEFAULT_VXLAN_PORT, "{link}");
    assert_eq!(data["learning"], false, "{link}");
    let local_key = if v6 { "local6" } else { "local" };
    assert_eq!(data[local_key], a.underlay.to_string(), "{link}");
    assert_eq!(data["link"], "u0", "{link}");
    assert_eq!(link["mtu"], if v6 { 1430 } else { 1450 }, "{link}");
    assert_eq!(link["address"], format_mac(&vtep_mac(a.vtep)), "{link}");
    assert_eq!(link["ifindex"], idx_a, "{link}");
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    let addrs = a.ns.ip_json(&["-4", "addr", "show", "dev", a.device]);
    let addr = &addrs[0]["addr_info"][0];
    assert_eq!(addr["local"], a.vtep.to_string(), "{addrs}");
    assert_eq!(addr["prefixlen"], 32, "{addrs}");
    assert_eq!(
        a.ns.ip_json(&["-4", "route", "show", "dev", a.device]),
        Value::Array(vec![]),
        "no prefix route for the VTEP address"
    );

    // Idempotent: same ifindex, nothing changed.
    let (_, again) = a.ensure();
    assert_eq!(again, idx_a);
    assert_eq!(a.ns.link(a.device)["mtu"], spec_a.mtu);

    // Peers both ways, then the routes the FIB task would install.
    for (node, other, ifindex) in [(&a, &b, idx_a), (&b, &a, idx_b)] {
        let desired: BTreeSet<VtepPeer> = [other.peer()].into();
        let report = node
            .ns
            .run(move |nl| async move { sync_peers(&nl, ifindex, &desired).await.unwrap() });
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(
            (report.neighbours_added, report.fdb_added, report.unchanged),
            (1, 1, 0)
        );
        node.ns.ip(&[
            "route",
            "add",
            &other.cidr,
            "via",
            &other.vtep.to_string(),
            "dev",
            node.device,
            "onlink",
        ]);
    }
    let neigh = a.ns.ip_json(&["neigh", "show", "dev", a.device]);
    assert!(
        neigh
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["dst"] == b.vtep.to_string()
                && n["lladdr"] == format_mac(&vtep_mac(b.vtep))
                && n["state"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s == "PERMANENT"))),
        "{neigh}"
    );
    let fdb = a.ns.json("bridge", &["fdb", "show", "dev", a.device]);
    assert!(
        fdb.as_array().unwrap().iter().any(
            |f| f["mac"] == format_mac(&vtep_mac(b.vtep)) && f["dst"] == b.underlay.to_string()
        ),
        "{fdb}"
    );
    let dumped =
        a.ns.run(move |nl| async move { dump_peers(&nl, idx_a).await.unwrap() });
    assert_eq!(dumped, vec![b.peer()]);

    // Traffic between the pod addresses goes through the tunnel.
    let before_a = a.ns.link(a.device);
    let before_b = b.ns.link(b.device);
    assert_eq!(tcp_echo(&a, &b, 7000), Ok(b"hello".to_vec()));
    let after_a = a.ns.link(a.device);
    let after_b = b.ns.link(b.device);
    assert!(stat(&after_a, "tx") > stat(&before_a, "tx"), "{after_a}");
    assert!(stat(&after_b, "rx") > stat(&before_b, "rx"), "{after_b}");
    assert!(stat(&after_a, "rx") > stat(&before_a, "rx"), "{after_a}");

    // A second sync changes nothing.
    let desired: BTreeSet<VtepPeer> = [b.peer()].into();
    let report =
        a.ns.run(move |nl| async move { sync_peers(&nl, idx_a, &desired).await.unwrap() });
    assert_eq!((report.changes(), report.unchanged), (0, 1), "{report:?}");

    // Entries on another device are never touched: a foreign VXLAN device with its own
    // neighbour and FDB entry.
    let other_local = if v6 { "2001:db8::1" } else { "10.0.0.1" };
    a.ns.ip(&[
        "link",
        "add",
        "other0",
        "type",
        "vxlan",
        "id",
        "77",
        "dstport",
        "4789",
        "dev",
        "u0",
        "local",
        other_local,
    ]);
    a.ns.ip(&["link", "set", "other0", "up"]);
    a.ns.ip(&[
        "neigh",
        "add",
        "10.244.98.0",
        "lladdr",
        "0a:00:00:00:00:98",
        "dev",
        "other0",
        "nud",
        "permanent",
    ]);
    run(
        "bridge",
        &[
            "-n",
            &a.ns.name,
            "fdb",
            "append",
            "0a:00:00:00:00:98",
            "dev",
            "other0",
            "dst",
            &b.underlay.to_string(),
        ],
    );
    // Empty desired set: our entries go, FDB before neighbour.
    let report =
        a.ns.run(move |nl| async move { sync_peers(&nl, idx_a, &BTreeSet::new()).await.unwrap() });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.fdb_removed, report.neighbours_removed), (1, 1));
    let neigh = a.ns.ip_json(&["neigh", "show", "dev", a.device]);
    assert!(
        !neigh
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["dst"] == b.vtep.to_string()),
        "{neigh}"
    );
    let fdb = a.ns.json("bridge", &["fdb", "show", "dev", a.device]);
    assert!(
        !fdb.as_array()
            .unwrap()
            .iter()
            .any(|f| f["mac"] == format_mac(&vtep_mac(b.vtep))),
        "{fdb}"
    );
    let foreign_neigh = a.ns.ip_json(&["neigh", "show", "dev", "other0"]);
    assert!(
        foreign_neigh
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["dst"] == "10.244.98.0"),
        "{foreign_neigh}"
    );
    let foreign_fdb = a.ns.json("bridge", &["fdb", "show", "dev", "other0"]);
    assert!(
        foreign_fdb
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["mac"] == "0a:00:00:00:00:98"),
        "{foreign_fdb}"
    );
    // Without peers the tunnel carries nothing any more.
    assert!(tcp_echo(&a, &b, 7001).is_err());

    // remove_vxlan deletes our device only.
    let device = a.device;
    a.ns.run(move |nl| async move { remove_vxlan(&nl, device).await.unwrap() });
    assert!(!a.ns.try_ip(&["link", "show", "dev", a.device]));
    assert!(a.ns.try_ip(&["link", "show", "dev", "other0"]));
}

#[test]
fn vxlan_tunnel_over_ipv4_underlay() {
    tunnel_between_two_nodes(false);
}

#[test]
fn vxlan_tunnel_over_ipv6_underlay() {
    tunnel_between_two_nodes(true);
}

#[test]
fn ensure_vxlan_repairs_drift_and_recreates_on_identity_change() {
    let (a, _b) = two_nodes("rp", false);
    let (spec, ifindex) = a.ensure();

    // MTU, MAC, address and up state drift: fixed in place, same ifindex.
    a.ns.ip(&["link", "set", a.device, "mtu", "1300"]);
    a.ns.ip(&["link", "set", a.device, "address", "0a:00:00:00:00:01"]);
    a.ns.ip(&["addr", "del", &format!("{}/32", a.vtep), "dev", a.device]);
    a.ns.ip(&["addr", "add", "10.244.77.0/24", "dev", a.device]);
    a.ns.ip(&["link", "set", a.device, "down"]);
    let (_, again) = a.ensure();
    assert_eq!(again, ifindex);
    let link = a.ns.link(a.device);
    assert_eq!(link["mtu"], 1450, "{link}");
    assert_eq!(link["address"], format_mac(&spec.mac), "{link}");
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    let addrs = a.ns.ip_json(&["-4", "addr", "show", "dev", a.device]);
    let locals: Vec<String> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("{}/{}", i["local"].as_str().unwrap(), i["prefixlen"]))
        .collect();
    assert_eq!(locals, vec![format!("{}/32", a.vtep)]);

    // A different VNI: recreated with the new one.
    let mut changed = spec.clone();
    changed.vni = 4097;
    let new_index =
        a.ns.run(move |nl| async move { ensure_vxlan(&nl, &changed).await.unwrap() });
    let link = a.ns.link(a.device);
    assert_eq!(link["linkinfo"]["info_data"]["id"], 4097, "{link}");
    assert_eq!(link["ifindex"], new_index);
    assert_eq!(
        a.ns.ip_json(&["-d", "link", "show", "type", "vxlan"])
            .as_array()
            .unwrap()
            .len(),
        1,
        "the old device is gone"
    );

    // A device of our name that is not VXLAN is left alone.
    let device = a.device;
    a.ns.run(move |nl| async move { remove_vxlan(&nl, device).await.unwrap() });
    a.ns.ip(&["link", "add", a.device, "type", "bridge"]);
    let spec2 = spec.clone();
    let err =
        a.ns.run(move |nl| async move { ensure_vxlan(&nl, &spec2).await.err() });
    assert!(
        matches!(err, Some(DatapathError::NotVxlan { .. })),
        "{err:?}"
    );
    assert_eq!(
        a.ns.link(a.device)["linkinfo"]["info_kind"],
        "bridge",
        "untouched"
    );
}

#[test]
fn vni_and_port_clash_is_a_conflict_naming_the_other_device() {
    let (a, _b) = two_nodes("cf", false);
    a.ns.ip(&[
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "4096",
        "dstport",
        "4789",
        "dev",
        "u0",
        "local",
        "10.0.0.1",
    ]);
    let (underlay, vtep) = (a.underlay, a.vtep);
    let err = a.ns.run(move |nl| async move {
        let link = link_with_address(&nl, underlay).await.unwrap().unwrap();
        let spec = VxlanSpec {
            name: VXLAN_DEVICE_V4.into(),
            vni: DEFAULT_VNI,
            port: DEFAULT_VXLAN_PORT,
            local: underlay,
            underlay_ifindex: link.ifindex,
            mtu: 1450,
            mac: vtep_mac(vtep),
            vtep,
        };
        ensure_vxlan(&nl, &spec).await.err()
    });
    match &err {
        Some(DatapathError::VxlanConflict {
            device,
            vni,
            port,
            other,
            ..
        }) => {
            assert_eq!(device, VXLAN_DEVICE_V4);
            assert_eq!((*vni, *port), (DEFAULT_VNI, DEFAULT_VXLAN_PORT));
            assert_eq!(other, "flannel.1");
            let text = err.as_ref().unwrap().to_string();
            assert!(
                text.contains("flannel.1") && text.contains("4096"),
                "{text}"
            );
        }
        other => panic!("expected a VxlanConflict, got {other:?}"),
    }
    assert!(
        !a.ns.try_ip(&["link", "show", "dev", VXLAN_DEVICE_V4]),
        "no half-created device"
    );
    assert!(a.ns.try_ip(&["link", "show", "dev", "flannel.1"]));

    // A collect-metadata device on the port takes every VNI (the kernel would refuse to
    // set ours up): also a conflict, named.
    a.ns.ip(&["link", "del", "flannel.1"]);
    a.ns.ip(&[
        "link", "add", "ext0", "type", "vxlan", "external", "dstport", "4789",
    ]);
    a.ns.ip(&["link", "set", "ext0", "up"]);
    let err = a.ns.run(move |nl| async move {
        let link = link_with_address(&nl, underlay).await.unwrap().unwrap();
        let spec = VxlanSpec {
            name: VXLAN_DEVICE_V4.into(),
            vni: DEFAULT_VNI,
            port: DEFAULT_VXLAN_PORT,
            local: underlay,
            underlay_ifindex: link.ifindex,
            mtu: 1450,
            mac: vtep_mac(vtep),
            vtep,
        };
        ensure_vxlan(&nl, &spec).await.err()
    });
    assert!(
        matches!(&err, Some(DatapathError::VxlanConflict { other, .. }) if other == "ext0"),
        "{err:?}"
    );
    assert!(!a.ns.try_ip(&["link", "show", "dev", VXLAN_DEVICE_V4]));

    // A stale device of ours (other VNI) is not deleted when its replacement would
    // conflict: the error changes nothing.
    a.ns.ip(&["link", "del", "ext0"]);
    a.ns.ip(&[
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "4096",
        "dstport",
        "4789",
        "dev",
        "u0",
        "local",
        "10.0.0.1",
    ]);
    a.ns.ip(&[
        "link",
        "add",
        VXLAN_DEVICE_V4,
        "type",
        "vxlan",
        "id",
        "5",
        "dstport",
        "4789",
        "dev",
        "u0",
        "local",
        "10.0.0.1",
    ]);
    let stale_index = a.ns.link(VXLAN_DEVICE_V4)["ifindex"].clone();
    let err = a.ns.run(move |nl| async move {
        let link = link_with_address(&nl, underlay).await.unwrap().unwrap();
        let spec = VxlanSpec {
            name: VXLAN_DEVICE_V4.into(),
            vni: DEFAULT_VNI,
            port: DEFAULT_VXLAN_PORT,
            local: underlay,
            underlay_ifindex: link.ifindex,
            mtu: 1450,
            mac: vtep_mac(vtep),
            vtep,
        };
        ensure_vxlan(&nl, &spec).await.err()
    });
    assert!(
        matches!(&err, Some(DatapathError::VxlanConflict { other, .. }) if other == "flannel.1"),
        "{err:?}"
    );
    let ours = a.ns.link(VXLAN_DEVICE_V4);
    assert_eq!(ours["ifindex"], stale_index);
    assert_eq!(ours["linkinfo"]["info_data"]["id"], 5, "{ours}");
}

#[test]
fn reachability_connected_subnets_route_lookup_and_links() {
    let ns = Ns::new("re");
    // r0 (up, peer up): a connected /24 and /64; d0 (peer down): not usable.
    ns.ip(&["link", "add", "r0", "type", "veth", "peer", "name", "r1"]);
    ns.ip(&["addr", "add", "10.1.0.1/24", "dev", "r0"]);
    ns.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        "r0",
        "nodad",
    ]);
    ns.ip(&["link", "set", "r1", "up"]);
    ns.ip(&["link", "set", "r0", "up"]);
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["addr", "add", "10.2.0.1/24", "dev", "d0"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["addr", "add", "10.244.9.2/32", "dev", "lo"]);
    ns.ip(&["route", "add", "10.50.0.0/16", "via", "10.1.0.254"]);
    let r0 = ns.link("r0")["ifindex"].as_u64().unwrap() as u32;

    let (subnets, lookups, links) = ns.run(move |nl| async move {
        // Our own VXLAN device and its VTEP do not count as connected.
        let underlay = link_with_address(&nl, ip("10.1.0.1"))
            .await
            .unwrap()
            .unwrap();
        let spec = VxlanSpec {
            name: VXLAN_DEVICE_V4.into(),
            vni: DEFAULT_VNI,
            port: DEFAULT_VXLAN_PORT,
            local: ip("10.1.0.1"),
            underlay_ifindex: underlay.ifindex,
            mtu: vxlan_mtu(underlay.mtu, false),
            mac: vtep_mac(ip("10.244.9.0")),
            vtep: ip("10.244.9.0"),
        };
        ensure_vxlan(&nl, &spec).await.unwrap();
        let subnets = connected_subnets(&nl).await.unwrap();
        let mut lookups = Vec::new();
        for dst in ["10.50.1.1", "10.1.0.7", "198.51.100.1", "2001:db8:1::9"] {
            lookups.push(route_lookup(&nl, ip(dst)).await.unwrap());
        }
        let links = (
            underlay,
            link_with_address(&nl, ip("10.9.9.9")).await.unwrap(),
            link_by_name(&nl, "d0").await.unwrap(),
            link_by_name(&nl, "nope0").await.unwrap(),
        );
        (subnets, lookups, links)
    });
    let want: Vec<ConnectedSubnet> = ["10.1.0.0/24", "2001:db8:1::/64"]
        .iter()
        .map(|p| ConnectedSubnet {
            prefix: p.parse().unwrap(),
            ifindex: r0,
        })
        .collect();
    assert_eq!(subnets, want);
    assert_eq!(
        classify(ip("10.1.0.7"), &subnets),
        Reach::Direct { ifindex: r0 }
    );
    assert_eq!(classify(ip("10.50.1.1"), &subnets), Reach::NotConnected);
    assert_eq!(classify(ip("10.2.0.9"), &subnets), Reach::NotConnected);
    assert_eq!(
        lookups,
        vec![
            Some(RouteLookup {
                gateway: Some(ip("10.1.0.254")),
                ifindex: r0
            }),
            Some(RouteLookup {
                gateway: None,
                ifindex: r0
            }),
            None,
            Some(RouteLookup {
                gateway: None,
                ifindex: r0
            }),
        ]
    );
    let (underlay, missing, d0, nope) = links;
    assert_eq!(underlay.name, "r0");
    assert_eq!(underlay.ifindex, r0);
    assert_eq!(underlay.mtu, 1500);
    assert!(underlay.up);
    assert_eq!(underlay.kind.as_deref(), Some("veth"));
    assert_eq!(missing, None);
    let d0 = d0.unwrap();
    assert!(!d0.up, "peer down: no carrier");
    assert_eq!(nope, None);
}

#[test]
fn link_watch_reports_changes_and_forwarding_is_set_per_namespace() {
    let ns = Ns::new("wa");
    let name = ns.name.clone();
    let (got, forwarding) = ns.run(move |_nl| async move {
        let mut rx = watch_links().unwrap();
        run(
            "ip",
            &[
                "-n", &name, "link", "add", "w0", "type", "veth", "peer", "name", "w1",
            ],
        );
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        set_forwarding().unwrap();
        let v4 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        let v6 = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding").unwrap();
        (
            got.ok().flatten(),
            (v4.trim().to_string(), v6.trim().to_string()),
        )
    });
    assert_eq!(got, Some(()));
    assert_eq!(forwarding, ("1".to_string(), "1".to_string()));
}

#[test]
fn ipv6_overlay_with_routes_installed_before_the_peers() {
    // IPv6 VTEPs and pod addresses over an IPv6 underlay; the FIB routes come first (as
    // when the route task is faster than the datapath), so the kernel has already made
    // failed neighbour entries for the VTEPs by the time the peers are synced.
    let (mut a, mut b) = two_nodes("o6", true);
    for (n, node) in [(1, &mut a), (2, &mut b)] {
        node.vtep = ip(&format!("2001:db8:244:{n}::"));
        node.pod = ip(&format!("2001:db8:244:{n}::2"));
        node.cidr = format!("2001:db8:244:{n}::/64");
        node.ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/128", node.pod),
            "dev",
            "lo",
            "nodad",
        ]);
    }
    let (_, idx_a) = a.ensure();
    let (_, idx_b) = b.ensure();
    let addrs =
        a.ns.ip_json(&["-6", "addr", "show", "dev", a.device, "scope", "global"]);
    // (`ip -j` prints an empty object for the filtered-out link-local address.)
    let info: Vec<&Value> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("local").is_some())
        .collect();
    assert_eq!(info.len(), 1, "{addrs}");
    assert_eq!(info[0]["local"], a.vtep.to_string(), "{addrs}");
    assert_eq!(info[0]["prefixlen"], 128, "{addrs}");
    let routes = a.ns.ip_json(&["-6", "route", "show", "dev", a.device]);
    assert!(
        !routes.as_array().unwrap().iter().any(|r| r["dst"]
            .as_str()
            .is_some_and(|d| d.starts_with("2001:db8:244"))),
        "no prefix route for the VTEP address: {routes}"
    );
    for (node, other) in [(&a, &b), (&b, &a)] {
        node.ns.ip(&[
            "-6",
            "route",
            "add",
            &other.cidr,
            "via",
            &other.vtep.to_string(),
            "dev",
            node.device,
            "onlink",
        ]);
    }
    assert!(tcp_echo(&a, &b, 7100).is_err(), "no peers yet");
    for (node, other, ifindex) in [(&a, &b, idx_a), (&b, &a, idx_b)] {
        let desired: BTreeSet<VtepPeer> = [VtepPeer::new(other.vtep, other.underlay)].into();
        let report = node
            .ns
            .run(move |nl| async move { sync_peers(&nl, ifindex, &desired).await.unwrap() });
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!((report.neighbours_added, report.fdb_added), (1, 1));
    }
    assert_eq!(tcp_echo(&a, &b, 7101), Ok(b"hello".to_vec()));
    let dumped =
        a.ns.run(move |nl| async move { dump_peers(&nl, idx_a).await.unwrap() });
    assert_eq!(dumped, vec![b.peer()]);

    // The node moves to another underlay address: one replace of the FDB entry.
    b.ns.ip(&["-6", "addr", "add", "2001:db8::22/64", "dev", "u0", "nodad"]);
    let moved = VtepPeer::new(b.vtep, ip("2001:db8::22"));
    let desired: BTreeSet<VtepPeer> = [moved].into();
    let report =
        a.ns.run(move |nl| async move { sync_peers(&nl, idx_a, &desired).await.unwrap() });
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        (report.fdb_replaced, report.changes(), report.unchanged),
        (1, 1, 0),
        "{report:?}"
    );
    let fdb = a.ns.json("bridge", &["fdb", "show", "dev", a.device]);
    let dsts: Vec<&Value> = fdb
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["mac"] == format_mac(&moved.mac))
        .map(|f| &f["dst"])
        .collect();
    assert_eq!(dsts, vec!["2001:db8::22"], "{fdb}");
    assert_eq!(tcp_echo(&a, &b, 7102), Ok(b"hello".to_vec()));
}

#[test]
fn a_failed_create_leaves_no_device_behind() {
    // A userspace socket on the VXLAN port: the kernel creates the device but cannot set it
    // up (EADDRINUSE). No other device to name: a kernel error naming ours, and no device.
    let (a, _b) = two_nodes("hf", false);
    let _udp = agent::netns::run_in(&a.ns.path(), || {
        std::net::UdpSocket::bind(("0.0.0.0", DEFAULT_VXLAN_PORT))
    })
    .unwrap()
    .unwrap();
    let (underlay, vtep) = (a.underlay, a.vtep);
    let err =
        a.ns.run(move |nl| async move {
            let link = link_with_address(&nl, underlay).await.unwrap().unwrap();
            let spec = VxlanSpec {
                name: VXLAN_DEVICE_V4.into(),
                vni: DEFAULT_VNI,
                port: DEFAULT_VXLAN_PORT,
                local: underlay,
                underlay_ifindex: link.ifindex,
                mtu: 1450,
                mac: vtep_mac(vtep),
                vtep,
            };
            ensure_vxlan(&nl, &spec).await.err()
        })
        .unwrap();
    assert_eq!(err.errno(), Some(libc::EADDRINUSE), "{err}");
    assert!(err.to_string().contains(VXLAN_DEVICE_V4), "{err}");
    assert!(
        !a.ns.try_ip(&["link", "show", "dev", VXLAN_DEVICE_V4]),
        "no half-created device"
    );
}
