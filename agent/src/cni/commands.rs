//! The plugin's commands (ADD, DEL, CHECK, STATUS, VERSION, GC) and its process entry:
//! environment + stdin in, result or error JSON on stdout, exit status 0 or 1.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use ipnet::IpNet;
use serde_json::{json, Value};

use super::config::{self, NetConf};
use super::env::{valid_ifname, CniEnv, Command};
use super::ipam::{self, IpamError, Owner, Store};
use super::link::{self, LinkError, PodLink, GATEWAY_V4, GATEWAY_V6, HOST_VETH_PREFIX};
use super::result::{code, version_json, CniError, CniResult, Interface, IpConfig, RouteConfig};

/// Process entry: reads `CNI_*` and stdin, writes the answer to stdout (logs to stderr).
pub fn main() -> ExitCode {
    let env = CniEnv::from_vars(std::env::vars_os().map(|(k, v)| {
        (
            k.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        )
    }));
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let outcome = match read {
        Ok(_) => run(&env, &stdin),
        Err(e) => {
            Err(CniError::new(code::IO_FAILURE, "cannot read stdin").with_details(e.to_string()))
        }
    };
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(value) => {
            if let Some(v) = value {
                let _ = writeln!(out, "{v}");
            }
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "routelet-cni: {} {}: {e}",
                env.command.as_deref().unwrap_or("?"),
                env.container_id.as_deref().unwrap_or("-")
            );
            let _ = writeln!(out, "{}", e.to_json(&config::answer_version(&stdin)));
            let _ = out.flush();
            ExitCode::FAILURE
        }
    }
}

/// One invocation: `Ok(Some(json))` to print, `Ok(None)` for success without output.
pub fn run(env: &CniEnv, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let command = env.command()?;
    if command == Command::Version {
        return Ok(Some(version_json()));
    }
    let conf = config::parse(stdin)?;
    // Commands newer than the config's spec version (as libcni's skel does).
    let since = match command {
        Command::Check => Some(("CHECK", (0, 4))),
        Command::Status => Some(("STATUS", (1, 1))),
        Command::Gc => Some(("GC", (1, 1))),
        _ => None,
    };
    if let Some((name, min)) = since {
        if !config::version_at_least(&conf.cni_version, min) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion {} does not allow {name} (needs {}.{}.0 or newer)",
                    conf.cni_version, min.0, min.1
                ),
            ));
        }
    }
    match command {
        Command::Add => add(env, &conf).map(Some),
        Command::Del => del(env, &conf).map(|()| None),
        Command::Check => check(env, &conf).map(|()| None),
        Command::Status => status(&conf).map(|()| None),
        Command::Gc => gc(&conf).map(|()| None),
        Command::Version => Ok(Some(version_json())),
    }
}

fn ipam_err(e: IpamError) -> CniError {
    match e {
        IpamError::Exhausted { .. } => CniError::new(code::EXHAUSTED, e.to_string()),
        IpamError::Io { .. } => CniError::new(code::IO_FAILURE, e.to_string()),
    }
}

fn link_err(e: LinkError, mismatch_code: u32) -> CniError {
    let c = match &e {
        _ if link::is_missing_netns(&e) => code::UNKNOWN_CONTAINER,
        LinkError::Mismatch(_) => mismatch_code,
        LinkError::Sysctl { .. } | LinkError::Runtime(_) => code::IO_FAILURE,
        _ => code::DATAPATH,
    };
    CniError::new(c, e.to_string())
}

fn ensure_netns(netns: &std::path::Path) -> Result<(), CniError> {
    std::fs::File::open(netns).map(|_| ()).map_err(|e| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("network namespace {} cannot be opened", netns.display()),
        )
        .with_details(e.to_string())
    })
}

