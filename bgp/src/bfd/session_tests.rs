//! Unit tests of the sans-IO session: two sessions wired back to back on a virtual clock.
#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;

const MS: Duration = Duration::from_millis(1);

fn cfg(tx: u64, rx: u64, mult: u8) -> SessionConfig {
    SessionConfig {
        min_tx: MS * tx as u32,
        min_rx: MS * rx as u32,
        detect_mult: mult,
    }
}

/// Two sessions with a zero-latency link that can be cut; every packet goes through the codec.
struct Wire {
    a: Session,
    b: Session,
    now: Instant,
    start: Instant,
    link_up: bool,
    /// (time, from 'a'/'b', packet) of every packet put on the wire.
    sent: Vec<(Instant, char, ControlPacket)>,
    changes: Vec<(Instant, char, BfdState, BfdState, Diag)>,
}

impl Wire {
    fn new(ca: SessionConfig, cb: SessionConfig) -> Wire {
        let now = Instant::now();
        Wire {
            a: Session::new(0xaaaa, ca, now, 1),
            b: Session::new(0xbbbb, cb, now + MS * 3, 2),
            now,
            start: now,
            link_up: true,
            sent: Vec::new(),
            changes: Vec::new(),
        }
    }

    fn session(&mut self, who: char) -> &mut Session {
        if who == 'a' {
            &mut self.a
        } else {
            &mut self.b
        }
    }

    /// Feeds `input` to `who` and delivers every resulting packet, recursively.
    fn input(&mut self, who: char, input: Input) {
        let mut queue = vec![(who, input)];
        while let Some((who, input)) = queue.pop() {
            let now = self.now;
            let outs = self.session(who).handle(now, input);
            for o in outs {
                match o {
                    Output::Transmit(p) => {
                        self.sent.push((now, who, p));
                        let decoded = ControlPacket::decode(&p.encode()).unwrap();
                        assert_eq!(decoded, p);
                        assert!(!(p.poll && p.final_), "P and F together: {p:?}");
                        if self.link_up {
                            let to = if who == 'a' { 'b' } else { 'a' };
                            queue.insert(0, (to, Input::Received(decoded)));
                        }
                    }
                    Output::StateChanged { from, to, diag, .. } => {
                        self.changes.push((now, who, from, to, diag))
                    }
                }
            }
        }
    }

