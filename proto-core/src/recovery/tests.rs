//! Loss detection and the probe timer, driven packet by packet.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::congestion::{NewReno, MIN_WINDOW};
use super::probe::{MAX_PROBE_INTERVAL, PROBE_PACKETS, PTOS_BEFORE_FALLBACK};
use super::*;

/// The tests' origin of virtual time (the one clock read, as the pair harness does).
fn origin() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

fn chunk(offset: u64) -> Chunk {
    Chunk {
        stream: StreamId::from_bytes([1; 16]),
        offset,
        payload: Bytes::from(vec![0u8; SEGMENT]),
        order: 0,
        shadow: false,
    }
}

#[test]
fn sender_detects_losses_by_threshold_and_reduces_once() {
    let t0 = origin();
    let mut s = LossySender::new(CongestionControl::NewReno);
    for i in 0..10 {
        s.on_sent(t0, chunk(i * SEGMENT as u64), false);
    }
    let w0 = s.window();
    let t1 = t0 + Duration::from_millis(10);
    // Packets 0 and 1 lost; 2..10 acknowledged.
    s.on_ack(t1, &[(2, 10)], Duration::ZERO).unwrap();
    assert_eq!(s.counters().packets_lost, 2);
    assert_eq!(s.lost.len(), 2);
    assert_eq!(s.lost[0].offset, 0);
    assert_eq!(s.rtt().get(), Duration::from_millis(10));
    assert!(s.window() < w0 + 8 * SEGMENT, "reduced after the loss");
    let reduced = s.window();
    assert_eq!(s.bytes_in_flight, 0);
    // A LACK for numbers never sent is a violation.
    assert!(s.on_ack(t1, &[(0, 11)], Duration::ZERO).is_err());
    // More losses from the same round do not reduce again.
    assert_eq!(s.window(), reduced);
}

#[test]
fn probe_timeouts_send_the_oldest_again_then_declare_the_path_broken() {
    // Lossy packets vanish while the peer's lossless frames (its PONGs) keep coming:
    // the fast path, not the path, is down.
    let t0 = origin();
    let mut s = LossySender::new(CongestionControl::NewReno);
    for i in 0..5 {
        s.on_sent(t0, chunk(i * SEGMENT as u64), false);
    }
    let mut ptos = 0;
    while !s.is_broken() {
        let due = s.deadline().expect("armed");
        s.on_timeout(due);
        ptos += 1;
        assert!(
            s.take_liveness_ping_request(),
            "each probe timeout asks for a PING"
        );
        assert_eq!(s.lost.len(), PROBE_PACKETS, "the two oldest go again");
        assert_eq!(
            s.lost[0].offset, 0,
            "oldest bytes first, whatever their numbers"
        );
        assert!(s.probe_due());
        for _ in 0..PROBE_PACKETS {
            let c = s.lost.pop_front().unwrap();
            s.on_sent(due, c, true);
        }
        assert!(!s.probe_due());
        s.on_lossless_heard(due + Duration::from_millis(1));
        assert!(ptos < 10, "never declared broken");
    }
    assert_eq!(
        ptos,
        PTOS_BEFORE_FALLBACK + 1,
        "the first one proves nothing"
    );
    assert_eq!(
        s.counters().packets_lost,
        0,
        "a probe timeout declares nothing lost"
    );
    let retry = s.retry_at().expect("a retry is due later");
    assert!(retry > s.last_sent.unwrap());
}

#[test]
fn a_silent_path_is_an_outage_probed_at_a_capped_interval() {
    // Nothing gets through at all: no LACK and no lossless frame either. That is an
    // outage; the fast path stays, and probes keep looking for the path's return, at
    // most MAX_PROBE_INTERVAL apart, each carrying the oldest bytes.
    let t0 = origin();
    let mut s = in_flight(20);
    let mut t = t0;
    for i in 0..200 {
        let due = s.deadline().expect("armed");
        assert!(
            due - t <= MAX_PROBE_INTERVAL.max(s.rtt().pto()),
            "probe {i} came {:?} after the last",
            due - t
        );
        t = due;
        s.on_timeout(due);
        assert!(!s.is_broken(), "an outage is not a broken fast path");
        assert_eq!(s.lost.front().map(|c| c.offset), Some(0));
        let probes: Vec<Chunk> = s.lost.drain(..).collect();
        for c in probes {
            s.on_sent(due, c, true);
        }
    }
    assert!(
        t - t0 > Duration::from_secs(60),
        "a minute and more of outage"
    );
    // The path returns: the next probe is acknowledged, and the rest is found lost.
    let due = s.deadline().expect("armed");
    s.on_timeout(due);
    let probes: Vec<Chunk> = s.lost.drain(..).collect();
    let first = s.peek_number();
    for c in probes {
        s.on_sent(due, c, true);
    }
    s.on_ack(
        due + Duration::from_millis(1),
        &[(first, s.peek_number())],
        Duration::ZERO,
    )
    .unwrap();
    assert!(!s.is_broken());
    assert_eq!(s.lost.len(), 18, "the others go again");
    let offsets: Vec<u64> = s.lost.iter().map(|c| c.offset).collect();
    let mut sorted = offsets.clone();
    sorted.sort_unstable();
    assert_eq!(offsets, sorted, "oldest bytes first");
}

