//! One session with one peer: the handshake, its streams, flow control, keepalive and the
//! frames waiting to be sent. The [`crate::Endpoint`] routes inputs here by peer.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::codes::{SessionCode, StreamCode};
use crate::collections::{Hasher, Map};
use crate::config::{EndpointConfig, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::endpoint::Event;
use crate::frame::{self, Frame, Hello, DATA_HEADER_LEN};
use crate::ids::{PeerId, SessionId, StreamId};
use crate::policy::Admission;
use crate::stream::{OpenState, Origin, Stream};

/// How many recently closed stream IDs a session remembers, so that frames still in flight
/// for them are dropped quietly instead of answered with RST.
const RECENTLY_CLOSED: usize = 128;
/// The most advisory frames (PONG, RST for unknown streams) queued at once; past it they are
/// dropped, so a peer flooding us while our send queue is full cannot grow our memory.
const MAX_ADVISORY_QUEUED: usize = 256;

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
    /// The transport's send queue for this peer is full.
    pub send_blocked: bool,
    /// The session is in the endpoint's queue of sessions that may have output.
    pub in_ready: bool,
    /// Consecutive failed attempts, for the reconnect backoff.
    pub failures: u32,

    pub streams: Map<StreamId, Stream>,
    /// Control frames, sent before anything else, in order.
    control: VecDeque<Frame>,
    advisory_queued: usize,
    /// Streams with a WINDOW frame to send.
    window_updates: VecDeque<StreamId>,
    session_window_queued: bool,
    /// Round-robin queue of streams with bytes to send.
    sched: VecDeque<StreamId>,
    /// Local streams waiting for OPEN_OK, by deadline (deadlines grow, so the front is next).
    open_deadlines: VecDeque<(Instant, StreamId)>,
    recently_closed: VecDeque<StreamId>,

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
            send_blocked: false,
            in_ready: false,
            failures: 0,
            streams: Map::with_hasher(hasher),
            control: VecDeque::new(),
            advisory_queued: 0,
            window_updates: VecDeque::new(),
            session_window_queued: false,
            sched: VecDeque::new(),
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
        }
    }

    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Whether the session might produce a packet now.
    pub fn can_send(&self) -> bool {
        self.link_up && !self.send_blocked
    }

    // ----- handshake -------------------------------------------------------------------

    /// Starts a handshake: queues HELLO and arms its timeout.
    pub fn send_hello(&mut self, now: Instant, id: SessionId, config: &EndpointConfig) {
        self.id = id;
        self.reset_flow(config);
        let proof = config
            .client_secret
            .as_ref()
            .map(|s| s.hello_proof(&config.local_id, &self.peer));
        self.control.push_back(Frame::Hello(Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            capabilities: 0,
            session: id,
            stream_window: config.stream_window,
            session_window: config.session_window,
            proof,
        }));
        self.state = State::HelloSent {
            deadline: now + config.handshake_timeout,
        };
    }

    fn reset_flow(&mut self, config: &EndpointConfig) {
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
    }

    /// The handshake completed (either way): take the peer's grants and let streams move.
    pub fn establish(
        &mut self,
        now: Instant,
        peer_stream_window: u32,
        peer_session_window: u64,
        ctx: &mut Ctx<'_>,
    ) {
        self.state = State::Established;
        self.failures = 0;
        self.last_recv = now;
        self.last_ping = None;
        self.peer_stream_window = u64::from(peer_stream_window);
        self.send_max = peer_session_window;
        ctx.events
            .push_back(Event::SessionEstablished { peer: self.peer });
        // Streams opened during the handshake go out now, in the order they were opened
        // (their deadlines are in opening order).
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
        for (id, _) in self.streams.drain() {
            ctx.index.remove(&id);
            ctx.events.push_back(Event::StreamReset {
                stream: id,
                code: StreamCode::SessionClosed,
                remote: false,
            });
        }
        self.open_deadlines.clear();
        self.recently_closed.clear();
        self.reset_flow(ctx.config);
        ctx.events.push_back(Event::SessionClosed {
            peer: self.peer,
            code,
            remote,
        });
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

    /// Removes a stream: unread bytes count as consumed (returning their credit), and the
    /// ID is remembered so late frames for it are dropped quietly.
    pub fn remove_stream(&mut self, id: StreamId, ctx: &mut Ctx<'_>) -> Option<Stream> {
        let s = self.streams.remove(&id)?;
        ctx.index.remove(&id);
        self.consume(s.recv.buffered as u64, ctx.config);
        self.remember_closed(id);
        Some(s)
    }

    fn remember_closed(&mut self, id: StreamId) {
        if self.recently_closed.len() == RECENTLY_CLOSED {
            self.recently_closed.pop_front();
        }
        self.recently_closed.push_back(id);
    }

    fn was_closed(&self, id: &StreamId) -> bool {
        self.recently_closed.contains(id)
    }

    /// Counts bytes as consumed for session credit and queues SESSION_WINDOW when half of
    /// the window is free again.
    pub fn consume(&mut self, n: u64, config: &EndpointConfig) {
        self.recv_consumed += n;
        let w = config.session_window;
        if !self.session_window_queued && self.recv_consumed + w - self.recv_max >= w / 2 {
            self.session_window_queued = true;
        }
    }

    /// After the application read from a stream: maybe queue its WINDOW update.
    pub fn after_read(&mut self, id: StreamId, n: u64, config: &EndpointConfig) {
        self.consume(n, config);
        if let Some(s) = self.streams.get_mut(&id) {
            if !s.recv.window_update_queued
                && s.recv.wants_window_update(u64::from(config.stream_window))
            {
                s.recv.window_update_queued = true;
                self.window_updates.push_back(id);
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
        if self.streams.get(&id).is_some_and(Stream::is_finished) {
            self.remove_stream(id, ctx);
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
        let Some(s) = self.remove_stream(id, ctx) else {
            return;
        };
        if !matches!(s.state, OpenState::Opening { open_sent: false }) {
            self.control.push_back(Frame::Rst {
                stream: id,
                code,
                offset: s.send.sent,
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

    pub fn queue_control(&mut self, frame: Frame) {
        self.control.push_back(frame);
    }

    fn queue_advisory(&mut self, frame: Frame) {
        if self.advisory_queued < MAX_ADVISORY_QUEUED {
            self.advisory_queued += 1;
            self.control.push_back(frame);
        }
    }

    // ----- incoming frames (established) -------------------------------------------------

    /// Handles a stream or keepalive frame on an established session. Returns a session
    /// code if the frame breaks the session as a whole.
    pub fn on_frame(&mut self, frame: Frame, ctx: &mut Ctx<'_>) -> Result<(), SessionCode> {
        match frame {
            Frame::Ping { token } => self.queue_advisory(Frame::Pong { token }),
            Frame::Pong { .. } => {}
            Frame::SessionWindow { max } => {
                if max > self.send_max {
                    self.send_max = max;
                }
            }
            Frame::Open { stream, target } => self.on_open(stream, target, ctx),
            Frame::OpenOk { stream } => match self.streams.get_mut(&stream) {
                Some(s) if s.state == (OpenState::Opening { open_sent: true }) => {
                    s.state = OpenState::Open;
                    ctx.events.push_back(Event::StreamOpened { stream });
                }
                Some(_) => self.reset_stream(stream, StreamCode::StreamState, true, ctx),
                None => self.unknown_stream(stream),
            },
            Frame::OpenErr { stream, code } => match self.streams.get(&stream) {
                Some(s) if s.state == (OpenState::Opening { open_sent: true }) => {
                    self.remove_stream(stream, ctx);
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
                    s.recv.on_fin(offset).and_then(|()| s.send.on_ack(ack))
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
            Frame::Rst { stream, code, .. } => {
                if self.remove_stream(stream, ctx).is_some() {
                    ctx.events.push_back(Event::StreamReset {
                        stream,
                        code,
                        remote: true,
                    });
                }
            }
            Frame::Window {
                stream,
                max_offset,
                ack,
            } => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    self.unknown_stream(stream);
                    return Ok(());
                };
                if let Err(code) = s.send.on_ack(ack) {
                    self.reset_stream(stream, code, true, ctx);
                } else if s.send.on_window(max_offset) && s.send.want_writable {
                    s.send.want_writable = false;
                    ctx.events.push_back(Event::StreamWritable { stream });
                }
            }
            Frame::Hello(_)
            | Frame::HelloAck(_)
            | Frame::HelloReject { .. }
            | Frame::Close { .. } => {
                // The endpoint handles handshake frames before routing here.
            }
        }
        Ok(())
    }

    /// A frame for a stream we do not have: RST, unless we closed it recently (then the
    /// frame was simply in flight) — never a new connection.
    fn unknown_stream(&mut self, stream: StreamId) {
        if !self.was_closed(&stream) {
            self.remember_closed(stream);
            self.queue_advisory(Frame::Rst {
                stream,
                code: StreamCode::UnknownStream,
                offset: 0,
            });
        }
    }

    fn on_open(&mut self, stream: StreamId, target: crate::Target, ctx: &mut Ctx<'_>) {
        let refuse = |this: &mut Self, code: StreamCode| {
            this.remember_closed(stream);
            this.control.push_back(Frame::OpenErr { stream, code });
        };
        let Role::Responder(admission) = self.role else {
            return refuse(self, StreamCode::NotAccepting);
        };
        if self.streams.contains_key(&stream) || self.was_closed(&stream) {
            // Do not disturb the live stream; refuse the duplicate without remembering it.
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
            // Bytes for a stream we do not have still used the peer's session credit:
            // count them as received and at once consumed, so both sides agree.
            let n = payload.len() as u64;
            self.recv_total += n;
            if self.recv_total > self.recv_max {
                return Err(SessionCode::FlowControl);
            }
            self.consume(n, ctx.config);
            self.unknown_stream(stream);
            return Ok(());
        };
        if matches!(s.state, OpenState::Opening { .. }) {
            // The peer must send OPEN_OK before DATA.
            self.reset_stream(stream, StreamCode::StreamState, true, ctx);
            return Ok(());
        }
        let received = match s.recv.on_data(offset, payload).and_then(|r| {
            s.send.on_ack(ack)?;
            Ok(r)
        }) {
            Ok(r) => r,
            Err(code) => {
                self.reset_stream(stream, code, true, ctx);
                return Ok(());
            }
        };
        self.recv_total += received.new_bytes;
        if self.recv_total > self.recv_max {
            return Err(SessionCode::FlowControl);
        }
        if received.new_bytes > 0 && !s.recv.readable_signaled && s.state == OpenState::Open {
            s.recv.readable_signaled = true;
            ctx.events.push_back(Event::StreamReadable { stream });
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
            }
        }
        next
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
            self.open_deadlines.pop_front();
            if let Some(s) = self.streams.get(&id) {
                if matches!(s.state, OpenState::Opening { .. }) {
                    self.reset_stream(id, StreamCode::OpenTimeout, false, ctx);
                    ctx.events.push_back(Event::StreamRefused {
                        stream: id,
                        code: StreamCode::OpenTimeout,
                    });
                }
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

    /// The next packet to send to this peer, if any: control frames first, then credit
    /// updates, then stream data round-robin across streams.
    pub fn poll_transmit(&mut self, ctx: &mut Ctx<'_>) -> Option<Bytes> {
        if !self.can_send() {
            return None;
        }
        if let Some(f) = self.control.pop_front() {
            if matches!(f, Frame::Pong { .. } | Frame::Rst { .. }) {
                self.advisory_queued = self.advisory_queued.saturating_sub(1);
            }
            return Some(f.to_bytes());
        }
        if !self.is_established() {
            return None;
        }
        while let Some(id) = self.window_updates.pop_front() {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.recv.window_update_queued = false;
            s.recv.max_offset = s.recv.read + u64::from(ctx.config.stream_window);
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
            self.recv_max = self.recv_consumed + ctx.config.session_window;
            return Some(Frame::SessionWindow { max: self.recv_max }.to_bytes());
        }
        self.poll_data(ctx)
    }

    fn poll_data(&mut self, ctx: &mut Ctx<'_>) -> Option<Bytes> {
        let credit = self.send_max.saturating_sub(self.send_total);
        if credit == 0 {
            return None;
        }
        let max_payload = ctx.config.max_packet_size - DATA_HEADER_LEN;
        while let Some(id) = self.sched.pop_front() {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.scheduled = false;
            let n = s.send.unsent_len().min(max_payload).min(credit as usize);
            if n == 0 {
                continue;
            }
            let mut buf = BytesMut::with_capacity(DATA_HEADER_LEN + n);
            frame::encode_data_header(&mut buf, id, s.send.sent, s.recv.received);
            let n = s.send.take_into(n, &mut buf);
            self.send_total += n as u64;
            if s.send.unsent_len() > 0 {
                s.scheduled = true;
                self.sched.push_back(id);
            } else {
                self.maybe_send_fin(id, ctx);
            }
            return Some(buf.freeze());
        }
        None
    }
}
