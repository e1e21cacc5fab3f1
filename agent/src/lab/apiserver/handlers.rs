//! The HTTP side: one hyper service that checks media types and sizes, turns query strings and
//! bodies into engine requests, and writes JSON responses, `kind: Status` errors and chunked
//! watch streams (with bookmarks and `timeoutSeconds`).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::discovery;
use super::engine::{self, Op, Reply, WatchMsg, WatchStart};
use super::patch::{self, PatchType};
use super::resources::{ResourceType, RESOURCES};
use super::routes::{self, Route};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{ListOpts, Part, Preconditions};

pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body (kube-apiserver's limit is 3 MiB too).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Watches without `timeoutSeconds` end after this long (kube-apiserver: 30-60 min).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

const INPUT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
const PATCH_TYPES: &[&str] = &[patch::JSON, patch::MERGE, patch::STRATEGIC, patch::APPLY];

#[derive(Clone)]
pub struct Ctx {
    pub engine: mpsc::Sender<engine::Request>,
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &e.to_status())
}

fn text_response(s: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(s.as_bytes())).boxed());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> &str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Accept must allow plain JSON (kubectl's `as=Table` and aggregated-discovery requests
/// always list `application/json` as a fallback).
fn accepts_json(accept: &str) -> bool {
    accept.trim().is_empty()
        || accept.split(',').any(|r| {
            let mut parts = r.split(';').map(str::trim);
            let ty = parts.next().unwrap_or("");
            let plain = parts.all(|p| !p.starts_with("as="));
            matches!(ty, "application/json" | "*/*" | "application/*") && plain
        })
}

fn media_type(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

/// The hyper service.
pub async fn serve(req: Request<Incoming>, ctx: Ctx) -> Result<Response<Body>, Infallible> {
    Ok(match handle(req, ctx).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    })
}

async fn handle(req: Request<Incoming>, ctx: Ctx) -> Result<Response<Body>, ApiError> {
    let route = routes::route(req.uri().path())?;
    if route == Route::Health {
        return if req.method() == Method::GET || req.method() == Method::HEAD {
            Ok(text_response("ok"))
        } else {
            Err(ApiError::method_not_allowed())
        };
    }
    if !accepts_json(header_str(&req, header::ACCEPT)) {
        return Err(ApiError::not_acceptable());
    }
    let doc = match &route {
        Route::Version => Some(discovery::version()),
        Route::CoreVersions => {
            let host = header_str(&req, header::HOST).to_string();
            Some(discovery::core_versions(&host))
        }
        Route::CoreResources => Some(discovery::core_resources()),
        Route::Groups => Some(discovery::groups()),
        Route::Group(g) => Some(discovery::group(g)),
        Route::GroupResources(g, v) => Some(discovery::group_resources(g, v)),
        _ => None,
    };
    if let Some(doc) = doc {
        if req.method() != Method::GET {
            return Err(ApiError::method_not_allowed());
        }
        return Ok(json_response(StatusCode::OK, &doc));
    }
    let query: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if query.contains_key("dryRun") {
        return Err(ApiError::bad_request(
            "dryRun is not supported by this server (routelet lab apiserver)",
        ));
    }
    if query.get("fieldValidation").is_some_and(|v| v == "Strict") {
        return Err(ApiError::bad_request(
            "fieldValidation=Strict is not supported by this server (routelet lab apiserver); unknown fields are dropped as with Ignore",
        ));
    }
    match route {
        Route::Collection { res, ns } => collection(req, ctx, res, ns, &query).await,
        Route::Object {
            res,
            ns,
            name,
            part,
        } => object(req, ctx, res, ns, name, part).await,
        _ => Err(ApiError::path_not_found()),
    }
}

async fn call(ctx: &Ctx, op: Op) -> Result<Reply, ApiError> {
    let (tx, rx) = oneshot::channel();
    ctx.engine
        .send(engine::Request { op, reply: tx })
        .await
        .map_err(|_| ApiError::service_unavailable("the server is shutting down"))?;
    rx.await
        .map_err(|_| ApiError::service_unavailable("the server is shutting down"))?
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let declared = header_str(&req, header::CONTENT_LENGTH)
        .parse::<usize>()
        .unwrap_or(0);
    if declared > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(MAX_BODY)),
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// POST/PUT bodies: JSON only (YAML and protobuf are not supported).
fn check_input_type(req: &Request<Incoming>) -> Result<(), ApiError> {
    let ct = media_type(header_str(req, header::CONTENT_TYPE));
    if ct.is_empty() || ct == "application/json" {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(ct, &INPUT_TYPES[..1]))
    }
}

