//! The fast path's side of the session: LDATA and LACK in, lost payloads out again (on the
//! fast path or as DATA), shadows of logged DATA when it (re)starts, and the lossy lane's
//! packets.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::count_received_bytes;
use super::{Ctx, Session};
use crate::codes::{SessionCode, StreamCode};
use crate::frame::{self, Frame, DATA_HEADER_LEN, LOSSY_DATA_HEADER_LEN};
use crate::ids::StreamId;
use crate::recovery::Chunk;
use crate::stream::OpenState;

impl Session {
    /// Whether stream bytes go on the fast path now: both sides speak it, lossy packets got
    /// through so far, and the session is up. The link may be direct UDP or a TCP relay:
    /// c-toxcore carries lossy packets through its relays too, and on a relay its own
    /// congestion control for lossless packets moved 6 kB/s on a 50 ms path where the fast
    /// path moves 0.8–2 MB/s (the WAN bench's relay-only profile).
    pub(crate) fn lossy_active(&self) -> bool {
        self.lossy_negotiated
            && !self.lossy_tx.is_broken()
            && self.is_established()
            && !self.awaiting_peer_count
    }

    /// The transport reports whether the link is direct UDP or goes through a TCP relay.
    /// Either way the path changed: what was in flight on the fast path is sent again on
    /// the new one, whose window and round trip start afresh; a fast path that was declared
    /// broken on the old path is tried again.
    pub(crate) fn set_path(&mut self, direct: bool) {
        if direct == self.path_direct {
            return;
        }
        self.path_direct = direct;
        self.lossy_tx.new_path();
        self.shadow_due = true;
        self.pace_until = None;
    }

    /// LDATA: stream bytes in a lossy packet. The packet number is recorded (and
    /// acknowledged) whatever becomes of the bytes: a packet is either used or useless,
    /// never worth sending again.
    pub(crate) fn on_lossy_data(
        &mut self,
        now: Instant,
        packet: u64,
        stream: StreamId,
        offset: u64,
        payload: Bytes,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), SessionCode> {
        if !self.lossy_negotiated {
            return Err(SessionCode::ProtocolViolation);
        }
        if !self.lossy_rx.on_packet(now, packet) {
            return Ok(()); // a duplicate packet
        }
        let Some(s) = self.streams.get_mut(&stream) else {
            if self.gone(&stream).is_none() {
                self.unknown_stream(stream);
            }
            return Ok(()); // freed: settled by RST counts, or a late duplicate
        };
        // The sender uses the fast path only on a stream open at both ends; its bytes may
        // overtake our OPEN_OK's arrival at the opener, never the OPEN at the acceptor.
        if !matches!(
            s.state,
            OpenState::Open | OpenState::Opening { open_sent: true }
        ) {
            self.reset_stream(stream, StreamCode::StreamState, true, ctx);
            return Ok(());
        }
        let received = match s.recv.on_data(offset, payload, true) {
            Ok(r) => r,
            Err(code) => {
                self.reset_stream(stream, code, true, ctx);
                return Ok(());
            }
        };
        count_received_bytes(&mut self.recv_total, self.recv_max, s, received, ctx.events)
    }

    /// LACK: packets of ours that arrived. Their bytes are acknowledged; streams waiting
    /// only for that are freed.
    pub(crate) fn on_lossy_ack(
        &mut self,
        now: Instant,
        delay_us: u32,
        ranges: &[(u64, u64)],
        ctx: &mut Ctx<'_>,
    ) -> Result<(), SessionCode> {
        if !self.lossy_negotiated {
            return Err(SessionCode::ProtocolViolation);
        }
        let delay = Duration::from_micros(u64::from(delay_us));
        let acked = self
            .lossy_tx
            .on_ack(now, ranges, delay)
            .map_err(|()| SessionCode::ProtocolViolation)?;
        for (id, n) in acked.streams {
            if let Some(s) = self.streams.get_mut(&id) {
                s.send.lossy_unacked = s.send.lossy_unacked.saturating_sub(n);
                if s.send.lossy_unacked == 0 {
                    self.maybe_close(id, ctx);
                }
            }
        }
        Ok(())
    }

    /// Whether the congestion window and the pacer let one more LDATA out now.
    pub(super) fn lossy_may_send(&mut self, now: Instant) -> bool {
        if self.lossy_tx.probe_due() {
            return true; // a probe timeout's packet goes whatever the window says
        }
        if !self.lossy_tx.window_open() {
            return false; // an acknowledgement makes room
        }
        match self.lossy_tx.pacing_delay(now, crate::recovery::SEGMENT) {
            None => {
                self.pace_until = None;
                true
            }
            Some(t) => {
                self.pace_until = Some(t);
                false
            }
        }
    }

