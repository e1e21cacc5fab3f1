//! `routelet agent`: the reconcile loop. Kubernetes caches -> `desired_state` -> `plan` ->
//! the speaker (neighbors, cluster id, originated prefixes) and the FIB writer; problems go to
//! the log and, for this node's objects, to Kubernetes Events.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bgp::config::SpeakerConfig;
use bgp::speaker::{RibEvent, Speaker};
use bgp::types::{Origin, PathAttributes, Prefix};
use kube::Client;
use tokio::sync::{mpsc, Notify};
use tracing::{error, info, warn};

use super::events::EventSink;
use super::plan::plan;
use crate::agent_config::AgentSettings;
use crate::desired::{desired_state, DesiredError, DesiredState, ObjectRef, Problem, Snapshot};
use crate::fib::{self, Fib, FibCommand, FibStats};
use crate::k8s::watch::ClusterCache;
use crate::speaker_cmd::fib_commands;

/// Changes arriving within this window after the first are handled together (the three
/// watches often fire in a burst); well under the 100 ms reaction target.
const DEBOUNCE: Duration = Duration::from_millis(15);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Speaker(#[from] bgp::speaker::SpeakerError),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error("kernel routing table: {0}")]
    Fib(#[from] fib::FibError),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("this node's BGP identity changed ({0}); exiting so that the agent restarts with it")]
    IdentityChanged(String),
}

/// The running speaker of this node.
struct Running {
    speaker: Speaker,
}

pub async fn run(settings: AgentSettings, node: String, client: Client) -> Result<(), AgentError> {
    let changed = Arc::new(Notify::new());
    let cache = ClusterCache::start(client.clone(), changed.clone());
    let events = EventSink::start(client, &node);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(AgentError::Signal)?;
    info!(node = %node, "waiting for the first list of nodes, services and endpoint slices");
    tokio::select! {
        _ = cache.wait_ready() => {}
        _ = term.recv() => return Ok(()),
        _ = tokio::signal::ctrl_c() => return Ok(()),
    }

    let (fib_tx, fib_stats) = if settings.kernel.install {
        let fib = Fib::new(settings.kernel.table, fib::ROUTELET_PROTOCOL)?;
        let stats = Arc::new(FibStats::default());
        let (tx, rx) = mpsc::channel(1024);
        fib::spawn_fib_task(fib, rx, stats.clone());
        (Some(tx), Some(stats))
    } else {
        (None, None)
    };

    let mut running: Option<Running> = None;
    let mut applied: Option<DesiredState> = None;
    let mut last_error: Option<DesiredError> = None;
    let result = loop {
        let snapshot = cache.snapshot();
        match desired_state(&settings, &snapshot, &node) {
            Ok(next) => {
                last_error = None;
                if let Err(e) = apply(
                    &settings,
                    &node,
                    &snapshot,
                    &cache,
                    &events,
                    applied.as_ref(),
                    &next,
                    &mut running,
                    fib_tx.as_ref(),
                    fib_stats.clone(),
                )
                .await
                {
                    break Err(e);
                }
                applied = Some(next);
            }
            Err(e) => {
                if last_error.as_ref() != Some(&e) {
                    warn!(error = %e, "no desired state for this node; keeping the current one");
                    if matches!(e, DesiredError::NoAddress(_)) {
                        events.report(
                            Problem {
                                object: ObjectRef::Node(node.clone()),
                                reason: "NoInternalIP",
                                message: e.to_string(),
                            },
                            uid_of(&cache, &ObjectRef::Node(node.clone())),
                        );
                    }
                    last_error = Some(e);
                }
            }
        }
        tokio::select! {
            _ = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = term.recv() => { info!("SIGTERM: shutting down"); break Ok(()); }
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: shutting down"); break Ok(()); }
        }
    };
    if let Some(r) = &running {
        r.speaker.shutdown().await;
    }
    if let Some(tx) = &fib_tx {
        // Kernel routes stay in place: forwarding continues while routelet restarts.
        let _ = tx.send(FibCommand::Shutdown).await;
    }
    let _ = std::fs::remove_file(&settings.socket);
    result
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    settings: &AgentSettings,
    node: &str,
    snapshot: &Snapshot,
    cache: &ClusterCache,
    events: &EventSink,
    prev: Option<&DesiredState>,
    next: &DesiredState,
    running: &mut Option<Running>,
    fib_tx: Option<&mpsc::Sender<FibCommand>>,
    fib_stats: Option<Arc<FibStats>>,
) -> Result<(), AgentError> {
    let p = plan(prev, next);
    for problem in &p.new_problems {
        warn!(object = %problem.object, reason = problem.reason, "{}", problem.message);
        if reports(node, snapshot, problem) {
            events.report(problem.clone(), uid_of(cache, &problem.object));
        }
    }
    if p.restart_speaker {
        if let (Some(prev), Some(_)) = (prev, running.as_ref()) {
            return Err(AgentError::IdentityChanged(format!(
                "router id {} -> {}, AS {} -> {}",
                prev.router_id, next.router_id, prev.asn, next.asn
            )));
        }
        let cfg = SpeakerConfig {
            router_id: next.router_id,
            asn: next.asn,
            listen: settings
                .listen_port
                .map(|port| SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)),
            max_paths: settings.max_paths,
            cluster_id: next.cluster_id,
            convergence_timeout: settings.convergence_timeout,
            neighbors: next.neighbors.clone(),
        };
        let (speaker, rib_events) = Speaker::start(cfg)?;
        crate::control::serve(&settings.socket, speaker.clone())?;
        if let Some(addr) = settings.metrics {
            if let Err(e) = crate::metrics::serve(addr, speaker.clone(), fib_stats).await {
                error!(%addr, error = %e, "cannot serve metrics");
            }
        }
        tokio::spawn(forward_rib_events(rib_events, fib_tx.cloned()));
        info!(
            router_id = %next.router_id,
            asn = next.asn,
            role = ?next.role,
            neighbors = next.neighbors.len(),
            "routelet agent running"
        );
        *running = Some(Running { speaker });
    }
    let Some(r) = running.as_ref() else {
        return Ok(());
    };
    if p.set_cluster_id && !p.restart_speaker {
        r.speaker.set_cluster_id(next.cluster_id)?;
    }
    if p.set_neighbors && !p.restart_speaker {
        info!(role = ?next.role, neighbors = next.neighbors.len(), "neighbor set changed");
        r.speaker.set_neighbors(next.neighbors.clone())?;
    }
    if p.set_originated {
        r.speaker.set_originated(originated(&next.originate))?;
    }
    if p.set_blackholes {
        if let Some(tx) = fib_tx {
            let _ = tx
                .send(FibCommand::SetBlackholes(
                    next.blackholes.iter().copied().collect(),
                ))
                .await;
        }
    }
    Ok(())
}