    /// Advances the clock deadline by deadline until `until`.
    fn run_until(&mut self, until: Instant) {
        loop {
            let next = self.a.next_deadline().min(self.b.next_deadline());
            if next > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            for who in ['a', 'b'] {
                if self.session(who).next_deadline() <= self.now {
                    self.input(who, Input::Timer);
                }
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn both_up(&self) -> bool {
        self.a.state() == BfdState::Up && self.b.state() == BfdState::Up
    }

    fn changes_of(&self, who: char) -> Vec<(BfdState, BfdState, Diag)> {
        self.changes
            .iter()
            .filter(|c| c.1 == who)
            .map(|c| (c.2, c.3, c.4))
            .collect()
    }

    fn sent_by(&self, who: char) -> Vec<(Instant, ControlPacket)> {
        self.sent
            .iter()
            .filter(|s| s.1 == who)
            .map(|s| (s.0, s.2))
            .collect()
    }
}

#[test]
fn three_way_handshake_brings_both_up() {
    let mut w = Wire::new(cfg(300, 300, 3), cfg(300, 300, 3));
    w.run_for(MS * 5000);
    assert!(w.both_up(), "{:?}", w.changes);
    use BfdState::*;
    // A's Down reaches B first: B goes Init, its Init brings A Up, A's Up brings B Up.
    assert_eq!(w.changes_of('a'), vec![(Down, Up, Diag::None)]);
    assert_eq!(
        w.changes_of('b'),
        vec![(Down, Init, Diag::None), (Init, Up, Diag::None)]
    );
    // The first packet knows no peer yet.
    let first = w.sent_by('a')[0].1;
    assert_eq!((first.state, first.your_discr), (Down, 0));
    assert_eq!(w.a.snapshot().remote_discr, 0xbbbb);
    assert_eq!(w.b.snapshot().remote_discr, 0xaaaa);
}

#[test]
fn slow_transmission_while_not_up() {
    let mut w = Wire::new(cfg(50, 300, 3), cfg(50, 300, 3));
    w.link_up = false;
    w.run_for(MS * 20_000);
    let sent = w.sent_by('a');
    assert!(sent.len() >= 18, "{} packets", sent.len());
    for pair in sent.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= MS * 750 && gap <= MS * 1000, "gap {gap:?}");
        assert_eq!(pair[1].1.desired_min_tx_us, 1_000_000);
        assert_eq!(pair[1].1.required_min_rx_us, 300_000);
        assert_eq!(pair[1].1.state, BfdState::Down);
    }
}

#[test]
fn up_polls_down_to_the_configured_interval() {
    let mut w = Wire::new(cfg(300, 300, 3), cfg(300, 300, 3));
    w.run_for(MS * 10_000);
    assert!(w.both_up());
    for s in [w.a.snapshot(), w.b.snapshot()] {
        assert_eq!(s.advertised_min_tx, MS * 300);
        assert_eq!(s.tx_interval, MS * 300);
        assert_eq!(s.detection_time, MS * 900);
        assert!(!s.poll_in_progress);
        assert!(s.counters.polls_started >= 1 && s.counters.polls_completed >= 1);
    }
    // The first Up packet carried P with the new interval; the peer answered F.
    let poll = w
        .sent_by('a')
        .into_iter()
        .find(|(_, p)| p.poll)
        .map(|(_, p)| p)
        .unwrap();
    assert_eq!(poll.desired_min_tx_us, 300_000);
    assert!(w.sent_by('b').iter().any(|(_, p)| p.final_));
}

#[test]
fn negotiation_follows_rfc_formulas_with_different_values() {
    // A: tx 300, rx 500, mult 3; B: tx 200, rx 400, mult 5.
    let mut w = Wire::new(cfg(300, 500, 3), cfg(200, 400, 5));
    w.run_for(MS * 10_000);
    assert!(w.both_up());
    let (a, b) = (w.a.snapshot(), w.b.snapshot());
    // tx = max(local desired min tx, remote required min rx)
    assert_eq!(a.tx_interval, MS * 400);
    assert_eq!(b.tx_interval, MS * 500);
    // detect = remote mult * max(local required min rx, remote desired min tx)
    assert_eq!(a.detection_time, MS * 2500);
    assert_eq!(b.detection_time, MS * 1200);
    // And the packets really go out at that pace (75-100 % of the interval).
    let late: Vec<_> = w
        .sent_by('a')
        .into_iter()
        .filter(|(t, p)| *t > w.start + MS * 6000 && !p.final_)
        .collect();
    for pair in late.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= MS * 300 && gap <= MS * 400, "gap {gap:?}");
    }
}

#[test]
fn jitter_is_75_to_100_percent_and_75_to_90_with_mult_1() {
    for (mult, hi) in [(3u8, 1.0f64), (1, 0.9)] {
        let mut w = Wire::new(cfg(1000, 1000, mult), cfg(1000, 1000, 3));
        w.link_up = false;
        w.run_for(Duration::from_secs(2000));
        let sent = w.sent_by('a');
        let gaps: Vec<f64> = sent
            .windows(2)
            .map(|p| (p[1].0 - p[0].0).as_secs_f64())
            .collect();
        assert!(gaps.len() > 1500);
        let min = gaps.iter().cloned().fold(f64::MAX, f64::min);
        let max = gaps.iter().cloned().fold(0.0, f64::max);
        assert!(min >= 0.75 && max <= hi, "mult {mult}: {min}..{max}");
        // Actually spread over the range, not a constant.
        assert!(min < 0.76 && max > hi - 0.01, "mult {mult}: {min}..{max}");
    }
}

