//! A serving node's policy reloaded under load (`Node::reload`, what SIGHUP and
//! `toxtun reload` do), over the in-process mock network with real sockets on loopback:
//! a client added, one removed and one rule narrowed, while a download runs that must come
//! through byte for byte on its unbroken session.

mod common;
use common::body;

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use toxtun_proto::{
    ClientRule, Endpoint, EndpointConfig, PeerId, ServerPolicy, SessionCode, StreamCode, StreamId,
    TargetRules, ToxId, Transport,
};
use toxtun_tokio::{Node, NodeEvent, NodeOptions};
use toxtun_transport_mock::{Network, RealtimeNetwork};

/// A server that sends `reply` to each connection and closes it.
async fn sender(reply: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let _ = s.write_all(&reply).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

fn rule(peer: PeerId, ports: &[u16]) -> ClientRule {
    let allow = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
        .collect();
    ClientRule {
        peer,
        targets: TargetRules::new(allow),
    }
}

fn policy(clients: Vec<ClientRule>) -> ServerPolicy {
    ServerPolicy {
        clients,
        ..Default::default()
    }
}

/// Waits for the first event `f` picks.
async fn until<T>(
    rx: &mut broadcast::Receiver<NodeEvent>,
    f: impl Fn(&NodeEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(t) = f(&rx.recv().await.unwrap()) {
                return t;
            }
        }
    })
    .await
    .expect("the event came in time")
}

fn stream_end(id: StreamId) -> impl Fn(&NodeEvent) -> Option<Option<StreamCode>> {
    move |e| match e {
        NodeEvent::StreamEnd { stream, code } if *stream == id => Some(*code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_removes_and_narrows_and_leaves_the_rest_byte_exact() {
    let big = body(24 << 20);
    let (kept_port, narrowed_port) = (sender(big.clone()).await, sender(body(1 << 20)).await);
    #[allow(clippy::disallowed_methods)]
    let net = RealtimeNetwork::start(Network::new(11, Instant::now()));
    let (sn, an, bn, cn) = net.with(|n| (n.add_node(), n.add_node(), n.add_node(), n.add_node()));
    let ids: Vec<ToxId> = [sn, an, bn, cn]
        .iter()
        .map(|n| net.transport(*n).id())
        .collect();
    let (sid, a, b, c) = (
        ids[0],
        ids[1].public_key,
        ids[2].public_key,
        ids[3].public_key,
    );
    let mut scfg = EndpointConfig::new(sid.public_key);
    scfg.server = Some(policy(vec![
        rule(a, &[kept_port, narrowed_port]),
        rule(b, &[kept_port]),
    ]));
    let (server, _) = Node::spawn(
        Endpoint::new(scfg, [1; 32]).unwrap(),
        net.transport(sn),
        NodeOptions {
            serve: true,
            ..Default::default()
        },
    );
    let client = |node, seed: u8| {
        let t = net.transport(node);
        let pk = t.id().public_key;
        Node::spawn(
            Endpoint::new(EndpointConfig::new(pk), [seed; 32]).unwrap(),
            t,
            NodeOptions::default(),
        )
        .0
    };
    let (ca, cb, cc) = (client(an, 2), client(bn, 3), client(cn, 4));
    for n in [&ca, &cb, &cc] {
        n.connect(sid, b"toxtun/1".to_vec()).await.unwrap();
    }
    let target = |p: u16| format!("127.0.0.1:{p}").parse().unwrap();
    // A's download, part read when the reload comes; A's stream to the port to be
    // narrowed; B's stream.
    let mut s_events = server.events();
    let mut download = ca.open(sid.public_key, target(kept_port)).await.unwrap();
    let mut first = vec![0u8; 1 << 20];
    download.read_exact(&mut first).await.unwrap();
    let narrowed = ca
        .open(sid.public_key, target(narrowed_port))
        .await
        .unwrap();
    let b_stream = cb.open(sid.public_key, target(kept_port)).await.unwrap();
    let (mut a_events, mut b_events) = (ca.events(), cb.events());
    // The server has all three streams open.
    let mut open: Vec<StreamId> = vec![download.id(), narrowed.id(), b_stream.id()];
    while !open.is_empty() {
        let id = until(&mut s_events, |e| match e {
            NodeEvent::StreamOpen { stream, .. } => Some(*stream),
            _ => None,
        })
        .await;
        open.retain(|s| *s != id);
    }
    // C is not admitted yet: its stream is refused.
    let early = cc.open(sid.public_key, target(kept_port)).await;
    drop(early);

    let report = server
        .reload(policy(vec![rule(a, &[kept_port]), rule(c, &[kept_port])]))
        .await
        .unwrap();
    assert_eq!(report.clients_added, [c.to_string()]);
    assert_eq!(report.clients_removed, [b.to_string()]);
    assert_eq!(report.rules_changed, [a.to_string()]);
    assert_eq!(report.sessions_revoked, [b.to_string()]);
    assert_eq!(report.unfriended, [b.to_string()]);
    assert_eq!(report.streams_reset.len(), 1);
    assert_eq!(report.streams_reset[0].stream, narrowed.id().to_string());

    // The narrowed stream ends with 2001 on both sides; B's session with 1014.
    assert_eq!(
        until(&mut a_events, stream_end(narrowed.id())).await,
        Some(StreamCode::TargetNotAllowed)
    );
    assert_eq!(
        until(&mut s_events, stream_end(narrowed.id())).await,
        Some(StreamCode::TargetNotAllowed)
    );
    let b_down = until(&mut b_events, |e| match e {
        NodeEvent::SessionDown { code, remote, .. } => Some((*code, *remote)),
        _ => None,
    })
    .await;
    assert_eq!(b_down, (SessionCode::Revoked, true));
    drop(b_stream);

    // A's download goes on, on the same session, byte for byte.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), download.read_to_end(&mut rest))
        .await
        .expect("the download finished")
        .unwrap();
    first.extend_from_slice(&rest);
    assert_eq!(Sha256::digest(&first), Sha256::digest(&big));
    let a_stats = server.session_stats(a).await.unwrap().unwrap();
    assert!(a_stats.established);

    // C, added, gets in; B, removed, stays out.
    let mut c_down = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(s) = cc.open(sid.public_key, target(kept_port)).await {
                let mut got = Vec::new();
                if s.take(1 << 20).read_to_end(&mut got).await.is_ok() && got.len() == 1 << 20 {
                    return got;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the added client reached its target");
    c_down.truncate(16);
    assert_eq!(c_down, big[..16]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = server.status().await.unwrap();
    let b_key = b.to_string();
    assert!(
        status
            .peers
            .iter()
            .all(|p| p.key != b_key || p.session.is_none()),
        "B has no session: {status:?}"
    );
    let mut b_again = cb.open(sid.public_key, target(kept_port)).await.unwrap();
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), b_again.read(&mut buf)).await;
    assert!(!matches!(r, Ok(Ok(1))), "the removed client reads nothing");
}
