//! The fast path's own reliability and congestion control, sans-IO.
//!
//! c-toxcore's lossless packets come with its congestion control, whose slow start grows the
//! rate about 1.6× per *second*: a 50 MB transfer is over before it reaches its plateau.
//! Lossy packets have none, so on a direct UDP link the session carries stream bytes in LDATA
//! packets and runs the recovery QUIC runs (RFC 9002), scaled down:
//!
//! * every LDATA has a fresh packet number; the receiver acknowledges numbers in ranges
//!   (LACK), at least every [`ACK_EVERY_PACKETS`] packets or [`MAX_ACK_DELAY`];
//! * a packet is lost when three later ones were acknowledged, or when it is older than
//!   9/8 of the round trip and a later one was; a probe timeout (PTO) covers the tail by
//!   sending the oldest one or two packets again, outside the window, and is no loss
//!   signal by itself (RFC 9002 §6.2): on a busy machine a thread that ran late for a few
//!   milliseconds must not cost the window, and only what the next LACK shows missing
//!   counts as lost;
//! * lost payloads are sent again under new numbers — or, if the fast path went away (a
//!   TCP relay, a suspension, three silent PTOs), as ordinary DATA in the frame log, so no
//!   byte is lost across the switch;
//! * a NewReno window (β = 0.7, as CUBIC uses) whose slow start grows per round trip, not
//!   per second, that stops growing while the round trip shows a queue (as HyStart and
//!   Vegas do: on loopback the queue is c-toxcore's own, and filling it only adds delay
//!   and drops), and a pacer that spreads each window over the round trip rather than
//!   blasting it (2× the window's rate in slow start, 1.25× after, as Linux paces).
//!
//! Everything here takes `now` from the caller and keeps bounded state: the packets in
//! flight are bounded by the congestion window, itself capped at [`MAX_WINDOW`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::frame::MAX_ACK_RANGES;
use crate::ids::StreamId;

/// The receiver sends LACK after this many LDATA packets at the latest...
pub(crate) const ACK_EVERY_PACKETS: u32 = 32;
/// ... or this long after the first unacknowledged one arrived.
pub(crate) const MAX_ACK_DELAY: Duration = Duration::from_millis(2);
/// A packet is lost once this many later packets were acknowledged (RFC 9002's
/// kPacketThreshold), at first; a path that reorders raises it (see `on_spurious`).
const PACKET_THRESHOLD: u64 = 3;
/// The most the packet threshold grows to on a reordering path.
const MAX_PACKET_THRESHOLD: u64 = 1024;
/// Packets declared lost that are remembered, to spot one acknowledged after all.
const DECLARED_LOST_KEPT: usize = 4096;
/// The payload size the window is counted in (a full LDATA payload).
pub(crate) const SEGMENT: usize = crate::frame::MAX_DATA_PAYLOAD;
/// The first window: 10 segments, as QUIC and TCP start.
const INITIAL_WINDOW: usize = 10 * SEGMENT;
/// The smallest window after losses.
const MIN_WINDOW: usize = 2 * SEGMENT;
/// The largest window: 4 MiB in flight, far past any path's needs at Tox's packet rate, so
/// that memory stays bounded whatever the acknowledgements say.
pub(crate) const MAX_WINDOW: usize = 4 << 20;
/// Multiplicative decrease on loss.
const BETA_NUM: usize = 7;
const BETA_DEN: usize = 10;
/// The round trip assumed before the first sample.
const INITIAL_RTT: Duration = Duration::from_millis(100);
/// Timer granularity (RFC 9002's kGranularity).
const GRANULARITY: Duration = Duration::from_millis(1);
/// Consecutive probe timeouts after which the fast path is declared broken for this link
/// (lossy packets do not get through) and bytes go lossless — counting only those whose
/// previous probe went unanswered although the peer's lossless frames kept arriving after
/// it. A path that carries nothing at all is an outage, not a broken fast path: falling
/// back then only moves the bytes to c-toxcore's lossless packets, which after the outage
/// crawl (0.02 MB/s on a 50 ms path), while the fast path's probes find the path again
/// the moment it returns.
const PTOS_BEFORE_FALLBACK: u32 = 3;
/// The longest wait between probe timeouts while nothing is acknowledged (unless the
/// path's own probe timeout is longer): a probe timeout doubles each time, as RFC 9002's
/// does, but uncapped it reaches minutes within a few outages' worth of them, and bytes
/// would wait that long after the path returned. Each probe is two packets.
const MAX_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long a fast path declared broken stays off before it is tried again: the link
/// c-toxcore still reports as direct may carry lossy packets again (a NAT that dropped them
/// for a while), and a retry costs a few packets sent twice.
const BROKEN_RETRY: Duration = Duration::from_secs(10);
/// Queueing delay tolerated before the window stops growing: the larger of this and half
/// the path's minimum round trip. Over real Tox on loopback (0.5 ms idle) the two Tox
/// threads' batching alone adds 2–3 ms once bulk flows; 2 ms held the window near 0.5 MB,
/// too little to keep them busy (BENCHMARKS.md, issue 8).
const QUEUE_ALLOWANCE: Duration = Duration::from_millis(4);
/// How many segments the pacer lets out back to back at least.
const PACER_BURST: usize = 10;
/// Round-trip samples (one per LACK) a round needs before its minimum may end slow start
/// (HyStart++ takes 8 per round; LACK comes every 32 packets, so 4 here).
const ROUND_SAMPLES: u32 = 4;
/// Rounds of conservative slow start before congestion avoidance (RFC 9406's CSS_ROUNDS).
const CSS_ROUNDS: u32 = 5;
/// How much slower conservative slow start grows than slow start (RFC 9406's).
const CSS_GROWTH_DIVISOR: usize = 4;
/// Packets a probe timeout sends again, outside the window and the pacer (RFC 9002 sends
/// one or two).
const PROBE_PACKETS: usize = 2;

/// A range of stream bytes to send on the fast path (new, or again after a loss).
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    pub stream: StreamId,
    pub offset: u64,
    pub payload: Bytes,
    /// The order in which the sender first sent its bytes (set by
    /// [`LossySender::on_sent`], kept across resends): probes and resends go oldest first,
    /// so that after an outage the bytes the receiver waits for are the first to arrive.
    pub order: u64,
    /// A copy of bytes that also travel as DATA in the frame log (sent there while the
    /// fast path was away, and not acknowledged yet): the log delivers them in the end,
    /// the copy only sooner. Its acknowledgement frees nothing, and it never moves to the
    /// lossless lane itself.
    pub shadow: bool,
}

