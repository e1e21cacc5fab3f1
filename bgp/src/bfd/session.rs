//! Sans-IO BFD session state machine (RFC 5880 6.2, 6.5, 6.8.1-6.8.7, 6.8.16): three-way
//! handshake, timer negotiation, the Poll/Final sequence, detection time and jittered
//! transmission. Time is an explicit `now` argument; no sockets, no tokio.

use std::time::{Duration, Instant};

use super::packet::{BfdState, ControlPacket, Diag};

/// DesiredMinTxInterval floor while the session is not Up (RFC 5880 6.8.3).
pub const SLOW_TX: Duration = Duration::from_secs(1);
/// Initial bfd.RemoteMinRxInterval (RFC 5880 6.8.1: one microsecond).
const INITIAL_REMOTE_MIN_RX: Duration = Duration::from_micros(1);

/// Local timer parameters of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// bfd.DesiredMinTxInterval as configured (used once Up).
    pub min_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    pub min_rx: Duration,
    /// bfd.DetectMult.
    pub detect_mult: u8,
}

/// Something that happened to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A Control packet that passed the codec checks and was demultiplexed to this session.
    Received(ControlPacket),
    /// A deadline from [`Session::next_deadline`] may have passed.
    Timer,
    /// New local timers (a Poll Sequence if the session is Up).
    SetConfig(SessionConfig),
    /// Administratively disable the session (state AdminDown, diag 7).
    AdminDown,
    /// Re-enable an AdminDown session (state Down).
    AdminUp,
}

/// What the session asks its driver to do or to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Send this packet to the peer now.
    Transmit(ControlPacket),
    /// bfd.SessionState changed.
    StateChanged {
        from: BfdState,
        to: BfdState,
        diag: Diag,
        remote_state: BfdState,
    },
}

/// Per-session protocol counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    pub tx_packets: u64,
    pub rx_packets: u64,
    pub polls_started: u64,
    pub polls_completed: u64,
    pub finals_sent: u64,
    pub up_transitions: u64,
    pub down_transitions: u64,
}

/// A read-only view of the session's variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSnapshot {
    pub state: BfdState,
    pub remote_state: BfdState,
    pub local_discr: u32,
    pub remote_discr: u32,
    pub local_diag: Diag,
    pub remote_diag: Diag,
    /// DesiredMinTxInterval / RequiredMinRxInterval we put on the wire.
    pub advertised_min_tx: Duration,
    pub advertised_min_rx: Duration,
    pub detect_mult: u8,
    pub remote_min_tx: Duration,
    pub remote_min_rx: Duration,
    pub remote_detect_mult: u8,
    /// Negotiated transmission interval (before jitter).
    pub tx_interval: Duration,
    /// Detection time; zero before the first packet from the peer.
    pub detection_time: Duration,
    pub poll_in_progress: bool,
    pub counters: SessionCounters,
}

/// xorshift64: the jitter source, seeded by the driver (deterministic in tests).
#[derive(Debug, Clone)]
struct Jitter(u64);

