//! UDP forwarding (`forward -U`) between two endpoints over the in-memory pair: flows open
//! only where the server's `udp:` rules allow, datagrams arrive whole and at most once on
//! either lane, a flood is dropped and counted without starving the session's streams,
//! and flows end when idle, with their session, or when a reload narrows the rules.

use std::time::Duration;

use bytes::Bytes;
use toxtun_proto::pair::Pair;
use toxtun_proto::wire::{Fragment, Frame};
use toxtun_proto::{
    ClientRule, DatagramError, EndpointConfig, Event, Limits, PeerId, ServerPolicy, SessionCode,
    StreamCode, Target, TargetRules, MAX_DATAGRAM,
};

const CLIENT: PeerId = PeerId([0xC1; 32]);
const SERVER: PeerId = PeerId([0x5E; 32]);
const STEPS: usize = 2_000_000;

fn target(s: &str) -> Target {
    s.parse().unwrap()
}

fn patterns(p: &[&str]) -> Vec<toxtun_proto::TargetPattern> {
    p.iter().map(|p| p.parse().unwrap()).collect()
}

fn policy(tcp: &[&str], udp: &[&str]) -> ServerPolicy {
    ServerPolicy {
        clients: vec![ClientRule {
            peer: CLIENT,
            targets: TargetRules::new(patterns(tcp)).with_udp(patterns(udp)),
        }],
        ..Default::default()
    }
}

/// A server allowing `udp` flows (and TCP to 127.0.0.1:22) that echoes every datagram;
/// the client connected.
fn connected_with(server: EndpointConfig, seed: u64) -> Pair {
    let mut p = Pair::new(EndpointConfig::new(CLIENT), server, seed);
    p.b.app.echo_datagrams = true;
    p.establish(STEPS).unwrap();
    p
}

fn connected(udp: &[&str], seed: u64) -> Pair {
    let mut s = EndpointConfig::new(SERVER);
    s.server = Some(policy(&["127.0.0.1:22"], udp));
    connected_with(s, seed)
}

fn open(p: &mut Pair, to: &str) -> u32 {
    let f = p.a.endpoint.open_flow(p.now, SERVER, target(to)).unwrap();
    p.settle(STEPS).unwrap();
    f
}

fn datagram(seq: u32, len: usize) -> Bytes {
    let mut v: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(7) ^ seq as u8)
        .collect();
    if len >= 4 {
        v[..4].copy_from_slice(&seq.to_be_bytes());
    }
    Bytes::from(v)
}

/// The datagrams echoed back to the client on `flow`.
fn echoed(p: &Pair, flow: u32) -> Vec<Bytes> {
    p.a.app
        .datagrams
        .iter()
        .filter(|(peer, f, _)| *peer == SERVER && *f == flow)
        .map(|(_, _, d)| d.clone())
        .collect()
}

#[test]
fn datagrams_of_every_size_echo_whole_and_once_on_both_lanes() {
    for direct in [false, true] {
        let mut p = connected(&["127.0.0.1:53"], 1);
        p.set_direct(direct);
        // Every lossy packet may come twice: each datagram must still come once.
        p.lossy.duplicate_per_mille = 300;
        let flow =
            p.a.endpoint
                .open_flow(p.now, SERVER, target("127.0.0.1:53"))
                .unwrap();
        let sizes = [0, 1, 64, 1362, 1363, 9000, MAX_DATAGRAM];
        let sent: Vec<Bytes> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| datagram(i as u32, n))
            .collect();
        // Sent before the flow opened: held, then sent.
        for d in &sent {
            p.a.endpoint
                .send_datagram(p.now, SERVER, flow, d.clone())
                .unwrap();
        }
        p.settle(STEPS).unwrap();
        assert!(p
            .a
            .app
            .events
            .contains(&Event::FlowOpened { peer: SERVER, flow }));
        assert_eq!(
            p.b.app.flow_requests,
            vec![(CLIENT, flow, target("127.0.0.1:53"))]
        );
        let mut got = echoed(&p, flow);
        assert_eq!(
            got.len(),
            sent.len(),
            "direct={direct}: each once, none twice"
        );
        got.sort_by_key(|d| d.len());
        assert!(got == sent, "direct={direct}: byte-exact");
        let st = p.a.endpoint.session_stats(SERVER).unwrap();
        assert_eq!(
            (st.flows, st.datagrams_sent, st.datagrams_received),
            (1, 7, 7)
        );
        assert_eq!(st.datagrams_dropped, 0);
        if direct {
            assert!(
                p.a.lossy_sent > 0,
                "on a direct link datagrams take the lossy lane"
            );
        }
    }
}

