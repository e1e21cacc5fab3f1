//! The BFD tokio task (RFC 5881 transport): one wildcard receive socket per address family on
//! port 3784 with the TTL/hop limit reported per datagram, one send socket per session bound
//! to its local address with a source port in 49152-65535 and TTL 255. Does the I/O and the
//! clock; every protocol decision is in `session` and `demux`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::demux::{Demux, Discard, DiscardCounters, DiscardKind, REQUIRED_TTL};
use super::packet::BfdState;
use super::session::{Input, Output, Session};
use super::{
    sys, BfdError, BfdEvent, BfdOptions, BfdPeerConfig, BfdSessionStatus, BfdStatus, Command,
};

/// RFC 5881 section 4: source ports of Control packets.
const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// Retry interval of a send socket that could not be opened (local address missing...).
const BIND_RETRY: Duration = Duration::from_secs(1);
/// How long a removed session keeps sending AdminDown (RFC 5880 6.8.16), at least.
const ADMIN_DOWN_LINGER: Duration = Duration::from_secs(2);
/// At most one warning per discard reason per this period.
const WARN_EVERY: Duration = Duration::from_secs(1);

struct Entry {
    cfg: BfdPeerConfig,
    session: Session,
    /// Plain non-blocking std socket: a UDP send never waits, and a tokio socket would refuse
    /// its first `try_send_to` before the reactor has reported it writable.
    tx: Option<std::net::UdpSocket>,
    source_port: Option<u16>,
    next_bind: Option<Instant>,
    last_error: Option<String>,
    tx_errors: u64,
    discards: DiscardCounters,
    changed_at: Instant,
    /// Set once removed from the config: AdminDown, dropped at this instant.
    remove_at: Option<Instant>,
}

struct WarnLimit {
    last: HashMap<DiscardKind, Instant>,
    suppressed: HashMap<DiscardKind, u64>,
}

impl WarnLimit {
    fn warn(&mut self, now: Instant, src: SocketAddr, d: &Discard) {
        let kind = d.kind();
        if let Some(last) = self.last.get(&kind) {
            if now.duration_since(*last) < WARN_EVERY {
                *self.suppressed.entry(kind).or_default() += 1;
                return;
            }
        }
        let suppressed = self.suppressed.remove(&kind).unwrap_or_default();
        self.last.insert(kind, now);
        warn!(source = %src, reason = %kind, suppressed, "bfd: discarded packet: {d}");
    }
}

pub(crate) struct Driver {
    opts: BfdOptions,
    cmds: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<BfdEvent>,
    rx4: Option<UdpSocket>,
    rx6: Option<UdpSocket>,
    sessions: HashMap<IpAddr, Entry>,
    demux: Demux,
    discards: DiscardCounters,
    limit: WarnLimit,
}

fn rx_socket(v6: bool, port: u16) -> io::Result<Socket> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    let addr: SocketAddr = if v6 {
        sock.set_only_v6(true)?;
        sock.set_recv_hoplimit_v6(true)?;
        (Ipv6Addr::UNSPECIFIED, port).into()
    } else {
        sys::set_recv_ttl_v4(&sock)?;
        (Ipv4Addr::UNSPECIFIED, port).into()
    };
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

