//! The driver: one task owns the endpoint and the transport, feeds it transport events,
//! commands and stream notes, carries out its outputs (the drain rule), and arms one timer
//! from its deadline.

use std::collections::{HashMap, HashSet};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};
use toxtun_proto::{
    Endpoint, Event, FriendError, Input, Output, PeerId, SecretChange, SendError, ServerPolicy,
    StreamCode, StreamId, Target, Transport, TransportEvent, WriteError,
};

mod reverse;
mod seen;
mod udp;

use seen::Seen;

use super::outbox::Outbox;
use super::status::Counters;
use super::stream::{connect_target, pipes, run_stream, Down, Note, StreamIo, Up, DOWN_CHUNK};
use super::{Cmd, NodeEvent, NodeOptions, ReloadReport};

/// How long after a reload revoked a client its friendship ends: time for the CLOSE that
/// told it why to leave.
const UNFRIEND_AFTER: Duration = Duration::from_secs(2);

/// The most transport events or notes handled before the endpoint is drained.
const EVENT_BATCH: usize = 64;

pub(super) struct Driver<T> {
    endpoint: Endpoint,
    transport: T,
    options: NodeOptions,
    /// Packets the transport refused, sent first when it has room.
    outbox: Outbox,
    streams: HashMap<StreamId, StreamIo>,
    events: broadcast::Sender<NodeEvent>,
    notes: mpsc::UnboundedSender<Note>,
    deadline: Option<Instant>,
    /// When session counters were last logged (at debug level, every `STATS_LOG_EVERY`).
    stats_logged: Instant,
    /// What `toxtun status` shows beyond the endpoint's counters: kept from the events.
    seen: Seen,
    /// What the node has done, counted for `status` and metrics.
    counters: Counters,
    /// Listeners for clients (a server), listeners' targets (a client).
    reverse: reverse::Reverse,
    /// Streams whose opener waits to hear OPEN_OK or the refusal (`Node::open_pending`).
    confirms: HashMap<StreamId, tokio::sync::oneshot::Sender<Result<(), StreamCode>>>,
    /// UDP forwards and flows.
    udp: udp::Udp,
    /// The UDP input channel's receiving end, until `run` takes it.
    udp_in: Option<mpsc::Receiver<udp::UdpIn>>,
}

/// How often `-vv` (debug) logs each session's counters: RTT, congestion window, losses.
const STATS_LOG_EVERY: Duration = Duration::from_secs(2);

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// The transport events ready now, at most [`EVENT_BATCH`] of them, once at least one is:
/// events come in bursts (a window of packets), and the endpoint is drained once per
/// burst, not per packet. `None`: the transport stopped.
async fn transport_batch<T: Transport>(transport: &mut T) -> Option<Vec<TransportEvent>> {
    std::future::poll_fn(|cx| {
        let mut evs = Vec::new();
        while evs.len() < EVENT_BATCH {
            match transport.poll_event(cx) {
                Poll::Ready(Some(ev)) => evs.push(ev),
                Poll::Ready(None) if evs.is_empty() => return Poll::Ready(None),
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        if evs.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Some(evs))
        }
    })
    .await
}

