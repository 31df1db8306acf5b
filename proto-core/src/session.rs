//! One session with one peer: the handshake, its streams, flow control, keepalive and the
//! frames waiting to be sent. The [`crate::Endpoint`] routes inputs here by peer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::codes::{SessionCode, StreamCode};
use crate::collections::{Hasher, Map};
use crate::config::{Capabilities, EndpointConfig, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::event::Event;
use crate::frame::{self, Frame, Hello, DATA_HEADER_LEN, LOSSY_DATA_HEADER_LEN};
use crate::ids::{PeerId, SessionId, StreamId};
use crate::policy::Admission;
use crate::recovery::{Chunk, LossyReceiver, LossySender};
use crate::stream::{OpenState, Origin, Stream};

/// How many recently closed stream IDs a session remembers, so that frames still in flight
/// for them are dropped quietly instead of answered with RST.
const RECENTLY_CLOSED: usize = 128;
/// The most advisory frames (PONG, RST for unknown streams) queued at once; past it they are
/// dropped, so a peer flooding us while our send queue is full cannot grow our memory.
const MAX_ADVISORY_QUEUED: usize = 256;
/// A receiver acknowledges (ACK) at least every this many sequenced frames, so the sender's
/// frame log stays short: one 9-byte ACK per 32 frames is under 0.03% of a bulk transfer.
const ACK_EVERY: u64 = 32;
/// ... and at most this long after a frame arrived, so a trickle is acknowledged too.
const ACK_DELAY: Duration = Duration::from_millis(20);
/// The shortest frame (PING, PONG, ACK, SESSION_WINDOW: type and 8 bytes): a packet with
/// less room than that after its own frame is sent alone.
const MIN_FRAME_LEN: usize = 9;
/// Stream bytes one stream sends before the next stream with data gets its turn: a dozen
/// packets, about 0.1 ms at 150 MB/s, so turns stay fine-grained for interactive streams
/// while the receiver gets runs of one stream (one socket write each, not one per packet).
const TURN_BYTES: usize = 16 * 1024;

/// How often an open whose timeout passed is looked at again while the path, not the peer,
/// holds it (see [`Session::on_timeout`]).
const OPEN_RECHECK: Duration = Duration::from_secs(1);

/// How a recently freed stream went, which decides what its late frames still count for.
///
/// Session credit counts each stream's bytes once on both sides. On the ordered path that
/// is simple: every DATA arrives once, so even bytes for a freed stream are counted when
/// they arrive. Fast-path bytes may arrive twice or never, so a stream freed by a reset
/// settles instead: each RST carries the sender's final size and the highest offset it
/// received, and each side adjusts its count to those (see PROTOCOL.md, "Fast path").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gone {
    /// We refused it (OPEN_ERR): its bytes were all ordered (no fast path before OPEN_OK),
    /// and late ones still count, as they do at the sender.
    Refused,
    /// We never knew it and said so (RST with zero counts): nothing of it counts here.
    Unknown,
    /// Freed after both FINs; a late RST from the peer still settles both directions.
    Closed { sent: u64, received: u64 },
    /// We reset it (our RST carried our counts); a crossing RST from the peer settles our
    /// receive direction.
    Reset { received: u64 },
    /// Settled: nothing of it counts any more.
    Settled,
}

/// Which side of the handshake this endpoint took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// We sent HELLO: we are the client of this peer and keep reconnecting to it.
    Initiator,
    /// We accepted the peer's HELLO under our server policy.
    Responder(Admission),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Initiator only: waiting for the link, or for `retry_at` to send HELLO again.
    Idle { retry_at: Option<Instant> },
    /// Initiator only: HELLO sent, waiting for HELLO_ACK until `deadline`.
    HelloSent { deadline: Instant },
    /// Handshake done; streams may move.
    Established,
}

/// Shared endpoint state a session reports to.
pub(crate) struct Ctx<'a> {
    pub config: &'a EndpointConfig,
    pub events: &'a mut VecDeque<Event>,
    pub index: &'a mut Map<StreamId, PeerId>,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub peer: PeerId,
    pub role: Role,
    pub state: State,
    pub id: SessionId,
    /// The transport says the friend link is up.
    pub link_up: bool,
    /// The transport's lossless queue for this peer is full (`SendBlocked` after a lossless
    /// packet): no lossless packet goes until `SendReady`; lossy ones still do.
    pub lossless_blocked: bool,
    /// The transport's lossy queue for this peer is full, likewise.
    pub lossy_blocked: bool,
    /// Whether the last packet emitted to this peer was lossy: the lane `SendBlocked`
    /// blocks.
    pub last_lossy: bool,
    /// The session is in the endpoint's queue of sessions that may have output.
    pub in_ready: bool,
    /// Consecutive failed attempts, for the reconnect backoff.
    pub failures: u32,

    pub streams: Map<StreamId, Stream>,
    /// Unsequenced frames (HELLO, HELLO_ACK, PING, PONG, ACK): sent before anything else,
    /// never resent.
    urgent: VecDeque<Frame>,
    /// Sequenced control frames, sent before stream data, in order.
    control: VecDeque<Frame>,
    advisory_queued: usize,
    /// Streams with a WINDOW frame to send.
    window_updates: VecDeque<StreamId>,
    session_window_queued: bool,
    /// Round-robin queue of streams with bytes to send.
    sched: VecDeque<StreamId>,
    /// The stream at the front of `sched` whose turn is running, and the bytes it sent in it.
    turn: Option<(StreamId, usize)>,
    /// Local streams waiting for OPEN_OK, by deadline (deadlines grow, so the front is next).
    open_deadlines: VecDeque<(Instant, StreamId)>,
    recently_closed: VecDeque<(StreamId, Gone)>,

    /// Credit the peer grants each new stream of ours.
    pub peer_stream_window: u64,
    /// The peer's session credit: we may send stream bytes up to this cumulative total.
    pub send_max: u64,
    /// Stream bytes we sent in this session.
    pub send_total: u64,
    /// The session credit we granted.
    pub recv_max: u64,
    /// Stream bytes we received in this session (new bytes only).
    pub recv_total: u64,
    /// Stream bytes read by the application or discarded.
    pub recv_consumed: u64,

    pub last_recv: Instant,
    last_ping: Option<Instant>,
    ping_token: u64,

    /// Sequenced frames sent and not yet acknowledged, oldest first: the frame log. After a
    /// link outage the frames past the peer's count are resent exactly, so the peer sees
    /// every sequenced frame once and in order whatever the link did.
    log: VecDeque<Bytes>,
    /// Bytes in `log`; no new sequenced frame goes out past `session_window` of them.
    log_bytes: usize,
    /// Frames of `log` from this index on are to be resent (after a resume).
    resend_from: usize,
    /// Sequenced frames sent in this session.
    tx_seq: u64,
    /// Sequenced frames received in this session.
    rx_seq: u64,
    /// The count our last ACK carried.
    rx_acked: u64,
    /// When an ACK falls due for frames received since the last one.
    ack_due: Option<Instant>,
    /// Send an ACK at the next chance.
    ack_now: bool,
    /// Resumed, and the peer's count has not arrived yet: no sequenced frame may go out,
    /// since the resend must start where the peer stopped.
    awaiting_peer_count: bool,
    /// Suspended: the link was lost and the session waits for a resume until then.
    pub resume_by: Option<Instant>,
    /// A suspended server asked the client to resume (once per outage).
    pub resume_asked: bool,
    /// Counters for the stats: ACK frames sent, frames resent.
    pub acks_sent: u64,
    pub frames_resent: u64,

    /// Both sides speak the fast path (negotiated in the handshake).
    pub lossy_negotiated: bool,
    /// Both sides speak credit on the lossy lane (LWINDOW, LSESSION_WINDOW).
    pub lossy_credit: bool,
    /// Both sides take several frames in one lossless packet (BATCH).
    pub batching: bool,
    /// A packet taken while filling a batch that did not fit in it: it goes next.
    deferred: Option<Bytes>,
    /// Streams whose credit grant goes on the lossy lane too (LWINDOW), at most once each.
    twin_updates: VecDeque<StreamId>,
    /// The session's credit grant goes on the lossy lane too (LSESSION_WINDOW).
    session_twin_due: bool,
    /// The transport says the friend link is direct UDP (else it goes through a TCP relay).
    pub path_direct: bool,
    /// The fast path's sending side: packets in flight, losses, window, pacer.
    pub lossy_tx: LossySender,
    /// The fast path's receiving side: packet numbers seen, acknowledgements due.
    pub lossy_rx: LossyReceiver,
    /// The pacer holds the next LDATA until then.
    pace_until: Option<Instant>,
    /// A PING sent because the fast path's probes went unanswered has had no PONG yet.
    liveness_ping_out: bool,
    /// The fast path (re)started: the stream bytes waiting in the frame log for their
    /// acknowledgement get copies on it (see [`Session::shadow_logged_data`]).
    shadow_due: bool,
}

