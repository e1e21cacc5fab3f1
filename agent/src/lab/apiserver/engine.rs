//! The task that owns the [`Store`]: it runs requests in batches, writes the data file once per
//! batch before answering (group commit, so an acknowledged write survives a restart), fans
//! changes out to watchers and sends them periodic bookmarks.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use super::patch::{self, PatchType};
use super::resources::RESOURCES;
use super::status::ApiError;
use super::store::{Change, EventType, ListOpts, Part, Preconditions, Store};

/// What a watch stream receives.
#[derive(Debug)]
pub enum WatchMsg {
    /// A complete `{"type": ..., "object": ...}` event.
    Event(Value),
    /// Everything up to this resourceVersion has been sent.
    Bookmark(u64),
}

/// Capacity of a watcher's queue; a watcher that falls this far behind is closed (the client
/// re-watches from its last resourceVersion), as kube-apiserver closes slow watchers.
const WATCH_QUEUE: usize = 4096;

/// A started watch: events to send first, then the live queue.
pub struct WatchStart {
    pub initial: Vec<WatchMsg>,
    pub rx: mpsc::Receiver<WatchMsg>,
}

pub enum Reply {
    Object(Value),
    /// DELETE: the object and whether it is gone (false: finalizers pending).
    Deleted(Value, bool),
    Watch(WatchStart),
}

pub type Result<T> = std::result::Result<T, ApiError>;

pub enum Op {
    Get {
        res: usize,
        ns: String,
        name: String,
    },
    List {
        res: usize,
        opts: ListOpts,
    },
    Create {
        res: usize,
        ns: String,
        body: Value,
    },
    Update {
        res: usize,
        ns: String,
        name: String,
        body: Value,
        part: Part,
    },
    Patch {
        res: usize,
        ns: String,
        name: String,
        kind: PatchType,
        patch: Value,
        part: Part,
    },
    Delete {
        res: usize,
        ns: String,
        name: String,
        pre: Preconditions,
    },
    DeleteCollection {
        res: usize,
        opts: ListOpts,
    },
    /// `rv`: None or `"0"` = start with the current objects as ADDED.
    Watch {
        res: usize,
        opts: ListOpts,
        rv: Option<u64>,
    },
}

pub struct Request {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Reply>>,
}

struct Watcher {
    res: usize,
    opts: ListOpts,
    /// Changes up to here were part of the initial events.
    from_rv: u64,
    tx: mpsc::Sender<WatchMsg>,
}

pub struct Engine {
    store: Store,
    data: Option<PathBuf>,
    watchers: Vec<Watcher>,
    bookmark_every: Duration,
}

/// Shape a watch event for one watcher's selection, or None if it does not see the change
/// (a MODIFIED that moves an object into or out of the selection becomes ADDED / DELETED).
fn event_for(opts: &ListOpts, c: &Change) -> Option<Value> {
    let now = Store::selected(opts, &c.object);
    let before = c.old.as_ref().is_some_and(|o| Store::selected(opts, o));
    let ty = match (c.kind, before, now) {
        (EventType::Added, _, true) => EventType::Added,
        (EventType::Modified, true, true) => EventType::Modified,
        (EventType::Modified, false, true) => EventType::Added,
        (EventType::Modified, true, false) => EventType::Deleted,
        (EventType::Deleted, b, n) if b || n => EventType::Deleted,
        _ => return None,
    };
    Some(json!({"type": ty.as_str(), "object": c.object}))
}

