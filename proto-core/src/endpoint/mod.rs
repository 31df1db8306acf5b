//! The endpoint: one per Tox identity. It routes transport inputs to per-peer sessions by
//! peer, and the application's commands by stream ID; it admits or refuses sessions under
//! the server policy, names sessions and streams, and hands out outputs (packets, events,
//! its next deadline). What happens within a session is the session's (`session/`).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::codes::{SessionCode, StreamCode};
use crate::collections::{hasher, Map, Set};
use crate::config::{ConfigError, EndpointConfig, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::event::{Event, Input, OpenError, Output, ReadError, StreamError, WriteError};
use crate::frame::{self, DecodeError, Frame, Hello, HelloAck};
use crate::ids::{PeerId, SessionId, StreamId};
use crate::session::{Ctx, Disposition, HelloAckOutcome, Role, Session};
use crate::stream::{OpenState, Origin, Stream};
use crate::target::Target;

mod flows;
mod introspect;
mod reload;
mod reverse;
pub use reload::Reconfigured;

/// The most stray packets (answers to peers we hold no session with) queued at once.
const MAX_STRAY: usize = 256;

/// The toxtun protocol state machine for one Tox identity. No I/O: see the crate docs for
/// the drain rule.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    rng: ChaCha8Rng,
    sessions: Map<PeerId, Session>,
    /// Which session owns each stream, so commands need only the stream ID.
    index: Map<StreamId, PeerId>,
    online: Set<PeerId>,
    /// Peers whose link the transport reports as direct UDP.
    direct: Set<PeerId>,
    events: VecDeque<Event>,
    /// Sessions that may have packets to send, served round-robin.
    ready: VecDeque<PeerId>,
    /// Packets for peers without a session (HELLO_REJECT, CLOSE).
    stray: VecDeque<(PeerId, Bytes)>,
    /// The number given to the last listener asked for (reverse forwarding).
    next_listener: u32,
    /// The number given to the last UDP flow opened.
    next_flow: u32,
}

