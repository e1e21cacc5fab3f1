//! `routelet lab apiserver` driven by the real kube-rs client, the way the agent uses it:
//! CRUD and error codes, patches, status subresource, watcher + reflector, 410 recovery,
//! selectors, Leases, Events, discovery, persistence across a restart, and raw HTTP errors.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agent::lab::apiserver::{Options, Server};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start(opts: Options) -> (Server, Client) {
    let server = Server::start(opts).await.expect("server starts");
    let client = client_for(server.local_addr());
    (server, client)
}

fn client_for(addr: SocketAddr) -> Client {
    let cfg = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    Client::try_from(cfg).expect("client")
}

fn node(name: &str, labels: Value) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"podCIDRs": ["10.244.1.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}, {"type": "Hostname", "address": name}]},
    }))
    .expect("node")
}

fn api_code(e: &kube::Error) -> Option<(u16, String)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.reason.clone())),
        _ => None,
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(f(), "timed out waiting for {what}");
}

fn rv(o: &impl kube::Resource) -> u64 {
    o.resource_version()
        .and_then(|r| r.parse().ok())
        .expect("numeric resourceVersion")
}

#[tokio::test]
async fn node_crud_conflicts_and_patches() {
    let (server, client) = start(Options::new(loopback())).await;
    let nodes: Api<Node> = Api::all(client);
    let pp = PostParams::default();

    let created = nodes
        .create(&pp, &node("n1", json!({"a": "1"})))
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, None); // Nodes do not track generation
                                                   // Nodes keep .status on create (the kubelet registers that way).
    assert_eq!(
        created
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .map(Vec::len),
        Some(2)
    );

    let e = nodes
        .create(&pp, &node("n1", json!({})))
        .await
        .expect_err("duplicate");
    assert_eq!(api_code(&e), Some((409, "AlreadyExists".into())));
    let e = nodes.get("nope").await.expect_err("missing");
    assert_eq!(api_code(&e), Some((404, "NotFound".into())));
    if let kube::Error::Api(s) = &e {
        assert_eq!(s.message, "nodes \"nope\" not found");
    }

    // Replace with the current resourceVersion, then with the stale one.
    let mut fresh = nodes.get("n1").await.expect("get");
    fresh.labels_mut().insert("b".into(), "2".into());
    let replaced = nodes.replace("n1", &pp, &fresh).await.expect("replace");
    assert!(rv(&replaced) > rv(&created));
    let e = nodes.replace("n1", &pp, &fresh).await.expect_err("stale");
    assert_eq!(api_code(&e), Some((409, "Conflict".into())));
    let e = nodes
        .replace("nope", &pp, &node("nope", json!({})))
        .await
        .expect_err("missing");
    assert_eq!(api_code(&e), Some((404, "NotFound".into())));

    // A no-op update keeps the resourceVersion (no watch event), as kube-apiserver does.
    let same = nodes
        .replace("n1", &pp, &replaced)
        .await
        .expect("no-op replace");
    assert_eq!(rv(&same), rv(&replaced));

    // Patches: merge, strategic (status.addresses merged by type on /status), JSON patch.
    let ps = PatchParams::default();
    let p = nodes
        .patch("n1", &ps, &Patch::Merge(json!({"metadata": {"annotations": {"routelet.io/asn": "65001"}, "labels": {"a": null}}})))
        .await
        .expect("merge");
    assert_eq!(
        p.annotations().get("routelet.io/asn").map(String::as_str),
        Some("65001")
    );
    assert!(!p.labels().contains_key("a"));
    let p = nodes
        .patch_status(
            "n1",
            &ps,
            &Patch::Strategic(
                json!({"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.12"}]}}),
            ),
        )
        .await
        .expect("strategic status");
    let addrs = p.status.and_then(|s| s.addresses).expect("addresses");
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0].address, "192.0.2.12");
    let p = nodes
        .patch(
            "n1",
            &ps,
            &Patch::<Value>::Json(
                serde_json::from_value(json!([
            {"op": "add", "path": "/metadata/labels/c", "value": "3"}]))
                .expect("json patch"),
            ),
        )
        .await
        .expect("json patch");
    assert_eq!(p.labels().get("c").map(String::as_str), Some("3"));
    // The main resource ignores .status changes.
    let p = nodes
        .patch(
            "n1",
            &ps,
            &Patch::Merge(json!({"status": {"addresses": []}})),
        )
        .await
        .expect("status ignored");
    assert_eq!(p.status.and_then(|s| s.addresses).map(|a| a.len()), Some(2));
    // A patch that names a stale resourceVersion is a conflict.
    let e = nodes
        .patch(
            "n1",
            &ps,
            &Patch::Merge(json!({"metadata": {"resourceVersion": created.resource_version()}})),
        )
        .await
        .expect_err("stale patch");
    assert_eq!(api_code(&e), Some((409, "Conflict".into())));
    // Server-side apply is not supported: 415.
    let e = nodes
        .patch(
            "n1",
            &PatchParams::apply("test"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})),
        )
        .await
        .expect_err("apply");
    assert_eq!(api_code(&e), Some((415, "UnsupportedMediaType".into())));

    let deleted = nodes
        .delete("n1", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(deleted.left().is_some());
    let e = nodes.get("n1").await.expect_err("gone");
    assert_eq!(api_code(&e), Some((404, "NotFound".into())));
    server.shutdown().await;
}

