//! Driver tests over loopback (no root, no namespaces): two instances on distinct ports talk
//! to each other from 127.0.0.1 and 127.0.0.2; a plain UDP socket plays the attacker.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use super::*;

fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn wait_for<F: Fn(&BfdStatus) -> bool>(bfd: &Bfd, what: &str, f: F) -> BfdStatus {
    let start = tokio::time::Instant::now();
    loop {
        let st = bfd.status().await.unwrap();
        if f(&st) {
            return st;
        }
        if start.elapsed() > Duration::from_secs(15) {
            panic!("timed out waiting for {what}: {st:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn up(st: &BfdStatus, peer: IpAddr) -> bool {
    st.session(peer)
        .is_some_and(|s| s.session.state == BfdState::Up)
}

#[tokio::test]
async fn two_instances_come_up_poll_and_detect_loss() {
    let (pa, pb) = (free_port(), free_port());
    let (a, mut ev_a) = Bfd::start_with(BfdOptions {
        listen_port: pa,
        peer_port: pb,
    })
    .unwrap();
    let (b, mut ev_b) = Bfd::start_with(BfdOptions {
        listen_port: pb,
        peer_port: pa,
    })
    .unwrap();
    let (ia, ib) = (ip("127.0.0.1"), ip("127.0.0.2"));
    let mut ca = BfdPeerConfig::new(ib, ia);
    ca.min_rx = Duration::from_millis(50);
    ca.min_tx = Duration::from_millis(50);
    let mut cb = BfdPeerConfig::new(ia, ib);
    cb.min_rx = Duration::from_millis(80);
    cb.min_tx = Duration::from_millis(40);
    a.set_peers(vec![ca]).unwrap();
    b.set_peers(vec![cb]).unwrap();
    let st = wait_for(&a, "A up and polled", |st| {
        up(st, ib)
            && st.session(ib).is_some_and(|s| {
                !s.session.poll_in_progress && s.session.remote_min_tx == Duration::from_millis(40)
            })
    })
    .await;
    let s = st.session(ib).unwrap();
    assert_eq!(s.session.tx_interval, Duration::from_millis(80));
    assert_eq!(s.session.detection_time, Duration::from_millis(150));
    assert!(s.source_port.is_some_and(|p| p >= 49152));
    let e = ev_a.recv().await.unwrap();
    assert_eq!((e.peer, e.state), (ib, BfdState::Up));
    let e = ev_b.recv().await.unwrap();
    assert_eq!((e.peer, e.state), (ia, BfdState::Up));

    // Timers changed at runtime: a Poll Sequence, no flap.
    ca.min_tx = Duration::from_millis(200);
    a.set_peers(vec![ca]).unwrap();
    let st = wait_for(&b, "B sees A's new interval", |st| {
        st.session(ia)
            .is_some_and(|s| s.session.remote_min_tx == Duration::from_millis(200))
    })
    .await;
    assert_eq!(
        st.session(ia).unwrap().session.detection_time,
        Duration::from_millis(600)
    );
    let st = wait_for(&a, "A's poll done", |st| {
        st.session(ib).is_some_and(|s| !s.session.poll_in_progress)
    })
    .await;
    assert_eq!(
        st.session(ib).unwrap().session.tx_interval,
        Duration::from_millis(200)
    );
    assert!(up(&st, ib));
    assert!(
        ev_a.try_recv().is_err() && ev_b.try_recv().is_err(),
        "no flap"
    );

    // Attacker packets: counted, the session stays Up.
    let atk = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    atk.bind(&SocketAddr::from(([127, 0, 0, 3], 0)).into())
        .unwrap();
    let to: SocketAddr = SocketAddr::from(([127, 0, 0, 1], pa));
    let good = st.session(ib).unwrap();
    let mut pkt = packet::ControlPacket {
        desired_min_tx_us: 1_000_000,
        required_min_rx_us: 1_000_000,
        ..packet::ControlPacket::new(BfdState::Down, 1234, 0)
    };
    atk.set_ttl_v4(255).unwrap();
    atk.send_to(&pkt.encode(), &to.into()).unwrap();
    pkt.your_discr = good.session.local_discr;
    pkt.state = BfdState::Down;
    atk.send_to(&pkt.encode(), &to.into()).unwrap();
    atk.set_ttl_v4(64).unwrap();
    atk.send_to(&pkt.encode(), &to.into()).unwrap();
    let st = wait_for(&a, "3 discards", |st| st.discards.total() >= 3).await;
    assert_eq!(st.discards.get(DiscardKind::UnknownSource), 1);
    assert_eq!(st.discards.get(DiscardKind::SourceMismatch), 1);
    assert_eq!(st.discards.get(DiscardKind::BadTtl), 1);
    assert!(up(&st, ib));

    // B forgets A: A hears AdminDown and goes Down with diag 3 at once.
    b.set_peers(vec![]).unwrap();
    let e = ev_a.recv().await.unwrap();
    assert_eq!(
        (e.state, e.diag, e.remote_state),
        (
            BfdState::Down,
            Diag::NeighborSignaledSessionDown,
            BfdState::AdminDown
        )
    );
    assert!(b.status().await.unwrap().sessions.is_empty());
    // And once B's lingering session is gone, A's stays Down (detection, no flap back).
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = a.status().await.unwrap();
    assert_eq!(st.session(ib).unwrap().session.state, BfdState::Down);
}

#[test]
fn config_is_validated() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _g = rt.enter();
    let (bfd, _ev) = Bfd::start_with(BfdOptions {
        listen_port: free_port(),
        peer_port: 1,
    })
    .unwrap();
    let ok = BfdPeerConfig::new(ip("192.0.2.1"), ip("192.0.2.2"));
    let mut bad = ok;
    bad.multiplier = 0;
    assert!(matches!(
        bfd.set_peers(vec![bad]),
        Err(BfdError::InvalidPeer {
            problem: ConfigProblem::ZeroMultiplier,
            ..
        })
    ));
    let mut bad = ok;
    bad.local = ip("2001:db8::1");
    assert!(bfd.set_peers(vec![bad]).is_err());
    let mut bad = ok;
    bad.min_tx = Duration::from_millis(1);
    assert!(bfd.set_peers(vec![bad]).is_err());
    assert!(matches!(
        bfd.set_peers(vec![ok, ok]),
        Err(BfdError::DuplicatePeer(_))
    ));
    assert!(bfd.set_peers(vec![ok]).is_ok());
}

#[test]
fn start_outside_a_runtime_is_an_error() {
    assert!(matches!(Bfd::start(), Err(BfdError::NoRuntime)));
}
