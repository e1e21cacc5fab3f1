//! The local status API: a unix socket served by a running speaker or agent, and the client
//! side used by `routelet status`. One request line in, one JSON document out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bgp::speaker::Speaker;
use bgp::status::SpeakerStatus;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot create status socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach routelet at {path}: {source} (is `routelet speaker` or `routelet agent` running?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("status socket {path}: {message}")]
    Protocol { path: PathBuf, message: String },
}

/// Bind the status socket (replacing a stale one) and serve it until the process exits.
pub fn serve(path: &Path, speaker: Speaker) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    let bind_err = |source| ControlError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, speaker.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "status socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

async fn handle(stream: UnixStream, speaker: Speaker) {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    let mut rd = BufReader::new(rd.take(4096));
    if tokio::time::timeout(Duration::from_secs(5), rd.read_line(&mut line))
        .await
        .is_err()
    {
        return;
    }
    let reply = match line.trim() {
        req @ ("status" | "summary") => {
            let status = if req == "status" {
                speaker.status().await
            } else {
                speaker.summary().await
            };
            match status {
                Ok(s) => serde_json::to_string(&s).unwrap_or_else(|e| error_json(&e.to_string())),
                Err(e) => error_json(&e.to_string()),
            }
        }
        other => error_json(&format!(
            "unknown request `{other}` (known: status, summary)"
        )),
    };
    let _ = wr.write_all(reply.as_bytes()).await;
    let _ = wr.write_all(b"\n").await;
    let _ = wr.shutdown().await;
}

fn error_json(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}

/// Ask a running routelet for its status (`summary`: without the Loc-RIB listing).
pub async fn fetch_status(path: &Path, summary: bool) -> Result<SpeakerStatus, ControlError> {
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    let proto = |message: String| ControlError::Protocol {
        path: path.to_path_buf(),
        message,
    };
    stream
        .write_all(if summary { b"summary\n" } else { b"status\n" })
        .await
        .map_err(|e| proto(e.to_string()))?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut body))
        .await
        .map_err(|_| proto("no answer within 10 s".into()))?
        .map_err(|e| proto(e.to_string()))?;
    let value: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| proto(format!("bad reply: {e}")))?;
    if let Some(err) = value.get("error").and_then(|e| e.as_str()) {
        return Err(proto(err.to_string()));
    }
    serde_json::from_value(value).map_err(|e| proto(format!("bad reply: {e}")))
}
