//! Tunnels over the in-process mock transport with real sockets on loopback.

mod common;
use common::body;

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use toxtun_proto::{
    ClientRule, Endpoint, EndpointConfig, PeerId, ServerPolicy, TargetRules, Transport,
};
use toxtun_tokio::{Node, NodeEvent, NodeOptions};
use toxtun_transport_mock::{Network, NodeId, RealtimeNetwork};

struct Setup {
    net: RealtimeNetwork,
    client_node: NodeId,
    server_node: NodeId,
    client: Node,
    server: Node,
    server_driver: tokio::task::JoinHandle<()>,
    server_pk: PeerId,
    client_pk: PeerId,
    rules: Vec<String>,
}

/// A server process on mock node `s`, admitting `client` to `rules`.
fn spawn_server(
    net: &RealtimeNetwork,
    s: NodeId,
    client: PeerId,
    rules: &[String],
    seed: u8,
) -> (Node, tokio::task::JoinHandle<()>) {
    let ts = net.transport(s);
    let mut scfg = EndpointConfig::new(ts.id().public_key);
    scfg.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: client,
            targets: TargetRules::new(rules.iter().map(|r| r.parse().unwrap()).collect()),
        }],
        ..Default::default()
    });
    Node::spawn(
        Endpoint::new(scfg, [seed; 32]).unwrap(),
        ts,
        NodeOptions {
            serve: true,
            ..Default::default()
        },
    )
}

/// A client and a server node over the mock network; the server allows `rules`.
async fn setup(rules: &[&str]) -> Setup {
    #[allow(clippy::disallowed_methods)]
    let net = RealtimeNetwork::start(Network::new(7, Instant::now()));
    let (c, s) = net.with(|n| (n.add_node(), n.add_node()));
    let tc = net.transport(c);
    let cid = tc.id();
    let sid = net.transport(s).id();
    let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
    let (server, server_driver) = spawn_server(&net, s, cid.public_key, &rules, 2);
    let (client, _) = Node::spawn(
        Endpoint::new(EndpointConfig::new(cid.public_key), [1; 32]).unwrap(),
        tc,
        NodeOptions::default(),
    );
    client.connect(sid, b"toxtun/1".to_vec()).await.unwrap();
    Setup {
        net,
        client_node: c,
        server_node: s,
        client,
        server,
        server_driver,
        server_pk: sid.public_key,
        client_pk: cid.public_key,
        rules,
    }
}