#[tokio::test]
async fn service_status_subresource_and_defaults() {
    let (server, client) = start(Options::new(loopback())).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}},
    }))
    .expect("service");
    let created = svcs
        .create(&PostParams::default(), &svc)
        .await
        .expect("create");
    let spec = created.spec.clone().expect("spec");
    assert!(spec
        .cluster_ip
        .as_deref()
        .is_some_and(|ip| ip.starts_with("10.")));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Cluster"));
    let port = &spec.ports.expect("ports")[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert!(port.node_port.is_some_and(|p| (30000..=32767).contains(&p)));
    // Status is cleared on create, as kube-apiserver does for Services.
    assert!(created
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .is_none());

    let st = svcs
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}}),
            ),
        )
        .await
        .expect("patch_status");
    let ingress = |s: &Service| {
        s.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.clone())
            .unwrap_or_default()
    };
    assert_eq!(ingress(&st)[0].ip.as_deref(), Some("203.0.113.1"));

    // replace (main) keeps status; replace_status changes only status.
    let mut cur = svcs.get("web").await.expect("get");
    cur.status = None;
    cur.labels_mut().insert("x".into(), "y".into());
    let r = svcs
        .replace("web", &PostParams::default(), &cur)
        .await
        .expect("replace");
    assert_eq!(ingress(&r).len(), 1);
    assert_eq!(r.labels().get("x").map(String::as_str), Some("y"));
    let mut cur = r.clone();
    cur.labels_mut().insert("x".into(), "changed".into());
    cur.status = Some(serde_json::from_value(json!({"loadBalancer": {}})).expect("status"));
    let r2 = svcs
        .replace_status("web", &PostParams::default(), &cur)
        .await
        .expect("replace_status");
    assert!(ingress(&r2).is_empty());
    assert_eq!(r2.labels().get("x").map(String::as_str), Some("y"));
    assert_eq!(
        r2.spec.and_then(|s| s.cluster_ip),
        r.spec.and_then(|s| s.cluster_ip)
    );

    // A namespace that does not exist: 404 like kube-apiserver.
    let other: Api<ConfigMap> = Api::namespaced(client, "missing");
    let cm: ConfigMap = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
    )
    .expect("cm");
    let e = other
        .create(&PostParams::default(), &cm)
        .await
        .expect_err("no namespace");
    assert_eq!(api_code(&e), Some((404, "NotFound".into())));
    server.shutdown().await;
}

