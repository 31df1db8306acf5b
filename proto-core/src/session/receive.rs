//! Frames in: the dispatch of every frame an established session receives.

use std::time::Instant;

use super::{Ctx, Gone, Session, MAX_ADVISORY_QUEUED};
use crate::codes::{SessionCode, StreamCode};
use crate::event::Event;
use crate::frame::Frame;
use crate::ids::StreamId;
use crate::stream::OpenState;

impl Session {
    /// A frame for this established session, other than the handshake's. `reply`: a frame
    /// we answer with rather than one the peer sent (OPEN_ERR for an undecodable OPEN).
    /// `Err`: the peer broke the protocol.
    pub(crate) fn on_stream_frame(
        &mut self,
        now: Instant,
        frame: Frame,
        reply: bool,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), SessionCode> {
        self.last_recv = now;
        if !frame.is_lossy() {
            // The path carries lossless packets: tells a broken fast path from an outage.
            self.lossy_tx.on_lossless_heard(now);
        }
        if frame.is_sequenced() {
            self.count_received(now);
        }
        match frame {
            frame if reply => {
                self.queue_control(frame);
                Ok(())
            }
            Frame::LossyData {
                packet,
                stream,
                offset,
                payload,
            } => self.on_lossy_data(now, packet, stream, offset, payload, ctx),
            Frame::LossyAck { delay_us, ranges } => self.on_lossy_ack(now, delay_us, &ranges, ctx),
            frame @ (Frame::FlowOpen { .. }
            | Frame::FlowOpenOk { .. }
            | Frame::FlowClose { .. }
            | Frame::Datagram(_)
            | Frame::LossyDatagram(_)) => self.on_flow_frame(now, frame, ctx),
            frame => self.on_frame(frame, ctx),
        }
    }

    /// Queues a frame: sequenced ones after the control frames already queued, the others
    /// (handshake, PING, PONG, ACK) before everything.
    pub(crate) fn queue_control(&mut self, frame: Frame) {
        if frame.is_sequenced() {
            self.control.push_back(frame);
        } else {
            self.urgent.push_back(frame);
        }
    }

    pub(super) fn queue_advisory(&mut self, frame: Frame) {
        if self.advisory_queued < MAX_ADVISORY_QUEUED {
            self.advisory_queued += 1;
            self.queue_control(frame);
        }
    }

    /// Handles a stream or keepalive frame on an established session. Returns a session
    /// code if the frame breaks the session as a whole.
    pub(crate) fn on_frame(&mut self, frame: Frame, ctx: &mut Ctx<'_>) -> Result<(), SessionCode> {
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
            Frame::OpenOk { stream } => self.on_open_ok(stream, ctx),
            Frame::Listen { listener, bind } => self.on_listen(listener, bind, ctx),
            Frame::ListenOk { listener } => self.on_listen_answer(listener, Ok(()), ctx),
            Frame::ListenErr { listener, code } => self.on_listen_answer(listener, Err(code), ctx),
            Frame::OpenErr { stream, code } => self.on_open_err(stream, code, ctx),
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
            } => self.on_fin(stream, offset, ack, ctx),
            Frame::Rst {
                stream,
                code,
                offset,
                received,
            } => self.on_rst(stream, code, offset, received, ctx)?,
            Frame::LossyData { .. }
            | Frame::LossyAck { .. }
            | Frame::FlowOpen { .. }
            | Frame::FlowOpenOk { .. }
            | Frame::FlowClose { .. }
            | Frame::Datagram(_)
            | Frame::LossyDatagram(_) => {
                // `on_stream_frame` routes the fast path's and the flows' frames to their
                // own handlers.
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

    /// OPEN_OK for a stream we opened.
    fn on_open_ok(&mut self, stream: StreamId, ctx: &mut Ctx<'_>) {
        match self.streams.get_mut(&stream) {
            Some(s) if s.state == (OpenState::Opening { open_sent: true }) => {
                s.state = OpenState::Open;
                // Bytes written before OPEN_OK went as DATA (the fast path waits for it):
                // their copies go on the fast path now, rather than behind c-toxcore's
                // lossless packets (uploads started at half the speed of downloads on the
                // WAN bench's broadband path, their first 100-160 kB crawling in the frame
                // log).
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
        }
    }

    /// OPEN_ERR: the server refused a stream we opened.
    fn on_open_err(&mut self, stream: StreamId, code: StreamCode, ctx: &mut Ctx<'_>) {
        match self.streams.get(&stream) {
            Some(s) if s.state == (OpenState::Opening { open_sent: true }) => {
                self.remove_stream(stream, Gone::Settled, ctx);
                ctx.events.push_back(Event::StreamRefused { stream, code });
            }
            Some(_) => self.reset_stream(stream, StreamCode::StreamState, true, ctx),
            None => {}
        }
    }

    /// FIN: the peer's direction ends after `offset` bytes.
    fn on_fin(&mut self, stream: StreamId, offset: u64, ack: u64, ctx: &mut Ctx<'_>) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return self.unknown_stream(stream);
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

    /// RST: the peer aborted the stream; both sides settle its bytes against the session
    /// credit (a peer whose counts break it breaks the session).
    fn on_rst(
        &mut self,
        stream: StreamId,
        code: StreamCode,
        offset: u64,
        received: u64,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), SessionCode> {
        if let Some(s) = self.streams.get(&stream) {
            let (hi, sent) = (s.recv.hi, s.send.sent);
            self.remove_stream(stream, Gone::Settled, ctx);
            ctx.events.push_back(Event::StreamReset {
                stream,
                code,
                remote: true,
            });
            return self.settle(hi, offset, Some((sent, received)), ctx.config);
        }
        match self.gone(&stream) {
            Some(Gone::Closed { sent, received: hi }) => {
                self.set_gone(&stream, Gone::Settled);
                self.settle(hi, offset, Some((sent, received)), ctx.config)
            }
            Some(Gone::Reset { received: hi }) => {
                // Both reset at once: each settles its receive direction.
                self.set_gone(&stream, Gone::Settled);
                self.settle(hi, offset, None, ctx.config)
            }
            _ => Ok(()),
        }
    }
}
