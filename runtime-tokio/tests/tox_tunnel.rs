//! The tunnel over the real Tox protocol (c-toxcore) with real sockets, loopback only: a
//! bootstrap node started here on 127.0.0.1 (never the public ones), LAN discovery off.
//!
//! One test, in steps, because joining the DHT and befriending costs c-toxcore about 10 s
//! and the steps share that: a 64 MiB download through `forward` checked by SHA-256,
//! 100 concurrent connections through the one tunnel, and refused targets with their codes.

mod common;
use common::body;

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use toxtun_proto::{ClientRule, Endpoint, EndpointConfig, ServerPolicy, TargetRules, Transport};
use toxtun_tokio::{Node, NodeEvent, NodeOptions};
use toxtun_transport_tox::{ToxConfig, ToxOptions, ToxTransport};

/// An HTTP-ish server: reads the request line, answers with `reply`, closes.
async fn http_server(reply: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut req = [0u8; 256];
                let _ = s.read(&mut req).await;
                let _ = s.write_all(&reply).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

/// An echo server: returns what it reads until the client finishes.
async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

async fn stream_end_code(events: &mut tokio::sync::broadcast::Receiver<NodeEvent>) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(NodeEvent::StreamEnd { code, .. }) = events.recv().await {
                return code.map(|c| c.code());
            }
        }
    })
    .await
    .expect("the stream's end is reported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_over_real_tox_downloads_64_mib_serves_100_connections_and_refuses() {
    let reply = body(64 << 20);
    let http = http_server(reply.clone()).await;
    let echo = echo_server().await;
    // A port with nothing listening, allowed by the rules: the target refuses.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let mut opts = ToxOptions::loopback();
    opts.tcp_port = 0;
    let boot = ToxTransport::start(ToxConfig::new(opts, vec![])).expect("bootstrap node");
    let node = boot.as_bootstrap_node("127.0.0.1").expect("UDP bound");
    let peer = || {
        ToxTransport::start(ToxConfig::new(ToxOptions::loopback(), vec![node.clone()]))
            .expect("peer starts")
    };
    let (server_t, client_t) = (peer(), peer());
    let (sid, cid) = (server_t.id(), client_t.id());
    let mut scfg = EndpointConfig::new(sid.public_key);
    scfg.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: cid.public_key,
            targets: TargetRules::new(
                [http, echo, closed]
                    .iter()
                    .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
                    .collect(),
            ),
        }],
        ..Default::default()
    });
    let (server, _) = Node::spawn(
        Endpoint::new(scfg, [2; 32]).unwrap(),
        server_t,
        NodeOptions {
            serve: true,
            ..Default::default()
        },
    );
    let (client, _) = Node::spawn(
        Endpoint::new(EndpointConfig::new(cid.public_key), [1; 32]).unwrap(),
        client_t,
        NodeOptions::default(),
    );
    let start = Instant::now();
    client.connect(sid, b"toxtun/1".to_vec()).await.unwrap();

    // 1. `toxtun forward -L`: a local listener whose connections go through the tunnel.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = l.local_addr().unwrap();
    let fwd = client.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let fwd = fwd.clone();
            tokio::spawn(async move {
                let _ = fwd
                    .forward(
                        sid.public_key,
                        format!("127.0.0.1:{http}").parse().unwrap(),
                        s,
                    )
                    .await;
            });
        }
    });
    let mut c = TcpStream::connect(local).await.unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut got = Vec::with_capacity(reply.len());
    let mut first_byte = None;
    let mut buf = vec![0u8; 256 * 1024];
    let download = tokio::time::timeout(Duration::from_secs(180), async {
        loop {
            let n = c.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            first_byte.get_or_insert_with(Instant::now);
            got.extend_from_slice(&buf[..n]);
        }
    });
    download.await.expect("the download finishes");
    let first_byte = first_byte.expect("bytes arrived") - start;
    let took = start.elapsed() - first_byte;
    assert_eq!(got.len(), reply.len(), "every byte arrived once");
    assert_eq!(
        Sha256::digest(&got),
        Sha256::digest(&reply),
        "byte for byte"
    );
    let stats = client.session_stats(sid.public_key).await.unwrap().unwrap();
    let sstats = server.session_stats(cid.public_key).await.unwrap().unwrap();
    eprintln!("server: {sstats:?}");
    println!(
        "real Tox: first byte after {first_byte:?} (joining the DHT and befriending included), \
         64 MiB in {took:?} ({:.1} MB/s); client session: {stats:?}",
        reply.len() as f64 / 1e6 / took.as_secs_f64()
    );

    // 2. 100 concurrent connections through the one tunnel, each echoed byte-exact.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..100usize {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let data = body(8 * 1024 + i * 97);
            let s = client
                .open(sid.public_key, format!("127.0.0.1:{echo}").parse().unwrap())
                .await
                .unwrap();
            let (mut r, mut w) = tokio::io::split(s);
            let send = data.clone();
            let writer = tokio::spawn(async move {
                w.write_all(&send).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut back = Vec::new();
            r.read_to_end(&mut back).await.unwrap();
            writer.await.unwrap();
            assert!(back == data, "connection {i} came back different");
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("every connection finishes")
            .unwrap();
    }
    println!(
        "real Tox: 100 concurrent echo connections in {:?}",
        t.elapsed()
    );

    // 3. Refusals end the local connection promptly, with the code.
    for (port, code) in [(1u16, 2001u16), (closed, 2002)] {
        let mut events = client.events();
        let mut s = client
            .open(sid.public_key, format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        let mut nothing = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut nothing))
            .await
            .expect("closed promptly")
            .unwrap();
        assert!(nothing.is_empty());
        assert_eq!(stream_end_code(&mut events).await, Some(code));
    }
}
