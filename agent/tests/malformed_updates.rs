//! RFC 7606 against a running routelet: a raw BGP sender (a TCP client in its own namespace,
//! hand-built bytes) sends one UPDATE per class of malformation; each gets the prescribed
//! action (attribute discarded, treat-as-withdraw, session reset with NOTIFICATION 3/x), each
//! is counted per action in `routelet status` and the metrics, and the session to another
//! peer is never disturbed.

mod interop;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use interop::netns::veth;
use interop::routelet::{RlNeighbor, Routelet, RouteletConfig, RT_PROTO};
use interop::{ensure, wait_until, Lab, LabError, Netns, Result};

/// Originated by the well-behaved peer `c`.
const C_PREFIX: &str = "10.251.0.0/24";

fn attr(flags: u8, code: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![flags, code, value.len() as u8];
    v.extend_from_slice(value);
    v
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

/// UPDATE with no withdrawn routes, `attrs` and IPv4 `nlri`.
fn update(attrs: &[Vec<u8>], nlri: &[u8]) -> Vec<u8> {
    let attrs = attrs.concat();
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(&attrs);
    body.extend_from_slice(nlri);
    message(2, &body)
}

/// ORIGIN IGP, AS_PATH [65002] (4-octet), NEXT_HOP 10.0.1.2.
fn base_attrs() -> Vec<Vec<u8>> {
    vec![
        attr(0x40, 1, &[0]),
        attr(0x40, 2, &[2, 1, 0, 0, 0xfd, 0xea]),
        attr(0x40, 3, &[10, 0, 1, 2]),
    ]
}

/// The raw peer: AS 65002, router id 10.0.1.2, IPv4 unicast and 4-octet AS capabilities.
struct RawPeer {
    stream: TcpStream,
}

impl RawPeer {
    fn connect(ns: &Netns, to: SocketAddr) -> Result<RawPeer> {
        let path = agent::netns::named(ns.name());
        let stream = agent::netns::run_in(&path, move || {
            TcpStream::connect_timeout(&to, Duration::from_secs(5))
        })
        .map_err(|e| LabError::io("enter the sender's namespace", std::io::Error::other(e)))?
        .map_err(|e| LabError::io(format!("connect to {to}"), e))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| LabError::io("socket", e))?;
        let mut p = RawPeer { stream };
        // OPEN: version 4, AS 65002, hold 90, id 10.0.1.2, capabilities MP IPv4 unicast and
        // 4-octet AS 65002.
        let caps = [
            2, 6, 1, 4, 0, 1, 0, 1, // MP: AFI 1, SAFI 1
            2, 6, 65, 4, 0, 0, 0xfd, 0xea, // 4-octet AS 65002
        ];
        let mut open = vec![4, 0xfd, 0xea, 0, 90, 10, 0, 1, 2, caps.len() as u8];
        open.extend_from_slice(&caps);
        p.send(&message(1, &open))?;
        ensure(p.read_kind()? == 1, "routelet answers with its OPEN")?;
        p.send(&message(4, &[]))?;
        ensure(p.read_kind()? == 4, "routelet confirms with a KEEPALIVE")?;
        Ok(p)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .map_err(|e| LabError::io("send to routelet", e))
    }

    /// Reads one message; returns its type (and the body of a NOTIFICATION through `read`).
    fn read(&mut self) -> Result<(u8, Vec<u8>)> {
        let mut hdr = [0u8; 19];
        self.stream
            .read_exact(&mut hdr)
            .map_err(|e| LabError::io("read from routelet", e))?;
        let len = usize::from(u16::from_be_bytes([hdr[16], hdr[17]]));
        let mut body = vec![0u8; len.saturating_sub(19)];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| LabError::io("read from routelet", e))?;
        Ok((hdr[18], body))
    }

    fn read_kind(&mut self) -> Result<u8> {
        Ok(self.read()?.0)
    }

    /// Reads until a NOTIFICATION arrives (skipping UPDATEs and KEEPALIVEs); its code/subcode.
    fn notification(&mut self) -> Result<(u8, u8)> {
        loop {
            let (kind, body) = self.read()?;
            if kind == 3 {
                return Ok((
                    body.first().copied().unwrap_or(0),
                    body.get(1).copied().unwrap_or(0),
                ));
            }
        }
    }
}

fn malformed(rl: &Routelet, peer: &str) -> Result<serde_json::Value> {
    Ok(rl.neighbor(peer)?.unwrap_or_default()["malformed"].clone())
}

