//! One stream's two directions: the send half (bytes the application wrote, kept until they
//! are sent; the session's frame log keeps sent frames until the peer acknowledges them) and
//! the receive half (bytes from the peer, kept until the
//! application reads them). Both are bounded by credit: the send half accepts no more than
//! the peer granted, the receive half refuses bytes past what this side granted.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codes::StreamCode;
use crate::ids::StreamId;
use crate::target::Target;

/// Who opened a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// This endpoint's application opened it.
    Local,
    /// The peer opened it.
    Remote,
}

/// Where a stream is in its opening.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenState {
    /// Local: waiting for OPEN_OK. `open_sent` is false while the session's handshake is
    /// still under way (OPEN goes out when it completes).
    Opening { open_sent: bool },
    /// Remote: waiting for the application to accept or refuse it.
    Incoming,
    /// Open both ways.
    Open,
}

#[derive(Debug, Default)]
pub(crate) struct SendHalf {
    /// Bytes written by the application and not yet sent, in order.
    unsent: VecDeque<Bytes>,
    unsent_len: usize,
    /// Bytes accepted from the application so far (the offset of the next written byte).
    pub written: u64,
    /// Bytes handed to the transport so far (the offset of the next DATA frame).
    pub sent: u64,
    /// Bytes the peer acknowledged.
    pub acked: u64,
    /// The peer's credit: bytes up to this offset may be written.
    pub max_offset: u64,
    /// The application finished its direction.
    pub fin_requested: bool,
    /// FIN was queued for transmission.
    pub fin_sent: bool,
    /// A write came back short; announce `StreamWritable` when credit grows.
    pub want_writable: bool,
}

impl SendHalf {
    /// Bytes the application may still write.
    pub fn credit(&self) -> u64 {
        self.max_offset.saturating_sub(self.written)
    }

    /// Accepts as much of `data` as credit allows; returns how much.
    pub fn write(&mut self, mut data: Bytes) -> usize {
        let n = (self.credit().min(data.len() as u64)) as usize;
        if n == 0 {
            return 0;
        }
        data.truncate(n);
        self.unsent.push_back(data);
        self.unsent_len += n;
        self.written += n as u64;
        n
    }

    pub fn unsent_len(&self) -> usize {
        self.unsent_len
    }

    /// Bytes written and not yet acknowledged by the peer: unsent here, or sent and held
    /// by the session's frame log until acknowledged.
    pub fn unacked(&self) -> u64 {
        self.written - self.acked
    }

    /// Moves up to `max` unsent bytes into `buf` (one copy). Returns the count; the first
    /// byte's offset is `sent` before the call.
    pub fn take_into(&mut self, max: usize, buf: &mut BytesMut) -> usize {
        let mut left = max.min(self.unsent_len);
        let n = left;
        while left > 0 {
            let Some(front) = self.unsent.front_mut() else {
                break;
            };
            let piece = if front.len() <= left {
                self.unsent.pop_front().unwrap_or_default()
            } else {
                front.split_to(left)
            };
            left -= piece.len();
            buf.put_slice(&piece);
        }
        self.unsent_len -= n;
        self.sent += n as u64;
        n
    }

    /// Records the peer's cumulative acknowledgement. An ACK of bytes never sent is a
    /// violation.
    pub fn on_ack(&mut self, ack: u64) -> Result<(), StreamCode> {
        if ack > self.sent {
            return Err(StreamCode::StreamState);
        }
        self.acked = self.acked.max(ack);
        Ok(())
    }

