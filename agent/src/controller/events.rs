//! Kubernetes Events for bad input (`Problem`s): published from a task of their own through a
//! bounded queue, so an API server that is slow or down never holds up routing.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::desired::{ObjectRef, Problem};

/// Events waiting to be published; beyond this they are dropped (and logged).
const QUEUE: usize = 256;

/// Sends problems to the event publisher.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<(Problem, Option<String>)>,
}

impl EventSink {
    /// Starts the publisher; events name `node` as the reporting instance.
    pub fn start(client: Client, node: &str) -> EventSink {
        let (tx, mut rx) = mpsc::channel::<(Problem, Option<String>)>(QUEUE);
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: "routelet".into(),
                instance: Some(node.to_string()),
            },
        );
        tokio::spawn(async move {
            while let Some((problem, uid)) = rx.recv().await {
                let event = Event {
                    type_: EventType::Warning,
                    reason: problem.reason.to_string(),
                    note: Some(truncate(&problem.message, 1000)),
                    action: action_for(&problem.message),
                    secondary: None,
                };
                if let Err(e) = recorder
                    .publish(&event, &reference(&problem.object, uid))
                    .await
                {
                    debug!(error = %e, object = %problem.object, "cannot publish event");
                }
            }
        });
        EventSink { tx }
    }

    /// Queues an event for `problem` (`uid` of the object when known).
    pub fn report(&self, problem: Problem, uid: Option<String>) {
        if self.tx.try_send((problem, uid)).is_err() {
            warn!("event queue full; an event was dropped (the problem is in the log)");
        }
    }
}

/// The Event `action`: kube-runtime's Recorder folds Events with the same object, reason and
/// action into one series that keeps the first note, so each distinct problem gets its own
/// action (a hash of its message; the action does not show in `kubectl describe`).
fn action_for(message: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in message.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("Check{h:08x}")
}

fn reference(object: &ObjectRef, uid: Option<String>) -> ObjectReference {
    match object {
        ObjectRef::Node(name) => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(name.clone()),
            uid,
            ..ObjectReference::default()
        },
        ObjectRef::Service(key) => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Service".into()),
            namespace: Some(key.namespace.clone()),
            name: Some(key.name.clone()),
            uid,
            ..ObjectReference::default()
        },
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::ServiceKey;

    #[test]
    fn references_and_truncation() {
        let r = reference(
            &ObjectRef::Service(ServiceKey::new("shop", "web")),
            Some("u1".into()),
        );
        assert_eq!(r.kind.as_deref(), Some("Service"));
        assert_eq!(r.namespace.as_deref(), Some("shop"));
        assert_eq!(r.uid.as_deref(), Some("u1"));
        let r = reference(&ObjectRef::Node("n1".into()), None);
        assert_eq!((r.kind.as_deref(), r.namespace), (Some("Node"), None));
        assert_eq!(truncate("abc", 5), "abc");
        assert_ne!(action_for("a: bad"), action_for("b: bad"));
        assert_eq!(action_for("a: bad"), action_for("a: bad"));
        assert_eq!(truncate("aé", 2), "a…");
    }
}