#[derive(Debug)]
struct SentPacket {
    time: Instant,
    chunk: Chunk,
}

/// Round-trip estimation (RFC 9002 §5).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RttEstimator {
    pub latest: Duration,
    /// The latest sample less the receiver's acknowledgement delay.
    pub latest_adjusted: Duration,
    pub smoothed: Option<Duration>,
    pub var: Duration,
    pub min: Duration,
}

impl Default for RttEstimator {
    fn default() -> Self {
        RttEstimator {
            latest: INITIAL_RTT,
            latest_adjusted: INITIAL_RTT,
            smoothed: None,
            var: INITIAL_RTT / 2,
            min: Duration::MAX,
        }
    }
}

impl RttEstimator {
    fn update(&mut self, sample: Duration, ack_delay: Duration) {
        self.latest = sample;
        self.min = self.min.min(sample);
        // The receiver's delay is taken off, but never below the path's minimum.
        let adjusted = if sample >= self.min + ack_delay {
            sample - ack_delay.min(MAX_ACK_DELAY)
        } else {
            sample
        };
        self.latest_adjusted = adjusted;
        match self.smoothed {
            None => {
                self.smoothed = Some(adjusted);
                self.var = adjusted / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(adjusted);
                self.var = (self.var * 3 + diff) / 4;
                self.smoothed = Some((srtt * 7 + adjusted) / 8);
            }
        }
    }

    /// The smoothed round trip (the initial guess before a sample).
    pub fn get(&self) -> Duration {
        self.smoothed.unwrap_or(INITIAL_RTT)
    }

    fn pto(&self) -> Duration {
        self.get() + (self.var * 4).max(GRANULARITY) + MAX_ACK_DELAY
    }

    fn loss_delay(&self) -> Duration {
        (self.latest.max(self.get()) * 9 / 8).max(GRANULARITY)
    }
}

/// Conservative slow start: a round of slow start showed a queue, which may be a standing
/// one (the window reached the path's) or a passing stall.
#[derive(Debug, Clone, Copy)]
struct ConservativeStart {
    /// The smallest round trip of the round that showed the queue: a later round below it
    /// means the queue went away, and slow start resumes.
    baseline: Duration,
    /// Rounds left before congestion avoidance takes over.
    rounds_left: u32,
}

/// A packet declared lost, remembered in case it is acknowledged after all: the largest
/// number acknowledged when it was declared, its loss episode, and its payload's identity
/// (order, stream, offset).
#[derive(Debug, Clone, Copy)]
struct DeclaredLost {
    largest_then: u64,
    episode: u64,
    payload: (u64, StreamId, u64),
}

/// The sending side of the fast path for one session.
#[derive(Debug)]
pub(crate) struct LossySender {
    next_packet: u64,
    in_flight: BTreeMap<u64, SentPacket>,
    /// Payload bytes in `in_flight`.
    pub bytes_in_flight: usize,
    /// Payloads declared lost, to be sent again (fast path or lossless), oldest first.
    pub lost: VecDeque<Chunk>,
    largest_acked: Option<u64>,
    pub rtt: RttEstimator,
    pub window: usize,
    ssthresh: usize,
    /// Losses of packets sent before this instant belong to the reduction already made.
    recovery_start: Option<Instant>,
    /// Packets declared lost lately, by number: the largest number acknowledged when they
    /// were, the loss episode (reduction) they belong to, and their payload (order, stream, offset). One acknowledged later was
    /// not lost but overtaken.
    declared_lost: BTreeMap<u64, DeclaredLost>,
    /// The packet threshold in force (starts at [`PACKET_THRESHOLD`]).
    packet_threshold: u64,
    /// Added to the round trip in the time threshold once the path showed reordering
    /// (RACK's reordering window): grows by a quarter of the minimum round trip per
    /// episode of spurious losses, up to the smoothed round trip.
    reorder_extra: Duration,
    /// The current loss episode: its number, the window and threshold before its
    /// reduction, how many packets it declared lost and how many of those came after all.
    episode: u64,
    undo: Option<(usize, usize)>,
    episode_lost: u64,
    episode_spurious: u64,
    /// The episode whose spurious losses last widened the reordering window.
    reorder_widened_in: u64,
    /// Losses that turned out to be reordering.
    pub spurious_losses: u64,
    /// Bytes acknowledged in congestion avoidance since the window last grew.
    avoidance_acked: usize,
    /// The round trip in progress ends when a packet numbered this or later is
    /// acknowledged; slow start ends only if the whole round showed a queue.
    round_end: u64,
    /// The smallest round-trip sample of the round in progress, and how many it had.
    round_min_rtt: Option<Duration>,
    round_samples: u32,
    /// Slow start saw a queue and now grows carefully (HyStart++'s conservative slow
    /// start, RFC 9406 §4.2).
    css: Option<ConservativeStart>,
    /// The most bytes in flight after a send, in this round and in the one before: the
    /// window grows only while it is what limits the sender (RFC 9002 §7.8).
    round_max_in_flight: usize,
    prev_round_max_in_flight: usize,
    loss_time: Option<Instant>,
    last_sent: Option<Instant>,
    pto_count: u32,
    /// Packets that may still go outside the window and the pacer: a probe timeout's.
    probes: usize,
    /// Lossy packets do not get through this link (several probe timeouts unanswered
    /// while lossless frames kept coming): the session stops using them until the path
    /// changes or [`BROKEN_RETRY`] passes.
    pub broken: bool,
    /// When the fast path was declared broken.
    broken_at: Option<Instant>,
    /// The order the next new chunk gets.
    next_order: u64,
    /// When the peer's latest lossless frame arrived: proof that the path carries
    /// something, which tells a broken fast path from an outage.
    heard_at: Option<Instant>,
    /// When the latest probe timeout fired.
    probe_at: Option<Instant>,
    /// Probe timeouts in a row whose previous probe went unanswered while the peer was
    /// heard after it.
    unanswered_while_heard: u32,
    /// A probe timeout fired: the session sends a lossless PING (unless one is still
    /// unanswered), whose PONG tells whether the whole path or only the fast path is down.
    pub wants_liveness_ping: bool,
    pacer_tokens: usize,
    pacer_last: Option<Instant>,
    /// Counters for the stats.
    pub packets_sent: u64,
    pub packets_lost: u64,
    pub bytes_resent: u64,
    pub probe_timeouts: u64,
    /// Payloads queued as shadows of DATA still in the frame log.
    pub shadows: u64,
}