fn gateway(ip: IpAddr) -> IpAddr {
    if ip.is_ipv4() {
        GATEWAY_V4.into()
    } else {
        GATEWAY_V6.into()
    }
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

fn add(env: &CniEnv, conf: &NetConf) -> Result<Value, CniError> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns = env.netns()?;
    if conf.ranges.is_empty() {
        return Err(CniError::new(code::INVALID_CONFIG, "ipam.ranges: is empty"));
    }
    let prev = conf.prev_result()?;
    ensure_netns(&netns)?;
    let host_veth = link::host_veth_name(container_id, ifname);
    let store = Store::open(&conf.data_dir, &conf.name).map_err(ipam_err)?;
    let owner = Owner {
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
        host_veth: host_veth.clone(),
    };
    let allocated = store.allocate(&conf.ranges, &owner).map_err(ipam_err)?;
    let addrs: Vec<IpAddr> = allocated.iter().map(|(ip, _, _)| *ip).collect();
    let spec = PodLink {
        host_veth: host_veth.clone(),
        ifname: ifname.to_string(),
        netns: netns.clone(),
        mtu: conf.mtu,
        addrs: addrs.clone(),
    };
    let macs = match link::setup(&spec) {
        Ok(m) => m,
        Err(e) => {
            for (ip, _, new) in &allocated {
                if *new {
                    let _ = store.release(*ip);
                }
            }
            return Err(link_err(e, code::DATAPATH));
        }
    };
    drop(store);
    let ours = CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: host_veth,
                mac: Some(macs.host),
                mtu: None,
                sandbox: None,
            },
            Interface {
                name: ifname.to_string(),
                mac: Some(macs.pod),
                mtu: None,
                sandbox: Some(link::sandbox(&netns)),
            },
        ],
        ips: addrs
            .iter()
            .map(|ip| IpConfig {
                address: host_net(*ip),
                gateway: Some(gateway(*ip)),
                interface: Some(1),
            })
            .collect(),
        routes: addrs
            .iter()
            .map(|ip| RouteConfig {
                dst: if ip.is_ipv4() {
                    IpNet::V4(ipnet::Ipv4Net::default())
                } else {
                    IpNet::V6(ipnet::Ipv6Net::default())
                },
                gw: Some(gateway(*ip)),
            })
            .collect(),
        dns: json!({}),
    };
    Ok(merge(prev.as_ref(), ours).to_json())
}

/// ADD with a `prevResult` (a plugin before us in the list): keep its interfaces, addresses,
/// routes and DNS, and append ours (our `interface` indexes shifted accordingly). Entries of
/// `prevResult` that are ours already (a repeated ADD handed its own result back) are
/// replaced, not duplicated.
fn merge(prev: Option<&CniResult>, mut ours: CniResult) -> CniResult {
    let Some(prev) = prev else {
        return ours;
    };
    let is_ours = |i: &Interface| {
        ours.interfaces
            .iter()
            .any(|o| o.name == i.name && o.sandbox == i.sandbox)
    };
    let mut index_map: Vec<Option<usize>> = Vec::with_capacity(prev.interfaces.len());
    let mut interfaces: Vec<Interface> = Vec::new();
    for i in &prev.interfaces {
        if is_ours(i) {
            index_map.push(None);
        } else {
            index_map.push(Some(interfaces.len()));
            interfaces.push(i.clone());
        }
    }
    let our_addrs: Vec<IpAddr> = ours.ips.iter().map(|c| c.address.addr()).collect();
    let mut ips: Vec<IpConfig> = Vec::new();
    for c in &prev.ips {
        if our_addrs.contains(&c.address.addr()) {
            continue;
        }
        let interface = match c.interface {
            None => None,
            Some(i) => match index_map.get(i).copied().flatten() {
                Some(n) => Some(n),
                None => continue,
            },
        };
        ips.push(IpConfig {
            interface,
            ..c.clone()
        });
    }
    let offset = interfaces.len();
    for ip in &mut ours.ips {
        ip.interface = ip.interface.map(|i| i + offset);
    }
    let mut routes: Vec<RouteConfig> = prev
        .routes
        .iter()
        .filter(|r| !ours.routes.contains(r))
        .cloned()
        .collect();
    interfaces.extend(ours.interfaces);
    ips.extend(ours.ips);
    routes.extend(ours.routes);
    let dns = if prev.dns.is_null() {
        ours.dns
    } else {
        prev.dns.clone()
    };
    CniResult {
        cni_version: ours.cni_version,
        interfaces,
        ips,
        routes,
        dns,
    }
}

/// Host veth names a record may name: ours only (prefix + length), so a corrupt file never
/// makes the plugin delete a foreign interface.
fn owned_veth(name: &str) -> bool {
    name.starts_with(HOST_VETH_PREFIX)
        && name.len() == HOST_VETH_PREFIX.len() + 12
        && valid_ifname(name)
}

