//! Leader election over a `coordination.k8s.io/v1` Lease (as client-go does it): the holder
//! renews every `RENEW_EVERY`; another agent takes over once it has seen the Lease unchanged
//! (same resourceVersion) for `LEASE_DURATION` by its own clock, so clock skew between nodes
//! does not matter. Every write carries the resourceVersion it read: two candidates never both
//! win. `decide` is the pure part.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_EVERY: Duration = Duration::from_secs(2);

/// What the candidate does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAction {
    /// No Lease yet: create it with us as holder.
    Create,
    /// We hold it: renew.
    Renew,
    /// The holder stopped renewing (or released it): take it over.
    TakeOver,
    /// Someone else holds it.
    Follow(String),
}

/// `holder`: the Lease's holderIdentity; `unchanged_for`: how long this candidate has seen
/// the same resourceVersion.
pub fn decide(
    lease_exists: bool,
    holder: Option<&str>,
    me: &str,
    unchanged_for: Duration,
) -> LeaseAction {
    if !lease_exists {
        return LeaseAction::Create;
    }
    match holder {
        Some(h) if h == me => LeaseAction::Renew,
        Some(h) if !h.is_empty() && unchanged_for < LEASE_DURATION => {
            LeaseAction::Follow(h.to_string())
        }
        _ => LeaseAction::TakeOver,
    }
}

/// Runs the election for Lease `name` in `namespace` forever; `leader` says whether this agent
/// currently holds it.
pub async fn run(
    client: Client,
    namespace: String,
    name: String,
    me: String,
    leader: watch::Sender<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut observed: Option<(String, Instant)> = None;
    loop {
        let is_leader = match step(&api, &name, &me, &mut observed).await {
            Ok(l) => l,
            Err(e) => {
                debug!(error = %e, lease = %name, "lease update failed");
                // Without a successful renewal we cannot know we still lead: step down once
                // the lease may have expired for the others.
                let stale = observed
                    .as_ref()
                    .is_none_or(|(_, t)| t.elapsed() >= LEASE_DURATION - RENEW_EVERY);
                *leader.borrow() && !stale
            }
        };
        if is_leader != *leader.borrow() {
            info!(lease = %name, leader = is_leader, "leadership changed");
            leader.send_replace(is_leader);
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

async fn step(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    observed: &mut Option<(String, Instant)>,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(name).await?;
    let now = Instant::now();
    let (exists, holder, rv) = match &current {
        Some(l) => (
            true,
            l.spec.as_ref().and_then(|s| s.holder_identity.clone()),
            l.metadata.resource_version.clone().unwrap_or_default(),
        ),
        None => (false, None, String::new()),
    };
    let unchanged_for = match observed {
        Some((seen, since)) if *seen == rv => now.duration_since(*since),
        _ => {
            *observed = Some((rv.clone(), now));
            Duration::ZERO
        }
    };
    let action = decide(exists, holder.as_deref(), me, unchanged_for);
    let stamp = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let result = match (&action, current) {
        (LeaseAction::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.to_string()),
                    lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                    acquire_time: Some(stamp.clone()),
                    renew_time: Some(stamp),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await
        }
        (LeaseAction::Renew | LeaseAction::TakeOver, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if action == LeaseAction::TakeOver {
                warn!(previous = ?spec.holder_identity, "taking over the lease");
                spec.holder_identity = Some(me.to_string());
                spec.acquire_time = Some(stamp.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
            spec.renew_time = Some(stamp);
            // The read resourceVersion stays in metadata: a concurrent writer makes this 409.
            api.replace(name, &PostParams::default(), &lease).await
        }
        (LeaseAction::Follow(_), _) | (_, None) => return Ok(false),
    };
    match result {
        Ok(written) => {
            *observed = Some((
                written.metadata.resource_version.unwrap_or_default(),
                Instant::now(),
            ));
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let long = LEASE_DURATION + Duration::from_secs(1);
        assert_eq!(
            decide(false, None, "n1", Duration::ZERO),
            LeaseAction::Create
        );
        assert_eq!(decide(true, Some("n1"), "n1", long), LeaseAction::Renew);
        assert_eq!(
            decide(true, Some("n2"), "n1", Duration::from_secs(3)),
            LeaseAction::Follow("n2".into())
        );
        assert_eq!(decide(true, Some("n2"), "n1", long), LeaseAction::TakeOver);
        assert_eq!(
            decide(true, None, "n1", Duration::ZERO),
            LeaseAction::TakeOver
        );
        assert_eq!(
            decide(true, Some(""), "n1", Duration::ZERO),
            LeaseAction::TakeOver
        );
    }
}
