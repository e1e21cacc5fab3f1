//! The datapath owner of `routelet agent`: this node's VXLAN devices, their VTEP peers, and the
//! static routes to other nodes' pod prefixes (with this node's blackholes), programmed from
//! the forwarding plan in flannel's order — neighbour, FDB, route on the way in, the reverse
//! on the way out — plus the CNI conflist once the node is ready.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use bgp::types::Prefix;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::agent_config::AgentSettings;
use crate::datapath::{self as dp, Netlink};
use crate::datapath_config::{
    Backend, CrossSubnet, CNI_CONFLIST, CNI_NETWORK, VXLAN_DEVICE_V4, VXLAN_DEVICE_V6,
};
use crate::desired::forwarding::{
    format_mac, forwarding_plan, local_vteps, pod_prefixes, ForwardingPlan, KernelView, LocalVtep,
    PathKind, VtepPeer,
};
use crate::desired::{NodeInfo, ObjectRef, Problem, Snapshot};
use crate::fib::{self, FibCommand, KernelRoute};

/// How long the FIB task may take to confirm routes before peers are removed anyway.
const FIB_BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// One family's VXLAN device as last programmed.
#[derive(Debug, Clone)]
struct Device {
    ifindex: u32,
    vtep: LocalVtep,
    peers: BTreeSet<VtepPeer>,
}

/// What a datapath pass found and produced, for the reconciler.
#[derive(Debug, Default)]
pub struct DatapathOutcome {
    pub problems: Vec<Problem>,
    /// `routelet.io/vtep-mac(-v6)` values (None = remove).
    pub annotations: BTreeMap<&'static str, Option<String>>,
}

/// The datapath state; one owner (the reconciler).
pub struct Datapath {
    nl: Netlink,
    devices: [Option<Device>; 2],
    paths: BTreeMap<(String, bool), PathKind>,
    /// The static routes last handed to the FIB task (it owns repairing them).
    sent_routes: Option<Vec<KernelRoute>>,
    /// A pass completed (before the first, a device left by an earlier configuration that
    /// is no longer wanted is removed).
    passed: bool,
}

impl Datapath {
    pub fn new() -> Result<Datapath, dp::DatapathError> {
        if let Err(e) = dp::set_forwarding() {
            warn!(error = %e, "cannot enable IP forwarding; pod traffic to other nodes will not flow");
        }
        Ok(Datapath {
            nl: Netlink::new()?,
            devices: [None, None],
            paths: BTreeMap::new(),
            sent_routes: None,
            passed: false,
        })
    }

