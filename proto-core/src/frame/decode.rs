//! Bytes to frames. Total: any byte string yields a frame or a [`DecodeError`], never a
//! panic; DATA and LDATA payloads share the packet's memory.

use bytes::Bytes;

use super::{
    kind, split_batch, DecodeError, Fragment, Frame, Hello, HelloAck, FIRST_FRAME_ID,
    LAST_LOSSY_ID, MAX_ACK_RANGES, MAX_PACKET_SIZE, PROOF_LEN,
};
use crate::codes::{SessionCode, StreamCode};
use crate::ids::{SessionId, StreamId};
use crate::target::{Target, TargetError};

/// A cursor over a packet that names its frame in every error.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    frame: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::Truncated(self.frame))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn stream(&mut self) -> Result<StreamId, DecodeError> {
        Ok(StreamId::from_bytes(self.array()?))
    }
    fn end(self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.frame))
        }
    }
    fn invalid(&self, field: &'static str) -> DecodeError {
        DecodeError::InvalidField {
            frame: self.frame,
            field,
        }
    }
}

impl Frame {
    /// Decodes one packet. DATA payloads share the packet's memory.
    pub fn decode(packet: &Bytes) -> Result<Frame, DecodeError> {
        let first = *packet.first().ok_or(DecodeError::Empty)?;
        if packet.len() > MAX_PACKET_SIZE {
            return Err(DecodeError::TooLarge(packet.len()));
        }
        if !(FIRST_FRAME_ID..=LAST_LOSSY_ID).contains(&first) {
            return Err(DecodeError::NotCustomPacket(first));
        }
        if first == kind::BATCH {
            let frames = split_batch(packet)?
                .iter()
                .map(Frame::decode)
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Frame::Batch(frames));
        }
        let frame = kind::name(first).ok_or(DecodeError::UnknownType(first))?;
        let mut r = Reader {
            buf: packet,
            pos: 1,
            frame,
        };
        let f = match first {
            kind::HELLO => Frame::Hello(decode_hello(&mut r)?),
            kind::RESUME => Frame::Resume(decode_hello(&mut r)?),
            kind::HELLO_ACK => decode_hello_ack(&mut r)?,
            kind::HELLO_REJECT => Frame::HelloReject {
                code: SessionCode::from_code(r.u16()?),
                min_version: r.u16()?,
                max_version: r.u16()?,
            },
            kind::CLOSE => Frame::Close {
                code: SessionCode::from_code(r.u16()?),
            },
            kind::PING => Frame::Ping { token: r.u64()? },
            kind::PONG => Frame::Pong { token: r.u64()? },
            kind::SESSION_WINDOW => Frame::SessionWindow { max: r.u64()? },
            kind::ACK => Frame::Ack { received: r.u64()? },
            // These end with a payload or a variable field: they check their own end.
            kind::OPEN => return decode_open(r),
            kind::DATA => return decode_data(packet, r),
            kind::LOSSY_DATA => return decode_lossy_data(packet, r),
            kind::LOSSY_ACK => decode_lossy_ack(&mut r)?,
            kind::LOSSY_SESSION_WINDOW => Frame::LossySessionWindow { max: r.u64()? },
            kind::LISTEN => decode_listen(&mut r)?,
            kind::FLOW_OPEN => decode_flow_open(&mut r)?,
            kind::FLOW_OPEN_OK => Frame::FlowOpenOk { flow: r.u32()? },
            kind::FLOW_CLOSE => Frame::FlowClose {
                flow: r.u32()?,
                code: StreamCode::from_code(r.u16()?),
            },
            kind::DATAGRAM => return decode_fragment(packet, r).map(Frame::Datagram),
            kind::LOSSY_DATAGRAM => return decode_fragment(packet, r).map(Frame::LossyDatagram),
            kind::LISTEN_OK => Frame::ListenOk { listener: r.u32()? },
            kind::LISTEN_ERR => Frame::ListenErr {
                listener: r.u32()?,
                code: StreamCode::from_code(r.u16()?),
            },
            _ => decode_stream_frame(first, &mut r)?,
        };
        r.end()?;
        Ok(f)
    }
}

/// HELLO's and RESUME's fields.
fn decode_hello(r: &mut Reader<'_>) -> Result<Hello, DecodeError> {
    let min_version = r.u16()?;
    let max_version = r.u16()?;
    let capabilities = r.u64()?;
    let session = SessionId(r.array()?);
    let stream_window = r.u32()?;
    let session_window = r.u64()?;
    let proof = match r.u8()? {
        0 => None,
        n if n as usize == PROOF_LEN => Some(r.array()?),
        _ => return Err(r.invalid("proof length")),
    };
    if min_version > max_version {
        return Err(r.invalid("version range"));
    }
    Ok(Hello {
        min_version,
        max_version,
        capabilities,
        session,
        stream_window,
        session_window,
        proof,
    })
}

fn decode_hello_ack(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    let version = r.u16()?;
    let capabilities = r.u64()?;
    let session = SessionId(r.array()?);
    let resumed = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err(r.invalid("resumed flag")),
    };
    Ok(Frame::HelloAck(HelloAck {
        version,
        capabilities,
        session,
        resumed,
        stream_window: r.u32()?,
        session_window: r.u64()?,
    }))
}

