//! `toxtun demo`: a bootstrap node, a server and a client on loopback over the real Tox
//! protocol, and a download through the tunnel checked byte for byte.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use toxtun_proto::{ClientRule, Endpoint, EndpointConfig, ServerPolicy, TargetRules, ToxId};
use toxtun_tokio::{Node, NodeOptions};
use toxtun_transport_tox::{BootstrapNode, ToxConfig, ToxOptions, ToxTransport};

use super::seed;
use crate::report::report;
use crate::Fail;

/// Everything on loopback, over the real Tox protocol: our own bootstrap node (LAN
/// discovery off, never the public list), a server that allows one client one target, a
/// client that downloads through the tunnel.
pub(crate) async fn run(mib: usize, json: bool) -> Result<(), Fail> {
    let t0 = Instant::now();
    println!("toxtun demo: a real tunnel over the Tox protocol, on loopback only");
    let boot = ToxTransport::start(ToxConfig::new(ToxOptions::loopback(), vec![]))?;
    let node = boot
        .as_bootstrap_node("127.0.0.1")
        .ok_or_else(|| Fail("the bootstrap node has no UDP port".into()))?;
    println!("  bootstrap node  {node}");
    let (http_port, expected) = serve_body(mib).await?;
    println!("  target          http://127.0.0.1:{http_port}/ ({mib} MiB)");
    let target = format!("127.0.0.1:{http_port}");
    let (server, sid, client, cid) = start_nodes(node, &target)?;
    if json {
        report(&client, true, true);
    }
    println!("  server          {sid}");
    println!("  client          {cid}");
    println!("joining the Tox network and befriending the server (c-toxcore needs about 10 s)…");
    let (body, took) = download(&client, sid, &target).await?;
    let ok = <[u8; 32]>::from(Sha256::digest(&body)) == expected;
    println!(
        "downloaded {} bytes in {:.2} s = {:.1} MB/s; SHA-256 {}",
        body.len(),
        took.as_secs_f64(),
        body.len() as f64 / 1e6 / took.as_secs_f64(),
        if ok { "matches" } else { "DIFFERS" }
    );
    print_fast_path(&client, &server, sid, cid).await;
    client.shutdown().await;
    server.shutdown().await;
    drop(boot);
    println!("demo finished in {:.1} s", t0.elapsed().as_secs_f64());
    if ok {
        Ok(())
    } else {
        Err(Fail(
            "the download differs from what the server sent".into(),
        ))
    }
}

/// The target: an HTTP-ish server on loopback with `mib` MiB to download. Returns its port
/// and the body's SHA-256.
async fn serve_body(mib: usize) -> Result<(u16, [u8; 32]), Fail> {
    let body: Vec<u8> = (0..mib << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let expected: [u8; 32] = Sha256::digest(&body).into();
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let http_port = http.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = http.accept().await {
            let served = body.clone();
            tokio::spawn(async move {
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req).await;
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                    served.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&served).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok((http_port, expected))
}

/// A server that lets one client reach `target`, and that client, both bootstrapping
/// from `node`.
fn start_nodes(node: BootstrapNode, target: &str) -> Result<(Node, ToxId, Node, ToxId), Fail> {
    let opts = ToxOptions::loopback();
    let server_t = ToxTransport::start(ToxConfig::new(opts.clone(), vec![node.clone()]))?;
    let client_t = ToxTransport::start(ToxConfig::new(opts, vec![node]))?;
    let (sid, cid) = (
        toxtun_proto::Transport::id(&server_t),
        toxtun_proto::Transport::id(&client_t),
    );
    let mut scfg = EndpointConfig::new(sid.public_key);
    scfg.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: cid.public_key,
            targets: TargetRules::new(vec![target.parse()?]),
        }],
        ..Default::default()
    });
    let (server, _) = Node::spawn(
        Endpoint::new(scfg, seed())?,
        server_t,
        NodeOptions {
            serve: true,
            ..Default::default()
        },
    );
    let (client, _) = Node::spawn(
        Endpoint::new(EndpointConfig::new(cid.public_key), seed())?,
        client_t,
        NodeOptions::default(),
    );
    Ok((server, sid, client, cid))
}

/// Connects to the server, GETs the body through the tunnel and returns it (without the
/// HTTP header) with the time it took after its first byte.
async fn download(client: &Node, sid: ToxId, target: &str) -> Result<(Vec<u8>, Duration), Fail> {
    let start = Instant::now();
    client.connect(sid, b"toxtun/1 demo".to_vec()).await?;
    let waiting = tokio::spawn(async move {
        let mut n = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            n += 3;
            println!("  … {n} s");
        }
    });
    let mut s = client.open(sid.public_key, target.parse()?).await?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut first = [0u8; 1];
    let answered = tokio::time::timeout(Duration::from_secs(120), s.read_exact(&mut first)).await;
    waiting.abort();
    answered.map_err(|_| Fail("no answer through the tunnel in 120 s".into()))??;
    println!(
        "tunnel up: first byte {:.1} s after the client started",
        start.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut got = first.to_vec();
    s.read_to_end(&mut got).await?;
    let took = t.elapsed();
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .ok_or_else(|| Fail("no HTTP header came back".into()))?;
    got.drain(..head_end);
    Ok((got, took))
}

/// Says whether the download took the fast path, and at what round trip.
async fn print_fast_path(client: &Node, server: &Node, sid: ToxId, cid: ToxId) {
    let received = client
        .session_stats(sid.public_key)
        .await
        .ok()
        .flatten()
        .map_or(0, |st| st.lossy_packets_received);
    if received == 0 {
        println!(
            "the fast path was not used: streams went in c-toxcore's lossless packets, which \
             start slow and grow about 1.6x per second; see BENCHMARKS.md"
        );
        return;
    }
    let rtt = server
        .session_stats(cid.public_key)
        .await
        .ok()
        .flatten()
        .and_then(|s| s.rtt)
        .map_or("unmeasured".to_string(), |r| {
            format!("{:.1} ms", r.as_secs_f64() * 1e3)
        });
    println!(
        "fast path: {received} lossy packets with toxtun's own congestion control, round trip \
         {rtt}; c-toxcore's lossless packets would have started at ≈ 5 MB/s (see BENCHMARKS.md)"
    );
}