impl Jitter {
    fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One BFD session (RFC 5880 6.8.1 state variables, asynchronous mode, no authentication).
#[derive(Debug, Clone)]
pub struct Session {
    cfg: SessionConfig,
    local_discr: u32,
    state: BfdState,
    remote_state: BfdState,
    remote_discr: u32,
    local_diag: Diag,
    remote_diag: Diag,
    remote_min_rx: Duration,
    remote_min_tx: Duration,
    remote_detect_mult: u8,
    remote_demand: bool,
    /// Values on the wire (frozen during a Poll Sequence).
    adv_tx: Duration,
    adv_rx: Duration,
    /// Values used locally for the transmit interval and the detection time (6.8.3).
    eff_tx: Duration,
    eff_rx: Duration,
    poll: bool,
    next_tx: Instant,
    detect_deadline: Option<Instant>,
    jitter: Jitter,
    counters: SessionCounters,
}

fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Session {
    /// A new session in state Down; its first packet is due at `now`. `local_discr` must be
    /// nonzero and unique among the driver's sessions; `seed` feeds the jitter.
    pub fn new(local_discr: u32, cfg: SessionConfig, now: Instant, seed: u64) -> Session {
        let slow = cfg.min_tx.max(SLOW_TX);
        Session {
            cfg,
            local_discr,
            state: BfdState::Down,
            remote_state: BfdState::Down,
            remote_discr: 0,
            local_diag: Diag::None,
            remote_diag: Diag::None,
            remote_min_rx: INITIAL_REMOTE_MIN_RX,
            remote_min_tx: Duration::ZERO,
            remote_detect_mult: 0,
            remote_demand: false,
            adv_tx: slow,
            adv_rx: cfg.min_rx,
            eff_tx: slow,
            eff_rx: cfg.min_rx,
            poll: false,
            next_tx: now,
            detect_deadline: None,
            jitter: Jitter(seed | 1),
            counters: SessionCounters::default(),
        }
    }

    pub fn state(&self) -> BfdState {
        self.state
    }

    pub fn local_discr(&self) -> u32 {
        self.local_discr
    }

    pub fn config(&self) -> SessionConfig {
        self.cfg
    }

    /// Negotiated transmission interval (6.8.2, 6.8.7), before jitter.
    pub fn tx_interval(&self) -> Duration {
        self.eff_tx.max(self.remote_min_rx)
    }

    /// Detection time in asynchronous mode (6.8.4): the remote Detect Mult times the larger of
    /// our RequiredMinRxInterval and the remote DesiredMinTxInterval.
    pub fn detection_time(&self) -> Duration {
        self.eff_rx.max(self.remote_min_tx) * u32::from(self.remote_detect_mult)
    }

    /// The earliest instant at which [`Input::Timer`] has something to do.
    pub fn next_deadline(&self) -> Instant {
        match self.detect_deadline {
            Some(d) if d < self.next_tx => d,
            _ => self.next_tx,
        }
    }

    pub fn snapshot(&self) -> SessionSnapshot {
        SessionSnapshot {
            state: self.state,
            remote_state: self.remote_state,
            local_discr: self.local_discr,
            remote_discr: self.remote_discr,
            local_diag: self.local_diag,
            remote_diag: self.remote_diag,
            advertised_min_tx: self.adv_tx,
            advertised_min_rx: self.adv_rx,
            detect_mult: self.cfg.detect_mult,
            remote_min_tx: self.remote_min_tx,
            remote_min_rx: self.remote_min_rx,
            remote_detect_mult: self.remote_detect_mult,
            tx_interval: self.tx_interval(),
            detection_time: self.detection_time(),
            poll_in_progress: self.poll,
            counters: self.counters,
        }
    }

    pub fn handle(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Received(pkt) => self.receive(now, pkt, &mut out),
            Input::Timer => self.timers(now, &mut out),
            Input::SetConfig(cfg) => {
                self.cfg = cfg;
                self.retarget(now);
            }
            Input::AdminDown => {
                if self.state != BfdState::AdminDown {
                    self.detect_deadline = None;
                    self.set_state(
                        now,
                        BfdState::AdminDown,
                        Diag::AdministrativelyDown,
                        &mut out,
                    );
                    // Tell the peer at once rather than after a slow interval.
                    self.next_tx = now;
                }
            }
            Input::AdminUp => {
                if self.state == BfdState::AdminDown {
                    self.set_state(now, BfdState::Down, Diag::None, &mut out);
                }
            }
        }
        out
    }

    /// The packet we would send now (6.8.7).
    fn packet(&self, final_: bool) -> ControlPacket {
        ControlPacket {
            diag: self.local_diag,
            state: self.state,
            poll: self.poll && !final_,
            final_,
            cpi: false,
            auth: false,
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_discr: self.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx_us: us(self.adv_tx),
            required_min_rx_us: us(self.adv_rx),
            required_min_echo_rx_us: 0,
        }
    }

    /// The negotiated interval reduced by 0-25 % (0-10 % more when Detect Mult is 1), 6.8.7.
    fn jittered(&mut self, interval: Duration) -> Duration {
        let span = if self.cfg.detect_mult == 1 {
            0.15
        } else {
            0.25
        };
        interval.mul_f64(0.75 + span * self.jitter.next_unit())
    }

    /// Pulls the next periodic packet in if the interval just became shorter.
    fn reschedule_tx(&mut self, now: Instant) {
        let interval = self.tx_interval();
        let candidate = now + self.jittered(interval);
        if candidate < self.next_tx {
            self.next_tx = candidate;
        }
    }

    fn may_transmit_periodic(&self) -> bool {
        // 6.8.7: not if the peer asked for no packets (RequiredMinRx 0) or runs Demand mode
        // with both sides Up.
        self.remote_min_rx > Duration::ZERO
            && !(self.remote_demand
                && self.state == BfdState::Up
                && self.remote_state == BfdState::Up)
    }

