//! A tour of the protocol core with no network at all: a client and a server endpoint over
//! the deterministic in-memory pair harness (20 ms one-way latency, Tox's 1373-byte packets),
//! a handshake, a refused target, and an HTTP-sized download checked byte for byte.
//!
//! Run with `make demo` or
//! `cargo run --release -p toxtun-proto --features testing --example core_demo`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use toxtun_proto::pair::{End, Pair};
use toxtun_proto::{ClientRule, EndpointConfig, PeerId, ServerPolicy, StreamCode, TargetRules};

fn main() {
    let client_id = PeerId([0xC1; 32]);
    let server_id = PeerId([0x5E; 32]);
    let mut server = EndpointConfig::new(server_id);
    server.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: client_id,
            targets: TargetRules::new(vec!["127.0.0.1:8080".parse().unwrap()]),
        }],
        ..Default::default()
    });
    let mut p = Pair::new(EndpointConfig::new(client_id), server, 2026);
    p.latency = Duration::from_millis(20);
    p.queue_capacity = 256;
    p.a.app.keep_bytes = true;

    println!("toxtun protocol core demo (in memory: no sockets, virtual time)");
    println!("  server {server_id}");
    println!("  allows client {client_id:?} to reach 127.0.0.1:8080 only");

    p.a.endpoint.connect(p.now, server_id);
    p.link_up();
    p.run_until(1_000_000, |p| p.a.endpoint.is_established(server_id))
        .expect("handshake");
    println!(
        "handshake done after {:?} of virtual time (one round trip)",
        p.elapsed()
    );

    let denied =
        p.a.endpoint
            .open(p.now, server_id, "127.0.0.1:22".parse().unwrap())
            .unwrap();
    p.settle(1_000_000).unwrap();
    match p.a.app.ended.get(&denied) {
        Some(End::Refused(code)) => println!("open 127.0.0.1:22   -> refused: {code}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        p.a.app.ended[&denied],
        End::Refused(StreamCode::TargetNotAllowed)
    );

    // The server answers an HTTP request with a 16 MiB body.
    let body: Bytes = (0..16u32 << 20)
        .map(|i| (i * 2654435761) as u8 >> 3)
        .collect::<Vec<u8>>()
        .into();
    let mut reply = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
    reply.extend_from_slice(&body);
    p.b.app.reply = Some((Bytes::from(reply.clone()), true));
    let start_virtual = p.elapsed();
    #[allow(clippy::disallowed_methods)]
    let start_cpu = Instant::now();
    let s =
        p.a.endpoint
            .open(p.now, server_id, "127.0.0.1:8080".parse().unwrap())
            .unwrap();
    p.a.app
        .send(s, Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n"), true);
    p.run_until(50_000_000, |p| p.a.app.ended.contains_key(&s))
        .expect("transfer");
    let cpu = start_cpu.elapsed();
    let virt = p.elapsed() - start_virtual;
    let got = &p.a.app.received[&s];
    let ok = Sha256::digest(got) == Sha256::digest(&reply);
    println!(
        "open 127.0.0.1:8080 -> {} bytes received, SHA-256 {}",
        got.len(),
        if ok { "matches" } else { "DIFFERS" }
    );
    println!(
        "  virtual time {:?} over a 40 ms round trip: {:.1} MB/s with the default 256 KiB window",
        virt,
        got.len() as f64 / virt.as_secs_f64() / 1e6
    );
    println!(
        "  CPU time {:?} for both endpoints: {:.0} MB/s",
        cpu,
        got.len() as f64 / cpu.as_secs_f64() / 1e6
    );
    println!(
        "  stream ended: {:?}; packets sent: client {}, server {}",
        p.a.app.ended[&s], p.a.packets_sent, p.b.packets_sent
    );
    assert!(ok, "the body must arrive byte for byte");
    println!(
        "The real tunnel over Tox (toxtun demo) arrives with the transport and daemon issues."
    );
}
