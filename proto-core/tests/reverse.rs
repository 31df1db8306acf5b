//! Reverse forwarding (`forward -R`) between two endpoints over the in-memory pair: the
//! client asks the server to listen, the server opens streams toward the client for the
//! connections it accepts, and neither side can make the other do more than it allowed.

use std::time::Duration;

use bytes::Bytes;
use toxtun_proto::pair::{End, Pair};
use toxtun_proto::wire::Frame;
use toxtun_proto::{
    ClientRule, EndpointConfig, Event, ListenRules, OpenError, PeerId, ServerPolicy, StreamCode,
    StreamId, Target, TargetRules,
};

const CLIENT: PeerId = PeerId([0xC1; 32]);
const SERVER: PeerId = PeerId([0x5E; 32]);
const STEPS: usize = 2_000_000;

fn target(s: &str) -> Target {
    s.parse().unwrap()
}

fn rules(patterns: &[&str]) -> TargetRules {
    TargetRules::new(patterns.iter().map(|p| p.parse().unwrap()).collect())
}

/// A server admitting the client by key, with `listen` rules; the client connected.
fn connected(listen: &[&str], seed: u64) -> Pair {
    let mut s = EndpointConfig::new(SERVER);
    s.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: CLIENT,
            targets: rules(&[]),
        }],
        listen: ListenRules {
            clients: vec![(CLIENT, rules(listen))],
            ..Default::default()
        },
        ..Default::default()
    });
    let mut p = Pair::new(EndpointConfig::new(CLIENT), s, seed);
    p.establish(STEPS).unwrap();
    p
}

fn listen(p: &mut Pair, bind: &str, to: &str) -> u32 {
    let id =
        p.a.endpoint
            .listen(p.now, SERVER, target(bind), target(to))
            .unwrap();
    p.settle(STEPS).unwrap();
    id
}

fn bytes(seed: u8, len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect()
}

#[test]
fn a_reverse_stream_goes_where_the_client_said_byte_exact_both_ways() {
    let mut p = connected(&["127.0.0.1:8000-8100"], 1);
    listen(&mut p, "127.0.0.1:8080", "127.0.0.1:3000");
    assert!(p.a.app.events.contains(&Event::ListenReady {
        peer: SERVER,
        bind: target("127.0.0.1:8080")
    }));
    let (_, listener, bind) = p.b.app.listen_requests[0].clone();
    assert_eq!(bind, target("127.0.0.1:8080"));
    // The server accepted a connection there: a stream toward the client.
    let s = p.b.endpoint.open_reverse(p.now, CLIENT, listener).unwrap();
    let (up, down) = (bytes(1, 2 << 20), bytes(2, 3 << 20));
    p.b.app.send(s, up.clone(), true);
    p.run_until(STEPS, |p| !p.a.app.incoming.is_empty())
        .unwrap();
    assert_eq!(
        p.a.app.incoming[0],
        (s, target("127.0.0.1:3000")),
        "the client connects its own target, not the server's bind address"
    );
    p.a.app.send(s, down.clone(), true);
    p.run_until(STEPS, |p| {
        p.a.app.ended.contains_key(&s) && p.b.app.ended.contains_key(&s)
    })
    .unwrap();
    assert_eq!(p.a.app.ended[&s], End::Closed);
    assert!(p.a.app.received[&s] == up[..]);
    assert!(p.b.app.received[&s] == down[..]);
}

#[test]
fn a_listener_outside_the_rules_is_refused_with_its_code() {
    let mut p = connected(&["127.0.0.1:8000-8100"], 2);
    listen(&mut p, "0.0.0.0:8080", "127.0.0.1:3000");
    listen(&mut p, "127.0.0.1:22", "127.0.0.1:3000");
    for bind in ["0.0.0.0:8080", "127.0.0.1:22"] {
        assert!(p.a.app.events.contains(&Event::ListenRefused {
            peer: SERVER,
            bind: target(bind),
            code: StreamCode::ListenNotAllowed
        }));
        assert!(p.b.app.events.contains(&Event::ListenDenied {
            peer: CLIENT,
            bind: target(bind),
            code: StreamCode::ListenNotAllowed
        }));
    }
    assert!(
        p.b.app.listen_requests.is_empty(),
        "the server app never saw them"
    );
    // A server with no listen rules at all (the default) allows none.
    let mut p = connected(&[], 3);
    listen(&mut p, "127.0.0.1:8080", "127.0.0.1:3000");
    assert!(p.b.app.listen_requests.is_empty());
}

