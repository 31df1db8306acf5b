//! The fast path's own reliability and congestion control, sans-IO.
//!
//! c-toxcore's lossless packets come with its congestion control, whose slow start grows the
//! rate about 1.6× per *second*: a 50 MB transfer is over before it reaches its plateau.
//! Lossy packets have none, so on a direct UDP link the session carries stream bytes in LDATA
//! packets and runs the recovery QUIC runs (RFC 9002), scaled down:
//!
//! * every LDATA has a fresh packet number; the receiver acknowledges numbers in ranges
//!   (LACK), at least every [`receiver::ACK_EVERY_PACKETS`] packets or [`MAX_ACK_DELAY`];
//! * a packet is lost when three later ones were acknowledged, or when it is older than
//!   9/8 of the round trip and a later one was; a probe timeout (PTO) covers the tail by
//!   sending the oldest one or two packets again, outside the window, and is no loss
//!   signal by itself (RFC 9002 §6.2): on a busy machine a thread that ran late for a few
//!   milliseconds must not cost the window, and only what the next LACK shows missing
//!   counts as lost;
//! * lost payloads are sent again under new numbers — or, if the fast path went away (a
//!   TCP relay, a suspension, three silent PTOs), as ordinary DATA in the frame log, so no
//!   byte is lost across the switch;
//! * a congestion controller behind the [`congestion::Controller`] trait (BBR-like by
//!   default, in `congestion/bbr.rs`; NewReno with HyStart++ in `congestion/new_reno.rs`)
//!   says the window and the pace, fed delivery-rate samples (`rate.rs`), and a
//!   pacer ([`pacing`]) spreads each window over the round trip rather than blasting it.
//!
//! This module is loss detection ([`LossySender`]); the probe timer and the broken-path
//! verdict are [`probe`], the receiving side [`receiver`], the round-trip estimate [`rtt`].
//!
//! Everything here takes `now` from the caller and keeps bounded state: the packets in
//! flight are bounded by the congestion window, itself capped at [`congestion::MAX_WINDOW`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::ids::StreamId;

pub(crate) mod congestion;
mod pacing;
mod probe;
mod rate;
mod receiver;
mod rtt;
#[cfg(test)]
mod tests;

pub(crate) use congestion::CongestionControl;
use congestion::Controller;
use pacing::Pacer;
use probe::Probing;
use rate::{DeliveryRate, PacketRate};
pub(crate) use receiver::{LossyReceiver, MAX_ACK_DELAY};
pub(crate) use rtt::RttEstimator;
use rtt::GRANULARITY;

/// A packet is lost once this many later packets were acknowledged (RFC 9002's
/// kPacketThreshold), at first; a path that reorders raises it (see `on_spurious`).
const PACKET_THRESHOLD: u64 = 3;
/// The most the packet threshold grows to on a reordering path.
const MAX_PACKET_THRESHOLD: u64 = 1024;
/// Packets declared lost that are remembered, to spot one acknowledged after all.
const DECLARED_LOST_KEPT: usize = 4096;
/// The payload size the window is counted in (a full LDATA payload).
pub(crate) const SEGMENT: usize = crate::frame::MAX_DATA_PAYLOAD;

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
    rate: PacketRate,
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

/// What the sending side counted, for the session's stats.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SenderCounters {
    /// LDATA packets sent, resends included.
    pub packets_sent: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Payload bytes sent again (on the fast path or as DATA).
    pub bytes_resent: u64,
    /// Probe timeouts that fired.
    pub probe_timeouts: u64,
    /// Payloads queued as shadows of DATA still in the frame log.
    pub shadows: u64,
    /// Losses that turned out to be reordering.
    pub spurious_losses: u64,
}

/// The loss episode in progress (one congestion event and the losses that belong to it),
/// and what reordering taught about the thresholds.
#[derive(Debug)]
struct Reordering {
    /// The packet threshold in force (starts at [`PACKET_THRESHOLD`]).
    packet_threshold: u64,
    /// Added to the round trip in the time threshold once the path showed reordering
    /// (RACK's reordering window): grows by a quarter of the minimum round trip per
    /// episode of spurious losses, up to the smoothed round trip.
    extra_delay: Duration,
    /// The current loss episode: its number, how many packets it declared lost and how
    /// many of those came after all.
    episode: u64,
    episode_lost: u64,
    episode_spurious: u64,
    /// The episode whose spurious losses last widened the reordering window.
    widened_in: u64,
}

impl Default for Reordering {
    fn default() -> Self {
        Reordering {
            packet_threshold: PACKET_THRESHOLD,
            extra_delay: Duration::ZERO,
            episode: 0,
            episode_lost: 0,
            episode_spurious: 0,
            widened_in: 0,
        }
    }
}