fn del(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let store = Store::open(&conf.data_dir, &conf.name).map_err(ipam_err)?;
    let records = store.find(container_id, ifname).map_err(ipam_err)?;
    let mut veths: BTreeSet<String> = BTreeSet::new();
    veths.insert(link::host_veth_name(container_id, ifname));
    veths.extend(
        records
            .iter()
            .map(|r| r.owner.host_veth.clone())
            .filter(|n| owned_veth(n)),
    );
    for veth in &veths {
        link::delete_host_veth(veth).map_err(|e| link_err(e, code::DATAPATH))?;
    }
    for r in &records {
        store.release(r.ip).map_err(ipam_err)?;
    }
    Ok(())
}

fn check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns = env.netns()?;
    let prev = conf.prev_result()?;
    let prev = prev.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "prevResult: is missing (CHECK needs the result of ADD)",
        )
    })?;
    let mismatch = |msg: String| CniError::new(code::CHECK_MISMATCH, msg);
    let host_veth = link::host_veth_name(container_id, ifname);
    let pod_index = prev.interfaces.iter().position(|i| i.name == ifname);
    if pod_index.is_none() {
        return Err(mismatch(format!("prevResult has no interface {ifname}")));
    }
    if !prev.interfaces.iter().any(|i| i.name == host_veth) {
        return Err(mismatch(format!(
            "prevResult has no host interface {host_veth}"
        )));
    }
    let addrs: Vec<IpAddr> = prev
        .ips
        .iter()
        .filter(|c| c.interface.is_none() || c.interface == pod_index)
        .map(|c| c.address.addr())
        .collect();
    if addrs.is_empty() {
        return Err(mismatch(format!("prevResult has no address on {ifname}")));
    }
    ensure_netns(&netns)?;
    {
        let store = Store::open(&conf.data_dir, &conf.name).map_err(ipam_err)?;
        for ip in &addrs {
            match store.record(*ip).map_err(ipam_err)? {
                None => return Err(mismatch(format!("no IPAM record for {ip}"))),
                Some(r) if !r.belongs_to(container_id, ifname) => {
                    return Err(mismatch(format!(
                        "IPAM record of {ip} belongs to {}/{}, not {container_id}/{ifname}",
                        r.owner.container_id, r.owner.ifname
                    )))
                }
                Some(_) => {}
            }
        }
    }
    let spec = PodLink {
        host_veth,
        ifname: ifname.to_string(),
        netns,
        mtu: conf.mtu,
        addrs,
    };
    link::check(&spec).map_err(|e| link_err(e, code::CHECK_MISMATCH))
}

