//! The tunnel over the in-process mock transport (no latency) against a plain loopback TCP
//! relay (a minimal tokio copy relay) measured in the same run: bulk throughput and 1-byte
//! round-trip latency. Loopback only. `cargo bench -p toxtun-tokio --bench tunnel`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use toxtun_proto::{ClientRule, Endpoint, EndpointConfig, ServerPolicy, TargetRules, Transport};
use toxtun_tokio::{Node, NodeOptions};
use toxtun_transport_mock::{LinkConfig, Network, RealtimeNetwork};

const BULK: usize = 256 << 20;
const PINGS: usize = 2000;

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// A sink that reads everything, and an echo for pings, on one listener:
/// first byte 'B' = bulk sink (replies with the count), 'P' = echo.
async fn target() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut kind = [0u8; 1];
                s.read_exact(&mut kind).await.unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                if kind[0] == b'B' {
                    let mut n = 0u64;
                    loop {
                        let k = s.read(&mut buf).await.unwrap();
                        if k == 0 {
                            break;
                        }
                        n += k as u64;
                    }
                    s.write_all(&n.to_le_bytes()).await.unwrap();
                } else {
                    loop {
                        let k = s.read(&mut buf).await.unwrap();
                        if k == 0 {
                            break;
                        }
                        s.write_all(&buf[..k]).await.unwrap();
                    }
                }
            });
        }
    });
    a
}

async fn plain_relay(to: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut c, _) = l.accept().await.unwrap();
            let _ = c.set_nodelay(true);
            tokio::spawn(async move {
                let mut t = TcpStream::connect(to).await.unwrap();
                let _ = t.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut c, &mut t).await;
            });
        }
    });
    a
}

async fn tunnel_relay(to: SocketAddr) -> (SocketAddr, RealtimeNetwork, Node) {
    let net = RealtimeNetwork::start(Network::new(1, now()));
    let (c, s) = net.with(|n| {
        n.set_default_link(LinkConfig {
            latency: Duration::ZERO,
            queue_capacity: 1024,
            connect_delay: Duration::from_millis(1),
            ..Default::default()
        });
        (n.add_node(), n.add_node())
    });
    let (tc, ts) = (net.transport(c), net.transport(s));
    let (cid, sid) = (tc.id(), ts.id());
    let mut scfg = EndpointConfig::new(sid.public_key);
    scfg.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: cid.public_key,
            targets: TargetRules::new(vec![to.to_string().parse().unwrap()]),
        }],
        ..Default::default()
    });
    let (_server, _) = Node::spawn(
        Endpoint::new(scfg, [2; 32]).unwrap(),
        ts,
        NodeOptions {
            serve: true,
            ..Default::default()
        },
    );
    let (client, _) = Node::spawn(
        Endpoint::new(EndpointConfig::new(cid.public_key), [1; 32]).unwrap(),
        tc,
        NodeOptions::default(),
    );
    client.connect(sid, b"toxtun/1".to_vec()).await.unwrap();
    for (who, n) in [("client", client.clone()), ("server", _server.clone())] {
        let mut ev = n.events();
        tokio::spawn(async move {
            while let Ok(e) = ev.recv().await {
                if std::env::var("TUNNEL_DEBUG").is_ok() {
                    eprintln!("{who}: {e:?}");
                }
            }
        });
    }
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let target = to.to_string().parse::<toxtun_proto::Target>().unwrap();
    tokio::spawn(async move {
        loop {
            let (c, _) = l.accept().await.unwrap();
            let _ = c.set_nodelay(true);
            let (client, target) = (client.clone(), target.clone());
            tokio::spawn(async move {
                let _ = client.forward(sid.public_key, target, c).await;
            });
        }
    });
    (a, net, _server)
}

async fn bulk(via: SocketAddr) -> f64 {
    let mut s = TcpStream::connect(via).await.unwrap();
    let chunk = vec![0x5Au8; 256 * 1024];
    let t = now();
    s.write_all(b"B").await.unwrap();
    for _ in 0..BULK / chunk.len() {
        s.write_all(&chunk).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let mut n = [0u8; 8];
    s.read_exact(&mut n).await.unwrap();
    assert_eq!(u64::from_le_bytes(n), BULK as u64);
    BULK as f64 / 1e6 / t.elapsed().as_secs_f64()
}

async fn rtt(via: SocketAddr) -> (Duration, Duration) {
    let mut s = TcpStream::connect(via).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(b"P").await.unwrap();
    let mut b = [0u8; 1];
    // Warm up: the first exchange opens the stream.
    s.write_all(b"x").await.unwrap();
    s.read_exact(&mut b).await.unwrap();
    let mut times = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t = now();
        s.write_all(b"x").await.unwrap();
        s.read_exact(&mut b).await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    (times[PINGS / 2], times[PINGS * 99 / 100])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let to = target().await;
        let plain = plain_relay(to).await;
        let (tunnel, _net, _server) = tunnel_relay(to).await;
        let (pb, tb) = (bulk(plain).await, bulk(tunnel).await);
        let ((pm, p99), (tm, t99)) = (rtt(plain).await, rtt(tunnel).await);
        println!("tunnel over the mock transport vs a plain tokio copy relay, loopback, same run:");
        println!("  bulk 256 MiB: tunnel {tb:.0} MB/s, relay {pb:.0} MB/s, ratio {:.2} (goal >= 0.50) {}", tb / pb, if tb / pb >= 0.5 { "MET" } else { "NOT MET" });
        let added = tm.saturating_sub(pm);
        println!(
            "  1-byte round trip: tunnel median {:?} p99 {:?}, relay median {:?} p99 {:?}; added median {:?} (goal < 100 us) {}",
            tm, t99, pm, p99, added, if added < Duration::from_micros(100) { "MET" } else { "NOT MET" }
        );
    });
}