    /// One full pass: devices, kernel view, plan, peers and routes in order, conflist.
    pub async fn reconcile(
        &mut self,
        settings: &AgentSettings,
        snapshot: &Snapshot,
        me: &NodeInfo,
        blackholes: &BTreeSet<Prefix>,
        fib_tx: Option<&mpsc::Sender<FibCommand>>,
    ) -> DatapathOutcome {
        let mut out = DatapathOutcome::default();
        let (want_v4, want_v6) = local_vteps(settings, me);
        let mut view = KernelView::default();
        for (slot, want) in [(0usize, want_v4), (1, want_v6)] {
            let ifindex = match want {
                Some(vtep) => self.ensure_device(settings, slot, vtep, me, &mut out).await,
                None => None,
            };
            if slot == 0 {
                view.vxlan_v4 = ifindex;
            } else {
                view.vxlan_v6 = ifindex;
            }
        }
        match dp::connected_subnets(&self.nl).await {
            Ok(subnets) => view.connected = subnets.into_iter().map(|c| c.prefix).collect(),
            Err(e) => warn!(error = %e, "cannot read this node's connected subnets"),
        }
        // Gateways towards other nodes matter only for `cross_subnet: routed`.
        let routed = settings.datapath.cross_subnet == CrossSubnet::Routed
            && settings.datapath.backend != Backend::Vxlan;
        for node in snapshot
            .nodes
            .values()
            .filter(|n| routed && n.name != me.name)
        {
            for addr in &node.addresses {
                if view.connected.iter().any(|c| c.contains(addr)) {
                    continue;
                }
                if let Ok(Some(found)) = dp::route_lookup(&self.nl, *addr).await {
                    if let Some(gw) = found.gateway {
                        view.gateways.insert(*addr, gw);
                    }
                }
            }
        }
        let plan = forwarding_plan(settings, snapshot, me, &view);
        self.log_paths(&plan);
        out.problems.extend(plan.problems.iter().cloned());

        // In: neighbours + FDB for new peers before any route uses them.
        for slot in 0..2 {
            let wanted = peers_of(&plan, slot);
            if let Some(dev) = self.devices[slot].as_mut() {
                let union: BTreeSet<VtepPeer> = dev.peers.union(wanted).copied().collect();
                sync_peers(&self.nl, dev.ifindex, &union).await;
            }
        }
        // Something goes away below (VTEP entries, a device): its routes must be gone first.
        let stale_peers = (0..2).any(|slot| {
            self.devices[slot]
                .as_ref()
                .is_some_and(|d| !d.peers.is_subset(peers_of(&plan, slot)))
        });
        let device_goes = [want_v4, want_v6]
            .iter()
            .enumerate()
            .any(|(slot, want)| want.is_none() && (self.devices[slot].is_some() || !self.passed));
        // Routes (static: blackholes + plan), sent when they changed; when something goes
        // away below, wait until the FIB task applied them (otherwise the reconcile loop
        // never waits on a busy FIB writer).
        if let Some(tx) = fib_tx {
            let mut routes: Vec<KernelRoute> = blackholes
                .iter()
                .map(|prefix| KernelRoute {
                    prefix: *prefix,
                    next_hops: vec![fib::BLACKHOLE],
                })
                .collect();
            routes.extend(plan.routes.iter().cloned());
            if self.sent_routes.as_ref() != Some(&routes) {
                let _ = tx.send(FibCommand::SetStatic(routes.clone())).await;
                self.sent_routes = Some(routes);
            }
            if stale_peers || device_goes {
                let (ack, done) = oneshot::channel();
                if tx.send(FibCommand::Barrier(ack)).await.is_ok()
                    && tokio::time::timeout(FIB_BARRIER_TIMEOUT, done)
                        .await
                        .is_err()
                {
                    warn!("the FIB writer did not confirm the routes in time");
                }
            }
        }
        // Out: stale FDB then neighbour entries, now that no route uses them (without stale
        // peers the sync above already left the kernel as wanted).
        for slot in 0..2 {
            let wanted = peers_of(&plan, slot).clone();
            if let Some(dev) = self.devices[slot].as_mut() {
                if !dev.peers.is_subset(&wanted) {
                    sync_peers(&self.nl, dev.ifindex, &wanted).await;
                }
                dev.peers = wanted;
            }
        }
        // Devices no longer wanted go last (their routes and peers are gone).
        for (slot, want) in [(0usize, want_v4), (1, want_v6)] {
            if want.is_none() {
                let name = device_name(slot);
                if self.devices[slot].take().is_some() || !self.passed {
                    if let Err(e) = dp::remove_vxlan(&self.nl, name).await {
                        warn!(device = name, error = %e, "cannot remove the VXLAN device");
                    }
                }
            }
        }
        for (slot, key) in [
            (0usize, crate::desired::annotations::VTEP_MAC),
            (1, crate::desired::annotations::VTEP_MAC_V6),
        ] {
            let value = self.devices[slot].as_ref().map(|d| format_mac(&d.vtep.mac));
            out.annotations.insert(key, value);
        }
        self.write_conflist(settings, me, &mut out).await;
        self.passed = true;
        out
    }

    /// Creates or repairs the VXLAN device of `slot`; its ifindex, or None (problem reported).
    async fn ensure_device(
        &mut self,
        settings: &AgentSettings,
        slot: usize,
        vtep: LocalVtep,
        me: &NodeInfo,
        out: &mut DatapathOutcome,
    ) -> Option<u32> {
        let name = device_name(slot);
        let underlay = match self.underlay(settings, vtep.local).await {
            Ok(link) => link,
            Err(message) => {
                out.problems
                    .push(node_problem(me, "VXLANUnderlay", message));
                return None;
            }
        };
        let cfg = &settings.datapath.vxlan;
        let spec = dp::VxlanSpec {
            name: name.to_string(),
            vni: cfg.vni,
            port: cfg.port,
            local: vtep.local,
            underlay_ifindex: underlay.ifindex,
            mtu: cfg
                .mtu
                .unwrap_or_else(|| dp::vxlan_mtu(underlay.mtu, vtep.local.is_ipv6())),
            mac: vtep.mac,
            vtep: vtep.vtep,
        };
        match dp::ensure_vxlan(&self.nl, &spec).await {
            Ok(ifindex) => {
                let known = self.devices[slot].as_ref().map(|d| d.ifindex);
                if known != Some(ifindex) {
                    info!(device = name, ifindex, vni = spec.vni, port = spec.port,
                          vtep = %spec.vtep, mtu = spec.mtu, "VXLAN device ready");
                    // A new device starts without peers.
                    self.devices[slot] = Some(Device {
                        ifindex,
                        vtep,
                        peers: BTreeSet::new(),
                    });
                } else if let Some(d) = self.devices[slot].as_mut() {
                    d.vtep = vtep;
                }
                Some(ifindex)
            }
            Err(e) => {
                out.problems.push(node_problem(
                    me,
                    "VXLANDevice",
                    format!("cannot set up {name}: {e}"),
                ));
                self.devices[slot] = None;
                None
            }
        }
    }

