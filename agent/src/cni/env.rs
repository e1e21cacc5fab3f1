//! The `CNI_*` environment variables of one invocation: parsed from (name, value) pairs
//! (pure, so tests need no process environment) and validated per command.

use std::path::PathBuf;

use super::result::{code, CniError};

/// The operation the runtime asks for (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Version,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The raw variables (empty values count as unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

impl CniEnv {
    /// Collect the `CNI_*` variables from `vars` (e.g. `std::env::vars_os()` made lossy).
    pub fn from_vars<I, K, V>(vars: I) -> CniEnv
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut env = CniEnv::default();
        for (k, v) in vars {
            let slot = match k.as_ref() {
                "CNI_COMMAND" => &mut env.command,
                "CNI_CONTAINERID" => &mut env.container_id,
                "CNI_NETNS" => &mut env.netns,
                "CNI_IFNAME" => &mut env.ifname,
                "CNI_ARGS" => &mut env.args,
                "CNI_PATH" => &mut env.path,
                _ => continue,
            };
            let v: String = v.into();
            *slot = if v.is_empty() { None } else { Some(v) };
        }
        env
    }

    /// The command, or code 4 when missing or unknown.
    pub fn command(&self) -> Result<Command, CniError> {
        let raw = self
            .command
            .as_deref()
            .ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_COMMAND is not set"))?;
        Command::parse(raw).ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                format!("CNI_COMMAND {raw:?} is not one of ADD, DEL, CHECK, STATUS, VERSION, GC"),
            )
        })
    }

    /// `CNI_CONTAINERID`, validated like the spec's container ID.
    pub fn container_id(&self) -> Result<&str, CniError> {
        let id = required(&self.container_id, "CNI_CONTAINERID")?;
        if !valid_container_id(id) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_CONTAINERID {id:?} is invalid: it must start with a letter or digit followed by letters, digits, '_', '.' or '-'"
                ),
            ));
        }
        Ok(id)
    }

    /// `CNI_IFNAME`, validated as a Linux interface name.
    pub fn ifname(&self) -> Result<&str, CniError> {
        let name = required(&self.ifname, "CNI_IFNAME")?;
        if !valid_ifname(name) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!(
                    "CNI_IFNAME {name:?} is not a valid interface name (1-15 bytes, no '/', ':' or whitespace, not '.' or '..')"
                ),
            ));
        }
        Ok(name)
    }

    /// `CNI_NETNS` (required for ADD and CHECK).
    pub fn netns(&self) -> Result<PathBuf, CniError> {
        required(&self.netns, "CNI_NETNS").map(PathBuf::from)
    }
}

fn required<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str, CniError> {
    v.as_deref()
        .ok_or_else(|| CniError::new(code::INVALID_ENV, format!("{name} is not set")))
}

/// Spec: starts alphanumeric, then alphanumerics, `_`, `.` or `-`.
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Linux `dev_valid_name`: 1..=15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> CniEnv {
        CniEnv::from_vars(pairs.iter().map(|(k, v)| (*k, v.to_string())))
    }

    #[test]
    fn reads_only_cni_variables_and_treats_empty_as_unset() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", ""),
            ("HOME", "/root"),
        ]);
        assert_eq!(e.command().unwrap(), Command::Add);
        assert_eq!(e.container_id().unwrap(), "abc");
        assert_eq!(e.netns().unwrap_err().code, code::INVALID_ENV);
    }

    #[test]
    fn missing_or_unknown_command_is_code_4() {
        assert_eq!(env(&[]).command().unwrap_err().code, 4);
        let e = env(&[("CNI_COMMAND", "FROB")]).command().unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("FROB"), "{}", e.msg);
    }

    #[test]
    fn container_id_and_ifname_rules() {
        assert!(valid_container_id("3f69_ab.c-1"));
        assert!(!valid_container_id("-abc"));
        assert!(!valid_container_id("a/b"));
        assert!(!valid_container_id(""));
        assert!(valid_ifname("eth0"));
        assert!(!valid_ifname("a-very-long-ifname"));
        assert!(!valid_ifname("e:1"));
        assert!(!valid_ifname(".."));
        let e = env(&[("CNI_IFNAME", "bad/name")]).ifname().unwrap_err();
        assert_eq!(e.code, 4);
    }
}
