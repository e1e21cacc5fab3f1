//! Interop: routelet's BFD (bgp::bfd, run in-process on a thread inside the lab namespace)
//! <-> FRR 8.4 bfdd and BIRD 2 bfd, single hop, IPv4 and IPv6; plus malformed packets from a
//! raw UDP socket in the peer's namespace. Needs root, frr and bird2; run via scripts/test.sh.
//! Timings are printed (`--nocapture`), never asserted.

mod interop;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bgp::bfd::packet::ControlPacket;
use bgp::bfd::{
    Bfd, BfdEvent, BfdPeerConfig, BfdSessionStatus, BfdState, BfdStatus, Diag, DiscardKind,
};
use interop::daemon::Daemon;
use interop::frr::{Zebra, BFDD};
use interop::netns::add_addr;
use interop::{
    ensure, holds_for, parse_json, run, same_addr, wait_until, Lab, LabError, Netns, Pair, Result,
    P4, P6, R4, R6,
};
use tokio::sync::{mpsc, oneshot};

const SESSION_UP: Duration = Duration::from_secs(20);
const DETECT: Duration = Duration::from_secs(10);

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

// ------------------------------------------------------------------ routelet's BFD, in-process

enum Ctl {
    SetPeers(
        Vec<BfdPeerConfig>,
        oneshot::Sender<std::result::Result<(), String>>,
    ),
    Status(oneshot::Sender<std::result::Result<BfdStatus, String>>),
}

/// Our BFD on a current_thread runtime on a thread that entered `ns`: every socket it opens
/// lives in that namespace. Events are recorded with their arrival time. Drop stops it.
struct RlBfd {
    ctl: Option<mpsc::UnboundedSender<Ctl>>,
    events: Arc<Mutex<Vec<(Instant, BfdEvent)>>>,
    thread: Option<JoinHandle<()>>,
}

