//! The object store: every object by resource, namespace and name, the global resourceVersion
//! counter, the bounded change history that watches replay, and the create / update / delete /
//! list rules (server-owned metadata, preconditions, status subresource, finalizers).

use std::collections::{BTreeMap, VecDeque};

use serde_json::{json, Map, Value};

use super::meta::{self, NameRule};
use super::resources::{ResourceType, NAMESPACES, RESOURCES};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One stored change, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub res: usize,
    pub kind: EventType,
    /// The new object (for `Deleted`: the last state, with the deletion's resourceVersion).
    pub object: Value,
    /// The previous state (for label/field selector transitions).
    pub old: Option<Value>,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Part {
    Main,
    Status,
}

/// `DeleteOptions.preconditions`.
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// Selection and paging of a list.
#[derive(Debug, Default)]
pub struct ListOpts {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

type Key = (String, String);

/// kube-apiserver's default `--service-cluster-ip-range`.
pub const DEFAULT_SERVICE_CIDR: ipnet::Ipv4Net =
    match ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 96, 0, 0), 12) {
        Ok(n) => n,
        Err(_) => unreachable!(),
    };

/// Namespaces that exist from the start and cannot be deleted.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

pub struct Store {
    rv: u64,
    objects: Vec<BTreeMap<Key, Value>>,
    /// Last resourceVersion that changed each collection (for continue tokens).
    collection_rv: Vec<u64>,
    history: VecDeque<Change>,
    history_cap: usize,
    /// Every change after this resourceVersion is in `history`.
    history_floor: u64,
    pending: Vec<Change>,
    /// ClusterIPs are allocated from here (kube-apiserver's `--service-cluster-ip-range`).
    pub service_cidr: ipnet::Ipv4Net,
}

fn rv_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `metadata` of an object, created if missing (None only for non-objects, which
/// `check_type` rejects first).
fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let o = obj.as_object_mut()?;
    if !o.get("metadata").is_some_and(Value::is_object) {
        o.insert("metadata".into(), json!({}));
    }
    o.get_mut("metadata").and_then(Value::as_object_mut)
}

fn set_meta(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = meta_mut(obj) {
        m.insert(key.into(), v);
    }
}

fn str_field<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn name_rule(rt: &ResourceType) -> NameRule {
    match rt.plural {
        "namespaces" => NameRule::Label1123,
        "services" => NameRule::Label1035,
        _ => NameRule::Subdomain,
    }
}

/// The object without server-managed and status parts, to detect spec changes (generation).
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Value::Object(m) = &mut o {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

/// `apiVersion`/`kind` must name the resource (kube-apiserver's decoding error otherwise).
pub fn check_type(rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "the object provided is not a JSON object: {}",
            truncate(&body.to_string())
        )));
    }
    let kind = str_field(body, "/kind");
    let api_version = str_field(body, "/apiVersion");
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{}'",
            truncate(&body.to_string())
        )));
    }
    if api_version.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'apiVersion' is missing in '{}'",
            truncate(&body.to_string())
        )));
    }
    if kind != rt.kind || api_version != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{api_version}\" cannot be handled as a {}: the API version in the data ({api_version}) and kind ({kind}) do not match the expected {} {}",
            rt.kind,
            rt.api_version(),
            rt.kind
        )));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

impl Store {
    pub fn new(history_cap: usize) -> Self {
        Self {
            rv: 1,
            objects: RESOURCES.iter().map(|_| BTreeMap::new()).collect(),
            collection_rv: vec![0; RESOURCES.len()],
            history: VecDeque::new(),
            history_cap: history_cap.max(1),
            history_floor: 1,
            pending: Vec::new(),
            service_cidr: DEFAULT_SERVICE_CIDR,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch can start from.
    pub fn history_floor(&self) -> u64 {
        self.history_floor
    }

    /// Changes made since the last call (for watch fan-out).
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.pending)
    }

