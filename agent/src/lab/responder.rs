//! TCP responders (pods' application, the kube-proxy stand-in on LoadBalancer nodes) and the
//! TCP probe `check` uses: a listener bound inside a namespace (the socket keeps the namespace
//! it was created in) served by a plain thread that writes a fixed answer to every connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::error::LabError;
use crate::netns;

/// Binds `addr` inside namespace `ns` and serves `answer` (plus a newline) to every
/// connection on a detached thread, for as long as the process lives.
pub fn start(ns: &str, addr: SocketAddr, answer: &str) -> Result<(), LabError> {
    let listener = netns::run_in(&netns::named(ns), move || TcpListener::bind(addr))
        .map_err(|e| LabError::netns(ns, e))?
        .map_err(|e| LabError::netns(ns, format!("listen on {addr}: {e}")))?;
    let reply = format!("{answer}\n").into_bytes();
    std::thread::Builder::new()
        .name(format!("responder-{answer}"))
        .spawn(move || {
            for mut s in listener.incoming().flatten() {
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(&reply);
            }
        })
        .map_err(|e| LabError::netns(ns, format!("responder thread: {e}")))?;
    Ok(())
}

/// Connects from namespace `ns` to `addr` and reads the answer (`timeout` for the connect and
/// for the read); the trimmed answer or the error as text.
pub fn probe(ns: &str, addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let r = netns::run_in(&netns::named(ns), move || -> Result<String, String> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| format!("set timeout: {e}"))?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        Ok(buf.trim().to_string())
    });
    match r {
        Ok(r) => r,
        Err(e) => Err(e.to_string()),
    }
}