impl Default for LossySender {
    fn default() -> Self {
        LossySender {
            next_packet: 0,
            in_flight: BTreeMap::new(),
            bytes_in_flight: 0,
            lost: VecDeque::new(),
            largest_acked: None,
            rtt: RttEstimator::default(),
            window: INITIAL_WINDOW,
            ssthresh: usize::MAX,
            recovery_start: None,
            declared_lost: BTreeMap::new(),
            packet_threshold: PACKET_THRESHOLD,
            reorder_extra: Duration::ZERO,
            episode: 0,
            undo: None,
            episode_lost: 0,
            episode_spurious: 0,
            reorder_widened_in: 0,
            spurious_losses: 0,
            avoidance_acked: 0,
            round_end: 0,
            round_min_rtt: None,
            round_samples: 0,
            css: None,
            round_max_in_flight: 0,
            prev_round_max_in_flight: 0,
            loss_time: None,
            last_sent: None,
            pto_count: 0,
            probes: 0,
            broken: false,
            broken_at: None,
            next_order: 0,
            heard_at: None,
            probe_at: None,
            unanswered_while_heard: 0,
            wants_liveness_ping: false,
            pacer_tokens: PACER_BURST * SEGMENT,
            pacer_last: None,
            packets_sent: 0,
            packets_lost: 0,
            bytes_resent: 0,
            probe_timeouts: 0,
            shadows: 0,
        }
    }
}

/// What an acknowledgement did.
#[derive(Debug, Default)]
pub(crate) struct Acked {
    /// Bytes per stream whose packets are now acknowledged.
    pub streams: Vec<(StreamId, u64)>,
}

impl LossySender {
    /// Whether the window has room for one more full packet.
    pub fn window_open(&self) -> bool {
        self.bytes_in_flight + SEGMENT <= self.window
    }

    /// Whether a probe timeout's packet is waiting to go: it goes whatever the window and
    /// the pacer say (the first ones in `lost`).
    pub fn probe_due(&self) -> bool {
        self.probes > 0 && !self.lost.is_empty()
    }

    /// When the pacer lets `bytes` go; `None`: now.
    pub fn pacing_delay(&mut self, now: Instant, bytes: usize) -> Option<Instant> {
        let Some(srtt) = self.rtt.smoothed else {
            return None; // no estimate yet: the initial window goes out as it is
        };
        let rate = self.pacing_rate(srtt); // bytes per second
        let capacity = (PACER_BURST * SEGMENT).max((rate / 500) as usize); // 2 ms worth
        if let Some(last) = self.pacer_last {
            let gained = (now.saturating_duration_since(last).as_nanos() as u64)
                .saturating_mul(rate)
                / 1_000_000_000;
            self.pacer_tokens = (self.pacer_tokens as u64 + gained).min(capacity as u64) as usize;
        }
        self.pacer_last = Some(now);
        if self.pacer_tokens >= bytes {
            return None;
        }
        let missing = (bytes - self.pacer_tokens) as u64;
        let wait = Duration::from_nanos(missing.saturating_mul(1_000_000_000) / rate.max(1));
        Some(now + wait.max(Duration::from_micros(50)))
    }

    fn pacing_rate(&self, srtt: Duration) -> u64 {
        let (num, den) = if self.window < self.ssthresh {
            (2, 1)
        } else {
            (5, 4)
        };
        let per_rtt = self.window as u64 * num / den;
        per_rtt.saturating_mul(1_000_000) / (srtt.as_micros() as u64).max(1)
    }

    /// Takes the number for a packet about to carry `chunk`, and records it in flight. A
    /// new chunk (not `resend`) takes its place in the order of first sending.
    pub fn on_sent(&mut self, now: Instant, mut chunk: Chunk, resend: bool) -> u64 {
        if !resend {
            chunk.order = self.next_order;
            self.next_order += 1;
        }
        let n = self.next_packet;
        self.next_packet += 1;
        let len = chunk.payload.len();
        self.bytes_in_flight += len;
        self.round_max_in_flight = self.round_max_in_flight.max(self.bytes_in_flight);
        self.pacer_tokens = self.pacer_tokens.saturating_sub(len);
        self.in_flight.insert(n, SentPacket { time: now, chunk });
        self.last_sent = Some(now);
        self.packets_sent += 1;
        self.probes = self.probes.saturating_sub(1);
        if resend {
            self.bytes_resent += len as u64;
        }
        n
    }

    /// The next packet number (for encoding before [`LossySender::on_sent`]).
    pub fn peek_number(&self) -> u64 {
        self.next_packet
    }

