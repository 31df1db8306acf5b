//! A server's policy replaced while streams run (`Endpoint::set_server_policy`, what a
//! configuration reload does): narrowed rules reset exactly the streams they no longer
//! allow, removed clients and changed secrets end their sessions with `Revoked`, and every
//! other stream finishes byte for byte.

use bytes::Bytes;
use toxtun_proto::pair::{End, Pair};
use toxtun_proto::{
    ClientRule, EndpointConfig, Event, Limits, PeerId, PolicyChanges, Reconfigured, SecretChange,
    ServerPolicy, SessionCode, SharedSecret, StreamCode, StreamId, Target, TargetRules,
};

const CLIENT: PeerId = PeerId([0xC1; 32]);
const OTHER: PeerId = PeerId([0x0C; 32]);
const SERVER: PeerId = PeerId([0x5E; 32]);
const STEPS: usize = 2_000_000;

fn rules(patterns: &[&str]) -> TargetRules {
    TargetRules::new(patterns.iter().map(|p| p.parse().unwrap()).collect())
}

fn keyed(peer: PeerId, patterns: &[&str]) -> ClientRule {
    ClientRule {
        peer,
        targets: rules(patterns),
    }
}

fn policy(clients: Vec<ClientRule>) -> ServerPolicy {
    ServerPolicy {
        clients,
        ..Default::default()
    }
}

fn secret(s: &str) -> SharedSecret {
    SharedSecret::new(s).unwrap()
}

fn connected(client: EndpointConfig, server: ServerPolicy, seed: u64) -> Pair {
    let mut s = EndpointConfig::new(SERVER);
    s.server = Some(server);
    let mut p = Pair::new(client, s, seed);
    p.establish(STEPS).unwrap();
    p
}

fn open(p: &mut Pair, target: &str) -> StreamId {
    let t: Target = target.parse().unwrap();
    p.a.endpoint.open(p.now, SERVER, t).unwrap()
}