impl Session {
    pub fn new(
        peer: PeerId,
        role: Role,
        id: SessionId,
        now: Instant,
        config: &EndpointConfig,
        hasher: Hasher,
    ) -> Self {
        Session {
            peer,
            role,
            state: State::Idle { retry_at: None },
            id,
            link_up: false,
            lossless_blocked: false,
            lossy_blocked: false,
            last_lossy: false,
            in_ready: false,
            failures: 0,
            streams: Map::with_hasher(hasher),
            urgent: VecDeque::new(),
            control: VecDeque::new(),
            advisory_queued: 0,
            window_updates: VecDeque::new(),
            session_window_queued: false,
            sched: VecDeque::new(),
            turn: None,
            open_deadlines: VecDeque::new(),
            recently_closed: VecDeque::new(),
            peer_stream_window: 0,
            send_max: 0,
            send_total: 0,
            recv_max: config.session_window,
            recv_total: 0,
            recv_consumed: 0,
            last_recv: now,
            last_ping: None,
            ping_token: 0,
            log: VecDeque::new(),
            log_bytes: 0,
            resend_from: 0,
            tx_seq: 0,
            rx_seq: 0,
            rx_acked: 0,
            ack_due: None,
            ack_now: false,
            awaiting_peer_count: false,
            resume_by: None,
            resume_asked: false,
            acks_sent: 0,
            frames_resent: 0,
            lossy_negotiated: false,
            lossy_credit: false,
            batching: false,
            deferred: None,
            twin_updates: VecDeque::new(),
            session_twin_due: false,
            path_direct: false,
            lossy_tx: LossySender::new(config.congestion),
            lossy_rx: LossyReceiver::default(),
            pace_until: None,
            liveness_ping_out: false,
            shadow_due: false,
        }
    }

    /// Whether stream bytes go on the fast path now: both sides speak it, lossy packets got
    /// through so far, and the session is up. The link may be direct UDP or a TCP relay:
    /// c-toxcore carries lossy packets through its relays too, and on a relay its own
    /// congestion control for lossless packets moved 6 kB/s on a 50 ms path where the fast
    /// path moves 0.8–2 MB/s (the WAN bench's relay-only profile).
    pub fn lossy_active(&self) -> bool {
        self.lossy_negotiated
            && !self.lossy_tx.is_broken()
            && self.is_established()
            && !self.awaiting_peer_count
    }

    /// The transport reports whether the link is direct UDP or goes through a TCP relay.
    /// Either way the path changed: what was in flight on the fast path is sent again on
    /// the new one, whose window and round trip start afresh; a fast path that was declared
    /// broken on the old path is tried again.
    pub fn set_path(&mut self, direct: bool) {
        if direct == self.path_direct {
            return;
        }
        self.path_direct = direct;
        self.lossy_tx.new_path();
        self.shadow_due = true;
        self.pace_until = None;
    }

    /// Whether the session is suspended, waiting for its link and a resume.
    pub fn is_suspended(&self) -> bool {
        self.resume_by.is_some()
    }

    /// Bytes of sequenced frames kept for a resend.
    pub fn log_bytes(&self) -> usize {
        self.log_bytes
    }

    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Whether the session might produce a packet now.
    pub fn can_send(&self) -> bool {
        self.link_up && !(self.lossless_blocked && self.lossy_blocked)
    }

    /// The transport refused the packet just emitted (`SendBlocked`): its lane waits.
    pub fn block_last_lane(&mut self) {
        if self.last_lossy {
            self.lossy_blocked = true;
        } else {
            self.lossless_blocked = true;
        }
    }

    /// The transport has room again (`SendReady`), or the link changed: both lanes go.
    pub fn unblock(&mut self) {
        self.lossless_blocked = false;
        self.lossy_blocked = false;
    }

    // ----- handshake -------------------------------------------------------------------