/// Brings A and B Up at 300/300/3 and lets the initial polls finish.
fn up_pair(ca: SessionConfig, cb: SessionConfig) -> Wire {
    let mut w = Wire::new(ca, cb);
    w.run_for(MS * 10_000);
    assert!(w.both_up());
    assert!(!w.a.snapshot().poll_in_progress && !w.b.snapshot().poll_in_progress);
    w
}

#[test]
fn increased_tx_applies_only_after_final() {
    let mut w = up_pair(cfg(300, 300, 3), cfg(300, 300, 3));
    let before = w.changes.len();
    w.link_up = false; // drive the exchange by hand
    let now = w.now;
    assert!(w
        .a
        .handle(now, Input::SetConfig(cfg(600, 300, 3)))
        .is_empty());
    let s = w.a.snapshot();
    assert!(s.poll_in_progress);
    assert_eq!(s.advertised_min_tx, MS * 600);
    assert_eq!(s.tx_interval, MS * 300, "increase waits for the Final");
    // The next periodic packet carries P and the new value.
    let t = w.a.next_deadline();
    let out = w.a.handle(t, Input::Timer);
    let Some(Output::Transmit(p)) = out.first().copied() else {
        panic!("{out:?}")
    };
    assert!(p.poll && !p.final_);
    assert_eq!(p.desired_min_tx_us, 600_000);
    // B answers at once with F (and not P), whatever its own timers.
    let out = w.b.handle(t, Input::Received(p));
    let fin = out
        .iter()
        .find_map(|o| match o {
            Output::Transmit(f) if f.final_ => Some(*f),
            _ => None,
        })
        .unwrap();
    assert!(!fin.poll);
    // B's detection time already uses the polled (slower) rate.
    assert_eq!(w.b.snapshot().detection_time, MS * 1800);
    let out = w.a.handle(t, Input::Received(fin));
    assert!(out.is_empty(), "{out:?}");
    let s = w.a.snapshot();
    assert!(!s.poll_in_progress);
    assert_eq!(s.tx_interval, MS * 600);
    assert_eq!(s.counters.polls_completed, 2);
    // The session kept running, no state change.
    w.link_up = true;
    w.run_for(MS * 10_000);
    assert!(w.both_up());
    assert_eq!(w.changes.len(), before);
}

#[test]
fn decreased_tx_applies_at_once() {
    let mut w = up_pair(cfg(600, 300, 3), cfg(300, 300, 3));
    assert_eq!(w.a.snapshot().tx_interval, MS * 600);
    let now = w.now;
    w.a.handle(now, Input::SetConfig(cfg(300, 300, 3)));
    let s = w.a.snapshot();
    assert!(s.poll_in_progress);
    assert_eq!(s.tx_interval, MS * 300);
}

#[test]
fn decreased_rx_keeps_the_old_detection_time_until_final() {
    // B sends fast (50 ms); A asks for 500 ms, so A's detection time is 3 x 500.
    let mut w = up_pair(cfg(300, 500, 3), cfg(50, 300, 3));
    assert_eq!(w.a.snapshot().detection_time, MS * 1500);
    w.link_up = false;
    let now = w.now;
    w.a.handle(now, Input::SetConfig(cfg(300, 100, 3)));
    assert_eq!(w.a.snapshot().detection_time, MS * 1500);
    let t = w.a.next_deadline();
    let out = w.a.handle(t, Input::Timer);
    let Some(Output::Transmit(p)) = out.first().copied() else {
        panic!("{out:?}")
    };
    assert!(p.poll);
    assert_eq!(p.required_min_rx_us, 100_000);
    let fin =
        w.b.handle(t, Input::Received(p))
            .into_iter()
            .find_map(|o| match o {
                Output::Transmit(f) if f.final_ => Some(f),
                _ => None,
            })
            .unwrap();
    w.a.handle(t, Input::Received(fin));
    assert_eq!(w.a.snapshot().detection_time, MS * 300);
}

