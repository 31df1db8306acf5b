//! The fast path's congestion controllers on emulated bottlenecks (the in-memory pair:
//! one-way delay, a drop-tail bottleneck of a given rate and buffer, random loss), under
//! virtual time: what a bulk upload achieves, and what round trip it leaves.

use std::time::Duration;

use bytes::Bytes;
use toxtun_proto::pair::{LossyLink, Pair};
use toxtun_proto::{
    ClientRule, CongestionControl, EndpointConfig, PeerId, ServerPolicy, SessionStats, TargetRules,
};

const CLIENT: PeerId = PeerId([0xC1; 32]);
const SERVER: PeerId = PeerId([0x5E; 32]);
const STEPS: usize = 50_000_000;

/// A path: one-way delay, bottleneck rate (bytes/s), buffer (packets), loss (per mille).
#[derive(Clone, Copy, Debug)]
struct Path {
    delay_ms: u64,
    rate: u64,
    buffer: usize,
    loss_per_mille: u32,
}

/// Uploads `bytes` over `path` with controller `cc` on both sides: the time it took and
/// the sender's counters at the end (smoothed and minimum round trip included).
fn upload(cc: CongestionControl, path: Path, bytes: usize, seed: u64) -> (Duration, SessionStats) {
    let mut c = EndpointConfig::new(CLIENT);
    c.congestion = cc;
    let mut s = EndpointConfig::new(SERVER);
    s.congestion = cc;
    s.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: CLIENT,
            targets: TargetRules::new(vec!["*:*".parse().unwrap()]),
        }],
        ..Default::default()
    });
    let mut p = Pair::new(c, s, seed);
    p.latency = Duration::from_millis(path.delay_ms);
    p.establish(STEPS).unwrap();
    p.lossy = LossyLink {
        loss_per_mille: path.loss_per_mille,
        bandwidth: Some(path.rate),
        buffer: path.buffer,
        ..LossyLink::default()
    };
    p.set_direct(true);
    p.a.app.keep_bytes = false;
    p.b.app.keep_bytes = false;
    let stream =
        p.a.endpoint
            .open(p.now, SERVER, "127.0.0.1:9".parse().unwrap())
            .unwrap();
    p.a.app.send(stream, Bytes::from(vec![0x42; bytes]), true);
    let start = p.now;
    p.run_until(STEPS, |p| p.b.app.eof.contains(&stream))
        .unwrap();
    assert_eq!(p.b.app.received_len[&stream], bytes as u64);
    (p.now - start, p.a.endpoint.session_stats(SERVER).unwrap())
}

fn goodput(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64()
}

#[test]
fn print_the_controllers_side_by_side() {
    let paths = [
        (
            "broadband",
            Path {
                delay_ms: 25,
                rate: 4_000_000,
                buffer: 300,
                loss_per_mille: 0,
            },
        ),
        (
            "lossy-wifi",
            Path {
                delay_ms: 25,
                rate: 4_000_000,
                buffer: 300,
                loss_per_mille: 10,
            },
        ),
        (
            "intercontinental",
            Path {
                delay_ms: 75,
                rate: 2_500_000,
                buffer: 400,
                loss_per_mille: 2,
            },
        ),
        (
            "bloated-dsl",
            Path {
                delay_ms: 10,
                rate: 1_250_000,
                buffer: 450,
                loss_per_mille: 0,
            },
        ),
    ];
    for (name, path) in paths {
        for cc in [CongestionControl::NewReno, CongestionControl::Bbr] {
            let n = std::env::var("N_MB").map_or(12, |v| v.parse().unwrap()) << 20;
            let (took, st) = upload(cc, path, n, 7);
            eprintln!(
                "{name:16} {cc:8} {:6.2} MB/s of {:.2}  srtt {:?} min {:?} lost {} of {}",
                goodput(n, took) / 1e6,
                path.rate as f64 / 1e6,
                st.rtt.unwrap(),
                st.min_rtt.unwrap(),
                st.lossy_packets_lost,
                st.lossy_packets_sent
            );
        }
    }
}