impl Endpoint {
    /// Creates an endpoint. `seed` feeds every random choice it makes (stream and session
    /// IDs), so a test that fixes the seed replays exactly.
    pub fn new(config: EndpointConfig, seed: [u8; 32]) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::from_seed(seed);
        Ok(Endpoint {
            config,
            sessions: Map::with_hasher(hasher(&mut rng)),
            index: Map::with_hasher(hasher(&mut rng)),
            online: Set::with_hasher(hasher(&mut rng)),
            direct: Set::with_hasher(hasher(&mut rng)),
            rng,
            events: VecDeque::new(),
            ready: VecDeque::new(),
            stray: VecDeque::new(),
            next_listener: 0,
            next_flow: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// This endpoint's Tox public key.
    pub fn local_id(&self) -> PeerId {
        self.config.local_id
    }

    fn ctx(&mut self) -> (&mut Map<PeerId, Session>, Ctx<'_>) {
        (
            &mut self.sessions,
            Ctx {
                config: &self.config,
                events: &mut self.events,
                index: &mut self.index,
            },
        )
    }

    fn mark_ready(&mut self, peer: PeerId) {
        if let Some(s) = self.sessions.get_mut(&peer) {
            if s.enqueue() {
                self.ready.push_back(peer);
            }
        }
    }

    /// Applies what a session event decided.
    fn dispose(&mut self, peer: PeerId, d: Disposition) {
        if d == Disposition::Remove {
            self.sessions.remove(&peer);
        }
    }

    fn send_stray(&mut self, peer: PeerId, frame: Frame) {
        if self.stray.len() < MAX_STRAY {
            self.stray.push_back((peer, frame.to_bytes()));
        }
    }

    fn new_session_id(&mut self) -> SessionId {
        new_session_id(&mut self.rng)
    }

    fn new_stream_id(&mut self) -> StreamId {
        loop {
            let mut b = [0u8; 16];
            self.rng.fill_bytes(&mut b);
            let id = StreamId(uuid::Builder::from_random_bytes(b).into_uuid());
            if !self.index.contains_key(&id) {
                return id;
            }
        }
    }

    // ----- transport inputs --------------------------------------------------------------

    /// Feeds one transport event. Peers' misbehaviour never returns an error: it becomes
    /// RST, CLOSE or HELLO_REJECT frames and events, and other peers are unaffected.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::PeerOnline(peer) => {
                self.online.insert(peer);
                self.events.push_back(Event::PeerOnline { peer });
                let rng = &mut self.rng;
                if let Some(s) = self.sessions.get_mut(&peer) {
                    if s.on_link_up(now, || new_session_id(rng), &self.config) {
                        self.ask_for_resume(peer);
                    }
                    self.mark_ready(peer);
                }
            }
            Input::PeerOffline(peer) => {
                self.online.remove(&peer);
                self.direct.remove(&peer);
                if let Some(s) = self.sessions.get_mut(&peer) {
                    s.set_path(false);
                }
                self.events.push_back(Event::PeerOffline { peer });
                let (sessions, mut ctx) = self.ctx();
                if let Some(s) = sessions.get_mut(&peer) {
                    let d = s.on_link_lost(now, &mut ctx);
                    self.dispose(peer, d);
                }
            }
            Input::FriendRequest { peer, message } => {
                let decision = match &self.config.server {
                    Some(policy) => policy
                        .admit_friend_request(&peer, &self.config.local_id, &message)
                        .map(|_| ()),
                    None => Err(SessionCode::Unauthorized),
                };
                self.events
                    .push_back(Event::FriendRequest { peer, decision });
            }
            Input::Packet { peer, packet } => self.on_packet(now, peer, packet),
            Input::SendBlocked(peer) => {
                if let Some(s) = self.sessions.get_mut(&peer) {
                    s.block_last_lane();
                }
            }
            Input::SendReady(peer) => {
                if let Some(s) = self.sessions.get_mut(&peer) {
                    s.unblock();
                }
                self.mark_ready(peer);
            }
            Input::PathChanged { peer, direct } => {
                if direct {
                    self.direct.insert(peer);
                } else {
                    self.direct.remove(&peer);
                }
                if let Some(s) = self.sessions.get_mut(&peer) {
                    s.set_path(direct);
                }
                self.mark_ready(peer);
            }
        }
    }

    fn on_packet(&mut self, now: Instant, peer: PeerId, packet: Bytes) {
        if packet.first() == Some(&frame::kind::BATCH) {
            return self.on_batch(now, peer, &packet);
        }
        let frame = match Frame::decode(&packet) {
            Ok(f) => f,
            Err(DecodeError::InvalidTarget { stream, .. }) => {
                // The OPEN is readable enough to refuse by ID; the session carries on.
                return self.on_stream_frame(
                    now,
                    peer,
                    Frame::OpenErr {
                        stream,
                        code: StreamCode::InvalidTarget,
                    },
                    true,
                );
            }
            Err(_) => {
                return self.protocol_violation(now, peer, SessionCode::ProtocolViolation);
            }
        };
        if let Some(s) = self.sessions.get_mut(&peer) {
            s.on_packet_heard();
        }
        match frame {
            Frame::Hello(h) => self.on_hello(now, peer, h, false),
            Frame::Resume(h) => self.on_hello(now, peer, h, true),
            Frame::HelloAck(a) => self.on_hello_ack(now, peer, a),
            Frame::HelloReject {
                code: SessionCode::SessionUnknown,
                ..
            } => self.resume_refused(now, peer),
            Frame::HelloReject { code, .. } => {
                let (sessions, mut ctx) = self.ctx();
                if let Some(s) = sessions.get_mut(&peer) {
                    let d = s.on_hello_reject(now, code, &mut ctx);
                    self.dispose(peer, d);
                }
            }
            Frame::Close {
                code: SessionCode::ResumeRequired,
            } => {
                let (sessions, mut ctx) = self.ctx();
                if let Some(s) = sessions.get_mut(&peer) {
                    if s.on_resume_required(now, &mut ctx) {
                        self.mark_ready(peer);
                    }
                }
            }
            Frame::Close { code } => {
                let (sessions, mut ctx) = self.ctx();
                if let Some(s) = sessions.get_mut(&peer) {
                    let d = s.on_close(now, code, &mut ctx);
                    self.dispose(peer, d);
                }
            }
            other => self.on_stream_frame(now, peer, other, false),
        }
    }

    /// A frame that needs an established session.
    fn on_stream_frame(&mut self, now: Instant, peer: PeerId, frame: Frame, reply: bool) {
        let (sessions, mut ctx) = self.ctx();
        let Some(s) = sessions.get_mut(&peer).filter(|s| s.is_established()) else {
            return self.without_session(peer);
        };
        if let Err(code) = s.on_stream_frame(now, frame, reply, &mut ctx) {
            return self.protocol_violation(now, peer, code);
        }
        self.mark_ready(peer);
    }

    /// A stream frame (or a BATCH of them) for a peer with no established session. An
    /// initiator between sessions drops stale frames (a resume resends what counts). A
    /// suspended server asks for a resume: the client did not see the link drop. Anyone
    /// else is told that the handshake must come first.
    fn without_session(&mut self, peer: PeerId) {
        let (idle_initiator, suspended) = match self.sessions.get(&peer) {
            Some(s) => (s.is_initiator(), s.is_suspended()),
            None => (false, false),
        };
        if suspended && !idle_initiator {
            self.ask_for_resume(peer);
        } else if !idle_initiator {
            self.send_stray(
                peer,
                Frame::Close {
                    code: SessionCode::HandshakeRequired,
                },
            );
        }
    }

    /// BATCH: the frames it carries, each handled as if it had come alone, in order, for
    /// as long as the session stands. A malformed one breaks the session, as any malformed
    /// frame does, and so does one on a session that did not negotiate BATCH. One that
    /// arrives with no session established is a stale one, as any stream frame then is:
    /// sent before an outage that the transport did not report (the idle timeout
    /// suspended the session, and c-toxcore delivered its packets when the path
    /// returned), it holds no handshake frame, and goes the way of its frames.
    fn on_batch(&mut self, now: Instant, peer: PeerId, packet: &Bytes) {
        let Ok(inner) = frame::split_batch(packet) else {
            return self.protocol_violation(now, peer, SessionCode::ProtocolViolation);
        };
        match self.sessions.get(&peer) {
            Some(s) if s.is_established() && !s.batching() => {
                return self.protocol_violation(now, peer, SessionCode::ProtocolViolation)
            }
            Some(s) if s.is_established() => {}
            _ => return self.without_session(peer),
        }
        for p in inner {
            if !self
                .sessions
                .get(&peer)
                .is_some_and(|s| s.is_established() && s.batching())
            {
                return; // an earlier frame ended or restarted the session
            }
            self.on_packet(now, peer, p);
        }
    }

    /// A suspended server asks its client to resume (CLOSE 1013), once per outage.
    fn ask_for_resume(&mut self, peer: PeerId) {
        if self
            .sessions
            .get_mut(&peer)
            .is_some_and(Session::ask_resume_once)
        {
            self.send_stray(
                peer,
                Frame::Close {
                    code: SessionCode::ResumeRequired,
                },
            );
        }
    }

    /// The peer broke the protocol: CLOSE with the code, end the session. Other peers
    /// carry on.
    fn protocol_violation(&mut self, now: Instant, peer: PeerId, code: SessionCode) {
        let (sessions, mut ctx) = self.ctx();
        let Some(s) = sessions.get_mut(&peer) else {
            return;
        };
        let Some(d) = s.on_protocol_violation(now, code, &mut ctx) else {
            return;
        };
        self.dispose(peer, d);
        self.send_stray(peer, Frame::Close { code });
    }

    /// HELLO starts a session; RESUME (`resume`) continues one after a link outage. The
    /// server policy admits the peer here; the session does the rest.
    fn on_hello(&mut self, now: Instant, peer: PeerId, h: Hello, resume: bool) {
        let admitted = self.admit(peer, &h);
        let (version, admission) = match admitted {
            Ok(a) => a,
            Err(code) => return self.reject(peer, code),
        };
        let stream_hasher = hasher(&mut self.rng);
        let direct = self.direct.contains(&peer);
        let (sessions, mut ctx) = self.ctx();
        if resume {
            let resumed = sessions
                .get_mut(&peer)
                .is_some_and(|s| s.accept_resume(now, &h, version, admission, &mut ctx));
            if !resumed {
                // Not a session we know (we restarted, or it outlived its grace here).
                return self.reject(peer, SessionCode::SessionUnknown);
            }
            return self.mark_ready(peer);
        }
        let session = sessions.entry(peer).or_insert_with(|| {
            Session::new(
                peer,
                Role::Responder(admission),
                h.session,
                now,
                ctx.config,
                stream_hasher,
            )
        });
        session.accept_hello(now, &h, version, admission, direct, &mut ctx);
        self.mark_ready(peer);
    }

    /// Whether the server policy admits `peer`'s HELLO: the version both speak and what
    /// the peer may reach, or the code to refuse it with.
    fn admit(
        &self,
        peer: PeerId,
        h: &Hello,
    ) -> Result<(u16, crate::policy::Admission), SessionCode> {
        let policy = self
            .config
            .server
            .as_ref()
            .ok_or(SessionCode::Unauthorized)?;
        let version = Session::negotiate_version(h).ok_or(SessionCode::VersionMismatch)?;
        let admission = policy.admit(&peer, &self.config.local_id, h.proof.as_ref())?;
        let responders = self
            .sessions
            .values()
            .filter(|s| s.is_responder() && s.peer() != peer)
            .count();
        if responders >= policy.limits.max_peers {
            return Err(SessionCode::TooManyPeers);
        }
        Ok((version, admission))
    }

    /// Refuses a HELLO or RESUME (HELLO_REJECT with the versions we speak).
    fn reject(&mut self, peer: PeerId, code: SessionCode) {
        self.send_stray(
            peer,
            Frame::HelloReject {
                code,
                min_version: MIN_PROTOCOL_VERSION,
                max_version: PROTOCOL_VERSION,
            },
        );
    }

    fn on_hello_ack(&mut self, now: Instant, peer: PeerId, a: HelloAck) {
        let (sessions, mut ctx) = self.ctx();
        let Some(s) = sessions.get_mut(&peer) else {
            return;
        };
        match s.on_hello_ack(now, &a, &mut ctx) {
            HelloAckOutcome::Ignored => {}
            HelloAckOutcome::Accepted => self.mark_ready(peer),
            HelloAckOutcome::ResumeRefused => self.resume_refused(now, peer),
            HelloAckOutcome::VersionMismatch => {
                self.sessions.remove(&peer);
                self.send_stray(
                    peer,
                    Frame::Close {
                        code: SessionCode::VersionMismatch,
                    },
                );
            }
        }
    }

    /// The server does not know the session we tried to resume: a new one starts now.
    fn resume_refused(&mut self, now: Instant, peer: PeerId) {
        let id = self.new_session_id();
        let (sessions, mut ctx) = self.ctx();
        if sessions
            .get_mut(&peer)
            .is_some_and(|s| s.restart_refused_resume(now, id, &mut ctx))
        {
            self.mark_ready(peer);
        }
    }

    // ----- timers ------------------------------------------------------------------------

    /// Runs the timers that are due: open and handshake timeouts, keepalive PINGs, idle
    /// timeouts, reconnect attempts.
    pub fn handle_timeout(&mut self, now: Instant) {
        let peers: Vec<PeerId> = self.sessions.keys().copied().collect();
        for peer in peers {
            let (sessions, mut ctx) = self.ctx();
            let Some(s) = sessions.get_mut(&peer) else {
                continue;
            };
            if s.on_grace_timer(now, &mut ctx) == Disposition::Remove {
                sessions.remove(&peer);
                continue;
            }
            if s.hello_retry_due(now) {
                let id = new_session_id(&mut self.rng);
                let s = self.sessions.get_mut(&peer).expect("present");
                s.send_hello(now, id, &self.config);
            }
            let (sessions, mut ctx) = self.ctx();
            let s = sessions.get_mut(&peer).expect("present");
            let (d, close) = s.on_timers(now, &mut ctx);
            self.dispose(peer, d);
            if let Some(code) = close {
                self.send_stray(peer, Frame::Close { code });
            }
            self.mark_ready(peer);
        }
    }

    // ----- application commands ----------------------------------------------------------

    /// Starts (or keeps) a client session with a server peer: HELLO goes out as soon as the
    /// link is up, and again after failures, with backoff, until [`Endpoint::disconnect`].
    pub fn connect(&mut self, now: Instant, peer: PeerId) {
        if self.sessions.contains_key(&peer) {
            return;
        }
        let id = self.new_session_id();
        let stream_hasher = hasher(&mut self.rng);
        let mut s = Session::new(peer, Role::Initiator, id, now, &self.config, stream_hasher);
        s.start(
            now,
            self.direct.contains(&peer),
            self.online.contains(&peer),
            &self.config,
        );
        self.sessions.insert(peer, s);
        self.mark_ready(peer);
    }

    /// Ends the session with the peer (CLOSE with `Normal`), resetting its streams, and stops
    /// reconnecting to it.
    pub fn disconnect(&mut self, peer: PeerId) {
        self.close(peer, SessionCode::Normal);
    }

    /// Closes every session (CLOSE with `Shutdown`): for a clean exit.
    pub fn shutdown(&mut self) {
        let peers: Vec<PeerId> = self.sessions.keys().copied().collect();
        for peer in peers {
            self.close(peer, SessionCode::Shutdown);
        }
    }

    /// Ends and forgets the session with `peer`, telling it `code` if it was live.
    fn close(&mut self, peer: PeerId, code: SessionCode) {
        let (sessions, mut ctx) = self.ctx();
        if let Some(mut s) = sessions.remove(&peer) {
            let was_live = s.is_live();
            s.end(code, false, &mut ctx);
            if was_live {
                self.send_stray(peer, Frame::Close { code });
            }
        }
    }

    /// Opens a stream to `target` through the server `peer`, connecting to it if needed.
    ///
    /// The stream may be written as soon as `StreamWritable` arrives (at once if the
    /// session is up): bytes follow OPEN without waiting for OPEN_OK, within the server's
    /// window. It ends with `StreamOpened`, then later `StreamClosed`/`StreamReset`, or
    /// with `StreamRefused`.
    pub fn open(
        &mut self,
        now: Instant,
        peer: PeerId,
        target: Target,
    ) -> Result<StreamId, OpenError> {
        if peer == self.config.local_id {
            return Err(OpenError::SelfPeer);
        }
        self.connect(now, peer);
        Ok(self.open_on(now, peer, target))
    }

    /// Opens a stream of ours to `target` on the session with `peer`, which exists: OPEN
    /// goes out when the session is up.
    fn open_on(&mut self, now: Instant, peer: PeerId, target: Target) -> StreamId {
        let id = self.new_stream_id();
        let stream = Stream::new(
            id,
            target,
            Origin::Local,
            OpenState::Opening { open_sent: false },
            u64::from(self.config.stream_window),
        );
        let s = self.sessions.get_mut(&peer).expect("the caller made sure");
        s.add_local_stream(now, stream, &self.config);
        self.index.insert(id, peer);
        self.mark_ready(peer);
        id
    }

    /// Runs a command on the session that owns `stream`; `None` if no session does. When
    /// the command succeeds (`ready` says so of its result), the session may have packets.
    fn on_stream<T, E>(
        &mut self,
        stream: StreamId,
        command: impl FnOnce(&mut Session, &mut Ctx<'_>) -> Result<T, E>,
        ready: impl FnOnce(&T) -> bool,
    ) -> Option<Result<T, E>> {
        let peer = *self.index.get(&stream)?;
        let (sessions, mut ctx) = self.ctx();
        let s = sessions.get_mut(&peer)?;
        let result = command(s, &mut ctx);
        if result.as_ref().is_ok_and(ready) {
            self.mark_ready(peer);
        }
        Some(result)
    }

    /// Writes as much of `data` as the stream's credit allows and returns how much. A short
    /// count (or `Blocked`) means: wait for `StreamWritable`.
    pub fn write(&mut self, stream: StreamId, data: Bytes) -> Result<usize, WriteError> {
        self.on_stream(stream, |s, _| s.write(stream, data), |_| true)
            .unwrap_or(Err(WriteError::UnknownStream))
    }

    /// Finishes this side's direction: FIN follows the bytes already written. Idempotent.
    pub fn finish(&mut self, stream: StreamId) -> Result<(), StreamError> {
        self.on_stream(stream, |s, ctx| s.finish(stream, ctx), |_| true)
            .unwrap_or(Err(StreamError::UnknownStream))
    }

    /// Aborts the stream both ways with `code` (RST). No event follows for it.
    pub fn reset(&mut self, stream: StreamId, code: StreamCode) -> Result<(), StreamError> {
        let reset = |s: &mut Session, ctx: &mut Ctx<'_>| {
            s.reset_stream(stream, code, false, ctx);
            Ok(())
        };
        self.on_stream(stream, reset, |_| true)
            .unwrap_or(Err(StreamError::UnknownStream))
    }

    /// Accepts an incoming stream (its target is connected): OPEN_OK goes out, and bytes
    /// that arrived with the OPEN become readable.
    pub fn accept(&mut self, stream: StreamId) -> Result<(), StreamError> {
        self.on_stream(stream, |s, ctx| s.accept(stream, ctx), |_| true)
            .unwrap_or(Err(StreamError::UnknownStream))
    }

    /// Refuses an incoming stream with `code` (OPEN_ERR), e.g. `TargetRefused`.
    pub fn refuse(&mut self, stream: StreamId, code: StreamCode) -> Result<(), StreamError> {
        self.on_stream(stream, |s, ctx| s.refuse(stream, code, ctx), |_| true)
            .unwrap_or(Err(StreamError::UnknownStream))
    }

    /// Reads up to `max` bytes. `Ok(None)` is the end of the stream (the peer finished);
    /// `Err(Blocked)` means wait for `StreamReadable`. Reading returns credit to the peer.
    pub fn read(&mut self, stream: StreamId, max: usize) -> Result<Option<Bytes>, ReadError> {
        let read = |s: &mut Session, ctx: &mut Ctx<'_>| s.read(stream, max, ctx);
        self.on_stream(stream, read, Option::is_some)
            .unwrap_or(Err(ReadError::UnknownStream))
    }

    // ----- output ------------------------------------------------------------------------

    /// The next thing to do. **Drain rule:** after every call that changes state
    /// (`handle_input`, `handle_timeout` and the stream commands), call this until it returns
    /// `None` or `Some(Output::Timeout(_))`; then wait for input or that instant.
    pub fn poll_output(&mut self, now: Instant) -> Option<Output> {
        if let Some(e) = self.events.pop_front() {
            return Some(Output::Event(e));
        }
        if let Some((peer, packet)) = self.stray.pop_front() {
            if let Some(s) = self.sessions.get_mut(&peer) {
                s.on_stray_sent();
            }
            return Some(Output::Transmit { peer, packet });
        }
        while let Some(peer) = self.ready.pop_front() {
            let (sessions, mut ctx) = self.ctx();
            let Some(s) = sessions.get_mut(&peer) else {
                continue;
            };
            if let Some(packet) = s.poll_transmit(now, &mut ctx) {
                // Back of the queue: peers take turns, one packet each.
                self.ready.push_back(peer);
                return Some(Output::Transmit { peer, packet });
            }
            s.dequeued();
            if !self.events.is_empty() {
                return self.events.pop_front().map(Output::Event);
            }
        }
        if let Some(e) = self.events.pop_front() {
            return Some(Output::Event(e));
        }
        self.next_deadline().map(Output::Timeout)
    }

    /// The earliest instant any timer is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sessions
            .values()
            .filter_map(|s| s.deadline(&self.config))
            .min()
    }
}

/// A fresh random session ID.
fn new_session_id(rng: &mut ChaCha8Rng) -> SessionId {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    SessionId(id)
}
