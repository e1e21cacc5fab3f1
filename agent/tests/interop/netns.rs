//! Network namespace guard (`ip netns add` / `del`) and veth links between namespaces.

use std::process::{Command, Output};

use super::{parse_json, run, run_output, LabError, Result};

/// A network namespace, deleted on Drop. Created with `lo` up, IPv4/IPv6 forwarding on and
/// IPv6 DAD off (so addresses, link-local included, are usable at once).
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        // Guard first, so a failure below still deletes the namespace.
        let ns = Netns {
            name: name.to_string(),
        };
        ns.exec(&[
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward && \
             echo 1 > /proc/sys/net/ipv6/conf/all/forwarding && \
             echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && \
             echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad",
        ])?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NS argv...`; stdout on success, error with stderr otherwise.
    pub fn exec(&self, argv: &[&str]) -> Result<String> {
        exec_in(&self.name, argv)
    }

    /// `ip netns exec NS argv...`, returning the raw output whatever the exit status.
    pub fn exec_output(&self, argv: &[&str]) -> Result<Output> {
        run_output(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(argv),
        )
    }

    /// `ip -n NS args...` (netlink only, no traffic).
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Destination prefixes (`dst`, "default" included) of this namespace's main-table routes
    /// with routing protocol `proto` (e.g. "200", "bird", "bgp"), for IPv4 (`v6 == false`) or IPv6.
    pub fn kernel_routes(&self, v6: bool, proto: &str) -> Result<Vec<String>> {
        let fam = if v6 { "-6" } else { "-4" };
        let text = self.ip(&[fam, "-j", "route", "show", "proto", proto])?;
        let text = if text.trim().is_empty() { "[]" } else { &text };
        let v = parse_json("ip -j route", text)?;
        Ok(v.as_array()
            .map(|routes| {
                routes
                    .iter()
                    .filter_map(|r| r.get("dst").and_then(|d| d.as_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Human-readable routing table (v4 + v6), for failure messages.
    pub fn route_dump(&self) -> String {
        let v4 = self.ip(&["-4", "route"]).unwrap_or_else(|e| e.to_string());
        let v6 = self.ip(&["-6", "route"]).unwrap_or_else(|e| e.to_string());
        format!("{} routes:\n{v4}{v6}", self.name)
    }

    /// True if `prefix` is a kernel route with protocol `proto`; writes the table into `seen`.
    pub fn has_kernel_route(&self, prefix: &str, proto: &str, seen: &mut String) -> Result<bool> {
        let v6 = prefix.contains(':');
        let routes = self.kernel_routes(v6, proto)?;
        seen.push_str(&format!("{} proto {proto}: {routes:?}\n", self.name));
        Ok(routes.iter().any(|r| super::same_prefix(r, prefix)))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: could not delete netns {}: {e}", self.name);
        }
    }
}

/// `ip netns exec NS argv...` by namespace name.
pub fn exec_in(ns: &str, argv: &[&str]) -> Result<String> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(argv))
}

/// Links `a` and `b` with a veth pair (`a_if` in `a`, `b_if` in `b`, created directly inside
/// the namespaces), assigns the addresses (CIDR form; IPv6 ones with `nodad`) and sets both
/// ends up.
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_addrs: &[&str],
    b: &Netns,
    b_if: &str,
    b_addrs: &[&str],
) -> Result<()> {
    run(Command::new("ip").args([
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]))?;
    for (ns, ifname, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
        for addr in addrs {
            add_addr(ns, ifname, addr)?;
        }
        ns.ip(&["link", "set", ifname, "up"])?;
    }
    Ok(())
}

/// Adds an address (CIDR) to an interface; IPv6 addresses get `nodad`.
pub fn add_addr(ns: &Netns, ifname: &str, addr: &str) -> Result<()> {
    if addr.contains(':') {
        ns.ip(&["-6", "addr", "add", addr, "dev", ifname, "nodad"])?;
    } else {
        ns.ip(&["addr", "add", addr, "dev", ifname])?;
    }
    Ok(())
}

/// Bridge `name` inside `ns` (for hub topologies); returns nothing, the bridge dies with the ns.
pub fn bridge(ns: &Netns, name: &str) -> Result<()> {
    ns.ip(&["link", "add", name, "type", "bridge"])?;
    ns.ip(&["link", "set", name, "up"])?;
    Ok(())
}

/// Error helper for code paths that need a `LabError` from a message.
pub fn check_err(msg: impl Into<String>) -> LabError {
    LabError::Check(msg.into())
}