impl<T: Transport> Driver<T> {
    /// A driver for `endpoint` over `transport`, reporting to `events`; stream tasks send
    /// their notes to `notes`.
    pub(super) fn new(
        endpoint: Endpoint,
        transport: T,
        options: NodeOptions,
        events: broadcast::Sender<NodeEvent>,
        notes: mpsc::UnboundedSender<Note>,
    ) -> Self {
        let (udp, udp_in) = udp::Udp::new();
        Driver {
            udp,
            udp_in: Some(udp_in),
            endpoint,
            transport,
            options,
            outbox: Outbox::default(),
            streams: HashMap::new(),
            events,
            notes,
            deadline: None,
            stats_logged: now(),
            seen: Seen::default(),
            confirms: HashMap::new(),
            counters: Counters::default(),
            reverse: reverse::Reverse::default(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut notes: mpsc::UnboundedReceiver<Note>,
    ) {
        self.befriend_allowlisted();
        let mut udp_in = self.udp_in.take().expect("run once");
        loop {
            self.drain();
            self.log_stats();
            let deadline = self.deadline;
            let sleep = async move {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let batch = transport_batch(&mut self.transport);
            tokio::select! {
                evs = batch => match evs {
                    Some(evs) => {
                        for ev in evs {
                            self.on_transport(ev);
                        }
                    }
                    None => {
                        tracing::warn!("transport stopped; the node stops");
                        return;
                    }
                },
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Shutdown(done)) => {
                        self.endpoint.shutdown();
                        self.drain();
                        // Let the CLOSE frames reach the transport before going.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.on_cmd(cmd),
                    None => {
                        self.endpoint.shutdown();
                        self.drain();
                        return;
                    }
                },
                Some(note) = notes.recv() => {
                    self.on_note(note);
                    for _ in 1..EVENT_BATCH {
                        match notes.try_recv() {
                            Ok(note) => self.on_note(note),
                            Err(_) => break,
                        }
                    }
                }
                Some(msg) = udp_in.recv() => {
                    self.on_udp_in(msg);
                    for _ in 1..EVENT_BATCH {
                        match udp_in.try_recv() {
                            Ok(msg) => self.on_udp_in(msg),
                            Err(_) => break,
                        }
                    }
                }
                () = sleep => self.endpoint.handle_timeout(now()),
            }
        }
    }

    /// A server makes the clients it allowlists by key its friends at once. c-toxcore then
    /// looks for them on the network from the start (a server is usually long on it), so
    /// such a client's link comes up without its friend request having to find the server
    /// first: over real Tox on loopback, 7.2 s from the client's start to its first byte
    /// instead of 10.2 s (BENCHMARKS.md). Who may *use* the link is still the policy's
    /// decision, at the handshake.
    fn befriend_allowlisted(&mut self) {
        let Some(policy) = &self.endpoint.config().server else {
            return;
        };
        let keys: Vec<PeerId> = policy.clients.iter().map(|c| c.peer).collect();
        for peer in keys {
            match self.transport.accept_friend(peer) {
                Ok(_) | Err(FriendError::AlreadyFriend) => {}
                Err(e) => {
                    tracing::warn!(%peer, "cannot add the allowlisted client as a friend: {e}")
                }
            }
        }
    }

    /// Applies a reloaded policy: see [`Node::reload`].
    fn reload(&mut self, policy: ServerPolicy) -> ReloadReport {
        let old = self.endpoint.config().server.clone().unwrap_or_default();
        let changes = old.changes(&policy);
        let listed: HashSet<PeerId> = policy.clients.iter().map(|c| c.peer).collect();
        let done = self.endpoint.set_server_policy(policy);
        self.befriend_allowlisted();
        let mut gone: Vec<PeerId> = changes.removed.clone();
        gone.extend(&done.revoked);
        if matches!(
            changes.secret,
            SecretChange::Changed | SecretChange::Removed
        ) {
            // Friends the old secret let in, with a session now or not.
            gone.extend(self.seen.links.keys());
        }
        gone.retain(|p| !listed.contains(p));
        gone.sort();
        gone.dedup();
        for &peer in &gone {
            // The CLOSE (1014) is in the transport's queue now; unfriending at once would
            // drop it, and the client would take the silence for an outage.
            let notes = self.notes.clone();
            tokio::spawn(async move {
                tokio::time::sleep(UNFRIEND_AFTER).await;
                let _ = notes.send(Note::Unfriend(peer));
            });
        }
        ReloadReport::new(&changes, &done, &gone)
    }

    fn unfriend(&mut self, peer: PeerId) {
        let policy = self.endpoint.config().server.as_ref();
        let listed = policy.is_some_and(|p| p.clients.iter().any(|c| c.peer == peer));
        if listed || self.endpoint.is_established(peer) {
            return; // listed again, or back in by the secret, since
        }
        match self.transport.remove_friend(peer) {
            Ok(()) => tracing::info!(%peer, "unfriended: the configuration no longer admits it"),
            Err(e) => tracing::warn!(%peer, "cannot unfriend the revoked client: {e}"),
        }
        self.seen.links.remove(&peer);
    }

    /// At debug level, each session's counters every `STATS_LOG_EVERY`: what a person
    /// looks at when a tunnel is slower than expected.
    fn log_stats(&mut self) {
        if !tracing::enabled!(tracing::Level::DEBUG)
            || self.stats_logged.elapsed() < STATS_LOG_EVERY
        {
            return;
        }
        self.stats_logged = now();
        tracing::debug!(stats = ?self.transport.stats(), "transport counters");
        for peer in self.endpoint.peers() {
            if let Some(st) = self.endpoint.session_stats(peer) {
                tracing::debug!(%peer, stats = ?st, "session counters");
            }
        }
    }

    fn emit(&mut self, e: NodeEvent) {
        self.seen.note(&e);
        let _ = self.events.send(e);
    }

    /// The drain rule: carry out outputs until the endpoint is idle.
    fn drain(&mut self) {
        let now = now();
        loop {
            match self.endpoint.poll_output(now) {
                None => {
                    self.deadline = None;
                    return;
                }
                Some(Output::Timeout(t)) => {
                    self.deadline = Some(t);
                    return;
                }
                Some(Output::Transmit { peer, packet }) => self.transmit(now, peer, packet),
                Some(Output::Event(e)) => self.on_endpoint_event(e),
            }
        }
    }

    fn transmit(&mut self, now: Instant, peer: PeerId, packet: Bytes) {
        match self.transport.send(peer, packet) {
            Ok(()) => {}
            Err(SendError::QueueFull(p)) => {
                self.outbox.hold(peer, p);
                self.endpoint.handle_input(now, Input::SendBlocked(peer));
            }
            // The link is down: the transport reports it, and the endpoint ends the session.
            Err(SendError::Offline) | Err(SendError::NotFriend) => {}
            Err(e) => tracing::warn!(code = ?e.status_code().map(|c| c.code()), "send failed: {e}"),
        }
    }

    fn on_transport(&mut self, ev: TransportEvent) {
        let now = now();
        match ev {
            TransportEvent::SendReady(peer) => {
                // Each lane's held packet first, in its lane's order; the endpoint hears
                // SendReady only once neither is still refused (it then unblocks both).
                if self.outbox.retry(peer, &mut self.transport) {
                    self.endpoint.handle_input(now, Input::SendReady(peer));
                }
            }
            TransportEvent::SelfConnection { connected } => {
                self.emit(NodeEvent::Tox { connected });
            }
            other => {
                match &other {
                    TransportEvent::FriendOnline(p) => self.emit(NodeEvent::Peer {
                        peer: *p,
                        online: true,
                    }),
                    TransportEvent::FriendOffline(p) => {
                        self.outbox.forget(*p);
                        self.emit(NodeEvent::Peer {
                            peer: *p,
                            online: false,
                        })
                    }
                    TransportEvent::FriendPath { peer, direct } => self.emit(NodeEvent::PeerPath {
                        peer: *peer,
                        direct: *direct,
                    }),
                    _ => {}
                }
                if let Some(input) = other.into_input() {
                    self.endpoint.handle_input(now, input);
                }
            }
        }
    }

    /// A stream the peer opened: connect its target (a server, or a client's listener),
    /// or refuse it.
    fn on_incoming(&mut self, stream: StreamId, target: Target) {
        self.emit(NodeEvent::StreamOpen {
            stream,
            target: target.clone(),
            incoming: true,
        });
        // A client takes a server's stream only for its listeners (the endpoint
        // has checked), and connects it only where they say.
        if !self.options.serve && !self.reverse.targets.contains(&target) {
            let _ = self.endpoint.refuse(stream, StreamCode::NotAccepting);
            // Its StreamOpen was reported: so is its end (and `toxtun status`
            // forgets it; a peer sending OPENs to a client cannot grow it).
            self.emit(NodeEvent::StreamEnd {
                stream,
                code: Some(StreamCode::NotAccepting),
            });
            return;
        }
        let notes = self.notes.clone();
        let timeout = self.options.connect_timeout;
        tokio::spawn(async move {
            let r = connect_target(target, timeout).await;
            let _ = notes.send(Note::Connected(stream, r));
        });
    }

    fn on_endpoint_event(&mut self, e: Event) {
        self.counters.count(&e);
        if self.on_reverse_event(&e) || self.on_flow_event(&e) {
            return;
        }
        match e {
            Event::FriendRequest { peer, decision } => {
                if decision.is_ok() {
                    match self.transport.accept_friend(peer) {
                        Ok(_) | Err(FriendError::AlreadyFriend) => {}
                        Err(err) => tracing::warn!(%peer, "accepting friend failed: {err}"),
                    }
                }
                self.emit(NodeEvent::FriendRequest { peer, decision });
            }
            Event::SessionEstablished { peer } => {
                let fast_path = self
                    .endpoint
                    .session_stats(peer)
                    .is_some_and(|s| s.fast_path_negotiated);
                self.emit(NodeEvent::SessionUp { peer, fast_path })
            }
            Event::SessionSuspended { peer } => self.emit(NodeEvent::SessionSuspended { peer }),
            Event::SessionResumed { peer } => self.emit(NodeEvent::SessionResumed { peer }),
            Event::SessionClosed { peer, code, remote } => {
                self.stop_listeners_of(peer);
                self.emit(NodeEvent::SessionDown { peer, code, remote })
            }
            Event::StreamIncoming { stream, target, .. } => self.on_incoming(stream, target),
            Event::StreamDenied {
                peer, target, code, ..
            } => self.emit(NodeEvent::StreamDenied { peer, target, code }),
            Event::StreamOpened { stream } => {
                if let Some(c) = self.confirms.remove(&stream) {
                    let _ = c.send(Ok(()));
                }
            }
            Event::StreamReadable { stream } => self.pump_down(stream),
            Event::StreamWritable { stream } => self.pump_up(stream),
            Event::StreamRefused { stream, code } | Event::StreamReset { stream, code, .. } => {
                if let Some(c) = self.confirms.remove(&stream) {
                    let _ = c.send(Err(code));
                }
                // The event first: whoever sees the local side end then finds its code.
                self.emit(NodeEvent::StreamEnd {
                    stream,
                    code: Some(code),
                });
                if let Some(io) = self.streams.remove(&stream) {
                    let _ = io.down.try_send(Down::Reset(code));
                }
            }
            Event::StreamClosed { stream } => {
                self.confirms.remove(&stream);
                self.streams.remove(&stream);
                self.emit(NodeEvent::StreamEnd { stream, code: None });
            }
            _ => {}
        }
    }

    /// Moves bytes from the endpoint to the stream's local side while it has room. The
    /// endpoint hands out one packet's payload per read; up to `DOWN_CHUNK` of them go in
    /// one message, which the stream's task writes with one vectored write, so the local
    /// socket sees a few large writes, not one per packet, and nothing is copied to
    /// gather them.
    fn pump_down(&mut self, stream: StreamId) {
        let Some(io) = self.streams.get_mut(&stream) else {
            return;
        };
        loop {
            let Ok(permit) = io.down.try_reserve() else {
                return; // full (DownSpace will call again) or gone
            };
            let mut chunks: Vec<Bytes> = Vec::new();
            let mut have = 0;
            let end = loop {
                if have >= DOWN_CHUNK {
                    break false;
                }
                match self.endpoint.read(stream, DOWN_CHUNK - have) {
                    Ok(Some(b)) => {
                        have += b.len();
                        chunks.push(b);
                    }
                    Ok(None) => break true,
                    Err(_) => break false,
                }
            };
            let data = chunks;
            match (data.is_empty(), end) {
                (false, false) => permit.send(Down::Data(data)),
                (false, true) => {
                    permit.send(Down::Data(data));
                    // The end follows on the next round (or when there is room).
                }
                (true, true) => {
                    permit.send(Down::Fin);
                    return;
                }
                (true, false) => return,
            }
        }
    }

    /// Moves bytes from the stream's local side into the endpoint while it has credit.
    fn pump_up(&mut self, stream: StreamId) {
        loop {
            let Some(io) = self.streams.get_mut(&stream) else {
                return;
            };
            let chunk = match io.pending.take() {
                Some(c) => c,
                None => match io.up.try_recv() {
                    Ok(Up::Data(b)) => b,
                    Ok(Up::Fin) => {
                        io.fin_sent = true;
                        let _ = self.endpoint.finish(stream);
                        return;
                    }
                    Ok(Up::Abort(code)) => {
                        self.streams.remove(&stream);
                        let _ = self.endpoint.reset(stream, code);
                        self.emit(NodeEvent::StreamEnd {
                            stream,
                            code: Some(code),
                        });
                        return;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => return,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        // The local side went away without finishing: abort.
                        if !io.fin_sent {
                            self.streams.remove(&stream);
                            let _ = self.endpoint.reset(stream, StreamCode::Cancelled);
                        }
                        return;
                    }
                },
            };
            match self.endpoint.write(stream, chunk.clone()) {
                Ok(n) if n == chunk.len() => {}
                Ok(n) => {
                    io.pending = Some(chunk.slice(n..));
                    return;
                }
                Err(WriteError::Blocked) => {
                    io.pending = Some(chunk);
                    return;
                }
                Err(_) => return,
            }
        }
    }

    fn on_note(&mut self, note: Note) {
        match note {
            Note::Up(id) => self.pump_up(id),
            Note::DownSpace(id) => self.pump_down(id),
            Note::Connected(id, Ok(tcp)) => {
                if self.endpoint.accept(id).is_ok() {
                    self.counters.streams_opened += 1;
                    let (io, pipes) = pipes(id, &self.notes, StreamCode::TargetIo);
                    self.streams.insert(id, io);
                    tokio::spawn(run_stream(tcp, pipes));
                    self.pump_down(id);
                }
            }
            Note::Unfriend(peer) => self.unfriend(peer),
            Note::Listened(peer, listener, bind, r) => self.on_listened(peer, listener, bind, r),
            Note::ReverseConn(peer, listener, tcp) => self.on_reverse_conn(peer, listener, tcp),
            Note::FlowBound(peer, flow, target, r) => self.on_flow_bound(peer, flow, target, r),
            Note::Connected(id, Err(code)) => {
                tracing::info!(stream = %id, code = code.code(), "target: {code}");
                if self.endpoint.refuse(id, code).is_ok() {
                    self.counters.refused(code);
                }
                self.emit(NodeEvent::StreamEnd {
                    stream: id,
                    code: Some(code),
                });
            }
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Befriend(server, message, reply) => {
                let r = match self.transport.add_friend(&server, &message) {
                    Ok(added) => {
                        self.emit(NodeEvent::FriendRequestSent {
                            peer: server.public_key,
                            code: added.status_code().code(),
                        });
                        Ok(())
                    }
                    Err(toxtun_proto::FriendError::AlreadyFriend) => Ok(()),
                    Err(e) => {
                        self.emit(NodeEvent::FriendRequestSent {
                            peer: server.public_key,
                            code: e.status_code().code(),
                        });
                        Err(e.to_string())
                    }
                };
                if r.is_ok() {
                    self.endpoint.connect(now(), server.public_key);
                }
                let _ = reply.send(r);
            }
            Cmd::Open(server, target, confirm, reply) => {
                let r = match self.endpoint.open(now(), server, target.clone()) {
                    Ok(id) => {
                        if let Some(c) = confirm {
                            self.confirms.insert(id, c);
                        }
                        let (io, pipes) = pipes(id, &self.notes, StreamCode::Cancelled);
                        self.streams.insert(id, io);
                        self.emit(NodeEvent::StreamOpen {
                            stream: id,
                            target,
                            incoming: false,
                        });
                        Ok(pipes)
                    }
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(r);
            }
            Cmd::Stats(peer, reply) => {
                let _ = reply.send(self.endpoint.session_stats(peer));
            }
            Cmd::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Cmd::Reset(stream, code) => {
                if let Some(io) = self.streams.remove(&stream) {
                    let _ = io.down.try_send(Down::Reset(code));
                    let _ = self.endpoint.reset(stream, code);
                    self.emit(NodeEvent::StreamEnd {
                        stream,
                        code: Some(code),
                    });
                }
            }
            Cmd::Listen(server, bind, to, reply) => {
                self.reverse.targets.insert(to.clone());
                let r = self.endpoint.listen(now(), server, bind, to);
                let _ = reply.send(r.map_err(|e| e.to_string()));
            }
            Cmd::Unlisten(server, id) => {
                self.endpoint.unlisten(server, id);
            }
            Cmd::ForwardUdp(server, socket, target, reply) => {
                let _ = reply.send(self.forward_udp(server, socket, target));
            }
            Cmd::StopUdp(id) => self.stop_udp(id),
            Cmd::Reload(policy, reply) => {
                let _ = reply.send(self.reload(*policy));
            }
            Cmd::Shutdown(_) => unreachable!("handled in run"),
        }
    }
}