    /// The fast path (re)started while stream bytes sent as DATA, when it was away, still
    /// wait in the frame log for the peer's acknowledgement: each gets a copy on the fast
    /// path (a shadow), oldest first. Those DATA frames travel in c-toxcore's lossless
    /// packets, which after an outage crawl (its congestion control starts again from a few
    /// packets a second); the receiver, waiting for them in order, would hold everything
    /// past them and grant no credit meanwhile: a download once stood still for 28 s after
    /// an 8 s outage, its bytes in the log. The receiver takes each byte once, whichever
    /// copy comes first.
    pub(super) fn shadow_logged_data(&mut self) {
        self.shadow_due = false;
        let shadows: Vec<Chunk> = self
            .log
            .iter()
            .filter(|p| p.first() == Some(&frame::kind::DATA) && p.len() > DATA_HEADER_LEN)
            .filter_map(|p| match Frame::decode(p) {
                // Only streams open at both ends take the fast path (a stream still opening
                // has its OPEN in the log too, and LDATA must not overtake it).
                Ok(Frame::Data { stream, offset, .. })
                    if self
                        .streams
                        .get(&stream)
                        .is_some_and(|s| s.state == OpenState::Open) =>
                {
                    Some(Chunk {
                        stream,
                        offset,
                        payload: p.slice(DATA_HEADER_LEN..),
                        order: 0, // older than anything the new fast path sends
                        shadow: true,
                    })
                }
                _ => None,
            })
            .collect();
        self.lossy_tx.push_shadows(shadows);
    }

    /// A lost fast-path payload, sent again under a new packet number.
    pub(super) fn resend_lossy(&mut self, now: Instant) -> Option<Bytes> {
        while let Some(c) = self.lossy_tx.pop_lost() {
            if !self.streams.contains_key(&c.stream) {
                continue;
            }
            let mut buf = BytesMut::with_capacity(LOSSY_DATA_HEADER_LEN + c.payload.len());
            frame::encode_lossy_data_header(
                &mut buf,
                self.lossy_tx.peek_number(),
                c.stream,
                c.offset,
            );
            buf.extend_from_slice(&c.payload);
            self.lossy_tx.on_sent(now, c, true);
            return Some(buf.freeze());
        }
        None
    }

    /// A lost fast-path payload, sent as ordinary DATA now that the fast path is off: the
    /// frame log carries it from here, and the stream no longer waits for its LACK.
    pub(super) fn resend_lossless(&mut self, ctx: &mut Ctx<'_>) -> Option<Bytes> {
        while let Some(c) = self.lossy_tx.pop_lost() {
            if c.shadow {
                continue; // its original is in the log
            }
            let Some(s) = self.streams.get_mut(&c.stream) else {
                continue;
            };
            let n = c.payload.len() as u64;
            let mut buf = BytesMut::with_capacity(DATA_HEADER_LEN + c.payload.len());
            frame::encode_data_header(&mut buf, c.stream, c.offset, s.recv.received);
            buf.extend_from_slice(&c.payload);
            self.lossy_tx.on_resent_lossless(n);
            s.send.lossy_unacked = s.send.lossy_unacked.saturating_sub(n);
            if s.send.lossy_unacked == 0 {
                self.maybe_close(c.stream, ctx);
            }
            return Some(buf.freeze());
        }
        None
    }

    /// The lossy packets due while the lossless lane is blocked (if the lossy one is not):
    /// credit twins, LACK, lost payloads again, and LDATA.
    pub(super) fn poll_lossy_lane(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        lossy_lane: bool,
    ) -> Option<Bytes> {
        if !lossy_lane || !self.is_established() {
            return None;
        }
        if let Some(p) = self.poll_lossy_control(now, ctx) {
            return Some(p);
        }
        if self.awaiting_peer_count || !self.lossy_active() {
            return None;
        }
        if self.shadow_due {
            self.shadow_logged_data();
        }
        if self.lossy_tx.has_lost() && self.lossy_may_send(now) {
            if let Some(p) = self.resend_lossy(now) {
                return Some(p);
            }
        }
        self.poll_data(now, ctx, true, false, (true, false))
    }

    /// A credit twin or a LACK, if one is due.
    pub(super) fn poll_lossy_control(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<Bytes> {
        if let Some(p) = self.poll_credit_twin(ctx) {
            return Some(p);
        }
        if self.lossy_rx.wants_ack() {
            let (delay_us, ranges) = self.lossy_rx.take_ack(now);
            return Some(Frame::LossyAck { delay_us, ranges }.to_bytes());
        }
        None
    }

    /// A credit grant on the lossy lane (LSESSION_WINDOW first, then LWINDOW), if one is
    /// due and the fast path still runs.
    pub(super) fn poll_credit_twin(&mut self, ctx: &mut Ctx<'_>) -> Option<Bytes> {
        if !self.twins_on() {
            // The lossy lane is gone: the lossless originals carry the grants.
            for id in std::mem::take(&mut self.twin_updates) {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.recv.twin_queued = false;
                }
            }
            self.session_twin_due = false;
            return None;
        }
        if std::mem::take(&mut self.session_twin_due) {
            self.grant_session(ctx.config);
            return Some(Frame::LossySessionWindow { max: self.recv_max }.to_bytes());
        }
        while let Some(id) = self.twin_updates.pop_front() {
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.recv.twin_queued = false;
            s.recv.grant();
            return Some(
                Frame::LossyWindow {
                    stream: id,
                    max_offset: s.recv.max_offset,
                    ack: s.recv.received,
                }
                .to_bytes(),
            );
        }
        None
    }
}
