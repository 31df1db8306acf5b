//! Frames to bytes. Layouts are tabled in PROTOCOL.md; integers are big-endian.

use bytes::{BufMut, BytesMut};

use super::{batched_len, kind, Frame, Hello, DATAGRAM_HEADER_LEN, PROOF_LEN};
use crate::ids::StreamId;

impl Frame {
    /// The encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Frame::Hello(h) | Frame::Resume(h) => {
                2 + 2 + 8 + 16 + 4 + 8 + 1 + h.proof.map_or(0, |p| p.len())
            }
            Frame::HelloAck(_) => 2 + 8 + 16 + 1 + 4 + 8,
            Frame::HelloReject { .. } => 2 + 2 + 2,
            Frame::Close { .. } => 2,
            Frame::Ping { .. }
            | Frame::Pong { .. }
            | Frame::SessionWindow { .. }
            | Frame::LossySessionWindow { .. }
            | Frame::Ack { .. } => 8,
            Frame::Open { target, .. } => 16 + 1 + target.host.to_wire().len() + 2,
            Frame::OpenOk { .. } => 16,
            Frame::OpenErr { .. } => 16 + 2,
            Frame::Data { payload, .. } => 16 + 8 + 8 + payload.len(),
            Frame::Fin { .. } | Frame::Window { .. } | Frame::LossyWindow { .. } => 16 + 8 + 8,
            Frame::Rst { .. } => 16 + 2 + 8 + 8,
            Frame::LossyData { payload, .. } => 8 + 16 + 8 + payload.len(),
            Frame::LossyAck { ranges, .. } => 4 + 1 + 16 * ranges.len(),
            Frame::Batch(frames) => frames.iter().map(|f| batched_len(f.encoded_len())).sum(),
            Frame::Listen { bind, .. } => 4 + 1 + bind.host.to_wire().len() + 2,
            Frame::ListenOk { .. } => 4,
            Frame::ListenErr { .. } => 4 + 2,
            Frame::FlowOpen { target, .. } => 4 + 1 + target.host.to_wire().len() + 2,
            Frame::FlowOpenOk { .. } => 4,
            Frame::FlowClose { .. } => 4 + 2,
            Frame::Datagram(f) | Frame::LossyDatagram(f) => {
                DATAGRAM_HEADER_LEN - 1 + f.payload.len()
            }
        }
    }

    /// Appends the frame's bytes to `buf`.
    ///
    /// The caller keeps frames within [`super::MAX_PACKET_SIZE`]: every frame but DATA is
    /// far smaller, and DATA payloads are cut to [`super::MAX_DATA_PAYLOAD`] by the
    /// endpoint.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(self.encoded_len());
        buf.put_u8(self.kind());
        match self {
            Frame::Hello(h) | Frame::Resume(h) => encode_hello(buf, h),
            Frame::HelloAck(a) => {
                buf.put_u16(a.version);
                buf.put_u64(a.capabilities);
                buf.put_slice(&a.session.0);
                buf.put_u8(u8::from(a.resumed));
                buf.put_u32(a.stream_window);
                buf.put_u64(a.session_window);
            }
            Frame::HelloReject {
                code,
                min_version,
                max_version,
            } => {
                buf.put_u16(code.code());
                buf.put_u16(*min_version);
                buf.put_u16(*max_version);
            }
            Frame::Close { code } => buf.put_u16(code.code()),
            Frame::Ping { token } | Frame::Pong { token } => buf.put_u64(*token),
            Frame::SessionWindow { max } | Frame::LossySessionWindow { max } => buf.put_u64(*max),
            Frame::Ack { received } => buf.put_u64(*received),
            Frame::LossyAck { delay_us, ranges } => {
                buf.put_u32(*delay_us);
                buf.put_u8(ranges.len() as u8);
                for &(start, end) in ranges {
                    buf.put_u64(start);
                    buf.put_u64(end);
                }
            }
            Frame::Listen { listener, bind } => {
                buf.put_u32(*listener);
                put_target(buf, bind);
            }
            Frame::ListenOk { listener } => buf.put_u32(*listener),
            Frame::ListenErr { listener, code } => {
                buf.put_u32(*listener);
                buf.put_u16(code.code());
            }
            Frame::FlowOpen { flow, target } => {
                buf.put_u32(*flow);
                put_target(buf, target);
            }
            Frame::FlowOpenOk { flow } => buf.put_u32(*flow),
            Frame::FlowClose { flow, code } => {
                buf.put_u32(*flow);
                buf.put_u16(code.code());
            }
            Frame::Datagram(f) | Frame::LossyDatagram(f) => {
                buf.put_u32(f.flow);
                buf.put_u32(f.seq);
                buf.put_u8(f.index);
                buf.put_u8(f.count);
                buf.put_slice(&f.payload);
            }
            Frame::Batch(frames) => {
                for f in frames {
                    // Frames fit a packet, so their lengths fit the u16 prefix.
                    buf.put_u16(f.encoded_len() as u16);
                    f.encode(buf);
                }
            }
            Frame::Open { .. }
            | Frame::OpenOk { .. }
            | Frame::OpenErr { .. }
            | Frame::Data { .. }
            | Frame::Fin { .. }
            | Frame::Rst { .. }
            | Frame::LossyData { .. }
            | Frame::Window { .. }
            | Frame::LossyWindow { .. } => self.encode_stream_frame(buf),
        }
    }

    /// The fields of a frame about one stream (after its type byte).
    fn encode_stream_frame(&self, buf: &mut BytesMut) {
        match self {
            Frame::Open { stream, target } => {
                buf.put_slice(stream.as_bytes());
                put_target(buf, target);
            }
            Frame::OpenOk { stream } => buf.put_slice(stream.as_bytes()),
            Frame::OpenErr { stream, code } => {
                buf.put_slice(stream.as_bytes());
                buf.put_u16(code.code());
            }
            Frame::Data {
                stream,
                offset,
                ack,
                payload,
            } => {
                put_stream_offsets(buf, *stream, *offset, *ack);
                buf.put_slice(payload);
            }
            Frame::Fin {
                stream,
                offset,
                ack,
            } => put_stream_offsets(buf, *stream, *offset, *ack),
            Frame::Rst {
                stream,
                code,
                offset,
                received,
            } => {
                buf.put_slice(stream.as_bytes());
                buf.put_u16(code.code());
                buf.put_u64(*offset);
                buf.put_u64(*received);
            }
            Frame::LossyData {
                packet,
                stream,
                offset,
                payload,
            } => {
                buf.put_u64(*packet);
                buf.put_slice(stream.as_bytes());
                buf.put_u64(*offset);
                buf.put_slice(payload);
            }
            Frame::Window {
                stream,
                max_offset,
                ack,
            }
            | Frame::LossyWindow {
                stream,
                max_offset,
                ack,
            } => put_stream_offsets(buf, *stream, *max_offset, *ack),
            // `encode` sends only the frames above here.
            _ => debug_assert!(false, "{} is not a stream frame", self.name()),
        }
    }
}