#[tokio::test]
async fn reflector_sees_adds_modifies_deletes_and_selectors() {
    let (server, client) = start(Options::new(loopback())).await;
    let nodes: Api<Node> = Api::all(client);
    let (reader, writer) = reflector::store::<Node>();
    let (sel_reader, sel_writer) = reflector::store::<Node>();
    let all = tokio::spawn(
        reflector(writer, watcher(nodes.clone(), watcher::Config::default()))
            .default_backoff()
            .for_each(|_| async {}),
    );
    let selected = tokio::spawn(
        reflector(
            sel_writer,
            watcher(
                nodes.clone(),
                watcher::Config::default().labels("role=edge"),
            ),
        )
        .default_backoff()
        .for_each(|_| async {}),
    );
    reader.wait_until_ready().await.expect("ready");
    sel_reader.wait_until_ready().await.expect("ready");

    let pp = PostParams::default();
    nodes
        .create(&pp, &node("a", json!({"role": "edge"})))
        .await
        .expect("a");
    nodes
        .create(&pp, &node("b", json!({"role": "core"})))
        .await
        .expect("b");
    eventually("two nodes", || reader.state().len() == 2).await;
    eventually("one edge node", || sel_reader.state().len() == 1).await;

    // b moves into the selection, a moves out.
    nodes
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": "edge"}}})),
        )
        .await
        .expect("b");
    nodes
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": "core"}}})),
        )
        .await
        .expect("a");
    eventually("selection follows labels", || {
        let s = sel_reader.state();
        s.len() == 1 && s[0].name_any() == "b"
    })
    .await;
    eventually("modify seen", || {
        reader.state().iter().any(|n| {
            n.name_any() == "a" && n.labels().get("role").map(String::as_str) == Some("core")
        })
    })
    .await;
    nodes
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("delete seen", || reader.state().len() == 1).await;

    // Label and field selectors on list.
    let l = nodes
        .list(&ListParams::default().labels("role in (edge),!missing"))
        .await
        .expect("list");
    assert_eq!(l.items.len(), 1);
    let l = nodes
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("list");
    assert_eq!(l.items.len(), 1);
    let e = nodes
        .list(&ListParams::default().fields("spec.bogus=1"))
        .await
        .expect_err("bad field");
    assert_eq!(api_code(&e).map(|c| c.0), Some(400));
    all.abort();
    selected.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn paging_and_expired_watch() {
    let mut opts = Options::new(loopback());
    opts.history = 3;
    let (server, client) = start(opts).await;
    let nodes: Api<Node> = Api::all(client);
    let first = nodes
        .create(&PostParams::default(), &node("p0", json!({})))
        .await
        .expect("p0");
    for i in 1..7 {
        nodes
            .create(&PostParams::default(), &node(&format!("p{i}"), json!({})))
            .await
            .expect("create");
    }
    let page = nodes
        .list(&ListParams::default().limit(4))
        .await
        .expect("page 1");
    assert_eq!(page.items.len(), 4);
    let token = page.metadata.continue_.clone().expect("continue");
    let page2 = nodes
        .list(&ListParams::default().limit(4).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(page2.items.len(), 3);
    assert!(page2.metadata.continue_.is_none());

    // The history holds 3 changes: a watch from the first node's resourceVersion is expired.
    let mut stream = nodes
        .watch(
            &WatchParams::default(),
            first.resource_version().as_deref().unwrap_or("1"),
        )
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Error(e)) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        _ => unreachable!("expected a 410 ERROR event"),
    }
    // A watcher still works (it lists, then watches from the list's resourceVersion).
    let (reader, writer) = reflector::store::<Node>();
    let h = tokio::spawn(
        reflector(
            writer,
            watcher(nodes.clone(), watcher::Config::default().page_size(2)),
        )
        .default_backoff()
        .for_each(|_| async {}),
    );
    reader.wait_until_ready().await.expect("ready");
    assert_eq!(reader.state().len(), 7);
    h.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn leases_events_and_discovery() {
    let (server, client) = start(Options::new(loopback())).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "routelet-leader"},
        "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 15, "acquireTime": "2025-01-01T00:00:00.000000Z"},
    }))
    .expect("lease");
    let l1 = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create");
    let e = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect_err("exists");
    assert_eq!(api_code(&e), Some((409, "AlreadyExists".into())));
    // Two candidates renew from the same read: the second loses with 409.
    let mut a = l1.clone();
    let mut b = l1.clone();
    a.spec.as_mut().expect("spec").holder_identity = Some("node-a".into());
    a.spec.as_mut().expect("spec").lease_transitions = Some(1);
    b.spec.as_mut().expect("spec").holder_identity = Some("node-b".into());
    leases
        .replace("routelet-leader", &PostParams::default(), &a)
        .await
        .expect("a renews");
    let e = leases
        .replace("routelet-leader", &PostParams::default(), &b)
        .await
        .expect_err("b loses");
    assert_eq!(api_code(&e), Some((409, "Conflict".into())));

    // events.k8s.io/v1 through kube-runtime's Recorder (create, then a merge patch for the series).
    let recorder = kube::runtime::events::Recorder::new(client.clone(), "routelet-test".into());
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some("n1".into()),
        ..Default::default()
    };
    let ev = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "BadAnnotation".into(),
        note: Some("routelet.io/asn: not a number".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.expect("publish");
    recorder
        .publish(&ev, &reference)
        .await
        .expect("publish again (series patch)");
    let events: Api<EventV1> = Api::namespaced(client.clone(), "default");
    let list = events.list(&ListParams::default()).await.expect("events");
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));

    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    for (group, kind) in [
        ("", "Node"),
        ("", "Service"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("coordination.k8s.io", "Lease"),
        ("events.k8s.io", "Event"),
    ] {
        let found = discovery.groups().any(|g| {
            g.name() == group
                && g.recommended_resources()
                    .iter()
                    .any(|(r, _)| r.kind == kind)
        });
        assert!(found, "discovery finds {group}/{kind}");
    }
    let version = client.apiserver_version().await.expect("version");
    assert_eq!(version.major, "1");
    server.shutdown().await;
}