fn list_opts(
    rt: &ResourceType,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Result<ListOpts, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), rt.plural)
        .map_err(ApiError::bad_request)?;
    let limit = match q.get("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?,
        ),
        None => None,
    };
    Ok(ListOpts {
        namespace: ns,
        labels,
        fields,
        limit,
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
    })
}

fn parse_rv(q: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    match q.get("resourceVersion").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(rv) => rv
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: \"{rv}\""))),
    }
}

async fn collection(
    req: Request<Incoming>,
    ctx: Ctx,
    res: usize,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let rt = &RESOURCES[res];
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    match *req.method() {
        Method::GET if watch => watch_response(ctx, res, ns, q).await,
        Method::GET => {
            let opts = list_opts(rt, ns, q)?;
            let rv = parse_rv(q)?;
            let exact = q.get("resourceVersionMatch").map(String::as_str) == Some("Exact")
                || (opts.limit.is_some() && q.get("resourceVersionMatch").is_none());
            let Reply::Object(list) = call(&ctx, Op::List { res, opts }).await? else {
                return Err(ApiError::internal("unexpected reply"));
            };
            let current = list
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            if let Some(rv) = rv.filter(|rv| *rv > 0) {
                if rv > current {
                    return Err(ApiError::timeout(format!(
                        "Too large resource version: {rv}, current: {current}"
                    )));
                }
                if exact && rv != current && !q.contains_key("continue") {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rv} ({current})"
                    )));
                }
            }
            Ok(json_response(StatusCode::OK, &list))
        }
        Method::POST => {
            let Some(ns) = ns.or_else(|| (!rt.namespaced).then(String::new)) else {
                return Err(ApiError::method_not_allowed());
            };
            check_input_type(&req)?;
            let body = parse_json(&read_body(req).await?)?;
            match call(&ctx, Op::Create { res, ns, body }).await? {
                Reply::Object(o) => Ok(json_response(StatusCode::CREATED, &o)),
                _ => Err(ApiError::internal("unexpected reply")),
            }
        }
        Method::DELETE if rt.plural != "namespaces" => {
            let opts = list_opts(rt, ns, q)?;
            match call(&ctx, Op::DeleteCollection { res, opts }).await? {
                Reply::Object(o) => Ok(json_response(StatusCode::OK, &o)),
                _ => Err(ApiError::internal("unexpected reply")),
            }
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

async fn object(
    req: Request<Incoming>,
    ctx: Ctx,
    res: usize,
    ns: String,
    name: String,
    part: Part,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let reply = match method {
        Method::GET => call(&ctx, Op::Get { res, ns, name }).await?,
        Method::PUT => {
            check_input_type(&req)?;
            let body = parse_json(&read_body(req).await?)?;
            call(
                &ctx,
                Op::Update {
                    res,
                    ns,
                    name,
                    body,
                    part,
                },
            )
            .await?
        }
        Method::PATCH => {
            let ct = media_type(header_str(&req, header::CONTENT_TYPE)).to_string();
            let Some(kind) = PatchType::from_content_type(&ct) else {
                return Err(if ct == patch::APPLY {
                    ApiError::unsupported_media_type(
                        &format!("{ct}: server-side apply is not supported by this server"),
                        &PATCH_TYPES[..3],
                    )
                } else {
                    ApiError::unsupported_media_type(&ct, &PATCH_TYPES[..3])
                });
            };
            let patch = parse_json(&read_body(req).await?)?;
            call(
                &ctx,
                Op::Patch {
                    res,
                    ns,
                    name,
                    kind,
                    patch,
                    part,
                },
            )
            .await?
        }
        Method::DELETE if part == Part::Main => {
            let body = read_body(req).await?;
            let pre = if body.iter().all(u8::is_ascii_whitespace) {
                Preconditions::default()
            } else {
                delete_options(&parse_json(&body)?)?
            };
            call(&ctx, Op::Delete { res, ns, name, pre }).await?
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    match reply {
        Reply::Object(o) => Ok(json_response(StatusCode::OK, &o)),
        Reply::Deleted(o, true) => Ok(json_response(StatusCode::OK, &o)),
        Reply::Deleted(o, false) => Ok(json_response(StatusCode::ACCEPTED, &o)),
        Reply::Watch(_) => Err(ApiError::internal("unexpected reply")),
    }
}

fn delete_options(v: &Value) -> Result<Preconditions, ApiError> {
    if !v.is_object() {
        return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
    }
    if v.get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        return Err(ApiError::bad_request(
            "dryRun is not supported by this server (routelet lab apiserver)",
        ));
    }
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    Ok(Preconditions {
        uid: s("/preconditions/uid"),
        resource_version: s("/preconditions/resourceVersion"),
    })
}

fn event_line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

struct WatchState {
    initial: VecDeque<WatchMsg>,
    rx: Option<mpsc::Receiver<WatchMsg>>,
    deadline: Instant,
    bookmarks: bool,
    rt: &'static ResourceType,
}

fn bookmark(rt: &ResourceType, rv: u64) -> Value {
    json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version(),
        "metadata": {"resourceVersion": rv.to_string()}}})
}

