//! Running the external tools the lab drives (`ip`, `kill`, daemons) and building the
//! namespace plumbing with them: namespaces, veth pairs, bridges, addresses, routes, sysctls.
//! Every failure names the command line and its stderr.

use std::process::{Command, Output, Stdio};

use super::error::LabError;

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` and returns its output whatever the exit status.
pub fn output(cmd: &mut Command) -> Result<Output, LabError> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            command: describe(cmd),
            message: e.to_string(),
        })
}

/// Runs `cmd`; its stdout on success, an error with stderr otherwise.
pub fn run(cmd: &mut Command) -> Result<String, LabError> {
    let out = output(cmd)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            command: describe(cmd),
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// `ip ARGS...`.
pub fn ip(args: &[&str]) -> Result<String, LabError> {
    run(Command::new("ip").args(args))
}

/// `ip -n NS ARGS...`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String, LabError> {
    run(Command::new("ip").args(["-n", ns]).args(args))
}

/// `ip netns exec NS ARGV...`.
pub fn exec_in(ns: &str, argv: &[&str]) -> Result<String, LabError> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(argv))
}

/// Names from `ip netns list`.
pub fn list_netns() -> Result<Vec<String>, LabError> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Creates namespace `ns` with `lo` up and IPv4 forwarding as asked.
pub fn create_netns(ns: &str, forwarding: bool) -> Result<(), LabError> {
    ip(&["netns", "add", ns])?;
    ip_in(ns, &["link", "set", "lo", "up"])?;
    let v = if forwarding { "1" } else { "0" };
    exec_in(
        ns,
        &["sysctl", "-q", "-w", &format!("net.ipv4.ip_forward={v}")],
    )?;
    Ok(())
}

/// Deletes namespace `ns`; a namespace that does not exist is not an error.
pub fn delete_netns(ns: &str) -> Result<(), LabError> {
    match ip(&["netns", "del", ns]) {
        Ok(_) => Ok(()),
        Err(e) if !list_netns()?.iter().any(|n| n == ns) => {
            let _ = e;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// A veth pair `a_if` in `a` and `b_if` in `b`, both up, with optional addresses (CIDR).
pub fn veth(
    a: &str,
    a_if: &str,
    a_addr: Option<&str>,
    b: &str,
    b_if: &str,
    b_addr: Option<&str>,
) -> Result<(), LabError> {
    ip(&[
        "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
    ])?;
    for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        if let Some(addr) = addr {
            ip_in(ns, &["addr", "add", addr, "dev", ifname])?;
        }
        ip_in(ns, &["link", "set", ifname, "up"])?;
    }
    Ok(())
}

/// Sends `signal` (e.g. "TERM", "KILL") to `pid`, or to process group `pid` when `group`.
/// A process that no longer exists is not an error.
pub fn kill(signal: &str, pid: u32, group: bool) -> Result<(), LabError> {
    let target = if group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let out = output(Command::new("kill").args(["-s", signal, "--", &target]))?;
    if out.status.success() || !pid_alive(pid) {
        Ok(())
    } else {
        Err(LabError::Command {
            command: format!("kill -s {signal} -- {target}"),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// True if a process `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // "pid (comm) S ..." — comm may contain spaces and parentheses.
            let state = stat
                .rfind(')')
                .and_then(|i| stat.get(i + 1..))
                .and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
    }
}

/// True if `program` is an existing path or found in PATH.
pub fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_pid_is_alive_and_a_bogus_one_is_not() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(u32::MAX - 1));
    }

    #[test]
    fn failures_name_the_command() {
        let e = run(Command::new("ip").args(["link", "show", "dev", "rl-no-such-dev-x"]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("ip link show dev rl-no-such-dev-x"), "{e}");
        assert!(program_exists("sh"));
        assert!(!program_exists("rl-no-such-program"));
    }
}