    /// Handles LACK: `ranges` newest first. Returns the bytes acknowledged per stream, or
    /// `Err` if it acknowledges a number never sent (a protocol violation).
    pub fn on_ack(
        &mut self,
        now: Instant,
        ranges: &[(u64, u64)],
        ack_delay: Duration,
    ) -> Result<Acked, ()> {
        let mut acked = Acked::default();
        let Some(&(_, newest_end)) = ranges.first() else {
            return Ok(acked);
        };
        if newest_end > self.next_packet {
            return Err(());
        }
        let largest = newest_end - 1;
        self.on_spurious(ranges, &mut acked);
        // The newest packet this LACK acknowledges for the first time: its round trip is
        // the sample, taken before the window grows so that growth sees this LACK's delay.
        let newest_acked = ranges
            .iter()
            .filter_map(|&(start, end)| self.in_flight.range(start..end).next_back())
            .map(|(&k, p)| (k, p.time))
            .max_by_key(|&(k, _)| k);
        let Some((newest, sent_at)) = newest_acked else {
            return Ok(acked); // nothing new in flight: a duplicate, reordered or late LACK
        };
        if newest >= self.round_end {
            self.end_round();
        }
        if newest == largest {
            self.rtt
                .update(now.saturating_duration_since(sent_at), ack_delay);
            let sample = self.rtt.latest_adjusted;
            self.round_min_rtt = Some(self.round_min_rtt.map_or(sample, |m| m.min(sample)));
            self.round_samples += 1;
        }
        for &(start, end) in ranges {
            let keys: Vec<u64> = self.in_flight.range(start..end).map(|(&k, _)| k).collect();
            for k in keys {
                let Some(p) = self.in_flight.remove(&k) else {
                    continue;
                };
                let len = p.chunk.payload.len();
                self.bytes_in_flight -= len;
                self.grow(len, p.time);
                if p.chunk.shadow {
                    continue;
                }
                match acked.streams.last_mut() {
                    Some((s, n)) if *s == p.chunk.stream => *n += len as u64,
                    _ => acked.streams.push((p.chunk.stream, len as u64)),
                }
            }
        }
        self.largest_acked = Some(self.largest_acked.map_or(largest, |l| l.max(largest)));
        // Two probe timeouts passed with nothing acknowledged: if this LACK shows packets
        // missing, the path was really congested all that time (RFC 9002 §7.6).
        let persistent = self.pto_count >= 2;
        self.pto_count = 0;
        self.probes = 0;
        self.probe_at = None;
        self.unanswered_while_heard = 0;
        self.wants_liveness_ping = false;
        self.detect_lost(now, persistent);
        Ok(acked)
    }

    /// Packets this LACK acknowledges that were declared lost: they were overtaken, not
    /// lost (the path reorders). The packet threshold grows past how far they were
    /// overtaken, the time threshold by a reordering window, and when every loss of the
    /// latest episode turns out so, its window reduction is undone (as Linux undoes one).
    /// A payload still waiting to be sent again is not: its bytes are acknowledged here.
    /// Without this, 1% of packets 10 ms late held a 100 Mbit/s path to 0.5 MB/s.
    fn on_spurious(&mut self, ranges: &[(u64, u64)], acked: &mut Acked) {
        let mut found: Vec<(u64, DeclaredLost)> = Vec::new();
        for &(start, end) in ranges {
            let keys: Vec<u64> = self
                .declared_lost
                .range(start..end)
                .map(|(&k, _)| k)
                .collect();
            for k in keys {
                if let Some(e) = self.declared_lost.remove(&k) {
                    found.push((k, e));
                }
            }
        }
        for (k, d) in found {
            let DeclaredLost {
                largest_then,
                episode,
                payload: order,
            } = d;
            self.spurious_losses += 1;
            self.packet_threshold = self
                .packet_threshold
                .max(largest_then.saturating_sub(k) + 1)
                .min(MAX_PACKET_THRESHOLD);
            if episode != self.reorder_widened_in {
                self.reorder_widened_in = episode;
                let step = (self.rtt.min / 4).max(GRANULARITY);
                self.reorder_extra = (self.reorder_extra + step).min(self.rtt.get());
            }
            if episode == self.episode {
                self.episode_spurious += 1;
                if self.episode_spurious >= self.episode_lost {
                    if let Some((window, ssthresh)) = self.undo.take() {
                        self.window = self.window.max(window);
                        self.ssthresh = ssthresh;
                    }
                }
            }
            // The payload, if it still waits to go again, need not: it arrived.
            if let Some(i) = self
                .lost
                .iter()
                .position(|c| (c.order, c.stream, c.offset) == order)
            {
                let c = self.lost.remove(i).expect("found");
                if !c.shadow {
                    acked.streams.push((c.stream, c.payload.len() as u64));
                }
            }
        }
    }

    /// Whether a round-trip sample shows packets waiting in a queue on the way.
    fn queued(&self, sample: Duration) -> bool {
        sample.saturating_sub(self.rtt.min) > (self.rtt.min / 2).max(QUEUE_ALLOWANCE)
    }

    /// A round trip ended (with enough samples to judge). In slow start, a round whose
    /// smallest sample shows a queue starts conservative slow start; a later round below
    /// that one's minimum resumes slow start, and five that are not end it (HyStart++, RFC
    /// 9406, judged on the queueing the `grow` hold uses). A late sample or round — a
    /// thread of either side descheduled for a few milliseconds, a burst of streams
    /// opening — thus only pauses the growth: ending slow start on it, as toxtun first
    /// did, left NewReno to climb from a window a tenth of the path's, one packet per
    /// round trip.
    fn end_round(&mut self) {
        self.round_end = self.next_packet;
        self.prev_round_max_in_flight = std::mem::take(&mut self.round_max_in_flight);
        if self.round_samples < ROUND_SAMPLES {
            return; // too few samples to judge: the round goes on
        }
        let Some(round_min) = self.round_min_rtt.take() else {
            return;
        };
        self.round_samples = 0;
        if self.window >= self.ssthresh {
            return; // congestion avoidance: only losses and the per-sample hold act
        }
        let queued = self.queued(round_min);
        match &mut self.css {
            None if queued => {
                self.css = Some(ConservativeStart {
                    baseline: round_min,
                    rounds_left: CSS_ROUNDS,
                });
            }
            None => {}
            // The queue went away (it was a stall, or other traffic that left): back to
            // slow start.
            Some(css) if round_min < css.baseline => self.css = None,
            Some(css) => {
                css.rounds_left -= 1;
                if css.rounds_left == 0 {
                    self.css = None;
                    self.ssthresh = self.window;
                }
            }
        }
    }

    fn grow(&mut self, bytes: usize, sent: Instant) {
        if self.recovery_start.is_some_and(|r| sent <= r) {
            return; // acknowledged from before the reduction: no growth yet
        }
        if self.rtt.smoothed.is_some() && self.queued(self.rtt.latest_adjusted) {
            // Packets wait in a queue on the way (c-toxcore's, the kernel's, a router's):
            // a larger window would only lengthen it until it overflows. Hold the window
            // (as Vegas does) and let losses, if any, reduce it.
            return;
        }
        if !self.window_limited() {
            // The sender used a fraction of the window (the streams had nothing more, or
            // no credit): acknowledgements say nothing about a larger one. Growing anyway
            // lets a tunnel that carried keystrokes for an hour meet its first bulk copy
            // with a window no path has shown it can take, all of it sent at once.
            // (Credit-limited bulk transfers still reach large windows: their in-flight
            // peaks, when credit arrives in bulk, pass the slow-start test; BENCHMARKS.md,
            // issue 8.)
            return;
        }
        if self.window < self.ssthresh {
            // Slow start doubles per round trip; conservative slow start grows a quarter
            // as fast while it finds out whether the queue it saw stays.
            self.window += if self.css.is_some() {
                bytes / CSS_GROWTH_DIVISOR
            } else {
                bytes
            };
        } else {
            self.avoidance_acked += bytes;
            if self.avoidance_acked >= self.window {
                self.avoidance_acked -= self.window;
                self.window += SEGMENT;
            }
        }
        self.window = self.window.min(MAX_WINDOW);
    }