/// OPEN: a malformed target is its own error, naming the stream, so that the stream can
/// be refused rather than the session ended.
fn decode_open(mut r: Reader<'_>) -> Result<Frame, DecodeError> {
    let stream = r.stream()?;
    let len = r.u8()? as usize;
    let host = r.take(len)?;
    let port = r.u16()?;
    r.end()?;
    let host = core::str::from_utf8(host).map_err(|_| DecodeError::InvalidTarget {
        stream,
        error: TargetError::InvalidHost,
    })?;
    let target = Target::from_wire(host, port)
        .map_err(|error| DecodeError::InvalidTarget { stream, error })?;
    Ok(Frame::Open { stream, target })
}

/// LISTEN: a malformed bind address ends the session, as any malformed frame does (a
/// client that sends one is broken; there is no stream to refuse).
fn decode_listen(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    let listener = r.u32()?;
    let len = r.u8()? as usize;
    let host = r.take(len)?;
    let port = r.u16()?;
    let host = core::str::from_utf8(host).map_err(|_| r.invalid("bind"))?;
    let bind = Target::from_wire(host, port).map_err(|_| r.invalid("bind"))?;
    Ok(Frame::Listen { listener, bind })
}

/// UOPEN: like LISTEN, a malformed target ends the session (a client checks its targets
/// before it sends them).
fn decode_flow_open(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    let flow = r.u32()?;
    let len = r.u8()? as usize;
    let host = r.take(len)?;
    let port = r.u16()?;
    let host = core::str::from_utf8(host).map_err(|_| r.invalid("target"))?;
    let target = Target::from_wire(host, port).map_err(|_| r.invalid("target"))?;
    Ok(Frame::FlowOpen { flow, target })
}

/// DGRAM and LDGRAM: the payload shares the packet's memory.
fn decode_fragment(packet: &Bytes, mut r: Reader<'_>) -> Result<Fragment, DecodeError> {
    let flow = r.u32()?;
    let seq = r.u32()?;
    let index = r.u8()?;
    let count = r.u8()?;
    if count == 0 || index >= count {
        return Err(r.invalid("fragment"));
    }
    Ok(Fragment {
        flow,
        seq,
        index,
        count,
        payload: packet.slice(r.pos..),
    })
}

fn decode_data(packet: &Bytes, mut r: Reader<'_>) -> Result<Frame, DecodeError> {
    let stream = r.stream()?;
    let offset = r.u64()?;
    let ack = r.u64()?;
    let payload = packet.slice(r.pos..);
    if offset.checked_add(payload.len() as u64).is_none() {
        return Err(r.invalid("offset"));
    }
    Ok(Frame::Data {
        stream,
        offset,
        ack,
        payload,
    })
}

fn decode_lossy_data(packet: &Bytes, mut r: Reader<'_>) -> Result<Frame, DecodeError> {
    let number = r.u64()?;
    let stream = r.stream()?;
    let offset = r.u64()?;
    let payload = packet.slice(r.pos..);
    if offset.checked_add(payload.len() as u64).is_none() {
        return Err(r.invalid("offset"));
    }
    Ok(Frame::LossyData {
        packet: number,
        stream,
        offset,
        payload,
    })
}

fn decode_lossy_ack(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    let delay_us = r.u32()?;
    let n = r.u8()? as usize;
    if n == 0 || n > MAX_ACK_RANGES {
        return Err(r.invalid("range count"));
    }
    let mut ranges = Vec::with_capacity(n);
    let mut floor = u64::MAX;
    for _ in 0..n {
        let (start, end) = (r.u64()?, r.u64()?);
        // Non-empty, descending, disjoint (and not merely touching).
        if start >= end || end >= floor {
            return Err(r.invalid("ranges"));
        }
        floor = start;
        ranges.push((start, end));
    }
    Ok(Frame::LossyAck { delay_us, ranges })
}

/// The fixed-size frames about one stream.
fn decode_stream_frame(k: u8, r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
    Ok(match k {
        kind::OPEN_OK => Frame::OpenOk {
            stream: r.stream()?,
        },
        kind::OPEN_ERR => Frame::OpenErr {
            stream: r.stream()?,
            code: StreamCode::from_code(r.u16()?),
        },
        kind::FIN => Frame::Fin {
            stream: r.stream()?,
            offset: r.u64()?,
            ack: r.u64()?,
        },
        kind::RST => Frame::Rst {
            stream: r.stream()?,
            code: StreamCode::from_code(r.u16()?),
            offset: r.u64()?,
            received: r.u64()?,
        },
        kind::WINDOW => Frame::Window {
            stream: r.stream()?,
            max_offset: r.u64()?,
            ack: r.u64()?,
        },
        kind::LOSSY_WINDOW => Frame::LossyWindow {
            stream: r.stream()?,
            max_offset: r.u64()?,
            ack: r.u64()?,
        },
        _ => return Err(DecodeError::UnknownType(k)),
    })
}