#[test]
fn a_lossy_link_loses_datagrams_but_never_repeats_or_corrupts_one() {
    let mut p = connected(&["127.0.0.1:53"], 2);
    p.set_direct(true);
    p.lossy.loss_per_mille = 50;
    p.lossy.duplicate_per_mille = 100;
    p.lossy.reorder = Duration::from_millis(5);
    let flow = open(&mut p, "127.0.0.1:53");
    for i in 0..400u32 {
        let d = datagram(i, if i % 10 == 0 { 4000 } else { 200 });
        p.a.endpoint.send_datagram(p.now, SERVER, flow, d).unwrap();
        p.advance(Duration::from_millis(1), STEPS).unwrap();
    }
    p.settle(STEPS).unwrap();
    let got = echoed(&p, flow);
    let mut seqs: Vec<u32> = got
        .iter()
        .map(|d| u32::from_be_bytes(d[..4].try_into().unwrap()))
        .collect();
    for (d, &s) in got.iter().zip(&seqs) {
        assert!(*d == datagram(s, d.len()), "datagram {s} intact");
    }
    let n = seqs.len();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "no datagram delivered twice");
    // 5% loss each way on each fragment: most get there and back, not all.
    assert!(n > 300 && n < 400, "{n} of 400 echoed");
    let st = p.a.endpoint.session_stats(SERVER).unwrap();
    assert!(
        st.datagrams_discarded > 0,
        "duplicates were seen and dropped"
    );
}

#[test]
fn a_flow_outside_the_udp_rules_is_refused_with_its_code() {
    let mut p = connected(&["127.0.0.1:53"], 3);
    // TCP to port 22 is allowed: its UDP twin is not.
    for to in ["127.0.0.1:22", "127.0.0.1:54", "10.0.0.1:53"] {
        let flow = open(&mut p, to);
        assert!(p.a.app.events.contains(&Event::FlowRefused {
            peer: SERVER,
            flow,
            code: StreamCode::TargetNotAllowed
        }));
        assert!(p.b.app.events.contains(&Event::FlowDenied {
            peer: CLIENT,
            target: target(to),
            code: StreamCode::TargetNotAllowed
        }));
        assert_eq!(
            p.a.endpoint
                .send_datagram(p.now, SERVER, flow, Bytes::from_static(b"x")),
            Err(DatagramError::UnknownFlow)
        );
    }
    assert!(
        p.b.app.flow_requests.is_empty(),
        "the server app never saw them"
    );
    // A server without `udp:` rules (the default) allows none.
    let mut p = connected(&[], 4);
    let flow = open(&mut p, "127.0.0.1:53");
    assert!(p.a.app.events.contains(&Event::FlowRefused {
        peer: SERVER,
        flow,
        code: StreamCode::TargetNotAllowed
    }));
}

