//! Pod address blocks at run time (`pod_cidr_source: blocks`): the claim table lives in the
//! ConfigMap `routelet-blocks` (key `blocks.json`) in routelet's namespace. An agent without a
//! block of a cluster CIDR's family claims one with a resourceVersion-checked write (two agents
//! racing for a block: one write wins, the other gets 409, re-reads and picks again). Claims of
//! nodes that have been gone from the cluster for `block_release_grace` are released (the grace
//! keeps a node that has just been created, and already claimed, from losing its block to an
//! agent whose cache has not seen the Node yet). The current table is published to the
//! reconciler, which advertises and blackholes this node's blocks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bgp::types::Prefix;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::agent_config::AgentSettings;
use crate::datapath_config::CNI_NETWORK;
use crate::ipam::blocks::{BlockTable, TABLE_KEY};
use crate::k8s::watch::ClusterCache;

/// Name of the claim table ConfigMap.
pub const CONFIGMAP: &str = "routelet-blocks";
/// The table is re-read at least this often (and after every cluster change).
const RESYNC: Duration = Duration::from_secs(10);
/// Attempts per pass when writes conflict.
const MAX_ATTEMPTS: usize = 20;

pub struct BlockAllocator {
    pub client: Client,
    pub cache: ClusterCache,
    pub settings: Arc<AgentSettings>,
    pub node: String,
    /// The latest table read (or written) by this agent.
    pub table: watch::Sender<BlockTable>,
}

impl BlockAllocator {
    pub async fn run(self, mut changed: watch::Receiver<u64>) {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let mut missing_since: BTreeMap<String, Instant> = BTreeMap::new();
        loop {
            if let Err(e) = self.pass(&api, &mut missing_since).await {
                warn!(error = %e, configmap = CONFIGMAP, "pod block table: update failed; retrying");
            }
            // While a release is pending, look again soon after its grace ends.
            let wait = if missing_since.is_empty() {
                RESYNC
            } else {
                RESYNC.min(Duration::from_secs(1))
            };
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Reads the table, claims what this node lacks, releases what deleted nodes held.
    async fn pass(
        &self,
        api: &Api<ConfigMap>,
        missing_since: &mut BTreeMap<String, Instant>,
    ) -> Result<(), kube::Error> {
        for attempt in 0..MAX_ATTEMPTS {
            let current = api.get_opt(CONFIGMAP).await?;
            let table = match BlockTable::parse(
                current
                    .as_ref()
                    .and_then(|c| c.data.as_ref())
                    .and_then(|d| d.get(TABLE_KEY))
                    .map(String::as_str),
            ) {
                Ok(t) => t,
                Err(e) => {
                    // Never overwrite a table we cannot read: someone must repair it.
                    warn!(configmap = CONFIGMAP, error = %e, "pod block table unreadable; not touching it");
                    return Ok(());
                }
            };
            let mut next = table.clone();
            let released = self.release_missing(&mut next, missing_since);
            let claimed = self.claim_missing(&mut next);
            if next == table {
                self.table.send_replace(table);
                return Ok(());
            }
            let write = match current {
                Some(mut cm) => {
                    cm.data
                        .get_or_insert_with(BTreeMap::new)
                        .insert(TABLE_KEY.to_string(), next.to_json());
                    api.replace(CONFIGMAP, &PostParams::default(), &cm).await
                }
                None => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(CONFIGMAP.to_string()),
                            ..ObjectMeta::default()
                        },
                        data: Some([(TABLE_KEY.to_string(), next.to_json())].into()),
                        ..ConfigMap::default()
                    };
                    api.create(&PostParams::default(), &cm).await
                }
            };
            match write {
                Ok(_) => {
                    for b in &claimed {
                        info!(block = %b, "pod block claimed");
                    }
                    for (b, n) in &released {
                        info!(block = %b, node = %n, "pod block of a deleted node released");
                    }
                    self.table.send_replace(next);
                    return Ok(());
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    debug!(attempt, "pod block table changed under us; re-reading");
                    let jitter = Duration::from_millis(5 + (attempt as u64 * 7) % 40);
                    tokio::time::sleep(jitter).await;
                }
                Err(e) => return Err(e),
            }
        }
        warn!("pod block table: too many conflicting writes; trying again later");
        Ok(())
    }

    /// One block per cluster CIDR family this node has none of, and one more of a family
    /// whose blocks are nearly full (by the CNI plugin's allocations). Returns the new claims.
    fn claim_missing(&self, table: &mut BlockTable) -> Vec<Prefix> {
        let mut claimed = Vec::new();
        let mine = table.blocks_of(&self.node);
        for cidr in &self.settings.cluster_cidrs {
            let family: Vec<Prefix> = mine.iter().filter(|b| cidr.contains(*b)).copied().collect();
            if !family.is_empty() && !self.nearly_full(&family) {
                continue;
            }
            let size = match cidr {
                Prefix::V4(_) => self.settings.block_size,
                Prefix::V6(_) => self.settings.block_size_v6,
            };
            match table.free_block(cidr, size, &self.node) {
                Some(b) => {
                    table.claims.insert(b, self.node.clone());
                    claimed.push(b);
                }
                None => warn!(cluster_cidr = %cidr, "no free pod block left in the cluster CIDR"),
            }
        }
        claimed
    }

    /// Whether fewer than a quarter block of addresses is left in `blocks` (all of one
    /// family), counting the CNI plugin's allocations on this node. Unreadable state counts as
    /// not full (a new block is only taken on evidence).
    fn nearly_full(&self, blocks: &[Prefix]) -> bool {
        let cni = &self.settings.datapath.cni;
        let mut free = 0u128;
        let mut capacity = 0u128;
        for block in blocks {
            match crate::cni::ipam::usage(&cni.data_dir, CNI_NETWORK, block) {
                Ok((used, cap)) => {
                    free += (cap as u128).saturating_sub(used as u128);
                    capacity = capacity.max(cap as u128);
                }
                Err(e) => {
                    debug!(block = %block, error = %e, "cannot read the block's address use");
                    return false;
                }
            }
        }
        let full = free < (capacity / 4).max(1);
        if full {
            info!(blocks = ?blocks, free, "pod blocks nearly full; claiming another");
        }
        full
    }

    /// Drops claims of nodes missing from the cache for `block_release_grace`.
    fn release_missing(
        &self,
        table: &mut BlockTable,
        missing_since: &mut BTreeMap<String, Instant>,
    ) -> Vec<(Prefix, String)> {
        let nodes: BTreeSet<String> = self
            .cache
            .nodes
            .state()
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let owners: BTreeSet<String> = table.claims.values().cloned().collect();
        missing_since.retain(|n, _| owners.contains(n) && !nodes.contains(n));
        let now = Instant::now();
        let mut expired = BTreeSet::new();
        for owner in owners {
            if nodes.contains(&owner) || owner == self.node {
                continue;
            }
            let since = *missing_since.entry(owner.clone()).or_insert(now);
            if now.duration_since(since) >= self.settings.block_release_grace {
                expired.insert(owner);
            }
        }
        let released: Vec<(Prefix, String)> = table
            .claims
            .iter()
            .filter(|(_, n)| expired.contains(*n))
            .map(|(b, n)| (*b, n.clone()))
            .collect();
        for (b, _) in &released {
            table.claims.remove(b);
        }
        released
    }
}