/// The sending side of the fast path for one session: packets in flight, loss detection,
/// the probe timer, and the congestion controller and pacer it drives.
#[derive(Debug)]
pub(crate) struct LossySender {
    next_packet: u64,
    in_flight: BTreeMap<u64, SentPacket>,
    /// Payload bytes in `in_flight`.
    bytes_in_flight: usize,
    /// Payloads declared lost, to be sent again (fast path or lossless), oldest first.
    lost: VecDeque<Chunk>,
    largest_acked: Option<u64>,
    rtt: RttEstimator,
    congestion: CongestionControl,
    controller: Box<dyn Controller>,
    pacer: Pacer,
    /// Packets declared lost lately, by number. One acknowledged later was not lost but
    /// overtaken.
    declared_lost: BTreeMap<u64, DeclaredLost>,
    reordering: Reordering,
    loss_time: Option<Instant>,
    last_sent: Option<Instant>,
    probing: Probing,
    /// The order the next new chunk gets.
    next_order: u64,
    counters: SenderCounters,
    /// Delivery-rate sampling, for a model-based controller.
    delivery: DeliveryRate,
}

/// What an acknowledgement did.
#[derive(Debug, Default)]
pub(crate) struct Acked {
    /// Bytes per stream whose packets are now acknowledged.
    pub streams: Vec<(StreamId, u64)>,
}

impl LossySender {
    /// A sender with no path yet, whose paths run `congestion`.
    pub fn new(congestion: CongestionControl) -> Self {
        LossySender {
            next_packet: 0,
            in_flight: BTreeMap::new(),
            bytes_in_flight: 0,
            lost: VecDeque::new(),
            largest_acked: None,
            rtt: RttEstimator::default(),
            congestion,
            controller: congestion.build(),
            pacer: Pacer::default(),
            declared_lost: BTreeMap::new(),
            reordering: Reordering::default(),
            loss_time: None,
            last_sent: None,
            probing: Probing::default(),
            next_order: 0,
            counters: SenderCounters::default(),
            delivery: DeliveryRate::default(),
        }
    }

    /// A sender driving this controller (for tests that start mid-flow).
    #[cfg(test)]
    fn with_controller(controller: Box<dyn Controller>) -> Self {
        LossySender {
            controller,
            ..LossySender::new(CongestionControl::default())
        }
    }

    /// What this side counted.
    pub fn counters(&self) -> SenderCounters {
        self.counters
    }

    /// The round-trip estimate.
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// The congestion window (bytes that may be in flight).
    pub fn window(&self) -> usize {
        self.controller.window()
    }

    /// Bytes per second the pacer lets out now.
    pub fn pacing_rate(&self) -> u64 {
        self.controller.pacing_rate(&self.rtt)
    }

    /// Payload bytes in flight.
    pub fn bytes_in_flight(&self) -> usize {
        self.bytes_in_flight
    }

    /// Whether the window has room for one more full packet.
    pub fn window_open(&self) -> bool {
        self.bytes_in_flight + SEGMENT <= self.controller.window()
    }

    /// Whether a probe timeout's packet is waiting to go: it goes whatever the window and
    /// the pacer say (the first ones in the lost queue).
    pub fn probe_due(&self) -> bool {
        self.probing.packets > 0 && !self.lost.is_empty()
    }

    /// Whether payloads wait to be sent again.
    pub fn has_lost(&self) -> bool {
        !self.lost.is_empty()
    }

    /// The oldest payload waiting to be sent again.
    pub fn pop_lost(&mut self) -> Option<Chunk> {
        self.lost.pop_front()
    }

    /// Queues copies of bytes still waiting as DATA in the frame log, ahead of everything
    /// (see [`Chunk::shadow`]); `shadows` oldest first.
    pub fn push_shadows(&mut self, shadows: Vec<Chunk>) {
        self.counters.shadows += shadows.len() as u64;
        for c in shadows.into_iter().rev() {
            self.lost.push_front(c);
        }
    }

    /// A lost payload of `bytes` went as DATA on the lossless lane instead.
    pub fn on_resent_lossless(&mut self, bytes: u64) {
        self.counters.bytes_resent += bytes;
    }

    /// When the pacer lets `bytes` go; `None`: now.
    pub fn pacing_delay(&mut self, now: Instant, bytes: usize) -> Option<Instant> {
        self.rtt.smoothed()?; // no estimate yet: the initial window goes out as it is
        let rate = self.controller.pacing_rate(&self.rtt);
        self.pacer.delay(now, bytes, rate)
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
        let rate = self.delivery.on_sent(now, self.bytes_in_flight);
        self.bytes_in_flight += len;
        self.controller.on_sent(now, n, len, self.bytes_in_flight);
        self.pacer.on_sent(len);
        self.in_flight.insert(
            n,
            SentPacket {
                time: now,
                chunk,
                rate,
            },
        );
        self.last_sent = Some(now);
        self.counters.packets_sent += 1;
        self.probing.packets = self.probing.packets.saturating_sub(1);
        if resend {
            self.counters.bytes_resent += len as u64;
        }
        n
    }

