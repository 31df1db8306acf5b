//! One session with one peer: the handshake, its streams, flow control, keepalive and the
//! frames waiting to be sent. The [`crate::Endpoint`] routes inputs here by peer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codes::{SessionCode, StreamCode};
use crate::collections::{Hasher, Map};
use crate::config::EndpointConfig;
use crate::event::{Event, SessionStats};
use crate::frame::Frame;
use crate::ids::{PeerId, SessionId, StreamId};
use crate::policy::Admission;
use crate::recovery::{LossyReceiver, LossySender};
use crate::stream::{OpenState, Stream};

mod commands;
mod credit;
mod fast_path;
mod flows;
mod frame_log;
mod handshake;
mod links;
mod receive;
mod reverse;
mod scheduler;
mod streams;
mod timers;

use credit::count_received_bytes;
pub use flows::MAX_QUEUED_BYTES;
pub(crate) use links::HelloAckOutcome;
pub use reverse::MAX_LISTENERS_PER_PEER;
use reverse::{ClientListener, ServerListener};

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
/// The fewest bytes a stream may keep written but not yet sent (see
/// `Session::unsent_limit`): the first stream window, so a short path is never starved.
const MIN_UNSENT: usize = 256 * 1024;
/// Packets sparse streams may send in a row ahead of a waiting backlog: however many small
/// writers there are, a bulk stream gets one packet in this many.
const SPARSE_RUN: usize = 16;

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