fn originated(prefixes: &BTreeSet<Prefix>) -> Vec<(Prefix, PathAttributes)> {
    prefixes
        .iter()
        .map(|p| {
            (
                *p,
                PathAttributes {
                    origin: Origin::Igp,
                    ..PathAttributes::default()
                },
            )
        })
        .collect()
}

async fn forward_rib_events(
    mut rib_events: mpsc::Receiver<RibEvent>,
    fib_tx: Option<mpsc::Sender<FibCommand>>,
) {
    while let Some(ev) = rib_events.recv().await {
        let Some(tx) = &fib_tx else { continue };
        let cmds = match ev {
            RibEvent::Changes(changes) => fib_commands(changes),
            RibEvent::Converged => vec![FibCommand::Converged],
        };
        for cmd in cmds {
            if tx.send(cmd).await.is_err() {
                warn!("FIB writer stopped");
                return;
            }
        }
    }
}

/// Does this agent publish the Event for `problem`? Problems about a node are reported by
/// that node's agent; problems about a Service by the agent of the first node (by name), so
/// that a cluster reports each problem once.
fn reports(node: &str, snapshot: &Snapshot, problem: &Problem) -> bool {
    match &problem.object {
        ObjectRef::Node(n) => n == node,
        ObjectRef::Service(_) => snapshot.nodes.keys().next().map(String::as_str) == Some(node),
    }
}

fn uid_of(cache: &ClusterCache, object: &ObjectRef) -> Option<String> {
    match object {
        ObjectRef::Node(name) => cache
            .nodes
            .state()
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .and_then(|n| n.metadata.uid.clone()),
        ObjectRef::Service(key) => cache
            .services
            .state()
            .iter()
            .find(|s| {
                s.metadata.name.as_deref() == Some(key.name.as_str())
                    && s.metadata.namespace.as_deref() == Some(key.namespace.as_str())
            })
            .and_then(|s| s.metadata.uid.clone()),
    }
}