    /// Raises the peer's credit. Returns whether it grew.
    pub fn on_window(&mut self, max_offset: u64) -> bool {
        if max_offset > self.max_offset {
            self.max_offset = max_offset;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct RecvHalf {
    chunks: VecDeque<Bytes>,
    /// Bytes held, unread.
    pub buffered: usize,
    /// Bytes received so far (the next expected offset); this is the ACK we send.
    pub received: u64,
    /// Bytes the application read (or that were discarded).
    pub read: u64,
    /// The credit we granted: the peer may send up to this offset.
    pub max_offset: u64,
    /// The final size, once FIN arrived.
    pub fin_offset: Option<u64>,
    /// The application read the end of the stream.
    pub fin_read: bool,
    /// `StreamReadable` was announced and not yet answered by a read that found nothing.
    pub readable_signaled: bool,
    /// A WINDOW frame for this stream is queued.
    pub window_update_queued: bool,
}

/// What a DATA frame did to the receive half.
pub(crate) struct Received {
    /// Bytes new to this stream (duplicates excluded).
    pub new_bytes: u64,
}

impl RecvHalf {
    pub fn new(window: u64) -> Self {
        RecvHalf {
            max_offset: window,
            ..Default::default()
        }
    }

    /// Accepts a DATA payload at `offset`. Bytes already received are dropped (a
    /// retransmission); a gap, bytes past FIN or past the granted credit are violations.
    pub fn on_data(&mut self, offset: u64, payload: Bytes) -> Result<Received, StreamCode> {
        let end = offset + payload.len() as u64;
        if end > self.max_offset {
            return Err(StreamCode::FlowControl);
        }
        if offset > self.received {
            return Err(StreamCode::StreamState);
        }
        if let Some(fin) = self.fin_offset {
            if end > fin {
                return Err(StreamCode::StreamState);
            }
        }
        if end <= self.received {
            return Ok(Received { new_bytes: 0 });
        }
        let skip = (self.received - offset) as usize;
        let fresh = payload.slice(skip..);
        let n = fresh.len();
        self.chunks.push_back(fresh);
        self.buffered += n;
        self.received = end;
        Ok(Received {
            new_bytes: n as u64,
        })
    }

    /// Records FIN at `offset`; on an ordered transport it follows the last byte exactly.
    pub fn on_fin(&mut self, offset: u64) -> Result<(), StreamCode> {
        match self.fin_offset {
            Some(f) if f == offset => Ok(()),
            Some(_) => Err(StreamCode::StreamState),
            None if offset == self.received => {
                self.fin_offset = Some(offset);
                Ok(())
            }
            None => Err(StreamCode::StreamState),
        }
    }

    /// Takes up to `max` bytes in order.
    pub fn read(&mut self, max: usize) -> Option<Bytes> {
        let front = self.chunks.front_mut()?;
        let chunk = if front.len() <= max {
            self.chunks.pop_front()?
        } else {
            front.split_to(max)
        };
        self.buffered -= chunk.len();
        self.read += chunk.len() as u64;
        Some(chunk)
    }

    /// Whether the peer finished and everything was read.
    pub fn at_end(&self) -> bool {
        self.buffered == 0 && self.fin_offset == Some(self.received)
    }

    /// Whether enough was read since the last grant to be worth a WINDOW frame: when half
    /// the window is free again (as yamux does), so updates cost one frame per half window.
    pub fn wants_window_update(&self, window: u64) -> bool {
        self.fin_offset.is_none() && self.read + window - self.max_offset >= window / 2
    }
}

/// A stream's whole state.
#[derive(Debug)]
pub(crate) struct Stream {
    pub id: StreamId,
    pub target: Target,
    pub origin: Origin,
    pub state: OpenState,
    pub send: SendHalf,
    pub recv: RecvHalf,
    /// The stream is in the session's round-robin queue of streams with bytes to send.
    pub scheduled: bool,
}

impl Stream {
    pub fn new(
        id: StreamId,
        target: Target,
        origin: Origin,
        state: OpenState,
        window: u64,
    ) -> Self {
        Stream {
            id,
            target,
            origin,
            state,
            send: SendHalf::default(),
            recv: RecvHalf::new(window),
            scheduled: false,
        }
    }

    /// Both directions are done: our FIN went out and the peer's FIN was read.
    pub fn is_finished(&self) -> bool {
        self.send.fin_sent && self.recv.fin_read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_half_respects_credit_and_acks() {
        let mut s = SendHalf {
            max_offset: 10,
            ..Default::default()
        };
        assert_eq!(s.write(Bytes::from_static(b"hello world!")), 10);
        assert_eq!(s.write(Bytes::from_static(b"x")), 0);
        let mut buf = BytesMut::new();
        assert_eq!(s.take_into(4, &mut buf), 4);
        assert_eq!(s.sent, 4);
        assert_eq!(s.take_into(100, &mut buf), 6);
        assert_eq!(&buf[..], b"hello worl");
        assert_eq!(s.unacked(), 10);
        s.on_ack(5).unwrap();
        assert_eq!(s.unacked(), 5);
        assert_eq!(s.on_ack(11), Err(StreamCode::StreamState));
        s.on_ack(3).unwrap();
        assert_eq!(s.unacked(), 5, "an older ack changes nothing");
        s.on_ack(10).unwrap();
        assert_eq!(s.unacked(), 0);
        assert!(s.on_window(20));
        assert!(!s.on_window(15));
        assert_eq!(s.credit(), 10);
    }

    #[test]
    fn recv_half_enforces_order_window_and_fin() {
        let mut r = RecvHalf::new(8);
        assert_eq!(
            r.on_data(0, Bytes::from_static(b"123456789")).err(),
            Some(StreamCode::FlowControl)
        );
        assert_eq!(
            r.on_data(0, Bytes::from_static(b"1234")).unwrap().new_bytes,
            4
        );
        assert_eq!(
            r.on_data(5, Bytes::from_static(b"6")).err(),
            Some(StreamCode::StreamState),
            "a gap is a violation"
        );
        // A retransmission overlapping what we have keeps only the new bytes.
        assert_eq!(
            r.on_data(2, Bytes::from_static(b"3456")).unwrap().new_bytes,
            2
        );
        assert_eq!(r.on_fin(5).err(), Some(StreamCode::StreamState));
        r.on_fin(6).unwrap();
        assert_eq!(
            r.on_data(6, Bytes::from_static(b"7")).err(),
            Some(StreamCode::StreamState),
            "no data after FIN"
        );
        assert_eq!(&r.read(3).unwrap()[..], b"123");
        assert_eq!(&r.read(10).unwrap()[..], b"4");
        assert_eq!(&r.read(10).unwrap()[..], b"56");
        assert!(r.at_end());
    }
}