static N: AtomicUsize = AtomicUsize::new(0);

fn data_file() -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "routelet-apiserver-test-{}-{}.json",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&p);
    p
}

#[tokio::test]
async fn persistence_across_restart_and_reflector_resync() {
    let data = data_file();
    let mut opts = Options::new(loopback());
    opts.data = Some(data.clone());
    let (server, client) = start(opts.clone()).await;
    let addr = server.local_addr();
    let nodes: Api<Node> = Api::all(client.clone());
    let n1 = nodes
        .create(&PostParams::default(), &node("r1", json!({})))
        .await
        .expect("r1");
    nodes
        .create(&PostParams::default(), &node("r2", json!({})))
        .await
        .expect("r2");
    let (reader, writer) = reflector::store::<Node>();
    let h = tokio::spawn(
        reflector(writer, watcher(nodes.clone(), watcher::Config::default()))
            .default_backoff()
            .for_each(|_| async {}),
    );
    reader.wait_until_ready().await.expect("ready");
    eventually("two nodes", || reader.state().len() == 2).await;
    // Changes to another resource move the global resourceVersion past the reflector's.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}})).expect("cm");
    let cm = cms.create(&PostParams::default(), &cm).await.expect("cm");
    let before = rv(&cm);
    server.shutdown().await;

    opts.listen = addr;
    let server = Server::start(opts)
        .await
        .expect("restart on the same port and data");
    let got = nodes.get("r1").await.expect("r1 kept");
    assert_eq!(got.metadata.uid, n1.metadata.uid);
    assert_eq!(got.resource_version(), n1.resource_version());
    let n3 = nodes
        .create(&PostParams::default(), &node("r3", json!({})))
        .await
        .expect("r3");
    assert!(rv(&n3) > before);
    // A watch from before the restart is expired (history is not persisted).
    let mut stream = nodes
        .watch(
            &WatchParams::default(),
            &n1.resource_version().unwrap_or_default(),
        )
        .await
        .expect("watch")
        .boxed();
    assert!(matches!(stream.try_next().await, Ok(Some(WatchEvent::Error(e))) if e.code == 410));
    nodes
        .delete("r2", &DeleteParams::default())
        .await
        .expect("delete r2");
    eventually("reflector resynced after the restart", || {
        let mut names: Vec<String> = reader.state().iter().map(|n| n.name_any()).collect();
        names.sort();
        names == ["r1", "r3"]
    })
    .await;
    h.abort();
    server.shutdown().await;
    let _ = std::fs::remove_file(&data);
}

