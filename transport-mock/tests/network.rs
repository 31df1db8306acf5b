//! The mock network keeps Tox's semantics: requests, links, order, loss, backpressure.

use std::time::{Duration, Instant};

use bytes::Bytes;
use toxtun_proto::{FriendAdded, FriendError, SendError, StatusCode, Transport, TransportEvent};
use toxtun_transport_mock::{FlapPlan, LinkConfig, Network, NodeId, RealtimeNetwork};

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn events(net: &mut Network, n: NodeId) -> Vec<TransportEvent> {
    std::iter::from_fn(|| net.poll_event(n)).collect()
}

fn pkt(n: u8, len: usize) -> Bytes {
    let mut v = vec![n; len];
    v[0] = 0xAB;
    Bytes::from(v)
}

/// Two nodes that are friends, link up, queues drained.
fn friends(seed: u64, cfg: LinkConfig) -> (Network, NodeId, NodeId) {
    let mut net = Network::new(seed, t0());
    net.set_default_link(cfg);
    let a = net.add_node();
    let b = net.add_node();
    let bid = net.tox_id(b);
    net.add_friend(a, &bid, b"hello").unwrap();
    let apk = net.peer_id(a);
    net.accept_friend(b, apk).unwrap();
    let t = net.now() + cfg.connect_delay;
    net.advance_to(t);
    events(&mut net, a);
    events(&mut net, b);
    assert!(net.is_online(a, b));
    (net, a, b)
}

#[test]
fn friend_request_and_acceptance_bring_the_link_up() {
    let mut net = Network::new(1, t0());
    let a = net.add_node();
    let b = net.add_node();
    assert_eq!(
        events(&mut net, a),
        vec![TransportEvent::SelfConnection { connected: true }]
    );
    events(&mut net, b);
    let (apk, bpk) = (net.peer_id(a), net.peer_id(b));
    let bid = net.tox_id(b);
    let added = net.add_friend(a, &bid, b"toxtun/1 proof").unwrap();
    assert_eq!(added.status_code(), StatusCode::FriendRequestSent);
    assert_eq!(
        net.add_friend(a, &bid, b"again").unwrap_err().status_code(),
        StatusCode::AlreadyFriend
    );
    assert_eq!(
        net.add_friend(a, &net.tox_id(a), b"me"),
        Err(FriendError::OwnKey)
    );
    assert_eq!(
        net.add_friend(a, &net.tox_id(b), b""),
        Err(FriendError::Message { max: 1016 })
    );
    let now = net.now();
    net.advance_to(now + Duration::from_millis(5));
    assert_eq!(
        events(&mut net, b),
        vec![TransportEvent::FriendRequest {
            peer: apk,
            message: Bytes::from_static(b"toxtun/1 proof")
        }]
    );
    assert_eq!(net.accept_friend(b, apk), Ok(FriendAdded::Added));
    assert!(!net.is_online(a, b), "the link takes its connect delay");
    let now = net.now();
    net.advance_to(now + Duration::from_millis(100));
    assert_eq!(events(&mut net, a), vec![TransportEvent::FriendOnline(bpk)]);
    assert_eq!(events(&mut net, b), vec![TransportEvent::FriendOnline(apk)]);
}

#[test]
fn a_request_with_the_wrong_nospam_never_arrives() {
    let mut net = Network::new(2, t0());
    let a = net.add_node();
    let b = net.add_node();
    events(&mut net, b);
    let mut bid = net.tox_id(b);
    bid.nospam[0] ^= 1;
    net.add_friend(a, &bid, b"hi").unwrap();
    let now = net.now();
    net.advance_to(now + Duration::from_secs(10));
    assert!(events(&mut net, b).is_empty());
}

