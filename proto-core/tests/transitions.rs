//! State transitions of one endpoint, driven by hand-made frames: every refusal and
//! violation with its code, and that a misbehaving peer never disturbs another.

use std::time::{Duration, Instant};

use bytes::Bytes;
use toxtun_proto::wire::{Frame, Hello, HelloAck};
use toxtun_proto::{
    ClientRule, Endpoint, EndpointConfig, Event, Input, Limits, Output, PeerId, ReadError,
    ServerPolicy, SessionCode, SessionId, SharedSecret, StatusCode, StreamCode, StreamId,
    TargetRules, WriteError, PROTOCOL_VERSION,
};

const SERVER: PeerId = PeerId([0x5E; 32]);
const ALICE: PeerId = PeerId([0xA1; 32]);
const BOB: PeerId = PeerId([0xB0; 32]);
const MALLORY: PeerId = PeerId([0x66; 32]);

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn server_config() -> EndpointConfig {
    let mut c = EndpointConfig::new(SERVER);
    let rules = TargetRules::new(vec!["127.0.0.1:22".parse().unwrap()]);
    c.server = Some(ServerPolicy {
        clients: vec![
            ClientRule {
                peer: ALICE,
                targets: rules.clone(),
            },
            ClientRule {
                peer: BOB,
                targets: rules,
            },
        ],
        secret: Some((
            SharedSecret::new("the shared secret").unwrap(),
            TargetRules::default(),
        )),
        limits: Limits {
            max_peers: 2,
            max_streams_per_peer: 3,
            ..Limits::default()
        },
        ..Default::default()
    });
    c
}

/// Everything the endpoint wants done now.
#[derive(Debug)]
struct Drained {
    sent: Vec<(PeerId, Frame)>,
    events: Vec<Event>,
}

