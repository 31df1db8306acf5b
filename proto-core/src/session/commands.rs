//! What the application does to one of the session's streams — write, finish, reset,
//! accept, refuse, read — and the stream's counters. Each returns `Ok` when the session
//! may have something new to send.

use bytes::Bytes;

use super::{Ctx, Gone, Session, MIN_UNSENT};
use crate::codes::StreamCode;
use crate::event::{Event, ReadError, StreamError, StreamStats, WriteError};
use crate::frame::Frame;
use crate::ids::StreamId;
use crate::stream::OpenState;

impl Session {
    /// Writes as much of `data` as the stream's credit allows (and [`Session::unsent_limit`])
    /// and returns how much.
    pub(crate) fn write(&mut self, stream: StreamId, data: Bytes) -> Result<usize, WriteError> {
        let limit = self.unsent_limit();
        let st = self
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
        let n = st.send.write(data, limit);
        if n < want {
            st.send.want_writable = true;
        }
        if n == 0 && want > 0 {
            return Err(WriteError::Blocked);
        }
        self.schedule(stream);
        Ok(n)
    }

    /// The most bytes one stream keeps written but not yet sent. On the fast path, half the
    /// congestion window (about one bandwidth-delay product), at least [`MIN_UNSENT`]:
    /// what the application writes beyond that waits in its own socket, so that a
    /// keystroke written after a bulk transfer on the same connection (ssh multiplexing
    /// a shell beside an scp) waits behind about one round trip of bytes, not behind the
    /// whole 4 MiB window (a third of a second at 100 Mbit/s), as `TCP_NOTSENT_LOWAT` does
    /// for TCP. Over lossless packets, credit alone bounds it: c-toxcore's own queue sets
    /// the pace there.
    pub(super) fn unsent_limit(&self) -> usize {
        if self.lossy_active() {
            (self.lossy_tx.window() / 2).max(MIN_UNSENT)
        } else {
            usize::MAX
        }
    }

    /// Finishes this side's direction: FIN follows the bytes already written.
    pub(crate) fn finish(
        &mut self,
        stream: StreamId,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), StreamError> {
        let st = self
            .streams
            .get_mut(&stream)
            .ok_or(StreamError::UnknownStream)?;
        if st.state == OpenState::Incoming {
            return Err(StreamError::WrongState);
        }
        st.send.fin_requested = true;
        self.maybe_send_fin(stream, ctx);
        Ok(())
    }

    /// Accepts an incoming stream: OPEN_OK goes out, and bytes that arrived with the OPEN
    /// become readable.
    pub(crate) fn accept(
        &mut self,
        stream: StreamId,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), StreamError> {
        let st = self
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
        self.queue_control(Frame::OpenOk { stream });
        Ok(())
    }

    /// Refuses an incoming stream with `code` (OPEN_ERR).
    pub(crate) fn refuse(
        &mut self,
        stream: StreamId,
        code: StreamCode,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), StreamError> {
        if self.streams.get(&stream).map(|st| st.state) != Some(OpenState::Incoming) {
            return Err(StreamError::WrongState);
        }
        self.remove_stream(stream, Gone::Refused, ctx);
        self.queue_control(Frame::OpenErr { stream, code });
        Ok(())
    }

    /// Reads up to `max` bytes (at least one is asked for). `Ok(None)`: the end of the
    /// stream. Reading returns credit to the peer.
    pub(crate) fn read(
        &mut self,
        stream: StreamId,
        max: usize,
        ctx: &mut Ctx<'_>,
    ) -> Result<Option<Bytes>, ReadError> {
        let st = self
            .streams
            .get_mut(&stream)
            .ok_or(ReadError::UnknownStream)?;
        if st.state == OpenState::Incoming {
            return Err(ReadError::NotAccepted);
        }
        if let Some(chunk) = st.recv.read(max.max(1)) {
            let n = chunk.len() as u64;
            self.after_read(stream, n, ctx.config);
            return Ok(Some(chunk));
        }
        if st.recv.at_end() {
            if !st.recv.fin_read {
                st.recv.fin_read = true;
                self.maybe_close(stream, ctx);
            }
            return Ok(None);
        }
        st.recv.readable_signaled = false;
        Err(ReadError::Blocked)
    }

    /// Counters of one stream.
    pub(crate) fn stream_stats(&self, stream: StreamId) -> Option<StreamStats> {
        let st = self.streams.get(&stream)?;
        Some(StreamStats {
            peer: self.peer,
            recv_buffered: st.recv.buffered,
            send_buffered: st.send.unacked() as usize,
            send_unsent: st.send.unsent_len(),
            recv_window: st.recv.window,
            send_window: st.send.max_offset.saturating_sub(st.send.acked),
            received: st.recv.received,
            sent: st.send.sent,
        })
    }
}