/// A sender on a 1 ms path with a window of `n` full packets, all of them in flight.
fn in_flight(n: u64) -> LossySender {
    in_flight_after(n, usize::MAX)
}

/// The same, in congestion avoidance if `ssthresh` is at most the window.
fn in_flight_after(n: u64, ssthresh: usize) -> LossySender {
    let t0 = origin();
    let window = n as usize * SEGMENT;
    let mut s = LossySender::with_controller(Box::new(NewReno::with_window(window, ssthresh)));
    s.rtt.update(Duration::from_millis(1), Duration::ZERO);
    for i in 0..n {
        s.on_sent(t0, chunk(i * SEGMENT as u64), false);
    }
    s
}

#[test]
fn a_stall_that_ends_costs_no_window() {
    // The path (a Tox thread that ran late) holds every packet past the probe timeout,
    // then delivers them all: nothing was lost, so the window stays.
    let mut s = in_flight_after(40, 40 * SEGMENT);
    let w = s.window();
    let due = s.deadline().expect("armed");
    s.on_timeout(due);
    assert_eq!(s.window(), w);
    let probes: Vec<Chunk> = s.lost.drain(..).collect();
    for c in probes {
        s.on_sent(due, c, true);
    }
    // Everything arrives: the originals and the probes.
    let t1 = due + Duration::from_millis(1);
    s.on_ack(t1, &[(0, s.peek_number())], Duration::ZERO)
        .unwrap();
    assert_eq!(s.counters().packets_lost, 0);
    assert!(s.window() >= w, "{} < {w}", s.window());
    assert_eq!(s.bytes_in_flight, 0);
    assert!(s.lost.is_empty());
}

#[test]
fn losses_seen_after_two_probe_timeouts_are_persistent_congestion() {
    let mut s = in_flight(40);
    let mut t = s.last_sent.expect("sent");
    for _ in 0..2 {
        t = s.deadline().expect("armed");
        s.on_timeout(t);
        let probes: Vec<Chunk> = s.lost.drain(..).collect();
        for c in probes {
            s.on_sent(t, c, true);
        }
    }
    // Only the probes arrive: everything else was lost.
    let first_probe = 40;
    s.on_ack(
        t + Duration::from_millis(1),
        &[(first_probe, s.peek_number())],
        Duration::ZERO,
    )
    .unwrap();
    assert!(s.counters().packets_lost > 30);
    assert_eq!(s.window(), MIN_WINDOW);
}

#[test]
fn a_loss_that_was_only_reordering_is_undone_and_raises_the_thresholds() {
    let t0 = origin();
    let mut s = in_flight(20);
    let w = s.window();
    // Packet 0 is overtaken by 19 others: declared lost, the window cut.
    let t1 = t0 + Duration::from_millis(1);
    s.on_ack(t1, &[(1, 20)], Duration::ZERO).unwrap();
    assert_eq!(s.counters().packets_lost, 1);
    let reduced = s.window();
    assert!(
        reduced < w + 19 * SEGMENT,
        "the window, grown by 19 acknowledged packets, was cut on the loss"
    );
    assert_eq!(s.lost.len(), 1, "waiting to go again");
    // Then it arrives after all.
    let acked = s.on_ack(t1, &[(0, 20)], Duration::ZERO).unwrap();
    assert_eq!(s.counters().spurious_losses, 1);
    assert!(
        s.window() >= w + 19 * SEGMENT,
        "the reduction was undone: {} after {reduced}",
        s.window()
    );
    assert!(s.lost.is_empty(), "its bytes arrived: not sent again");
    assert_eq!(
        acked.streams.iter().map(|x| x.1).sum::<u64>(),
        SEGMENT as u64
    );
    assert!(
        s.reordering.packet_threshold >= 20,
        "{}",
        s.reordering.packet_threshold
    );
    assert!(s.reordering.extra_delay > Duration::ZERO);
    // A real loss in a later episode still reduces the window.
    let base = s.peek_number();
    for i in 0..10 {
        s.on_sent(t1, chunk((20 + i) * SEGMENT as u64), false);
    }
    let t2 = t1 + Duration::from_millis(50);
    s.on_ack(t2, &[(base + 1, base + 10)], Duration::ZERO)
        .unwrap();
    assert_eq!(
        s.counters().packets_lost,
        1,
        "not yet: nine later packets are within the threshold"
    );
    let due = s.deadline().expect("the loss timer");
    s.on_timeout(due);
    assert_eq!(s.counters().packets_lost, 2, "found by the time threshold");
}
