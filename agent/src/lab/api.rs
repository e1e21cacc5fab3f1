//! The lab's Kubernetes API calls (Nodes, the routelet namespace, the LoadBalancer Service and
//! its EndpointSlice), made with the kube client from inside a lab namespace (the API stand-in
//! is only reachable there) or, with a user kubeconfig, from where `up` runs.

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

use super::error::LabError;
use super::state::Pod;
use super::topology::{Topology, LB_PORT, LB_SERVICE, POD_PORT, ROUTELET_NAMESPACE};
use crate::netns;

/// Where API calls go from.
#[derive(Debug, Clone)]
pub struct LabApi {
    pub kubeconfig: PathBuf,
    /// Namespace to make the calls from (`None`: the caller's own).
    pub netns: Option<String>,
}

fn api_err(what: &str) -> impl Fn(kube::Error) -> LabError + '_ {
    move |e| LabError::Api {
        what: what.to_string(),
        message: e.to_string(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T, LabError> {
    serde_json::from_value(v).map_err(|e| LabError::Api {
        what: what.to_string(),
        message: format!("bad object: {e}"),
    })
}

/// 409 AlreadyExists counts as done (a re-run after a partial failure).
fn created<T>(r: Result<T, kube::Error>, what: &str) -> Result<(), LabError> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(api_err(what)(e)),
    }
}

impl LabApi {
    /// Runs `f` with a fresh client on a current-thread runtime (inside `netns` if set).
    fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, LabError>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, LabError>>,
    {
        let kubeconfig = self.kubeconfig.clone();
        let what_owned = what.to_string();
        let job = move || -> Result<T, LabError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| LabError::Api {
                    what: what_owned.clone(),
                    message: format!("runtime: {e}"),
                })?;
            rt.block_on(async {
                let client = crate::k8s::client::client(Some(&kubeconfig))
                    .await
                    .map_err(|e| LabError::Api {
                        what: what_owned.clone(),
                        message: e.to_string(),
                    })?;
                f(client).await
            })
        };
        match &self.netns {
            Some(ns) => {
                netns::run_in(&netns::named(ns), job).map_err(|e| LabError::netns(ns, e))?
            }
            None => std::thread::scope(|s| {
                s.spawn(job).join().unwrap_or_else(|_| {
                    Err(LabError::Api {
                        what: what.to_string(),
                        message: "the API thread panicked".into(),
                    })
                })
            }),
        }
    }

    /// True if the API answers (GET /version or any API error means it is up).
    pub fn reachable(&self) -> bool {
        self.call("version", |c| async move {
            c.apiserver_version()
                .await
                .map(|_| ())
                .map_err(api_err("version"))
        })
        .is_ok()
    }

    /// The routelet namespace and every Node (created, then its status patched as the kubelet
    /// does).
    pub fn create_nodes(&self, topo: &Topology) -> Result<(), LabError> {
        let objects: Vec<(String, Value, Value)> = (1..=topo.nodes)
            .map(|i| (format!("n{i}"), topo.node_object(i), topo.node_status(i)))
            .collect();
        self.call("create nodes", move |c| async move {
            let ns: Namespace = decode(
                "namespace",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ROUTELET_NAMESPACE}}),
            )?;
            created(
                Api::<Namespace>::all(c.clone())
                    .create(&PostParams::default(), &ns)
                    .await,
                "create namespace routelet-system",
            )?;
            let nodes = Api::<Node>::all(c);
            for (name, obj, status) in objects {
                let what = format!("create node {name}");
                let node: Node = decode(&what, obj)?;
                created(nodes.create(&PostParams::default(), &node).await, &what)?;
                nodes
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .map_err(api_err(&format!("patch node {name} status")))?;
            }
            Ok(())
        })
    }

    /// The LoadBalancer Service `default/web` (externalTrafficPolicy Local, port 80).
    pub fn create_service(&self) -> Result<(), LabError> {
        self.call("create service", |c| async move {
            let what = "create service default/web";
            let svc: Service = decode(
                what,
                json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": LB_SERVICE, "namespace": "default"},
                    "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                             "selector": {"app": LB_SERVICE},
                             "ports": [{"port": LB_PORT, "targetPort": POD_PORT, "protocol": "TCP"}]},
                }),
            )?;
            created(
                Api::<Service>::namespaced(c, "default")
                    .create(&PostParams::default(), &svc)
                    .await,
                what,
            )
        })
    }

    /// The EndpointSlice of `web` with `pods` as ready endpoints.
    pub fn create_endpoints(&self, pods: &[Pod]) -> Result<(), LabError> {
        let endpoints: Vec<Value> = pods
            .iter()
            .map(|p| {
                json!({"addresses": [p.ip.to_string()], "nodeName": format!("n{}", p.node),
                       "conditions": {"ready": true, "serving": true, "terminating": false},
                       "targetRef": {"kind": "Pod", "namespace": "default", "name": p.name}})
            })
            .collect();
        self.call("create endpointslice", move |c| async move {
            let what = "create endpointslice default/web-lab";
            let slice: EndpointSlice = decode(
                what,
                json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": format!("{LB_SERVICE}-lab"), "namespace": "default",
                                 "labels": {"kubernetes.io/service-name": LB_SERVICE}},
                    "addressType": "IPv4",
                    "endpoints": endpoints,
                    "ports": [{"port": POD_PORT, "protocol": "TCP"}],
                }),
            )?;
            created(
                Api::<EndpointSlice>::namespaced(c, "default")
                    .create(&PostParams::default(), &slice)
                    .await,
                what,
            )
        })
    }

    /// The first IPv4 address of `web`'s status.loadBalancer.ingress, if allocated.
    pub fn lb_ip(&self) -> Result<Option<Ipv4Addr>, LabError> {
        self.call("get service", |c| async move {
            let svc = Api::<Service>::namespaced(c, "default")
                .get(LB_SERVICE)
                .await
                .map_err(api_err("get service default/web"))?;
            Ok(svc
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip)
                .find_map(|ip| ip.parse::<Ipv4Addr>().ok()))
        })
    }
}
