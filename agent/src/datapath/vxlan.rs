//! The VXLAN device: created with learning off, the node's MAC and MTU and the VTEP address
//! as a host address; repaired in place (MTU, MAC, address, up) or recreated when its
//! identity (VNI, port, local address, underlay, learning) differs; never another device.

use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::{LinkUnspec, LinkVxlan};

use super::error::nl_err;
use super::links::{dump_addresses, dump_links, is_link_local, Link};
use super::reach::format_mac;
use super::{DatapathError, Netlink, Result};

/// The VXLAN device routelet wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// Device name (`vxlan.routelet` / `vxlan6.routelet`).
    pub name: String,
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// The node's underlay address (outer source address).
    pub local: IpAddr,
    /// The interface carrying `local`.
    pub underlay_ifindex: u32,
    pub mtu: u32,
    pub mac: [u8; 6],
    /// Put on the device as /32 (/128), without a prefix route.
    pub vtep: IpAddr,
}

impl VxlanSpec {
    fn validate(&self) -> Result<()> {
        let invalid = |reason: String| DatapathError::InvalidSpec {
            device: self.name.clone(),
            reason,
        };
        if self.name.is_empty() || self.name.len() > 15 || self.name.contains(['/', ' ', '\0']) {
            return Err(invalid("not an interface name".into()));
        }
        if self.vni == 0 || self.vni > 0x00ff_ffff {
            return Err(invalid(format!(
                "VNI {} out of range 1..=16777215",
                self.vni
            )));
        }
        if self.port == 0 {
            return Err(invalid("UDP port 0".into()));
        }
        if self.mac[0] & 0x01 != 0 || self.mac == [0; 6] {
            return Err(invalid(format!(
                "MAC {} is not a unicast address",
                format_mac(&self.mac)
            )));
        }
        if !(68..=65_535).contains(&self.mtu) {
            return Err(invalid(format!("MTU {} out of range", self.mtu)));
        }
        Ok(())
    }

    fn host_prefix_len(&self) -> u8 {
        match self.vtep {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }
}

/// Whether an existing device named like ours must be deleted and recreated (pure): its
/// identity differs. MTU, MAC and addresses are fixed in place instead.
pub(crate) fn needs_recreate(link: &Link, spec: &VxlanSpec) -> bool {
    let Some(vx) = &link.vxlan else { return true };
    vx.vni != Some(spec.vni)
        || vx.port != Some(spec.port)
        || vx.local != Some(spec.local)
        || vx.underlay != Some(spec.underlay_ifindex)
        || vx.learning != Some(false)
}

/// Another VXLAN device that keeps ours from working (pure): one using the spec's VNI and
/// port over the same underlay family (the kernel refuses to create ours), or a
/// collect-metadata (`external`) device on the port (it takes every VNI: ours cannot be set
/// up).
pub(crate) fn find_conflict<'a>(links: &'a [Link], spec: &VxlanSpec) -> Option<&'a Link> {
    links.iter().find(|l| {
        l.info.name != spec.name
            && l.vxlan.as_ref().is_some_and(|vx| {
                vx.port.unwrap_or(0) == spec.port
                    && (vx.external || (vx.vni == Some(spec.vni) && vx.v6 == spec.local.is_ipv6()))
            })
    })
}

fn conflict(spec: &VxlanSpec, other: &Link) -> DatapathError {
    DatapathError::VxlanConflict {
        device: spec.name.clone(),
        vni: spec.vni,
        port: spec.port,
        other: other.info.name.clone(),
        other_ifindex: other.info.ifindex,
    }
}

/// Create the device if missing, repair it if it drifted, and return its ifindex.
///
/// * missing: created (kind vxlan, VNI, dstport, local, underlay device, learning off, the
///   MAC and MTU), set up, VTEP address added as a host address without prefix route;
/// * VNI, port, local address, underlay device or learning differ: deleted and recreated;
/// * only MTU, MAC, up state or addresses differ: fixed in place (other non-link-local
///   addresses on the device are removed);
/// * another VXLAN device already uses the VNI and port, or an `external` VXLAN device
///   listens on the port: [`DatapathError::VxlanConflict`], nothing created or deleted.
///   A failure after creating the device deletes it again.
pub async fn ensure_vxlan(nl: &Netlink, spec: &VxlanSpec) -> Result<u32> {
    spec.validate()?;
    let links = dump_links(nl).await?;
    let existing = links.iter().find(|l| l.info.name == spec.name);
    let reusable = match existing {
        Some(link) if link.vxlan.is_none() => {
            return Err(DatapathError::NotVxlan {
                device: spec.name.clone(),
                kind: link.info.kind.clone().unwrap_or_else(|| "none".into()),
            });
        }
        Some(link) if !needs_recreate(link, spec) => Some(link),
        _ => None,
    };
    if let Some(link) = reusable {
        fix_link(nl, link, spec).await?;
        ensure_address(nl, link.info.ifindex, spec).await?;
        return Ok(link.info.ifindex);
    }
    // Checked before deleting a stale device of ours, so a conflict changes nothing.
    if let Some(other) = find_conflict(&links, spec) {
        return Err(conflict(spec, other));
    }
    if let Some(stale) = existing {
        tracing::info!(device = %spec.name, "VXLAN device parameters changed: recreating it");
        delete_link(nl, stale.info.ifindex, &spec.name).await?;
    }
    let ifindex = create(nl, spec).await?;
    if let Err(e) = ensure_address(nl, ifindex, spec).await {
        let _ = delete_link(nl, ifindex, &spec.name).await;
        return Err(e);
    }
    Ok(ifindex)
}