    fn timers(&mut self, now: Instant, out: &mut Vec<Output>) {
        if let Some(deadline) = self.detect_deadline {
            if deadline <= now {
                self.detect_deadline = None;
                // 6.8.1: RemoteDiscr is zeroed when a Detection Time passes without packets.
                self.remote_discr = 0;
                self.remote_state = BfdState::Down;
                self.remote_min_rx = INITIAL_REMOTE_MIN_RX;
                if matches!(self.state, BfdState::Init | BfdState::Up) {
                    self.set_state(now, BfdState::Down, Diag::ControlDetectionTimeExpired, out);
                }
            }
        }
        if self.next_tx <= now {
            if self.may_transmit_periodic() {
                self.counters.tx_packets += 1;
                out.push(Output::Transmit(self.packet(false)));
            }
            let interval = self.tx_interval();
            self.next_tx = now + self.jittered(interval);
        }
    }

    /// RFC 5880 6.8.6 from "Set bfd.RemoteDiscr" on (the codec and the driver did the checks).
    fn receive(&mut self, now: Instant, pkt: ControlPacket, out: &mut Vec<Output>) {
        self.counters.rx_packets += 1;
        self.remote_discr = pkt.my_discr;
        self.remote_state = pkt.state;
        self.remote_diag = pkt.diag;
        self.remote_demand = pkt.demand;
        self.remote_min_rx = Duration::from_micros(pkt.required_min_rx_us.into());
        self.remote_min_tx = Duration::from_micros(pkt.desired_min_tx_us.into());
        self.remote_detect_mult = pkt.detect_mult;
        if pkt.final_ && self.poll {
            // 6.5: the Poll Sequence is over; the polled values now apply locally (6.8.3).
            self.poll = false;
            self.eff_tx = self.adv_tx;
            self.eff_rx = self.adv_rx;
            self.counters.polls_completed += 1;
            self.retarget(now);
        }
        self.reschedule_tx(now);
        if self.state == BfdState::AdminDown {
            return;
        }
        self.detect_deadline = Some(now + self.detection_time());
        match (self.state, pkt.state) {
            (BfdState::Init | BfdState::Up, BfdState::AdminDown) => {
                self.set_state(now, BfdState::Down, Diag::NeighborSignaledSessionDown, out);
            }
            (BfdState::Down, BfdState::Down) => {
                self.set_state(now, BfdState::Init, Diag::None, out);
            }
            (BfdState::Down, BfdState::Init)
            | (BfdState::Init, BfdState::Init)
            | (BfdState::Init, BfdState::Up) => {
                self.set_state(now, BfdState::Up, Diag::None, out);
            }
            (BfdState::Up, BfdState::Down) => {
                self.set_state(now, BfdState::Down, Diag::NeighborSignaledSessionDown, out);
            }
            _ => {}
        }
        if pkt.poll {
            self.counters.finals_sent += 1;
            out.push(Output::Transmit(self.packet(true)));
        }
    }

    fn set_state(&mut self, now: Instant, to: BfdState, diag: Diag, out: &mut Vec<Output>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.local_diag = diag;
        match to {
            BfdState::Up => self.counters.up_transitions += 1,
            BfdState::Down | BfdState::AdminDown if from == BfdState::Up => {
                self.counters.down_transitions += 1
            }
            _ => {}
        }
        if to != BfdState::Up {
            // A Poll Sequence only makes sense while Up; values apply at once otherwise.
            self.poll = false;
        }
        self.retarget(now);
        out.push(Output::StateChanged {
            from,
            to,
            diag,
            remote_state: self.remote_state,
        });
    }

    /// Moves the advertised/effective timers towards the configured ones (RFC 5880 6.8.3):
    /// at once while not Up (with the 1 s transmit floor), through a Poll Sequence while Up.
    /// While Up, a lower DesiredMinTx and a higher RequiredMinRx apply locally at once; the
    /// others only when the Final arrives. One Poll Sequence at a time: a change made during
    /// one is polled after it ends.
    fn retarget(&mut self, now: Instant) {
        let target_tx = if self.state == BfdState::Up {
            self.cfg.min_tx
        } else {
            self.cfg.min_tx.max(SLOW_TX)
        };
        let target_rx = self.cfg.min_rx;
        if self.state != BfdState::Up {
            self.adv_tx = target_tx;
            self.adv_rx = target_rx;
            self.eff_tx = target_tx;
            self.eff_rx = target_rx;
            self.reschedule_tx(now);
            return;
        }
        if self.poll || (target_tx == self.adv_tx && target_rx == self.adv_rx) {
            return;
        }
        self.adv_tx = target_tx;
        self.adv_rx = target_rx;
        self.eff_tx = self.eff_tx.min(target_tx);
        self.eff_rx = self.eff_rx.max(target_rx);
        self.poll = true;
        self.counters.polls_started += 1;
        self.reschedule_tx(now);
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