    /// Whether the window is what held the sender back lately: in slow start, whether it
    /// used more than half of it (the next round may use it all), after it whether it
    /// used all but a few packets of it (as Linux's `tcp_is_cwnd_limited` judges).
    fn window_limited(&self) -> bool {
        let used = self.round_max_in_flight.max(self.prev_round_max_in_flight);
        if self.window < self.ssthresh {
            used * 2 > self.window
        } else {
            used + 3 * SEGMENT >= self.window
        }
    }

    /// Declares packets lost by the packet and time thresholds; arms the loss timer for the
    /// others below the largest acknowledged.
    fn detect_lost(&mut self, now: Instant, persistent_congestion: bool) {
        self.loss_time = None;
        let Some(largest) = self.largest_acked else {
            return;
        };
        let delay = self
            .rtt
            .loss_delay()
            .max(self.rtt.latest.max(self.rtt.get()) + self.reorder_extra);
        let mut lost: Vec<u64> = Vec::new();
        for (&k, p) in self.in_flight.range(..largest) {
            if k + self.packet_threshold <= largest || p.time + delay <= now {
                lost.push(k);
            } else {
                self.loss_time = Some(p.time + delay);
                break;
            }
        }
        self.declare_lost(now, &lost);
        if persistent_congestion && !lost.is_empty() {
            self.window = MIN_WINDOW;
            self.undo = None; // an outage or a collapse, not reordering
        }
    }

    fn declare_lost(&mut self, now: Instant, numbers: &[u64]) {
        let mut newest_lost_sent: Option<Instant> = None;
        let mut chunks = Vec::with_capacity(numbers.len());
        let largest = self.largest_acked.unwrap_or(0);
        let mut declared = Vec::with_capacity(numbers.len());
        for k in numbers {
            if let Some(p) = self.in_flight.remove(k) {
                self.bytes_in_flight -= p.chunk.payload.len();
                newest_lost_sent = Some(newest_lost_sent.map_or(p.time, |t| t.max(p.time)));
                declared.push((*k, (p.chunk.order, p.chunk.stream, p.chunk.offset)));
                chunks.push(p.chunk);
                self.packets_lost += 1;
            }
        }
        // Oldest bytes first: a resend's packet number says nothing of its bytes' age, and
        // the receiver delivers nothing past the oldest gap.
        chunks.sort_by_key(|c| c.order);
        self.lost.extend(chunks);
        if let Some(sent) = newest_lost_sent {
            if self.recovery_start.is_none_or(|r| sent > r) {
                // One reduction per round of losses (packets sent before it are forgiven).
                self.recovery_start = Some(now);
                self.episode += 1;
                self.undo = Some((self.window, self.ssthresh));
                self.episode_lost = 0;
                self.episode_spurious = 0;
                self.window = (self.window * BETA_NUM / BETA_DEN).max(MIN_WINDOW);
                self.ssthresh = self.window;
                self.css = None;
                self.avoidance_acked = 0;
            }
        }
        self.episode_lost += declared.len() as u64;
        for (k, order) in declared {
            self.declared_lost.insert(
                k,
                DeclaredLost {
                    largest_then: largest,
                    episode: self.episode,
                    payload: order,
                },
            );
        }
        while self.declared_lost.len() > DECLARED_LOST_KEPT {
            self.declared_lost.pop_first();
        }
    }

    /// When the loss or probe timer fires, if armed.
    pub fn deadline(&self) -> Option<Instant> {
        if let Some(t) = self.loss_time {
            return Some(t);
        }
        if self.in_flight.is_empty() {
            return None;
        }
        // From the latest send or probe timeout, whichever is later: a probe that could not
        // go yet (the transport's lossy queue is full) must not leave the timer due.
        let since = self
            .last_sent?
            .max(self.probe_at.unwrap_or(self.last_sent?));
        Some(since + self.probe_interval())
    }

    /// The wait before the next probe timeout: the probe timeout, doubled for each one in a
    /// row, but no more than [`MAX_PROBE_INTERVAL`] (or the probe timeout itself, on a path
    /// slower than that).
    fn probe_interval(&self) -> Duration {
        let pto = self.rtt.pto();
        let backed_off = pto * (1u32 << self.pto_count.min(6));
        backed_off.min(pto.max(MAX_PROBE_INTERVAL))
    }

    /// The peer's lossless frame arrived: the path carries something.
    pub fn on_lossless_heard(&mut self, now: Instant) {
        self.heard_at = Some(now);
    }