#[test]
fn increased_rx_applies_at_once() {
    let mut w = up_pair(cfg(300, 300, 3), cfg(300, 300, 3));
    let now = w.now;
    w.a.handle(now, Input::SetConfig(cfg(300, 1000, 3)));
    assert_eq!(w.a.snapshot().detection_time, MS * 3000);
}

#[test]
fn change_during_a_poll_is_polled_after_it() {
    let mut w = up_pair(cfg(300, 300, 3), cfg(300, 300, 3));
    w.link_up = false;
    let now = w.now;
    w.a.handle(now, Input::SetConfig(cfg(400, 300, 3)));
    w.a.handle(now, Input::SetConfig(cfg(500, 300, 3)));
    // The running poll keeps its values.
    assert_eq!(w.a.snapshot().advertised_min_tx, MS * 400);
    w.link_up = true;
    w.run_for(MS * 10_000);
    let s = w.a.snapshot();
    assert_eq!(s.advertised_min_tx, MS * 500);
    assert_eq!(s.tx_interval, MS * 500);
    assert!(!s.poll_in_progress);
    assert!(w.both_up());
}

#[test]
fn poll_is_answered_with_final_in_any_state() {
    let now = Instant::now();
    let mut s = Session::new(7, cfg(300, 300, 3), now, 9);
    let p = ControlPacket {
        poll: true,
        desired_min_tx_us: 1_000_000,
        required_min_rx_us: 1_000_000,
        ..ControlPacket::new(BfdState::Down, 42, 0)
    };
    let out = s.handle(now, Input::Received(p));
    let fin = out
        .iter()
        .find_map(|o| match o {
            Output::Transmit(f) => Some(*f),
            _ => None,
        })
        .unwrap();
    assert!(fin.final_ && !fin.poll);
    assert_eq!(fin.your_discr, 42);
    // It reflects the transition this packet caused (Down -> Init).
    assert_eq!(fin.state, BfdState::Init);
}

#[test]
fn detection_time_expiry_goes_down_with_diag_1() {
    let mut w = up_pair(cfg(300, 300, 3), cfg(300, 300, 3));
    let cut = w.now;
    w.link_up = false;
    w.run_for(MS * 2000);
    use BfdState::*;
    assert_eq!(w.a.state(), Down);
    assert_eq!(w.b.state(), Down);
    let down = w
        .changes
        .iter()
        .find(|c| c.1 == 'a' && c.3 == Down)
        .unwrap();
    assert_eq!(down.4, Diag::ControlDetectionTimeExpired);
    // Exactly one detection time after the last packet A received (virtual clock).
    let last_rx = w
        .sent_by('b')
        .into_iter()
        .filter(|(t, _)| *t <= cut)
        .map(|(t, _)| t)
        .max()
        .unwrap();
    assert_eq!(down.0 - last_rx, MS * 900);
    let s = w.a.snapshot();
    assert_eq!(s.remote_discr, 0, "RemoteDiscr is zeroed");
    assert_eq!(s.local_diag, Diag::ControlDetectionTimeExpired);
    let after = w.sent_by('a').last().unwrap().1;
    assert_eq!(
        (after.state, after.your_discr, after.diag),
        (Down, 0, Diag::ControlDetectionTimeExpired)
    );
    assert_eq!(after.desired_min_tx_us, 1_000_000, "back to the slow rate");
    // Link back: the session comes Up again, diag cleared.
    w.link_up = true;
    w.run_for(MS * 10_000);
    assert!(w.both_up());
    assert_eq!(w.a.snapshot().local_diag, Diag::None);
}

#[test]
fn peer_down_or_admin_down_takes_us_down_with_diag_3() {
    for remote in [BfdState::Down, BfdState::AdminDown] {
        let mut w = up_pair(cfg(300, 300, 3), cfg(300, 300, 3));
        let p = w.b.snapshot();
        let pkt = ControlPacket {
            diag: Diag::PathDown,
            ..ControlPacket::new(remote, p.local_discr, 0xaaaa)
        };
        let now = w.now;
        let out = w.a.handle(now, Input::Received(pkt));
        assert_eq!(
            out,
            vec![Output::StateChanged {
                from: BfdState::Up,
                to: BfdState::Down,
                diag: Diag::NeighborSignaledSessionDown,
                remote_state: remote,
            }]
        );
    }
}

