//! The datapath part of the `routelet agent` configuration: `backend`, `cross_subnet`,
//! `interface`, `vxlan` and `cni`, with their defaults and validation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How pod traffic reaches other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Pod routes learned over BGP (node mesh or reflectors), installed with the other node
    /// as next hop: no encapsulation.
    #[default]
    Bgp,
    /// No BGP between nodes: static routes to every node's pod CIDRs via its address (one L2
    /// segment).
    HostGw,
    /// Every remote pod CIDR through a VXLAN device.
    Vxlan,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Bgp => "bgp",
            Backend::HostGw => "host-gw",
            Backend::Vxlan => "vxlan",
        }
    }
}

/// What `bgp` and `host-gw` do for a node whose address is on no directly connected subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CrossSubnet {
    /// Tunnel just those nodes through VXLAN (Calico CrossSubnet, flannel DirectRouting).
    #[default]
    Vxlan,
    /// Let the fabric carry the routes (the ToR peering): the route goes via whatever the
    /// kernel uses to reach that node.
    Routed,
}

impl CrossSubnet {
    pub fn as_str(self) -> &'static str {
        match self {
            CrossSubnet::Vxlan => "vxlan",
            CrossSubnet::Routed => "routed",
        }
    }
}

/// Default VXLAN Network Identifier (Calico's; flannel uses 1).
pub const DEFAULT_VNI: u32 = 4096;
/// Default VXLAN UDP port (IANA, RFC 7348).
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// VXLAN device for an IPv4 underlay.
pub const VXLAN_DEVICE_V4: &str = "vxlan.routelet";
/// VXLAN device for an IPv6 underlay.
pub const VXLAN_DEVICE_V6: &str = "vxlan6.routelet";
/// File the agent writes into `cni.conf_dir`.
pub const CNI_CONFLIST: &str = "10-routelet.conflist";
/// CNI network name in the conflist.
pub const CNI_NETWORK: &str = "routelet";