    /// Fires the loss or probe timer if due. A probe timeout sends the oldest bytes in
    /// flight again, first and outside the window, so that whatever the path did a LACK
    /// follows; it reduces nothing (the next LACK tells whether anything was lost). Several
    /// in a row unanswered while the peer's lossless frames keep arriving mark the fast
    /// path broken; while the peer is silent too, the path is out, and the probes go on.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.loss_time.is_some_and(|t| now >= t) {
            self.detect_lost(now, false);
            return;
        }
        if self.deadline().is_some_and(|t| now >= t) {
            // Was the previous probe unanswered though the peer was heard after it went?
            let heard_after_probe = matches!(
                (self.probe_at, self.heard_at),
                (Some(probe), Some(heard)) if heard > probe
            );
            if heard_after_probe {
                self.unanswered_while_heard += 1;
            } else {
                self.unanswered_while_heard = 0;
            }
            self.wants_liveness_ping = true;
            self.probe_at = Some(now);
            self.pto_count += 1;
            self.probe_timeouts += 1;
            // The oldest bytes, whatever their packet numbers: after a long outage every
            // probe carries the bytes the receiver waits for, so they are delivered the
            // moment the path returns. A copy still on its way is acknowledged in vain (it
            // left `in_flight`); its bytes are counted once, by the copy that replaces it.
            let mut oldest: Vec<(u64, u64)> = self
                .in_flight
                .iter()
                .map(|(&k, p)| (p.chunk.order, k))
                .collect();
            oldest.sort_unstable();
            oldest.truncate(PROBE_PACKETS);
            for &(_, k) in oldest.iter().rev() {
                if let Some(p) = self.in_flight.remove(&k) {
                    self.bytes_in_flight -= p.chunk.payload.len();
                    self.lost.push_front(p.chunk);
                }
            }
            self.probes = oldest.len();
            if self.unanswered_while_heard >= PTOS_BEFORE_FALLBACK {
                self.broken = true;
                self.broken_at = Some(now);
            }
        }
    }

    /// When a fast path declared broken is to be tried again.
    pub fn retry_at(&self) -> Option<Instant> {
        self.broken_at
            .filter(|_| self.broken)
            .map(|t| t + BROKEN_RETRY)
    }

    /// The fast path is going away (relay, suspension, broken): everything in flight is to
    /// be sent again by whatever path comes next.
    pub fn abandon_in_flight(&mut self) {
        let chunks = std::mem::take(&mut self.in_flight);
        for (_, p) in chunks {
            self.lost.push_back(p.chunk);
        }
        self.bytes_in_flight = 0;
        self.loss_time = None;
        self.pto_count = 0;
        self.probes = 0;
        self.probe_at = None;
        self.unanswered_while_heard = 0;
        self.wants_liveness_ping = false;
    }

    /// A new path: forget the old one's round trip and window, keep the numbering.
    pub fn new_path(&mut self) {
        self.abandon_in_flight();
        let LossySender {
            next_packet,
            next_order,
            lost,
            packets_sent,
            packets_lost,
            bytes_resent,
            probe_timeouts,
            shadows,
            spurious_losses,
            ..
        } = std::mem::take(self);
        *self = LossySender {
            next_packet,
            next_order,
            lost,
            packets_sent,
            packets_lost,
            bytes_resent,
            probe_timeouts,
            shadows,
            spurious_losses,
            ..LossySender::default()
        };
    }

    /// Forgets everything of a stream (it was reset: nothing of it is resent).
    pub fn forget_stream(&mut self, stream: StreamId) {
        let gone: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, p)| p.chunk.stream == stream)
            .map(|(&k, _)| k)
            .collect();
        for k in gone {
            if let Some(p) = self.in_flight.remove(&k) {
                self.bytes_in_flight -= p.chunk.payload.len();
            }
        }
        self.lost.retain(|c| c.stream != stream);
    }
}

/// The receiving side of the fast path: which packet numbers arrived, and when to say so.
#[derive(Debug, Default)]
pub(crate) struct LossyReceiver {
    /// Received numbers as disjoint ranges `[start, end)`, newest first, at most
    /// `MAX_ACK_RANGES` (older ones were acknowledged before, or are resent).
    ranges: VecDeque<(u64, u64)>,
    /// When the newest packet arrived.
    newest_at: Option<Instant>,
    unacked: u32,
    ack_due: Option<Instant>,
    ack_now: bool,
    /// Counters for the stats.
    pub packets_received: u64,
    pub duplicates: u64,
    pub acks_sent: u64,
}

impl LossyReceiver {
    /// Records a packet number. Returns `false` for a duplicate (its bytes are ignored).
    pub fn on_packet(&mut self, now: Instant, number: u64) -> bool {
        self.packets_received += 1;
        let newest_before = self.ranges.front().map(|r| r.1);
        if !self.insert(number) {
            self.duplicates += 1;
            return false;
        }
        if newest_before.is_none_or(|end| number + 1 >= end) {
            self.newest_at = Some(now);
        }
        if newest_before.is_some_and(|end| number != end) {
            // A gap opened or a hole filled: say so at once, so the sender learns fast.
            self.ack_now = true;
        }
        self.unacked += 1;
        if self.unacked >= ACK_EVERY_PACKETS {
            self.ack_now = true;
        }
        if self.ack_due.is_none() {
            self.ack_due = Some(now + MAX_ACK_DELAY);
        }
        true
    }

    fn insert(&mut self, n: u64) -> bool {
        // Find the first range (newest first) that starts at or below n.
        let i = self.ranges.iter().position(|&(s, _)| s <= n);
        match i {
            Some(i) if n < self.ranges[i].1 => return false,
            _ => {}
        }
        if i.is_none()
            && self.ranges.len() == MAX_ACK_RANGES
            && self.ranges.back().is_some_and(|r| n < r.0)
        {
            // Older than anything we still track: it may be a duplicate; take it (the
            // stream dedups by offset) and do not acknowledge it again.
            return true;
        }
        let at = i.unwrap_or(self.ranges.len());
        // Extend the range below (at `at`) or the one above (at `at - 1`), or insert.
        let joins_below = at < self.ranges.len() && self.ranges[at].1 == n;
        let joins_above = at > 0 && self.ranges[at - 1].0 == n + 1;
        match (joins_below, joins_above) {
            (true, true) => {
                let above = self.ranges.remove(at - 1).expect("present");
                self.ranges[at - 1].1 = above.1;
            }
            (true, false) => self.ranges[at].1 = n + 1,
            (false, true) => self.ranges[at - 1].0 = n,
            (false, false) => {
                self.ranges.insert(at, (n, n + 1));
                if self.ranges.len() > MAX_ACK_RANGES {
                    self.ranges.pop_back();
                }
            }
        }
        true
    }

    /// When a LACK falls due, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.ack_due
    }

    /// The acknowledgement delay ran out: a LACK goes out at the next chance.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.ack_due.is_some_and(|t| now >= t) {
            self.ack_due = None;
            self.ack_now = true;
        }
    }

    /// Whether a LACK should go out now.
    pub fn wants_ack(&self) -> bool {
        self.unacked > 0 && self.ack_now
    }

    /// The LACK to send: ranges newest first, and how long the newest packet waited.
    pub fn take_ack(&mut self, now: Instant) -> (u32, Vec<(u64, u64)>) {
        self.unacked = 0;
        self.ack_now = false;
        self.ack_due = None;
        self.acks_sent += 1;
        let delay = self
            .newest_at
            .map_or(0, |t| now.saturating_duration_since(t).as_micros())
            .min(u128::from(u32::MAX)) as u32;
        (delay, self.ranges.iter().copied().collect())
    }
}