    fn record(&mut self, change: Change) {
        self.collection_rv[change.res] = change.rv;
        if self.history.len() >= self.history_cap {
            if let Some(old) = self.history.pop_front() {
                self.history_floor = old.rv;
            }
        }
        self.history.push_back(change.clone());
        self.pending.push(change);
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn key(rt: &ResourceType, ns: &str, name: &str) -> Key {
        (
            if rt.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name.to_string(),
        )
    }

    pub fn get(&self, res: usize, ns: &str, name: &str) -> Result<Value, ApiError> {
        let rt = &RESOURCES[res];
        self.objects[res]
            .get(&Self::key(rt, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects[NAMESPACES].contains_key(&(String::new(), ns.to_string()))
    }

    /// Create the system namespaces that are missing (at start).
    pub fn ensure_system_namespaces(&mut self) {
        for ns in SYSTEM_NAMESPACES {
            if !self.namespace_exists(ns) {
                let body =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                // A fixed, valid object: cannot fail.
                let _ = self.create(NAMESPACES, "", body);
            }
        }
    }

    /// POST.
    pub fn create(&mut self, res: usize, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
        let rt = &RESOURCES[res];
        check_type(rt, &obj)?;
        let body_ns = str_field(&obj, "/metadata/namespace").to_string();
        if rt.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if rv_of(&obj).is_some() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let mut name = str_field(&obj, "/metadata/name").to_string();
        let generate = str_field(&obj, "/metadata/generateName").to_string();
        if name.is_empty() {
            if generate.is_empty() {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    &[(
                        "metadata.name".into(),
                        "FieldValueRequired",
                        "Required value: name or generateName is required".into(),
                    )],
                ));
            }
            for _ in 0..8 {
                name = format!("{generate}{}", meta::name_suffix());
                if !self.objects[res].contains_key(&Self::key(rt, ns, &name)) {
                    break;
                }
            }
        }
        let mut errs = Vec::new();
        if let Some(msg) = meta::check_name(name_rule(rt), &name) {
            errs.push(("metadata.name".to_string(), "FieldValueInvalid", msg));
        }
        errs.extend(meta::check_labels_annotations(
            obj.get("metadata").unwrap_or(&Value::Null),
        ));
        if !errs.is_empty() {
            return Err(ApiError::invalid(rt, &name, &errs));
        }
        if rt.namespaced && !self.namespace_exists(ns) {
            return Err(ApiError::not_found(&RESOURCES[NAMESPACES], ns));
        }
        if self.objects[res].contains_key(&Self::key(rt, ns, &name)) {
            return Err(ApiError::already_exists(rt, &name));
        }
        if let (Some(clear), Value::Object(o)) = (rt.clear_status_on_create, &mut obj) {
            o.insert("status".into(), clear());
        }
        if res == NAMESPACES {
            if let Value::Object(o) = &mut obj {
                o.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
            }
        }
        if let Some(m) = meta_mut(&mut obj) {
            for server_owned in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "managedFields",
                "selfLink",
            ] {
                m.remove(server_owned);
            }
            m.insert("name".into(), json!(name));
            if rt.namespaced {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), json!(meta::new_uid()));
            m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
            if rt.generation {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        super::defaults::apply(rt, &mut obj, self)?;
        let rv = self.next_rv();
        set_meta(&mut obj, "resourceVersion", json!(rv.to_string()));
        let obj = rt.normalize(obj).map_err(|e| decode_error(rt, &e))?;
        self.objects[res].insert(Self::key(rt, ns, &name), obj.clone());
        self.record(Change {
            rv,
            res,
            kind: EventType::Added,
            object: obj.clone(),
            old: None,
        });
        Ok(obj)
    }

    /// All stored objects of a resource (for defaults: allocated IPs and ports).
    pub fn all(&self, res: usize) -> impl Iterator<Item = &Value> {
        self.objects[res].values()
    }

    /// PUT (of the object or its `/status`). `body` must carry the name; a non-empty
    /// `metadata.resourceVersion` must equal the stored one.
    pub fn update(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        body: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        let rt = &RESOURCES[res];
        let old = self.get(res, ns, name)?;
        check_type(rt, &body)?;
        let body_name = str_field(&body, "/metadata/name");
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = str_field(&body, "/metadata/namespace");
        if rt.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if let Some(rv) = rv_of(&body) {
            if rv.parse::<u64>().is_err() {
                return Err(ApiError::bad_request(format!(
                    "invalid resource version: \"{rv}\""
                )));
            }
            if Some(rv) != rv_of(&old) {
                return Err(ApiError::stale(rt, name));
            }
        }
        let body_uid = str_field(&body, "/metadata/uid");
        let old_uid = str_field(&old, "/metadata/uid").to_string();
        if !body_uid.is_empty() && body_uid != old_uid {
            return Err(ApiError::invalid(
                rt,
                name,
                &[(
                    "metadata.uid".into(),
                    "FieldValueInvalid",
                    format!("Invalid value: \"{body_uid}\": field is immutable"),
                )],
            ));
        }
        let mut new = match part {
            Part::Main => {
                let mut new = body;
                if rt.status {
                    if let Value::Object(o) = &mut new {
                        match old.get("status") {
                            Some(s) => o.insert("status".into(), s.clone()),
                            None => o.remove("status"),
                        };
                    }
                }
                new
            }
            Part::Status => {
                let mut new = old.clone();
                if let Value::Object(o) = &mut new {
                    match body.get("status") {
                        Some(s) => o.insert("status".into(), s.clone()),
                        None => o.remove("status"),
                    };
                }
                new
            }
        };
        let errs = meta::check_labels_annotations(new.get("metadata").unwrap_or(&Value::Null));
        if !errs.is_empty() {
            return Err(ApiError::invalid(rt, name, &errs));
        }
        let deleting = old.pointer("/metadata/deletionTimestamp").is_some();
        if deleting {
            let old_f = old
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let new_f = new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if new_f.iter().any(|f| !old_f.contains(f)) {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    &[(
                        "metadata.finalizers".into(),
                        "FieldValueForbidden",
                        "Forbidden: no new finalizers can be added if the object is being deleted"
                            .into(),
                    )],
                ));
            }
        }
        {
            let om = old.get("metadata").cloned().unwrap_or_default();
            if let Some(m) = meta_mut(&mut new) {
                m.remove("managedFields");
                m.remove("selfLink");
                for keep in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                    "generation",
                    "resourceVersion",
                    "namespace",
                    "name",
                ] {
                    match om.get(keep) {
                        Some(v) => m.insert(keep.into(), v.clone()),
                        None => m.remove(keep),
                    };
                }
            }
        }
        super::defaults::apply_update(rt, &old, &mut new)?;
        let mut new = rt.normalize(new).map_err(|e| decode_error(rt, &e))?;
        if new == old {
            return Ok(old); // no-op: no new resourceVersion, no watch event
        }
        if rt.generation && spec_part(&new) != spec_part(&old) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            set_meta(&mut new, "generation", json!(g + 1));
        }
        let rv = self.next_rv();
        set_meta(&mut new, "resourceVersion", json!(rv.to_string()));
        let finalized = deleting
            && new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        let key = Self::key(rt, ns, name);
        if finalized {
            self.objects[res].remove(&key);
            self.record(Change {
                rv,
                res,
                kind: EventType::Deleted,
                object: new.clone(),
                old: Some(old),
            });
        } else {
            self.objects[res].insert(key, new.clone());
            self.record(Change {
                rv,
                res,
                kind: EventType::Modified,
                object: new.clone(),
                old: Some(old),
            });
        }
        Ok(new)
    }

    /// DELETE. Returns the object and whether it is gone (false: finalizers pending, 202).
    pub fn delete(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        pre: &Preconditions,
    ) -> Result<(Value, bool), ApiError> {
        let rt = &RESOURCES[res];
        let old = self.get(res, ns, name)?;
        if let Some(uid) = &pre.uid {
            let have = str_field(&old, "/metadata/uid");
            if uid != have {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
                ));
            }
        }
        if let Some(rv) = &pre.resource_version {
            let have = rv_of(&old).unwrap_or("");
            if rv != have {
                return Err(ApiError::conflict(rt, name, &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"
                )));
            }
        }
        if res == NAMESPACES && SYSTEM_NAMESPACES.contains(&name) {
            return Err(ApiError::forbidden(
                rt,
                name,
                "this namespace may not be deleted",
            ));
        }
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok((old, false));
            }
            let mut new = old.clone();
            let rv = self.next_rv();
            set_meta(&mut new, "deletionTimestamp", json!(meta::now_rfc3339()));
            set_meta(&mut new, "deletionGracePeriodSeconds", json!(0));
            set_meta(&mut new, "resourceVersion", json!(rv.to_string()));
            self.objects[res].insert(Self::key(rt, ns, name), new.clone());
            self.record(Change {
                rv,
                res,
                kind: EventType::Modified,
                object: new.clone(),
                old: Some(old),
            });
            return Ok((new, false));
        }
        if res == NAMESPACES {
            self.delete_namespace_contents(name);
        }
        self.objects[res].remove(&Self::key(rt, ns, name));
        let rv = self.next_rv();
        let mut gone = old.clone();
        set_meta(&mut gone, "resourceVersion", json!(rv.to_string()));
        self.record(Change {
            rv,
            res,
            kind: EventType::Deleted,
            object: gone,
            old: Some(old.clone()),
        });
        Ok((old, true))
    }

    fn delete_namespace_contents(&mut self, ns: &str) {
        for (res, rt) in RESOURCES.iter().enumerate() {
            if !rt.namespaced {
                continue;
            }
            let keys: Vec<Key> = self.objects[res]
                .keys()
                .filter(|(n, _)| n == ns)
                .cloned()
                .collect();
            for key in keys {
                if let Some(old) = self.objects[res].remove(&key) {
                    let rv = self.next_rv();
                    let mut gone = old.clone();
                    set_meta(&mut gone, "resourceVersion", json!(rv.to_string()));
                    self.record(Change {
                        rv,
                        res,
                        kind: EventType::Deleted,
                        object: gone,
                        old: Some(old),
                    });
                }
            }
        }
    }

    /// Does an object pass a list/watch selection?
    pub fn selected(opts: &ListOpts, obj: &Value) -> bool {
        opts.namespace
            .as_deref()
            .is_none_or(|ns| str_field(obj, "/metadata/namespace") == ns)
            && opts.labels.matches(obj)
            && opts.fields.matches(obj)
    }

    /// LIST: a `<Kind>List` at the current resourceVersion, paged with `limit`/`continue`.
    pub fn list(&self, res: usize, opts: &ListOpts) -> Result<Value, ApiError> {
        let rt = &RESOURCES[res];
        let (list_rv, start) = match &opts.continue_token {
            Some(token) => {
                let (rv, key) = decode_continue(token).ok_or_else(|| {
                    ApiError::bad_request("continue key is not valid: invalid continue token")
                })?;
                if self.collection_rv[res] > rv || rv > self.rv {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ));
                }
                (rv, Some(key))
            }
            None => (self.rv, None),
        };
        let iter = self.objects[res]
            .iter()
            .filter(|(k, _)| start.as_ref().is_none_or(|s| *k > s))
            .filter(|(_, o)| Self::selected(opts, o));
        let limit = opts.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut last: Option<&Key> = None;
        let mut remaining = 0usize;
        for (k, o) in iter {
            if items.len() < limit {
                let mut item = o.clone();
                if let Value::Object(m) = &mut item {
                    m.remove("kind");
                    m.remove("apiVersion");
                }
                items.push(item);
                last = Some(k);
            } else {
                remaining += 1;
            }
        }
        let mut metadata = Map::new();
        metadata.insert("resourceVersion".into(), json!(list_rv.to_string()));
        if remaining > 0 {
            if let Some(k) = last {
                metadata.insert("continue".into(), json!(encode_continue(list_rv, k)));
            }
            if opts.labels == LabelSelector::default() && opts.fields == FieldSelector::default() {
                metadata.insert("remainingItemCount".into(), json!(remaining));
            }
        }
        Ok(json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(),
            "metadata": Value::Object(metadata),
            "items": items,
        }))
    }

    /// Current objects of a resource as synthetic ADDED changes (watch from "0" or unset).
    pub fn current_as_added(&self, res: usize) -> Vec<Change> {
        self.objects[res]
            .values()
            .map(|o| Change {
                rv: rv_of(o).and_then(|r| r.parse().ok()).unwrap_or(0),
                res,
                kind: EventType::Added,
                object: o.clone(),
                old: None,
            })
            .collect()
    }

    /// Changes of a resource after `rv` from the history; `410 Expired` if they are gone.
    pub fn changes_since(&self, res: usize, rv: u64) -> Result<Vec<Change>, ApiError> {
        if rv < self.history_floor {
            return Err(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                self.history_floor
            )));
        }
        Ok(self
            .history
            .iter()
            .filter(|c| c.res == res && c.rv > rv)
            .cloned()
            .collect())
    }

    /// The persisted form: resourceVersion and every object.
    pub fn to_persisted(&self) -> Value {
        let mut resources = Map::new();
        for (i, rt) in RESOURCES.iter().enumerate() {
            let items: Vec<Value> = self.objects[i].values().cloned().collect();
            resources.insert(
                format!("{}/{}", rt.api_version(), rt.plural),
                Value::Array(items),
            );
        }
        json!({"resourceVersion": self.rv.to_string(), "resources": resources})
    }

    /// Load the persisted form; the history starts empty at the loaded resourceVersion, so
    /// watches from older versions get `410 Expired`.
    pub fn from_persisted(v: &Value, history_cap: usize) -> Result<Self, String> {
        let mut s = Self::new(history_cap);
        s.rv = v
            .get("resourceVersion")
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok())
            .ok_or("missing or bad resourceVersion")?;
        let resources = v
            .get("resources")
            .and_then(Value::as_object)
            .ok_or("missing resources")?;
        for (i, rt) in RESOURCES.iter().enumerate() {
            let key = format!("{}/{}", rt.api_version(), rt.plural);
            for obj in resources
                .get(&key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let ns = str_field(obj, "/metadata/namespace");
                let name = str_field(obj, "/metadata/name");
                if name.is_empty() {
                    return Err(format!("{key}: object without a name"));
                }
                s.objects[i].insert(Self::key(rt, ns, name), obj.clone());
            }
        }
        s.history_floor = s.rv;
        Ok(s)
    }
}

fn decode_error(rt: &ResourceType, e: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: {e}",
        rt.kind,
        rt.api_version(),
        rt.kind
    ))
}

fn encode_continue(rv: u64, key: &Key) -> String {
    let raw = json!({"rv": rv, "ns": key.0, "name": key.1}).to_string();
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Option<(u64, Key)> {
    if token.len() & 1 == 1 || token.len() > 4096 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let v: Value = serde_json::from_slice(&bytes?).ok()?;
    Some((
        v.get("rv")?.as_u64()?,
        (
            v.get("ns")?.as_str()?.to_string(),
            v.get("name")?.as_str()?.to_string(),
        ),
    ))
}