#[test]
fn each_malformation_gets_its_rfc_7606_action_and_nothing_else_moves() -> Result<()> {
    Lab::run("rfc7606", |lab| {
        let a = lab.netns()?;
        let b = lab.netns()?;
        let c = lab.netns()?;
        veth(&a, "ab", &["10.0.1.1/24"], &b, "ba", &["10.0.1.2/24"])?;
        veth(&a, "ac", &["10.0.2.1/24"], &c, "ca", &["10.0.2.2/24"])?;
        let mut cfg = RouteletConfig::new("10.0.1.1", 65001);
        let mut raw = RlNeighbor::new("10.0.1.2", 65002);
        raw.passive = true;
        cfg.neighbors.push(raw);
        cfg.neighbors.push(RlNeighbor::new("10.0.2.2", 65003));
        cfg.metrics_address = Some("127.0.0.1:9179".into());
        let rl = Routelet::start(lab, &a, "a", &cfg)?;
        let mut ccfg = RouteletConfig::new("10.0.2.2", 65003);
        ccfg.neighbors.push(RlNeighbor::new("10.0.2.1", 65001));
        ccfg.originate.push(C_PREFIX.into());
        let _c = Routelet::start(lab, &c, "c", &ccfg)?;
        wait_until("c's route in a's kernel", Duration::from_secs(20), |seen| {
            a.has_kernel_route(C_PREFIX, RT_PROTO, seen)
        })?;
        let c_transitions = || -> Result<u64> {
            Ok(
                rl.neighbor("10.0.2.2")?.unwrap_or_default()["established_transitions"]
                    .as_u64()
                    .unwrap_or(0),
            )
        };
        ensure(c_transitions()? == 1, "c established once")?;

        let mut p = RawPeer::connect(&b, "10.0.1.1:179".parse().expect("address"))?;
        // A valid route first.
        p.send(&update(&base_attrs(), &[24, 198, 51, 100]))?;
        wait_until(
            "198.51.100.0/24 in a's kernel",
            Duration::from_secs(10),
            |seen| a.has_kernel_route("198.51.100.0/24", RT_PROTO, seen),
        )?;

        // Attribute discard (RFC 7606 7.6): ATOMIC_AGGREGATE with a value; the route stays.
        let mut attrs = base_attrs();
        attrs.push(attr(0x40, 6, &[1]));
        p.send(&update(&attrs, &[24, 198, 51, 101]))?;
        wait_until(
            "198.51.101.0/24 accepted without the bad attribute",
            Duration::from_secs(10),
            |seen| a.has_kernel_route("198.51.101.0/24", RT_PROTO, seen),
        )?;
        let m = malformed(&rl, "10.0.1.2")?;
        ensure(
            m["attribute_discard"] == 1 && m["treat_as_withdraw"] == 0,
            format!("one attribute discarded: {m}"),
        )?;

        // Treat-as-withdraw (RFC 7606 7.4): MULTI_EXIT_DISC of 3 bytes on 198.51.100.0/24,
        // which was announced before: it is withdrawn, the session stays up.
        let mut attrs = base_attrs();
        attrs.push(attr(0x80, 4, &[0, 0, 1]));
        p.send(&update(&attrs, &[24, 198, 51, 100]))?;
        wait_until(
            "198.51.100.0/24 treated as withdrawn",
            Duration::from_secs(10),
            |seen| Ok(!a.has_kernel_route("198.51.100.0/24", RT_PROTO, seen)?),
        )?;
        let m = malformed(&rl, "10.0.1.2")?;
        ensure(
            m["treat_as_withdraw"] == 1 && m["session_reset"] == 0,
            format!("one treat-as-withdraw: {m}"),
        )?;
        let mut seen = String::new();
        ensure(
            rl.established("10.0.1.2", &mut seen)?
                && a.has_kernel_route("198.51.101.0/24", RT_PROTO, &mut seen)?,
            format!("session and the other route untouched: {seen}"),
        )?;

        // Session reset (RFC 7606 5.3): an NLRI prefix length of 33 cannot be parsed, so
        // nothing after it can be located: NOTIFICATION 3/10 and the session goes.
        p.send(&update(&base_attrs(), &[33, 198, 51, 102, 0, 0]))?;
        let n = p.notification()?;
        ensure(
            n == (3, 10),
            format!("NOTIFICATION 3/10 (Invalid Network Field): {n:?}"),
        )?;
        wait_until(
            "the raw peer's routes are gone",
            Duration::from_secs(10),
            |seen| Ok(!a.has_kernel_route("198.51.101.0/24", RT_PROTO, seen)?),
        )?;
        let m = malformed(&rl, "10.0.1.2")?;
        ensure(m["session_reset"] == 1, format!("one session reset: {m}"))?;
        let metrics = rl.metrics()?;
        for action in ["attribute_discard", "treat_as_withdraw", "session_reset"] {
            let line = format!(
                "routelet_bgp_malformed_attributes_total{{neighbor=\"10.0.1.2\",action=\"{action}\"}} 1"
            );
            ensure(
                metrics.contains(&line),
                format!("metric {line} missing:\n{metrics}"),
            )?;
        }

        // The other peer never noticed.
        let mut seen = String::new();
        ensure(
            c_transitions()? == 1
                && rl.established("10.0.2.2", &mut seen)?
                && a.has_kernel_route(C_PREFIX, RT_PROTO, &mut seen)?,
            format!("c's session and route untouched: {seen}"),
        )
    })
}