#[cfg(test)]
mod tests {
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
    fn receiver_tracks_ranges_newest_first_and_spots_duplicates() {
        let t = origin();
        let mut r = LossyReceiver::default();
        for n in [0, 1, 2, 5, 6, 4, 9] {
            assert!(r.on_packet(t, n));
        }
        assert!(!r.on_packet(t, 5), "a duplicate");
        assert!(r.wants_ack(), "gaps are acknowledged at once");
        let (_, ranges) = r.take_ack(t);
        assert_eq!(ranges, vec![(9, 10), (4, 7), (0, 3)]);
        assert!(r.on_packet(t, 3));
        assert!(r.on_packet(t, 7));
        assert!(r.on_packet(t, 8));
        assert_eq!(r.take_ack(t).1, vec![(0, 10)]);
        assert!(!r.wants_ack());
        assert!(r.on_packet(t, 10));
        assert!(!r.wants_ack(), "in order: wait for more, or the delay");
        r.on_timeout(r.deadline().unwrap());
        assert!(r.wants_ack());
    }

    #[test]
    fn receiver_keeps_a_bounded_number_of_ranges() {
        let t = origin();
        let mut r = LossyReceiver::default();
        for n in 0..1000u64 {
            r.on_packet(t, n * 2);
        }
        let (_, ranges) = r.take_ack(t);
        assert_eq!(ranges.len(), MAX_ACK_RANGES);
        assert_eq!(ranges[0], (1998, 1999));
    }

    #[test]
    fn sender_detects_losses_by_threshold_and_reduces_once() {
        let t0 = origin();
        let mut s = LossySender::default();
        for i in 0..10 {
            s.on_sent(t0, chunk(i * SEGMENT as u64), false);
        }
        let w0 = s.window;
        let t1 = t0 + Duration::from_millis(10);
        // Packets 0 and 1 lost; 2..10 acknowledged.
        s.on_ack(t1, &[(2, 10)], Duration::ZERO).unwrap();
        assert_eq!(s.packets_lost, 2);
        assert_eq!(s.lost.len(), 2);
        assert_eq!(s.lost[0].offset, 0);
        assert_eq!(s.rtt.get(), Duration::from_millis(10));
        assert!(s.window < w0 + 8 * SEGMENT, "reduced after the loss");
        let reduced = s.window;
        assert_eq!(s.bytes_in_flight, 0);
        // A LACK for numbers never sent is a violation.
        assert!(s.on_ack(t1, &[(0, 11)], Duration::ZERO).is_err());
        // More losses from the same round do not reduce again.
        assert_eq!(s.window, reduced);
    }

    #[test]
    fn slow_start_doubles_per_round_trip() {
        let mut t = origin();
        let mut s = LossySender::default();
        let rtt = Duration::from_millis(2);
        for _ in 0..8 {
            let w = s.window;
            let first = s.peek_number();
            while s.window_open() {
                s.on_sent(t, chunk(0), false);
            }
            t += rtt;
            s.on_ack(t, &[(first, s.peek_number())], Duration::ZERO)
                .unwrap();
            assert!(s.window >= 2 * w - SEGMENT, "{} -> {}", w, s.window);
        }
        assert!(
            s.window >= 1 << 20,
            "16 ms of slow start reach a MiB window"
        );
    }

    /// Sends a full window, then acknowledges it one packet at a time `rtt` later (as
    /// LACKs trickle in); returns the window after the round.
    fn round(s: &mut LossySender, t: &mut Instant, rtt: Duration) -> usize {
        let first = s.peek_number();
        while s.window_open() {
            s.on_sent(*t, chunk(0), false);
        }
        *t += rtt;
        for n in first..s.peek_number() {
            s.on_ack(*t, &[(n, n + 1)], Duration::ZERO).unwrap();
        }
        s.window
    }

    #[test]
    fn a_growing_queue_stops_slow_start_without_a_loss() {
        let mut t = origin();
        let mut s = LossySender::default();
        // Round trips of 1 ms, then the queue builds: 1, 1, 4, 8, 8 ms.
        let windows: Vec<usize> = [1u64, 1, 4, 8, 8]
            .iter()
            .map(|&ms| round(&mut s, &mut t, Duration::from_millis(ms)))
            .collect();
        assert!(
            windows[1] > windows[0],
            "slow start while the path is empty"
        );
        assert!(
            windows[2] > windows[1],
            "3 ms of queueing is within the allowance"
        );
        assert_eq!(
            windows[3], windows[2],
            "a queue of 7 ms on a 1 ms path holds the window: {windows:?}"
        );
        assert_eq!(windows[4], windows[3], "and keeps holding it: {windows:?}");
        assert!(
            s.css.is_some(),
            "the queued round started conservative slow start"
        );
        for _ in 0..CSS_ROUNDS {
            round(&mut s, &mut t, Duration::from_millis(8));
        }
        assert!(
            s.ssthresh <= s.window,
            "five queued rounds ended slow start"
        );
        assert_eq!(s.packets_lost, 0);
    }

    #[test]
    fn a_stalled_round_pauses_slow_start_without_ending_it() {
        let mut t = origin();
        let mut s = LossySender::default();
        let ms = Duration::from_millis(1);
        for _ in 0..3 {
            round(&mut s, &mut t, ms);
        }
        // A whole round's LACKs come 9 ms late (a thread of the receiver descheduled),
        // then the path is as fast as before.
        // A round is judged when the next one's first LACK comes.
        let w = round(&mut s, &mut t, 9 * ms);
        round(&mut s, &mut t, ms);
        assert!(s.css.is_some(), "the late round looked like a queue");
        round(&mut s, &mut t, ms);
        assert!(s.css.is_none(), "the queue went away: slow start again");
        assert_eq!(s.ssthresh, usize::MAX);
        assert!(
            round(&mut s, &mut t, ms) >= 2 * w,
            "and it goes on doubling"
        );
    }

