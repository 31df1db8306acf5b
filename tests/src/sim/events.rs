//! Each node's outputs: packets onto the mock network, events checked against what the harness knows.

use toxtun_proto::{Event, Input, Output, SessionCode, StreamCode, StreamId};
use toxtun_transport_mock::NodeId;

use super::{is_violation, trace, Sim, SimFailure};

impl Sim {
    /// Carries out everything node `i`'s endpoint wants done now.
    pub(super) fn drain(&mut self, i: usize) -> Result<bool, SimFailure> {
        let node = NodeId(i);
        let now = self.now;
        let mut moved = false;
        loop {
            let out = self.nodes[i].endpoint.poll_output(now);
            match out {
                None => {
                    self.nodes[i].timeout = None;
                    break;
                }
                Some(Output::Timeout(t)) => {
                    self.nodes[i].timeout = Some(t);
                    break;
                }
                Some(Output::Transmit { peer, packet }) => {
                    moved = true;
                    if trace() {
                        let f = toxtun_proto::wire::Frame::decode(&packet).map(|f| match f {
                            toxtun_proto::wire::Frame::Data {
                                offset, payload, ..
                            } => {
                                format!("DATA @{offset} +{}", payload.len())
                            }
                            other => format!("{other:?}"),
                        });
                        eprintln!("{:?} node {i} -> {peer}: {f:?}", self.now - self.start);
                    }
                    // The mock's lossy channel never refuses (it drops), so only the lossless
                    // lane is ever blocked; lossy packets may go meanwhile.
                    if !toxtun_proto::transport::PacketKind::is_lossy(&packet)
                        && self.nodes[i].held.contains_key(&peer)
                    {
                        fail!("node {i} sent a lossless packet to a peer whose lossless queue it was told is full");
                    }
                    match self.net.send(node, peer, packet) {
                        Ok(()) => {}
                        Err(toxtun_proto::SendError::QueueFull(p)) => {
                            self.nodes[i].held.insert(peer, p);
                            self.nodes[i]
                                .endpoint
                                .handle_input(now, Input::SendBlocked(peer));
                        }
                        // Offline: the transport will report it; the endpoint ends the
                        // session then. Other errors would be harness bugs.
                        Err(toxtun_proto::SendError::Offline) => {}
                        Err(e) => fail!("node {i}: transport refused a packet: {e}"),
                    }
                }
                Some(Output::Event(e)) => {
                    moved = true;
                    if trace() {
                        eprintln!("{:?} node {i}: {e:?}", self.now - self.start);
                    }
                    self.on_event(i, e)?;
                }
            }
        }
        Ok(moved)
    }

    pub(super) fn on_event(&mut self, i: usize, e: Event) -> Result<(), SimFailure> {
        self.track_outages(i, &e);
        match e {
            Event::FriendRequest {
                peer,
                decision: Ok(()),
            } => {
                let _ = self.net.accept_friend(NodeId(i), peer);
            }
            Event::StreamIncoming { stream, .. } => self.on_incoming(i, stream)?,
            Event::StreamReadable { stream } => {
                self.nodes[i].try_read.insert(stream);
            }
            Event::StreamWritable { stream } => {
                self.nodes[i].try_write.insert(stream);
            }
            Event::SessionClosed { peer, code, .. }
                if matches!(
                    code,
                    SessionCode::ProtocolViolation
                        | SessionCode::FlowControl
                        | SessionCode::HandshakeRequired
                        | SessionCode::VersionMismatch
                        | SessionCode::Unauthorized
                        | SessionCode::BadSecret
                ) =>
            {
                fail!("node {i}: session with {peer:?} closed with {code}");
            }
            Event::StreamRefused { stream, code } => {
                if is_violation(code) {
                    fail!("node {i}: stream {stream} refused with {code}");
                }
                let ix = self.index(stream)?;
                self.end_side(ix, 0, format!("refused {code}"))?;
            }
            Event::StreamReset { stream, code, .. } => {
                if is_violation(code) {
                    fail!("node {i}: stream {stream} reset with {code}: correct peers never violate the protocol");
                }
                let ix = self.index(stream)?;
                if code == StreamCode::SessionClosed && !self.session_end_excused(i, ix) {
                    fail!(
                        "node {i}: stream {stream} ended with {code}, yet neither node restarted \
                         and no outage outlasted the resume grace: link flaps must not end streams"
                    );
                }
                let side = self.streams[ix].side_of(i).expect("side");
                self.end_side(ix, side, format!("reset {code}"))?;
            }
            Event::StreamClosed { stream } => self.on_closed(i, stream)?,
            Event::ListenRequested { peer, listener, .. } => {
                // The application listens at once.
                let answered = self.nodes[i].endpoint.answer_listen(peer, listener, Ok(()));
                if answered.is_ok() {
                    self.listening.insert((i, peer), listener);
                }
            }
            Event::Datagram {
                peer,
                flow,
                payload,
            } => self.on_datagram(i, peer, flow, payload)?,
            Event::FlowRefused { code, .. }
            | Event::FlowDenied { code, .. }
            | Event::FlowClosed { code, .. } => self.on_flow_end(i, code)?,
            Event::FlowRequested { peer, flow, .. } => {
                // The application's socket toward the target is ready at once.
                let _ = self.nodes[i].endpoint.answer_flow(peer, flow, Ok(()));
            }
            Event::ListenClosed { peer, code, .. } => {
                fail!("node {i}: the listener for {peer:?} closed with {code}, yet no client gives one up and no rule changes");
            }
            Event::ListenRefused { peer, code, .. } | Event::ListenDenied { peer, code, .. } => {
                fail!("node {i}: a listener with {peer:?} refused with {code}: the rules allow it");
            }
            _ => {}
        }
        Ok(())
    }

