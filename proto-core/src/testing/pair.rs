//! A deterministic pair harness: two endpoints joined by in-memory packet queues with
//! latency, a per-direction capacity (a full queue is `SendBlocked` backpressure) and the
//! transport's packet-size limit, under a virtual clock that jumps to the next event.
//! Lossy packets (the fast path) take a second channel, which can lose, duplicate and
//! reorder them and has a bottleneck with a drop-tail buffer ([`LossyLink`]); a relayed link
//! may drop them all (`relay_drops_lossy`). Each side has a small scripted application that accepts, writes,
//! reads and records.
//!
//! After every step the harness checks the flow-control bounds: no stream holds more than
//! its window, no peer more than its budget, no sender more than the peer's credit.
//!
//! Enabled by the `testing` feature; used by this crate's tests and benchmarks.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::endpoint::Endpoint;
use crate::event::{Input, Output};
use crate::ids::PeerId;
use crate::transport::PacketKind;
use crate::EndpointConfig;

pub use super::app::{App, End};

/// How the lossy channel behaves, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossyLink {
    /// Packets lost at random, per thousand.
    pub loss_per_mille: u32,
    /// Packets delivered twice, per thousand.
    pub duplicate_per_mille: u32,
    /// Extra random delay per packet, up to this much (packets overtake each other).
    pub reorder: Duration,
    /// The bottleneck's rate in bytes per second (`None`: no limit).
    pub bandwidth: Option<u64>,
    /// Packets the bottleneck queues before it drops (drop-tail).
    pub buffer: usize,
}

impl Default for LossyLink {
    fn default() -> Self {
        LossyLink {
            loss_per_mille: 0,
            duplicate_per_mille: 0,
            reorder: Duration::ZERO,
            bandwidth: None,
            buffer: 64,
        }
    }
}

/// One endpoint with its application and its outgoing link.
#[derive(Debug)]
pub struct Side {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Its Tox key.
    pub id: PeerId,
    /// Its application.
    pub app: App,
    /// Packets on their way to the other side, with arrival times.
    inflight: VecDeque<(Instant, Bytes)>,
    /// Lossy packets on their way, with arrival times (in any order).
    lossy_inflight: Vec<(Instant, Bytes)>,
    /// When the lossy bottleneck is free again.
    lossy_busy_until: Option<Instant>,
    /// Lossy packets sent, and lost (at random or at the bottleneck).
    pub lossy_sent: u64,
    /// Lossy packets the channel dropped.
    pub lossy_dropped: u64,
    /// The most packets the lossy bottleneck held at once (its queue's high-water mark).
    pub lossy_max_queued: usize,
    /// A packet the full queue refused; sent first when there is room.
    held: Option<Bytes>,
    timeout: Option<Instant>,
    /// Packets this side sends vanish (a peer that fell silent, link still "up").
    pub mute: bool,
    /// Packets sent, for statistics.
    pub packets_sent: u64,
    /// Bytes sent (packets), for statistics.
    pub bytes_sent: u64,
}

impl Side {
    fn new(endpoint: Endpoint) -> Self {
        Side {
            id: endpoint.local_id(),
            endpoint,
            app: App::new(),
            inflight: VecDeque::new(),
            lossy_inflight: Vec::new(),
            lossy_busy_until: None,
            lossy_sent: 0,
            lossy_dropped: 0,
            lossy_max_queued: 0,
            held: None,
            timeout: None,
            mute: false,
            packets_sent: 0,
            bytes_sent: 0,
        }
    }
}

impl Side {
    fn restart(&mut self, seed: u64) {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        let config = self.endpoint.config().clone();
        self.endpoint = Endpoint::new(config, s).expect("the same config is valid");
        self.inflight.clear();
        self.lossy_inflight.clear();
        self.held = None;
        self.timeout = None;
    }
}

/// The harness failed: a bound was broken or the drive did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    /// An invariant was broken.
    #[error("invariant broken: {0}")]
    Invariant(String),
    /// `max_steps` ran out before the goal was reached.
    #[error("no result after {0} steps")]
    Steps(usize),
}