#[test]
fn admin_down_is_signalled_and_ignores_packets() {
    let mut w = up_pair(cfg(300, 300, 3), cfg(300, 300, 3));
    w.input('a', Input::AdminDown);
    assert_eq!(w.a.state(), BfdState::AdminDown);
    w.run_for(MS * 500);
    // B heard AdminDown at once (sent immediately) and went Down with diag 3.
    assert_eq!(w.b.state(), BfdState::Down);
    assert!(w.changes_of('b').contains(&(
        BfdState::Up,
        BfdState::Down,
        Diag::NeighborSignaledSessionDown
    )));
    w.run_for(MS * 5000);
    assert_eq!(
        w.a.state(),
        BfdState::AdminDown,
        "packets from B change nothing"
    );
    assert_eq!(w.b.state(), BfdState::Down);
    w.input('a', Input::AdminUp);
    w.run_for(MS * 10_000);
    assert!(w.both_up());
}

#[test]
fn no_periodic_packets_when_peer_wants_none() {
    let now = Instant::now();
    let mut s = Session::new(7, cfg(300, 300, 3), now, 9);
    let mut p = ControlPacket::decode(&s.packet(false).encode()).unwrap();
    p.my_discr = 9;
    p.your_discr = 7;
    p.required_min_rx_us = 0;
    s.handle(now, Input::Received(p));
    let mut t = now;
    for _ in 0..3 {
        t = s.next_deadline().max(t);
        let out = s.handle(t, Input::Timer);
        assert!(
            !out.iter().any(|o| matches!(o, Output::Transmit(_))),
            "{out:?}"
        );
        if s.next_deadline() > t + Duration::from_secs(5) {
            break;
        }
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn any_packet() -> impl Strategy<Value = ControlPacket> {
        (
            proptest::collection::vec(any::<u8>(), 24),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_filter_map("decodable", |(mut b, p, f)| {
                b[0] = (1 << 5) | (b[0] & 0x1f);
                b[1] &= !0x05; // no A, no M
                if p && f {
                    b[1] &= !0x10;
                }
                b[3] = 24;
                ControlPacket::decode(&b).ok()
            })
    }

    proptest! {
        /// Any sequence of decodable packets, timer ticks and config changes, at any
        /// pace, neither panics nor breaks the invariants the driver relies on.
        #[test]
        fn arbitrary_inputs_never_panic(
            steps in proptest::collection::vec(
                (any_packet(), 0u8..4, 0u64..5_000_000, 10u64..100_000, 10u64..100_000, 1u8..=255),
                1..60,
            )
        ) {
            let start = Instant::now();
            let mut s = Session::new(1, cfg(300, 300, 3), start, 5);
            let mut now = start;
            for (pkt, what, advance_us, tx, rx, mult) in steps {
                now += Duration::from_micros(advance_us);
                let input = match what {
                    0 => Input::Received(pkt),
                    1 => Input::Timer,
                    2 => Input::SetConfig(cfg(tx, rx, mult)),
                    _ => if pkt.poll { Input::AdminDown } else { Input::AdminUp },
                };
                for o in s.handle(now, input) {
                    if let Output::Transmit(p) = o {
                        prop_assert!(!(p.poll && p.final_));
                        prop_assert_eq!(p.my_discr, 1);
                        prop_assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
                    }
                }
                let snap = s.snapshot();
                if snap.state != BfdState::Up {
                    prop_assert!(snap.advertised_min_tx >= SLOW_TX);
                }
                if what == 1 {
                    // A tick consumes every due deadline: the driver never spins.
                    prop_assert!(s.next_deadline() > now);
                }
            }
        }
    }
}