/// A tiny HTTP-ish server: reads the request to its end (the client half-closes), then
/// answers with `reply` and closes.
async fn serve_once(reply: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                // Errors mean the tunnel ended the connection early, which some tests
                // cause on purpose; the client side checks what arrived.
                let _ = s.read_to_end(&mut req).await;
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
                let _ = s.write_all(&reply).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_through_the_tunnel_is_byte_exact_with_half_close() {
    let reply = body(16 << 20);
    let port = serve_once(reply.clone()).await;
    let t = setup(&[&format!("127.0.0.1:{port}")]).await;
    let mut s = t
        .client
        .open(t.server_pk, format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    s.shutdown().await.unwrap(); // half-close: the reply still comes
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut got))
        .await
        .expect("download finished in time")
        .unwrap();
    let mut expected = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
    expected.extend_from_slice(&reply);
    assert_eq!(got.len(), expected.len());
    assert_eq!(Sha256::digest(&got), Sha256::digest(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_connections_are_byte_exact() {
    // An echo server.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                tokio::io::copy(&mut r, &mut w).await.unwrap();
                w.shutdown().await.unwrap();
            });
        }
    });
    let t = setup(&[&format!("127.0.0.1:{port}")]).await;
    let mut tasks = Vec::new();
    for i in 0..100usize {
        let client = t.client.clone();
        let server = t.server_pk;
        tasks.push(tokio::spawn(async move {
            let data = body(1000 + i * 997);
            let s = client
                .open(server, format!("127.0.0.1:{port}").parse().unwrap())
                .await
                .unwrap();
            let (mut r, mut w) = tokio::io::split(s);
            let d = data.clone();
            let writer = tokio::spawn(async move {
                w.write_all(&d).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            assert_eq!(got, data, "connection {i}");
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("all 100 finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_target_closes_the_local_connection_promptly_with_the_code() {
    let t = setup(&["127.0.0.1:1"]).await;
    let mut events = t.client.events();
    // Outside the rules.
    let mut s = t
        .client
        .open(t.server_pk, "127.0.0.1:2".parse().unwrap())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap();
    assert!(buf.is_empty());
    let code = loop {
        match events.recv().await.unwrap() {
            NodeEvent::StreamEnd { code, .. } => break code,
            _ => continue,
        }
    };
    assert_eq!(code.map(|c| c.code()), Some(2001), "target not allowed");
    // Allowed by the rules, but nothing listens there: refused by the target.
    let mut s = t
        .client
        .open(t.server_pk, "127.0.0.1:1".parse().unwrap())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap();
    let code = loop {
        match events.recv().await.unwrap() {
            NodeEvent::StreamEnd { code, .. } => break code,
            _ => continue,
        }
    };
    assert_eq!(code.map(|c| c.code()), Some(2002), "target refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_carries_a_local_tcp_connection() {
    let reply = body(1 << 20);
    let port = serve_once(reply.clone()).await;
    let t = setup(&[&format!("127.0.0.1:{port}")]).await;
    // What `toxtun forward -L` does: accept locally, forward each connection.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = l.local_addr().unwrap();
    let client = t.client.clone();
    let server = t.server_pk;
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        client
            .forward(server, format!("127.0.0.1:{port}").parse().unwrap(), s)
            .await
            .unwrap();
    });
    let mut c = TcpStream::connect(local).await.unwrap();
    c.write_all(b"GET /\r\n\r\n").await.unwrap();
    c.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got[19..], &reply[..]);
}

/// Opens a stream to the target on `port` and sends a request, half-closing.
async fn request(client: &Node, server: PeerId, port: u16) -> toxtun_tokio::TunnelStream {
    let mut s = client
        .open(server, format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    s.write_all(b"GET /\r\n\r\n").await.unwrap();
    s.shutdown().await.unwrap();
    s
}

/// Waits for the first event `want` picks out.
async fn wait_event<T>(
    events: &mut tokio::sync::broadcast::Receiver<NodeEvent>,
    within: Duration,
    mut want: impl FnMut(&NodeEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(within, async {
        loop {
            if let Some(t) = want(&events.recv().await.unwrap()) {
                return t;
            }
        }
    })
    .await
    .expect("the event arrives")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_outage_mid_download_loses_nothing() {
    let reply = body(32 << 20);
    let port = serve_once(reply.clone()).await;
    let t = setup(&[&format!("127.0.0.1:{port}")]).await;
    let mut events = t.client.events();
    let mut s = request(&t.client, t.server_pk, port).await;
    let mut got = vec![0u8; 1 << 20];
    s.read_exact(&mut got).await.unwrap();
    // The Tox link drops in the middle of the download (a NAT rebinding, a relay switch)
    // and returns two seconds later: the local connection just pauses.
    t.net.with(|n| n.link_down(t.client_node, t.server_node));
    wait_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, NodeEvent::SessionSuspended { .. }).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    t.net.with(|n| n.link_up(t.client_node, t.server_node));
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut got))
        .await
        .expect("the download finishes")
        .unwrap();
    let mut want = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
    want.extend_from_slice(&reply);
    assert_eq!(got.len(), want.len(), "every byte arrived, none twice");
    assert_eq!(Sha256::digest(&got), Sha256::digest(&want), "byte for byte");
    let end = wait_event(&mut events, Duration::from_secs(5), |e| match e {
        NodeEvent::StreamEnd { code, .. } => Some(*code),
        NodeEvent::SessionDown { code, .. } => panic!("the session ended: {code}"),
        _ => None,
    })
    .await;
    assert_eq!(end, None, "a clean close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_process_restart_mid_transfer_ends_the_stream_with_a_code_never_a_hang() {
    let reply = body(64 << 20);
    let port = serve_once(reply).await;
    let t = setup(&[&format!("127.0.0.1:{port}")]).await;
    let mut events = t.client.events();
    let mut s = request(&t.client, t.server_pk, port).await;
    let mut first = vec![0u8; 1 << 20];
    s.read_exact(&mut first).await.unwrap();
    // The server process crashes (its link drops, its state is gone) and is started again.
    t.net.with(|n| n.stop(t.server_node));
    // The old process is gone for good before the new one starts on the same identity.
    t.server.shutdown().await;
    drop(t.server);
    tokio::time::timeout(Duration::from_secs(5), t.server_driver)
        .await
        .expect("the old server stops")
        .unwrap();
    let _server = spawn_server(&t.net, t.server_node, t.client_pk, &t.rules, 3);
    t.net.with(|n| n.start(t.server_node));
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the local connection ends promptly instead of hanging")
        .unwrap();
    assert!(rest.len() < 63 << 20, "the download was cut short");
    let (mut stream_code, mut session_code) = (None, None);
    wait_event(&mut events, Duration::from_secs(5), |e| {
        match e {
            NodeEvent::StreamEnd { code, .. } => stream_code = Some(*code),
            NodeEvent::SessionDown { code, .. } => session_code = Some(*code),
            _ => {}
        }
        (stream_code.is_some() && session_code.is_some()).then_some(())
    })
    .await;
    assert_eq!(
        stream_code.flatten().map(|c| c.code()),
        Some(2010),
        "ended because the session ended"
    );
    assert_eq!(
        session_code.map(|c| c.code()),
        Some(1012),
        "the restart was detected at the resume handshake"
    );
    // A new session is up at once, and new streams work.
    let mut s = request(&t.client, t.server_pk, port).await;
    let mut head = [0u8; 17];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.0 200 OK\r\n");
}

/// How many bytes `write` manages to push before it stalls for `quiet`.
async fn written_until_stalled<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    quiet: Duration,
) -> usize {
    let chunk = vec![0x42u8; 64 * 1024];
    let mut total = 0;
    loop {
        match tokio::time::timeout(quiet, w.write(&chunk)).await {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => return total,
        }
        assert!(total < 256 << 20, "256 MiB accepted: nothing pushes back");
    }
}

/// What toxtun itself may hold for one stream (node.rs states the bound: about 1.1 MiB),
/// plus the kernel's socket buffers on the way (Linux autotunes loopback sockets up to
/// about 6 MiB for receiving and 4 MiB for sending, on each socket involved).
const STALL_BOUND: usize = 24 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_never_reads_stops_the_writer_with_bounded_memory() {
    // The target accepts and never reads.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (hold_tx, mut hold_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let _ = hold_tx.send(s).await;
        std::future::pending::<()>().await;
    });
    let t = setup(&[&format!("127.0.0.1:{port}")]).await;
    let mut s = t
        .client
        .open(t.server_pk, format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    let pushed = written_until_stalled(&mut s, Duration::from_secs(2)).await;
    let _target = hold_rx.recv().await;
    println!(
        "a target that never reads: the writer stalled after {} KiB",
        pushed / 1024
    );
    assert!(pushed > 0 && pushed < STALL_BOUND, "{pushed} bytes went in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_stops_the_target_with_bounded_memory() {
    // The target writes as much as it can and reports how far it got.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let pushed = written_until_stalled(&mut s, Duration::from_secs(2)).await;
        let _ = done_tx.send(pushed).await;
        std::future::pending::<()>().await;
    });
    let t = setup(&[&format!("127.0.0.1:{port}")]).await;
    // The client opens the stream and never reads it.
    let _s = t
        .client
        .open(t.server_pk, format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(60), done_rx.recv())
        .await
        .expect("the target's writes stall")
        .unwrap();
    println!(
        "a client that never reads: the target stalled after {} KiB",
        pushed / 1024
    );
    assert!(pushed > 0 && pushed < STALL_BOUND, "{pushed} bytes went in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_download_is_named_as_such_on_both_sides() {
    // A curl reaching its --max-time, a browser tab closed: both sides once logged
    // "connection to the target failed (2011)", though the target was fine.
    let port = serve_once(body(64 << 20)).await;
    let t = setup(&[&format!("127.0.0.1:{port}")]).await;
    let mut client_events = t.client.events();
    let mut server_events = t.server.events();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = l.local_addr().unwrap();
    let client = t.client.clone();
    let server = t.server_pk;
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let _ = client
            .forward(server, format!("127.0.0.1:{port}").parse().unwrap(), s)
            .await;
    });
    let mut c = TcpStream::connect(local).await.unwrap();
    c.write_all(b"GET /\r\n\r\n").await.unwrap();
    c.shutdown().await.unwrap();
    let mut first = vec![0u8; 256 * 1024];
    tokio::time::timeout(Duration::from_secs(30), c.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    // Hang up with unread bytes: the kernel resets the connection.
    drop(c);
    let code = |e: &NodeEvent| match e {
        NodeEvent::StreamEnd { code, .. } => Some(*code),
        _ => None,
    };
    let at_client = wait_event(&mut client_events, Duration::from_secs(30), code).await;
    let at_server = wait_event(&mut server_events, Duration::from_secs(30), code).await;
    assert_eq!(at_client, Some(toxtun_proto::StreamCode::Cancelled));
    assert_eq!(at_server, Some(toxtun_proto::StreamCode::Cancelled));
}

#[tokio::test]
async fn a_pending_stream_hears_the_servers_answer_before_it_gets_its_local_side() {
    // What SOCKS needs: the client is told "granted" or why not before any byte flows.
    let port = serve_once(b"the body".to_vec()).await;
    let allowed = format!("127.0.0.1:{port}");
    let s = setup(&[allowed.as_str()]).await;
    let mut refused = s
        .client
        .open_pending(s.server_pk, "127.0.0.1:9".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        refused.accepted().await,
        Err(toxtun_proto::StreamCode::TargetNotAllowed)
    );
    assert_eq!(
        refused.accepted().await,
        Err(toxtun_proto::StreamCode::TargetNotAllowed),
        "asked again, the same answer"
    );
    let mut ok = s
        .client
        .open_pending(s.server_pk, allowed.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(ok.accepted().await, Ok(()));
    let (mut mine, theirs) = tokio::io::duplex(1024);
    let carry = tokio::spawn(ok.carry(theirs));
    mine.shutdown().await.unwrap();
    let mut got = Vec::new();
    mine.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"HTTP/1.0 200 OK\r\n\r\nthe body");
    carry.await.unwrap();
}

#[tokio::test]
async fn a_node_that_does_not_serve_refuses_streams_and_forgets_them() {
    // A node with a policy but `serve: false` (a library user's) refuses incoming streams
    // with 2014. Its StreamOpen event gets its StreamEnd, and `status` keeps nothing of
    // it: a peer sending OPENs cannot grow the node.
    #[allow(clippy::disallowed_methods)]
    let net = RealtimeNetwork::start(Network::new(9, Instant::now()));
    let (c, s) = net.with(|n| (n.add_node(), n.add_node()));
    let tc = net.transport(c);
    let ts = net.transport(s);
    let cid = tc.id();
    let sid = ts.id();
    let mut scfg = EndpointConfig::new(sid.public_key);
    scfg.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: cid.public_key,
            targets: TargetRules::new(vec!["127.0.0.1:22".parse().unwrap()]),
        }],
        ..Default::default()
    });
    let (server, _) = Node::spawn(
        Endpoint::new(scfg, [2; 32]).unwrap(),
        ts,
        NodeOptions::default(),
    );
    let mut events = server.events();
    let (client, _) = Node::spawn(
        Endpoint::new(EndpointConfig::new(cid.public_key), [1; 32]).unwrap(),
        tc,
        NodeOptions::default(),
    );
    client.connect(sid, b"toxtun/1".to_vec()).await.unwrap();
    let mut pending = client
        .open_pending(sid.public_key, "127.0.0.1:22".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        pending.accepted().await,
        Err(toxtun_proto::StreamCode::NotAccepting)
    );
    let (mut opened, mut ended) = (false, false);
    while !ended {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Ok(NodeEvent::StreamOpen { incoming: true, .. })) => opened = true,
            Ok(Ok(NodeEvent::StreamEnd {
                code: Some(toxtun_proto::StreamCode::NotAccepting),
                ..
            })) => ended = true,
            Ok(Ok(_)) => {}
            other => panic!("no StreamEnd for the refused stream: {other:?}"),
        }
    }
    assert!(opened);
    let status = server.status().await.unwrap();
    assert!(
        status.peers.iter().all(|p| p.streams.is_empty()),
        "{status:?}"
    );
}