    #[test]
    fn a_window_the_sender_does_not_fill_does_not_grow() {
        let mut t = origin();
        let mut s = LossySender::default();
        let rtt = Duration::from_millis(1);
        // Slow start fills the window a few rounds, then the streams have only 8 packets
        // per round trip (credit or the application limits them) for a long time.
        for _ in 0..3 {
            round(&mut s, &mut t, rtt);
        }
        let w = s.window;
        for _ in 0..200 {
            let first = s.peek_number();
            for _ in 0..8 {
                s.on_sent(t, chunk(0), false);
            }
            t += rtt;
            s.on_ack(t, &[(first, s.peek_number())], Duration::ZERO)
                .unwrap();
        }
        assert_eq!(
            s.window, w,
            "200 app-limited rounds left the window as it was"
        );
        // Once the sender fills it again, it grows again.
        assert!(round(&mut s, &mut t, rtt) > w);
        assert!(round(&mut s, &mut t, rtt) > w * 3 / 2);
    }

    #[test]
    fn probe_timeouts_send_the_oldest_again_then_declare_the_path_broken() {
        // Lossy packets vanish while the peer's lossless frames (its PONGs) keep coming:
        // the fast path, not the path, is down.
        let t0 = origin();
        let mut s = LossySender::default();
        for i in 0..5 {
            s.on_sent(t0, chunk(i * SEGMENT as u64), false);
        }
        let mut ptos = 0;
        while !s.broken {
            let due = s.deadline().expect("armed");
            s.on_timeout(due);
            ptos += 1;
            assert!(s.wants_liveness_ping, "each probe timeout asks for a PING");
            s.wants_liveness_ping = false;
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
        assert_eq!(s.packets_lost, 0, "a probe timeout declares nothing lost");
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
                due - t <= MAX_PROBE_INTERVAL.max(s.rtt.pto()),
                "probe {i} came {:?} after the last",
                due - t
            );
            t = due;
            s.on_timeout(due);
            assert!(!s.broken, "an outage is not a broken fast path");
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
        assert!(!s.broken);
        assert_eq!(s.lost.len(), 18, "the others go again");
        let offsets: Vec<u64> = s.lost.iter().map(|c| c.offset).collect();
        let mut sorted = offsets.clone();
        sorted.sort_unstable();
        assert_eq!(offsets, sorted, "oldest bytes first");
    }

    /// A sender on a 1 ms path with a window of `n` full packets, all of them in flight.
    fn in_flight(n: u64) -> LossySender {
        let t0 = origin();
        let mut s = LossySender::default();
        s.rtt.update(Duration::from_millis(1), Duration::ZERO);
        s.window = n as usize * SEGMENT;
        for i in 0..n {
            s.on_sent(t0, chunk(i * SEGMENT as u64), false);
        }
        s
    }

    #[test]
    fn a_stall_that_ends_costs_no_window() {
        // The path (a Tox thread that ran late) holds every packet past the probe timeout,
        // then delivers them all: nothing was lost, so the window stays.
        let mut s = in_flight(40);
        s.ssthresh = s.window;
        let w = s.window;
        let due = s.deadline().expect("armed");
        s.on_timeout(due);
        assert_eq!(s.window, w);
        let probes: Vec<Chunk> = s.lost.drain(..).collect();
        for c in probes {
            s.on_sent(due, c, true);
        }
        // Everything arrives: the originals and the probes.
        let t1 = due + Duration::from_millis(1);
        s.on_ack(t1, &[(0, s.peek_number())], Duration::ZERO)
            .unwrap();
        assert_eq!(s.packets_lost, 0);
        assert!(s.window >= w, "{} < {w}", s.window);
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
        assert!(s.packets_lost > 30);
        assert_eq!(s.window, MIN_WINDOW);
    }

    #[test]
    fn a_loss_that_was_only_reordering_is_undone_and_raises_the_thresholds() {
        let t0 = origin();
        let mut s = in_flight(20);
        s.ssthresh = usize::MAX;
        let w = s.window;
        // Packet 0 is overtaken by 19 others: declared lost, the window cut.
        let t1 = t0 + Duration::from_millis(1);
        s.on_ack(t1, &[(1, 20)], Duration::ZERO).unwrap();
        assert_eq!(s.packets_lost, 1);
        assert!(s.ssthresh < usize::MAX, "slow start ended on the loss");
        let reduced = s.window;
        assert_eq!(s.lost.len(), 1, "waiting to go again");
        // Then it arrives after all.
        let acked = s.on_ack(t1, &[(0, 20)], Duration::ZERO).unwrap();
        assert_eq!(s.spurious_losses, 1);
        assert_eq!(s.ssthresh, usize::MAX, "the reduction was undone");
        assert!(s.window > reduced && s.window >= w);
        assert!(s.lost.is_empty(), "its bytes arrived: not sent again");
        assert_eq!(
            acked.streams.iter().map(|x| x.1).sum::<u64>(),
            SEGMENT as u64
        );
        assert!(s.packet_threshold >= 20, "{}", s.packet_threshold);
        assert!(s.reorder_extra > Duration::ZERO);
        // A real loss in a later episode still reduces the window.
        let base = s.peek_number();
        for i in 0..10 {
            s.on_sent(t1, chunk((20 + i) * SEGMENT as u64), false);
        }
        let t2 = t1 + Duration::from_millis(50);
        s.on_ack(t2, &[(base + 1, base + 10)], Duration::ZERO)
            .unwrap();
        assert_eq!(
            s.packets_lost, 1,
            "not yet: nine later packets are within the threshold"
        );
        let due = s.deadline().expect("the loss timer");
        s.on_timeout(due);
        assert_eq!(s.packets_lost, 2, "found by the time threshold");
    }

    #[test]
    fn pacer_spreads_a_window_over_the_round_trip() {
        let t0 = origin();
        let mut s = LossySender::default();
        s.rtt.update(Duration::from_millis(10), Duration::ZERO);
        s.window = 100 * SEGMENT;
        s.ssthresh = 0; // avoidance: 1.25 windows per round trip
        let mut t = t0;
        let mut sent = 0;
        while t < t0 + Duration::from_millis(10) {
            match s.pacing_delay(t, SEGMENT) {
                None => {
                    s.pacer_tokens -= SEGMENT;
                    sent += 1;
                }
                Some(next) => t = next,
            }
        }
        assert!(
            (120..=140).contains(&sent),
            "{sent} segments in one round trip"
        );
    }
}