async fn create(nl: &Netlink, spec: &VxlanSpec) -> Result<u32> {
    let mut builder = LinkVxlan::new(&spec.name, spec.vni)
        .dev(spec.underlay_ifindex)
        .port(spec.port)
        .learning(false);
    builder = match spec.local {
        IpAddr::V4(a) => builder.local(a),
        IpAddr::V6(a) => builder.local6(a),
    };
    let message = builder
        .mtu(spec.mtu)
        .address(spec.mac.to_vec())
        .up()
        .build();
    let created = nl
        .handle()
        .link()
        .add(message)
        .execute()
        .await
        .map_err(nl_err("create VXLAN device", &spec.name));
    if let Err(e) = created {
        let links = dump_links(nl).await?;
        // Older kernels may leave the device behind when setting it up failed.
        if let Some(ours) = links.iter().find(|l| l.info.name == spec.name) {
            let _ = delete_link(nl, ours.info.ifindex, &spec.name).await;
        }
        if matches!(e.errno(), Some(libc::EEXIST) | Some(libc::EADDRINUSE)) {
            // The kernel saw a clash we did not (a device created meanwhile, or its own
            // rule): name it if the dump finds it.
            if let Some(other) = find_conflict(&links, spec) {
                return Err(conflict(spec, other));
            }
        }
        return Err(e);
    }
    dump_links(nl)
        .await?
        .into_iter()
        .find(|l| l.info.name == spec.name)
        .map(|l| l.info.ifindex)
        .ok_or_else(|| DatapathError::Vanished {
            device: spec.name.clone(),
        })
}

async fn fix_link(nl: &Netlink, link: &Link, spec: &VxlanSpec) -> Result<()> {
    let mut builder = LinkUnspec::new_with_index(link.info.ifindex);
    let mut changed = false;
    if link.info.mtu != spec.mtu {
        builder = builder.mtu(spec.mtu);
        changed = true;
    }
    if link.mac.as_deref() != Some(&spec.mac[..]) {
        builder = builder.address(spec.mac.to_vec());
        changed = true;
    }
    if !link.admin_up {
        builder = builder.up();
        changed = true;
    }
    if !changed {
        return Ok(());
    }
    tracing::info!(device = %spec.name, "repairing VXLAN device MTU/MAC/up state");
    nl.handle()
        .link()
        .set(builder.build())
        .execute()
        .await
        .map_err(nl_err("update VXLAN device", &spec.name))
}

