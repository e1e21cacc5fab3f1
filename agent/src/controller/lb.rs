//! LoadBalancer IP allocation, run by the agent that holds the allocator Lease: services from
//! the cache -> `ipam::lb::allocate` -> `status.loadBalancer.ingress` written where it differs;
//! a Service that must wait gets a Warning Event saying why (once per reason).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};

use super::events::EventSink;
use crate::agent_config::AgentSettings;
use crate::desired::{ObjectRef, Problem, ServiceKey};
use crate::ipam::lb::{allocate, LbOutcome, LbRequest};
use crate::k8s::convert::lb_request;
use crate::k8s::watch::ClusterCache;

/// Failed status writes are retried after this long even without a change.
const RETRY: Duration = Duration::from_secs(5);

pub struct LbAllocator {
    pub client: Client,
    pub cache: ClusterCache,
    pub settings: Arc<AgentSettings>,
    pub events: EventSink,
}

impl LbAllocator {
    pub async fn run(self, mut changed: watch::Receiver<u64>, mut leader: watch::Receiver<bool>) {
        // (service, reason) already reported as an Event.
        let mut reported: BTreeSet<(ServiceKey, String)> = BTreeSet::new();
        loop {
            let mut failed = false;
            if *leader.borrow() {
                failed = !self.reconcile(&mut reported).await;
            }
            let retry = async {
                if failed {
                    tokio::time::sleep(RETRY).await
                } else {
                    std::future::pending::<()>().await
                }
            };
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                r = leader.changed() => if r.is_err() { return },
                _ = retry => {}
            }
        }
    }

    /// One allocation pass; false when a status write failed (retried later).
    async fn reconcile(&self, reported: &mut BTreeSet<(ServiceKey, String)>) -> bool {
        let services = self.cache.services.state();
        let mut requests: BTreeMap<ServiceKey, LbRequest> = BTreeMap::new();
        let mut problems = Vec::new();
        for svc in &services {
            let Some(name) = svc.metadata.name.as_deref() else {
                continue;
            };
            let key = ServiceKey::new(svc.metadata.namespace.as_deref().unwrap_or("default"), name);
            if let Some(req) = lb_request(&key, svc, &mut problems) {
                requests.insert(key, req);
            }
        }
        // Forget reports about Services that are gone (or no longer ours).
        reported.retain(|(key, _)| requests.contains_key(key));
        for p in problems {
            self.report(reported, p, &services);
        }
        let mut ok = true;
        for (key, outcome) in allocate(&self.settings.pools, &requests) {
            let current: BTreeSet<IpAddr> = requests
                .get(&key)
                .map(|r| r.current.iter().copied().collect())
                .unwrap_or_default();
            let want: BTreeSet<IpAddr> = match &outcome {
                LbOutcome::Assigned(ips) => ips.iter().copied().collect(),
                LbOutcome::Pending(reason) => {
                    self.report(
                        reported,
                        Problem {
                            object: ObjectRef::Service(key.clone()),
                            reason: "AllocationFailed",
                            message: format!("no LoadBalancer IP: {reason}"),
                        },
                        &services,
                    );
                    BTreeSet::new()
                }
            };
            if want == current {
                continue;
            }
            let ingress: Vec<_> = want
                .iter()
                .map(|ip| json!({"ip": ip.to_string()}))
                .collect();
            let api: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            match api
                .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => info!(service = %key, ips = ?want, "LoadBalancer IPs written"),
                Err(e) => {
                    warn!(service = %key, error = %e, "cannot write LoadBalancer IPs; retrying");
                    ok = false;
                }
            }
        }
        ok
    }

    fn report(
        &self,
        reported: &mut BTreeSet<(ServiceKey, String)>,
        problem: Problem,
        services: &[Arc<Service>],
    ) {
        let ObjectRef::Service(key) = &problem.object else {
            return;
        };
        if !reported.insert((key.clone(), problem.message.clone())) {
            return;
        }
        warn!(service = %key, reason = problem.reason, "{}", problem.message);
        let uid = services
            .iter()
            .find(|s| {
                s.metadata.name.as_deref() == Some(key.name.as_str())
                    && s.metadata.namespace.as_deref() == Some(key.namespace.as_str())
            })
            .and_then(|s| s.metadata.uid.clone());
        self.events.report(problem, uid);
    }
}
