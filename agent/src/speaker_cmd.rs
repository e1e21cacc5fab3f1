//! `routelet speaker`: a standalone BGP daemon from a YAML file (no Kubernetes) — the speaker,
//! its status socket, metrics, and the FIB writer wired together; SIGHUP reloads the file.

use std::path::Path;
use std::sync::Arc;

use bgp::rib::{LocRibChange, PathSource};
use bgp::speaker::{RibEvent, Speaker};
use bgp::types::{Origin, PathAttributes, Prefix};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::config::{self, SpeakerSettings};
use crate::fib::{self, Fib, FibCommand, FibStats, NextHop};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Speaker(#[from] bgp::speaker::SpeakerError),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error("kernel routing table: {0}")]
    Fib(#[from] fib::FibError),
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
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
                let mut hops: Vec<NextHop> =
                    next_hops.iter().map(|n| NextHop::from(n.addr)).collect();
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

/// The routes `originate` asks for.
/// A running FIB writer: its command channel and the counters it keeps for the metrics.
pub type FibHandle = (Option<mpsc::Sender<FibCommand>>, Option<Arc<FibStats>>);

/// How many routes of ours the kernel holds from a previous run (0 when routes are not
/// installed, or the table cannot be read): more than 0 means this start is a restart whose
/// forwarding state survived, which graceful restart advertises (R and F bits).
pub async fn routes_from_previous_run(kernel: &crate::config::KernelFile) -> usize {
    if !kernel.install {
        return 0;
    }
    let fib = match Fib::new(kernel.table, fib::ROUTELET_PROTOCOL) {
        Ok(f) => f,
        Err(e) => {
            warn!(error = %e, "cannot read the kernel routing table; starting as a fresh start");
            return 0;
        }
    };
    match fib.dump_compact().await {
        Ok(d) => d.routes.len(),
        Err(e) => {
            warn!(error = %e, "cannot read the kernel routing table; starting as a fresh start");
            0
        }
    }
}

/// Sets `restarting` in the graceful-restart settings from the kernel (see
/// [`routes_from_previous_run`]) and logs which kind of start this is.
pub async fn detect_restart(
    gr: &mut Option<bgp::config::GracefulRestartConfig>,
    kernel: &crate::config::KernelFile,
) {
    let Some(gr) = gr.as_mut() else {
        return;
    };
    let previous = routes_from_previous_run(kernel).await;
    gr.restarting = previous > 0;
    if gr.restarting {
        info!(
            routes = previous,
            "graceful restart: the kernel kept {previous} routes of ours; advertising a restart with forwarding state preserved"
        );
    }
}

/// Starts the FIB writer task for `kernel` (nothing when `install` is off).
pub fn start_fib(kernel: &crate::config::KernelFile) -> Result<FibHandle, fib::FibError> {
    if !kernel.install {
        return Ok((None, None));
    }
    let fib = Fib::new(kernel.table, fib::ROUTELET_PROTOCOL)?;
    let stats = Arc::new(FibStats::default());
    let (tx, rx) = mpsc::channel(1024);
    fib::spawn_fib_task(fib, rx, stats.clone());
    Ok((Some(tx), Some(stats)))
}

/// Locally originated routes: each prefix with ORIGIN IGP and nothing else.
pub fn originated<'a>(
    prefixes: impl IntoIterator<Item = &'a Prefix>,
) -> Vec<(Prefix, PathAttributes)> {
    prefixes
        .into_iter()
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

/// Settings that a reload cannot change in a running speaker and that differ between the
/// running and the reloaded file (names as in the YAML file).
pub fn restart_only_changes(running: &SpeakerSettings, new: &SpeakerSettings) -> Vec<&'static str> {
    let (a, b) = (&running.bgp, &new.bgp);
    let checks = [
        ("router_id", a.router_id != b.router_id),
        ("asn", a.asn != b.asn),
        ("listen_port/listen_address", a.listen != b.listen),
        ("max_paths", a.max_paths != b.max_paths),
        (
            "convergence_timeout",
            a.convergence_timeout != b.convergence_timeout,
        ),
        ("socket", running.socket != new.socket),
        ("metrics_address", running.metrics != new.metrics),
        (
            "kernel.install",
            running.kernel.install != new.kernel.install,
        ),
        ("kernel.table", running.kernel.table != new.kernel.table),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}

/// SIGHUP: read and validate `path` again; on success hand the speaker the new neighbors,
/// originated prefixes and cluster id (everything else keeps its running value, with a warning if it
/// changed); on error keep running as before.
fn reload(path: &Path, running: &mut SpeakerSettings, speaker: &Speaker) {
    info!(file = %path.display(), "SIGHUP: reloading the configuration");
    let new = match config::load_speaker(path) {
        Ok(new) => new,
        Err(e) => {
            error!(file = %path.display(), error = %e, "configuration reload failed; keeping the running configuration");
            return;
        }
    };
    for setting in restart_only_changes(running, &new) {
        warn!(file = %path.display(), setting, "this setting changed but only takes effect after a restart; keeping the running value");
    }
    if let Err(e) = speaker.set_neighbors(new.bgp.neighbors.clone()) {
        error!(error = %e, "cannot apply the reloaded neighbors");
        return;
    }
    if let Err(e) = speaker.set_originated(originated(&new.originate)) {
        error!(error = %e, "cannot apply the reloaded originated prefixes");
        return;
    }
    if new.bgp.cluster_id != running.bgp.cluster_id {
        if let Err(e) = speaker.set_cluster_id(new.bgp.cluster_id) {
            error!(error = %e, "cannot apply the reloaded cluster_id");
            return;
        }
        running.bgp.cluster_id = new.bgp.cluster_id;
    }
    info!(
        file = %path.display(),
        neighbors = new.bgp.neighbors.len(),
        originate = new.originate.len(),
        "configuration reloaded"
    );
    running.bgp.neighbors = new.bgp.neighbors;
    running.originate = new.originate;
}

/// Run until SIGTERM/SIGINT; `config_path` is read again on SIGHUP.
pub async fn run(settings: SpeakerSettings, config_path: &Path) -> Result<(), RunError> {
    let mut settings = settings;
    detect_restart(&mut settings.bgp.graceful_restart, &settings.kernel).await;
    let (speaker, mut rib_events) = Speaker::start(settings.bgp.clone())?;
    speaker.set_originated(originated(&settings.originate))?;
    crate::control::serve(&settings.socket, speaker.clone())?;

    let (fib_tx, fib_stats) = start_fib(&settings.kernel)?;
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
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(
        |source| RunError::Signal {
            signal: "SIGHUP",
            source,
        },
    )?;
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
            _ = hup.recv() => reload(config_path, &mut settings, &speaker),
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

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "router_id: 10.0.0.1\nasn: 65001\nneighbors:\n  - address: 10.0.0.2\n    asn: 65002\n";

    fn parse(text: &str) -> SpeakerSettings {
        config::parse_speaker(text, Path::new("test.yaml")).expect("valid test config")
    }

    #[test]
    fn neighbors_and_originate_change_live_the_rest_needs_a_restart() {
        let running = parse(BASE);
        let live = parse(&format!(
            "{BASE}  - address: 10.0.0.3\n    asn: 65003\noriginate:\n  - prefix: 10.244.0.0/24\n"
        ));
        assert!(restart_only_changes(&running, &live).is_empty());
        let restart = parse(&BASE.replace("10.0.0.1", "10.0.0.9").replace(
            "asn: 65001",
            "asn: 65009\nlisten_port: 1179\ncluster_id: 1.1.1.1\nkernel:\n  table: 100",
        ));
        assert_eq!(
            restart_only_changes(&running, &restart),
            vec![
                "router_id",
                "asn",
                "listen_port/listen_address",
                "kernel.table"
            ]
        );
    }
}