/// Two endpoints on a virtual link.
#[derive(Debug)]
pub struct Pair {
    /// The first side (usually the client).
    pub a: Side,
    /// The second side (usually the server).
    pub b: Side,
    /// Virtual time now.
    pub now: Instant,
    /// One-way latency.
    pub latency: Duration,
    /// Packets in flight per direction before the sender sees `SendBlocked`.
    pub queue_capacity: usize,
    /// Largest packet the link carries.
    pub max_packet: usize,
    /// Check the flow-control bounds after every step.
    pub check_invariants: bool,
    /// The lossy channel's behaviour.
    pub lossy: LossyLink,
    /// A relayed link drops every lossy packet. c-toxcore carries them through its TCP
    /// relays, so by default they travel either way; tests of the fast path's fallback set
    /// this.
    pub relay_drops_lossy: bool,
    /// Extra one-way delay of lossless packets only (c-toxcore's congestion control holding
    /// them while lossy packets go at once).
    pub lossless_delay: Duration,
    link_up: bool,
    direct: bool,
    rng: ChaCha8Rng,
    start: Instant,
}

impl Pair {
    /// Joins two endpoints; the link starts down (call [`Pair::link_up`]).
    pub fn new(a: EndpointConfig, b: EndpointConfig, seed: u64) -> Self {
        let mut sa = [0u8; 32];
        sa[..8].copy_from_slice(&seed.to_le_bytes());
        let mut sb = sa;
        sb[31] = 1;
        // The harness's one real instant, its origin; everything after is virtual.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Pair {
            a: Side::new(Endpoint::new(a, sa).expect("valid config a")),
            b: Side::new(Endpoint::new(b, sb).expect("valid config b")),
            now,
            latency: Duration::from_millis(5),
            queue_capacity: 64,
            max_packet: crate::MAX_PACKET_SIZE,
            check_invariants: true,
            lossy: LossyLink::default(),
            relay_drops_lossy: false,
            lossless_delay: Duration::ZERO,
            link_up: false,
            direct: false,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed),
            start: now,
        }
    }

    /// Marks the link direct UDP or relayed (where lossy packets are dropped if
    /// `relay_drops_lossy`), and tells both sides, as the transport would.
    pub fn set_direct(&mut self, direct: bool) {
        self.direct = direct;
        if !direct && self.relay_drops_lossy {
            self.a.lossy_inflight.clear();
            self.b.lossy_inflight.clear();
        }
        let (a, b) = (self.a.id, self.b.id);
        self.a
            .endpoint
            .handle_input(self.now, Input::PathChanged { peer: b, direct });
        self.b
            .endpoint
            .handle_input(self.now, Input::PathChanged { peer: a, direct });
    }

    /// Virtual time elapsed since the pair was made.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Brings the link up (both sides see their friend online).
    pub fn link_up(&mut self) {
        self.link_up = true;
        let (a, b) = (self.a.id, self.b.id);
        self.a.endpoint.handle_input(self.now, Input::PeerOnline(b));
        self.b.endpoint.handle_input(self.now, Input::PeerOnline(a));
    }

    /// Side `a` connects to side `b` as its client over a link that comes up, and both run
    /// until the session is established on each side and nothing more moves.
    pub fn establish(&mut self, max_steps: usize) -> Result<(), PairError> {
        let (a, b) = (self.a.id, self.b.id);
        self.a.endpoint.connect(self.now, b);
        self.link_up();
        self.run_until(max_steps, |p| {
            p.a.endpoint.is_established(b) && p.b.endpoint.is_established(a)
        })?;
        self.settle(max_steps).map(|_| ())
    }

    /// Takes the link down: packets in flight are lost, both sides see the friend offline.
    pub fn link_down(&mut self) {
        self.link_up = false;
        for side in [&mut self.a, &mut self.b] {
            side.inflight.clear();
            side.lossy_inflight.clear();
            side.held = None;
        }
        let (a, b) = (self.a.id, self.b.id);
        self.a
            .endpoint
            .handle_input(self.now, Input::PeerOffline(b));
        self.b
            .endpoint
            .handle_input(self.now, Input::PeerOffline(a));
    }

    /// Restarts side `b` with the same configuration and a new seed while the link is down:
    /// its keys stay, its sessions and streams are gone (a server process that crashed).
    pub fn restart_b(&mut self, seed: u64) {
        self.b.restart(seed);
    }

    /// Restarts side `a` likewise (a client process that crashed).
    pub fn restart_a(&mut self, seed: u64) {
        self.a.restart(seed);
    }

    /// Hands a raw packet to side `b` as if `a` sent it (for hostile-input tests).
    pub fn inject_to_b(&mut self, packet: Bytes) {
        let from = self.a.id;
        self.b
            .endpoint
            .handle_input(self.now, Input::Packet { peer: from, packet });
    }

    /// Hands a raw packet to side `a` as if `b` sent it.
    pub fn inject_to_a(&mut self, packet: Bytes) {
        let from = self.b.id;
        self.a
            .endpoint
            .handle_input(self.now, Input::Packet { peer: from, packet });
    }

    #[allow(clippy::too_many_arguments)]
    fn drain(
        side: &mut Side,
        to: PeerId,
        now: Instant,
        (latency, lossless_delay): (Duration, Duration),
        cap: usize,
        max_packet: usize,
        link_up: bool,
        lossy: Option<(&LossyLink, &mut ChaCha8Rng)>,
    ) -> Result<bool, PairError> {
        let mut lossy = lossy;
        let mut progress = false;
        loop {
            match side.endpoint.poll_output(now) {
                None => {
                    side.timeout = None;
                    break;
                }
                Some(Output::Timeout(t)) => {
                    side.timeout = Some(t);
                    break;
                }
                Some(Output::Event(e)) => {
                    progress = true;
                    side.app.on_event(&e);
                }
                Some(Output::Transmit { peer, packet }) => {
                    progress = true;
                    if peer != to {
                        // Stray packets to peers other than the pair's are not carried.
                        continue;
                    }
                    if packet.len() > max_packet || !(160..=254).contains(&packet[0]) {
                        return Err(PairError::Invariant(format!(
                            "packet of {} bytes with id {} breaks the transport's rules",
                            packet.len(),
                            packet[0]
                        )));
                    }
                    if !link_up || side.mute {
                        continue; // friend offline, or a silent peer
                    }
                    if PacketKind::is_lossy(&packet) {
                        // Lossy: never backpressure; dropped on a relay that drops them.
                        if let Some((link, rng)) = lossy.as_mut() {
                            Self::send_lossy(side, now, latency, link, rng, packet);
                        }
                        continue;
                    }
                    side.packets_sent += 1;
                    side.bytes_sent += packet.len() as u64;
                    if side.held.is_none() && side.inflight.len() < cap {
                        side.inflight
                            .push_back((now + latency + lossless_delay, packet));
                    } else {
                        if side.held.is_some() {
                            return Err(PairError::Invariant(
                                "endpoint transmitted while its peer's send queue was blocked"
                                    .into(),
                            ));
                        }
                        side.held = Some(packet);
                        side.endpoint.handle_input(now, Input::SendBlocked(to));
                    }
                }
            }
        }
        Ok(progress)
    }

    fn send_lossy(
        side: &mut Side,
        now: Instant,
        latency: Duration,
        link: &LossyLink,
        rng: &mut ChaCha8Rng,
        packet: Bytes,
    ) {
        side.lossy_sent += 1;
        let mut depart = now;
        if let Some(bw) = link.bandwidth {
            let start = side.lossy_busy_until.map_or(now, |b| b.max(now));
            let queued = side
                .lossy_inflight
                .iter()
                .filter(|(t, _)| *t > now + latency)
                .count();
            if queued >= link.buffer {
                side.lossy_dropped += 1;
                return; // drop-tail at the bottleneck
            }
            side.lossy_max_queued = side.lossy_max_queued.max(queued + 1);
            let serialise = Duration::from_nanos(packet.len() as u64 * 1_000_000_000 / bw.max(1));
            depart = start + serialise;
            side.lossy_busy_until = Some(depart);
        }
        if (rng.next_u32() % 1000) < link.loss_per_mille {
            side.lossy_dropped += 1;
            return;
        }
        let jitter = |rng: &mut ChaCha8Rng| {
            let max = link.reorder.as_nanos() as u64;
            Duration::from_nanos(if max == 0 { 0 } else { rng.next_u64() % max })
        };
        let arrive = depart + latency + jitter(rng);
        if (rng.next_u32() % 1000) < link.duplicate_per_mille {
            let again = depart + latency + jitter(rng);
            side.lossy_inflight.push((again, packet.clone()));
        }
        side.lossy_inflight.push((arrive, packet));
    }

    /// One round at the current instant: applications act, outputs drain, due packets
    /// arrive, due timers fire. Returns whether anything happened.
    pub fn step(&mut self) -> Result<bool, PairError> {
        let now = self.now;
        let mut progress = false;
        let (aid, bid) = (self.a.id, self.b.id);
        for (side, to) in [(&mut self.a, bid), (&mut self.b, aid)] {
            progress |= side.app.pump(&mut side.endpoint, now);
            if side.timeout.is_some_and(|t| t <= now) {
                side.endpoint.handle_timeout(now);
                progress = true;
            }
            let lossy =
                (self.direct || !self.relay_drops_lossy).then_some((&self.lossy, &mut self.rng));
            progress |= Self::drain(
                side,
                to,
                now,
                (self.latency, self.lossless_delay),
                self.queue_capacity,
                self.max_packet,
                self.link_up,
                lossy,
            )?;
        }
        // Deliver what has arrived, and let blocked senders move on.
        progress |= Self::deliver(
            &mut self.a,
            &mut self.b,
            now,
            self.latency,
            self.queue_capacity,
        );
        progress |= Self::deliver(
            &mut self.b,
            &mut self.a,
            now,
            self.latency,
            self.queue_capacity,
        );
        if self.check_invariants {
            self.check()?;
        }
        Ok(progress)
    }

    fn deliver(
        from: &mut Side,
        to: &mut Side,
        now: Instant,
        latency: Duration,
        cap: usize,
    ) -> bool {
        let mut progress = false;
        if from.lossy_inflight.iter().any(|(t, _)| *t <= now) {
            let mut due: Vec<(Instant, Bytes)> = Vec::new();
            from.lossy_inflight.retain(|(t, p)| {
                if *t <= now {
                    due.push((*t, p.clone()));
                    false
                } else {
                    true
                }
            });
            due.sort_by_key(|(t, _)| *t);
            for (_, packet) in due {
                to.endpoint.handle_input(
                    now,
                    Input::Packet {
                        peer: from.id,
                        packet,
                    },
                );
            }
            progress = true;
        }
        while from.inflight.front().is_some_and(|(t, _)| *t <= now) {
            let (_, packet) = from.inflight.pop_front().expect("front exists");
            to.endpoint.handle_input(
                now,
                Input::Packet {
                    peer: from.id,
                    packet,
                },
            );
            progress = true;
        }
        if from.inflight.len() < cap {
            if let Some(packet) = from.held.take() {
                from.inflight.push_back((now + latency, packet));
                from.endpoint.handle_input(now, Input::SendReady(to.id));
                progress = true;
            }
        }
        progress
    }

    /// The flow-control bounds, checked for every stream and session of both sides.
    pub fn check(&self) -> Result<(), PairError> {
        for (me, other) in [(&self.a, &self.b), (&self.b, &self.a)] {
            let ep = &me.endpoint;
            for peer in ep.peers() {
                let ss = ep.session_stats(peer).ok_or_else(|| {
                    PairError::Invariant(format!("listed peer {peer} has no session"))
                })?;
                let bound = ep.config().session_window as usize + ep.config().max_packet_size;
                if ss.retransmit_buffered > bound {
                    return Err(PairError::Invariant(format!(
                        "the frame log holds {} bytes, bound {bound}",
                        ss.retransmit_buffered
                    )));
                }
            }
            // Windows grow up to max_stream_window when readers keep up.
            let max_window = u64::from(ep.config().max_stream_window);
            let peer_window = u64::from(other.endpoint.config().max_stream_window);
            let first = u64::from(ep.config().stream_window);
            let mut grown: HashMap<PeerId, u64> = HashMap::new();
            for (stream, peer) in ep.streams() {
                let st = ep.stream_stats(stream).ok_or_else(|| {
                    PairError::Invariant(format!("indexed stream {stream} has no state"))
                })?;
                *grown.entry(peer).or_default() += st.recv_window - first;
                if st.recv_buffered as u64 > st.recv_window || st.recv_window > max_window {
                    return Err(PairError::Invariant(format!(
                        "stream {stream} buffers {} bytes, window {} (at most {max_window})",
                        st.recv_buffered, st.recv_window
                    )));
                }
                if st.send_buffered as u64 > peer_window {
                    return Err(PairError::Invariant(format!(
                        "stream {stream} holds {} unacknowledged bytes, peer window {peer_window}",
                        st.send_buffered
                    )));
                }
                let ss = ep.session_stats(peer).ok_or_else(|| {
                    PairError::Invariant(format!("stream {stream} has no session"))
                })?;
                if ss.recv_buffered > ep.config().session_window {
                    return Err(PairError::Invariant(format!(
                        "peer buffers {} bytes, budget {}",
                        ss.recv_buffered,
                        ep.config().session_window
                    )));
                }
            }
            for (peer, grown) in grown {
                if grown > ep.config().session_window {
                    return Err(PairError::Invariant(format!(
                        "the windows of peer {peer}'s streams grew {grown} bytes together, \
                         past the session window"
                    )));
                }
            }
        }
        Ok(())
    }

    fn next_packet_time(&self) -> Option<Instant> {
        [
            self.a.inflight.front().map(|(t, _)| *t),
            self.b.inflight.front().map(|(t, _)| *t),
            self.a.lossy_inflight.iter().map(|(t, _)| *t).min(),
            self.b.lossy_inflight.iter().map(|(t, _)| *t).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn next_event_time(&self) -> Option<Instant> {
        [self.next_packet_time(), self.a.timeout, self.b.timeout]
            .into_iter()
            .flatten()
            .min()
    }

    /// Session credit agrees on both sides: what each sent is what the other counted.
    /// Holds whenever nothing is in flight (after [`Pair::settle`]).
    pub fn credit_agrees(&self) -> Result<(), PairError> {
        for (me, other) in [(&self.a, &self.b), (&self.b, &self.a)] {
            let (Some(mine), Some(theirs)) = (
                me.endpoint.session_stats(other.id),
                other.endpoint.session_stats(me.id),
            ) else {
                continue;
            };
            if mine.sent != theirs.received {
                return Err(PairError::Invariant(format!(
                    "{} counts {} bytes sent, its peer {} received",
                    me.id, mine.sent, theirs.received
                )));
            }
        }
        Ok(())
    }

    /// Runs until nothing moves: no packet in flight and no application progress. Timers
    /// due later are not fired (use [`Pair::advance`] for that).
    pub fn settle(&mut self, max_steps: usize) -> Result<usize, PairError> {
        for steps in 0..max_steps {
            if self.step()? {
                continue;
            }
            let next_packet = self.next_packet_time();
            // Timers due before the next packet fire too: they are part of "now".
            let next_timer = [self.a.timeout, self.b.timeout].into_iter().flatten().min();
            match next_packet {
                Some(t) => {
                    self.now = next_timer.map_or(t, |x| x.min(t)).max(self.now);
                }
                None => return Ok(steps),
            }
        }
        Err(PairError::Steps(max_steps))
    }

    /// Runs for `d` of virtual time, jumping from event to event (timers included).
    pub fn advance(&mut self, d: Duration, max_steps: usize) -> Result<(), PairError> {
        let until = self.now + d;
        for _ in 0..max_steps {
            if self.step()? {
                continue;
            }
            match self.next_event_time() {
                Some(t) if t <= until => self.now = t.max(self.now),
                _ => {
                    self.now = until;
                    self.step()?;
                    return Ok(());
                }
            }
        }
        Err(PairError::Steps(max_steps))
    }

    /// Runs until `done` holds, jumping through virtual time.
    pub fn run_until(
        &mut self,
        max_steps: usize,
        mut done: impl FnMut(&Pair) -> bool,
    ) -> Result<(), PairError> {
        for _ in 0..max_steps {
            if done(self) {
                return Ok(());
            }
            if self.step()? {
                continue;
            }
            match self.next_event_time() {
                Some(t) => self.now = t.max(self.now),
                None => {
                    return if done(self) {
                        Ok(())
                    } else {
                        Err(PairError::Steps(max_steps))
                    }
                }
            }
        }
        Err(PairError::Steps(max_steps))
    }
}