    /// Starts a handshake: queues HELLO and arms its timeout. A suspended session resumes
    /// instead (RESUME with its own id, its flow state kept); any other starts afresh
    /// with `id`.
    pub fn send_hello(&mut self, now: Instant, id: SessionId, config: &EndpointConfig) {
        if self.is_suspended() {
            self.urgent.clear();
            self.deferred = None;
        } else {
            self.id = id;
            self.reset_flow(config);
        }
        let id = self.id;
        let resume = self.is_suspended();
        let proof = config
            .client_secret
            .as_ref()
            .map(|s| s.hello_proof(&config.local_id, &self.peer));
        let hello = Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            capabilities: config.capabilities().0,
            session: id,
            stream_window: config.stream_window,
            session_window: config.session_window,
            proof,
        };
        self.urgent.push_back(if resume {
            Frame::Resume(hello)
        } else {
            Frame::Hello(hello)
        });
        self.state = State::HelloSent {
            deadline: now + config.handshake_timeout,
        };
    }

    fn reset_flow(&mut self, config: &EndpointConfig) {
        self.urgent.clear();
        self.control.clear();
        self.advisory_queued = 0;
        self.window_updates.clear();
        self.session_window_queued = false;
        self.sched.clear();
        self.send_max = 0;
        self.send_total = 0;
        self.recv_max = config.session_window;
        self.recv_total = 0;
        self.recv_consumed = 0;
        self.last_ping = None;
        self.log.clear();
        self.log_bytes = 0;
        self.resend_from = 0;
        self.tx_seq = 0;
        self.rx_seq = 0;
        self.rx_acked = 0;
        self.ack_due = None;
        self.ack_now = false;
        self.awaiting_peer_count = false;
        self.resume_by = None;
        self.resume_asked = false;
        self.lossy_negotiated = false;
        self.lossy_credit = false;
        self.batching = false;
        self.deferred = None;
        self.twin_updates.clear();
        self.session_twin_due = false;
        self.lossy_tx = LossySender::new(config.congestion);
        self.lossy_rx = LossyReceiver::default();
        self.pace_until = None;
        self.liveness_ping_out = false;
        self.shadow_due = false;
    }

    /// The link was lost (or went silent) while established: keep every stream and the
    /// frame log, stop sending, and wait up to the resume grace for the link to return.
    pub fn suspend(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        if self.resume_by.is_none() {
            self.resume_by = Some(now + ctx.config.resume_grace);
            ctx.events
                .push_back(Event::SessionSuspended { peer: self.peer });
        }
        self.state = State::Idle { retry_at: None };
        // A packet held back from a full batch goes with the link: if it was sequenced,
        // it is in the log and is resent from the peer's count like the others.
        self.deferred = None;
        // PONGs go with the link; RSTs for unknown streams are sequenced and stay queued,
        // still counted against the advisory bound.
        let pongs = self
            .urgent
            .drain(..)
            .filter(|f| matches!(f, Frame::Pong { .. }))
            .count();
        self.advisory_queued = self.advisory_queued.saturating_sub(pongs);
        self.ack_due = None;
        self.ack_now = false;
        self.awaiting_peer_count = false;
        self.last_ping = None;
        // Whatever was in flight on the fast path is sent again after the resume.
        self.lossy_tx.new_path();
        self.pace_until = None;
        self.liveness_ping_out = false;
    }

    /// The resume handshake completed (either way): tell the peer how many of its frames
    /// arrived, and wait for its count before resending from it.
    pub fn resume(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        self.state = State::Established;
        self.resume_by = None;
        self.resume_asked = false;
        self.failures = 0;
        self.last_recv = now;
        self.last_ping = None;
        self.urgent.push_back(Frame::Ack {
            received: self.rx_seq,
        });
        self.rx_acked = self.rx_seq;
        self.ack_due = None;
        self.ack_now = false;
        self.awaiting_peer_count = true;
        self.shadow_due = true;
        // Opens in progress get a fresh timeout: the outage was not the server's silence.
        for (t, _) in self.open_deadlines.iter_mut() {
            *t = now + ctx.config.open_timeout;
        }
        ctx.events
            .push_back(Event::SessionResumed { peer: self.peer });
        self.send_pending_opens(ctx);
    }

    /// A sequenced frame arrived: count it and arrange its acknowledgement.
    pub fn count_received(&mut self, now: Instant) {
        self.rx_seq += 1;
        if self.ack_due.is_none() {
            self.ack_due = Some(now + ACK_DELAY);
        }
    }

    /// The peer's ACK: forget the frames it has. The first ACK after a resume is the
    /// peer's count, and the resend starts there.
    fn on_ack_frame(&mut self, received: u64) -> Result<(), SessionCode> {
        let log_start = self.tx_seq - self.log.len() as u64;
        if received > self.tx_seq || (self.awaiting_peer_count && received < log_start) {
            // Frames never sent, or frames it already acknowledged and now lacks.
            return Err(SessionCode::ProtocolViolation);
        }
        let n = received.saturating_sub(log_start) as usize;
        for p in self.log.drain(..n) {
            self.log_bytes -= p.len();
        }
        self.resend_from = self.resend_from.saturating_sub(n);
        if self.awaiting_peer_count {
            self.awaiting_peer_count = false;
            self.resend_from = 0;
        }
        Ok(())
    }

    /// The handshake completed (either way): take the peer's grants and let streams move.
    pub fn establish(
        &mut self,
        now: Instant,
        peer_stream_window: u32,
        peer_session_window: u64,
        capabilities: Capabilities,
        ctx: &mut Ctx<'_>,
    ) {
        self.state = State::Established;
        self.lossy_negotiated = capabilities.contains(Capabilities::LOSSY_DATA);
        self.lossy_credit =
            self.lossy_negotiated && capabilities.contains(Capabilities::LOSSY_CREDIT);
        self.batching = capabilities.contains(Capabilities::BATCH);
        self.failures = 0;
        self.last_recv = now;
        self.last_ping = None;
        self.peer_stream_window = u64::from(peer_stream_window);
        self.send_max = peer_session_window;
        ctx.events
            .push_back(Event::SessionEstablished { peer: self.peer });
        self.send_pending_opens(ctx);
    }

    /// Streams opened while no session was up go out now, in the order they were opened
    /// (their deadlines are in opening order).
    fn send_pending_opens(&mut self, ctx: &mut Ctx<'_>) {
        let waiting: Vec<StreamId> = self.open_deadlines.iter().map(|&(_, id)| id).collect();
        for id in waiting {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            if s.state != (OpenState::Opening { open_sent: false }) {
                continue;
            }
            s.state = OpenState::Opening { open_sent: true };
            s.send.max_offset = self.peer_stream_window;
            self.control.push_back(Frame::Open {
                stream: id,
                target: s.target.clone(),
            });
            if s.send.unsent_len() > 0 && !s.scheduled {
                s.scheduled = true;
                self.sched.push_back(id);
            }
            if s.send.fin_requested && s.send.unsent_len() == 0 {
                s.send.fin_sent = true;
                self.control.push_back(Frame::Fin {
                    stream: id,
                    offset: s.send.written,
                    ack: s.recv.received,
                });
            }
            s.send.want_writable = false;
            ctx.events.push_back(Event::StreamWritable { stream: id });
        }
    }

    /// The version both sides speak, if any.
    pub fn negotiate_version(h: &Hello) -> Option<u16> {
        let hi = h.max_version.min(PROTOCOL_VERSION);
        let lo = h.min_version.max(MIN_PROTOCOL_VERSION);
        (lo <= hi).then_some(hi)
    }

    /// Ends every stream (with `StreamReset`), announces `SessionClosed`, and clears the
    /// session's queues. The caller decides whether the session itself survives.
    pub fn end(&mut self, code: SessionCode, remote: bool, ctx: &mut Ctx<'_>) {
        self.end_inner(code, remote, false, ctx);
    }

    /// Like [`Session::end`], for a client that will start a new session: streams opened
    /// since the last one was up never went out, and wait for the next one instead.
    pub fn end_keeping_unsent(&mut self, code: SessionCode, remote: bool, ctx: &mut Ctx<'_>) {
        self.end_inner(code, remote, true, ctx);
    }

    fn end_inner(&mut self, code: SessionCode, remote: bool, keep_unsent: bool, ctx: &mut Ctx<'_>) {
        let unsent = OpenState::Opening { open_sent: false };
        let ended: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, s)| !(keep_unsent && s.state == unsent))
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            self.streams.remove(&id);
            ctx.index.remove(&id);
            ctx.events.push_back(Event::StreamReset {
                stream: id,
                code: StreamCode::SessionClosed,
                remote: false,
            });
        }
        for s in self.streams.values_mut() {
            s.scheduled = false;
        }
        let streams = &self.streams;
        self.open_deadlines
            .retain(|(_, id)| streams.contains_key(id));
        self.recently_closed.clear();
        self.reset_flow(ctx.config);
        ctx.events.push_back(Event::SessionClosed {
            peer: self.peer,
            code,
            remote,
        });
    }

    /// An initiator's session (or its handshake) failed with `code`: say so, then try again
    /// after the backoff. Streams that never went out (opened during a handshake or an
    /// outage) wait for the next attempt, bounded by their open timeout; the others end.
    pub fn fail_and_retry(
        &mut self,
        now: Instant,
        code: SessionCode,
        remote: bool,
        ctx: &mut Ctx<'_>,
    ) {
        self.end_keeping_unsent(code, remote, ctx);
        self.schedule_retry(now, ctx.config);
    }

    /// After an initiator's session ended: wait, then try again (if the link is up).
    pub fn schedule_retry(&mut self, now: Instant, config: &EndpointConfig) {
        let backoff = 1u32 << self.failures.min(5);
        self.failures = self.failures.saturating_add(1);
        self.state = State::Idle {
            retry_at: Some(now + config.reconnect_delay * backoff),
        };
    }

    // ----- streams -----------------------------------------------------------------------

    pub fn incoming_streams(&self) -> usize {
        self.streams
            .values()
            .filter(|s| s.origin == Origin::Remote)
            .count()
    }

    pub fn add_local_stream(&mut self, now: Instant, stream: Stream, config: &EndpointConfig) {
        let id = stream.id;
        let mut stream = stream;
        if self.is_established() {
            stream.state = OpenState::Opening { open_sent: true };
            stream.send.max_offset = self.peer_stream_window;
            self.control.push_back(Frame::Open {
                stream: id,
                target: stream.target.clone(),
            });
        }
        self.streams.insert(id, stream);
        self.open_deadlines
            .push_back((now + config.open_timeout, id));
    }

    /// Removes a stream: bytes counted and not read count as consumed (returning their
    /// credit), and the ID is remembered with how it went, so late frames for it are
    /// dropped quietly (and counted or settled as `gone` says).
    pub fn remove_stream(&mut self, id: StreamId, gone: Gone, ctx: &mut Ctx<'_>) -> Option<Stream> {
        let s = self.streams.remove(&id)?;
        ctx.index.remove(&id);
        self.consume(s.recv.hi - s.recv.read, ctx.config);
        self.remember_closed(id, gone);
        if !matches!(gone, Gone::Closed { .. }) {
            // Reset, refused or settled: nothing of it is sent again.
            self.lossy_tx.forget_stream(id);
        }
        Some(s)
    }

    fn remember_closed(&mut self, id: StreamId, gone: Gone) {
        if self.recently_closed.len() == RECENTLY_CLOSED {
            self.recently_closed.pop_front();
        }
        self.recently_closed.push_back((id, gone));
    }

    fn was_closed(&self, id: &StreamId) -> bool {
        self.gone(id).is_some()
    }

    fn gone(&self, id: &StreamId) -> Option<Gone> {
        self.recently_closed
            .iter()
            .rev()
            .find(|(s, _)| s == id)
            .map(|&(_, g)| g)
    }

    fn set_gone(&mut self, id: &StreamId, gone: Gone) {
        if let Some(e) = self.recently_closed.iter_mut().rev().find(|(s, _)| s == id) {
            e.1 = gone;
        }
    }

    /// The peer's RST settles session credit: its direction counts as `final_size` here
    /// (whatever reached us), and, if `refund`, ours counts as `peer_received` there.
    fn settle(
        &mut self,
        counted_here: u64,
        final_size: u64,
        refund: Option<(u64, u64)>,
        config: &EndpointConfig,
    ) -> Result<(), SessionCode> {
        let extra = final_size.saturating_sub(counted_here);
        self.recv_total += extra;
        if self.recv_total > self.recv_max {
            return Err(SessionCode::FlowControl);
        }
        self.consume(extra, config);
        if let Some((sent, peer_received)) = refund {
            // What we sent past what the peer counted never used its credit.
            if peer_received <= sent {
                self.send_total -= (sent - peer_received).min(self.send_total);
            }
        }
        Ok(())
    }

    /// Counts bytes as consumed for session credit and queues SESSION_WINDOW when half of
    /// the window is free again.
    pub fn consume(&mut self, n: u64, config: &EndpointConfig) {
        self.recv_consumed += n;
        let w = config.session_window;
        if self.recv_consumed + w - self.recv_max >= w / 2 {
            self.session_window_queued = true;
            if self.twins_on() {
                self.session_twin_due = true;
            }
        }
    }

    /// Whether credit grants go on the lossy lane too: the fast path runs and the peer
    /// takes twins. The credit then returns on the lane its bytes came by, not behind
    /// c-toxcore's congestion control for lossless packets, which on a mostly idle
    /// direction starts near a few hundred packets a second (a burst of a hundred OPENs
    /// held a SESSION_WINDOW there for 0.4 s), and not behind a lossless queue full of
    /// other streams' WINDOW frames. The sequenced originals still go in the log.
    fn twins_on(&self) -> bool {
        self.lossy_credit && self.lossy_active()
    }

    /// Grants session credit up to a window past what was consumed, if that is more than
    /// granted so far (SESSION_WINDOW and its twin both grant through here).
    fn grant_session(&mut self, config: &EndpointConfig) {
        self.recv_max = self
            .recv_max
            .max(self.recv_consumed + config.session_window);
    }

    /// Doubles a stream's window (up to `max_stream_window`) when the credit, not the
    /// reader, held the peer back (`RecvHalf::credit_starved`): windows follow the
    /// bandwidth-delay product without a round-trip estimate, and a slow reader's stream
    /// keeps `stream_window`. What windows grew beyond `stream_window`, all streams
    /// together, stays within `session_window`, so a peer with many fast streams cannot
    /// make either side buffer more than that beyond the first windows.
    fn maybe_grow_window(&mut self, id: StreamId, config: &EndpointConfig) {
        let (first, max) = (
            u64::from(config.stream_window),
            u64::from(config.max_stream_window).min(config.session_window),
        );
        let wants = self
            .streams
            .get(&id)
            .is_some_and(|s| s.recv.window < max && s.recv.credit_starved());
        if !wants {
            return;
        }
        let grown: u64 = self
            .streams
            .values()
            .map(|s| s.recv.window.saturating_sub(first))
            .sum();
        let room = config.session_window.saturating_sub(grown);
        if let Some(s) = self.streams.get_mut(&id) {
            let w = s.recv.window;
            s.recv.window = (w * 2).min(max).min(w + room);
            s.recv.grown_at = s.recv.read;
        }
    }

    /// After the application read from a stream: maybe queue its WINDOW update.
    pub fn after_read(&mut self, id: StreamId, n: u64, config: &EndpointConfig) {
        self.consume(n, config);
        self.maybe_grow_window(id, config);
        let twins = self.twins_on();
        if let Some(s) = self.streams.get_mut(&id) {
            if s.recv.wants_window_update() {
                if !s.recv.window_update_queued {
                    s.recv.window_update_queued = true;
                    self.window_updates.push_back(id);
                }
                if twins && !s.recv.twin_queued {
                    s.recv.twin_queued = true;
                    self.twin_updates.push_back(id);
                }
            }
        }
    }

    /// Puts a stream with unsent bytes into the round-robin queue.
    pub fn schedule(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get_mut(&id) {
            if !s.scheduled && s.send.unsent_len() > 0 {
                s.scheduled = true;
                self.sched.push_back(id);
            }
        }
    }

    /// Queues FIN if the application finished and every byte went out; closes the stream
    /// if both directions are then done.
    pub fn maybe_send_fin(&mut self, id: StreamId, ctx: &mut Ctx<'_>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let open_sent = !matches!(s.state, OpenState::Opening { open_sent: false });
        if s.send.fin_requested && !s.send.fin_sent && s.send.unsent_len() == 0 && open_sent {
            s.send.fin_sent = true;
            self.control.push_back(Frame::Fin {
                stream: id,
                offset: s.send.written,
                ack: s.recv.received,
            });
        }
        self.maybe_close(id, ctx);
    }

    /// Frees a stream whose both directions are done.
    pub fn maybe_close(&mut self, id: StreamId, ctx: &mut Ctx<'_>) {
        if let Some(s) = self.streams.get(&id).filter(|s| s.is_finished()) {
            let gone = Gone::Closed {
                sent: s.send.sent,
                received: s.recv.hi,
            };
            self.remove_stream(id, gone, ctx);
            ctx.events.push_back(Event::StreamClosed { stream: id });
        }
    }

    /// Resets a stream from this side: RST to the peer (if it knows the stream), the stream
    /// freed, and `StreamReset` announced when the application did not ask for it.
    pub fn reset_stream(
        &mut self,
        id: StreamId,
        code: StreamCode,
        announce: bool,
        ctx: &mut Ctx<'_>,
    ) {
        let received = match self.streams.get(&id) {
            Some(s) => s.recv.hi,
            None => return,
        };
        let Some(s) = self.remove_stream(id, Gone::Reset { received }, ctx) else {
            return;
        };
        if !matches!(s.state, OpenState::Opening { open_sent: false }) {
            self.control.push_back(Frame::Rst {
                stream: id,
                code,
                offset: s.send.sent,
                received,
            });
        }
        if announce {
            ctx.events.push_back(Event::StreamReset {
                stream: id,
                code,
                remote: false,
            });
        }
    }

    /// Queues a frame: sequenced ones after the control frames already queued, the others
    /// (handshake, PING, PONG, ACK) before everything.
    pub fn queue_control(&mut self, frame: Frame) {
        if frame.is_sequenced() {
            self.control.push_back(frame);
        } else {
            self.urgent.push_back(frame);
        }
    }

    fn queue_advisory(&mut self, frame: Frame) {
        if self.advisory_queued < MAX_ADVISORY_QUEUED {
            self.advisory_queued += 1;
            self.queue_control(frame);
        }
    }

    // ----- incoming frames (established) -------------------------------------------------

    /// Handles a stream or keepalive frame on an established session. Returns a session
    /// code if the frame breaks the session as a whole.
    pub fn on_frame(&mut self, frame: Frame, ctx: &mut Ctx<'_>) -> Result<(), SessionCode> {
        match frame {
            Frame::Ping { token } => self.queue_advisory(Frame::Pong { token }),
            Frame::Pong { .. } => self.liveness_ping_out = false,
            Frame::Ack { received } => self.on_ack_frame(received)?,
            Frame::SessionWindow { max } => self.on_session_window(max),
            Frame::LossySessionWindow { max } => {
                if !self.lossy_credit {
                    return Err(SessionCode::ProtocolViolation);
                }
                self.on_session_window(max);
            }
            Frame::Open { stream, target } => self.on_open(stream, target, ctx),
            Frame::OpenOk { stream } => match self.streams.get_mut(&stream) {
                Some(s) if s.state == (OpenState::Opening { open_sent: true }) => {
                    s.state = OpenState::Open;
                    // Bytes written before OPEN_OK went as DATA (the fast path waits for
                    // it): their copies go on the fast path now, rather than behind
                    // c-toxcore's lossless packets (uploads started at half the speed of
                    // downloads on the WAN bench's broadband path, their first 100-160 kB
                    // crawling in the frame log).
                    if s.send.sent > 0 {
                        self.shadow_due = true;
                    }
                    ctx.events.push_back(Event::StreamOpened { stream });
                    if s.recv.buffered > 0 && !s.recv.readable_signaled {
                        // Fast-path bytes overtook the OPEN_OK.
                        s.recv.readable_signaled = true;
                        ctx.events.push_back(Event::StreamReadable { stream });
                    }
                }
                Some(_) => self.reset_stream(stream, StreamCode::StreamState, true, ctx),
                None => self.unknown_stream(stream),
            },
            Frame::OpenErr { stream, code } => match self.streams.get(&stream) {
                Some(s) if s.state == (OpenState::Opening { open_sent: true }) => {
                    self.remove_stream(stream, Gone::Settled, ctx);
                    ctx.events.push_back(Event::StreamRefused { stream, code });
                }
                Some(_) => self.reset_stream(stream, StreamCode::StreamState, true, ctx),
                None => {}
            },
            Frame::Data {
                stream,
                offset,
                ack,
                payload,
            } => return self.on_data(stream, offset, ack, payload, ctx),
            Frame::Fin {
                stream,
                offset,
                ack,
            } => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    self.unknown_stream(stream);
                    return Ok(());
                };
                let res = if matches!(s.state, OpenState::Opening { .. }) {
                    Err(StreamCode::StreamState)
                } else {
                    s.recv
                        .on_fin(offset, self.lossy_negotiated)
                        .and_then(|()| s.send.on_ack(ack))
                };
                match res {
                    Err(code) => self.reset_stream(stream, code, true, ctx),
                    Ok(()) => {
                        if !s.recv.readable_signaled && s.state == OpenState::Open {
                            s.recv.readable_signaled = true;
                            ctx.events.push_back(Event::StreamReadable { stream });
                        }
                    }
                }
            }
            Frame::Rst {
                stream,
                code,
                offset,
                received,
            } => {
                if let Some(s) = self.streams.get(&stream) {
                    let (hi, sent) = (s.recv.hi, s.send.sent);
                    self.remove_stream(stream, Gone::Settled, ctx);
                    ctx.events.push_back(Event::StreamReset {
                        stream,
                        code,
                        remote: true,
                    });
                    self.settle(hi, offset, Some((sent, received)), ctx.config)?;
                } else {
                    match self.gone(&stream) {
                        Some(Gone::Closed { sent, received: hi }) => {
                            self.set_gone(&stream, Gone::Settled);
                            self.settle(hi, offset, Some((sent, received)), ctx.config)?;
                        }
                        Some(Gone::Reset { received: hi }) => {
                            // Both reset at once: each settles its receive direction.
                            self.set_gone(&stream, Gone::Settled);
                            self.settle(hi, offset, None, ctx.config)?;
                        }
                        _ => {}
                    }
                }
            }
            Frame::LossyData { .. } | Frame::LossyAck { .. } => {
                // The endpoint routes the fast path's frames to their own handlers.
            }
            Frame::Window {
                stream,
                max_offset,
                ack,
            } => self.on_window(stream, max_offset, ack, false, ctx),
            Frame::LossyWindow {
                stream,
                max_offset,
                ack,
            } => {
                if !self.lossy_credit {
                    return Err(SessionCode::ProtocolViolation);
                }
                self.on_window(stream, max_offset, ack, true, ctx);
            }
            Frame::Batch(_)
            | Frame::Hello(_)
            | Frame::Resume(_)
            | Frame::HelloAck(_)
            | Frame::HelloReject { .. }
            | Frame::Close { .. } => {
                // The endpoint handles handshake frames, and splits batches, before
                // routing here.
            }
        }
        Ok(())
    }

    /// SESSION_WINDOW or its lossy twin: credit only grows.
    fn on_session_window(&mut self, max: u64) {
        if max > self.send_max {
            self.send_max = max;
        }
    }

    /// WINDOW or its lossy twin. A twin for a stream we no longer have is a late copy of
    /// credit we no longer need (its lossless original came first or comes later): it is
    /// ignored rather than answered with RST.
    fn on_window(
        &mut self,
        stream: StreamId,
        max_offset: u64,
        ack: u64,
        twin: bool,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(s) = self.streams.get_mut(&stream) else {
            if !twin {
                self.unknown_stream(stream);
            }
            return;
        };
        if let Err(code) = s.send.on_ack(ack) {
            self.reset_stream(stream, code, true, ctx);
        } else if s.send.on_window(max_offset) && s.send.want_writable {
            s.send.want_writable = false;
            ctx.events.push_back(Event::StreamWritable { stream });
        }
    }

    /// A frame for a stream we do not have: RST, unless we closed it recently (then the
    /// frame was simply in flight) — never a new connection.
    fn unknown_stream(&mut self, stream: StreamId) {
        if !self.was_closed(&stream) {
            self.remember_closed(stream, Gone::Unknown);
            // Zero counts: nothing of this stream was counted here, so the peer refunds
            // whatever it sent.
            self.queue_advisory(Frame::Rst {
                stream,
                code: StreamCode::UnknownStream,
                offset: 0,
                received: 0,
            });
        }
    }

    fn on_open(&mut self, stream: StreamId, target: crate::Target, ctx: &mut Ctx<'_>) {
        let refuse = |this: &mut Self, code: StreamCode| {
            this.remember_closed(stream, Gone::Refused);
            this.control.push_back(Frame::OpenErr { stream, code });
        };
        let Role::Responder(admission) = self.role else {
            return refuse(self, StreamCode::NotAccepting);
        };
        if self.streams.contains_key(&stream)
            || self.was_closed(&stream)
            || ctx.index.contains_key(&stream)
        {
            // Do not disturb the live stream (this peer's, or another peer's: stream ids are
            // random, so a clash is a broken or hostile peer); refuse the duplicate without
            // remembering it.
            self.control.push_back(Frame::OpenErr {
                stream,
                code: StreamCode::DuplicateStream,
            });
            return;
        }
        let Some(policy) = ctx.config.server.as_ref() else {
            return refuse(self, StreamCode::NotAccepting);
        };
        if self.incoming_streams() >= policy.limits.max_streams_per_peer {
            return refuse(self, StreamCode::TooManyStreams);
        }
        if policy.rules(admission).allowing(&target).is_none() {
            return refuse(self, StreamCode::TargetNotAllowed);
        }
        let mut s = Stream::new(
            stream,
            target.clone(),
            Origin::Remote,
            OpenState::Incoming,
            u64::from(ctx.config.stream_window),
        );
        s.send.max_offset = self.peer_stream_window;
        self.streams.insert(stream, s);
        ctx.index.insert(stream, self.peer);
        ctx.events.push_back(Event::StreamIncoming {
            stream,
            peer: self.peer,
            target,
        });
    }

    fn on_data(
        &mut self,
        stream: StreamId,
        offset: u64,
        ack: u64,
        payload: Bytes,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), SessionCode> {
        let Some(s) = self.streams.get_mut(&stream) else {
            match self.gone(&stream) {
                Some(Gone::Refused) => {
                    // Ordered bytes for a stream we refused still used the peer's session
                    // credit: count them as received and at once consumed, as it does.
                    let n = payload.len() as u64;
                    self.recv_total += n;
                    if self.recv_total > self.recv_max {
                        return Err(SessionCode::FlowControl);
                    }
                    self.consume(n, ctx.config);
                }
                Some(_) => {} // settled by RST counts (ours or the peer's)
                None => self.unknown_stream(stream),
            }
            return Ok(());
        };
        if matches!(s.state, OpenState::Opening { .. }) {
            // The peer must send OPEN_OK before DATA.
            self.reset_stream(stream, StreamCode::StreamState, true, ctx);
            return Ok(());
        }
        // The ACK first: bytes accepted into the buffer must be counted in the session's
        // total, and a frame refused after its bytes went in would leave them uncounted
        // (and their credit returned twice when the stream is freed).
        let allow_gaps = self.lossy_negotiated;
        let received = match s
            .send
            .on_ack(ack)
            .and_then(|()| s.recv.on_data(offset, payload, allow_gaps))
        {
            Ok(r) => r,
            Err(code) => {
                self.reset_stream(stream, code, true, ctx);
                return Ok(());
            }
        };
        count_received_bytes(&mut self.recv_total, self.recv_max, s, received, ctx.events)
    }

    // ----- the fast path ------------------------------------------------------------------

    /// LDATA: stream bytes in a lossy packet. The packet number is recorded (and
    /// acknowledged) whatever becomes of the bytes: a packet is either used or useless,
    /// never worth sending again.
    pub fn on_lossy_data(
        &mut self,
        now: Instant,
        packet: u64,
        stream: StreamId,
        offset: u64,
        payload: Bytes,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), SessionCode> {
        if !self.lossy_negotiated {
            return Err(SessionCode::ProtocolViolation);
        }
        if !self.lossy_rx.on_packet(now, packet) {
            return Ok(()); // a duplicate packet
        }
        let Some(s) = self.streams.get_mut(&stream) else {
            if self.gone(&stream).is_none() {
                self.unknown_stream(stream);
            }
            return Ok(()); // freed: settled by RST counts, or a late duplicate
        };
        // The sender uses the fast path only on a stream open at both ends; its bytes may
        // overtake our OPEN_OK's arrival at the opener, never the OPEN at the acceptor.
        if !matches!(
            s.state,
            OpenState::Open | OpenState::Opening { open_sent: true }
        ) {
            self.reset_stream(stream, StreamCode::StreamState, true, ctx);
            return Ok(());
        }
        let received = match s.recv.on_data(offset, payload, true) {
            Ok(r) => r,
            Err(code) => {
                self.reset_stream(stream, code, true, ctx);
                return Ok(());
            }
        };
        count_received_bytes(&mut self.recv_total, self.recv_max, s, received, ctx.events)
    }

    /// LACK: packets of ours that arrived. Their bytes are acknowledged; streams waiting
    /// only for that are freed.
    pub fn on_lossy_ack(
        &mut self,
        now: Instant,
        delay_us: u32,
        ranges: &[(u64, u64)],
        ctx: &mut Ctx<'_>,
    ) -> Result<(), SessionCode> {
        if !self.lossy_negotiated {
            return Err(SessionCode::ProtocolViolation);
        }
        let delay = Duration::from_micros(u64::from(delay_us));
        let acked = self
            .lossy_tx
            .on_ack(now, ranges, delay)
            .map_err(|()| SessionCode::ProtocolViolation)?;
        for (id, n) in acked.streams {
            if let Some(s) = self.streams.get_mut(&id) {
                s.send.lossy_unacked = s.send.lossy_unacked.saturating_sub(n);
                if s.send.lossy_unacked == 0 {
                    self.maybe_close(id, ctx);
                }
            }
        }
        Ok(())
    }

    // ----- timers ------------------------------------------------------------------------

    /// The next instant this session needs `handle_timeout`.
    pub fn deadline(&self, config: &EndpointConfig) -> Option<Instant> {
        let mut next = self.open_deadlines.front().map(|&(t, _)| t);
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        match self.state {
            State::Idle { retry_at: Some(t) } if self.link_up => consider(t),
            State::Idle { .. } => {}
            State::HelloSent { deadline } => consider(deadline),
            State::Established => {
                consider(self.last_recv + config.idle_timeout);
                consider(self.next_ping(config));
                if let Some(t) = self.ack_due {
                    consider(t);
                }
                if let Some(t) = self.lossy_rx.deadline() {
                    consider(t);
                }
                if let Some(t) = self.lossy_tx.deadline() {
                    consider(t);
                }
                if let Some(t) = self.lossy_tx.retry_at() {
                    consider(t);
                }
                if let Some(t) = self.pace_until {
                    consider(t);
                }
            }
        }
        if let Some(t) = self.resume_by {
            consider(t);
        }
        next
    }

    /// Whether an open whose timeout passed waits for the path rather than failing: the
    /// session is held (established or suspended, within its grace), and the peer either
    /// never acknowledged the OPEN (it never reached it: the path is out, or c-toxcore's
    /// queue holds it) or has been silent past the keepalive (its answer may be what the
    /// path holds). An open times out only when a peer that has it, and that the path
    /// reaches, does not answer; before, a stream opened during an 8 s outage failed with
    /// 2009 though its session was held.
    fn path_holds_open(&self, now: Instant, s: &Stream, config: &EndpointConfig) -> bool {
        if self.is_suspended() {
            return true;
        }
        if !self.is_established() {
            return false; // no session to wait for: the handshake itself is failing
        }
        let acknowledged_count = self.tx_seq - self.log.len() as u64;
        let peer_has_it = s.open_seq.is_some_and(|q| q <= acknowledged_count);
        let silent = now >= self.last_recv + config.keepalive_interval * 3 / 2;
        !peer_has_it || silent
    }

    fn next_ping(&self, config: &EndpointConfig) -> Instant {
        let since = self
            .last_ping
            .map_or(self.last_recv, |p| p.max(self.last_recv));
        since + config.keepalive_interval
    }

    /// Fires expired open timeouts and keepalives. Session-wide timeouts are returned for
    /// the endpoint to act on.
    pub fn on_timeout(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<SessionCode> {
        while let Some(&(t, id)) = self.open_deadlines.front() {
            if t > now {
                break;
            }
            let opening = self
                .streams
                .get(&id)
                .filter(|s| matches!(s.state, OpenState::Opening { .. }));
            if opening.is_some_and(|s| self.path_holds_open(now, s, ctx.config)) {
                // Not the peer's silence but the path's: wait, as the session does. Every
                // deadline moves alike, so they stay in order.
                for (t, _) in self.open_deadlines.iter_mut() {
                    *t = (*t).max(now + OPEN_RECHECK);
                }
                break;
            }
            self.open_deadlines.pop_front();
            if opening.is_some() {
                self.reset_stream(id, StreamCode::OpenTimeout, false, ctx);
                ctx.events.push_back(Event::StreamRefused {
                    stream: id,
                    code: StreamCode::OpenTimeout,
                });
            }
        }
        match self.state {
            State::HelloSent { deadline } if now >= deadline => {
                return Some(SessionCode::HandshakeTimeout)
            }
            State::Established => {
                if now >= self.last_recv + ctx.config.idle_timeout {
                    return Some(SessionCode::IdleTimeout);
                }
                if self.ack_due.is_some_and(|t| now >= t) {
                    self.ack_due = None;
                    self.ack_now = true;
                }
                if self.pace_until.is_some_and(|t| now >= t) {
                    self.pace_until = None;
                }
                self.lossy_rx.on_timeout(now);
                self.lossy_tx.on_timeout(now);
                if self.lossy_tx.is_broken() {
                    if self.lossy_tx.retry_at().is_some_and(|t| now >= t) {
                        // Try the fast path again, from a fresh window: the link c-toxcore
                        // still calls direct may carry lossy packets again.
                        self.lossy_tx.new_path();
                        self.pace_until = None;
                        self.shadow_due = true;
                    } else {
                        // Lossy packets do not get through: what is in flight goes
                        // lossless.
                        self.lossy_tx.abandon_in_flight();
                    }
                }
                if self.lossy_tx.take_liveness_ping_request() && !self.liveness_ping_out {
                    // Does anything get through? A PONG while the probes stay unanswered
                    // says the fast path alone is down; silence says the path is.
                    self.liveness_ping_out = true;
                    self.ping_token = self.ping_token.wrapping_add(1);
                    self.queue_control(Frame::Ping {
                        token: self.ping_token,
                    });
                }
                if now >= self.next_ping(ctx.config) {
                    self.last_ping = Some(now);
                    self.ping_token = self.ping_token.wrapping_add(1);
                    self.queue_control(Frame::Ping {
                        token: self.ping_token,
                    });
                }
            }
            _ => {}
        }
        None
    }

    // ----- outgoing packets --------------------------------------------------------------

    /// The next packet to send to this peer, if any: unsequenced frames first, then
    /// acknowledgements due (LACK, ACK), then frames to resend, then the fast path's lost
    /// payloads, then new sequenced frames — control frames, credit updates — while the
    /// frame log has room, and stream data round-robin across streams: as LDATA within the
    /// congestion window and the pacer when the fast path is on, as DATA otherwise.
    ///
    /// With BATCH negotiated, small lossless packets that are ready one after another go
    /// together in one BATCH packet (in the same order): nothing waits for company, but a
    /// burst of OPENs, OPEN_OKs, credit updates and ACKs takes a few of c-toxcore's
    /// lossless packets instead of one each.
    pub fn poll_transmit(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<Bytes> {
        if !self.can_send() {
            return None;
        }
        let lane_open = |s: &Self, p: &Bytes| {
            if is_lossy(p) {
                !s.lossy_blocked
            } else {
                !s.lossless_blocked
            }
        };
        // A packet held back from a batch goes first, unless its lane is blocked; then the
        // other lane goes meanwhile, unbatched (the slot is taken).
        let (first, slot_free) = match self.deferred.take() {
            Some(p) if lane_open(self, &p) => (p, true),
            Some(p) => {
                self.deferred = Some(p);
                (self.poll_packet(now, ctx)?, false)
            }
            None => (self.poll_packet(now, ctx)?, true),
        };
        self.last_lossy = is_lossy(&first);
        let max = ctx.config.max_packet_size;
        if !slot_free
            || !self.batching
            || !frame::batchable(&first)
            || 1 + frame::batched_len(first.len()) + frame::batched_len(MIN_FRAME_LEN) > max
        {
            return Some(first);
        }
        let mut batch: Option<BytesMut> = None;
        while let Some(next) = self.poll_packet(now, ctx) {
            let len = batch
                .as_ref()
                .map_or(1 + frame::batched_len(first.len()), BytesMut::len);
            if !frame::batchable(&next) || len + frame::batched_len(next.len()) > max {
                self.deferred = Some(next);
                break;
            }
            let b = batch.get_or_insert_with(|| {
                let mut b = BytesMut::with_capacity(max);
                b.put_u8(frame::kind::BATCH);
                b.put_u16(first.len() as u16);
                b.put_slice(&first);
                b
            });
            b.put_u16(next.len() as u16);
            b.put_slice(&next);
        }
        Some(batch.map_or(first, BytesMut::freeze))
    }

    /// The next single packet (see [`Session::poll_transmit`]).
    ///
    /// Only packets of a lane that is not blocked come out: a lossless lane that c-toxcore's
    /// congestion control holds back must not stop the LACKs, credit twins and LDATA of the
    /// lossy one (with a hundred streams, their WINDOW updates filled it, and the fast path
    /// stalled for 150 ms at a time waiting for acknowledgements queued behind them).
    fn poll_packet(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<Bytes> {
        let (lossless, lossy_lane) = (!self.lossless_blocked, !self.lossy_blocked);
        if !lossless {
            return self.poll_lossy_lane(now, ctx, lossy_lane);
        }
        if let Some(f) = self.urgent.pop_front() {
            match f {
                Frame::Pong { .. } => {
                    self.advisory_queued = self.advisory_queued.saturating_sub(1);
                }
                Frame::Ack { .. } => self.acks_sent += 1,
                _ => {}
            }
            return Some(f.to_bytes());
        }
        if !self.is_established() {
            return None;
        }
        if lossy_lane {
            if let Some(p) = self.poll_lossy_control(now, ctx) {
                return Some(p);
            }
        }
        if self.rx_seq > self.rx_acked && (self.ack_now || self.rx_seq - self.rx_acked >= ACK_EVERY)
        {
            self.ack_now = false;
            self.ack_due = None;
            self.rx_acked = self.rx_seq;
            self.acks_sent += 1;
            return Some(
                Frame::Ack {
                    received: self.rx_seq,
                }
                .to_bytes(),
            );
        }
        if self.awaiting_peer_count {
            return None;
        }
        if let Some(p) = self.log.get(self.resend_from) {
            self.resend_from += 1;
            self.frames_resent += 1;
            return Some(p.clone());
        }
        let lossy = self.lossy_active();
        if lossy && self.shadow_due {
            self.shadow_logged_data();
        }
        if lossy_lane && lossy && self.lossy_tx.has_lost() && self.lossy_may_send(now) {
            if let Some(p) = self.resend_lossy(now) {
                return Some(p);
            }
        }
        let log_room = (self.log_bytes as u64) < ctx.config.session_window;
        if log_room {
            let p = self.poll_control(ctx).or_else(|| {
                if lossy {
                    None
                } else {
                    self.resend_lossless(ctx)
                }
            });
            if let Some(p) = p {
                return Some(self.log_frame(p));
            }
        }
        self.poll_data(now, ctx, lossy, log_room, (lossy_lane, true))
    }

    /// The lossy packets due while the lossless lane is blocked (if the lossy one is not):
    /// credit twins, LACK, lost payloads again, and LDATA.
    fn poll_lossy_lane(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        lossy_lane: bool,
    ) -> Option<Bytes> {
        if !lossy_lane || !self.is_established() {
            return None;
        }
        if let Some(p) = self.poll_lossy_control(now, ctx) {
            return Some(p);
        }
        if self.awaiting_peer_count || !self.lossy_active() {
            return None;
        }
        if self.shadow_due {
            self.shadow_logged_data();
        }
        if self.lossy_tx.has_lost() && self.lossy_may_send(now) {
            if let Some(p) = self.resend_lossy(now) {
                return Some(p);
            }
        }
        self.poll_data(now, ctx, true, false, (true, false))
    }

    /// A credit twin or a LACK, if one is due.
    fn poll_lossy_control(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<Bytes> {
        if let Some(p) = self.poll_credit_twin(ctx) {
            return Some(p);
        }
        if self.lossy_rx.wants_ack() {
            let (delay_us, ranges) = self.lossy_rx.take_ack(now);
            return Some(Frame::LossyAck { delay_us, ranges }.to_bytes());
        }
        None
    }

    /// Keeps a sequenced frame in the log until acknowledged.
    fn log_frame(&mut self, p: Bytes) -> Bytes {
        self.tx_seq += 1;
        self.log_bytes += p.len();
        self.log.push_back(p.clone());
        self.resend_from = self.log.len();
        p
    }

    /// Whether the congestion window and the pacer let one more LDATA out now.
    fn lossy_may_send(&mut self, now: Instant) -> bool {
        if self.lossy_tx.probe_due() {
            return true; // a probe timeout's packet goes whatever the window says
        }
        if !self.lossy_tx.window_open() {
            return false; // an acknowledgement makes room
        }
        match self.lossy_tx.pacing_delay(now, crate::recovery::SEGMENT) {
            None => {
                self.pace_until = None;
                true
            }
            Some(t) => {
                self.pace_until = Some(t);
                false
            }
        }
    }

    /// The fast path (re)started while stream bytes sent as DATA, when it was away, still
    /// wait in the frame log for the peer's acknowledgement: each gets a copy on the fast
    /// path (a shadow), oldest first. Those DATA frames travel in c-toxcore's lossless
    /// packets, which after an outage crawl (its congestion control starts again from a few
    /// packets a second); the receiver, waiting for them in order, would hold everything
    /// past them and grant no credit meanwhile: a download once stood still for 28 s after
    /// an 8 s outage, its bytes in the log. The receiver takes each byte once, whichever
    /// copy comes first.
    fn shadow_logged_data(&mut self) {
        self.shadow_due = false;
        let shadows: Vec<Chunk> = self
            .log
            .iter()
            .filter(|p| p.first() == Some(&frame::kind::DATA) && p.len() > DATA_HEADER_LEN)
            .filter_map(|p| match Frame::decode(p) {
                // Only streams open at both ends take the fast path (a stream still opening
                // has its OPEN in the log too, and LDATA must not overtake it).
                Ok(Frame::Data { stream, offset, .. })
                    if self
                        .streams
                        .get(&stream)
                        .is_some_and(|s| s.state == OpenState::Open) =>
                {
                    Some(Chunk {
                        stream,
                        offset,
                        payload: p.slice(DATA_HEADER_LEN..),
                        order: 0, // older than anything the new fast path sends
                        shadow: true,
                    })
                }
                _ => None,
            })
            .collect();
        self.lossy_tx.push_shadows(shadows);
    }

    /// A lost fast-path payload, sent again under a new packet number.
    fn resend_lossy(&mut self, now: Instant) -> Option<Bytes> {
        while let Some(c) = self.lossy_tx.pop_lost() {
            if !self.streams.contains_key(&c.stream) {
                continue;
            }
            let mut buf = BytesMut::with_capacity(LOSSY_DATA_HEADER_LEN + c.payload.len());
            frame::encode_lossy_data_header(
                &mut buf,
                self.lossy_tx.peek_number(),
                c.stream,
                c.offset,
            );
            buf.extend_from_slice(&c.payload);
            self.lossy_tx.on_sent(now, c, true);
            return Some(buf.freeze());
        }
        None
    }

    /// A lost fast-path payload, sent as ordinary DATA now that the fast path is off: the
    /// frame log carries it from here, and the stream no longer waits for its LACK.
    fn resend_lossless(&mut self, ctx: &mut Ctx<'_>) -> Option<Bytes> {
        while let Some(c) = self.lossy_tx.pop_lost() {
            if c.shadow {
                continue; // its original is in the log
            }
            let Some(s) = self.streams.get_mut(&c.stream) else {
                continue;
            };
            let n = c.payload.len() as u64;
            let mut buf = BytesMut::with_capacity(DATA_HEADER_LEN + c.payload.len());
            frame::encode_data_header(&mut buf, c.stream, c.offset, s.recv.received);
            buf.extend_from_slice(&c.payload);
            self.lossy_tx.on_resent_lossless(n);
            s.send.lossy_unacked = s.send.lossy_unacked.saturating_sub(n);
            if s.send.lossy_unacked == 0 {
                self.maybe_close(c.stream, ctx);
            }
            return Some(buf.freeze());
        }
        None
    }

    /// The next new control frame or credit update (the caller logs it: it is sequenced).
    fn poll_control(&mut self, ctx: &mut Ctx<'_>) -> Option<Bytes> {
        if let Some(f) = self.control.pop_front() {
            match &f {
                Frame::Rst { .. } => {
                    self.advisory_queued = self.advisory_queued.saturating_sub(1);
                }
                Frame::Open { stream, .. } => {
                    if let Some(s) = self.streams.get_mut(stream) {
                        s.open_seq = Some(self.tx_seq + 1);
                    }
                }
                _ => {}
            }
            return Some(f.to_bytes());
        }
        while let Some(id) = self.window_updates.pop_front() {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.recv.window_update_queued = false;
            // The twin may have granted this already; the frame carries the latest grant.
            s.recv.grant();
            return Some(
                Frame::Window {
                    stream: id,
                    max_offset: s.recv.max_offset,
                    ack: s.recv.received,
                }
                .to_bytes(),
            );
        }
        if self.session_window_queued {
            self.session_window_queued = false;
            self.grant_session(ctx.config);
            return Some(Frame::SessionWindow { max: self.recv_max }.to_bytes());
        }
        None
    }

    /// A credit grant on the lossy lane (LSESSION_WINDOW first, then LWINDOW), if one is
    /// due and the fast path still runs.
    fn poll_credit_twin(&mut self, ctx: &mut Ctx<'_>) -> Option<Bytes> {
        if !self.twins_on() {
            // The lossy lane is gone: the lossless originals carry the grants.
            for id in std::mem::take(&mut self.twin_updates) {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.recv.twin_queued = false;
                }
            }
            self.session_twin_due = false;
            return None;
        }
        if std::mem::take(&mut self.session_twin_due) {
            self.grant_session(ctx.config);
            return Some(Frame::LossySessionWindow { max: self.recv_max }.to_bytes());
        }
        while let Some(id) = self.twin_updates.pop_front() {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.recv.twin_queued = false;
            s.recv.grant();
            return Some(
                Frame::LossyWindow {
                    stream: id,
                    max_offset: s.recv.max_offset,
                    ack: s.recv.received,
                }
                .to_bytes(),
            );
        }
        None
    }

    /// New stream bytes, round-robin across streams: LDATA for open streams when the fast
    /// path is on (within window and pacer), DATA in the frame log otherwise (while it has
    /// room). A stream that cannot go now keeps its turn.
    ///
    /// `lossy`: the fast path runs. `lanes`: whether the lossy and the lossless lane may
    /// take a packet now (a stream on the fast path waits for its lane, it does not move to
    /// the other).
    fn poll_data(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        lossy: bool,
        log_room: bool,
        (lossy_lane, lossless_lane): (bool, bool),
    ) -> Option<Bytes> {
        let credit = self.send_max.saturating_sub(self.send_total);
        if credit == 0 {
            return None;
        }
        let max_payload = ctx.config.max_packet_size - DATA_HEADER_LEN;
        let mut lossy_checked: Option<bool> = None;
        let mut skipped = 0;
        while skipped < self.sched.len() {
            let id = *self.sched.front()?;
            let Some(s) = self.streams.get(&id) else {
                self.sched.pop_front();
                continue;
            };
            let fast = lossy && s.state == OpenState::Open;
            let can = if fast {
                lossy_lane && *lossy_checked.get_or_insert_with(|| self.lossy_may_send(now))
            } else {
                lossless_lane && log_room
            };
            if !can {
                // Keep its turn; another stream may take the other path.
                self.sched.rotate_left(1);
                skipped += 1;
                continue;
            }
            self.sched.pop_front();
            let s = self.streams.get_mut(&id).expect("present");
            s.scheduled = false;
            let n = s.send.unsent_len().min(max_payload).min(credit as usize);
            if n == 0 {
                continue;
            }
            let offset = s.send.sent;
            let mut buf = BytesMut::with_capacity(DATA_HEADER_LEN + n);
            if fast {
                frame::encode_lossy_data_header(&mut buf, self.lossy_tx.peek_number(), id, offset);
            } else {
                frame::encode_data_header(&mut buf, id, offset, s.recv.received);
            }
            let n = s.send.take_into(n, &mut buf);
            if fast {
                s.send.lossy_unacked += n as u64;
            }
            self.send_total += n as u64;
            if s.send.unsent_len() > 0 {
                s.scheduled = true;
                // A stream keeps the turn for TURN_BYTES: the receiver then gets runs of
                // one stream's packets, which its runtime writes to the local socket at
                // once, instead of one packet per stream per pass.
                let in_turn = match self.turn {
                    Some((t, sent)) if t == id => sent + n,
                    _ => n,
                };
                if in_turn < TURN_BYTES {
                    self.turn = Some((id, in_turn));
                    self.sched.push_front(id);
                } else {
                    self.turn = None;
                    self.sched.push_back(id);
                }
            } else {
                self.turn = None;
                self.maybe_send_fin(id, ctx);
            }
            let packet = buf.freeze();
            if fast {
                let chunk = Chunk {
                    stream: id,
                    offset,
                    payload: packet.slice(LOSSY_DATA_HEADER_LEN..),
                    order: 0, // numbered by on_sent
                    shadow: false,
                };
                self.lossy_tx.on_sent(now, chunk, false);
                return Some(packet);
            }
            return Some(self.log_frame(packet));
        }
        None
    }
}

/// Whether a packet travels as a Tox lossy packet (its first byte says).
fn is_lossy(packet: &[u8]) -> bool {
    crate::transport::PacketKind::is_lossy(packet)
}

/// Counts what a DATA or LDATA frame did against the session credit we grant (a peer past
/// it breaks the session), and announces newly readable bytes of an open stream once.
fn count_received_bytes(
    recv_total: &mut u64,
    recv_max: u64,
    s: &mut Stream,
    received: crate::stream::Received,
    events: &mut VecDeque<Event>,
) -> Result<(), SessionCode> {
    *recv_total += received.new_bytes;
    if *recv_total > recv_max {
        return Err(SessionCode::FlowControl);
    }
    if received.readable && !s.recv.readable_signaled && s.state == OpenState::Open {
        s.recv.readable_signaled = true;
        events.push_back(Event::StreamReadable { stream: s.id });
    }
    Ok(())
}