async fn raw(addr: SocketAddr, request: &str) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn req(method: &str, path: &str, ct: &str, body: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

#[tokio::test]
async fn raw_http_status_bodies() {
    let (server, _client) = start(Options::new(loopback())).await;
    let addr = server.local_addr();
    let (code, body) = raw(addr, &req("GET", "/api/v1/widgets", "application/json", "")).await;
    assert_eq!(code, 404);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "NotFound");
    assert_eq!(body["code"], 404);
    let (code, body) = raw(
        addr,
        &req("POST", "/api/v1/nodes/x", "application/json", "{}"),
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (405, Some("MethodNotAllowed"))
    );
    let (code, body) = raw(
        addr,
        &req(
            "PATCH",
            "/api/v1/namespaces/default",
            "application/apply-patch+yaml",
            "{}",
        ),
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    let (code, body) = raw(
        addr,
        &req("POST", "/api/v1/nodes", "application/json", "{not json"),
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    let (code, body) = raw(
        addr,
        &req(
            "POST",
            "/api/v1/nodes",
            "application/json",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#,
        ),
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    let (code, body) = raw(
        addr,
        &req(
            "POST",
            "/api/v1/nodes",
            "application/json",
            r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"Bad_Name"}}"#,
        ),
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.name");
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(3 * 1024 * 1024 + 10));
    let (code, body) = raw(
        addr,
        &req("POST", "/api/v1/nodes", "application/json", &big),
    )
    .await;
    assert_eq!((code, body["code"].as_u64()), (413, Some(413)));
    let (code, _) = raw(
        addr,
        &req(
            "GET",
            &format!("/api/v1/{}", "x".repeat(5000)),
            "application/json",
            "",
        ),
    )
    .await;
    assert_eq!(code, 400);
    let (code, body) = raw(
        addr,
        &req(
            "GET",
            "/api/v1/nodes?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
            "application/json",
            "",
        ),
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));
    let (code, body) = raw(
        addr,
        &req(
            "DELETE",
            "/api/v1/namespaces/default",
            "application/json",
            "",
        ),
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (403, Some("Forbidden")));
    let (code, _) = raw(addr, &req("GET", "/healthz", "", "")).await;
    assert_eq!(code, 200);
    server.shutdown().await;
}

fn kubectl(addr: SocketAddr, args: &[&str]) -> Option<(bool, String)> {
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", "/dev/null")
        .arg(format!("--server=http://{addr}"))
        .args(args)
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

#[tokio::test]
async fn kubectl_get_annotate_patch() {
    let (server, client) = start(Options::new(loopback())).await;
    let addr = server.local_addr();
    if tokio::task::spawn_blocking(move || kubectl(addr, &["version", "--client"]))
        .await
        .ok()
        .flatten()
        .is_none()
    {
        println!("kubectl not installed: skipping the kubectl test");
        server.shutdown().await;
        return;
    }
    let nodes: Api<Node> = Api::all(client);
    nodes
        .create(&PostParams::default(), &node("k1", json!({})))
        .await
        .expect("k1");
    let run = |args: &'static [&'static str]| async move {
        tokio::task::spawn_blocking(move || kubectl(addr, args))
            .await
            .ok()
            .flatten()
            .expect("kubectl runs")
    };
    let (ok, out) = run(&["get", "nodes"]).await;
    println!("kubectl get nodes:\n{out}");
    assert!(ok && out.contains("k1"), "kubectl get nodes: {out}");
    let (ok, out) = run(&["annotate", "node", "k1", "routelet.io/asn=65001"]).await;
    assert!(ok, "kubectl annotate: {out}");
    let (ok, out) = run(&[
        "patch",
        "node",
        "k1",
        "-p",
        r#"{"metadata":{"labels":{"zone":"a"}}}"#,
    ])
    .await;
    assert!(ok, "kubectl patch: {out}");
    let (ok, out) = run(&[
        "patch",
        "node",
        "k1",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/rack","value":"r1"}]"#,
    ])
    .await;
    assert!(ok, "kubectl patch --type=json: {out}");
    let (ok, out) = run(&["get", "node", "k1", "-o", "json"]).await;
    assert!(ok, "kubectl get -o json: {out}");
    let v: Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(v["metadata"]["annotations"]["routelet.io/asn"], "65001");
    assert_eq!(v["metadata"]["labels"]["zone"], "a");
    assert_eq!(v["metadata"]["labels"]["rack"], "r1");
    let (ok, out) = run(&["get", "svc", "-A"]).await;
    println!("kubectl get svc -A:\n{out}");
    assert!(ok, "kubectl get svc -A: {out}");
    server.shutdown().await;
}

