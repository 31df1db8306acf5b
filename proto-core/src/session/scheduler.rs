//! Packets out: which frame goes next (urgent, control, credit, then stream bytes round
//! robin), batching, and the two lanes.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::{Ctx, Session, ACK_EVERY, MIN_FRAME_LEN, SPARSE_RUN, TURN_BYTES};
use crate::frame::{self, Frame, DATA_HEADER_LEN, LOSSY_DATA_HEADER_LEN};
use crate::ids::StreamId;
use crate::recovery::Chunk;
use crate::stream::OpenState;

impl Session {
    /// Puts a stream with unsent bytes into the round-robin queue: at the back, or, if it
    /// was idle and has at most a turn's bytes to send, at the front (as fq_codel serves
    /// new flows first), so that a keystroke or a request never waits behind another
    /// stream's backlog or resends. After [`SPARSE_RUN`] such packets in a row while others
    /// wait, the next sparse stream goes to the back: a crowd of small writers cannot
    /// starve a bulk stream.
    pub(crate) fn schedule(&mut self, id: StreamId) {
        if self.sched.is_empty() {
            self.sparse_run = 0;
        }
        let run_left = self.sparse_run < SPARSE_RUN;
        if let Some(s) = self.streams.get_mut(&id) {
            if !s.scheduled && s.send.unsent_len() > 0 {
                s.scheduled = true;
                s.sparse = run_left && s.send.unsent_len() <= TURN_BYTES;
                if s.sparse {
                    self.sched.push_front(id);
                } else {
                    self.sched.push_back(id);
                }
            }
        }
    }

    /// The stream at the front of the queue is a sparse one that may go on the fast path:
    /// its bytes go before the fast path's resends.
    fn sparse_first(&self) -> bool {
        self.sched
            .front()
            .and_then(|id| self.streams.get(id))
            .is_some_and(|s| s.sparse && s.state == OpenState::Open)
    }

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
    pub(crate) fn poll_transmit(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<Bytes> {
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

    /// The next single packet (see [`Session::poll_transmit`]): a UDP datagram's when it
    /// is its turn (every other packet at most while streams have bytes waiting), else the
    /// session's own, else a datagram's.
    pub(super) fn poll_packet(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<Bytes> {
        if self.datagram_turn() {
            if let Some(p) = self.poll_datagram() {
                return Some(p);
            }
        }
        match self.poll_session_packet(now, ctx) {
            Some(p) => {
                self.datagram_yielded();
                Some(p)
            }
            None => self.poll_datagram(),
        }
    }

    /// The next packet of the session's own: frames and stream bytes.
    ///
    /// Only packets of a lane that is not blocked come out: a lossless lane that c-toxcore's
    /// congestion control holds back must not stop the LACKs, credit twins and LDATA of the
    /// lossy one (with a hundred streams, their WINDOW updates filled it, and the fast path
    /// stalled for 150 ms at a time waiting for acknowledgements queued behind them).
    fn poll_session_packet(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<Bytes> {
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
        let log_room = (self.log_bytes as u64) < ctx.config.session_window;
        if lossy_lane && lossy && self.lossy_tx.has_lost() && self.lossy_may_send(now) {
            if self.sparse_first() {
                if let Some(p) = self.poll_data(now, ctx, lossy, log_room, (true, false)) {
                    return Some(p);
                }
            }
            if let Some(p) = self.resend_lossy(now) {
                return Some(p);
            }
        }
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

    /// The next new control frame or credit update (the caller logs it: it is sequenced).
    pub(super) fn poll_control(&mut self, ctx: &mut Ctx<'_>) -> Option<Bytes> {
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

    /// New stream bytes, round-robin across streams: LDATA for open streams when the fast
    /// path is on (within window and pacer), DATA in the frame log otherwise (while it has
    /// room). A stream that cannot go now keeps its turn.
    ///
    /// `lossy`: the fast path runs. `lanes`: whether the lossy and the lossless lane may
    /// take a packet now (a stream on the fast path waits for its lane, it does not move to
    /// the other).
    pub(super) fn poll_data(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        lossy: bool,
        log_room: bool,
        (lossy_lane, lossless_lane): (bool, bool),
    ) -> Option<Bytes> {
        let credit = self.send_max.saturating_sub(self.send_total);
        if lossy && (credit == 0 || self.sched.is_empty()) && self.lossy_tx.window_open() {
            // The window has room and nothing fills it: the rate samples of what is in
            // flight say what the application (or the peer's credit) allowed, not the
            // path.
            self.lossy_tx.on_app_limited();
        }
        if credit == 0 {
            return None;
        }
        let max_payload = ctx.config.max_packet_size - DATA_HEADER_LEN;
        let unsent_limit = self.unsent_limit();
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
            announce_room(s, unsent_limit, ctx);
            self.send_total += n as u64;
            let more = s.send.unsent_len() > 0;
            s.scheduled = more;
            self.sparse_run = if s.sparse { self.sparse_run + 1 } else { 0 };
            self.end_turn_step(id, n, more, ctx);
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

impl Session {
    /// Stream `id` sent `n` bytes, and has `more`: it keeps the turn for [`TURN_BYTES`],
    /// so that the receiver gets runs of one stream's packets, which its runtime writes to
    /// the local socket at once, instead of one packet per stream per pass. A stream with
    /// nothing more may send its FIN.
    fn end_turn_step(&mut self, id: StreamId, n: usize, more: bool, ctx: &mut Ctx<'_>) {
        if !more {
            self.turn = None;
            self.maybe_send_fin(id, ctx);
            return;
        }
        let in_turn = match self.turn {
            Some((t, sent)) if t == id => sent + n,
            _ => n,
        };
        if in_turn < TURN_BYTES {
            self.turn = Some((id, in_turn));
            self.sched.push_front(id);
        } else {
            // Its turn is over: it joins the backlog (a sparse stream that kept writing is
            // sparse no longer).
            self.turn = None;
            if let Some(s) = self.streams.get_mut(&id) {
                s.sparse = false;
            }
            self.sched.push_back(id);
        }
    }
}

/// Whether a packet travels as a Tox lossy packet (its first byte says).
fn is_lossy(packet: &[u8]) -> bool {
    crate::transport::PacketKind::is_lossy(packet)
}

/// A write on `s` came back short for the unsent limit, and half of it is free again:
/// `StreamWritable`.
fn announce_room(s: &mut crate::stream::Stream, unsent_limit: usize, ctx: &mut Ctx<'_>) {
    if s.send.want_writable && s.send.credit() > 0 && s.send.unsent_len() <= unsent_limit / 2 {
        s.send.want_writable = false;
        ctx.events
            .push_back(crate::event::Event::StreamWritable { stream: s.id });
    }
}