async fn delete_link(nl: &Netlink, ifindex: u32, name: &str) -> Result<()> {
    match nl.handle().link().del(ifindex).execute().await {
        Ok(()) => Ok(()),
        Err(e) => {
            let err = nl_err("delete device", name)(e);
            if err.errno() == Some(libc::ENODEV) {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}

/// The VTEP as the device's only non-link-local address, as a host address.
async fn ensure_address(nl: &Netlink, ifindex: u32, spec: &VxlanSpec) -> Result<()> {
    let want_len = spec.host_prefix_len();
    let mut present = false;
    for (index, addr, len, msg) in dump_addresses(nl).await? {
        if index != ifindex || is_link_local(addr) {
            continue;
        }
        if addr == spec.vtep && len == want_len {
            present = true;
            continue;
        }
        let target = format!("{addr}/{len} on {}", spec.name);
        nl.handle()
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(nl_err("delete address", target))?;
    }
    if present {
        return Ok(());
    }
    let mut request = nl.handle().address().add(ifindex, spec.vtep, want_len);
    let mut flags = AddressFlags::Noprefixroute;
    if spec.vtep.is_ipv6() {
        flags |= AddressFlags::Nodad;
    }
    request
        .message_mut()
        .attributes
        .push(AddressAttribute::Flags(flags));
    request.execute().await.map_err(nl_err(
        "add address",
        format!("{}/{want_len} on {}", spec.vtep, spec.name),
    ))
}

/// Delete the VXLAN device `name` if it exists; a device of that name that is not a VXLAN
/// device is left alone ([`DatapathError::NotVxlan`]).
pub async fn remove_vxlan(nl: &Netlink, name: &str) -> Result<()> {
    let links = dump_links(nl).await?;
    let Some(link) = links.iter().find(|l| l.info.name == name) else {
        return Ok(());
    };
    if link.vxlan.is_none() {
        return Err(DatapathError::NotVxlan {
            device: name.to_string(),
            kind: link.info.kind.clone().unwrap_or_else(|| "none".into()),
        });
    }
    delete_link(nl, link.info.ifindex, name).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::datapath::links::VxlanAttrs;
    use crate::datapath::LinkInfo;

    fn spec() -> VxlanSpec {
        VxlanSpec {
            name: "vxlan.routelet".into(),
            vni: 4096,
            port: 4789,
            local: "10.0.0.1".parse().unwrap(),
            underlay_ifindex: 2,
            mtu: 1450,
            mac: [0x0a, 0x58, 10, 244, 1, 0],
            vtep: "10.244.1.0".parse().unwrap(),
        }
    }

    fn vxlan_link(name: &str, ifindex: u32, vx: VxlanAttrs) -> Link {
        Link {
            info: LinkInfo {
                ifindex,
                name: name.into(),
                mtu: 1450,
                up: true,
                kind: Some("vxlan".into()),
            },
            admin_up: true,
            mac: None,
            vxlan: Some(vx),
        }
    }

    fn same() -> VxlanAttrs {
        VxlanAttrs {
            vni: Some(4096),
            port: Some(4789),
            local: Some("10.0.0.1".parse().unwrap()),
            underlay: Some(2),
            learning: Some(false),
            v6: false,
            external: false,
        }
    }

    #[test]
    fn identity_changes_recreate_the_device() {
        let s = spec();
        assert!(!needs_recreate(
            &vxlan_link("vxlan.routelet", 5, same()),
            &s
        ));
        for changed in [
            VxlanAttrs {
                vni: Some(1),
                ..same()
            },
            VxlanAttrs {
                port: Some(8472),
                ..same()
            },
            VxlanAttrs {
                local: Some("10.0.0.9".parse().unwrap()),
                ..same()
            },
            VxlanAttrs {
                underlay: Some(3),
                ..same()
            },
            VxlanAttrs {
                learning: Some(true),
                ..same()
            },
        ] {
            assert!(needs_recreate(
                &vxlan_link("vxlan.routelet", 5, changed),
                &s
            ));
        }
    }

    #[test]
    fn conflicts_need_same_vni_port_and_family_on_another_device() {
        let s = spec();
        let links = vec![
            vxlan_link("vxlan.routelet", 5, same()),
            vxlan_link("v6", 6, VxlanAttrs { v6: true, ..same() }),
            vxlan_link(
                "otherport",
                7,
                VxlanAttrs {
                    port: Some(8472),
                    ..same()
                },
            ),
        ];
        assert!(find_conflict(&links, &s).is_none());
        let mut with_clash = links;
        with_clash.push(vxlan_link(
            "flannel.1",
            8,
            VxlanAttrs {
                underlay: Some(9),
                ..same()
            },
        ));
        assert_eq!(
            find_conflict(&with_clash, &s).map(|l| l.info.name.as_str()),
            Some("flannel.1")
        );
        let external = vec![vxlan_link(
            "cilium_vxlan",
            9,
            VxlanAttrs {
                vni: Some(0),
                local: None,
                underlay: None,
                v6: false,
                external: true,
                ..same()
            },
        )];
        assert_eq!(
            find_conflict(&external, &s).map(|l| l.info.name.as_str()),
            Some("cilium_vxlan")
        );
    }

    #[test]
    fn specs_are_validated() {
        assert!(spec().validate().is_ok());
        let bad = [
            VxlanSpec { vni: 0, ..spec() },
            VxlanSpec {
                vni: 1 << 24,
                ..spec()
            },
            VxlanSpec { port: 0, ..spec() },
            VxlanSpec {
                name: "a-name-that-is-too-long".into(),
                ..spec()
            },
            VxlanSpec {
                mac: [1, 0, 0, 0, 0, 1],
                ..spec()
            },
        ];
        for s in bad {
            assert!(s.validate().is_err(), "{s:?}");
        }
    }
}