#[tokio::test]
async fn bookmarks_timeouts_finalizers_and_namespaces() {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let mut opts = Options::new(loopback());
    opts.bookmark_interval = Duration::from_millis(100);
    let (server, client) = start(opts).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    // Bookmarks carry the current resourceVersion; timeoutSeconds ends the stream.
    let list = cms.list(&ListParams::default()).await.expect("list");
    let from = list.metadata.resource_version.clone().expect("list rv");
    let started = std::time::Instant::now();
    let events: Vec<_> = cms
        .watch(&WatchParams::default().timeout(1), &from)
        .await
        .expect("watch")
        .try_collect()
        .await
        .expect("stream");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(events
        .iter()
        .any(|e| matches!(e, WatchEvent::Bookmark(b) if b.metadata.resource_version == from)));

    // Finalizers: DELETE marks the object; removing the last finalizer removes it.
    let cm: ConfigMap = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "held", "finalizers": ["routelet.io/test"]}}))
    .expect("cm");
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let marked = cms
        .delete("held", &DeleteParams::default())
        .await
        .expect("delete");
    let marked = marked
        .left()
        .expect("the object while finalizers are pending");
    assert!(marked.metadata.deletion_timestamp.is_some());
    let e = cms
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["routelet.io/test", "other"]}})),
        )
        .await
        .expect_err("no new finalizers while deleting");
    assert_eq!(api_code(&e).map(|c| c.0), Some(422));
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove finalizer");
    assert_eq!(
        api_code(&cms.get("held").await.expect_err("gone")).map(|c| c.0),
        Some(404)
    );

    // deletecollection with a label selector.
    for (name, team) in [("c1", "a"), ("c2", "a"), ("c3", "b")] {
        let cm: ConfigMap = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"team": team}}}))
        .expect("cm");
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("team=a"),
    )
    .await
    .expect("deletecollection");
    let left: Vec<String> = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(left, ["c3"]);

    // Deleting a namespace deletes what is in it.
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-x"}}),
    )
    .expect("ns");
    let ns = nss.create(&PostParams::default(), &ns).await.expect("ns");
    assert_eq!(
        ns.labels()
            .get("kubernetes.io/metadata.name")
            .map(String::as_str),
        Some("team-x")
    );
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "team-x");
    let es: EndpointSlice = serde_json::from_value(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": true}}]})).expect("slice");
    let es = slices
        .create(&PostParams::default(), &es)
        .await
        .expect("slice");
    assert_eq!(es.metadata.generation, Some(1));
    let es = slices
        .patch(
            "web-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [{"addresses": ["10.244.1.6"]}]})),
        )
        .await
        .expect("patch slice");
    assert_eq!(es.metadata.generation, Some(2));
    nss.delete("team-x", &DeleteParams::default())
        .await
        .expect("delete ns");
    assert_eq!(
        api_code(&slices.get("web-1").await.expect_err("gone")).map(|c| c.0),
        Some(404)
    );
    let e = nss
        .delete("kube-system", &DeleteParams::default())
        .await
        .expect_err("system namespace");
    assert_eq!(api_code(&e), Some((403, "Forbidden".into())));
    server.shutdown().await;
}