#[test]
fn the_server_applications_failure_to_listen_reaches_the_client() {
    let mut p = connected(&["*:*"], 4);
    p.b.app.listen_refusal = Some(StreamCode::ListenFailed);
    listen(&mut p, "127.0.0.1:8080", "127.0.0.1:3000");
    assert!(p.a.app.events.contains(&Event::ListenRefused {
        peer: SERVER,
        bind: target("127.0.0.1:8080"),
        code: StreamCode::ListenFailed
    }));
    let (_, listener, _) = p.b.app.listen_requests[0];
    assert_eq!(
        p.b.endpoint.open_reverse(p.now, CLIENT, listener),
        Err(OpenError::NotListening)
    );
}

/// An OPEN as a hostile server would send it (its own endpoint would not: `open_reverse`
/// takes a listener the client asked for, never an address).
fn hostile_open(p: &mut Pair, stream: StreamId, to: &str) {
    let packet = Frame::Open {
        stream,
        target: target(to),
    }
    .to_bytes();
    p.inject_to_a(packet);
}

#[test]
fn a_hostile_server_cannot_make_the_client_connect_anywhere() {
    let mut p = connected(&["*:*"], 5);
    assert_eq!(
        p.b.endpoint.open_reverse(p.now, CLIENT, 1),
        Err(OpenError::NotListening),
        "the server's own API opens only for listeners"
    );
    // Nothing asked for: any OPEN from the server is refused.
    let rogue = StreamId::from_bytes([7; 16]);
    hostile_open(&mut p, rogue, "127.0.0.1:22");
    p.settle(STEPS).unwrap_or_default();
    assert!(p.a.app.incoming.is_empty());
    assert!(p.a.app.events.iter().any(|e| matches!(
        e,
        Event::StreamDenied { stream, code: StreamCode::NotAccepting, .. } if *stream == rogue
    )));
    // With a listener on 127.0.0.1:8080 → 127.0.0.1:3000, an OPEN naming the destination
    // (or any other address) is refused; only the bind address maps, to the client's own
    // destination.
    listen(&mut p, "127.0.0.1:8080", "127.0.0.1:3000");
    let other = StreamId::from_bytes([8; 16]);
    hostile_open(&mut p, other, "127.0.0.1:3000");
    p.settle(STEPS).unwrap_or_default();
    assert!(p.a.app.incoming.is_empty(), "{:?}", p.a.app.incoming);
}

#[test]
fn listeners_are_asked_for_again_after_a_new_session_and_kept_across_a_resume() {
    let mut p = connected(&["*:*"], 6);
    listen(&mut p, "127.0.0.1:8080", "127.0.0.1:3000");
    assert_eq!(p.b.app.listen_requests.len(), 1);
    // A link flap within the grace: the session resumes, the listener stays.
    p.link_down();
    p.advance(Duration::from_secs(2), STEPS).unwrap();
    p.link_up();
    p.advance(Duration::from_secs(2), STEPS).unwrap();
    assert_eq!(
        p.b.app.listen_requests.len(),
        1,
        "no new request on a resume"
    );
    let (_, listener, _) = p.b.app.listen_requests[0];
    assert!(p.b.endpoint.open_reverse(p.now, CLIENT, listener).is_ok());
    // The server restarts: a new session, and the client asks again.
    p.restart_b(66);
    p.advance(Duration::from_secs(30), STEPS).unwrap();
    assert!(p.b.endpoint.is_established(CLIENT));
    assert_eq!(
        p.b.app.listen_requests.len(),
        2,
        "the restarted server was asked afresh"
    );
    let ready =
        p.a.app
            .events
            .iter()
            .filter(|e| matches!(e, Event::ListenReady { .. }))
            .count();
    assert_eq!(ready, 2);
}