impl Drained {
    fn frames_to(&self, peer: PeerId) -> Vec<Frame> {
        self.sent
            .iter()
            .filter(|(p, _)| *p == peer)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

fn drain(ep: &mut Endpoint, now: Instant) -> Drained {
    let mut d = Drained {
        sent: vec![],
        events: vec![],
    };
    while let Some(o) = ep.poll_output(now) {
        match o {
            Output::Transmit { peer, packet } => d
                .sent
                .push((peer, Frame::decode(&packet).expect("we send valid frames"))),
            Output::Event(e) => d.events.push(e),
            Output::Timeout(_) => break,
        }
    }
    d
}

fn packet(ep: &mut Endpoint, now: Instant, peer: PeerId, frame: Frame) -> Drained {
    ep.handle_input(
        now,
        Input::Packet {
            peer,
            packet: frame.to_bytes(),
        },
    );
    drain(ep, now)
}

fn hello(session: u8) -> Hello {
    Hello {
        min_version: 1,
        max_version: PROTOCOL_VERSION,
        capabilities: 0,
        session: SessionId([session; 16]),
        stream_window: 64 * 1024,
        session_window: 1 << 20,
        proof: None,
    }
}

/// MALLORY's HELLO proving `secret` (the right one is "the shared secret").
fn mallory_hello(session: u8, secret: &str) -> Frame {
    let mut h = hello(session);
    h.proof = Some(
        SharedSecret::new(secret)
            .unwrap()
            .hello_proof(&MALLORY, &SERVER),
    );
    Frame::Hello(h)
}

/// A server with ALICE's session established.
fn server_with_alice() -> (Endpoint, Instant) {
    let now = t0();
    let mut ep = Endpoint::new(server_config(), [1; 32]).unwrap();
    ep.handle_input(now, Input::PeerOnline(ALICE));
    drain(&mut ep, now);
    let d = packet(&mut ep, now, ALICE, Frame::Hello(hello(1)));
    assert!(matches!(d.frames_to(ALICE)[..], [Frame::HelloAck(_)]));
    assert!(d
        .events
        .contains(&Event::SessionEstablished { peer: ALICE }));
    (ep, now)
}

fn sid(n: u8) -> StreamId {
    StreamId::from_bytes([n; 16])
}

fn open(ep: &mut Endpoint, now: Instant, peer: PeerId, n: u8, target: &str) -> Drained {
    packet(
        ep,
        now,
        peer,
        Frame::Open {
            stream: sid(n),
            target: target.parse().unwrap(),
        },
    )
}

fn data(n: u8, offset: u64, len: usize) -> Frame {
    Frame::Data {
        stream: sid(n),
        offset,
        ack: 0,
        payload: Bytes::from(vec![0xAB; len]),
    }
}

#[test]
fn version_mismatch_is_a_clear_refusal() {
    let now = t0();
    let mut ep = Endpoint::new(server_config(), [1; 32]).unwrap();
    let mut h = hello(1);
    h.min_version = PROTOCOL_VERSION + 1;
    h.max_version = PROTOCOL_VERSION + 5;
    let d = packet(&mut ep, now, ALICE, Frame::Hello(h));
    assert_eq!(
        d.frames_to(ALICE),
        vec![Frame::HelloReject {
            code: SessionCode::VersionMismatch,
            min_version: 1,
            max_version: PROTOCOL_VERSION
        }]
    );
    assert!(!ep.is_established(ALICE));
}

#[test]
fn client_hears_the_refusal_and_stops() {
    let now = t0();
    let mut ep = Endpoint::new(EndpointConfig::new(ALICE), [2; 32]).unwrap();
    ep.connect(now, SERVER);
    ep.handle_input(now, Input::PeerOnline(SERVER));
    let d = drain(&mut ep, now);
    assert!(matches!(d.frames_to(SERVER)[..], [Frame::Hello(_)]));
    let d = packet(
        &mut ep,
        now,
        SERVER,
        Frame::HelloReject {
            code: SessionCode::VersionMismatch,
            min_version: 7,
            max_version: 9,
        },
    );
    assert!(d.events.contains(&Event::SessionClosed {
        peer: SERVER,
        code: SessionCode::VersionMismatch,
        remote: true
    }));
    assert_eq!(ep.peers().count(), 0, "a version mismatch is not retried");
    assert_eq!(ep.next_deadline(), None, "and no timer is left running");
}

#[test]
fn a_client_only_endpoint_refuses_sessions_and_friend_requests() {
    let now = t0();
    let mut ep = Endpoint::new(EndpointConfig::new(ALICE), [2; 32]).unwrap();
    let d = packet(&mut ep, now, MALLORY, Frame::Hello(hello(1)));
    assert!(matches!(
        d.frames_to(MALLORY)[..],
        [Frame::HelloReject {
            code: SessionCode::Unauthorized,
            ..
        }]
    ));
    ep.handle_input(
        now,
        Input::FriendRequest {
            peer: MALLORY,
            message: Bytes::from_static(b"hi"),
        },
    );
    assert_eq!(
        drain(&mut ep, now).events,
        vec![Event::FriendRequest {
            peer: MALLORY,
            decision: Err(SessionCode::Unauthorized)
        }]
    );
}

#[test]
fn friend_requests_are_decided_by_policy() {
    let now = t0();
    let mut ep = Endpoint::new(server_config(), [1; 32]).unwrap();
    let secret = SharedSecret::new("the shared secret").unwrap();
    let wrong = SharedSecret::new("some other secret").unwrap();
    let cases = [
        (ALICE, Bytes::from_static(b"anything"), Ok(())),
        (
            MALLORY,
            Bytes::from(secret.friend_request(&MALLORY, &SERVER)),
            Ok(()),
        ),
        (
            MALLORY,
            Bytes::from(wrong.friend_request(&MALLORY, &SERVER)),
            Err(SessionCode::BadSecret),
        ),
        (
            MALLORY,
            Bytes::from_static(b"please"),
            Err(SessionCode::Unauthorized),
        ),
    ];
    for (peer, message, decision) in cases {
        ep.handle_input(now, Input::FriendRequest { peer, message });
        assert_eq!(
            drain(&mut ep, now).events,
            vec![Event::FriendRequest { peer, decision }]
        );
    }
    // Ten thousand strangers leave nothing behind.
    for i in 0..10_000u32 {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        ep.handle_input(
            now,
            Input::FriendRequest {
                peer: PeerId(k),
                message: Bytes::from_static(b"let me in"),
            },
        );
    }
    assert_eq!(drain(&mut ep, now).events.len(), 10_000);
    assert_eq!(ep.peers().count(), 0);
}

#[test]
fn bad_secret_and_unknown_key_get_their_codes() {
    let now = t0();
    let mut ep = Endpoint::new(server_config(), [1; 32]).unwrap();
    let d = packet(&mut ep, now, MALLORY, mallory_hello(1, "not the secret"));
    assert!(matches!(
        d.frames_to(MALLORY)[..],
        [Frame::HelloReject {
            code: SessionCode::BadSecret,
            ..
        }]
    ));
    let d = packet(&mut ep, now, MALLORY, Frame::Hello(hello(2)));
    assert!(matches!(
        d.frames_to(MALLORY)[..],
        [Frame::HelloReject {
            code: SessionCode::Unauthorized,
            ..
        }]
    ));
    let d = packet(&mut ep, now, MALLORY, mallory_hello(3, "the shared secret"));
    assert!(matches!(d.frames_to(MALLORY)[..], [Frame::HelloAck(_)]));
    // Admitted by secret, whose rules allow nothing: every target is refused.
    let d = open(&mut ep, now, MALLORY, 1, "127.0.0.1:22");
    assert_eq!(
        d.frames_to(MALLORY),
        vec![Frame::OpenErr {
            stream: sid(1),
            code: StreamCode::TargetNotAllowed
        }]
    );
}

#[test]
fn too_many_peers_is_refused() {
    let (mut ep, now) = server_with_alice();
    let d = packet(&mut ep, now, BOB, Frame::Hello(hello(2)));
    assert!(matches!(d.frames_to(BOB)[..], [Frame::HelloAck(_)]));
    let d = packet(&mut ep, now, MALLORY, mallory_hello(3, "the shared secret"));
    assert!(matches!(
        d.frames_to(MALLORY)[..],
        [Frame::HelloReject {
            code: SessionCode::TooManyPeers,
            ..
        }]
    ));
}

#[test]
fn stream_frames_before_the_handshake_are_refused() {
    let now = t0();
    let mut ep = Endpoint::new(server_config(), [1; 32]).unwrap();
    let d = open(&mut ep, now, ALICE, 1, "127.0.0.1:22");
    assert_eq!(
        d.frames_to(ALICE),
        vec![Frame::Close {
            code: SessionCode::HandshakeRequired
        }]
    );
    assert!(d.events.is_empty(), "no stream reaches the application");
}

#[test]
fn malformed_frame_closes_only_that_session() {
    let (mut ep, now) = server_with_alice();
    packet(&mut ep, now, BOB, Frame::Hello(hello(2)));
    open(&mut ep, now, BOB, 9, "127.0.0.1:22");
    ep.handle_input(
        now,
        Input::Packet {
            peer: ALICE,
            packet: Bytes::from_static(&[0xAB, 1, 2, 3]),
        },
    );
    let d = drain(&mut ep, now);
    assert_eq!(
        d.frames_to(ALICE),
        vec![Frame::Close {
            code: SessionCode::ProtocolViolation
        }]
    );
    assert!(d.events.contains(&Event::SessionClosed {
        peer: ALICE,
        code: SessionCode::ProtocolViolation,
        remote: false
    }));
    assert!(!ep.is_established(ALICE));
    assert!(ep.is_established(BOB));
    assert!(ep.stream_stats(sid(9)).is_some(), "Bob's stream carries on");
}

#[test]
fn invalid_target_is_refused_by_stream_id() {
    let (mut ep, now) = server_with_alice();
    let mut raw = vec![0xA8];
    raw.extend([4u8; 16]);
    raw.push(10);
    raw.extend(b"0x7f000001");
    raw.extend(22u16.to_be_bytes());
    ep.handle_input(
        now,
        Input::Packet {
            peer: ALICE,
            packet: Bytes::from(raw),
        },
    );
    let d = drain(&mut ep, now);
    assert_eq!(
        d.frames_to(ALICE),
        vec![Frame::OpenErr {
            stream: sid(4),
            code: StreamCode::InvalidTarget
        }]
    );
    assert!(ep.is_established(ALICE));
}

#[test]
fn unknown_stream_gets_one_rst_never_a_connection() {
    let (mut ep, now) = server_with_alice();
    let d = packet(&mut ep, now, ALICE, data(5, 0, 100));
    assert_eq!(
        d.frames_to(ALICE),
        vec![Frame::Rst {
            stream: sid(5),
            code: StreamCode::UnknownStream,
            offset: 0,
            received: 0,
        }]
    );
    assert!(
        d.events.is_empty(),
        "no StreamIncoming: data never opens a stream"
    );
    // More late data for it is dropped quietly; RST for an unknown stream is never answered.
    let d = packet(&mut ep, now, ALICE, data(5, 100, 100));
    assert!(d.sent.is_empty());
    let d = packet(
        &mut ep,
        now,
        ALICE,
        Frame::Rst {
            stream: sid(6),
            code: StreamCode::Cancelled,
            offset: 0,
            received: 0,
        },
    );
    assert!(d.sent.is_empty() && d.events.is_empty());
    // Nothing of a stream we never knew counts against the budget: the RST's zero counts
    // tell the sender to take back the credit it spent on it.
    assert_eq!(ep.session_stats(ALICE).unwrap().recv_buffered, 0);
    assert_eq!(ep.session_stats(ALICE).unwrap().received, 0);
}

#[test]
fn zero_rtt_bytes_wait_for_accept_within_the_window() {
    let (mut ep, now) = server_with_alice();
    let d = open(&mut ep, now, ALICE, 1, "127.0.0.1:22");
    assert!(matches!(d.events[..], [Event::StreamIncoming { .. }]));
    assert!(
        d.sent.is_empty(),
        "no OPEN_OK before the application accepts"
    );
    packet(&mut ep, now, ALICE, data(1, 0, 1000));
    assert_eq!(ep.read(sid(1), 10), Err(ReadError::NotAccepted));
    assert_eq!(
        ep.write(sid(1), Bytes::from_static(b"x")),
        Err(WriteError::NotAccepted)
    );
    ep.accept(sid(1)).unwrap();
    let d = drain(&mut ep, now);
    assert_eq!(d.events, vec![Event::StreamReadable { stream: sid(1) }]);
    assert_eq!(d.frames_to(ALICE), vec![Frame::OpenOk { stream: sid(1) }]);
    assert_eq!(ep.read(sid(1), 4096).unwrap().unwrap().len(), 1000);
    assert_eq!(ep.read(sid(1), 4096), Err(ReadError::Blocked));
}

#[test]
fn overrunning_the_stream_window_resets_the_stream() {
    let (mut ep, now) = server_with_alice();
    open(&mut ep, now, ALICE, 1, "127.0.0.1:22");
    let window = ep.config().stream_window as usize;
    let mut offset = 0;
    while offset < window {
        let n = (window - offset).min(1300);
        packet(&mut ep, now, ALICE, data(1, offset as u64, n));
        offset += n;
    }
    assert_eq!(ep.stream_stats(sid(1)).unwrap().recv_buffered, window);
    let d = packet(&mut ep, now, ALICE, data(1, offset as u64, 1));
    assert!(d.frames_to(ALICE).contains(&Frame::Rst {
        stream: sid(1),
        code: StreamCode::FlowControl,
        offset: 0,
        received: window as u64,
    }));
    assert!(d.events.contains(&Event::StreamReset {
        stream: sid(1),
        code: StreamCode::FlowControl,
        remote: false
    }));
    assert_eq!(
        ep.session_stats(ALICE).unwrap().recv_buffered,
        0,
        "the reset stream's bytes are released"
    );
    assert!(
        ep.is_established(ALICE),
        "a stream violation leaves the session up"
    );
}

#[test]
fn overrunning_the_peer_budget_closes_the_session() {
    let now = t0();
    let mut cfg = server_config();
    cfg.stream_window = 64 * 1024;
    cfg.session_window = 100 * 1024;
    let mut ep = Endpoint::new(cfg, [1; 32]).unwrap();
    packet(&mut ep, now, ALICE, Frame::Hello(hello(1)));
    open(&mut ep, now, ALICE, 1, "127.0.0.1:22");
    open(&mut ep, now, ALICE, 2, "127.0.0.1:22");
    let mut sent = 0u64;
    let mut closed = false;
    'outer: for s in [1u8, 2] {
        let mut off = 0u64;
        while off < 64 * 1024 {
            let d = packet(&mut ep, now, ALICE, data(s, off, 1024));
            off += 1024;
            sent += 1024;
            if d.frames_to(ALICE).contains(&Frame::Close {
                code: SessionCode::FlowControl,
            }) {
                closed = true;
                break 'outer;
            }
        }
    }
    assert!(closed);
    assert_eq!(
        sent,
        100 * 1024 + 1024,
        "closed on the first byte past the budget"
    );
    assert!(!ep.is_established(ALICE));
}

#[test]
fn data_after_fin_and_bad_acks_reset_the_stream() {
    let (mut ep, now) = server_with_alice();
    open(&mut ep, now, ALICE, 1, "127.0.0.1:22");
    ep.accept(sid(1)).unwrap();
    packet(&mut ep, now, ALICE, data(1, 0, 10));
    packet(
        &mut ep,
        now,
        ALICE,
        Frame::Fin {
            stream: sid(1),
            offset: 10,
            ack: 0,
        },
    );
    let d = packet(&mut ep, now, ALICE, data(1, 10, 5));
    assert!(d.frames_to(ALICE).contains(&Frame::Rst {
        stream: sid(1),
        code: StreamCode::StreamState,
        offset: 0,
        received: 10,
    }));

    open(&mut ep, now, ALICE, 2, "127.0.0.1:22");
    ep.accept(sid(2)).unwrap();
    drain(&mut ep, now);
    let d = packet(
        &mut ep,
        now,
        ALICE,
        Frame::Window {
            stream: sid(2),
            max_offset: 1 << 20,
            ack: 99,
        },
    );
    assert!(
        d.frames_to(ALICE).contains(&Frame::Rst {
            stream: sid(2),
            code: StreamCode::StreamState,
            offset: 0,
            received: 0,
        }),
        "acknowledging bytes never sent is a violation"
    );
}

#[test]
fn duplicate_open_does_not_disturb_the_live_stream() {
    let (mut ep, now) = server_with_alice();
    open(&mut ep, now, ALICE, 1, "127.0.0.1:22");
    ep.accept(sid(1)).unwrap();
    drain(&mut ep, now);
    let d = open(&mut ep, now, ALICE, 1, "127.0.0.1:22");
    assert_eq!(
        d.frames_to(ALICE),
        vec![Frame::OpenErr {
            stream: sid(1),
            code: StreamCode::DuplicateStream
        }]
    );
    assert!(ep.stream_stats(sid(1)).is_some());
}

#[test]
fn streams_past_the_limit_are_refused() {
    let (mut ep, now) = server_with_alice();
    for n in 1..=3 {
        let d = open(&mut ep, now, ALICE, n, "127.0.0.1:22");
        assert!(matches!(d.events[..], [Event::StreamIncoming { .. }]));
    }
    let d = open(&mut ep, now, ALICE, 4, "127.0.0.1:22");
    assert_eq!(
        d.frames_to(ALICE),
        vec![Frame::OpenErr {
            stream: sid(4),
            code: StreamCode::TooManyStreams
        }]
    );
    // Closing one makes room.
    ep.refuse(sid(1), StreamCode::TargetRefused).unwrap();
    let d = open(&mut ep, now, ALICE, 5, "127.0.0.1:22");
    assert!(matches!(d.events[..], [Event::StreamIncoming { .. }]));
}

#[test]
fn ping_is_answered_and_silence_is_probed() {
    let (mut ep, now) = server_with_alice();
    let d = packet(&mut ep, now, ALICE, Frame::Ping { token: 42 });
    assert_eq!(d.frames_to(ALICE), vec![Frame::Pong { token: 42 }]);
    let keepalive = ep.config().keepalive_interval;
    assert_eq!(ep.next_deadline(), Some(now + keepalive));
    let later = now + keepalive;
    ep.handle_timeout(later);
    let d = drain(&mut ep, later);
    assert!(matches!(d.frames_to(ALICE)[..], [Frame::Ping { .. }]));
    // Silence past the idle timeout suspends the session (an outage, maybe)...
    let idle = now + ep.config().idle_timeout;
    ep.handle_timeout(idle);
    let d = drain(&mut ep, idle);
    assert!(d.events.contains(&Event::SessionSuspended { peer: ALICE }));
    assert!(d.frames_to(ALICE).is_empty());
    // ...and the resume grace later, it ends.
    let gone = idle + ep.config().resume_grace;
    assert_eq!(ep.next_deadline(), Some(gone));
    ep.handle_timeout(gone);
    let d = drain(&mut ep, gone);
    assert!(d.events.contains(&Event::SessionClosed {
        peer: ALICE,
        code: SessionCode::LinkLost,
        remote: false
    }));
    assert_eq!(ep.peers().count(), 0);
}

#[test]
fn a_resume_hello_is_answered_with_resumed_and_the_frame_count() {
    let (mut ep, now) = server_with_alice();
    open(&mut ep, now, ALICE, 1, "127.0.0.1:22");
    ep.accept(sid(1)).unwrap();
    let sent = drain(&mut ep, now).frames_to(ALICE);
    assert_eq!(sent, vec![Frame::OpenOk { stream: sid(1) }]);
    ep.handle_input(now, Input::PeerOffline(ALICE));
    let d = drain(&mut ep, now);
    assert!(d.events.contains(&Event::SessionSuspended { peer: ALICE }));
    // Back online, the server asks the client to resume, once.
    ep.handle_input(now, Input::PeerOnline(ALICE));
    let d = drain(&mut ep, now);
    let resume_required = Frame::Close {
        code: SessionCode::ResumeRequired,
    };
    assert_eq!(d.frames_to(ALICE), vec![resume_required]);
    let d = packet(&mut ep, now, ALICE, Frame::Ping { token: 1 });
    assert!(d.frames_to(ALICE).is_empty(), "asked once per outage");
    // The client resumes: it got none of our frames, so OPEN_OK is resent after its count.
    let d = packet(&mut ep, now, ALICE, Frame::Resume(hello(1)));
    let frames = d.frames_to(ALICE);
    assert!(
        matches!(&frames[..], [Frame::HelloAck(a), Frame::Ack { received: 1 }] if a.resumed),
        "{frames:?}"
    );
    assert!(d.events.contains(&Event::SessionResumed { peer: ALICE }));
    let d = packet(&mut ep, now, ALICE, Frame::Ack { received: 0 });
    assert_eq!(d.frames_to(ALICE), vec![Frame::OpenOk { stream: sid(1) }]);
    assert_eq!(
        ep.session_stats(ALICE).unwrap().frames_resent,
        1,
        "resent, not sent anew"
    );
}

#[test]
fn resuming_a_session_the_server_does_not_know_is_refused_with_its_code() {
    let (mut ep, now) = server_with_alice();
    // Session 9 was never made here (the server restarted since, say).
    let d = packet(&mut ep, now, ALICE, Frame::Resume(hello(9)));
    assert!(matches!(
        d.frames_to(ALICE)[..],
        [Frame::HelloReject {
            code: SessionCode::SessionUnknown,
            ..
        }]
    ));
    assert!(ep.is_established(ALICE), "the live session is untouched");
}

#[test]
fn an_ack_of_frames_never_sent_is_a_protocol_violation() {
    let (mut ep, now) = server_with_alice();
    let d = packet(&mut ep, now, ALICE, Frame::Ack { received: 5 });
    assert_eq!(
        d.frames_to(ALICE),
        vec![Frame::Close {
            code: SessionCode::ProtocolViolation
        }]
    );
    assert!(!ep.is_established(ALICE));
}

#[test]
fn a_restarted_client_starts_a_new_session_and_old_streams_end() {
    let (mut ep, now) = server_with_alice();
    open(&mut ep, now, ALICE, 1, "127.0.0.1:22");
    ep.accept(sid(1)).unwrap();
    drain(&mut ep, now);
    let d = packet(&mut ep, now, ALICE, Frame::Hello(hello(2)));
    assert!(d.events.contains(&Event::StreamReset {
        stream: sid(1),
        code: StreamCode::SessionClosed,
        remote: false
    }));
    assert!(matches!(d.frames_to(ALICE)[..], [Frame::HelloAck(_)]));
    assert!(ep.is_established(ALICE));
}

/// ALICE as a client with its session to SERVER established (the server's ACK forged).
fn client_established() -> (Endpoint, Instant) {
    let now = t0();
    let mut ep = Endpoint::new(EndpointConfig::new(ALICE), [3; 32]).unwrap();
    ep.connect(now, SERVER);
    ep.handle_input(now, Input::PeerOnline(SERVER));
    let d = drain(&mut ep, now);
    let Some(Frame::Hello(h)) = d.frames_to(SERVER).first().cloned() else {
        panic!("no hello")
    };
    packet(
        &mut ep,
        now,
        SERVER,
        Frame::HelloAck(HelloAck {
            version: 1,
            capabilities: 0,
            session: h.session,
            resumed: false,
            stream_window: 1 << 20,
            session_window: 1 << 24,
        }),
    );
    (ep, now)
}

#[test]
fn full_send_queue_holds_every_packet_until_ready() {
    let (mut ep, now) = client_established();
    let s = ep
        .open(now, SERVER, "127.0.0.1:22".parse().unwrap())
        .unwrap();
    assert_eq!(
        ep.write(s, Bytes::from(vec![1u8; 100_000])).unwrap(),
        100_000
    );
    ep.handle_input(now, Input::SendBlocked(SERVER));
    assert!(drain(&mut ep, now).sent.is_empty(), "nothing while blocked");
    ep.handle_input(now, Input::SendReady(SERVER));
    let d = drain(&mut ep, now);
    let bytes: usize = d
        .frames_to(SERVER)
        .iter()
        .map(|f| match f {
            Frame::Data { payload, .. } => payload.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(bytes, 100_000);
    assert!(matches!(d.frames_to(SERVER)[0], Frame::Open { .. }));
}

#[test]
fn commands_on_unknown_or_finished_streams_fail_clearly() {
    let now = t0();
    let mut ep = Endpoint::new(EndpointConfig::new(ALICE), [3; 32]).unwrap();
    assert_eq!(
        ep.write(sid(1), Bytes::from_static(b"x")),
        Err(WriteError::UnknownStream)
    );
    assert_eq!(ep.read(sid(1), 1), Err(ReadError::UnknownStream));
    let s = ep
        .open(now, SERVER, "127.0.0.1:22".parse().unwrap())
        .unwrap();
    // Before the handshake the server's window is unknown: no credit yet.
    assert_eq!(
        ep.write(s, Bytes::from_static(b"x")),
        Err(WriteError::Blocked)
    );
    ep.finish(s).unwrap();
    assert_eq!(
        ep.write(s, Bytes::from_static(b"x")),
        Err(WriteError::Finished)
    );
    assert!(ep
        .open(now, ALICE, "127.0.0.1:22".parse().unwrap())
        .is_err());
}

#[test]
fn peer_status_events_carry_the_seed_codes() {
    let now = t0();
    let mut ep = Endpoint::new(EndpointConfig::new(ALICE), [3; 32]).unwrap();
    ep.handle_input(now, Input::PeerOnline(SERVER));
    ep.handle_input(now, Input::PeerOffline(SERVER));
    let codes: Vec<u16> = drain(&mut ep, now)
        .events
        .iter()
        .filter_map(|e| e.status_code())
        .map(StatusCode::code)
        .collect();
    assert_eq!(codes, vec![301, 302]);
}

#[test]
fn client_resends_hello_after_the_server_closes() {
    let (mut ep, now) = client_established();
    let d = packet(
        &mut ep,
        now,
        SERVER,
        Frame::Close {
            code: SessionCode::Shutdown,
        },
    );
    assert!(d.events.contains(&Event::SessionClosed {
        peer: SERVER,
        code: SessionCode::Shutdown,
        remote: true
    }));
    let retry = ep.next_deadline().expect("a retry is scheduled");
    assert_eq!(retry, now + Duration::from_secs(1));
    ep.handle_timeout(retry);
    let d = drain(&mut ep, retry);
    assert!(matches!(d.frames_to(SERVER)[..], [Frame::Hello(_)]));
}

#[test]
fn frames_for_another_peers_stream_touch_nothing_of_it() {
    let (mut ep, now) = server_with_alice();
    open(&mut ep, now, ALICE, 1, "127.0.0.1:22");
    ep.accept(sid(1)).unwrap();
    drain(&mut ep, now);
    ep.handle_input(now, Input::PeerOnline(BOB));
    packet(&mut ep, now, BOB, Frame::Hello(hello(2)));
    // Bob names Alice's stream: data, FIN, RST, WINDOW. Each is an unknown stream to him.
    let d = packet(&mut ep, now, BOB, data(1, 0, 10));
    assert!(matches!(
        d.frames_to(BOB)[..],
        [Frame::Rst {
            code: StreamCode::UnknownStream,
            ..
        }]
    ));
    for f in [
        Frame::Fin {
            stream: sid(1),
            offset: 0,
            ack: 0,
        },
        Frame::Rst {
            stream: sid(1),
            code: StreamCode::Cancelled,
            offset: 0,
            received: 0,
        },
        Frame::Window {
            stream: sid(1),
            max_offset: 1 << 30,
            ack: 0,
        },
    ] {
        let d = packet(&mut ep, now, BOB, f);
        assert!(
            d.frames_to(ALICE).is_empty() && d.events.is_empty(),
            "{d:?}"
        );
    }
    // An OPEN reusing Alice's stream id is refused; it does not take her stream over.
    let d = open(&mut ep, now, BOB, 1, "127.0.0.1:22");
    assert_eq!(
        d.frames_to(BOB),
        vec![Frame::OpenErr {
            stream: sid(1),
            code: StreamCode::DuplicateStream
        }]
    );
    // Nothing for the application to do: only the refusal, for its log.
    assert_eq!(
        d.events,
        [Event::StreamDenied {
            stream: sid(1),
            peer: BOB,
            target: "127.0.0.1:22".parse().unwrap(),
            code: StreamCode::DuplicateStream
        }]
    );
    // Alice's stream is as it was.
    assert_eq!(ep.stream_stats(sid(1)).unwrap().peer, ALICE);
    let d = packet(&mut ep, now, ALICE, data(1, 0, 10));
    assert!(d.events.contains(&Event::StreamReadable { stream: sid(1) }));
    assert_eq!(ep.read(sid(1), 100).unwrap().unwrap().len(), 10);
}

#[test]
fn a_flood_of_friend_requests_keeps_no_state_and_disturbs_no_one() {
    let (mut ep, now) = server_with_alice();
    open(&mut ep, now, ALICE, 1, "127.0.0.1:22");
    ep.accept(sid(1)).unwrap();
    drain(&mut ep, now);
    let mut refused = 0;
    for i in 0..10_000u32 {
        let mut key = [0x77u8; 32];
        key[..4].copy_from_slice(&i.to_le_bytes());
        ep.handle_input(
            now,
            Input::FriendRequest {
                peer: PeerId(key),
                message: Bytes::from_static(b"toxtun/1 let me in"),
            },
        );
        for e in drain(&mut ep, now).events {
            if let Event::FriendRequest {
                decision: Err(SessionCode::BadSecret | SessionCode::Unauthorized),
                ..
            } = e
            {
                refused += 1;
            }
        }
    }
    assert_eq!(
        refused, 10_000,
        "every request without the secret is refused"
    );
    assert_eq!(
        ep.peers().collect::<Vec<_>>(),
        vec![ALICE],
        "no state kept for them"
    );
    let d = packet(&mut ep, now, ALICE, data(1, 0, 10));
    assert!(d.events.contains(&Event::StreamReadable { stream: sid(1) }));
}

#[test]
fn giant_truncated_and_unknown_frames_close_only_their_session() {
    for bad in [
        // Past the largest Tox packet, though a valid DATA layout.
        {
            let mut v = data(1, 0, 1340).to_bytes().to_vec();
            v.extend_from_slice(&[0; 200]);
            Bytes::from(v)
        },
        Bytes::from_static(&[0xAB, 1, 2, 3]),
        Bytes::from_static(&[0xBE, 0, 0]),
    ] {
        let (mut ep, now) = server_with_alice();
        ep.handle_input(now, Input::PeerOnline(BOB));
        packet(&mut ep, now, BOB, Frame::Hello(hello(2)));
        ep.handle_input(
            now,
            Input::Packet {
                peer: BOB,
                packet: bad,
            },
        );
        let d = drain(&mut ep, now);
        assert!(
            d.frames_to(BOB).contains(&Frame::Close {
                code: SessionCode::ProtocolViolation
            }),
            "{d:?}"
        );
        assert!(!ep.is_established(BOB));
        assert!(ep.is_established(ALICE), "the other client is unaffected");
    }
}

#[test]
fn data_with_an_impossible_ack_is_refused_whole_and_returns_no_credit() {
    let (mut ep, now) = server_with_alice();
    open(&mut ep, now, ALICE, 1, "127.0.0.1:22");
    ep.accept(sid(1)).unwrap();
    drain(&mut ep, now);
    // DATA acknowledging bytes the server never sent: the stream is reset, and its bytes
    // were never taken in, so the session's accounting is untouched.
    let d = packet(
        &mut ep,
        now,
        ALICE,
        Frame::Data {
            stream: sid(1),
            offset: 0,
            ack: 500,
            payload: Bytes::from(vec![1; 100]),
        },
    );
    assert!(d.frames_to(ALICE).contains(&Frame::Rst {
        stream: sid(1),
        code: StreamCode::StreamState,
        offset: 0,
        received: 0,
    }));
    let ss = ep.session_stats(ALICE).unwrap();
    assert_eq!((ss.received, ss.recv_buffered), (0, 0));
    assert!(
        !d.frames_to(ALICE)
            .iter()
            .any(|f| matches!(f, Frame::SessionWindow { .. })),
        "no credit handed back for bytes never counted"
    );
}

/// A server with ALICE's session established, ALICE having offered BATCH.
fn server_with_batching_alice() -> (Endpoint, Instant) {
    let now = t0();
    let mut ep = Endpoint::new(server_config(), [1; 32]).unwrap();
    ep.handle_input(now, Input::PeerOnline(ALICE));
    drain(&mut ep, now);
    let mut h = hello(1);
    h.capabilities = toxtun_proto::Capabilities::BATCH.0;
    let d = packet(&mut ep, now, ALICE, Frame::Hello(h));
    match &d.frames_to(ALICE)[..] {
        [Frame::HelloAck(a)] => assert_eq!(a.capabilities, toxtun_proto::Capabilities::BATCH.0),
        other => panic!("{other:?}"),
    }
    (ep, now)
}

#[test]
fn a_batch_is_handled_frame_by_frame_and_answered_in_one() {
    let (mut ep, now) = server_with_batching_alice();
    let batch = Frame::Batch(vec![
        Frame::Ping { token: 1 },
        Frame::Ping { token: 2 },
        Frame::Open {
            stream: sid(3),
            target: "127.0.0.1:22".parse().unwrap(),
        },
        Frame::Data {
            stream: sid(3),
            offset: 0,
            ack: 0,
            payload: Bytes::from_static(b"GET"),
        },
    ]);
    let d = packet(&mut ep, now, ALICE, batch);
    assert!(
        d.events
            .iter()
            .any(|e| matches!(e, Event::StreamIncoming { stream, .. } if *stream == sid(3))),
        "{:?}",
        d.events
    );
    // Both PONGs, in one BATCH packet.
    assert_eq!(
        d.frames_to(ALICE),
        vec![Frame::Batch(vec![
            Frame::Pong { token: 1 },
            Frame::Pong { token: 2 }
        ])]
    );
    assert_eq!(ep.stream_stats(sid(3)).unwrap().recv_buffered, 3);
}

#[test]
fn a_batch_without_the_capability_or_malformed_closes_the_session() {
    // ALICE did not offer BATCH.
    let (mut ep, now) = server_with_alice();
    let d = packet(
        &mut ep,
        now,
        ALICE,
        Frame::Batch(vec![Frame::Ping { token: 1 }]),
    );
    assert_eq!(
        d.frames_to(ALICE),
        vec![Frame::Close {
            code: SessionCode::ProtocolViolation
        }]
    );
    // Malformed: a length past the end, a HELLO inside, an empty batch.
    for bad in [
        &[0xB0, 0x00, 0x09, 0xA4][..],
        &[0xB0, 0x00, 0x01, 0xA0][..],
        &[0xB0][..],
    ] {
        let (mut ep, now) = server_with_batching_alice();
        ep.handle_input(
            now,
            Input::Packet {
                peer: ALICE,
                packet: Bytes::copy_from_slice(bad),
            },
        );
        let d = drain(&mut ep, now);
        assert_eq!(
            d.frames_to(ALICE),
            vec![Frame::Close {
                code: SessionCode::ProtocolViolation
            }],
            "{bad:?}"
        );
        assert!(!ep.is_established(ALICE));
    }
}

#[test]
fn frames_after_a_close_inside_a_batch_are_not_handled() {
    let (mut ep, now) = server_with_batching_alice();
    let d = packet(
        &mut ep,
        now,
        ALICE,
        Frame::Batch(vec![
            Frame::Close {
                code: SessionCode::Shutdown,
            },
            Frame::Open {
                stream: sid(4),
                target: "127.0.0.1:22".parse().unwrap(),
            },
        ]),
    );
    assert!(!ep.is_established(ALICE));
    assert!(ep.stream_stats(sid(4)).is_none(), "{:?}", d.events);
    assert!(!d
        .events
        .iter()
        .any(|e| matches!(e, Event::StreamIncoming { .. })));
}

#[test]
fn a_stale_batch_after_an_unreported_outage_breaks_nothing() {
    // The path went dark without the transport noticing; the idle timeout suspended both
    // sides, and when the path returned c-toxcore delivered what each had sent before,
    // BATCH packets among them. The suspended client drops them (the resume resends what
    // counts); the suspended server asks for the resume. Neither calls it a violation.
    let (mut ep, now) = server_with_batching_alice();
    let later = now + Duration::from_secs(31);
    ep.handle_timeout(later);
    let d = drain(&mut ep, later);
    assert!(
        d.events.contains(&Event::SessionSuspended { peer: ALICE }),
        "{:?}",
        d.events
    );
    let stale = Frame::Batch(vec![Frame::Ping { token: 1 }, Frame::Ping { token: 2 }]);
    let d = packet(&mut ep, later, ALICE, stale.clone());
    assert_eq!(
        d.frames_to(ALICE),
        vec![Frame::Close {
            code: SessionCode::ResumeRequired
        }]
    );

    let now = t0();
    let mut client = Endpoint::new(EndpointConfig::new(ALICE), [3; 32]).unwrap();
    client.connect(now, SERVER);
    client.handle_input(now, Input::PeerOnline(SERVER));
    let Some(Frame::Hello(h)) = drain(&mut client, now).frames_to(SERVER).first().cloned() else {
        panic!("no hello")
    };
    packet(
        &mut client,
        now,
        SERVER,
        Frame::HelloAck(HelloAck {
            version: 1,
            capabilities: toxtun_proto::Capabilities::BATCH.0,
            session: h.session,
            resumed: false,
            stream_window: 1 << 20,
            session_window: 1 << 24,
        }),
    );
    let later = now + Duration::from_secs(31);
    client.handle_timeout(later);
    let d = drain(&mut client, later);
    assert!(
        matches!(d.frames_to(SERVER)[..], [Frame::Resume(_)]),
        "{d:?}"
    );
    let d = packet(&mut client, later, SERVER, stale);
    assert!(d.sent.is_empty() && d.events.is_empty(), "{d:?}");
    assert!(client.session_stats(SERVER).is_some_and(|s| s.suspended));
}

/// A server with ALICE's session established, UDP forwarding negotiated, and ALICE
/// allowed UDP to 127.0.0.1:53.
fn server_with_alice_udp() -> (Endpoint, Instant) {
    let now = t0();
    let mut c = server_config();
    let p = c.server.as_mut().unwrap();
    p.clients[0].targets = TargetRules::new(vec![]).with_udp(vec!["127.0.0.1:53".parse().unwrap()]);
    let mut ep = Endpoint::new(c, [1; 32]).unwrap();
    ep.handle_input(now, Input::PeerOnline(ALICE));
    drain(&mut ep, now);
    let mut h = hello(1);
    h.capabilities = toxtun_proto::Capabilities::DATAGRAM.0;
    let d = packet(&mut ep, now, ALICE, Frame::Hello(h));
    assert!(matches!(&d.frames_to(ALICE)[..], [Frame::HelloAck(a)] if a.capabilities & 16 == 16));
    (ep, now)
}

fn flow_open(flow: u32, target: &str) -> Frame {
    Frame::FlowOpen {
        flow,
        target: target.parse().unwrap(),
    }
}

fn dgram(flow: u32, seq: u32, index: u8, count: u8) -> Frame {
    Frame::LossyDatagram(toxtun_proto::wire::Fragment {
        flow,
        seq,
        index,
        count,
        payload: Bytes::from_static(b"q"),
    })
}

#[test]
fn uopen_is_checked_against_the_udp_rules_and_answered_by_the_application() {
    let (mut ep, now) = server_with_alice_udp();
    // TCP to 127.0.0.1:22 is not UDP to it; 54 is not 53.
    for (flow, to) in [(1, "127.0.0.1:22"), (2, "127.0.0.1:54")] {
        let d = packet(&mut ep, now, ALICE, flow_open(flow, to));
        assert_eq!(
            d.frames_to(ALICE),
            vec![Frame::FlowClose {
                flow,
                code: StreamCode::TargetNotAllowed
            }]
        );
    }
    let d = packet(&mut ep, now, ALICE, flow_open(3, "127.0.0.1:53"));
    assert_eq!(
        d.events,
        vec![Event::FlowRequested {
            peer: ALICE,
            flow: 3,
            target: "127.0.0.1:53".parse().unwrap()
        }]
    );
    assert!(
        d.frames_to(ALICE).is_empty(),
        "nothing until the application answers"
    );
    // A datagram before the answer is dropped, as UDP drops it: no reply, no event.
    let d = packet(&mut ep, now, ALICE, dgram(3, 0, 0, 1));
    assert!(d.events.is_empty() && d.frames_to(ALICE).is_empty());
    ep.answer_flow(ALICE, 3, Ok(())).unwrap();
    let d = drain(&mut ep, now);
    assert_eq!(d.frames_to(ALICE), vec![Frame::FlowOpenOk { flow: 3 }]);
    // The same number again does not disturb the open flow.
    let d = packet(&mut ep, now, ALICE, flow_open(3, "127.0.0.1:53"));
    assert_eq!(
        d.frames_to(ALICE),
        vec![Frame::FlowClose {
            flow: 3,
            code: StreamCode::DuplicateStream
        }]
    );
    let d = packet(&mut ep, now, ALICE, dgram(3, 1, 0, 1));
    assert_eq!(
        d.events,
        vec![Event::Datagram {
            peer: ALICE,
            flow: 3,
            payload: Bytes::from_static(b"q")
        }]
    );
    // A repeat of it is not delivered again; one for a flow nobody opened is dropped.
    for f in [dgram(3, 1, 0, 1), dgram(9, 0, 0, 1)] {
        let d = packet(&mut ep, now, ALICE, f);
        assert!(d.events.is_empty() && d.frames_to(ALICE).is_empty());
    }
    assert_eq!(ep.session_stats(ALICE).unwrap().datagrams_discarded, 3);
    // The client closes it; the application hears.
    let d = packet(
        &mut ep,
        now,
        ALICE,
        Frame::FlowClose {
            flow: 3,
            code: StreamCode::Cancelled,
        },
    );
    assert_eq!(
        d.events,
        vec![Event::FlowClosed {
            peer: ALICE,
            flow: 3,
            code: StreamCode::Cancelled,
            remote: true
        }]
    );
}

#[test]
fn a_malformed_fragment_ends_the_session_and_uopen_to_a_client_is_refused() {
    let (mut ep, now) = server_with_alice_udp();
    let mut bad = dgram(1, 0, 0, 1).to_bytes().to_vec();
    bad[10] = 0; // a fragment count of 0
    ep.handle_input(
        now,
        Input::Packet {
            peer: ALICE,
            packet: Bytes::from(bad),
        },
    );
    let d = drain(&mut ep, now);
    assert!(d.frames_to(ALICE).contains(&Frame::Close {
        code: SessionCode::ProtocolViolation
    }));
    // A client (this endpoint opened the session) opens no flows for its server.
    let mut ep = Endpoint::new(EndpointConfig::new(ALICE), [3; 32]).unwrap();
    ep.connect(now, SERVER);
    ep.handle_input(now, Input::PeerOnline(SERVER));
    let d = drain(&mut ep, now);
    let Some(Frame::Hello(h)) = d.frames_to(SERVER).first().cloned() else {
        panic!("no hello")
    };
    let ack = HelloAck {
        version: 1,
        capabilities: toxtun_proto::Capabilities::DATAGRAM.0,
        session: h.session,
        resumed: false,
        stream_window: 1 << 20,
        session_window: 1 << 24,
    };
    packet(&mut ep, now, SERVER, Frame::HelloAck(ack));
    let d = packet(&mut ep, now, SERVER, flow_open(1, "127.0.0.1:53"));
    assert_eq!(
        d.frames_to(SERVER),
        vec![Frame::FlowClose {
            flow: 1,
            code: StreamCode::NotAccepting
        }]
    );
}
