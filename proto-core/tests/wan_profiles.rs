//! The WAN bench's profiles in the sans-IO pair, deterministic under virtual time: a bulk
//! upload and, beside it on the same session, an interactive stream sending 64 bytes every
//! 100 ms. Every scenario checks what a person on such a path would notice:
//!
//! * goodput reaches a stated fraction of the bottleneck's rate (start-up included);
//! * once start-up is over ([`WARM_UP`]), the bottleneck's queue stays bounded (its
//!   high-water mark, in milliseconds of the bottleneck's rate);
//! * the interactive stream never starves: once start-up is over, each message arrives
//!   within a bound of the path's one-way delay, though the bulk stream keeps the window
//!   full, and none ever takes longer than [`STARVED`];
//! * delivery is byte-exact on both streams.
//!
//! The emulated WAN bench (`cargo bench -p toxtun-tokio --bench wan`) measures the same
//! paths with the real processes; these run in `cargo test` in a second.

use std::time::Duration;

use bytes::Bytes;
use toxtun_proto::pair::LossyLink;
use toxtun_proto::{CongestionControl, StreamId};

mod common;
use common::{on_bottleneck, SERVER, STEPS};
/// A packet on the bottleneck, about (what queue bounds are counted in).
const PACKET: u64 = 1_372;
/// The interactive stream's message and its period.
const MESSAGE: usize = 64;
const PERIOD: Duration = Duration::from_millis(100);
/// Start-up and its drain: BBR's start-up may fill the buffer for a round or two (as the
/// kernel's does); the bounds on the queue and on latency hold from here on.
const WARM_UP: Duration = Duration::from_secs(2);
/// No interactive message, start-up included, takes longer than this past the one-way
/// delay.
const STARVED: Duration = Duration::from_secs(1);
/// Each bulk upload lasts about this long at the bottleneck's rate.
const TRANSFER: Duration = Duration::from_secs(6);

/// One profile and what it must achieve.
struct Profile {
    name: &'static str,
    /// One-way delay.
    delay: Duration,
    /// Bottleneck rate, bytes per second.
    rate: u64,
    /// The bottleneck's buffer, in milliseconds at its rate (as the netsim profiles say).
    queue_ms: u64,
    loss_per_mille: u32,
    /// Every packet is delayed by up to this much more (packets overtake each other).
    reorder: Duration,
    /// Goodput at least this fraction of `rate`.
    goodput: f64,
    /// The queue's high-water mark at most this long at `rate`.
    max_queue_ms: u64,
    /// Each interactive message within this of the one-way delay.
    max_extra_latency: Duration,
}

const MS: Duration = Duration::from_millis(1);

/// The profiles of `toxtun_netsim::profiles` (their reordering: every packet up to 2 ms
/// late, rather than 1% of them 10 ms).
fn profiles() -> Vec<Profile> {
    vec![
        Profile {
            name: "broadband",
            delay: 25 * MS,
            rate: 12_500_000,
            queue_ms: 100,
            loss_per_mille: 0,
            reorder: Duration::ZERO,
            goodput: 0.85,
            max_queue_ms: 30,
            max_extra_latency: 25 * MS,
        },
        Profile {
            name: "lossy-wifi",
            delay: 25 * MS,
            rate: 12_500_000,
            queue_ms: 100,
            loss_per_mille: 10,
            reorder: Duration::ZERO,
            goodput: 0.7,
            max_queue_ms: 30,
            max_extra_latency: 80 * MS,
        },
        Profile {
            name: "intercontinental",
            delay: 75 * MS,
            rate: 2_500_000,
            queue_ms: 200,
            loss_per_mille: 2,
            reorder: Duration::ZERO,
            goodput: 0.6,
            max_queue_ms: 80,
            max_extra_latency: 200 * MS,
        },
        Profile {
            name: "bloated-dsl",
            delay: 10 * MS,
            rate: 1_250_000,
            queue_ms: 500,
            loss_per_mille: 0,
            reorder: Duration::ZERO,
            goodput: 0.85,
            max_queue_ms: 30,
            max_extra_latency: 40 * MS,
        },
        Profile {
            name: "reordering",
            delay: 15 * MS,
            rate: 12_500_000,
            queue_ms: 100,
            loss_per_mille: 0,
            reorder: 2 * MS,
            goodput: 0.7,
            max_queue_ms: 30,
            max_extra_latency: 40 * MS,
        },
    ]
}