    /// The sender has nothing more to send though the window has room: the rate samples
    /// of what is in flight understate the path.
    pub fn on_app_limited(&mut self) {
        self.delivery.on_app_limited(self.bytes_in_flight);
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
        self.controller.on_newest_acked(newest, &self.rtt);
        if newest == largest {
            self.rtt
                .update(now.saturating_duration_since(sent_at), ack_delay);
            self.controller.on_rtt_sample(&self.rtt);
        }
        for &(start, end) in ranges {
            let keys: Vec<u64> = self.in_flight.range(start..end).map(|(&k, _)| k).collect();
            for k in keys {
                let Some(p) = self.in_flight.remove(&k) else {
                    continue;
                };
                let len = p.chunk.payload.len();
                self.bytes_in_flight -= len;
                let sample =
                    self.delivery
                        .on_acked(now, (&p.rate, p.time, len), self.bytes_in_flight);
                self.controller.on_ack(now, p.time, len, &self.rtt, &sample);
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
        let persistent = self.probing.count >= 2;
        self.probing.reset();
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
            self.counters.spurious_losses += 1;
            self.learn_reordering(k, d);
            // The payload, if it still waits to go again, need not: it arrived.
            if let Some(i) = self
                .lost
                .iter()
                .position(|c| (c.order, c.stream, c.offset) == d.payload)
            {
                let c = self.lost.remove(i).expect("found");
                if !c.shadow {
                    acked.streams.push((c.stream, c.payload.len() as u64));
                }
            }
        }
    }

    /// Packet `number`, declared lost as `d`, arrived after all: widen the thresholds, and
    /// undo the reduction once every loss of its episode is known spurious.
    fn learn_reordering(&mut self, number: u64, d: DeclaredLost) {
        let r = &mut self.reordering;
        r.packet_threshold = r
            .packet_threshold
            .max(d.largest_then.saturating_sub(number) + 1)
            .min(MAX_PACKET_THRESHOLD);
        if d.episode != r.widened_in {
            r.widened_in = d.episode;
            let step = (self.rtt.min() / 4).max(GRANULARITY);
            r.extra_delay = (r.extra_delay + step).min(self.rtt.get());
        }
        if d.episode == r.episode {
            r.episode_spurious += 1;
            if r.episode_spurious >= r.episode_lost {
                self.controller.on_spurious_congestion_event();
            }
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
            .max(self.rtt.latest().max(self.rtt.get()) + self.reordering.extra_delay);
        let mut lost: Vec<u64> = Vec::new();
        for (&k, p) in self.in_flight.range(..largest) {
            if k + self.reordering.packet_threshold <= largest || p.time + delay <= now {
                lost.push(k);
            } else {
                self.loss_time = Some(p.time + delay);
                break;
            }
        }
        self.declare_lost(now, &lost);
        if persistent_congestion && !lost.is_empty() {
            self.controller.on_persistent_congestion();
        }
    }

    fn declare_lost(&mut self, now: Instant, numbers: &[u64]) {
        let mut newest_lost_sent: Option<Instant> = None;
        let mut lost_bytes = 0;
        let mut chunks = Vec::with_capacity(numbers.len());
        let largest = self.largest_acked.unwrap_or(0);
        let mut declared = Vec::with_capacity(numbers.len());
        for k in numbers {
            if let Some(p) = self.in_flight.remove(k) {
                self.bytes_in_flight -= p.chunk.payload.len();
                lost_bytes += p.chunk.payload.len();
                newest_lost_sent = Some(newest_lost_sent.map_or(p.time, |t| t.max(p.time)));
                declared.push((*k, (p.chunk.order, p.chunk.stream, p.chunk.offset)));
                chunks.push(p.chunk);
                self.counters.packets_lost += 1;
            }
        }
        // Oldest bytes first: a resend's packet number says nothing of its bytes' age, and
        // the receiver delivers nothing past the oldest gap.
        chunks.sort_by_key(|c| c.order);
        self.lost.extend(chunks);
        let r = &mut self.reordering;
        if let Some(sent) = newest_lost_sent {
            if self.controller.on_congestion_event(now, sent, lost_bytes) {
                r.episode += 1;
                r.episode_lost = 0;
                r.episode_spurious = 0;
            }
        }
        r.episode_lost += declared.len() as u64;
        for (k, payload) in declared {
            self.declared_lost.insert(
                k,
                DeclaredLost {
                    largest_then: largest,
                    episode: r.episode,
                    payload,
                },
            );
        }
        while self.declared_lost.len() > DECLARED_LOST_KEPT {
            self.declared_lost.pop_first();
        }
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
        self.probing.reset();
    }

    /// A new path: forget the old one's round trip and window, keep the numbering, the
    /// payloads to send again and the counters.
    pub fn new_path(&mut self) {
        self.abandon_in_flight();
        let fresh = LossySender {
            next_packet: self.next_packet,
            next_order: self.next_order,
            lost: std::mem::take(&mut self.lost),
            counters: self.counters,
            ..LossySender::new(self.congestion)
        };
        *self = fresh;
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
