//! `routelet speaker`: a standalone BGP daemon from a YAML file (no Kubernetes) — the speaker,
//! its status socket, metrics, and the FIB writer wired together.

use std::net::IpAddr;
use std::sync::Arc;

use bgp::rib::{LocRibChange, PathSource};
use bgp::speaker::{RibEvent, Speaker};
use bgp::types::{Origin, PathAttributes};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::SpeakerSettings;
use crate::fib::{self, Fib, FibCommand, FibStats};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Speaker(#[from] bgp::speaker::SpeakerError),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error("kernel routing table: {0}")]
    Fib(#[from] fib::FibError),
}

/// Translate Loc-RIB changes into FIB commands: learned best paths are installed, locally
/// originated prefixes and vanished prefixes are removed from the kernel.
pub fn fib_commands(changes: Vec<LocRibChange>) -> Vec<FibCommand> {
    changes
        .into_iter()
        .map(|c| match c {
            LocRibChange::Best {
                prefix,
                source: PathSource::Peer(_),
                next_hops,
                ..
            } => {
                let mut hops: Vec<IpAddr> = next_hops.iter().map(|n| n.addr).collect();
                hops.dedup();
                FibCommand::Set {
                    prefix,
                    next_hops: hops,
                }
            }
            LocRibChange::Best { prefix, .. } | LocRibChange::Gone { prefix } => FibCommand::Set {
                prefix,
                next_hops: Vec::new(),
            },
        })
        .collect()
}

pub async fn run(settings: SpeakerSettings) -> Result<(), RunError> {
    let (speaker, mut rib_events) = Speaker::start(settings.bgp.clone())?;
    let originated = settings
        .originate
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
        .collect();
    speaker.set_originated(originated)?;
    crate::control::serve(&settings.socket, speaker.clone())?;

    let (fib_tx, fib_stats) = if settings.kernel.install {
        let fib = Fib::new(settings.kernel.table, fib::ROUTELET_PROTOCOL)?;
        let stats = Arc::new(FibStats::default());
        let (tx, rx) = mpsc::channel(1024);
        fib::spawn_fib_task(fib, rx, stats.clone());
        (Some(tx), Some(stats))
    } else {
        (None, None)
    };
    if let Some(addr) = settings.metrics {
        if let Err(e) = crate::metrics::serve(addr, speaker.clone(), fib_stats).await {
            error!(%addr, error = %e, "cannot serve metrics");
        }
    }
    info!(
        router_id = %settings.bgp.router_id,
        asn = settings.bgp.asn,
        neighbors = settings.bgp.neighbors.len(),
        socket = %settings.socket.display(),
        "routelet speaker running"
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| {
            RunError::Control(crate::control::ControlError::Bind {
                path: "signal".into(),
                source: e,
            })
        })?;
    loop {
        tokio::select! {
            ev = rib_events.recv() => match ev {
                Some(RibEvent::Changes(changes)) => {
                    if let Some(tx) = &fib_tx {
                        for cmd in fib_commands(changes) {
                            if tx.send(cmd).await.is_err() {
                                warn!("FIB writer stopped");
                            }
                        }
                    }
                }
                Some(RibEvent::Converged) => {
                    if let Some(tx) = &fib_tx {
                        let _ = tx.send(FibCommand::Converged).await;
                    }
                }
                None => break,
            },
            _ = term.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: shutting down"); break; }
        }
    }
    speaker.shutdown().await;
    if let Some(tx) = &fib_tx {
        // Kernel routes stay in place: forwarding continues while routelet restarts.
        let _ = tx.send(FibCommand::Shutdown).await;
    }
    let _ = std::fs::remove_file(&settings.socket);
    Ok(())
}