#[test]
fn the_server_applications_refusal_and_its_flow_limit_reach_the_client() {
    let mut s = EndpointConfig::new(SERVER);
    let mut pol = policy(&[], &["*:*"]);
    pol.limits = Limits {
        max_flows_per_peer: 2,
        ..Limits::default()
    };
    s.server = Some(pol);
    let mut p = connected_with(s, 5);
    let (a, b) = (open(&mut p, "127.0.0.1:1"), open(&mut p, "127.0.0.1:2"));
    let c = open(&mut p, "127.0.0.1:3");
    assert!(p.a.app.events.contains(&Event::FlowRefused {
        peer: SERVER,
        flow: c,
        code: StreamCode::TooManyFlows
    }));
    // Closing one makes room.
    assert!(p.a.endpoint.close_flow(SERVER, a));
    p.settle(STEPS).unwrap();
    assert!(p.b.app.events.iter().any(|e| matches!(e,
        Event::FlowClosed { flow, code: StreamCode::Cancelled, remote: true, .. } if *flow == a)));
    let d = open(&mut p, "127.0.0.1:4");
    assert!(p.a.app.events.contains(&Event::FlowOpened {
        peer: SERVER,
        flow: d
    }));
    assert!(p.a.app.events.contains(&Event::FlowOpened {
        peer: SERVER,
        flow: b
    }));
    // The application cannot reach the target (a name that does not resolve, say).
    p.b.app.flow_refusal = Some(StreamCode::TargetUnreachable);
    p.a.endpoint.close_flow(SERVER, b);
    let e = open(&mut p, "nas.lan:53");
    assert!(p.a.app.events.contains(&Event::FlowRefused {
        peer: SERVER,
        flow: e,
        code: StreamCode::TargetUnreachable
    }));
}

#[test]
fn a_server_without_udp_forwarding_refuses_at_once_and_a_stray_datagram_is_a_violation() {
    let mut s = EndpointConfig::new(SERVER);
    s.server = Some(policy(&[], &["*:*"]));
    s.datagrams = false;
    let mut p = connected_with(s, 6);
    let t0 = p.now;
    let flow = open(&mut p, "127.0.0.1:53");
    assert!(p.a.app.events.contains(&Event::FlowRefused {
        peer: SERVER,
        flow,
        code: StreamCode::DatagramUnsupported
    }));
    assert!(
        p.now - t0 < Duration::from_millis(10),
        "no round trip, no hang"
    );
    // A datagram in a session that did not negotiate them breaks it.
    let stray = Frame::LossyDatagram(Fragment {
        flow: 1,
        seq: 0,
        index: 0,
        count: 1,
        payload: Bytes::from_static(b"hi"),
    });
    p.inject_to_b(stray.to_bytes());
    p.settle(STEPS).unwrap();
    assert!(p.b.app.events.iter().any(|e| matches!(
        e,
        Event::SessionClosed {
            code: SessionCode::ProtocolViolation,
            ..
        }
    )));
}

#[test]
fn a_flood_is_dropped_and_counted_and_the_sessions_stream_still_moves() {
    let mut p = connected(&["127.0.0.1:53"], 7);
    p.set_direct(true);
    p.a.app.keep_bytes = false;
    let flow = open(&mut p, "127.0.0.1:53");
    let stream =
        p.a.endpoint
            .open(p.now, SERVER, target("127.0.0.1:22"))
            .unwrap();
    let upload = Bytes::from(vec![7u8; 4 << 20]);
    p.a.app.send(stream, upload.clone(), true);
    let (mut full, mut sent) = (0u64, 0u64);
    // 1 MB of datagrams every millisecond: far more than the link moves.
    for round in 0..400u32 {
        for i in 0..1000 {
            match p
                .a
                .endpoint
                .send_datagram(p.now, SERVER, flow, datagram(round * 1000 + i, 1000))
            {
                Ok(()) => sent += 1,
                Err(DatagramError::QueueFull) => full += 1,
                Err(e) => panic!("{e}"),
            }
        }
        p.advance(Duration::from_millis(1), STEPS).unwrap();
        if p.b.app.eof.contains(&stream) {
            break;
        }
    }
    p.run_until(STEPS, |p| p.b.app.eof.contains(&stream))
        .unwrap();
    assert!(
        p.b.app.received[&stream] == upload[..],
        "the stream finished byte-exact"
    );
    let st = p.a.endpoint.session_stats(SERVER).unwrap();
    assert!(
        full > 0 && st.datagrams_dropped == full,
        "{full} drops counted"
    );
    assert_eq!(st.datagrams_sent, sent);
    assert!(sent > 100, "datagrams moved too: {sent}");
}