/// A send socket bound to `local` with a random source port in 49152-65535, TTL 255.
fn tx_socket(local: IpAddr) -> io::Result<std::net::UdpSocket> {
    let sock = Socket::new(Domain::for_address((local, 0).into()), Type::DGRAM, None)?;
    if local.is_ipv6() {
        sock.set_only_v6(true)?;
        sock.set_unicast_hops_v6(u32::from(REQUIRED_TTL))?;
    } else {
        sock.set_ttl_v4(u32::from(REQUIRED_TTL))?;
    }
    sock.set_nonblocking(true)?;
    let mut rng = rand::rng();
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free source port");
    for _ in 0..64 {
        let port = rng.random_range(SOURCE_PORTS);
        match sock.bind(&SocketAddr::new(local, port).into()) {
            Ok(()) => return Ok(sock.into()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Waits for one datagram on `fd` (forever if there is no such socket).
async fn recv_on(sock: Option<&UdpSocket>) -> io::Result<(Vec<u8>, sys::Datagram)> {
    let Some(sock) = sock else {
        return std::future::pending().await;
    };
    let mut buf = [0u8; 512];
    let d = sock
        .async_io(Interest::READABLE, || sys::recv_with_ttl(sock, &mut buf))
        .await?;
    Ok((buf.get(..d.len).unwrap_or_default().to_vec(), d))
}

enum Wake {
    Cmd(Option<Command>),
    Rx(io::Result<(Vec<u8>, sys::Datagram)>),
    Timer,
}

impl Driver {
    pub(crate) fn new(
        opts: BfdOptions,
        cmds: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<BfdEvent>,
    ) -> Result<Driver, BfdError> {
        let v4_addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, opts.listen_port));
        let v6_addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, opts.listen_port));
        let wrap = |addr, r: io::Result<Socket>| {
            r.and_then(|s| UdpSocket::from_std(s.into()))
                .map_err(|source| BfdError::Bind { addr, source })
        };
        let rx4 = wrap(v4_addr, rx_socket(false, opts.listen_port))?;
        // A host without IPv6 still gets IPv4 BFD.
        let rx6 = match wrap(v6_addr, rx_socket(true, opts.listen_port)) {
            Ok(s) => Some(s),
            Err(BfdError::Bind { source, .. })
                if matches!(source.raw_os_error(), Some(libc::EAFNOSUPPORT))
                    || source.kind() == io::ErrorKind::AddrNotAvailable =>
            {
                warn!("bfd: no IPv6 receive socket ({source}); IPv4 only");
                None
            }
            Err(e) => return Err(e),
        };
        Ok(Driver {
            opts,
            cmds,
            events,
            rx4: Some(rx4),
            rx6,
            sessions: HashMap::new(),
            demux: Demux::default(),
            discards: DiscardCounters::default(),
            limit: WarnLimit {
                last: HashMap::new(),
                suppressed: HashMap::new(),
            },
        })
    }

    pub(crate) async fn run(mut self) {
        loop {
            let deadline = self.next_deadline();
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            let wake = tokio::select! {
                c = self.cmds.recv() => Wake::Cmd(c),
                r = recv_on(self.rx4.as_ref()) => Wake::Rx(r),
                r = recv_on(self.rx6.as_ref()) => Wake::Rx(r),
                () = sleep => Wake::Timer,
            };
            match wake {
                Wake::Cmd(None) => {
                    self.shutdown();
                    return;
                }
                Wake::Cmd(Some(Command::SetPeers(peers))) => self.set_peers(peers),
                Wake::Cmd(Some(Command::Status(reply))) => {
                    let _ = reply.send(self.status());
                }
                Wake::Rx(Ok((bytes, d))) => self.on_datagram(&bytes, d),
                Wake::Rx(Err(e)) => {
                    warn!("bfd: receive error: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Wake::Timer => {}
            }
            self.run_timers(Instant::now());
        }
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        self.sessions
            .values()
            .flat_map(|e| [Some(e.session.next_deadline()), e.next_bind, e.remove_at])
            .flatten()
            .min()
            .unwrap_or(far)
    }

    fn new_discr(&self) -> u32 {
        let mut rng = rand::rng();
        loop {
            let d: u32 = rng.random();
            if d != 0 && !self.demux.discr_in_use(d) {
                return d;
            }
        }
    }

    fn add_session(&mut self, cfg: BfdPeerConfig, now: Instant) {
        let discr = self.new_discr();
        let session = Session::new(discr, cfg.session_config(), now, rand::random());
        self.demux.insert(cfg.peer, discr);
        info!(peer = %cfg.peer, local = %cfg.local, discr, "bfd: session added");
        let mut e = Entry {
            cfg,
            session,
            tx: None,
            source_port: None,
            next_bind: None,
            last_error: None,
            tx_errors: 0,
            discards: DiscardCounters::default(),
            changed_at: now,
            remove_at: None,
        };
        bind(&mut e, now);
        self.sessions.insert(cfg.peer, e);
    }

    fn set_peers(&mut self, peers: Vec<BfdPeerConfig>) {
        let now = Instant::now();
        let wanted: HashMap<IpAddr, BfdPeerConfig> =
            peers.into_iter().map(|p| (p.peer, p)).collect();
        // Removed peers: AdminDown for a while (the peer goes Down with diag 3 at once
        // instead of after its detection time), no more events.
        for (peer, e) in self.sessions.iter_mut() {
            if !wanted.contains_key(peer) && e.remove_at.is_none() {
                info!(peer = %peer, "bfd: session removed");
                e.remove_at = Some(now + ADMIN_DOWN_LINGER.max(e.session.detection_time()));
                let outs = e.session.handle(now, Input::AdminDown);
                apply(e, outs, now, self.opts.peer_port, None);
            }
        }
        for (peer, cfg) in wanted {
            match self.sessions.get_mut(&peer) {
                Some(e) if e.remove_at.is_none() && e.cfg.local == cfg.local => {
                    if e.cfg != cfg {
                        info!(peer = %peer, ?cfg, "bfd: timers changed");
                        e.cfg = cfg;
                        let outs = e
                            .session
                            .handle(now, Input::SetConfig(cfg.session_config()));
                        apply(e, outs, now, self.opts.peer_port, Some(&self.events));
                    }
                }
                Some(e) => {
                    // Re-added while lingering, or a new local address: a fresh session.
                    if e.remove_at.is_none() && e.session.state() == BfdState::Up {
                        let _ = self.events.send(BfdEvent {
                            peer,
                            state: BfdState::Down,
                            diag: super::Diag::AdministrativelyDown,
                            remote_state: e.session.snapshot().remote_state,
                        });
                    }
                    let old = e.session.handle(now, Input::AdminDown);
                    apply(e, old, now, self.opts.peer_port, None);
                    self.sessions.remove(&peer);
                    self.demux.remove(peer);
                    self.add_session(cfg, now);
                }
                None => self.add_session(cfg, now),
            }
        }
    }

    fn on_datagram(&mut self, bytes: &[u8], d: sys::Datagram) {
        let now = Instant::now();
        let src = crate::network::canonical(d.from.ip());
        match self.demux.classify(bytes, src, d.ttl) {
            Ok((peer, pkt)) => {
                if let Some(e) = self.sessions.get_mut(&peer) {
                    let outs = e.session.handle(now, Input::Received(pkt));
                    let events = e.remove_at.is_none().then_some(&self.events);
                    apply(e, outs, now, self.opts.peer_port, events);
                }
            }
            Err(discard) => {
                let kind = discard.kind();
                self.discards.add(kind);
                if let Some(e) = self.sessions.get_mut(&src) {
                    e.discards.add(kind);
                }
                self.limit.warn(now, d.from, &discard);
            }
        }
    }

    fn run_timers(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for (peer, e) in self.sessions.iter_mut() {
            if e.remove_at.is_some_and(|t| t <= now) {
                gone.push(*peer);
                continue;
            }
            if e.next_bind.is_some_and(|t| t <= now) {
                bind(e, now);
            }
            if e.session.next_deadline() <= now {
                let outs = e.session.handle(now, Input::Timer);
                let events = e.remove_at.is_none().then_some(&self.events);
                apply(e, outs, now, self.opts.peer_port, events);
            }
        }
        for peer in gone {
            debug!(peer = %peer, "bfd: session dropped after AdminDown");
            self.sessions.remove(&peer);
            self.demux.remove(peer);
        }
    }

    fn status(&self) -> BfdStatus {
        let now = Instant::now();
        let mut sessions: Vec<BfdSessionStatus> = self
            .sessions
            .values()
            .filter(|e| e.remove_at.is_none())
            .map(|e| BfdSessionStatus {
                config: e.cfg,
                session: e.session.snapshot(),
                source_port: e.source_port,
                since_change: now.saturating_duration_since(e.changed_at),
                discards: e.discards,
                tx_errors: e.tx_errors,
                last_error: e.last_error.clone(),
            })
            .collect();
        sessions.sort_by_key(|s| s.config.peer);
        BfdStatus {
            sessions,
            discards: self.discards,
        }
    }

    /// The last handle is gone: tell every peer we are going AdminDown, then stop.
    fn shutdown(&mut self) {
        let now = Instant::now();
        for e in self.sessions.values_mut() {
            let outs = e.session.handle(now, Input::AdminDown);
            apply(e, outs, now, self.opts.peer_port, None);
        }
        info!("bfd: stopped");
    }
}

/// Opens the session's send socket, or schedules a retry.
fn bind(e: &mut Entry, now: Instant) {
    match tx_socket(e.cfg.local) {
        Ok(s) => {
            e.source_port = s.local_addr().ok().map(|a| a.port());
            e.tx = Some(s);
            e.next_bind = None;
            e.last_error = None;
        }
        Err(err) => {
            if e.last_error.is_none() {
                warn!(peer = %e.cfg.peer, local = %e.cfg.local, "bfd: cannot open send socket: {err}; retrying");
            }
            e.last_error = Some(format!("bind {}: {err}", e.cfg.local));
            e.next_bind = Some(now + BIND_RETRY);
        }
    }
}

/// Carries out a session's outputs: packets to the peer, events to the consumer.
fn apply(
    e: &mut Entry,
    outs: Vec<Output>,
    now: Instant,
    port: u16,
    events: Option<&mpsc::UnboundedSender<BfdEvent>>,
) {
    for o in outs {
        match o {
            Output::Transmit(pkt) => {
                let to = SocketAddr::new(e.cfg.peer, port);
                let res = match &e.tx {
                    Some(s) => s.send_to(&pkt.encode(), to),
                    None => Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "no send socket",
                    )),
                };
                if let Err(err) = res {
                    e.tx_errors += 1;
                    if e.tx_errors.is_power_of_two() {
                        warn!(peer = %e.cfg.peer, errors = e.tx_errors, "bfd: send failed: {err}");
                    }
                    e.last_error = Some(format!("send to {to}: {err}"));
                }
            }
            Output::StateChanged {
                from,
                to,
                diag,
                remote_state,
            } => {
                e.changed_at = now;
                info!(peer = %e.cfg.peer, %from, %to, %diag, "bfd: session state");
                if to != BfdState::Init {
                    if let Some(ev) = events {
                        let _ = ev.send(BfdEvent {
                            peer: e.cfg.peer,
                            state: to,
                            diag,
                            remote_state,
                        });
                    }
                }
            }
        }
    }
}
