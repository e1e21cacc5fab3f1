//! Watches of the Kubernetes API: one kube-rs reflector per resource (Nodes, Services,
//! EndpointSlices) keeps a local cache; every change pokes the controller. Errors (API server
//! unreachable, 410 Expired, ...) are logged and retried with backoff by the watcher, while
//! the caches keep the last state they saw.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch as signal;
use tracing::{info, warn};

use super::convert;
use crate::desired::Snapshot;

/// Local caches of the objects the agent routes by.
#[derive(Clone)]
pub struct ClusterCache {
    pub nodes: Store<Node>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
}

impl ClusterCache {
    /// Starts the three watches; the returned receiver (clone it for every consumer) changes
    /// after every change any of them sees.
    pub fn start(client: Client) -> (ClusterCache, signal::Receiver<u64>) {
        let (tx, rx) = signal::channel(0u64);
        let changed = Arc::new(tx);
        let cache = ClusterCache::start_with(client, changed);
        (cache, rx)
    }

    fn start_with(client: Client, changed: Arc<signal::Sender<u64>>) -> ClusterCache {
        ClusterCache {
            nodes: spawn_reflector(Api::<Node>::all(client.clone()), "nodes", changed.clone()),
            services: spawn_reflector(
                Api::<Service>::all(client.clone()),
                "services",
                changed.clone(),
            ),
            slices: spawn_reflector(Api::<EndpointSlice>::all(client), "endpointslices", changed),
        }
    }

    /// Waits until every watch has completed its first list.
    pub async fn wait_ready(&self) {
        let _ = self.nodes.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
    }

    /// The current cluster state as the desired-state function sees it.
    pub fn snapshot(&self) -> Snapshot {
        let nodes = self.nodes.state();
        let services = self.services.state();
        let slices = self.slices.state();
        convert::snapshot(
            nodes.iter().map(|n| n.as_ref()),
            services.iter().map(|s| s.as_ref()),
            slices.iter().map(|s| s.as_ref()),
        )
    }
}

/// Minimum time between two "watch failing" log lines of one resource.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

fn spawn_reflector<K>(
    api: Api<K>,
    what: &'static str,
    changed: Arc<signal::Sender<u64>>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut last_error_log: Option<Instant> = None;
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if failing {
                        info!(resource = what, "watch recovered");
                        failing = false;
                    }
                    changed.send_modify(|generation| *generation += 1);
                }
                Err(e) => {
                    failing = true;
                    if last_error_log.is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL) {
                        warn!(resource = what, error = %e, "watch failing; retrying with backoff, routing goes on with the last known state");
                        last_error_log = Some(Instant::now());
                    }
                }
            }
        }
        warn!(resource = what, "watch ended");
    });
    reader
}
