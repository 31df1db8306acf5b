//! One stream's two directions: the send half (bytes the application wrote, kept until they
//! are sent; the session's frame log keeps sent frames until the peer acknowledges them, and
//! the fast path's recovery keeps sent LDATA payloads until their packets are acknowledged)
//! and the receive half (bytes from the peer, kept until the application reads them; bytes
//! that arrive ahead of a gap on the fast path wait in a reorder buffer). Both are bounded by
//! credit: the send half accepts no more than the peer granted, the receive half refuses
//! bytes past what this side granted.

use std::collections::{BTreeMap, VecDeque};

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
    /// Bytes sent on the fast path whose packets are not acknowledged yet (in flight or
    /// waiting to be resent). The stream is not freed before this is zero: a lost LDATA is
    /// resent from the session's recovery state, and the peer may still reset the stream.
    pub lossy_unacked: u64,
}

impl SendHalf {
    /// Bytes the application may still write.
    pub fn credit(&self) -> u64 {
        self.max_offset.saturating_sub(self.written)
    }

    /// Accepts as much of `data` as credit allows, and as keeps the bytes waiting to be
    /// sent within `max_unsent`; returns how much.
    pub fn write(&mut self, mut data: Bytes, max_unsent: usize) -> usize {
        let room = max_unsent.saturating_sub(self.unsent_len) as u64;
        let n = (self.credit().min(room).min(data.len() as u64)) as usize;
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

/// The fewest separate byte ranges a receive half may hold ahead of a gap; a larger window
/// allows one range per [`WINDOW_BYTES_PER_RANGE`] of it. An honest sender's ranges are
/// whole packets (1340 bytes; smaller ones that follow on are joined here), so its ranges
/// stay well inside that bound even with every packet of a full 4 MiB window held past a
/// lost one; a broken or hostile peer cutting its bytes small cannot make us spend more on
/// bookkeeping than a fraction of the window. (A fixed 1024, when windows could grow to
/// 4 MiB, cut honest downloads with 2006: a 1.6 MB congestion window through a drop-tail
/// bottleneck put 1200 packets past the first loss before its resend arrived.)
const MIN_REORDER_RANGES: usize = 1024;
/// Window bytes per range the reorder buffer may hold (see [`MIN_REORDER_RANGES`]).
const WINDOW_BYTES_PER_RANGE: u64 = 256;
/// Held pieces shorter than this are copied out of their packet, so that a piece never
/// keeps much more memory alive than its own bytes (a slice would pin the whole packet),
/// and joined to a small piece they follow on from.
const COPY_BELOW: usize = 1024;
/// The largest piece joining makes.
const MAX_JOINED: usize = crate::frame::MAX_DATA_PAYLOAD;

#[derive(Debug, Default)]
pub(crate) struct RecvHalf {
    chunks: VecDeque<Bytes>,
    /// Bytes past a gap (fast path only), by offset; disjoint.
    reorder: BTreeMap<u64, Bytes>,
    /// Bytes held, unread.
    pub buffered: usize,
    /// Bytes received so far (the next expected offset); this is the ACK we send.
    pub received: u64,
    /// The highest offset received, gaps included: what this stream counts against the
    /// session credit we grant (duplicates and reordering cannot change it).
    pub hi: u64,
    /// Bytes the application read (or that were discarded).
    pub read: u64,
    /// The credit we granted: the peer may send up to this offset.
    pub max_offset: u64,
    /// The credit before our latest grant (WINDOW frame).
    pub prev_max: u64,
    /// Where the reader was when the window last grew: each limit grows it once.
    pub grown_at: u64,
    /// The window: each grant lets the peer send this far past what was read. Starts at
    /// `stream_window` and doubles up to `max_stream_window` (see `credit_starved`).
    pub window: u64,
    /// The final size, once FIN arrived.
    pub fin_offset: Option<u64>,
    /// The application read the end of the stream.
    pub fin_read: bool,
    /// `StreamReadable` was announced and not yet answered by a read that found nothing.
    pub readable_signaled: bool,
    /// A WINDOW frame for this stream is queued.
    pub window_update_queued: bool,
    /// A lossy credit grant (LWINDOW) for this stream is queued.
    pub twin_queued: bool,
}

impl RecvHalf {
    /// Grants credit up to `read + window` if that is more than granted so far; returns
    /// whether it grew. WINDOW and its lossy twin both grant through here, whichever goes
    /// first, so the credit a peer holds is always the latest grant.
    pub fn grant(&mut self) -> bool {
        let max = self.read + self.window;
        if max > self.max_offset {
            self.prev_max = self.max_offset;
            self.max_offset = max;
            true
        } else {
            false
        }
    }
}

/// What a DATA frame did to the receive half.
pub(crate) struct Received {
    /// How far the highest offset received moved: bytes this stream newly counts against
    /// session credit.
    pub new_bytes: u64,
    /// Whether bytes became readable in order.
    pub readable: bool,
}

impl RecvHalf {
    pub fn new(window: u64) -> Self {
        RecvHalf {
            max_offset: window,
            window,
            ..Default::default()
        }
    }

    /// Accepts a DATA payload at `offset`. Bytes already received are dropped (a
    /// retransmission); bytes past FIN or past the granted credit are violations. A gap is a
    /// violation too unless `allow_gaps` (the fast path is on: its packets may arrive out of
    /// order, and bytes past a gap wait in the reorder buffer).
    pub fn on_data(
        &mut self,
        offset: u64,
        payload: Bytes,
        allow_gaps: bool,
    ) -> Result<Received, StreamCode> {
        let end = offset + payload.len() as u64;
        if end > self.max_offset {
            return Err(StreamCode::FlowControl);
        }
        if offset > self.received && !allow_gaps {
            return Err(StreamCode::StreamState);
        }
        if let Some(fin) = self.fin_offset {
            if end > fin {
                return Err(StreamCode::StreamState);
            }
        }
        let (old_hi, old_received) = (self.hi, self.received);
        if end <= self.received {
            return Ok(Received {
                new_bytes: 0,
                readable: false,
            });
        }
        if offset > self.received {
            self.hold(offset, payload)?;
        } else {
            let skip = (self.received - offset) as usize;
            self.append(payload.slice(skip..));
            self.drain_reorder();
        }
        self.hi = self.hi.max(end);
        Ok(Received {
            new_bytes: self.hi - old_hi,
            readable: self.received > old_received,
        })
    }

    fn append(&mut self, fresh: Bytes) {
        let n = fresh.len();
        if n > 0 {
            self.chunks.push_back(fresh);
            self.buffered += n;
            self.received += n as u64;
        }
    }

    /// Keeps the parts of `[offset, offset + len)` not held yet, past a gap.
    fn hold(&mut self, offset: u64, payload: Bytes) -> Result<(), StreamCode> {
        let end = offset + payload.len() as u64;
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        let mut cur = offset;
        let from = self
            .reorder
            .range(..=offset)
            .next_back()
            .map_or(offset, |(&k, _)| k);
        for (&start, held) in self.reorder.range(from..end) {
            let held_end = start + held.len() as u64;
            if held_end <= cur {
                continue;
            }
            if start > cur {
                pieces.push((cur, start));
            }
            cur = held_end;
            if cur >= end {
                break;
            }
        }
        if cur < end {
            pieces.push((cur, end));
        }
        for (a, b) in pieces {
            self.keep(
                a,
                payload.slice((a - offset) as usize..(b - offset) as usize),
            )?;
        }
        Ok(())
    }

    /// Holds one piece past a gap at `at` (the caller checked it overlaps nothing held). A
    /// small piece is copied, and joined to the held piece it follows on from if that one
    /// is small enough too: small packets arriving in order behind a loss make a few
    /// packet-sized ranges, not one range each.
    fn keep(&mut self, at: u64, piece: Bytes) -> Result<(), StreamCode> {
        let len = piece.len();
        let piece = if len < COPY_BELOW {
            if let Some((&start, prev)) = self.reorder.range_mut(..at).next_back() {
                if start + prev.len() as u64 == at && prev.len() + len <= MAX_JOINED {
                    let mut joined = BytesMut::with_capacity(prev.len() + len);
                    joined.extend_from_slice(prev);
                    joined.extend_from_slice(&piece);
                    *prev = joined.freeze();
                    return Ok(());
                }
            }
            Bytes::copy_from_slice(&piece)
        } else {
            piece
        };
        let most = MIN_REORDER_RANGES.max((self.window / WINDOW_BYTES_PER_RANGE) as usize);
        if self.reorder.len() >= most {
            return Err(StreamCode::FlowControl);
        }
        self.reorder.insert(at, piece);
        Ok(())
    }

    /// Separate byte ranges held past a gap.
    #[cfg(test)]
    fn held_ranges(&self) -> usize {
        self.reorder.len()
    }

    /// Moves held bytes that now follow on in order into the readable chunks.
    fn drain_reorder(&mut self) {
        while let Some(entry) = self.reorder.first_entry() {
            let start = *entry.key();
            if start > self.received {
                break;
            }
            let held = entry.remove();
            let end = start + held.len() as u64;
            if end > self.received {
                let skip = (self.received - start) as usize;
                self.append(held.slice(skip..));
            }
        }
    }

    /// Records FIN at `offset`: the final size, which no byte received may pass. On the
    /// ordered path it follows the last byte exactly; on the fast path bytes before it may
    /// still be on their way.
    pub fn on_fin(&mut self, offset: u64, allow_gaps: bool) -> Result<(), StreamCode> {
        let complete = offset == self.received;
        match self.fin_offset {
            Some(f) if f == offset => Ok(()),
            Some(_) => Err(StreamCode::StreamState),
            None if complete || (allow_gaps && offset >= self.hi) => {
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

    /// Whether the credit, not the reader, held the peer back: the reader has read every
    /// byte that arrived, and they end exactly at a limit we granted (the one in force, or
    /// the one before our latest WINDOW), where a sender out of credit has to stop. Then the
    /// window is smaller than the path's bandwidth-delay product: the peer ran out of credit
    /// before our update reached it. A slow reader never gets here (bytes wait for it), nor
    /// does a sender with less to send than the window allows.
    pub fn credit_starved(&self) -> bool {
        self.fin_offset.is_none()
            && self.read > self.grown_at
            && self.read == self.hi
            && (self.read == self.max_offset || self.read == self.prev_max)
    }

    /// Whether enough was read since the last grant to be worth a WINDOW frame: when half
    /// the window is free again (as yamux does), so updates cost one frame per half window.
    pub fn wants_window_update(&self) -> bool {
        self.fin_offset.is_none() && self.read + self.window - self.max_offset >= self.window / 2
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
    /// It was idle and had little to send when it joined the queue (a keystroke, a
    /// request): it went to the front, ahead of the streams with a backlog.
    pub sparse: bool,
    /// Local: the session's count of sequenced frames once its OPEN went out. When the
    /// peer's ACK reaches it, the peer has the OPEN, and the open timeout is the peer's
    /// to answer; before that, a silent path is what holds it.
    pub open_seq: Option<u64>,
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
            sparse: false,
            open_seq: None,
        }
    }

    /// Both directions are done: our FIN went out, the peer's FIN was read, and no byte we
    /// sent on the fast path still waits for its acknowledgement.
    pub fn is_finished(&self) -> bool {
        self.send.fin_sent && self.recv.fin_read && self.send.lossy_unacked == 0
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
        assert_eq!(s.write(Bytes::from_static(b"hello world!"), usize::MAX), 10);
        assert_eq!(s.write(Bytes::from_static(b"x"), usize::MAX), 0);
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
    fn the_unsent_limit_bounds_a_write_as_credit_does() {
        let mut s = SendHalf {
            max_offset: 100,
            ..Default::default()
        };
        assert_eq!(s.write(Bytes::from_static(b"abcdef"), 4), 4);
        assert_eq!(s.write(Bytes::from_static(b"g"), 4), 0);
        let mut buf = BytesMut::new();
        assert_eq!(s.take_into(3, &mut buf), 3);
        assert_eq!(
            s.write(Bytes::from_static(b"ghijk"), 4),
            3,
            "room for 3 again"
        );
    }

    #[test]
    fn recv_half_enforces_order_window_and_fin() {
        let mut r = RecvHalf::new(8);
        assert_eq!(
            r.on_data(0, Bytes::from_static(b"123456789"), false).err(),
            Some(StreamCode::FlowControl)
        );
        assert_eq!(
            r.on_data(0, Bytes::from_static(b"1234"), false)
                .unwrap()
                .new_bytes,
            4
        );
        assert_eq!(
            r.on_data(5, Bytes::from_static(b"6"), false).err(),
            Some(StreamCode::StreamState),
            "a gap is a violation"
        );
        // A retransmission overlapping what we have keeps only the new bytes.
        assert_eq!(
            r.on_data(2, Bytes::from_static(b"3456"), false)
                .unwrap()
                .new_bytes,
            2
        );
        assert_eq!(r.on_fin(5, false).err(), Some(StreamCode::StreamState));
        assert_eq!(
            r.on_fin(7, false).err(),
            Some(StreamCode::StreamState),
            "on the ordered path FIN follows the last byte"
        );
        r.on_fin(6, false).unwrap();
        assert_eq!(
            r.on_data(6, Bytes::from_static(b"7"), false).err(),
            Some(StreamCode::StreamState),
            "no data after FIN"
        );
        assert_eq!(&r.read(3).unwrap()[..], b"123");
        assert_eq!(&r.read(10).unwrap()[..], b"4");
        assert_eq!(&r.read(10).unwrap()[..], b"56");
        assert!(r.at_end());
    }

    #[test]
    fn recv_half_reorders_and_deduplicates_on_the_fast_path() {
        let mut r = RecvHalf::new(64);
        let data: Vec<u8> = (0..40).collect();
        let seg = |a: usize, b: usize| Bytes::copy_from_slice(&data[a..b]);
        // Arrives out of order, with overlaps and duplicates.
        let got = r.on_data(20, seg(20, 30), true).unwrap();
        assert_eq!((got.new_bytes, got.readable), (30, false));
        assert_eq!(r.on_data(25, seg(25, 35), true).unwrap().new_bytes, 5);
        assert_eq!(r.on_data(22, seg(22, 28), true).unwrap().new_bytes, 0);
        r.on_fin(40, true).unwrap();
        assert_eq!(r.on_fin(39, true).err(), Some(StreamCode::StreamState));
        assert_eq!(r.received, 0);
        let got = r.on_data(0, seg(0, 10), true).unwrap();
        assert_eq!((got.new_bytes, got.readable), (0, true));
        assert_eq!(r.received, 10);
        assert!(!r.at_end());
        r.on_data(8, seg(8, 22), true).unwrap();
        assert_eq!(r.received, 35, "the held ranges follow on");
        r.on_data(35, seg(35, 40), true).unwrap();
        let mut out = Vec::new();
        while let Some(c) = r.read(7) {
            out.extend_from_slice(&c);
        }
        assert_eq!(out, data);
        assert!(r.at_end());
        assert_eq!(r.hi, 40);
    }

    #[test]
    fn recv_half_bounds_its_reorder_buffer() {
        let mut r = RecvHalf::new(1 << 20);
        let one = Bytes::from_static(b"x");
        let most = MIN_REORDER_RANGES.max((1 << 20) / WINDOW_BYTES_PER_RANGE as usize);
        for i in 0..most as u64 {
            r.on_data(2 + 2 * i, one.clone(), true).unwrap();
        }
        assert_eq!(
            r.on_data(1 << 19, one, true).err(),
            Some(StreamCode::FlowControl),
            "a peer cutting bytes small cannot grow the bookkeeping without bound"
        );
    }

    #[test]
    fn a_full_window_of_packets_past_one_loss_is_held() {
        // A 4 MiB window's worth of full packets arrives behind the first one, which was
        // lost: every one is held (the bound once cut this at 1024 with 2006), and the
        // resend of the first releases them all in order.
        let window = 4 << 20;
        let seg = crate::frame::MAX_DATA_PAYLOAD;
        let mut r = RecvHalf::new(window);
        let data: Vec<u8> = (0..window).map(|i| (i % 251) as u8).collect();
        let packets: Vec<(u64, Bytes)> = data
            .chunks(seg)
            .enumerate()
            .map(|(i, c)| ((i * seg) as u64, Bytes::copy_from_slice(c)))
            .collect();
        for (off, p) in &packets[1..] {
            r.on_data(*off, p.clone(), true).unwrap();
        }
        assert_eq!(r.received, 0);
        r.on_data(0, packets[0].1.clone(), true).unwrap();
        assert_eq!(r.received, window);
        let mut out = Vec::new();
        while let Some(c) = r.read(usize::MAX) {
            out.extend_from_slice(&c);
        }
        assert_eq!(out, data);
    }

    #[test]
    fn small_pieces_in_order_behind_a_gap_join() {
        // An application writing 100-byte messages: its packets are small. Those behind a
        // loss are joined into packet-sized ranges, so a window of them is held too.
        let mut r = RecvHalf::new(256 * 1024);
        let msg = Bytes::from(vec![7u8; 100]);
        let n = 2000u64; // 200 kB of 100-byte packets past the gap at 0
        for i in 1..=n {
            r.on_data(i * 100, msg.clone(), true).unwrap();
        }
        assert!(
            r.held_ranges() <= (n as usize * 100).div_ceil(1300),
            "{} ranges",
            r.held_ranges()
        );
        r.on_data(0, msg, true).unwrap();
        assert_eq!(r.received, (n + 1) * 100);
        assert_eq!(r.held_ranges(), 0);
    }
}