#[test]
fn an_idle_flow_ends_on_both_sides_and_a_busy_one_does_not() {
    let mut p = connected(&["127.0.0.1:53"], 8);
    let (idle, busy) = (open(&mut p, "127.0.0.1:53"), open(&mut p, "127.0.0.1:53"));
    for _ in 0..80 {
        p.a.endpoint
            .send_datagram(p.now, SERVER, busy, Bytes::from_static(b"tick"))
            .unwrap();
        p.advance(Duration::from_secs(1), STEPS).unwrap();
    }
    let closed = |events: &[Event], flow: u32| {
        events.iter().any(|e| {
            matches!(e,
            Event::FlowClosed { flow: f, code: StreamCode::FlowIdle, .. } if *f == flow)
        })
    };
    assert!(closed(&p.a.app.events, idle) && closed(&p.b.app.events, idle));
    assert!(!closed(&p.a.app.events, busy) && !closed(&p.b.app.events, busy));
    assert_eq!(echoed(&p, busy).len(), 80);
}

#[test]
fn flows_end_with_their_session_and_a_reload_closes_the_disallowed_one() {
    let mut p = connected(&["127.0.0.1:53", "127.0.0.1:123"], 9);
    let (dns, ntp) = (open(&mut p, "127.0.0.1:53"), open(&mut p, "127.0.0.1:123"));
    let done =
        p.b.endpoint
            .set_server_policy(policy(&[], &["127.0.0.1:53"]));
    assert_eq!(
        done.flows_closed,
        vec![(CLIENT, ntp, target("127.0.0.1:123"))]
    );
    p.settle(STEPS).unwrap();
    assert!(p.a.app.events.iter().any(|e| matches!(e,
        Event::FlowClosed { flow, code: StreamCode::TargetNotAllowed, remote: true, .. } if *flow == ntp)));
    p.a.endpoint
        .send_datagram(p.now, SERVER, dns, Bytes::from_static(b"still"))
        .unwrap();
    p.settle(STEPS).unwrap();
    assert_eq!(echoed(&p, dns), vec![Bytes::from_static(b"still")]);
    p.a.endpoint.disconnect(SERVER);
    p.settle(STEPS).unwrap();
    for app in [&p.a.app, &p.b.app] {
        assert!(app.events.iter().any(|e| matches!(e,
            Event::FlowClosed { flow, code: StreamCode::SessionClosed, .. } if *flow == dns)));
    }
}

#[test]
fn a_flow_opened_while_the_session_is_suspended_opens_on_resume() {
    let mut p = connected(&["127.0.0.1:53"], 10);
    p.link_down();
    p.settle(STEPS).unwrap();
    let flow =
        p.a.endpoint
            .open_flow(p.now, SERVER, target("127.0.0.1:53"))
            .unwrap();
    p.a.endpoint
        .send_datagram(p.now, SERVER, flow, Bytes::from_static(b"held"))
        .unwrap();
    p.advance(Duration::from_secs(2), STEPS).unwrap();
    p.link_up();
    p.settle(STEPS).unwrap();
    assert!(p
        .a
        .app
        .events
        .iter()
        .any(|e| matches!(e, Event::SessionResumed { .. })));
    assert!(p
        .a
        .app
        .events
        .contains(&Event::FlowOpened { peer: SERVER, flow }));
    assert_eq!(echoed(&p, flow), vec![Bytes::from_static(b"held")]);
}