    /// The underlay link: the configured `interface`, else the one holding `local`.
    async fn underlay(
        &self,
        settings: &AgentSettings,
        local: IpAddr,
    ) -> Result<dp::LinkInfo, String> {
        match &settings.datapath.interface {
            Some(name) => match dp::link_by_name(&self.nl, name).await {
                Ok(Some(link)) => Ok(link),
                Ok(None) => Err(format!(
                    "interface `{name}` (config key `interface`) does not exist"
                )),
                Err(e) => Err(format!("cannot read interface `{name}`: {e}")),
            },
            None => match dp::link_with_address(&self.nl, local).await {
                Ok(Some(link)) => Ok(link),
                Ok(None) => Err(format!(
                    "no interface holds the node address {local}; set `interface` in the config"
                )),
                Err(e) => Err(format!("cannot find the interface of {local}: {e}")),
            },
        }
    }

    fn log_paths(&mut self, plan: &ForwardingPlan) {
        if plan.paths != self.paths {
            for ((node, v4), path) in &plan.paths {
                if self.paths.get(&(node.clone(), *v4)) != Some(path) {
                    info!(node = %node, family = if *v4 { "ipv4" } else { "ipv6" }, path = %path, "path to node");
                }
            }
            self.paths = plan.paths.clone();
        }
    }

    /// The pod MTU: `cni.mtu`, else the underlay MTU minus the VXLAN overhead when any node
    /// may be reached through VXLAN.
    async fn pod_mtu(&self, settings: &AgentSettings, me: &NodeInfo) -> Option<u32> {
        if let Some(m) = settings.datapath.cni.mtu {
            return Some(m);
        }
        let local = me.addresses.first()?;
        let link = self.underlay(settings, *local).await.ok()?;
        Some(if settings.datapath.may_use_vxlan() {
            dp::vxlan_mtu(link.mtu, local.is_ipv6())
        } else {
            link.mtu
        })
    }

    async fn write_conflist(
        &mut self,
        settings: &AgentSettings,
        me: &NodeInfo,
        out: &mut DatapathOutcome,
    ) {
        let cni = &settings.datapath.cni;
        let ranges = pod_prefixes(settings, me);
        if !cni.enabled || ranges.is_empty() {
            return;
        }
        let mtu = self.pod_mtu(settings, me).await;
        let value = crate::cni::conflist::render(CNI_NETWORK, mtu, &ranges, &cni.data_dir);
        match crate::cni::conflist::write_conflist(&cni.conf_dir, CNI_CONFLIST, &value) {
            Ok(changed) => {
                if changed {
                    info!(dir = %cni.conf_dir.display(), file = CNI_CONFLIST, "CNI configuration written");
                }
            }
            Err(e) => out.problems.push(node_problem(
                me,
                "CNIConfig",
                format!(
                    "cannot write {} in {}: {e}",
                    CNI_CONFLIST,
                    cni.conf_dir.display()
                ),
            )),
        }
    }
}

fn device_name(slot: usize) -> &'static str {
    if slot == 0 {
        VXLAN_DEVICE_V4
    } else {
        VXLAN_DEVICE_V6
    }
}

fn peers_of(plan: &ForwardingPlan, slot: usize) -> &BTreeSet<VtepPeer> {
    if slot == 0 {
        &plan.peers_v4
    } else {
        &plan.peers_v6
    }
}

fn node_problem(me: &NodeInfo, reason: &'static str, message: String) -> Problem {
    Problem {
        object: ObjectRef::Node(me.name.clone()),
        reason,
        message,
    }
}

async fn sync_peers(nl: &Netlink, ifindex: u32, wanted: &BTreeSet<VtepPeer>) {
    match dp::sync_peers(nl, ifindex, wanted).await {
        Ok(report) => {
            if !report.errors.is_empty() {
                warn!(ifindex, errors = ?report.errors, "some VTEP neighbour/FDB entries failed");
            }
        }
        Err(e) => warn!(ifindex, error = %e, "cannot program VTEP neighbours/FDB"),
    }
}