/// A byte pattern no two offsets of which repeat within a stream (so misplaced bytes show).
fn pattern(seed: u8, n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9u32 ^ u32::from(seed);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// What one scenario measured.
#[derive(Debug)]
struct Outcome {
    goodput: f64,
    /// The queue's high-water mark after [`WARM_UP`], ms at the bottleneck's rate.
    queue_ms: f64,
    /// ... and over the whole run.
    queue_ms_all: f64,
    /// The slowest interactive message after [`WARM_UP`], past the one-way delay.
    worst_extra_latency: Duration,
    /// ... and over the whole run.
    worst_extra_latency_all: Duration,
    messages: usize,
}

/// Runs `profile`'s scenario with `bytes` of bulk upload.
fn run(profile: &Profile, cc: CongestionControl, bytes: usize, seed: u64) -> Outcome {
    let link = LossyLink {
        loss_per_mille: profile.loss_per_mille,
        bandwidth: Some(profile.rate),
        buffer: (profile.rate * profile.queue_ms / 1000 / PACKET) as usize,
        reorder: profile.reorder,
        ..LossyLink::default()
    };
    let mut p = on_bottleneck(cc, profile.delay, link, seed);
    let target: toxtun_proto::Target = "127.0.0.1:9".parse().unwrap();
    let bulk: StreamId = p.a.endpoint.open(p.now, SERVER, target.clone()).unwrap();
    let chat: StreamId = p.a.endpoint.open(p.now, SERVER, target).unwrap();
    let data = pattern(1, bytes);
    p.a.app.send(bulk, Bytes::from(data.clone()), true);
    let start = p.now;
    // Messages sent (when, cumulative bytes after it), and when each was whole at B.
    let mut sent: Vec<(std::time::Instant, u64)> = Vec::new();
    let mut arrived: Vec<std::time::Instant> = Vec::new();
    let mut next_message = start;
    let mut bulk_done = None;
    let mut queue_all = 0;
    while bulk_done.is_none() || arrived.len() < sent.len() {
        if queue_all == 0 && p.now - start >= WARM_UP {
            queue_all = p.a.lossy_max_queued.max(1);
            p.a.lossy_max_queued = 0;
        }
        if bulk_done.is_none() && p.now >= next_message {
            let i = sent.len();
            let m = pattern(2 + (i % 200) as u8, MESSAGE);
            p.a.app.send(chat, Bytes::from(m), false);
            sent.push((p.now, ((i + 1) * MESSAGE) as u64));
            next_message += PERIOD;
        }
        p.advance(MS, STEPS).unwrap();
        let got = p.b.app.received_len.get(&chat).copied().unwrap_or(0);
        while arrived.len() < sent.len() && got >= sent[arrived.len()].1 {
            arrived.push(p.now);
        }
        if bulk_done.is_none() && p.b.app.eof.contains(&bulk) {
            bulk_done = Some(p.now);
        }
        assert!(
            p.now - start < Duration::from_secs(600),
            "{}: no end",
            profile.name
        );
    }
    assert_eq!(
        p.b.app.received[&bulk], data,
        "{}: bulk bytes",
        profile.name
    );
    let chat_bytes: Vec<u8> = (0..sent.len())
        .flat_map(|i| pattern(2 + (i % 200) as u8, MESSAGE))
        .collect();
    assert_eq!(
        p.b.app.received[&chat], chat_bytes,
        "{}: chat bytes",
        profile.name
    );
    let took = bulk_done.unwrap() - start;
    let extra = |after: Duration| {
        sent.iter()
            .zip(&arrived)
            .filter(|((at, _), _)| *at - start >= after)
            .map(|((at, _), got)| {
                got.saturating_duration_since(*at)
                    .saturating_sub(profile.delay)
            })
            .max()
            .unwrap_or_default()
    };
    let ms = |packets: usize| packets as f64 * PACKET as f64 * 1e3 / profile.rate as f64;
    Outcome {
        goodput: bytes as f64 / took.as_secs_f64() / profile.rate as f64,
        queue_ms: ms(p.a.lossy_max_queued),
        queue_ms_all: ms(queue_all.max(p.a.lossy_max_queued)),
        worst_extra_latency: extra(WARM_UP),
        worst_extra_latency_all: extra(Duration::ZERO),
        messages: sent.len(),
    }
}

#[test]
fn every_profile_keeps_its_invariants_with_the_default_controller() {
    let mut failures = Vec::new();
    for (i, profile) in profiles().iter().enumerate() {
        let bytes = (profile.rate as f64 * TRANSFER.as_secs_f64()) as usize;
        let o = run(profile, CongestionControl::default(), bytes, 40 + i as u64);
        eprintln!(
            "{}: goodput {:.2} of the link (at least {}); queue at most {:.0} ms after \
             start-up (bound {} ms), {:.0} ms in it; interactive worst +{:.1} ms over \
             one-way after start-up (bound {} ms), +{:.1} ms in it; {} messages",
            profile.name,
            o.goodput,
            profile.goodput,
            o.queue_ms,
            profile.max_queue_ms,
            o.queue_ms_all,
            o.worst_extra_latency.as_secs_f64() * 1e3,
            profile.max_extra_latency.as_millis(),
            o.worst_extra_latency_all.as_secs_f64() * 1e3,
            o.messages,
        );
        if o.goodput < profile.goodput
            || o.queue_ms > profile.max_queue_ms as f64
            || o.worst_extra_latency > profile.max_extra_latency
            || o.worst_extra_latency_all > STARVED
        {
            failures.push(format!("{}: {o:?}", profile.name));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