/// HELLO's and RESUME's fields.
fn encode_hello(buf: &mut BytesMut, h: &Hello) {
    buf.put_u16(h.min_version);
    buf.put_u16(h.max_version);
    buf.put_u64(h.capabilities);
    buf.put_slice(&h.session.0);
    buf.put_u32(h.stream_window);
    buf.put_u64(h.session_window);
    match &h.proof {
        Some(p) => {
            buf.put_u8(PROOF_LEN as u8);
            buf.put_slice(p);
        }
        None => buf.put_u8(0),
    }
}

/// A stream ID and two offsets: DATA's header, FIN, WINDOW and LWINDOW.
#[inline]
fn put_stream_offsets(buf: &mut BytesMut, stream: StreamId, a: u64, b: u64) {
    buf.put_slice(stream.as_bytes());
    buf.put_u64(a);
    buf.put_u64(b);
}

/// Writes an LDATA frame header; the caller appends the payload (one copy, as for DATA).
pub fn encode_lossy_data_header(buf: &mut BytesMut, packet: u64, stream: StreamId, offset: u64) {
    buf.put_u8(kind::LOSSY_DATA);
    buf.put_u64(packet);
    buf.put_slice(stream.as_bytes());
    buf.put_u64(offset);
}

/// Writes a DATA frame header; the caller appends the payload. Used on the hot path so that
/// the payload is copied once, straight from the stream's send buffer into the packet.
pub fn encode_data_header(buf: &mut BytesMut, stream: StreamId, offset: u64, ack: u64) {
    buf.put_u8(kind::DATA);
    buf.put_slice(stream.as_bytes());
    buf.put_u64(offset);
    buf.put_u64(ack);
}

/// A target: its host's length and bytes, then its port.
fn put_target(buf: &mut BytesMut, target: &crate::target::Target) {
    let host = target.host.to_wire();
    // Host names are at most 253 bytes and IP literals shorter still.
    buf.put_u8(host.len() as u8);
    buf.put_slice(host.as_bytes());
    buf.put_u16(target.port);
}