#[test]
fn the_client_gives_a_listener_up_and_the_server_stops_listening() {
    let mut p = connected(&["*:*"], 7);
    let id = listen(&mut p, "127.0.0.1:8080", "127.0.0.1:3000");
    let (_, listener, _) = p.b.app.listen_requests[0];
    assert!(p.a.endpoint.unlisten(SERVER, id));
    p.settle(STEPS).unwrap();
    assert!(p.b.app.events.contains(&Event::ListenClosed {
        peer: CLIENT,
        listener,
        code: StreamCode::Cancelled
    }));
    assert_eq!(
        p.b.endpoint.open_reverse(p.now, CLIENT, listener),
        Err(OpenError::NotListening)
    );
}

#[test]
fn a_server_without_reverse_forwarding_refuses_at_once_not_a_hang() {
    let mut s = EndpointConfig::new(SERVER);
    s.reverse = false;
    s.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: CLIENT,
            targets: rules(&[]),
        }],
        ..Default::default()
    });
    let mut p = Pair::new(EndpointConfig::new(CLIENT), s, 8);
    // Asked for before the session is up: refused once it is.
    p.a.endpoint
        .listen(
            p.now,
            SERVER,
            target("127.0.0.1:8080"),
            target("127.0.0.1:3000"),
        )
        .unwrap();
    p.link_up();
    p.settle(STEPS).unwrap();
    assert!(p.a.endpoint.is_established(SERVER));
    assert!(p.a.app.events.contains(&Event::ListenRefused {
        peer: SERVER,
        bind: target("127.0.0.1:8080"),
        code: StreamCode::ReverseUnsupported
    }));
}

#[test]
fn a_reload_that_narrows_the_listen_rules_closes_the_listeners_they_no_longer_allow() {
    let mut p = connected(&["127.0.0.1:8080", "127.0.0.1:9090"], 9);
    listen(&mut p, "127.0.0.1:8080", "127.0.0.1:3000");
    listen(&mut p, "127.0.0.1:9090", "127.0.0.1:4000");
    let narrowed = ServerPolicy {
        clients: vec![ClientRule {
            peer: CLIENT,
            targets: rules(&[]),
        }],
        listen: ListenRules {
            clients: vec![(CLIENT, rules(&["127.0.0.1:9090"]))],
            ..Default::default()
        },
        ..Default::default()
    };
    let done = p.b.endpoint.set_server_policy(narrowed);
    let (_, closed, _) = p.b.app.listen_requests[0].clone();
    assert_eq!(
        done.listeners_closed,
        [(CLIENT, closed, target("127.0.0.1:8080"))]
    );
    p.settle(STEPS).unwrap();
    assert!(p.b.app.events.contains(&Event::ListenClosed {
        peer: CLIENT,
        listener: closed,
        code: StreamCode::ListenNotAllowed
    }));
    assert!(p.a.app.events.contains(&Event::ListenRefused {
        peer: SERVER,
        bind: target("127.0.0.1:8080"),
        code: StreamCode::ListenNotAllowed
    }));
    let (_, kept, _) = p.b.app.listen_requests[1];
    assert!(p.b.endpoint.open_reverse(p.now, CLIENT, kept).is_ok());
}

#[test]
fn a_listener_asked_for_while_the_session_is_suspended_is_asked_on_resume() {
    let mut p = connected(&["127.0.0.1:8000-8100"], 40);
    p.link_down();
    p.settle(STEPS).unwrap();
    p.a.endpoint
        .listen(
            p.now,
            SERVER,
            target("127.0.0.1:8080"),
            target("127.0.0.1:3000"),
        )
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
    assert!(p.a.app.events.contains(&Event::ListenReady {
        peer: SERVER,
        bind: target("127.0.0.1:8080")
    }));
}