/// Write the data file atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Engine {
    pub fn new(store: Store, data: Option<PathBuf>, bookmark_every: Duration) -> Self {
        Self {
            store,
            data,
            watchers: Vec::new(),
            bookmark_every,
        }
    }

    /// Write the store now (at start, after loading and creating system namespaces).
    pub async fn persist(&self) -> std::io::Result<()> {
        let Some(path) = self.data.clone() else {
            return Ok(());
        };
        let bytes =
            serde_json::to_vec(&self.store.to_persisted()).map_err(std::io::Error::other)?;
        tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
            .await
            .map_err(std::io::Error::other)?
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut bookmarks = tokio::time::interval(self.bookmark_every);
        bookmarks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                r = rx.recv() => match r { Some(r) => r, None => return },
                _ = bookmarks.tick() => { self.send_bookmarks(); continue; }
            };
            let mut batch = vec![first];
            while batch.len() < 256 {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let rv_before = self.store.resource_version();
            let mut replies = Vec::with_capacity(batch.len());
            for req in batch {
                let result = self.handle(req.op);
                replies.push((req.reply, result));
            }
            let changes = self.store.take_changes();
            if self.store.resource_version() != rv_before {
                if let Err(e) = self.persist().await {
                    tracing::error!(error = %e, "apiserver: cannot write the data file");
                }
            }
            for (tx, result) in replies {
                let _ = tx.send(result);
            }
            self.fan_out(&changes);
        }
    }

    fn handle(&mut self, op: Op) -> Result<Reply> {
        let s = &mut self.store;
        match op {
            Op::Get { res, ns, name } => s.get(res, &ns, &name).map(Reply::Object),
            Op::List { res, opts } => s.list(res, &opts).map(Reply::Object),
            Op::Create { res, ns, body } => s.create(res, &ns, body).map(Reply::Object),
            Op::Update {
                res,
                ns,
                name,
                body,
                part,
            } => s.update(res, &ns, &name, body, part).map(Reply::Object),
            Op::Patch {
                res,
                ns,
                name,
                kind,
                patch,
                part,
            } => {
                let rt = &RESOURCES[res];
                let old = s.get(res, &ns, &name)?;
                let patched = patch::apply(kind, rt.plural, &old, &patch)
                    .map_err(|e| ApiError::unprocessable(rt, &name, &e))?;
                s.update(res, &ns, &name, patched, part).map(Reply::Object)
            }
            Op::Delete { res, ns, name, pre } => s
                .delete(res, &ns, &name, &pre)
                .map(|(o, gone)| Reply::Deleted(o, gone)),
            Op::DeleteCollection { res, opts } => {
                let list = s.list(
                    res,
                    &ListOpts {
                        limit: None,
                        continue_token: None,
                        ..opts
                    },
                )?;
                let rt = &RESOURCES[res];
                let mut items = Vec::new();
                for item in list
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    let ns = item
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let name = item
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if let Ok((mut o, _)) = s.delete(res, ns, name, &Preconditions::default()) {
                        if let Value::Object(m) = &mut o {
                            m.remove("kind");
                            m.remove("apiVersion");
                        }
                        items.push(o);
                    }
                }
                Ok(Reply::Object(json!({
                    "kind": format!("{}List", rt.kind),
                    "apiVersion": rt.api_version(),
                    "metadata": {"resourceVersion": s.resource_version().to_string()},
                    "items": items,
                })))
            }
            Op::Watch { res, opts, rv } => self.start_watch(res, opts, rv).map(Reply::Watch),
        }
    }

    fn start_watch(&mut self, res: usize, opts: ListOpts, rv: Option<u64>) -> Result<WatchStart> {
        let current = self.store.resource_version();
        let changes = match rv {
            None | Some(0) => self.store.current_as_added(res),
            Some(rv) if rv > current => {
                return Err(ApiError::timeout(format!(
                    "Too large resource version: {rv}, current: {current}"
                )))
            }
            Some(rv) => self.store.changes_since(res, rv)?,
        };
        let initial = changes
            .iter()
            .filter_map(|c| event_for(&opts, c))
            .map(WatchMsg::Event)
            .collect();
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        self.watchers.push(Watcher {
            res,
            opts,
            from_rv: current,
            tx,
        });
        Ok(WatchStart { initial, rx })
    }

    fn fan_out(&mut self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        self.watchers.retain(|w| {
            for c in changes
                .iter()
                .filter(|c| c.res == w.res && c.rv > w.from_rv)
            {
                if let Some(ev) = event_for(&w.opts, c) {
                    if w.tx.try_send(WatchMsg::Event(ev)).is_err() {
                        return false; // closed, or too slow: end this watch
                    }
                }
            }
            true
        });
    }

    fn send_bookmarks(&mut self) {
        let rv = self.store.resource_version();
        self.watchers
            .retain(|w| !w.tx.is_closed() && w.tx.try_send(WatchMsg::Bookmark(rv)).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::apiserver::selector::LabelSelector;

    fn change(kind: EventType, old: Option<&str>, new: &str) -> Change {
        let obj = |role: &str| json!({"metadata": {"name": "n", "labels": {"role": role}}});
        Change {
            rv: 9,
            res: 1,
            kind,
            object: obj(new),
            old: old.map(obj),
        }
    }

    #[test]
    fn selection_transitions_become_added_and_deleted() {
        let opts = ListOpts {
            labels: LabelSelector::parse("role=edge").expect("selector"),
            ..Default::default()
        };
        let ty =
            |c: Change| event_for(&opts, &c).map(|e| e["type"].as_str().unwrap_or("").to_string());
        assert_eq!(
            ty(change(EventType::Added, None, "edge")).as_deref(),
            Some("ADDED")
        );
        assert_eq!(ty(change(EventType::Added, None, "core")), None);
        assert_eq!(
            ty(change(EventType::Modified, Some("core"), "edge")).as_deref(),
            Some("ADDED")
        );
        assert_eq!(
            ty(change(EventType::Modified, Some("edge"), "core")).as_deref(),
            Some("DELETED")
        );
        assert_eq!(
            ty(change(EventType::Modified, Some("edge"), "edge")).as_deref(),
            Some("MODIFIED")
        );
        assert_eq!(ty(change(EventType::Modified, Some("core"), "core")), None);
        assert_eq!(
            ty(change(EventType::Deleted, Some("edge"), "edge")).as_deref(),
            Some("DELETED")
        );
    }

    #[test]
    fn persisted_store_roundtrips_and_expires_old_versions() {
        let mut s = Store::new(100);
        s.ensure_system_namespaces();
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "a"}});
        s.create(1, "", node).expect("create");
        let rv = s.resource_version();
        assert!(s.changes_since(1, 1).expect("in history").len() == 1);
        let loaded = Store::from_persisted(&s.to_persisted(), 100).expect("loads");
        assert_eq!(loaded.resource_version(), rv);
        assert!(loaded.get(1, "", "a").is_ok());
        assert_eq!(
            loaded.changes_since(1, rv - 1).err().map(|e| e.code),
            Some(410)
        );
        assert!(loaded
            .changes_since(1, rv)
            .expect("current is fine")
            .is_empty());
        assert!(Store::from_persisted(&json!({"resources": {}}), 100).is_err());
    }
}