fn default_vni() -> u32 {
    DEFAULT_VNI
}
fn default_vxlan_port() -> u16 {
    DEFAULT_VXLAN_PORT
}
fn default_conf_dir() -> PathBuf {
    PathBuf::from("/etc/cni/net.d")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/routelet/cni")
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VxlanFile {
    #[serde(default = "default_vni")]
    pub vni: u32,
    #[serde(default = "default_vxlan_port")]
    pub port: u16,
    /// Device MTU; default: the underlay interface's MTU minus 50 (IPv4) or 70 (IPv6).
    #[serde(default)]
    pub mtu: Option<u32>,
}

impl Default for VxlanFile {
    fn default() -> Self {
        VxlanFile {
            vni: DEFAULT_VNI,
            port: DEFAULT_VXLAN_PORT,
            mtu: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CniFile {
    /// Write the conflist here when ready (`false` = the operator manages it).
    #[serde(default = "crate::config::default_true")]
    pub enabled: bool,
    #[serde(default = "default_conf_dir")]
    pub conf_dir: PathBuf,
    /// The plugin's address allocation state.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Pod interface MTU; default: the underlay MTU, minus the VXLAN overhead when any
    /// remote node may be reached through VXLAN.
    #[serde(default)]
    pub mtu: Option<u32>,
}

impl Default for CniFile {
    fn default() -> Self {
        CniFile {
            enabled: true,
            conf_dir: default_conf_dir(),
            data_dir: default_data_dir(),
            mtu: None,
        }
    }
}

/// The validated datapath settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathSettings {
    pub backend: Backend,
    pub cross_subnet: CrossSubnet,
    /// Underlay interface; `None` = the interface holding the node's InternalIP.
    pub interface: Option<String>,
    pub vxlan: VxlanFile,
    pub cni: CniFile,
}

impl DatapathSettings {
    /// Whether any remote node may be reached through VXLAN with these settings.
    pub fn may_use_vxlan(&self) -> bool {
        self.backend == Backend::Vxlan || self.cross_subnet == CrossSubnet::Vxlan
    }
}

/// Validate the datapath keys; errors are `(key, message)`.
pub fn validate(
    backend: Backend,
    cross_subnet: CrossSubnet,
    interface: Option<String>,
    vxlan: VxlanFile,
    cni: CniFile,
) -> Result<DatapathSettings, (&'static str, String)> {
    if let Some(name) = &interface {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
            return Err((
                "interface",
                format!("`{name}` is not an interface name (1..=15 characters, no '/' or spaces)"),
            ));
        }
    }
    if vxlan.vni == 0 || vxlan.vni > 0x00ff_ffff {
        return Err((
            "vxlan.vni",
            format!(
                "{} is not a VXLAN network identifier (1..=16777215)",
                vxlan.vni
            ),
        ));
    }
    if vxlan.port == 0 {
        return Err(("vxlan.port", "UDP port 0 is not usable".into()));
    }
    for (key, mtu) in [("vxlan.mtu", vxlan.mtu), ("cni.mtu", cni.mtu)] {
        if let Some(m) = mtu {
            if !(576..=65_000).contains(&m) {
                return Err((key, format!("MTU {m} out of range (576..=65000)")));
            }
        }
    }
    for (key, dir) in [
        ("cni.conf_dir", &cni.conf_dir),
        ("cni.data_dir", &cni.data_dir),
    ] {
        if !dir.is_absolute() {
            return Err((key, format!("{} is not an absolute path", dir.display())));
        }
    }
    Ok(DatapathSettings {
        backend,
        cross_subnet,
        interface,
        vxlan,
        cni,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ok(interface: Option<&str>, vxlan: VxlanFile, cni: CniFile) -> Result<(), &'static str> {
        validate(
            Backend::Bgp,
            CrossSubnet::Vxlan,
            interface.map(str::to_string),
            vxlan,
            cni,
        )
        .map(|_| ())
        .map_err(|(k, _)| k)
    }

    #[test]
    fn datapath_keys_are_validated() {
        assert_eq!(ok(None, VxlanFile::default(), CniFile::default()), Ok(()));
        assert_eq!(
            ok(Some("eth0"), VxlanFile::default(), CniFile::default()),
            Ok(())
        );
        assert_eq!(
            ok(
                Some("a-very-long-interface"),
                VxlanFile::default(),
                CniFile::default()
            ),
            Err("interface")
        );
        let vni = |vni| VxlanFile {
            vni,
            ..VxlanFile::default()
        };
        assert_eq!(ok(None, vni(0), CniFile::default()), Err("vxlan.vni"));
        assert_eq!(ok(None, vni(1 << 24), CniFile::default()), Err("vxlan.vni"));
        assert_eq!(ok(None, vni((1 << 24) - 1), CniFile::default()), Ok(()));
        let port0 = VxlanFile {
            port: 0,
            ..VxlanFile::default()
        };
        assert_eq!(ok(None, port0, CniFile::default()), Err("vxlan.port"));
        let tiny_mtu = VxlanFile {
            mtu: Some(100),
            ..VxlanFile::default()
        };
        assert_eq!(ok(None, tiny_mtu, CniFile::default()), Err("vxlan.mtu"));
        let relative = CniFile {
            conf_dir: PathBuf::from("net.d"),
            ..CniFile::default()
        };
        assert_eq!(
            ok(None, VxlanFile::default(), relative),
            Err("cni.conf_dir")
        );
    }

    #[test]
    fn backends_parse_in_kebab_case() {
        let b: Backend = serde_norway::from_str("host-gw").unwrap();
        assert_eq!(b, Backend::HostGw);
        let c: CrossSubnet = serde_norway::from_str("routed").unwrap();
        assert_eq!(c, CrossSubnet::Routed);
        assert!(serde_norway::from_str::<Backend>("ipip").is_err());
    }
}
