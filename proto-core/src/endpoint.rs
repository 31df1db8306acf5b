//! The endpoint: one per Tox identity. It routes transport inputs to per-peer sessions, takes
//! the application's commands, and hands out outputs (packets, events, its next deadline).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::codes::{SessionCode, StreamCode};
use crate::collections::{hasher, Map, Set};
use crate::config::{
    Capabilities, ConfigError, EndpointConfig, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use crate::event::{
    Event, Input, OpenError, Output, ReadError, SessionStats, StreamError, StreamStats, WriteError,
};
use crate::frame::{self, DecodeError, Frame, HelloAck};
use crate::ids::{PeerId, SessionId, StreamId};
use crate::session::{Ctx, Gone, Role, Session, State};
use crate::stream::{OpenState, Origin, Stream};
use crate::target::Target;

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
            if !s.in_ready {
                s.in_ready = true;
                self.ready.push_back(peer);
            }
        }
    }

    fn send_stray(&mut self, peer: PeerId, frame: Frame) {
        if self.stray.len() < MAX_STRAY {
            self.stray.push_back((peer, frame.to_bytes()));
        }
    }

    fn new_session_id(&mut self) -> SessionId {
        let mut id = [0u8; 16];
        self.rng.fill_bytes(&mut id);
        SessionId(id)
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
                if let Some(s) = self.sessions.get_mut(&peer) {
                    s.link_up = true;
                    s.unblock();
                    match (s.role, s.state) {
                        (Role::Initiator, State::Idle { .. }) => {
                            let id = self.new_session_id();
                            let s = self.sessions.get_mut(&peer).expect("present");
                            s.send_hello(now, id, &self.config);
                        }
                        (Role::Responder(_), _) if s.is_suspended() => {
                            // The client may not have seen the link drop.
                            self.ask_for_resume(peer);
                        }
                        _ => {}
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
                self.link_lost(now, peer);
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

    fn link_lost(&mut self, now: Instant, peer: PeerId) {
        let (sessions, mut ctx) = self.ctx();
        let Some(s) = sessions.get_mut(&peer) else {
            return;
        };
        s.link_up = false;
        s.unblock();
        let grace = !ctx.config.resume_grace.is_zero();
        match (s.role, s.state) {
            (_, State::Established) if grace => s.suspend(now, &mut ctx),
            (_, State::HelloSent { .. }) if s.is_suspended() => {
                s.state = State::Idle { retry_at: None };
            }
            (_, State::Idle { .. }) => {}
            (Role::Initiator, _) => s.fail_and_retry(now, SessionCode::LinkLost, false, &mut ctx),
            (Role::Responder(_), _) => {
                s.end(SessionCode::LinkLost, false, &mut ctx);
                sessions.remove(&peer);
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
            s.link_up = true;
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
                    if matches!(s.state, State::HelloSent { .. }) {
                        if is_fatal(code) {
                            s.end(code, true, &mut ctx);
                            sessions.remove(&peer);
                        } else {
                            s.fail_and_retry(now, code, true, &mut ctx);
                        }
                    }
                }
            }
            Frame::Close {
                code: SessionCode::ResumeRequired,
            } => self.on_resume_required(now, peer),
            Frame::Close { code } => {
                let (sessions, mut ctx) = self.ctx();
                if let Some(s) = sessions.get_mut(&peer) {
                    if s.is_established() || matches!(s.state, State::HelloSent { .. }) {
                        match s.role {
                            Role::Initiator => s.fail_and_retry(now, code, true, &mut ctx),
                            Role::Responder(_) => {
                                s.end(code, true, &mut ctx);
                                sessions.remove(&peer);
                            }
                        }
                    }
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
        s.last_recv = now;
        if !frame.is_lossy() {
            // The path carries lossless packets: tells a broken fast path from an outage.
            s.lossy_tx.on_lossless_heard(now);
        }
        if frame.is_sequenced() {
            s.count_received(now);
        }
        let result = match frame {
            // A frame we answer directly (OPEN_ERR for an undecodable OPEN).
            frame if reply => {
                s.queue_control(frame);
                Ok(())
            }
            Frame::LossyData {
                packet,
                stream,
                offset,
                payload,
            } => s.on_lossy_data(now, packet, stream, offset, payload, &mut ctx),
            Frame::LossyAck { delay_us, ranges } => {
                s.on_lossy_ack(now, delay_us, &ranges, &mut ctx)
            }
            frame => s.on_frame(frame, &mut ctx),
        };
        if let Err(code) = result {
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
            Some(s) => (s.role == Role::Initiator, s.is_suspended()),
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
            Some(s) if s.is_established() && !s.batching => {
                return self.protocol_violation(now, peer, SessionCode::ProtocolViolation)
            }
            Some(s) if s.is_established() => {}
            _ => return self.without_session(peer),
        }
        for p in inner {
            if !self
                .sessions
                .get(&peer)
                .is_some_and(|s| s.is_established() && s.batching)
            {
                return; // an earlier frame ended or restarted the session
            }
            self.on_packet(now, peer, p);
        }
    }

    /// A suspended server asks its client to resume (CLOSE 1013), once per outage.
    fn ask_for_resume(&mut self, peer: PeerId) {
        let Some(s) = self.sessions.get_mut(&peer) else {
            return;
        };
        if !s.resume_asked {
            s.resume_asked = true;
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
        if matches!(s.state, State::Idle { .. }) {
            return;
        }
        s.end(code, false, &mut ctx);
        match s.role {
            Role::Initiator => s.schedule_retry(now, ctx.config),
            Role::Responder(_) => {
                sessions.remove(&peer);
            }
        }
        self.send_stray(peer, Frame::Close { code });
    }

    /// HELLO starts a session; RESUME (`resume`) continues one after a link outage.
    fn on_hello(&mut self, now: Instant, peer: PeerId, h: crate::frame::Hello, resume: bool) {
        let reject = |this: &mut Self, code: SessionCode| {
            this.send_stray(
                peer,
                Frame::HelloReject {
                    code,
                    min_version: MIN_PROTOCOL_VERSION,
                    max_version: PROTOCOL_VERSION,
                },
            );
        };
        let Some(policy) = self.config.server.as_ref() else {
            return reject(self, SessionCode::Unauthorized);
        };
        let Some(version) = Session::negotiate_version(&h) else {
            return reject(self, SessionCode::VersionMismatch);
        };
        let admission = match policy.admit(&peer, &self.config.local_id, h.proof.as_ref()) {
            Ok(a) => a,
            Err(code) => return reject(self, code),
        };
        let responders = self
            .sessions
            .values()
            .filter(|s| matches!(s.role, Role::Responder(_)) && s.peer != peer)
            .count();
        if responders >= policy.limits.max_peers {
            return reject(self, SessionCode::TooManyPeers);
        }
        let stream_hasher = hasher(&mut self.rng);
        let direct = self.direct.contains(&peer);
        let (sessions, mut ctx) = self.ctx();
        if resume {
            let Some(s) = sessions
                .get_mut(&peer)
                .filter(|s| s.id == h.session && (s.is_established() || s.is_suspended()))
            else {
                // Not a session we know (we restarted, or it outlived its grace here).
                return reject(self, SessionCode::SessionUnknown);
            };
            // The client's link dropped, whether or not we saw it.
            s.role = Role::Responder(admission);
            s.link_up = true;
            s.suspend(now, &mut ctx);
            let capabilities = [
                (s.lossy_negotiated, Capabilities::LOSSY_DATA),
                (s.lossy_credit, Capabilities::LOSSY_CREDIT),
                (s.batching, Capabilities::BATCH),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .fold(0, |caps, (_, c)| caps | c.0);
            s.queue_control(Frame::HelloAck(HelloAck {
                version,
                capabilities,
                session: h.session,
                resumed: true,
                stream_window: ctx.config.stream_window,
                session_window: ctx.config.session_window,
            }));
            s.resume(now, &mut ctx);
            return self.mark_ready(peer);
        }
        let session = match sessions.get_mut(&peer) {
            Some(s) => {
                if s.is_established() || s.is_suspended() {
                    // The peer started over: whatever it had with us is gone on its side.
                    s.end(SessionCode::SessionUnknown, true, &mut ctx);
                }
                s.role = Role::Responder(admission);
                s
            }
            None => sessions.entry(peer).or_insert_with(|| {
                Session::new(
                    peer,
                    Role::Responder(admission),
                    h.session,
                    now,
                    ctx.config,
                    stream_hasher,
                )
            }),
        };
        session.set_path(direct);
        session.id = h.session;
        session.link_up = true;
        let capabilities = h.capabilities & ctx.config.capabilities().0;
        session.queue_control(Frame::HelloAck(HelloAck {
            version,
            capabilities,
            session: h.session,
            resumed: false,
            stream_window: ctx.config.stream_window,
            session_window: ctx.config.session_window,
        }));
        session.establish(
            now,
            h.stream_window,
            h.session_window,
            Capabilities(capabilities),
            &mut ctx,
        );
        self.mark_ready(peer);
    }

    fn on_hello_ack(&mut self, now: Instant, peer: PeerId, a: HelloAck) {
        let (sessions, mut ctx) = self.ctx();
        let Some(s) = sessions.get_mut(&peer) else {
            return;
        };
        if !matches!(s.state, State::HelloSent { .. }) || a.session != s.id {
            return; // stale or unsolicited
        }
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&a.version) {
            s.end(SessionCode::VersionMismatch, false, &mut ctx);
            sessions.remove(&peer);
            return self.send_stray(
                peer,
                Frame::Close {
                    code: SessionCode::VersionMismatch,
                },
            );
        }
        match (s.is_suspended(), a.resumed) {
            (true, true) => s.resume(now, &mut ctx),
            // A server answers RESUME with resumed set, or refuses it.
            (true, false) => return self.resume_refused(now, peer),
            _ => {
                let caps = Capabilities(a.capabilities & ctx.config.capabilities().0);
                s.establish(now, a.stream_window, a.session_window, caps, &mut ctx)
            }
        }
        self.mark_ready(peer);
    }

    /// The server does not know the session we tried to resume: it restarted, so its
    /// streams are gone. End ours at once with that code and start a new session now.
    fn resume_refused(&mut self, now: Instant, peer: PeerId) {
        let id = self.new_session_id();
        let (sessions, mut ctx) = self.ctx();
        let Some(s) = sessions
            .get_mut(&peer)
            .filter(|s| s.is_suspended() && matches!(s.state, State::HelloSent { .. }))
        else {
            return;
        };
        s.end_keeping_unsent(SessionCode::SessionUnknown, true, &mut ctx);
        s.send_hello(now, id, ctx.config);
        self.mark_ready(peer);
    }

    /// The server saw the link drop and we did not: suspend and resume at once.
    fn on_resume_required(&mut self, now: Instant, peer: PeerId) {
        let (sessions, mut ctx) = self.ctx();
        let Some(s) = sessions.get_mut(&peer) else {
            return;
        };
        if s.role != Role::Initiator {
            return;
        }
        match s.state {
            State::Established if !ctx.config.resume_grace.is_zero() => {
                s.suspend(now, &mut ctx);
                s.send_hello(now, s.id, ctx.config);
            }
            State::Established => {
                s.end(SessionCode::LinkLost, true, &mut ctx);
                s.schedule_retry(now, ctx.config);
            }
            State::Idle { .. } if s.is_suspended() && s.link_up => {
                s.send_hello(now, s.id, ctx.config);
            }
            _ => return,
        }
        self.mark_ready(peer);
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
            if s.resume_by.is_some_and(|t| now >= t) {
                // The outage outlasted the grace: the streams end now.
                match s.role {
                    Role::Initiator => {
                        s.fail_and_retry(now, SessionCode::LinkLost, false, &mut ctx)
                    }
                    Role::Responder(_) => {
                        s.end(SessionCode::LinkLost, false, &mut ctx);
                        sessions.remove(&peer);
                        continue;
                    }
                }
            }
            if let State::Idle { retry_at: Some(t) } = s.state {
                if s.link_up && now >= t {
                    let id = self.new_session_id();
                    let (sessions, ctx) = self.ctx();
                    let s = sessions.get_mut(&peer).expect("present");
                    s.send_hello(now, id, ctx.config);
                }
            }
            let (sessions, mut ctx) = self.ctx();
            let s = sessions.get_mut(&peer).expect("present");
            let grace = !ctx.config.resume_grace.is_zero();
            // Timeouts that suspend or retry are handled here; the others end the session.
            let ending = match s.on_timeout(now, &mut ctx) {
                Some(SessionCode::HandshakeTimeout) if s.is_suspended() => {
                    // A resume got no answer: try again (with backoff) within the grace.
                    s.schedule_retry(now, ctx.config);
                    None
                }
                Some(SessionCode::IdleTimeout) if grace => {
                    // Silence is an outage too: keep the streams, and a client resumes at
                    // once (RESUME goes out if the link is really there).
                    s.suspend(now, &mut ctx);
                    if s.role == Role::Initiator && s.link_up {
                        s.send_hello(now, s.id, ctx.config);
                    }
                    None
                }
                other => other,
            };
            if let Some(code) = ending {
                match s.role {
                    Role::Initiator => {
                        s.fail_and_retry(now, code, false, &mut ctx);
                        if code == SessionCode::IdleTimeout {
                            // Tell the peer, in case only our direction is dead.
                            self.send_stray(peer, Frame::Close { code });
                        }
                    }
                    Role::Responder(_) => {
                        s.end(code, false, &mut ctx);
                        sessions.remove(&peer);
                        self.send_stray(peer, Frame::Close { code });
                    }
                }
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
        s.path_direct = self.direct.contains(&peer);
        if self.online.contains(&peer) {
            s.link_up = true;
            s.send_hello(now, id, &self.config);
        }
        self.sessions.insert(peer, s);
        self.mark_ready(peer);
    }

    /// Ends the session with the peer (CLOSE with `Normal`), resetting its streams, and stops
    /// reconnecting to it.
    pub fn disconnect(&mut self, peer: PeerId) {
        let (sessions, mut ctx) = self.ctx();
        if let Some(mut s) = sessions.remove(&peer) {
            let was_live = !matches!(s.state, State::Idle { .. }) || s.is_suspended();
            s.end(SessionCode::Normal, false, &mut ctx);
            if was_live {
                self.send_stray(
                    peer,
                    Frame::Close {
                        code: SessionCode::Normal,
                    },
                );
            }
        }
    }

    /// Closes every session (CLOSE with `Shutdown`): for a clean exit.
    pub fn shutdown(&mut self) {
        let peers: Vec<PeerId> = self.sessions.keys().copied().collect();
        for peer in peers {
            let (sessions, mut ctx) = self.ctx();
            if let Some(mut s) = sessions.remove(&peer) {
                let was_live = !matches!(s.state, State::Idle { .. }) || s.is_suspended();
                s.end(SessionCode::Shutdown, false, &mut ctx);
                if was_live {
                    self.send_stray(
                        peer,
                        Frame::Close {
                            code: SessionCode::Shutdown,
                        },
                    );
                }
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
        let id = self.new_stream_id();
        let stream = Stream::new(
            id,
            target,
            Origin::Local,
            OpenState::Opening { open_sent: false },
            u64::from(self.config.stream_window),
        );
        let s = self.sessions.get_mut(&peer).expect("connect created it");
        s.add_local_stream(now, stream, &self.config);
        self.index.insert(id, peer);
        self.mark_ready(peer);
        Ok(id)
    }

    fn stream_session(&mut self, stream: StreamId) -> Option<(&mut Session, Ctx<'_>)> {
        let peer = *self.index.get(&stream)?;
        let (sessions, ctx) = self.ctx();
        Some((sessions.get_mut(&peer)?, ctx))
    }

    /// Writes as much of `data` as the stream's credit allows and returns how much. A short
    /// count (or `Blocked`) means: wait for `StreamWritable`.
    pub fn write(&mut self, stream: StreamId, data: Bytes) -> Result<usize, WriteError> {
        let (s, _) = self
            .stream_session(stream)
            .ok_or(WriteError::UnknownStream)?;
        let st = s
            .streams
            .get_mut(&stream)
            .ok_or(WriteError::UnknownStream)?;
        if st.state == OpenState::Incoming {
            return Err(WriteError::NotAccepted);
        }
        if st.send.fin_requested {
            return Err(WriteError::Finished);
        }
        let want = data.len();
        let n = st.send.write(data);
        if n < want {
            st.send.want_writable = true;
        }
        if n == 0 && want > 0 {
            return Err(WriteError::Blocked);
        }
        let peer = s.peer;
        s.schedule(stream);
        self.mark_ready(peer);
        Ok(n)
    }

    /// Finishes this side's direction: FIN follows the bytes already written. Idempotent.
    pub fn finish(&mut self, stream: StreamId) -> Result<(), StreamError> {
        let (s, mut ctx) = self
            .stream_session(stream)
            .ok_or(StreamError::UnknownStream)?;
        let st = s
            .streams
            .get_mut(&stream)
            .ok_or(StreamError::UnknownStream)?;
        if st.state == OpenState::Incoming {
            return Err(StreamError::WrongState);
        }
        st.send.fin_requested = true;
        let peer = s.peer;
        s.maybe_send_fin(stream, &mut ctx);
        self.mark_ready(peer);
        Ok(())
    }

    /// Aborts the stream both ways with `code` (RST). No event follows for it.
    pub fn reset(&mut self, stream: StreamId, code: StreamCode) -> Result<(), StreamError> {
        let (s, mut ctx) = self
            .stream_session(stream)
            .ok_or(StreamError::UnknownStream)?;
        let peer = s.peer;
        s.reset_stream(stream, code, false, &mut ctx);
        self.mark_ready(peer);
        Ok(())
    }

    /// Accepts an incoming stream (its target is connected): OPEN_OK goes out, and bytes
    /// that arrived with the OPEN become readable.
    pub fn accept(&mut self, stream: StreamId) -> Result<(), StreamError> {
        let (s, ctx) = self
            .stream_session(stream)
            .ok_or(StreamError::UnknownStream)?;
        let st = s
            .streams
            .get_mut(&stream)
            .ok_or(StreamError::UnknownStream)?;
        if st.state != OpenState::Incoming {
            return Err(StreamError::WrongState);
        }
        st.state = OpenState::Open;
        if st.recv.buffered > 0 || st.recv.fin_offset.is_some() {
            st.recv.readable_signaled = true;
            ctx.events.push_back(Event::StreamReadable { stream });
        }
        let peer = s.peer;
        s.queue_control(Frame::OpenOk { stream });
        self.mark_ready(peer);
        Ok(())
    }

    /// Refuses an incoming stream with `code` (OPEN_ERR), e.g. `TargetRefused`.
    pub fn refuse(&mut self, stream: StreamId, code: StreamCode) -> Result<(), StreamError> {
        let (s, mut ctx) = self
            .stream_session(stream)
            .ok_or(StreamError::UnknownStream)?;
        if s.streams.get(&stream).map(|st| st.state) != Some(OpenState::Incoming) {
            return Err(StreamError::WrongState);
        }
        s.remove_stream(stream, Gone::Refused, &mut ctx);
        s.queue_control(Frame::OpenErr { stream, code });
        let peer = s.peer;
        self.mark_ready(peer);
        Ok(())
    }

    /// Reads up to `max` bytes. `Ok(None)` is the end of the stream (the peer finished);
    /// `Err(Blocked)` means wait for `StreamReadable`. Reading returns credit to the peer.
    pub fn read(&mut self, stream: StreamId, max: usize) -> Result<Option<Bytes>, ReadError> {
        let (s, mut ctx) = self
            .stream_session(stream)
            .ok_or(ReadError::UnknownStream)?;
        let st = s.streams.get_mut(&stream).ok_or(ReadError::UnknownStream)?;
        if st.state == OpenState::Incoming {
            return Err(ReadError::NotAccepted);
        }
        if let Some(chunk) = st.recv.read(max.max(1)) {
            let n = chunk.len() as u64;
            let peer = s.peer;
            s.after_read(stream, n, ctx.config);
            self.mark_ready(peer);
            return Ok(Some(chunk));
        }
        if st.recv.at_end() {
            if !st.recv.fin_read {
                st.recv.fin_read = true;
                s.maybe_close(stream, &mut ctx);
            }
            return Ok(None);
        }
        st.recv.readable_signaled = false;
        Err(ReadError::Blocked)
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
                s.last_lossy = false; // strays are lossless (CLOSE, HELLO_REJECT)
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
            s.in_ready = false;
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

    // ----- introspection -----------------------------------------------------------------

    /// Counters of one stream.
    pub fn stream_stats(&self, stream: StreamId) -> Option<StreamStats> {
        let peer = *self.index.get(&stream)?;
        let st = self.sessions.get(&peer)?.streams.get(&stream)?;
        Some(StreamStats {
            peer,
            recv_buffered: st.recv.buffered,
            send_buffered: st.send.unacked() as usize,
            recv_window: st.recv.window,
            send_window: st.send.max_offset.saturating_sub(st.send.acked),
            received: st.recv.received,
            sent: st.send.sent,
        })
    }

    /// Counters of the session with one peer.
    pub fn session_stats(&self, peer: PeerId) -> Option<SessionStats> {
        let s = self.sessions.get(&peer)?;
        let (tx, rx) = (s.lossy_tx.counters(), s.lossy_rx.counters());
        Some(SessionStats {
            established: s.is_established(),
            streams: s.streams.len(),
            recv_buffered: s.recv_total - s.recv_consumed,
            sent: s.send_total,
            received: s.recv_total,
            suspended: s.is_suspended(),
            retransmit_buffered: s.log_bytes(),
            acks_sent: s.acks_sent,
            frames_resent: s.frames_resent,
            fast_path: s.lossy_active(),
            fast_path_negotiated: s.lossy_negotiated,
            lossy_packets_sent: tx.packets_sent,
            lossy_packets_lost: tx.packets_lost,
            lossy_probe_timeouts: tx.probe_timeouts,
            lossy_shadows: tx.shadows,
            lossy_spurious_losses: tx.spurious_losses,
            lossy_bytes_resent: tx.bytes_resent,
            lossy_packets_received: rx.packets_received,
            lossy_duplicates: rx.duplicates,
            rtt: s.lossy_tx.rtt().smoothed(),
            congestion_window: s.lossy_tx.window(),
            bytes_in_flight: s.lossy_tx.bytes_in_flight(),
            min_rtt: s.lossy_tx.rtt().smoothed().map(|_| s.lossy_tx.rtt().min()),
        })
    }

    /// Every stream with its peer.
    pub fn streams(&self) -> impl Iterator<Item = (StreamId, PeerId)> + '_ {
        self.index.iter().map(|(s, p)| (*s, *p))
    }

    /// Peers with a session (live or reconnecting).
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.sessions.keys().copied()
    }

    /// Whether the session with the peer is established.
    pub fn is_established(&self, peer: PeerId) -> bool {
        self.sessions
            .get(&peer)
            .is_some_and(Session::is_established)
    }
}

/// Refusals that retrying cannot fix.
fn is_fatal(code: SessionCode) -> bool {
    matches!(
        code,
        SessionCode::Unauthorized | SessionCode::BadSecret | SessionCode::VersionMismatch
    )
}