    /// Keeps, per node and peer, since when its session has been suspended, and counts the
    /// sessions that ended after a suspension as long as the grace (they excuse the end
    /// of their streams).
    fn track_outages(&mut self, i: usize, e: &Event) {
        match e {
            Event::SessionSuspended { peer } => {
                self.suspended_since.entry((i, *peer)).or_insert(self.now);
            }
            Event::SessionResumed { peer }
            | Event::SessionEstablished { peer }
            | Event::SessionClosed { peer, .. } => {
                if matches!(e, Event::SessionClosed { .. }) {
                    // The server's listeners end with the session.
                    self.listening.remove(&(i, *peer));
                }
                let since = self.suspended_since.remove(&(i, *peer));
                let grace = self.nodes[i].config.resume_grace;
                let expired = matches!(
                    e,
                    Event::SessionClosed {
                        code: SessionCode::LinkLost,
                        ..
                    }
                ) && since.is_some_and(|t| self.now - t >= grace);
                if expired {
                    let other = (0..self.nodes.len())
                        .find(|&n| self.net.peer_id(NodeId(n)) == *peer)
                        .expect("a node of the scenario");
                    let pair = if i < self.clients {
                        (i, other)
                    } else {
                        (other, i)
                    };
                    *self.expiries.entry(pair).or_default() += 1;
                }
            }
            _ => {}
        }
    }

    /// An incoming stream: it must be one the scenario opened, to this node, once.
    fn on_incoming(&mut self, i: usize, stream: StreamId) -> Result<(), SimFailure> {
        let Some(&ix) = self.by_id.get(&stream) else {
            fail!("node {i} got a stream nobody opened: {stream}");
        };
        if self.streams[ix].acceptor != i {
            fail!("stream {stream} arrived at the wrong node");
        }
        if self.streams[ix].seen_by_acceptor {
            fail!("stream {stream} arrived twice (a dead stream was reopened)");
        }
        self.streams[ix].seen_by_acceptor = true;
        self.nodes[i].incoming.push(stream);
        Ok(())
    }

    /// A stream closed cleanly at node `i`: both directions must be complete.
    fn on_closed(&mut self, i: usize, stream: StreamId) -> Result<(), SimFailure> {
        let ix = self.index(stream)?;
        let side = self.streams[ix].side_of(i).expect("side");
        let rec = &self.streams[ix];
        let (mine, theirs) = (&rec.flows[side], &rec.flows[1 - side]);
        if !mine.fin_sent {
            fail!("stream {stream} closed at node {i} before it sent FIN");
        }
        if !theirs.eof || theirs.read != theirs.written || !theirs.fin_sent {
            fail!(
                "stream {stream} closed at node {i} having read {} of {} bytes (eof {})",
                theirs.read,
                theirs.written,
                theirs.eof
            );
        }
        self.end_side(ix, side, "closed".into())?;
        Ok(())
    }

    pub(super) fn index(&self, stream: StreamId) -> Result<usize, SimFailure> {
        match self.by_id.get(&stream) {
            Some(&ix) => Ok(ix),
            None => fail!("event for unknown stream {stream}"),
        }
    }

    pub(super) fn end_side(
        &mut self,
        ix: usize,
        side: usize,
        how: String,
    ) -> Result<(), SimFailure> {
        let rec = &mut self.streams[ix];
        if let Some(prev) = &rec.ended[side] {
            fail!(
                "stream {} ended twice on one side: {prev}, then {how}",
                rec.id
            );
        }
        if how == "closed" {
            if rec.ended[1 - side].as_deref() == Some("closed") {
                self.stats.closed_clean += 1;
            }
        } else {
            self.stats.ended_with_reason += 1;
        }
        rec.ended[side] = Some(how);
        Ok(())
    }
}
