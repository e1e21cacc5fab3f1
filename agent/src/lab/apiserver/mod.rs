//! `routelet lab apiserver`: a Kubernetes API stand-in that speaks the real REST protocol
//! (plain HTTP, no auth) for the resources routelet uses, so the agent can be tested unchanged
//! against what a kube-apiserver >= 1.30 would answer. Where it differs it is stricter or
//! answers "not supported" with the proper Status (see README.md).
//!
//! ```text
//! TCP accept --> connection task (hyper http1) --> handlers (routes, media types, bodies)
//!     --engine::Request--> engine task (owns the Store; batches; writes --data; fans out)
//!     <--oneshot reply--                          --WatchMsg--> watch streams
//! ```

pub mod defaults;
pub mod discovery;
pub mod engine;
pub mod handlers;
pub mod meta;
pub mod patch;
pub mod resources;
pub mod routes;
pub mod selector;
pub mod status;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use self::engine::Engine;
use self::store::Store;

/// How the stand-in runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    /// Persist the store here (loaded at start, rewritten atomically after each change batch).
    pub data: Option<PathBuf>,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Changes kept for watches; older resourceVersions get `410 Expired`.
    pub history: usize,
    /// ClusterIPs are allocated from this range.
    pub service_cidr: ipnet::Ipv4Net,
}

impl Options {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            data: None,
            bookmark_interval: Duration::from_secs(10),
            history: 10_000,
            service_cidr: store::DEFAULT_SERVICE_CIDR,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0} is not a routelet apiserver data file: {1}")]
    Parse(PathBuf, String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// A running server; dropping it without [`Server::shutdown`] leaves it running until the
/// runtime ends.
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    accept: tokio::task::JoinHandle<()>,
}

fn load(opts: &Options) -> Result<Store, StartError> {
    let mut store = match &opts.data {
        Some(path) if path.exists() => {
            let bytes = std::fs::read(path).map_err(|e| StartError::Read(path.clone(), e))?;
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| StartError::Parse(path.clone(), e.to_string()))?;
            Store::from_persisted(&v, opts.history)
                .map_err(|e| StartError::Parse(path.clone(), e))?
        }
        _ => Store::new(opts.history),
    };
    store.service_cidr = opts.service_cidr;
    store.ensure_system_namespaces();
    let _ = store.take_changes();
    Ok(store)
}

impl Server {
    /// Load the data file, bind and start serving.
    pub async fn start(opts: Options) -> Result<Self, StartError> {
        let store = load(&opts)?;
        let engine = Engine::new(store, opts.data.clone(), opts.bookmark_interval);
        if let Err(e) = engine.persist().await {
            return Err(StartError::Write(opts.data.clone().unwrap_or_default(), e));
        }
        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(|e| StartError::Listen(opts.listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Listen(opts.listen, e))?;
        let (tx, rx) = mpsc::channel(1024);
        let (stop_tx, stop_rx) = oneshot::channel();
        let accept = tokio::spawn(accept_loop(listener, engine, rx, tx, stop_rx));
        tracing::info!(%addr, data = ?opts.data, "apiserver: serving");
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            accept,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop: close the listener, every connection and watch, and the engine. Every answered
    /// write is already in the data file.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.accept).await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    engine: Engine,
    rx: mpsc::Receiver<engine::Request>,
    tx: mpsc::Sender<engine::Request>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut tasks = JoinSet::new();
    let engine_task = tokio::spawn(engine.run(rx));
    let ctx = handlers::Ctx { engine: tx };
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let ctx = ctx.clone();
                    tasks.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handlers::serve(req, ctx.clone()));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "apiserver: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    engine_task.abort();
    let _ = engine_task.await;
}

/// `routelet lab apiserver`: serve until SIGINT/SIGTERM.
pub async fn run(opts: Options) -> Result<(), StartError> {
    let server = Server::start(opts).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    server.shutdown().await;
    Ok(())
}