/// What the endpoint does with a session after an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// It stays (established, suspended, or a client waiting to try again).
    Keep,
    /// It ended for good: the endpoint forgets it.
    Remove,
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
    peer: PeerId,
    role: Role,
    state: State,
    id: SessionId,
    /// The transport says the friend link is up.
    link_up: bool,
    /// The transport's lossless queue for this peer is full (`SendBlocked` after a lossless
    /// packet): no lossless packet goes until `SendReady`; lossy ones still do.
    lossless_blocked: bool,
    /// The transport's lossy queue for this peer is full, likewise.
    lossy_blocked: bool,
    /// Whether the last packet emitted to this peer was lossy: the lane `SendBlocked`
    /// blocks.
    last_lossy: bool,
    /// The session is in the endpoint's queue of sessions that may have output.
    in_ready: bool,
    /// Consecutive failed attempts, for the reconnect backoff.
    failures: u32,

    streams: Map<StreamId, Stream>,
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
    /// Packets sparse streams sent in a row while others waited (see `schedule`).
    sparse_run: usize,
    /// Local streams waiting for OPEN_OK, by deadline (deadlines grow, so the front is next).
    open_deadlines: VecDeque<(Instant, StreamId)>,
    recently_closed: VecDeque<(StreamId, Gone)>,

    /// Credit the peer grants each new stream of ours.
    peer_stream_window: u64,
    /// The peer's session credit: we may send stream bytes up to this cumulative total.
    send_max: u64,
    /// Stream bytes we sent in this session.
    send_total: u64,
    /// The session credit we granted.
    recv_max: u64,
    /// Stream bytes we received in this session (new bytes only).
    recv_total: u64,
    /// Stream bytes read by the application or discarded.
    recv_consumed: u64,

    last_recv: Instant,
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
    resume_by: Option<Instant>,
    /// A suspended server asked the client to resume (once per outage).
    resume_asked: bool,
    /// Counters for the stats: ACK frames sent, frames resent.
    acks_sent: u64,
    frames_resent: u64,

    /// Both sides speak the fast path (negotiated in the handshake).
    lossy_negotiated: bool,
    /// Both sides speak credit on the lossy lane (LWINDOW, LSESSION_WINDOW).
    lossy_credit: bool,
    /// Both sides take several frames in one lossless packet (BATCH).
    batching: bool,
    /// A packet taken while filling a batch that did not fit in it: it goes next.
    deferred: Option<Bytes>,
    /// Streams whose credit grant goes on the lossy lane too (LWINDOW), at most once each.
    twin_updates: VecDeque<StreamId>,
    /// The session's credit grant goes on the lossy lane too (LSESSION_WINDOW).
    session_twin_due: bool,
    /// The transport says the friend link is direct UDP (else it goes through a TCP relay).
    path_direct: bool,
    /// The fast path's sending side: packets in flight, losses, window, pacer.
    lossy_tx: LossySender,
    /// The fast path's receiving side: packet numbers seen, acknowledgements due.
    lossy_rx: LossyReceiver,
    /// The pacer holds the next LDATA until then.
    pace_until: Option<Instant>,
    /// A PING sent because the fast path's probes went unanswered has had no PONG yet.
    liveness_ping_out: bool,
    /// The fast path (re)started: the stream bytes waiting in the frame log for their
    /// acknowledgement get copies on it (see [`Session::shadow_logged_data`]).
    shadow_due: bool,

    /// Both sides do reverse forwarding (negotiated in the handshake).
    reverse_negotiated: bool,
    /// Client: the listeners it wants the server to keep, across sessions.
    client_listeners: Vec<ClientListener>,
    /// Server: the listeners the client asked for in this session.
    server_listeners: Vec<ServerListener>,

    /// Both sides forward UDP (negotiated in the handshake).
    datagram_negotiated: bool,
    /// UDP flows and their datagram queue.
    flows: flows::Flows,
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
            sparse_run: 0,
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
            reverse_negotiated: false,
            client_listeners: Vec::new(),
            server_listeners: Vec::new(),
            datagram_negotiated: false,
            flows: flows::Flows::default(),
        }
    }

    /// The peer.
    pub(crate) fn peer(&self) -> PeerId {
        self.peer
    }

    /// Whether we are the client of this session (we sent HELLO).
    pub(crate) fn is_initiator(&self) -> bool {
        self.role == Role::Initiator
    }

    /// Whether we are the server of this session.
    /// Which side of the handshake we took.
    pub(crate) fn role(&self) -> Role {
        self.role
    }

    /// The rule that admitted the peer, if we accepted its HELLO.
    pub(crate) fn admission(&self) -> Option<Admission> {
        match self.role {
            Role::Responder(a) => Some(a),
            Role::Initiator => None,
        }
    }

    pub(crate) fn is_responder(&self) -> bool {
        matches!(self.role, Role::Responder(_))
    }

    /// Whether a CLOSE would mean anything to the peer: a handshake or session is under
    /// way, or suspended.
    pub(crate) fn is_live(&self) -> bool {
        !matches!(self.state, State::Idle { .. }) || self.is_suspended()
    }

    /// Whether both sides take BATCH packets.
    pub(crate) fn batching(&self) -> bool {
        self.batching
    }

    /// Puts the session in the endpoint's queue of sessions that may have output: whether
    /// it was not there yet.
    pub(crate) fn enqueue(&mut self) -> bool {
        !std::mem::replace(&mut self.in_ready, true)
    }

    /// The session had nothing more to send: it left the endpoint's queue.
    pub(crate) fn dequeued(&mut self) {
        self.in_ready = false;
    }

    /// The endpoint sent the peer a stray packet (CLOSE, HELLO_REJECT): a lossless one,
    /// which a `SendBlocked` now refers to.
    pub(crate) fn on_stray_sent(&mut self) {
        self.last_lossy = false;
    }

    /// The session's counters.
    pub(crate) fn stats(&self) -> SessionStats {
        let (tx, rx) = (self.lossy_tx.counters(), self.lossy_rx.counters());
        let rtt = self.lossy_tx.rtt();
        let (flows, [sent, received, dropped, discarded]) = self.flow_counters();
        SessionStats {
            established: self.is_established(),
            streams: self.streams.len(),
            recv_buffered: self.recv_total - self.recv_consumed,
            sent: self.send_total,
            received: self.recv_total,
            suspended: self.is_suspended(),
            retransmit_buffered: self.log_bytes(),
            acks_sent: self.acks_sent,
            frames_resent: self.frames_resent,
            fast_path: self.lossy_active(),
            fast_path_negotiated: self.lossy_negotiated,
            lossy_packets_sent: tx.packets_sent,
            lossy_packets_lost: tx.packets_lost,
            lossy_probe_timeouts: tx.probe_timeouts,
            lossy_shadows: tx.shadows,
            lossy_spurious_losses: tx.spurious_losses,
            lossy_bytes_resent: tx.bytes_resent,
            lossy_packets_received: rx.packets_received,
            lossy_duplicates: rx.duplicates,
            rtt: rtt.smoothed(),
            congestion_window: self.lossy_tx.window(),
            bytes_in_flight: self.lossy_tx.bytes_in_flight(),
            pacing_rate: rtt.smoothed().map(|_| self.lossy_tx.pacing_rate()),
            min_rtt: rtt.smoothed().map(|_| rtt.min()),
            flows,
            datagrams_sent: sent,
            datagrams_received: received,
            datagrams_dropped: dropped,
            datagrams_discarded: discarded,
        }
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
        self.forget_listeners();
        self.end_flows(keep_unsent, ctx);
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
}