impl RlBfd {
    fn start(ns: &Netns) -> Result<RlBfd> {
        let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel::<Ctl>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::result::Result<(), String>>();
        let events = Arc::new(Mutex::new(Vec::new()));
        let rec = events.clone();
        let path = agent::netns::named(ns.name());
        let thread = std::thread::spawn(move || {
            let ready = ready_tx.clone();
            let res = agent::netns::run_in(&path, move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let (bfd, mut ev) = match Bfd::start() {
                        Ok(x) => x,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    loop {
                        tokio::select! {
                            c = ctl_rx.recv() => match c {
                                None => break,
                                Some(Ctl::SetPeers(p, reply)) => {
                                    let _ = reply.send(bfd.set_peers(p).map_err(|e| e.to_string()));
                                }
                                Some(Ctl::Status(reply)) => {
                                    let _ = reply.send(bfd.status().await.map_err(|e| e.to_string()));
                                }
                            },
                            Some(e) = ev.recv() => {
                                if let Ok(mut v) = rec.lock() {
                                    v.push((Instant::now(), e));
                                }
                            }
                        }
                    }
                    // Let the driver send its AdminDown packets before the runtime goes.
                    drop(bfd);
                    tokio::time::sleep(ms(50)).await;
                });
            });
            if let Err(e) = res {
                let _ = ready.send(Err(e.to_string()));
            }
        });
        let started = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| LabError::Check(format!("routelet BFD did not start: {e}")))?;
        let rl = RlBfd {
            ctl: Some(ctl_tx),
            events,
            thread: Some(thread),
        };
        started.map_err(|e| LabError::Check(format!("routelet BFD: {e}")))?;
        Ok(rl)
    }

    fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Ctl) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.ctl
            .as_ref()
            .ok_or_else(|| LabError::Check("BFD stopped".into()))?
            .send(make(tx))
            .map_err(|_| LabError::Check("BFD thread gone".into()))?;
        rx.blocking_recv()
            .map_err(|_| LabError::Check("BFD thread gone".into()))
    }

    fn set_peers(&self, peers: Vec<BfdPeerConfig>) -> Result<()> {
        self.call(|tx| Ctl::SetPeers(peers, tx))?
            .map_err(|e| LabError::Check(format!("set_peers: {e}")))
    }

    fn status(&self) -> Result<BfdStatus> {
        self.call(Ctl::Status)?
            .map_err(|e| LabError::Check(format!("status: {e}")))
    }

    fn session(&self, peer: &str) -> Result<BfdSessionStatus> {
        let st = self.status()?;
        st.session(addr(peer))
            .cloned()
            .ok_or_else(|| LabError::Check(format!("no BFD session for {peer}: {st:?}")))
    }

    fn is_up(&self, peer: &str, seen: &mut String) -> Result<bool> {
        let s = self.session(peer)?;
        seen.push_str(&format!(
            "routelet bfd {peer}: {} (diag {}, remote {})\n",
            s.session.state, s.session.local_diag, s.session.remote_state
        ));
        Ok(s.session.state == BfdState::Up)
    }

    fn events(&self) -> Vec<(Instant, BfdEvent)> {
        self.events.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for RlBfd {
    fn drop(&mut self) {
        self.ctl.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------------ FRR bfdd

/// zebra + bfdd for one namespace (pathspace `-N NS`). Fields drop in order: bfdd, zebra.
struct FrrBfd {
    bfdd: Daemon,
    zebra: Zebra,
}

struct FrrPeer {
    peer: &'static str,
    local: &'static str,
    rx: u32,
    tx: u32,
    mult: u8,
}

impl FrrPeer {
    fn new(peer: &'static str, local: &'static str) -> FrrPeer {
        FrrPeer {
            peer,
            local,
            rx: 300,
            tx: 300,
            mult: 3,
        }
    }
}

impl FrrBfd {
    fn start(lab: &Lab, ns: &Netns, peers: &[FrrPeer]) -> Result<FrrBfd> {
        let zebra = Zebra::start(lab, ns, "frr")?;
        let mut c = String::from("hostname frr\nlog stdout informational\n!\nbfd\n");
        for p in peers {
            c.push_str(&format!(
                " peer {} local-address {}\n  receive-interval {}\n  transmit-interval {}\n  detect-multiplier {}\n !\n",
                p.peer, p.local, p.rx, p.tx, p.mult
            ));
        }
        c.push_str("!\n");
        let conf = lab.write("frr-bfdd.conf", &c)?;
        let bfdd = zebra.spawn(
            lab,
            ns,
            "frr-bfdd",
            BFDD,
            &conf,
            &["--bfdctl", "{rd}/bfdd.sock"],
        )?;
        let mut frr = FrrBfd { bfdd, zebra };
        wait_until("FRR bfdd vty", Duration::from_secs(10), |seen| {
            frr.bfdd.check_running()?;
            let out = frr.vtysh("show bfd peers json");
            seen.push_str(&format!("{out:?}"));
            Ok(out.is_ok())
        })?;
        Ok(frr)
    }

    fn vtysh(&self, cmd: &str) -> Result<String> {
        self.zebra.vtysh(cmd)
    }

    fn find(&self, cmd: &str, peer: &str) -> Result<Option<serde_json::Value>> {
        let v = parse_json(cmd, &self.vtysh(cmd)?)?;
        Ok(v.as_array().and_then(|a| {
            a.iter()
                .find(|p| {
                    p.get("peer")
                        .and_then(|x| x.as_str())
                        .is_some_and(|x| same_addr(x, peer))
                })
                .cloned()
        }))
    }

    /// FRR's `show bfd peers json` entry for `peer`.
    fn peer(&self, peer: &str) -> Result<serde_json::Value> {
        self.find("show bfd peers json", peer)?
            .ok_or_else(|| LabError::Check(format!("FRR has no BFD peer {peer}")))
    }

    fn counters(&self, peer: &str) -> Result<serde_json::Value> {
        self.find("show bfd peers counters json", peer)?
            .ok_or_else(|| LabError::Check(format!("FRR has no BFD counters for {peer}")))
    }

    fn status(&self, peer: &str, seen: &mut String) -> Result<String> {
        let p = self.peer(peer)?;
        seen.push_str(&format!("frr bfd {peer}: {p}\n"));
        Ok(p.get("status")
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_string())
    }
}

fn num(v: &serde_json::Value, key: &str) -> Option<u64> {
    v.get(key).and_then(|x| x.as_u64())
}

// ------------------------------------------------------------------ BIRD bfd

struct BirdBfd {
    daemon: Daemon,
    socket: PathBuf,
}

impl BirdBfd {
    fn start(lab: &Lab, ns: &Netns, router_id: &str, peer: &str, local: &str) -> Result<BirdBfd> {
        let conf = lab.write(
            "bird.conf",
            &format!(
                "router id {router_id};\n\
                 protocol device {{ scan time 10; }}\n\
                 protocol bfd {{\n\
                 \x20 interface \"*\" {{ min rx interval 300 ms; min tx interval 300 ms; multiplier 3; }};\n\
                 \x20 neighbor {peer} local {local};\n\
                 }}\n"
            ),
        )?;
        run(Command::new("bird").args(["-p", "-c"]).arg(&conf))?;
        let socket = lab.path("bird.ctl");
        let pid = lab.path("bird.pid");
        let daemon = Daemon::spawn(
            lab,
            ns,
            "bird",
            &[
                "bird",
                "-f",
                "-c",
                &conf.to_string_lossy(),
                "-s",
                &socket.to_string_lossy(),
                "-P",
                &pid.to_string_lossy(),
            ],
            &[],
        )?;
        let mut bird = BirdBfd { daemon, socket };
        wait_until("BIRD control socket", Duration::from_secs(10), |seen| {
            bird.daemon.check_running()?;
            seen.push_str("waiting for birdc");
            Ok(bird.birdc(&["show", "status"]).is_ok())
        })?;
        Ok(bird)
    }

    fn birdc(&self, args: &[&str]) -> Result<String> {
        run(Command::new("birdc").arg("-s").arg(&self.socket).args(args))
    }

    /// State column of `show bfd sessions` for `peer` ("Up", "Down", "Init", ...).
    fn state(&self, peer: &str, seen: &mut String) -> Result<Option<String>> {
        let out = self.birdc(&["show", "bfd", "sessions"])?;
        seen.push_str(&format!("bird: {out}\n"));
        Ok(out.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            let a = it.next()?;
            if !same_addr(a, peer) {
                return None;
            }
            let _iface = it.next()?;
            it.next().map(str::to_string)
        }))
    }
}

// ------------------------------------------------------------------ helpers

fn wait_both_up(
    rl: &RlBfd,
    rl_peer: &str,
    other: impl Fn(&mut String) -> Result<bool>,
) -> Result<Duration> {
    let took = wait_until("BFD Up on both sides", SESSION_UP, |seen| {
        let a = rl.is_up(rl_peer, seen)?;
        let b = other(seen)?;
        Ok(a && b)
    })?;
    println!("session Up on both sides after {took:?}");
    Ok(took)
}

fn down_events(rl: &RlBfd) -> Vec<(Instant, BfdEvent)> {
    rl.events()
        .into_iter()
        .filter(|(_, e)| e.state != BfdState::Up)
        .collect()
}

/// Waits for our Down event after `cut` and prints the measured detection time.
fn wait_detected(rl: &RlBfd, cut: Instant, what: &str) -> Result<BfdEvent> {
    wait_until(what, DETECT, |seen| {
        let d = down_events(rl);
        seen.push_str(&format!("events: {:?}\n", rl.events()));
        Ok(!d.is_empty())
    })?;
    let (t, e) = down_events(rl)
        .into_iter()
        .next()
        .ok_or_else(|| LabError::Check("no Down event".into()))?;
    println!(
        "{what}: Down ({}) {:?} after the cut",
        e.diag,
        t.saturating_duration_since(cut)
    );
    Ok(e)
}

/// Waits until both initial Poll Sequences (1 s -> configured) are over on our side and
/// returns our session then.
fn settled(rl: &RlBfd, peer: &str, remote_min_tx: Duration) -> Result<BfdSessionStatus> {
    wait_until("timers settled after Up", Duration::from_secs(10), |seen| {
        let o = rl.session(peer)?;
        seen.push_str(&format!("{o:?}\n"));
        Ok(o.session.state == BfdState::Up
            && !o.session.poll_in_progress
            && o.session.remote_min_tx == remote_min_tx)
    })?;
    rl.session(peer)
}

struct FrrSetup {
    frr: FrrBfd,
    rl: RlBfd,
    pair: Pair,
}

fn frr_setup(lab: &Lab, ours: BfdPeerConfig, frr_peer: FrrPeer) -> Result<FrrSetup> {
    let pair = Pair::new(lab)?;
    let rl = RlBfd::start(&pair.r)?;
    rl.set_peers(vec![ours])?;
    let frr = FrrBfd::start(lab, &pair.p, &[frr_peer])?;
    Ok(FrrSetup { frr, rl, pair })
}

fn frr_up(s: &FrrSetup, rl_peer: &str, me: &str) -> Result<()> {
    wait_both_up(&s.rl, rl_peer, |seen| Ok(s.frr.status(me, seen)? == "up"))?;
    Ok(())
}

/// routelet <-> FRR over IPv4 with default timers on both sides, Up on both.
fn frr_default_up(lab: &Lab) -> Result<FrrSetup> {
    let s = frr_setup(
        lab,
        BfdPeerConfig::new(addr(P4), addr(R4)),
        FrrPeer::new(R4, P4),
    )?;
    frr_up(&s, P4, R4)?;
    Ok(s)
}

/// Takes the peer side's link (`vp` in `pair.p`) down and waits for our Down, which must be
/// a control detection time expiry.
fn cut_and_detect(pair: &Pair, rl: &RlBfd, what: &str) -> Result<BfdEvent> {
    let cut = Instant::now();
    pair.p.ip(&["link", "set", "vp", "down"])?;
    let e = wait_detected(rl, cut, what)?;
    ensure(
        e.state == BfdState::Down && e.diag == Diag::ControlDetectionTimeExpired,
        format!("expected Down / control detection time expired: {e:?}"),
    )?;
    Ok(e)
}

/// 300 ms x 3 on both sides: tx every 300 ms, detection after 900 ms.
fn default_timers_negotiated(o: &BfdSessionStatus) -> Result<()> {
    ensure(
        o.session.tx_interval == ms(300) && o.session.detection_time == ms(900),
        format!("negotiated 300 ms / 900 ms expected: {o:?}"),
    )
}

// ------------------------------------------------------------------ FRR tests

#[test]
fn frr_bfd_session_comes_up_on_both_sides() -> Result<()> {
    Lab::run("bfdfrr", |lab| {
        let s = frr_default_up(lab)?;
        let ours = settled(&s.rl, P4, ms(300))?;
        println!("routelet: {ours:?}");
        println!("frr: {}", s.frr.peer(R4)?);
        let ev = s.rl.events();
        ensure(
            matches!(ev.first(), Some((_, e)) if e.state == BfdState::Up && e.peer == addr(P4)),
            format!("first event should be Up for {P4}: {ev:?}"),
        )?;
        let f = s.frr.peer(R4)?;
        ensure(
            num(&f, "remote-id") == Some(u64::from(ours.session.local_discr))
                && num(&f, "id") == Some(u64::from(ours.session.remote_discr)),
            format!("discriminators disagree: ours {ours:?}, FRR {f}"),
        )?;
        default_timers_negotiated(&ours)?;
        // It stays Up (no flap while the initial poll sequences run).
        holds_for("session stays Up", Duration::from_secs(3), |seen| {
            Ok(s.rl.is_up(P4, seen)? && s.frr.status(R4, seen)? == "up")
        })?;
        ensure(
            down_events(&s.rl).is_empty(),
            format!("no Down expected: {:?}", s.rl.events()),
        )
    })
}

#[test]
fn frr_bfd_negotiates_different_intervals_per_rfc() -> Result<()> {
    Lab::run("bfdneg", |lab| {
        // Ours: rx 300, tx 250, x3. FRR: rx 400, tx 200, x5.
        let mut ours = BfdPeerConfig::new(addr(P4), addr(R4));
        ours.min_rx = ms(300);
        ours.min_tx = ms(250);
        let mut fp = FrrPeer::new(R4, P4);
        fp.rx = 400;
        fp.tx = 200;
        fp.mult = 5;
        let s = frr_setup(lab, ours, fp)?;
        frr_up(&s, P4, R4)?;
        // Wait for both initial poll sequences to settle.
        let o = settled(&s.rl, P4, ms(200))?;
        let f = s.frr.peer(R4)?;
        println!(
            "routelet: tx {:?}, detect {:?}; FRR: {f}",
            o.session.tx_interval, o.session.detection_time
        );
        // RFC 5880 6.8.2 / 6.8.4 on our side:
        //   tx = max(our DesiredMinTx 250, FRR's RequiredMinRx 400) = 400
        //   detect = FRR's mult 5 x max(our RequiredMinRx 300, FRR's DesiredMinTx 200) = 1500
        ensure(
            o.session.remote_min_rx == ms(400)
                && o.session.remote_min_tx == ms(200)
                && o.session.remote_detect_mult == 5,
            format!("FRR's advertised values: {o:?}"),
        )?;
        ensure(
            o.session.tx_interval == ms(400),
            format!("tx interval: {o:?}"),
        )?;
        ensure(
            o.session.detection_time == ms(1500),
            format!("detection time: {o:?}"),
        )?;
        // FRR's view of what we advertise: rx 300, tx 250, x3 -> FRR sends every
        // max(200, 300) = 300 ms and detects in 3 x max(400, 250) = 1200 ms.
        ensure(
            num(&f, "remote-receive-interval") == Some(300)
                && num(&f, "remote-transmit-interval") == Some(250)
                && num(&f, "remote-detect-multiplier") == Some(3),
            format!("FRR's view of our timers: {f}"),
        )?;
        // FRR prints the negotiated values in the text form.
        let text = s.frr.vtysh(&format!("show bfd peer {R4}"))?;
        println!("{text}");
        Ok(())
    })
}

#[test]
fn frr_bfd_runtime_timer_change_polls_without_flap() -> Result<()> {
    Lab::run("bfdpoll", |lab| {
        let mut ours = BfdPeerConfig::new(addr(P4), addr(R4));
        let s = frr_setup(lab, ours, FrrPeer::new(R4, P4))?;
        frr_up(&s, P4, R4)?;
        wait_until("initial poll done", Duration::from_secs(10), |seen| {
            let o = s.rl.session(P4)?;
            seen.push_str(&format!("{o:?}\n"));
            Ok(!o.session.poll_in_progress && o.session.advertised_min_tx == ms(300))
        })?;
        let before = s.rl.session(P4)?;
        let frr_downs_before = num(&s.frr.counters(R4)?, "session-down");
        ours.min_tx = ms(600);
        ours.min_rx = ms(500);
        let t0 = Instant::now();
        s.rl.set_peers(vec![ours])?;
        let took = wait_until(
            "FRR sees our new timers (poll sequence)",
            Duration::from_secs(10),
            |seen| {
                let f = s.frr.peer(R4)?;
                seen.push_str(&format!("{f}\n"));
                Ok(num(&f, "remote-transmit-interval") == Some(600)
                    && num(&f, "remote-receive-interval") == Some(500))
            },
        )?;
        wait_until(
            "our poll sequence completes",
            Duration::from_secs(10),
            |seen| {
                let o = s.rl.session(P4)?;
                seen.push_str(&format!("{o:?}\n"));
                Ok(!o.session.poll_in_progress && o.session.tx_interval == ms(600))
            },
        )?;
        println!(
            "FRR saw the new timers {took:?} after set_peers ({:?} total)",
            t0.elapsed()
        );
        let after = s.rl.session(P4)?;
        ensure(
            after.session.counters.polls_completed > before.session.counters.polls_completed,
            format!("a poll sequence should have completed: {before:?} -> {after:?}"),
        )?;
        // 6.8.4: FRR sends every 300 ms -> our detection 3 x max(500, 300) = 1500 ms.
        ensure(
            after.session.detection_time == ms(1500),
            format!("detection time after the change: {after:?}"),
        )?;
        holds_for(
            "session stays Up after the change",
            Duration::from_secs(3),
            |seen| Ok(s.rl.is_up(P4, seen)? && s.frr.status(R4, seen)? == "up"),
        )?;
        ensure(
            down_events(&s.rl).is_empty() && s.rl.events().len() == 1,
            format!("no flap expected: {:?}", s.rl.events()),
        )?;
        let frr_downs_after = num(&s.frr.counters(R4)?, "session-down");
        ensure(
            frr_downs_before.is_some() && frr_downs_before == frr_downs_after,
            format!("FRR counted a session down: {frr_downs_before:?} -> {frr_downs_after:?}"),
        )?;
        ensure(
            after.session.counters.up_transitions == 1,
            format!("one Up only: {after:?}"),
        )
    })
}

#[test]
fn frr_bfd_link_down_is_detected_and_recovers() -> Result<()> {
    Lab::run("bfdlink", |lab| {
        let s = frr_default_up(lab)?;
        holds_for("settled", Duration::from_secs(2), |seen| {
            s.rl.is_up(P4, seen)
        })?;
        cut_and_detect(&s.pair, &s.rl, "link down on FRR's side")?;
        let o = s.rl.session(P4)?;
        ensure(
            o.session.remote_discr == 0,
            format!("RemoteDiscr zeroed: {o:?}"),
        )?;
        // Link back: the session comes Up again.
        s.pair.p.ip(&["link", "set", "vp", "up"])?;
        wait_both_up(&s.rl, P4, |seen| Ok(s.frr.status(R4, seen)? == "up"))?;
        Ok(())
    })
}

#[test]
fn frr_bfd_ipv6_session() -> Result<()> {
    Lab::run("bfdv6", |lab| {
        let s = frr_setup(
            lab,
            BfdPeerConfig::new(addr(P6), addr(R6)),
            FrrPeer::new(R6, P6),
        )?;
        frr_up(&s, P6, R6)?;
        let o = settled(&s.rl, P6, ms(300))?;
        println!("routelet v6: {o:?}");
        default_timers_negotiated(&o)?;
        cut_and_detect(&s.pair, &s.rl, "IPv6 link down")?;
        Ok(())
    })
}

#[test]
fn frr_bfd_removed_peer_is_signalled_admin_down() -> Result<()> {
    Lab::run("bfdrm", |lab| {
        let s = frr_default_up(lab)?;
        let t0 = Instant::now();
        s.rl.set_peers(vec![])?;
        let took = wait_until("FRR sees our AdminDown", Duration::from_secs(5), |seen| {
            let f = s.frr.peer(R4)?;
            seen.push_str(&format!("{f}\n"));
            Ok(f.get("status").and_then(|x| x.as_str()) == Some("down")
                && f.get("remote-diagnostic")
                    .and_then(|x| x.as_str())
                    .is_some_and(|d| d.contains("administratively")))
        })?;
        println!(
            "FRR went down {took:?} after set_peers([]) ({:?})",
            t0.elapsed()
        );
        ensure(
            s.rl.status()?.sessions.is_empty(),
            "the removed session is no longer listed",
        )?;
        ensure(
            down_events(&s.rl).is_empty(),
            format!("a removed session emits no event: {:?}", s.rl.events()),
        )
    })
}

// ------------------------------------------------------------------ BIRD

#[test]
fn bird_bfd_session_up_and_down_on_link_loss() -> Result<()> {
    Lab::run("bfdbird", |lab| {
        let pair = Pair::new(lab)?;
        let rl = RlBfd::start(&pair.r)?;
        rl.set_peers(vec![BfdPeerConfig::new(addr(P4), addr(R4))])?;
        let bird = BirdBfd::start(lab, &pair.p, P4, R4, P4)?;
        wait_both_up(&rl, P4, |seen| {
            Ok(bird.state(R4, seen)?.as_deref() == Some("Up"))
        })?;
        let o = settled(&rl, P4, ms(300))?;
        println!("routelet: {o:?}");
        // BIRD's own negotiated interval and detection timeout for us, once both initial
        // poll sequences (1 s -> 300 ms) are over.
        wait_until(
            "BIRD shows interval 0.300 and timeout 0.900",
            Duration::from_secs(5),
            |seen| {
                let table = bird.birdc(&["show", "bfd", "sessions"])?;
                seen.push_str(&table);
                let line = table
                    .lines()
                    .find(|l| {
                        l.split_whitespace()
                            .next()
                            .is_some_and(|a| same_addr(a, R4))
                    })
                    .unwrap_or("");
                let cols: Vec<&str> = line.split_whitespace().collect();
                Ok(cols.len() >= 6 && cols.ends_with(&["0.300", "0.900"]))
            },
        )?;
        println!("{}", bird.birdc(&["show", "bfd", "sessions"])?);
        default_timers_negotiated(&o)?;
        holds_for("settled", Duration::from_secs(2), |seen| rl.is_up(P4, seen))?;
        cut_and_detect(&pair, &rl, "link down on BIRD's side")?;
        drop(bird);
        Ok(())
    })
}

// ------------------------------------------------------------------ malformed packets

/// Sends `payload` from `src` (a source port >= 49152) with `ttl` to `dst`:3784, from a thread
/// inside `ns`.
fn send_raw(ns: &Netns, src: &str, dst: &str, ttl: u32, payload: Vec<u8>) -> Result<()> {
    let (src, dst) = (addr(src), addr(dst));
    let out = agent::netns::run_in(&agent::netns::named(ns.name()), move || {
        let domain = socket2::Domain::for_address(SocketAddr::new(src, 0));
        let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
        if src.is_ipv6() {
            sock.set_unicast_hops_v6(ttl)?;
        } else {
            sock.set_ttl_v4(ttl)?;
        }
        let mut bound = Err(std::io::Error::other("no free port"));
        for port in 50_000u16..50_100 {
            bound = sock.bind(&SocketAddr::new(src, port).into());
            if bound.is_ok() {
                break;
            }
        }
        bound?;
        sock.send_to(&payload, &SocketAddr::new(dst, 3784).into())
            .map(|_| ())
    })
    .map_err(|e| LabError::Check(format!("raw sender: {e}")))?;
    out.map_err(|e| LabError::io("raw send", e))
}

#[test]
fn malformed_packets_are_counted_and_the_session_stays_up() -> Result<()> {
    Lab::run("bfdbad", |lab| {
        let s = frr_default_up(lab)?;
        let o = s.rl.session(P4)?;
        // A packet that would be valid from FRR (Up, right discriminators).
        let valid = ControlPacket::new(BfdState::Up, o.session.remote_discr, o.session.local_discr)
            .encode();
        let mut bad_version = valid;
        bad_version[0] = (2 << 5) | (bad_version[0] & 0x1f);
        let mut bad_length = valid;
        bad_length[3] = 16;
        let mut long_length = valid.to_vec();
        long_length[3] = 40;
        let mut zero_mult = valid;
        zero_mult[2] = 0;
        let mut zero_my = valid;
        zero_my[4..8].copy_from_slice(&[0; 4]);
        let mut multipoint = valid;
        multipoint[1] |= 0x01;
        let mut unknown_discr = valid;
        unknown_discr[8..12].copy_from_slice(&(o.session.local_discr ^ 0x5a5a_5a5a).to_be_bytes());
        // A second address on FRR's side, not a configured peer.
        add_addr(&s.pair.p, "vp", "10.0.0.3/24")?;
        let mut stranger = valid;
        stranger[1] = 1 << 6; // Down
        stranger[8..12].copy_from_slice(&[0; 4]); // your discr 0: selected by source address

        let sends: Vec<(&str, &str, u32, Vec<u8>, DiscardKind)> = vec![
            (
                "bad version",
                P4,
                255,
                bad_version.to_vec(),
                DiscardKind::BadVersion,
            ),
            (
                "length 16",
                P4,
                255,
                bad_length.to_vec(),
                DiscardKind::BadLength,
            ),
            (
                "length beyond payload",
                P4,
                255,
                long_length,
                DiscardKind::BadLength,
            ),
            (
                "truncated",
                P4,
                255,
                valid[..10].to_vec(),
                DiscardKind::BadLength,
            ),
            (
                "detect mult 0",
                P4,
                255,
                zero_mult.to_vec(),
                DiscardKind::ZeroDetectMult,
            ),
            (
                "my discr 0",
                P4,
                255,
                zero_my.to_vec(),
                DiscardKind::ZeroMyDiscriminator,
            ),
            (
                "multipoint",
                P4,
                255,
                multipoint.to_vec(),
                DiscardKind::Multipoint,
            ),
            (
                "unknown your discr",
                P4,
                255,
                unknown_discr.to_vec(),
                DiscardKind::UnknownDiscriminator,
            ),
            ("TTL 254", P4, 254, valid.to_vec(), DiscardKind::BadTtl),
            (
                "unknown source",
                "10.0.0.3",
                255,
                stranger.to_vec(),
                DiscardKind::UnknownSource,
            ),
            (
                "discr of another source",
                "10.0.0.3",
                255,
                valid.to_vec(),
                DiscardKind::SourceMismatch,
            ),
        ];
        for (what, src, ttl, payload, kind) in sends {
            let before = s.rl.status()?;
            send_raw(&s.pair.p, src, R4, ttl, payload)?;
            wait_until(
                &format!("{what} counted as {kind}"),
                Duration::from_secs(5),
                |seen| {
                    let st = s.rl.status()?;
                    seen.push_str(&format!("global {:?}\n", st.discards));
                    Ok(st.discards.get(kind) == before.discards.get(kind) + 1)
                },
            )?;
            let st = s.rl.status()?;
            let sess = st
                .session(addr(P4))
                .ok_or_else(|| LabError::Check("session gone".into()))?;
            ensure(
                st.discards.total() == before.discards.total() + 1,
                format!("{what}: exactly one discard expected: {:?}", st.discards),
            )?;
            // Attributed to the session when it came from the peer's address.
            let per_session_before = before
                .session(addr(P4))
                .map(|x| x.discards.get(kind))
                .unwrap_or_default();
            let expect = if src == P4 { 1 } else { 0 };
            ensure(
                sess.discards.get(kind) == per_session_before + expect,
                format!("{what}: per-session counter {:?}", sess.discards),
            )?;
            ensure(
                sess.session.state == BfdState::Up,
                format!("{what}: session left Up: {sess:?}"),
            )?;
            println!("{what}: counted as {kind}");
        }
        holds_for(
            "session stays Up on both sides",
            Duration::from_secs(3),
            |seen| Ok(s.rl.is_up(P4, seen)? && s.frr.status(R4, seen)? == "up"),
        )?;
        ensure(
            down_events(&s.rl).is_empty(),
            format!("no Down expected: {:?}", s.rl.events()),
        )?;
        println!("final discards: {:?}", s.rl.status()?.discards);
        Ok(())
    })
}
