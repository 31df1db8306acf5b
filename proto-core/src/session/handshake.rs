//! The handshake, both roles: HELLO and RESUME out, HELLO_ACK in, establishing, suspending
//! and resuming the session.

use std::time::Instant;

use super::{Ctx, Session, State};
use crate::config::{Capabilities, EndpointConfig, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::event::Event;
use crate::frame::{Frame, Hello};
use crate::ids::{SessionId, StreamId};
use crate::recovery::{LossyReceiver, LossySender};
use crate::stream::OpenState;

impl Session {
    /// Starts a handshake: queues HELLO and arms its timeout. A suspended session resumes
    /// instead (RESUME with its own id, its flow state kept); any other starts afresh
    /// with `id`.
    pub(crate) fn send_hello(&mut self, now: Instant, id: SessionId, config: &EndpointConfig) {
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

    pub(super) fn reset_flow(&mut self, config: &EndpointConfig) {
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
    pub(crate) fn suspend(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
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
    pub(crate) fn resume(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
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
        if self.is_initiator() {
            // Listeners and flows added while the session was suspended go out now (those
            // asked before are in the frame log, resent from the peer's count).
            self.ask_listeners(ctx);
            self.ask_flows(ctx);
        }
    }

    /// The handshake completed (either way): take the peer's grants and let streams move.
    pub(crate) fn establish(
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
        self.reverse_negotiated = capabilities.contains(Capabilities::REVERSE);
        self.datagram_negotiated = capabilities.contains(Capabilities::DATAGRAM);
        self.failures = 0;
        self.last_recv = now;
        self.last_ping = None;
        self.peer_stream_window = u64::from(peer_stream_window);
        self.send_max = peer_session_window;
        ctx.events
            .push_back(Event::SessionEstablished { peer: self.peer });
        self.send_pending_opens(ctx);
        if self.is_initiator() {
            self.ask_listeners(ctx);
            self.ask_flows(ctx);
        }
    }

    /// Streams opened while no session was up go out now, in the order they were opened
    /// (their deadlines are in opening order).
    pub(super) fn send_pending_opens(&mut self, ctx: &mut Ctx<'_>) {
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
    pub(crate) fn negotiate_version(h: &Hello) -> Option<u16> {
        let hi = h.max_version.min(PROTOCOL_VERSION);
        let lo = h.min_version.max(MIN_PROTOCOL_VERSION);
        (lo <= hi).then_some(hi)
    }
}