fn stream_response(state: WatchState) -> Response<Body> {
    let stream = futures::stream::unfold(state, |mut st| async move {
        loop {
            let msg = match st.initial.pop_front() {
                Some(m) => m,
                None => {
                    let rx = st.rx.as_mut()?;
                    tokio::select! {
                        m = rx.recv() => m?,
                        _ = tokio::time::sleep_until(st.deadline) => return None,
                    }
                }
            };
            match msg {
                WatchMsg::Event(v) => {
                    return Some((Ok::<_, Infallible>(Frame::data(event_line(&v))), st))
                }
                WatchMsg::Bookmark(rv) if st.bookmarks => {
                    let b = bookmark(st.rt, rv);
                    return Some((Ok(Frame::data(event_line(&b))), st));
                }
                WatchMsg::Bookmark(_) => {}
            }
        }
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn watch_response(
    ctx: Ctx,
    res: usize,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let rt = &RESOURCES[res];
    if q.get("sendInitialEvents").is_some_and(|v| v == "true") {
        return Err(ApiError::invalid_options(
            "sendInitialEvents",
            "Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
        ));
    }
    let opts = list_opts(rt, ns, q)?;
    let rv = parse_rv(q)?;
    let timeout = match q.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let bookmarks = q
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    let deadline = Instant::now() + timeout;
    let start = match call(&ctx, Op::Watch { res, opts, rv }).await {
        Ok(Reply::Watch(w)) => w,
        Ok(_) => return Err(ApiError::internal("unexpected reply")),
        // As kube-apiserver: a too-old resourceVersion is an ERROR event in a 200 stream.
        Err(e) if e.code == 410 => WatchStart {
            initial: vec![WatchMsg::Event(
                json!({"type": "ERROR", "object": e.to_status()}),
            )],
            rx: mpsc::channel(1).1,
        },
        Err(e) => return Err(e),
    };
    Ok(stream_response(WatchState {
        initial: start.initial.into(),
        rx: Some(start.rx),
        deadline,
        bookmarks,
        rt,
    }))
}
