//! Streams within the session: opening, receiving, finishing, resetting, and remembering
//! recently freed ones.

use std::time::Instant;

use bytes::Bytes;

use super::count_received_bytes;
use super::{Ctx, Gone, Role, Session, RECENTLY_CLOSED};
use crate::codes::{SessionCode, StreamCode};
use crate::config::EndpointConfig;
use crate::event::Event;
use crate::frame::Frame;
use crate::ids::StreamId;
use crate::policy::{Admission, ServerPolicy};
use crate::stream::{OpenState, Origin, Stream};
use crate::target::Target;

/// The most streams a server may have open toward a client through its listeners.
const MAX_REVERSE_STREAMS: usize = 256;

impl Session {
    pub(crate) fn incoming_streams(&self) -> usize {
        self.streams
            .values()
            .filter(|s| s.origin == Origin::Remote)
            .count()
    }

    pub(crate) fn add_local_stream(
        &mut self,
        now: Instant,
        stream: Stream,
        config: &EndpointConfig,
    ) {
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
    pub(crate) fn remove_stream(
        &mut self,
        id: StreamId,
        gone: Gone,
        ctx: &mut Ctx<'_>,
    ) -> Option<Stream> {
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

    pub(super) fn remember_closed(&mut self, id: StreamId, gone: Gone) {
        if self.recently_closed.len() == RECENTLY_CLOSED {
            self.recently_closed.pop_front();
        }
        self.recently_closed.push_back((id, gone));
    }

    pub(super) fn was_closed(&self, id: &StreamId) -> bool {
        self.gone(id).is_some()
    }

    pub(super) fn gone(&self, id: &StreamId) -> Option<Gone> {
        self.recently_closed
            .iter()
            .rev()
            .find(|(s, _)| s == id)
            .map(|&(_, g)| g)
    }

    pub(super) fn set_gone(&mut self, id: &StreamId, gone: Gone) {
        if let Some(e) = self.recently_closed.iter_mut().rev().find(|(s, _)| s == id) {
            e.1 = gone;
        }
    }

    /// The peer's RST settles session credit: its direction counts as `final_size` here
    /// (whatever reached us), and, if `refund`, ours counts as `peer_received` there.
    pub(super) fn settle(
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

    /// Queues FIN if the application finished and every byte went out; closes the stream
    /// if both directions are then done.
    pub(crate) fn maybe_send_fin(&mut self, id: StreamId, ctx: &mut Ctx<'_>) {
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
    pub(crate) fn maybe_close(&mut self, id: StreamId, ctx: &mut Ctx<'_>) {
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
    pub(crate) fn reset_stream(
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

    /// A frame for a stream we do not have: RST, unless we closed it recently (then the
    /// frame was simply in flight) — never a new connection.
    pub(super) fn unknown_stream(&mut self, stream: StreamId) {
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

    /// A reload changed the server policy: this session is now admitted as `admission`,
    /// and its incoming streams whose targets `policy` no longer allows are reset with
    /// `TargetNotAllowed` (announced, so the application closes their connections).
    /// Returns those streams with their targets.
    pub(crate) fn readmit(
        &mut self,
        admission: Admission,
        policy: &ServerPolicy,
        ctx: &mut Ctx<'_>,
    ) -> Vec<(StreamId, Target)> {
        self.role = Role::Responder(admission);
        let rules = policy.rules(admission);
        let narrowed: Vec<(StreamId, Target)> = self
            .streams
            .values()
            .filter(|s| s.origin == Origin::Remote && rules.allowing(&s.target).is_none())
            .map(|s| (s.id, s.target.clone()))
            .collect();
        for (id, _) in &narrowed {
            self.reset_stream(*id, StreamCode::TargetNotAllowed, true, ctx);
        }
        narrowed
    }

    pub(super) fn on_open(&mut self, stream: StreamId, target: crate::Target, ctx: &mut Ctx<'_>) {
        let peer = self.peer;
        let deny = |this: &mut Self, code: StreamCode, ctx: &mut Ctx<'_>| {
            ctx.events.push_back(Event::StreamDenied {
                stream,
                peer,
                target: target.clone(),
                code,
            });
            this.control.push_back(Frame::OpenErr { stream, code });
        };
        if self.streams.contains_key(&stream)
            || self.was_closed(&stream)
            || ctx.index.contains_key(&stream)
        {
            // Do not disturb the live stream (this peer's, or another peer's: stream ids are
            // random, so a clash is a broken or hostile peer); refuse the duplicate without
            // remembering it.
            return deny(self, StreamCode::DuplicateStream, ctx);
        }
        let decision = match self.role {
            Role::Responder(admission) => self.admit_open(admission, &target, ctx.config),
            // A server's stream goes only where one of our listeners says.
            Role::Initiator => match self.reverse_destination(&target) {
                None => Err(StreamCode::NotAccepting),
                Some(_) if self.incoming_streams() >= MAX_REVERSE_STREAMS => {
                    Err(StreamCode::TooManyStreams)
                }
                Some(to) => Ok(to),
            },
        };
        let target = match decision {
            Ok(t) => t,
            Err(code) => {
                self.remember_closed(stream, Gone::Refused);
                return deny(self, code, ctx);
            }
        };
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

    /// A server's decision on a client's OPEN: the target to connect, or the refusal.
    fn admit_open(
        &self,
        admission: Admission,
        target: &Target,
        config: &EndpointConfig,
    ) -> Result<Target, StreamCode> {
        let policy = config.server.as_ref().ok_or(StreamCode::NotAccepting)?;
        if self.incoming_streams() >= policy.limits.max_streams_per_peer {
            return Err(StreamCode::TooManyStreams);
        }
        if policy.rules(admission).allowing(target).is_none() {
            return Err(StreamCode::TargetNotAllowed);
        }
        Ok(target.clone())
    }

    pub(super) fn on_data(
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
}
