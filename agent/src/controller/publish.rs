//! Annotations the agent publishes on its own Node for other nodes and for people
//! (`routelet.io/blocks`: the pod blocks this node owns; later the VTEP of the VXLAN
//! datapath). Written from a task of their own with a merge patch, retried until it succeeds,
//! so an API server that is down never holds up routing.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Pod blocks owned by this node, comma-separated.
pub const BLOCKS_ANNOTATION: &str = "routelet.io/blocks";

const RETRY: Duration = Duration::from_secs(5);

/// Keeps `node`'s routelet annotations equal to the latest value of `wanted` (a key mapped to
/// `None` is removed).
pub async fn run(
    client: Client,
    node: String,
    mut wanted: watch::Receiver<BTreeMap<&'static str, Option<String>>>,
) {
    let api: Api<Node> = Api::all(client);
    let mut written: Option<BTreeMap<&'static str, Option<String>>> = None;
    loop {
        let target = wanted.borrow_and_update().clone();
        if written.as_ref() != Some(&target) && !target.is_empty() {
            let annotations: Map<String, Value> = target
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone().map_or(Value::Null, Value::String)))
                .collect();
            let patch = json!({"metadata": {"annotations": annotations}});
            match api
                .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    info!(node = %node, annotations = ?target, "node annotations published");
                    written = Some(target);
                }
                Err(e) => {
                    warn!(node = %node, error = %e, "cannot publish node annotations; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        }
        if wanted.changed().await.is_err() {
            debug!("node annotation publisher stopped");
            return;
        }
    }
}