fn bytes(seed: u8, len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn narrowed_rules_reset_only_the_streams_they_no_longer_allow() {
    let mut p = connected(
        EndpointConfig::new(CLIENT),
        policy(vec![keyed(CLIENT, &["127.0.0.1:22", "127.0.0.1:80"])]),
        1,
    );
    let (ssh, web) = (open(&mut p, "127.0.0.1:22"), open(&mut p, "127.0.0.1:80"));
    p.run_until(STEPS, |p| p.b.app.incoming.len() == 2).unwrap();
    // Both mid-transfer when the reload comes.
    let (up_ssh, up_web) = (bytes(1, 3 << 20), bytes(2, 3 << 20));
    p.a.app.send(ssh, up_ssh.clone(), true);
    p.a.app.send(web, up_web, true);
    p.run_until(STEPS, |p| {
        p.b.app.received_len.get(&ssh).is_some_and(|n| *n > 0)
    })
    .unwrap();

    let done =
        p.b.endpoint
            .set_server_policy(policy(vec![keyed(CLIENT, &["127.0.0.1:22"])]));
    assert_eq!(
        done,
        Reconfigured {
            revoked: vec![],
            reset: vec![(CLIENT, web, "127.0.0.1:80".parse().unwrap())],
            listeners_closed: vec![],
            flows_closed: vec![],
        }
    );
    p.run_until(STEPS, |p| p.b.app.eof.contains(&ssh)).unwrap();
    assert_eq!(
        p.a.app.ended[&web],
        End::Reset(StreamCode::TargetNotAllowed)
    );
    assert!(p.b.app.events.contains(&Event::StreamReset {
        stream: web,
        code: StreamCode::TargetNotAllowed,
        remote: false
    }));
    // The allowed stream went on, byte for byte, on the same session.
    assert!(p.b.app.eof.contains(&ssh));
    assert!(p.b.app.received[&ssh] == up_ssh[..]);
    assert!(p.a.endpoint.is_established(SERVER));
    // A new stream to the removed target is refused; to the kept one, opened.
    let (again, kept) = (open(&mut p, "127.0.0.1:80"), open(&mut p, "127.0.0.1:22"));
    p.settle(STEPS).unwrap();
    assert_eq!(
        p.a.app.ended[&again],
        End::Refused(StreamCode::TargetNotAllowed)
    );
    assert!(p.a.app.opened.contains(&kept));
}

#[test]
fn a_removed_client_is_revoked_and_the_others_are_untouched() {
    let mut p = connected(
        EndpointConfig::new(CLIENT),
        policy(vec![keyed(CLIENT, &["*:*"]), keyed(OTHER, &["*:*"])]),
        2,
    );
    let s = open(&mut p, "127.0.0.1:1");
    p.settle(STEPS).unwrap();
    let done =
        p.b.endpoint
            .set_server_policy(policy(vec![keyed(OTHER, &["*:*"])]));
    assert_eq!(done.revoked, vec![CLIENT]);
    p.settle(STEPS).unwrap();
    assert!(p.a.app.events.contains(&Event::SessionClosed {
        peer: SERVER,
        code: SessionCode::Revoked,
        remote: true
    }));
    assert_eq!(p.a.app.ended[&s], End::Reset(StreamCode::SessionClosed));
    assert!(
        p.b.endpoint.peers().next().is_none(),
        "the server forgot it"
    );
    // The client tries again, as after any CLOSE, and is refused as a stranger.
    p.advance(std::time::Duration::from_secs(30), STEPS)
        .unwrap();
    assert!(p.a.app.events.contains(&Event::SessionClosed {
        peer: SERVER,
        code: SessionCode::Unauthorized,
        remote: true
    }));
}

#[test]
fn a_changed_secret_revokes_its_clients_and_the_same_secret_keeps_them() {
    let mut c = EndpointConfig::new(CLIENT);
    c.client_secret = Some(secret("the first shared secret"));
    let by_secret = |s: &str, allow: &[&str]| ServerPolicy {
        secret: Some((secret(s), rules(allow))),
        ..Default::default()
    };
    let mut p = connected(c, by_secret("the first shared secret", &["*:*"]), 3);
    // Same secret, narrower rules: kept, and the rules apply.
    let s22 = open(&mut p, "127.0.0.1:22");
    p.settle(STEPS).unwrap();
    let done =
        p.b.endpoint
            .set_server_policy(by_secret("the first shared secret", &["127.0.0.1:22"]));
    assert_eq!(done, Reconfigured::default());
    // Now listed by key too: admitted by key, with the key's rules.
    let done = p.b.endpoint.set_server_policy(ServerPolicy {
        clients: vec![keyed(CLIENT, &["127.0.0.1:23"])],
        secret: Some((secret("the first shared secret"), rules(&["127.0.0.1:22"]))),
        ..Default::default()
    });
    assert_eq!(done.reset.len(), 1, "22 is not in the key's rules");
    assert_eq!(done.reset[0].1, s22);
    // The key removed again: its HELLO proved no secret, so it is revoked, and its
    // retry, which does, is admitted by the secret again.
    let done =
        p.b.endpoint
            .set_server_policy(by_secret("the first shared secret", &["*:*"]));
    assert_eq!(done.revoked, vec![CLIENT]);
    p.advance(std::time::Duration::from_secs(30), STEPS)
        .unwrap();
    assert!(p.b.endpoint.is_established(CLIENT), "back in by the secret");
    // Another secret: revoked, and kept out.
    let done =
        p.b.endpoint
            .set_server_policy(by_secret("another shared secret", &["*:*"]));
    assert_eq!(done.revoked, vec![CLIENT]);
    p.advance(std::time::Duration::from_secs(30), STEPS)
        .unwrap();
    let closed: Vec<SessionCode> =
        p.a.app
            .events
            .iter()
            .filter_map(|e| match e {
                Event::SessionClosed { code, .. } => Some(*code),
                _ => None,
            })
            .collect();
    assert_eq!(
        closed,
        [
            SessionCode::Revoked,
            SessionCode::Revoked,
            SessionCode::BadSecret
        ]
    );
}

#[test]
fn lowered_limits_apply_to_new_streams_and_keep_the_open_ones() {
    let mut p = connected(
        EndpointConfig::new(CLIENT),
        policy(vec![keyed(CLIENT, &["*:*"])]),
        4,
    );
    let first = open(&mut p, "127.0.0.1:1");
    let second = open(&mut p, "127.0.0.1:2");
    p.settle(STEPS).unwrap();
    let mut narrow = policy(vec![keyed(CLIENT, &["*:*"])]);
    narrow.limits = Limits {
        max_streams_per_peer: 1,
        ..Limits::default()
    };
    assert_eq!(
        p.b.endpoint.set_server_policy(narrow),
        Reconfigured::default()
    );
    let third = open(&mut p, "127.0.0.1:3");
    p.settle(STEPS).unwrap();
    assert!(p.a.app.opened.contains(&first) && p.a.app.opened.contains(&second));
    assert!(!p.a.app.ended.contains_key(&first));
    assert_eq!(
        p.a.app.ended[&third],
        End::Refused(StreamCode::TooManyStreams)
    );
}

#[test]
fn changes_name_what_a_reload_does() {
    let old = ServerPolicy {
        clients: vec![keyed(CLIENT, &["*:22"]), keyed(OTHER, &["*:80"])],
        secret: Some((secret("the first shared secret"), rules(&["*:22"]))),
        ..Default::default()
    };
    assert!(old.changes(&old.clone()).is_empty());
    let new = ServerPolicy {
        clients: vec![keyed(OTHER, &["*:81"]), keyed(PeerId([7; 32]), &[])],
        secret: Some((secret("the first shared secret"), rules(&["*:23"]))),
        limits: Limits {
            max_peers: 3,
            ..Limits::default()
        },
        ..Default::default()
    };
    assert_eq!(
        old.changes(&new),
        PolicyChanges {
            added: vec![PeerId([7; 32])],
            removed: vec![CLIENT],
            rules_changed: vec![OTHER],
            secret: SecretChange::RulesChanged,
            limits_changed: true,
            listen_changed: false,
        }
    );
    let gone = ServerPolicy::default();
    assert_eq!(old.changes(&gone).secret, SecretChange::Removed);
    assert_eq!(gone.changes(&old).secret, SecretChange::Added);
    let mut other = old.clone();
    other.secret = Some((secret("another shared secret"), rules(&["*:22"])));
    assert_eq!(old.changes(&other).secret, SecretChange::Changed);
}