#[test]
fn delivery_is_ordered_and_paced_by_latency_jitter_and_bandwidth() {
    let cfg = LinkConfig {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(15),
        bandwidth: Some(1_000_000),
        queue_capacity: 1000,
        ..Default::default()
    };
    let (mut net, a, b) = friends(3, cfg);
    let start = net.now();
    let bpk = net.peer_id(b);
    for i in 0..100u8 {
        net.send(a, bpk, pkt(i, 1000)).unwrap();
    }
    // 100 kB at 1 MB/s: the last packet leaves after 100 ms, arrives 20–35 ms later.
    net.advance_to(start + Duration::from_millis(119));
    let early = events(&mut net, b).len();
    assert!(
        early < 100,
        "bandwidth paces the packets ({early} arrived early)"
    );
    net.advance_to(start + Duration::from_millis(136));
    let got: Vec<u8> = events(&mut net, b)
        .into_iter()
        .map(|e| match e {
            TransportEvent::Packet { packet, .. } => packet[1],
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(got.len() + early, 100);
    let expected: Vec<u8> = (early as u8..100).collect();
    assert_eq!(got, expected, "in order despite jitter");
}

#[test]
fn a_full_queue_is_backpressure_then_ready() {
    let cfg = LinkConfig {
        queue_capacity: 3,
        ..Default::default()
    };
    let (mut net, a, b) = friends(4, cfg);
    let bpk = net.peer_id(b);
    for i in 0..3 {
        net.send(a, bpk, pkt(i, 10)).unwrap();
    }
    match net.send(a, bpk, pkt(9, 10)) {
        Err(SendError::QueueFull(p)) => assert_eq!(p, pkt(9, 10), "the packet comes back"),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    let now = net.now();
    net.advance_to(now + Duration::from_millis(5));
    assert_eq!(events(&mut net, a), vec![TransportEvent::SendReady(bpk)]);
    assert_eq!(events(&mut net, b).len(), 3);
    assert_eq!(net.stats().queue_full, 1);
}

#[test]
fn send_errors_map_to_the_seed_codes() {
    let (mut net, a, b) = friends(5, LinkConfig::default());
    let c = net.add_node();
    let cpk = net.peer_id(c);
    let bpk = net.peer_id(b);
    assert_eq!(
        net.send(a, cpk, pkt(1, 5)).unwrap_err().status_code(),
        Some(StatusCode::NotFriend)
    );
    net.add_friend(a, &net.tox_id(c), b"x").unwrap();
    assert_eq!(
        net.send(a, cpk, pkt(1, 5)).unwrap_err().status_code(),
        Some(StatusCode::TargetOffline)
    );
    assert_eq!(
        net.send(a, bpk, Bytes::from_static(&[0x10, 1]))
            .unwrap_err()
            .status_code(),
        Some(StatusCode::SendFailed)
    );
    assert!(net.send(a, bpk, pkt(1, 1374)).is_err());
    assert!(net.send(a, bpk, pkt(1, 1373)).is_ok());
}

#[test]
fn link_loss_drops_packets_in_flight_and_recovers() {
    let (mut net, a, b) = friends(6, LinkConfig::default());
    let (apk, bpk) = (net.peer_id(a), net.peer_id(b));
    net.send(a, bpk, pkt(1, 100)).unwrap();
    net.link_down(a, b);
    assert_eq!(
        events(&mut net, a),
        vec![TransportEvent::FriendOffline(bpk)]
    );
    assert_eq!(
        events(&mut net, b),
        vec![TransportEvent::FriendOffline(apk)]
    );
    assert_eq!(net.stats().packets_lost, 1);
    assert_eq!(net.send(a, bpk, pkt(1, 100)), Err(SendError::Offline));
    net.link_up(a, b);
    let now = net.now();
    net.advance_to(now + Duration::from_secs(1));
    assert_eq!(events(&mut net, a), vec![TransportEvent::FriendOnline(bpk)]);
    assert!(events(&mut net, b).contains(&TransportEvent::FriendOnline(apk)));
}

#[test]
fn partitions_and_restarts() {
    let (mut net, a, b) = friends(7, LinkConfig::default());
    net.partition(&[a]);
    assert!(!net.is_online(a, b));
    net.heal();
    let now = net.now();
    net.advance_to(now + Duration::from_secs(1));
    assert!(net.is_online(a, b));
    let (ida, friends_of_a) = (net.tox_id(a), net.peer_id(b));
    net.send(a, friends_of_a, pkt(1, 10)).unwrap();
    net.restart(a);
    assert_eq!(net.tox_id(a), ida, "keys survive a restart");
    assert_eq!(
        events(&mut net, a),
        vec![TransportEvent::SelfConnection { connected: true }],
        "queued events and in-flight packets are gone"
    );
    let now = net.now();
    net.advance_to(now + Duration::from_secs(1));
    assert!(net.is_online(a, b), "friends survive a restart (savedata)");
}

#[test]
fn random_flaps_follow_their_plan() {
    let (mut net, a, b) = friends(8, LinkConfig::default());
    net.set_flaps(
        a,
        b,
        Some(FlapPlan {
            mean_up: Duration::from_secs(2),
            min_down: Duration::from_millis(50),
            max_down: Duration::from_millis(500),
        }),
    );
    let now = net.now();
    net.advance_to(now + Duration::from_secs(600));
    let downs = net.stats().link_downs;
    // About 600 s / (2 s up + 0.1 s to reconnect + ~0.3 s down) ≈ 250 flaps.
    assert!((150..400).contains(&downs), "{downs} flaps");
    net.set_flaps(a, b, None);
    let now = net.now();
    net.advance_to(now + Duration::from_secs(1));
    assert!(net.is_online(a, b));
}

#[test]
fn the_same_seed_gives_the_same_network() {
    let run = |seed| {
        let cfg = LinkConfig {
            jitter: Duration::from_millis(7),
            ..Default::default()
        };
        let (mut net, a, b) = friends(seed, cfg);
        let start = net.now();
        (net.tox_id(a), net.tox_id(b), {
            let bpk = net.peer_id(b);
            for i in 0..50 {
                net.send(a, bpk, pkt(i, 10)).unwrap();
            }
            let mut times = vec![];
            while let Some(t) = net.next_deadline() {
                net.advance_to(t);
                times.push(t - start);
            }
            (times, net.stats())
        })
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9).0, run(10).0);
}

#[test]
fn realtime_transports_exchange_packets() {
    let net = RealtimeNetwork::start(Network::new(11, t0()));
    let (a, b) = net.with(|n| (n.add_node(), n.add_node()));
    let mut ta = net.transport(a);
    let mut tb = net.transport(b);
    let next = |t: &mut toxtun_transport_mock::MockTransport| {
        futures_lite::future::block_on(std::future::poll_fn(|cx| t.poll_event(cx)))
    };
    assert_eq!(
        next(&mut ta),
        Some(TransportEvent::SelfConnection { connected: true })
    );
    assert_eq!(
        next(&mut tb),
        Some(TransportEvent::SelfConnection { connected: true })
    );
    let bid = tb.id();
    ta.add_friend(&bid, b"toxtun/1 hi").unwrap();
    let Some(TransportEvent::FriendRequest { peer, .. }) = next(&mut tb) else {
        panic!("no request")
    };
    tb.accept_friend(peer).unwrap();
    assert_eq!(
        next(&mut ta),
        Some(TransportEvent::FriendOnline(bid.public_key))
    );
    ta.send(bid.public_key, pkt(7, 100)).unwrap();
    assert!(matches!(
        next(&mut tb),
        Some(TransportEvent::FriendOnline(_))
    ));
    assert!(
        matches!(next(&mut tb), Some(TransportEvent::Packet { packet, .. }) if packet == pkt(7, 100))
    );
    drop(net);
    assert_eq!(next(&mut ta), None, "a stopped network ends its transports");
}