fn status(conf: &NetConf) -> Result<(), CniError> {
    let unavailable = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
    if conf.ranges.is_empty() {
        return Err(unavailable(
            "no pod address range configured (ipam.ranges is empty)".into(),
        ));
    }
    let dir: PathBuf = conf.data_dir.join(&conf.name);
    std::fs::create_dir_all(&dir)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(ipam::LOCK_FILE))
        })
        .map_err(|e| {
            unavailable(format!(
                "state directory {} is not usable: {e}",
                dir.display()
            ))
        })?;
    for v4 in [true, false] {
        let family: Vec<&IpNet> = conf
            .ranges
            .iter()
            .filter(|r| r.addr().is_ipv4() == v4)
            .collect();
        if family.is_empty() {
            continue;
        }
        let mut free = false;
        for range in &family {
            let (used, cap) = ipam::usage(&conf.data_dir, &conf.name, range).map_err(|e| {
                unavailable(format!(
                    "state directory {} is not readable: {e}",
                    dir.display()
                ))
            })?;
            free |= used < cap;
        }
        if !free {
            let list: Vec<String> = family.iter().map(ToString::to_string).collect();
            return Err(unavailable(format!(
                "no free address in {}",
                list.join(", ")
            )));
        }
    }
    Ok(())
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid = conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "cni.dev/valid-attachments: is missing (GC needs the list of valid attachments)",
        )
    })?;
    let valid: BTreeSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let store = Store::open(&conf.data_dir, &conf.name).map_err(ipam_err)?;
    let mut failures: Vec<String> = Vec::new();
    for record in store.records().map_err(ipam_err)? {
        let key = (
            record.owner.container_id.as_str(),
            record.owner.ifname.as_str(),
        );
        if valid.contains(&key) {
            continue;
        }
        let mut veths: BTreeSet<String> = BTreeSet::new();
        if owned_veth(&record.owner.host_veth) {
            veths.insert(record.owner.host_veth.clone());
        }
        if !record.owner.container_id.is_empty() && !record.owner.ifname.is_empty() {
            veths.insert(link::host_veth_name(
                &record.owner.container_id,
                &record.owner.ifname,
            ));
        }
        let mut ok = true;
        for veth in &veths {
            if let Err(e) = link::delete_host_veth(veth) {
                failures.push(format!("{veth}: {e}"));
                ok = false;
            }
        }
        if ok {
            if let Err(e) = store.release(record.ip) {
                failures.push(e.to_string());
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(
            CniError::new(code::DATAPATH, "GC could not remove every stale attachment")
                .with_details(failures.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> CniEnv {
        CniEnv::from_vars(pairs.iter().map(|(k, v)| (*k, v.to_string())))
    }

    #[test]
    fn version_needs_no_config() {
        let v = run(&env(&[("CNI_COMMAND", "VERSION")]), b"")
            .unwrap()
            .unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn add_without_container_id_is_code_4_before_touching_anything() {
        let conf = br#"{"cniVersion":"1.1.0","name":"n","type":"routelet-cni",
            "ipam":{"ranges":["10.0.0.0/24"],"dataDir":"/nonexistent/rlc"}}"#;
        let e = run(
            &env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]),
            conf,
        )
        .unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_CONTAINERID"));
    }

    #[test]
    fn gc_without_attachments_is_an_error() {
        let conf = br#"{"cniVersion":"1.1.0","name":"n","type":"routelet-cni",
            "ipam":{"ranges":["10.0.0.0/24"],"dataDir":"/nonexistent/rlc"}}"#;
        let e = run(&env(&[("CNI_COMMAND", "GC")]), conf).unwrap_err();
        assert_eq!(e.code, 7);
    }

    const CONF: &str = r#"{"cniVersion":"1.1.0","name":"n","type":"routelet-cni",
            "ipam":{"ranges":[],"dataDir":"/nonexistent/rlc"}}"#;

    #[test]
    fn commands_newer_than_the_config_version_are_code_1() {
        for (cmd, version) in [("CHECK", "0.3.1"), ("STATUS", "1.0.0"), ("GC", "0.4.0")] {
            let conf = CONF.replace("1.1.0", version);
            let e = run(
                &env(&[
                    ("CNI_COMMAND", cmd),
                    ("CNI_CONTAINERID", "c"),
                    ("CNI_IFNAME", "eth0"),
                ]),
                conf.as_bytes(),
            )
            .unwrap_err();
            assert_eq!(e.code, 1, "{cmd} {version}: {e}");
        }
    }

    #[test]
    fn empty_ranges_are_invalid_for_add_and_unavailable_for_status() {
        let add = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/proc/self/ns/net"),
        ];
        assert_eq!(run(&env(&add), CONF.as_bytes()).unwrap_err().code, 7);
        let status = [("CNI_COMMAND", "STATUS")];
        assert_eq!(run(&env(&status), CONF.as_bytes()).unwrap_err().code, 50);
    }

    #[test]
    fn add_appends_to_a_previous_result() {
        let prev: CniResult = serde_json::from_value(json!({"cniVersion":"1.1.0",
            "interfaces":[{"name":"x0"}],"ips":[{"address":"192.0.2.5/24","interface":0}],
            "dns":{"nameservers":["192.0.2.53"]}}))
        .unwrap();
        let ours: CniResult = serde_json::from_value(json!({"cniVersion":"1.1.0",
            "interfaces":[{"name":"rl0"},{"name":"eth0"}],
            "ips":[{"address":"10.0.0.2/32","interface":1}],
            "routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}],"dns":{}}))
        .unwrap();
        let m = merge(Some(&prev), ours.clone());
        assert_eq!(m.interfaces.len(), 3);
        assert_eq!(m.ips[1].interface, Some(2));
        assert_eq!(m.ips.len(), 2);
        assert_eq!(m.routes.len(), 1);
        assert_eq!(m.dns["nameservers"][0], "192.0.2.53");
        assert_eq!(merge(None, ours.clone()), ours);
        // Our own earlier result handed back: replaced, not duplicated.
        let again = merge(Some(&m), ours.clone());
        assert_eq!(again.interfaces.len(), 3);
        assert_eq!(again.ips.len(), 2);
        assert_eq!(again.ips[0].interface, Some(0));
        assert_eq!(again.ips[1].interface, Some(2));
        assert_eq!(again.routes.len(), 1);
    }

    #[test]
    fn owned_veth_names_only() {
        assert!(owned_veth(&link::host_veth_name("c", "eth0")));
        assert!(!owned_veth("eth0"));
        assert!(!owned_veth("rl"));
        assert!(!owned_veth("rl0123456789ab/"));
    }
}
