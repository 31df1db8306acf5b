//! Benchmarks of the protocol core, each beside a baseline measured in the same run:
//!
//! * `codec/*`: encode and decode of maximum-size DATA frames, beside a plain copy of the
//!   same bytes (`codec/memcpy_packet`).
//! * `goodput/*`: bytes moved through two endpoints (client writes, server reads) over the
//!   in-memory pair harness with no latency, beside a plain memcpy of the same bytes.
//!
//! `scripts/bench-core` runs these and prints the ratios.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use toxtun_proto::pair::Pair;
use toxtun_proto::wire::{encode_data_header, Frame, MAX_DATA_PAYLOAD};
use toxtun_proto::{ClientRule, EndpointConfig, PeerId, ServerPolicy, StreamId, TargetRules};

const CLIENT: PeerId = PeerId([1; 32]);
const SERVER: PeerId = PeerId([2; 32]);
const GOODPUT_BYTES: usize = 64 << 20;

fn codec(c: &mut Criterion) {
    let payload = Bytes::from(vec![0x5A; MAX_DATA_PAYLOAD]);
    let frame = Frame::Data {
        stream: StreamId::from_bytes([7; 16]),
        offset: 123_456,
        ack: 654_321,
        payload: payload.clone(),
    };
    let packet = frame.to_bytes();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(MAX_DATA_PAYLOAD as u64));
    g.bench_function("encode_data", |b| {
        b.iter(|| {
            let mut buf = BytesMut::with_capacity(packet.len());
            encode_data_header(&mut buf, StreamId::from_bytes([7; 16]), 1, 2);
            buf.extend_from_slice(black_box(&payload));
            black_box(buf.freeze())
        })
    });
    g.bench_function("decode_data", |b| {
        b.iter(|| black_box(Frame::decode(black_box(&packet)).unwrap()))
    });
    g.bench_function("memcpy_packet", |b| {
        b.iter(|| {
            let mut buf = BytesMut::with_capacity(packet.len());
            buf.extend_from_slice(black_box(&packet));
            black_box(buf.freeze())
        })
    });
    g.finish();
}

fn pair_ready() -> (Pair, StreamId) {
    let client = EndpointConfig::new(CLIENT);
    let mut server = EndpointConfig::new(SERVER);
    server.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: CLIENT,
            targets: TargetRules::new(vec!["*:*".parse().unwrap()]),
        }],
        ..Default::default()
    });
    let mut p = Pair::new(client, server, 1);
    p.latency = std::time::Duration::ZERO;
    p.queue_capacity = 4096;
    p.check_invariants = false;
    for side in [&mut p.a, &mut p.b] {
        side.app.record_events = false;
        side.app.keep_bytes = false;
    }
    p.a.endpoint.connect(p.now, SERVER);
    p.link_up();
    let s =
        p.a.endpoint
            .open(p.now, SERVER, "127.0.0.1:9".parse().unwrap())
            .unwrap();
    p.settle(1_000_000).unwrap();
    (p, s)
}

fn goodput(c: &mut Criterion) {
    let data = Bytes::from(vec![0xA5; GOODPUT_BYTES]);
    let mut g = c.benchmark_group("goodput");
    g.throughput(Throughput::Bytes(GOODPUT_BYTES as u64));
    g.sample_size(10);
    g.bench_function("pair_one_stream", |b| {
        b.iter_batched(
            pair_ready,
            |(mut p, s)| {
                p.a.app.send(s, data.clone(), true);
                p.run_until(10_000_000, |p| p.b.app.eof.contains(&s))
                    .unwrap();
                assert_eq!(p.b.app.received_len[&s], GOODPUT_BYTES as u64);
                p
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("memcpy", |b| {
        let mut dst = vec![0u8; GOODPUT_BYTES];
        b.iter(|| {
            dst.copy_from_slice(black_box(&data));
            black_box(&dst);
        })
    });
    g.finish();
}

criterion_group!(benches, codec, goodput);

/// Mean time of one benchmark from criterion's estimates of this run, in nanoseconds.
fn mean_ns(group: &str, name: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target
        .join("criterion")
        .join(group)
        .join(name)
        .join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn print_ratios() {
    let gbps = |bytes: usize, ns: f64| bytes as f64 / ns;
    println!("\n== toxtun-proto: figures against baselines measured in this run ==");
    if let (Some(enc), Some(dec), Some(cpy)) = (
        mean_ns("codec", "encode_data"),
        mean_ns("codec", "decode_data"),
        mean_ns("codec", "memcpy_packet"),
    ) {
        println!(
            "encode max-size DATA: {:7.2} GB/s  ({:.2}x the time of copying the packet)",
            gbps(MAX_DATA_PAYLOAD, enc),
            enc / cpy
        );
        println!(
            "decode max-size DATA: {:7.2} GB/s  ({:.2}x the time of copying the packet)",
            gbps(MAX_DATA_PAYLOAD, dec),
            dec / cpy
        );
    }
    if let (Some(pair), Some(cpy)) = (
        mean_ns("goodput", "pair_one_stream"),
        mean_ns("goodput", "memcpy"),
    ) {
        let ratio = cpy / pair;
        println!(
            "pair goodput:         {:7.2} GB/s  memcpy {:.2} GB/s  ratio {:.3} (goal: >= 2 GB/s and >= 0.200) {}",
            gbps(GOODPUT_BYTES, pair),
            gbps(GOODPUT_BYTES, cpy),
            ratio,
            if gbps(GOODPUT_BYTES, pair) >= 2.0 && ratio >= 0.2 { "MET" } else { "NOT MET" }
        );
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratios();
}
