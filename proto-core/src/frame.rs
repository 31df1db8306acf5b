//! The wire codec: every frame of the protocol, encoded into one Tox custom packet.
//!
//! A frame's first byte is its type: an id in `160..=191` for frames sent as lossless
//! custom packets, in `192..=254` for the fast path's frames sent as lossy ones (LDATA,
//! LACK), as c-toxcore requires of each kind. The whole frame is at most
//! [`MAX_PACKET_SIZE`] bytes. Integers are big-endian. Layouts are tabled in PROTOCOL.md.
//!
//! Decoding is total: any byte string yields a [`Frame`] or a [`DecodeError`], never a panic,
//! and allocates nothing beyond the frame (a DATA payload is a zero-copy slice of the packet).

use bytes::{BufMut, Bytes, BytesMut};

use crate::codes::{SessionCode, StreamCode};
use crate::ids::{SessionId, StreamId};
use crate::target::{Target, TargetError};

/// The largest packet c-toxcore carries as a lossless custom packet (`TOX_MAX_CUSTOM_PACKET_SIZE`).
pub const MAX_PACKET_SIZE: usize = 1373;
/// The lowest first byte of a lossless custom packet.
pub const FIRST_FRAME_ID: u8 = 160;
/// The highest first byte of a lossless custom packet.
pub const LAST_FRAME_ID: u8 = 191;
/// The lowest first byte of a lossy custom packet.
pub const FIRST_LOSSY_ID: u8 = 192;
/// The highest first byte of a lossy custom packet.
pub const LAST_LOSSY_ID: u8 = 254;
/// The bytes of an LDATA frame before its payload: type, packet number, stream, offset.
pub const LOSSY_DATA_HEADER_LEN: usize = 1 + 8 + 16 + 8;
/// The most packet-number ranges one LACK carries (newest first); older ones are implied
/// by earlier LACKs, and a packet whose every acknowledgement was lost is simply resent.
pub const MAX_ACK_RANGES: usize = 16;
/// The bytes of a DATA frame before its payload: type, stream, offset, ack.
pub const DATA_HEADER_LEN: usize = 1 + 16 + 8 + 8;
/// The largest DATA payload that fits a maximum-size packet.
pub const MAX_DATA_PAYLOAD: usize = MAX_PACKET_SIZE - DATA_HEADER_LEN;
/// The length of a shared-secret proof (HMAC-SHA256).
pub const PROOF_LEN: usize = 32;

/// Frame type bytes.
pub mod kind {
    /// HELLO: the initiator's handshake.
    pub const HELLO: u8 = 0xA0;
    /// HELLO_ACK: the handshake accepted.
    pub const HELLO_ACK: u8 = 0xA1;
    /// HELLO_REJECT: the handshake refused, with a code.
    pub const HELLO_REJECT: u8 = 0xA2;
    /// CLOSE: the session ends, with a code.
    pub const CLOSE: u8 = 0xA3;
    /// PING: keepalive request.
    pub const PING: u8 = 0xA4;
    /// PONG: keepalive answer.
    pub const PONG: u8 = 0xA5;
    /// SESSION_WINDOW: per-peer credit.
    pub const SESSION_WINDOW: u8 = 0xA6;
    /// ACK: how many sequenced frames of this session the sender has received.
    pub const ACK: u8 = 0xA7;
    /// OPEN: open a stream to a target.
    pub const OPEN: u8 = 0xA8;
    /// OPEN_OK: the stream's target is connected.
    pub const OPEN_OK: u8 = 0xA9;
    /// OPEN_ERR: the stream was refused, with a code.
    pub const OPEN_ERR: u8 = 0xAA;
    /// DATA: stream bytes at an offset.
    pub const DATA: u8 = 0xAB;
    /// FIN: the sender's direction of the stream is finished.
    pub const FIN: u8 = 0xAC;
    /// RST: the stream is aborted, with a code.
    pub const RST: u8 = 0xAD;
    /// WINDOW: per-stream credit.
    pub const WINDOW: u8 = 0xAE;
    /// RESUME: the initiator resumes a session after a link outage (HELLO's layout).
    pub const RESUME: u8 = 0xAF;
    /// BATCH: several frames of an established session in one lossless packet.
    pub const BATCH: u8 = 0xB0;
    /// LDATA: stream bytes on the fast path, in a lossy packet with a packet number.
    /// (c-toxcore hands lossy ids 192..=199 to toxav's RTP handlers, never to the custom
    /// packet callback, so the fast path's ids start at 200.)
    pub const LOSSY_DATA: u8 = 0xC8;
    /// LACK: which LDATA packet numbers arrived, in a lossy packet.
    pub const LOSSY_ACK: u8 = 0xC9;
    /// LWINDOW: a lossy twin of a WINDOW frame (the same credit, on the lossy lane).
    pub const LOSSY_WINDOW: u8 = 0xCA;
    /// LSESSION_WINDOW: a lossy twin of a SESSION_WINDOW frame.
    pub const LOSSY_SESSION_WINDOW: u8 = 0xCB;
}

/// The initiator's handshake: what it speaks and what it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Lowest protocol version the sender speaks.
    pub min_version: u16,
    /// Highest protocol version the sender speaks.
    pub max_version: u16,
    /// Capability bits the sender supports (see [`crate::Capabilities`]).
    pub capabilities: u64,
    /// The session this handshake starts or resumes.
    pub session: SessionId,
    /// Credit the sender grants each new stream, in bytes.
    pub stream_window: u32,
    /// Credit the sender grants the whole session, in bytes.
    pub session_window: u64,
    /// HMAC proof of a shared secret, if the sender has one.
    pub proof: Option<[u8; PROOF_LEN]>,
}

/// The handshake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloAck {
    /// The protocol version chosen.
    pub version: u16,
    /// Capabilities both sides support.
    pub capabilities: u64,
    /// The session, echoed from HELLO.
    pub session: SessionId,
    /// Whether the session was resumed (the acceptor remembered it).
    pub resumed: bool,
    /// Credit the acceptor grants each new stream, in bytes.
    pub stream_window: u32,
    /// Credit the acceptor grants the whole session, in bytes.
    pub session_window: u64,
}

/// One protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Start or resume a session.
    Hello(Hello),
    /// Resume a session after a link outage: HELLO's layout, naming the session to resume.
    Resume(Hello),
    /// Accept a session.
    HelloAck(HelloAck),
    /// Refuse a session.
    HelloReject {
        /// Why.
        code: SessionCode,
        /// Lowest version the refuser speaks.
        min_version: u16,
        /// Highest version the refuser speaks.
        max_version: u16,
    },
    /// End the session.
    Close {
        /// Why.
        code: SessionCode,
    },
    /// Keepalive request; the peer answers PONG with the same token.
    Ping {
        /// Opaque token.
        token: u64,
    },
    /// Keepalive answer.
    Pong {
        /// The PING's token.
        token: u64,
    },
    /// Acknowledges the peer's sequenced frames: the sender has received this many of them
    /// in this session. The peer may forget those frames; after a link outage it resends
    /// every frame past this count.
    Ack {
        /// Sequenced frames received in this session.
        received: u64,
    },
    /// Raise the session's credit: the peer may send stream bytes up to this cumulative total.
    SessionWindow {
        /// The cumulative byte limit across all streams.
        max: u64,
    },
    /// Open a stream to a target.
    Open {
        /// The new stream.
        stream: StreamId,
        /// Where the server should connect.
        target: Target,
    },
    /// The stream's target is connected.
    OpenOk {
        /// The stream.
        stream: StreamId,
    },
    /// The stream was refused.
    OpenErr {
        /// The stream.
        stream: StreamId,
        /// Why.
        code: StreamCode,
    },
    /// Stream bytes.
    Data {
        /// The stream.
        stream: StreamId,
        /// Offset of the payload's first byte in the sender's direction.
        offset: u64,
        /// Cumulative acknowledgement: bytes of the other direction received so far.
        ack: u64,
        /// The bytes.
        payload: Bytes,
    },
    /// The sender's direction ends after `offset` bytes.
    Fin {
        /// The stream.
        stream: StreamId,
        /// The final size of the sender's direction.
        offset: u64,
        /// Cumulative acknowledgement of the other direction.
        ack: u64,
    },
    /// Abort the stream in both directions.
    Rst {
        /// The stream.
        stream: StreamId,
        /// Why.
        code: StreamCode,
        /// Bytes the sender had sent on the stream: its direction's final size, which the
        /// receiver counts against session credit whatever reached it.
        offset: u64,
        /// The highest offset the sender had received of the other direction: what it
        /// counted against the session credit it grants, and will ever count.
        received: u64,
    },
    /// Stream bytes on the fast path (a lossy packet). Sent only on an open stream whose
    /// peer has it open too; the receiver acknowledges the packet number with LACK.
    LossyData {
        /// The packet number: unique in the session's direction, never reused (a resent
        /// range goes out under a new number).
        packet: u64,
        /// The stream.
        stream: StreamId,
        /// Offset of the payload's first byte in the sender's direction.
        offset: u64,
        /// The bytes.
        payload: Bytes,
    },
    /// Which LDATA packets arrived (a lossy packet).
    LossyAck {
        /// How long the receiver held the newest packet before acknowledging it, in µs.
        delay_us: u32,
        /// Received packet numbers as half-open ranges `[start, end)`, newest first,
        /// disjoint and descending; 1 to [`MAX_ACK_RANGES`] of them.
        ranges: Vec<(u64, u64)>,
    },
    /// Raise the stream's credit: the peer may send up to this offset.
    Window {
        /// The stream.
        stream: StreamId,
        /// The offset limit.
        max_offset: u64,
        /// Cumulative acknowledgement of the other direction.
        ack: u64,
    },
    /// A lossy twin of [`Frame::Window`]: the same credit, sent beside it as a lossy
    /// packet on the fast path. Not sequenced; may be lost, late or repeated (credit only
    /// ever grows, so a stale one changes nothing).
    LossyWindow {
        /// The stream.
        stream: StreamId,
        /// The offset limit.
        max_offset: u64,
        /// Cumulative acknowledgement of the other direction.
        ack: u64,
    },
    /// A lossy twin of [`Frame::SessionWindow`].
    LossySessionWindow {
        /// The new cumulative limit.
        max: u64,
    },
    /// Several frames in one lossless packet, each as it would travel alone, in order:
    /// never a handshake frame, a lossy frame or another BATCH (see [`batchable`]).
    Batch(Vec<Frame>),
}

/// Whether a packet may travel inside a BATCH: a lossless frame of an established session
/// (not HELLO, RESUME, HELLO_ACK, HELLO_REJECT, nor a BATCH).
pub fn batchable(packet: &[u8]) -> bool {
    match packet.first() {
        Some(&k) => {
            (FIRST_FRAME_ID..FIRST_LOSSY_ID).contains(&k)
                && !matches!(
                    k,
                    kind::HELLO | kind::HELLO_ACK | kind::HELLO_REJECT | kind::RESUME | kind::BATCH
                )
        }
        None => false,
    }
}

/// The bytes a frame of `len` bytes takes inside a BATCH (its length prefix and itself).
pub const fn batched_len(len: usize) -> usize {
    2 + len
}

/// Splits a BATCH packet into the packets it carries (zero-copy), checking only its
/// structure: every length fits, none is empty, each is [`batchable`]. Each one is then
/// decoded on its own.
pub fn split_batch(packet: &Bytes) -> Result<Vec<Bytes>, DecodeError> {
    if packet.first() != Some(&kind::BATCH) {
        return Err(DecodeError::InvalidField {
            frame: "BATCH",
            field: "type",
        });
    }
    if packet.len() > MAX_PACKET_SIZE {
        return Err(DecodeError::TooLarge(packet.len()));
    }
    let mut inner = Vec::new();
    let mut pos = 1;
    while pos < packet.len() {
        let len_end = pos + 2;
        if len_end > packet.len() {
            return Err(DecodeError::Truncated("BATCH"));
        }
        let len = usize::from(u16::from_be_bytes([packet[pos], packet[pos + 1]]));
        let end = len_end + len;
        if end > packet.len() {
            return Err(DecodeError::Truncated("BATCH"));
        }
        let p = packet.slice(len_end..end);
        if !batchable(&p) {
            return Err(DecodeError::InvalidField {
                frame: "BATCH",
                field: "frame type",
            });
        }
        inner.push(p);
        pos = end;
    }
    if inner.is_empty() {
        return Err(DecodeError::InvalidField {
            frame: "BATCH",
            field: "frame count",
        });
    }
    Ok(inner)
}

/// Why bytes did not decode to a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The packet is empty.
    #[error("empty packet")]
    Empty,
    /// The packet is longer than a lossless custom packet can be.
    #[error("packet of {0} bytes exceeds the maximum of {MAX_PACKET_SIZE}")]
    TooLarge(usize),
    /// The first byte is outside 160..=254, so it is not a custom packet toxtun sends.
    #[error("first byte {0} is not a custom packet id (160..=191 lossless, 192..=254 lossy)")]
    NotCustomPacket(u8),
    /// The first byte names no frame type this version knows.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The frame ends before its fields do.
    #[error("truncated {0} frame")]
    Truncated(&'static str),
    /// The frame has bytes after its last field.
    #[error("{0} frame has trailing bytes")]
    TrailingBytes(&'static str),
    /// A field holds a value the protocol does not allow.
    #[error("invalid field in {frame} frame: {field}")]
    InvalidField {
        /// The frame type.
        frame: &'static str,
        /// The field.
        field: &'static str,
    },
    /// An OPEN frame's target is malformed; the stream can be refused by ID.
    #[error("OPEN for stream {stream} has an invalid target: {error}")]
    InvalidTarget {
        /// The stream the OPEN named.
        stream: StreamId,
        /// What is wrong with the target.
        error: TargetError,
    },
}

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
    /// The frame's name as PROTOCOL.md writes it.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind()).unwrap_or("?")
    }

    /// The frame's type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => kind::HELLO,
            Frame::Resume(_) => kind::RESUME,
            Frame::HelloAck(_) => kind::HELLO_ACK,
            Frame::HelloReject { .. } => kind::HELLO_REJECT,
            Frame::Close { .. } => kind::CLOSE,
            Frame::Ping { .. } => kind::PING,
            Frame::Pong { .. } => kind::PONG,
            Frame::SessionWindow { .. } => kind::SESSION_WINDOW,
            Frame::Ack { .. } => kind::ACK,
            Frame::Open { .. } => kind::OPEN,
            Frame::OpenOk { .. } => kind::OPEN_OK,
            Frame::OpenErr { .. } => kind::OPEN_ERR,
            Frame::Data { .. } => kind::DATA,
            Frame::Fin { .. } => kind::FIN,
            Frame::Rst { .. } => kind::RST,
            Frame::Window { .. } => kind::WINDOW,
            Frame::LossyData { .. } => kind::LOSSY_DATA,
            Frame::LossyAck { .. } => kind::LOSSY_ACK,
            Frame::LossyWindow { .. } => kind::LOSSY_WINDOW,
            Frame::LossySessionWindow { .. } => kind::LOSSY_SESSION_WINDOW,
            Frame::Batch(_) => kind::BATCH,
        }
    }

    /// Whether the frame travels as a lossy packet (the fast path's LDATA, LACK and credit
    /// twins).
    pub fn is_lossy(&self) -> bool {
        self.kind() >= FIRST_LOSSY_ID
    }

    /// Whether the frame is counted in the session's frame sequence: kept until the peer
    /// acknowledges it (ACK) and resent after a link outage. Handshake frames, CLOSE and the
    /// idempotent PING, PONG and ACK are not: they are never resent.
    pub fn is_sequenced(&self) -> bool {
        is_sequenced_kind(self.kind())
    }

    /// The stream the frame is about, if it is a stream frame.
    pub fn stream(&self) -> Option<StreamId> {
        match self {
            Frame::Open { stream, .. }
            | Frame::OpenOk { stream }
            | Frame::OpenErr { stream, .. }
            | Frame::Data { stream, .. }
            | Frame::Fin { stream, .. }
            | Frame::Rst { stream, .. }
            | Frame::LossyData { stream, .. }
            | Frame::LossyWindow { stream, .. }
            | Frame::Window { stream, .. } => Some(*stream),
            _ => None,
        }
    }

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
        }
    }

    /// Appends the frame's bytes to `buf`.
    ///
    /// The caller keeps frames within [`MAX_PACKET_SIZE`]: every frame but DATA is far smaller,
    /// and DATA payloads are cut to [`MAX_DATA_PAYLOAD`] by the endpoint.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(self.encoded_len());
        buf.put_u8(self.kind());
        match self {
            Frame::Hello(h) | Frame::Resume(h) => {
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
            Frame::Open { stream, target } => {
                let host = target.host.to_wire();
                buf.put_slice(stream.as_bytes());
                // Host names are at most 253 bytes and IP literals shorter still.
                buf.put_u8(host.len() as u8);
                buf.put_slice(host.as_bytes());
                buf.put_u16(target.port);
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
                buf.put_slice(stream.as_bytes());
                buf.put_u64(*offset);
                buf.put_u64(*ack);
                buf.put_slice(payload);
            }
            Frame::Fin {
                stream,
                offset,
                ack,
            } => {
                buf.put_slice(stream.as_bytes());
                buf.put_u64(*offset);
                buf.put_u64(*ack);
            }
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
            Frame::LossyAck { delay_us, ranges } => {
                buf.put_u32(*delay_us);
                buf.put_u8(ranges.len() as u8);
                for &(start, end) in ranges {
                    buf.put_u64(start);
                    buf.put_u64(end);
                }
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
            } => {
                buf.put_slice(stream.as_bytes());
                buf.put_u64(*max_offset);
                buf.put_u64(*ack);
            }
            Frame::Batch(frames) => {
                for f in frames {
                    // Frames fit a packet, so their lengths fit the u16 prefix.
                    buf.put_u16(f.encoded_len() as u16);
                    f.encode(buf);
                }
            }
        }
    }

    /// Encodes the frame into a new packet.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }

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
        let frame = kind_name(first).ok_or(DecodeError::UnknownType(first))?;
        let mut r = Reader {
            buf: packet,
            pos: 1,
            frame,
        };
        let f = match first {
            k @ (kind::HELLO | kind::RESUME) => {
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
                let h = Hello {
                    min_version,
                    max_version,
                    capabilities,
                    session,
                    stream_window,
                    session_window,
                    proof,
                };
                if k == kind::RESUME {
                    Frame::Resume(h)
                } else {
                    Frame::Hello(h)
                }
            }
            kind::HELLO_ACK => {
                let version = r.u16()?;
                let capabilities = r.u64()?;
                let session = SessionId(r.array()?);
                let resumed = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(r.invalid("resumed flag")),
                };
                Frame::HelloAck(HelloAck {
                    version,
                    capabilities,
                    session,
                    resumed,
                    stream_window: r.u32()?,
                    session_window: r.u64()?,
                })
            }
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
            kind::OPEN => {
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
                return Ok(Frame::Open { stream, target });
            }
            kind::OPEN_OK => Frame::OpenOk {
                stream: r.stream()?,
            },
            kind::OPEN_ERR => Frame::OpenErr {
                stream: r.stream()?,
                code: StreamCode::from_code(r.u16()?),
            },
            kind::DATA => {
                let stream = r.stream()?;
                let offset = r.u64()?;
                let ack = r.u64()?;
                let payload = packet.slice(r.pos..);
                if offset.checked_add(payload.len() as u64).is_none() {
                    return Err(r.invalid("offset"));
                }
                return Ok(Frame::Data {
                    stream,
                    offset,
                    ack,
                    payload,
                });
            }
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
            kind::LOSSY_DATA => {
                let number = r.u64()?;
                let stream = r.stream()?;
                let offset = r.u64()?;
                let payload = packet.slice(r.pos..);
                if offset.checked_add(payload.len() as u64).is_none() {
                    return Err(r.invalid("offset"));
                }
                return Ok(Frame::LossyData {
                    packet: number,
                    stream,
                    offset,
                    payload,
                });
            }
            kind::LOSSY_ACK => {
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
                Frame::LossyAck { delay_us, ranges }
            }
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
            kind::LOSSY_SESSION_WINDOW => Frame::LossySessionWindow { max: r.u64()? },
            _ => return Err(DecodeError::UnknownType(first)),
        };
        r.end()?;
        Ok(f)
    }
}

/// Whether frames of type `k` are sequenced (see [`Frame::is_sequenced`]).
pub fn is_sequenced_kind(k: u8) -> bool {
    matches!(k, kind::SESSION_WINDOW | kind::OPEN..=kind::WINDOW)
}

fn kind_name(k: u8) -> Option<&'static str> {
    Some(match k {
        kind::HELLO => "HELLO",
        kind::RESUME => "RESUME",
        kind::HELLO_ACK => "HELLO_ACK",
        kind::HELLO_REJECT => "HELLO_REJECT",
        kind::CLOSE => "CLOSE",
        kind::PING => "PING",
        kind::PONG => "PONG",
        kind::SESSION_WINDOW => "SESSION_WINDOW",
        kind::ACK => "ACK",
        kind::OPEN => "OPEN",
        kind::OPEN_OK => "OPEN_OK",
        kind::OPEN_ERR => "OPEN_ERR",
        kind::DATA => "DATA",
        kind::FIN => "FIN",
        kind::RST => "RST",
        kind::WINDOW => "WINDOW",
        kind::LOSSY_DATA => "LDATA",
        kind::LOSSY_ACK => "LACK",
        kind::LOSSY_WINDOW => "LWINDOW",
        kind::LOSSY_SESSION_WINDOW => "LSESSION_WINDOW",
        kind::BATCH => "BATCH",
        _ => return None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_stream() -> impl Strategy<Value = StreamId> {
        any::<[u8; 16]>().prop_map(StreamId::from_bytes)
    }

    fn arb_target() -> impl Strategy<Value = Target> {
        prop_oneof![
            (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, port)| format!(
                "{}.{}.{}.{}:{port}",
                ip[0], ip[1], ip[2], ip[3]
            )
            .parse()
            .unwrap()),
            (any::<[u16; 8]>(), 1u16..).prop_map(|(g, port)| {
                let ip = core::net::Ipv6Addr::new(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]);
                Target::new(crate::target::Host::parse(&ip.to_string()).unwrap(), port).unwrap()
            }),
            (
                "[a-z]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z][a-z0-9]{0,10}){0,3}",
                1u16..
            )
                .prop_map(|(h, port)| Target::from_wire(&h, port).unwrap()),
        ]
    }

    fn arb_code() -> impl Strategy<Value = u16> {
        any::<u16>()
    }

    pub(crate) fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (
                any::<(u16, u16, u64, [u8; 16], u32, u64)>(),
                proptest::option::of(any::<[u8; 32]>())
            )
                .prop_map(|((a, b, caps, s, sw, ssw), proof)| {
                    let h = Hello {
                        min_version: a.min(b),
                        max_version: a.max(b),
                        capabilities: caps,
                        session: SessionId(s),
                        stream_window: sw,
                        session_window: ssw,
                        proof,
                    };
                    if caps % 2 == 0 {
                        Frame::Hello(h)
                    } else {
                        Frame::Resume(h)
                    }
                }),
            any::<(u16, u64, [u8; 16], bool, u32, u64)>().prop_map(|(v, c, s, r, sw, ssw)| {
                Frame::HelloAck(HelloAck {
                    version: v,
                    capabilities: c,
                    session: SessionId(s),
                    resumed: r,
                    stream_window: sw,
                    session_window: ssw,
                })
            }),
            (arb_code(), any::<u16>(), any::<u16>()).prop_map(|(c, a, b)| Frame::HelloReject {
                code: SessionCode::from_code(c),
                min_version: a,
                max_version: b
            }),
            arb_code().prop_map(|c| Frame::Close {
                code: SessionCode::from_code(c)
            }),
            any::<u64>().prop_map(|token| Frame::Ping { token }),
            any::<u64>().prop_map(|token| Frame::Pong { token }),
            any::<u64>().prop_map(|max| Frame::SessionWindow { max }),
            any::<u64>().prop_map(|received| Frame::Ack { received }),
            (arb_stream(), arb_target())
                .prop_map(|(stream, target)| Frame::Open { stream, target }),
            arb_stream().prop_map(|stream| Frame::OpenOk { stream }),
            (arb_stream(), arb_code()).prop_map(|(stream, c)| Frame::OpenErr {
                stream,
                code: StreamCode::from_code(c)
            }),
            (
                arb_stream(),
                0u64..u64::MAX / 2,
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..=MAX_DATA_PAYLOAD)
            )
                .prop_map(|(stream, offset, ack, p)| Frame::Data {
                    stream,
                    offset,
                    ack,
                    payload: Bytes::from(p)
                }),
            (arb_stream(), any::<u64>(), any::<u64>()).prop_map(|(stream, offset, ack)| {
                Frame::Fin {
                    stream,
                    offset,
                    ack,
                }
            }),
            (arb_stream(), arb_code(), any::<u64>(), any::<u64>()).prop_map(
                |(stream, c, offset, received)| Frame::Rst {
                    stream,
                    code: StreamCode::from_code(c),
                    offset,
                    received,
                }
            ),
            (
                any::<u64>(),
                arb_stream(),
                0u64..u64::MAX / 2,
                proptest::collection::vec(any::<u8>(), 0..=MAX_DATA_PAYLOAD)
            )
                .prop_map(|(packet, stream, offset, p)| Frame::LossyData {
                    packet,
                    stream,
                    offset,
                    payload: Bytes::from(p)
                }),
            (
                any::<u32>(),
                proptest::collection::btree_set(any::<u64>(), 2..=2 * MAX_ACK_RANGES)
            )
                .prop_map(|(delay_us, points)| {
                    // Pair sorted points into disjoint, non-touching ranges, newest first.
                    let mut v: Vec<u64> = points.into_iter().collect();
                    v.truncate(v.len() / 2 * 2);
                    let mut ranges: Vec<(u64, u64)> = v
                        .chunks(2)
                        .map(|c| (c[0], c[1]))
                        .filter(|&(a, b)| a < b && b < u64::MAX)
                        .collect();
                    ranges.dedup_by(|later, earlier| later.0 <= earlier.1);
                    ranges.reverse();
                    if ranges.is_empty() {
                        ranges.push((0, 1));
                    }
                    Frame::LossyAck { delay_us, ranges }
                }),
            (arb_stream(), any::<u64>(), any::<u64>()).prop_map(|(stream, max_offset, ack)| {
                Frame::Window {
                    stream,
                    max_offset,
                    ack,
                }
            }),
            (arb_stream(), any::<u64>(), any::<u64>()).prop_map(|(stream, max_offset, ack)| {
                Frame::LossyWindow {
                    stream,
                    max_offset,
                    ack,
                }
            }),
            any::<u64>().prop_map(|max| Frame::LossySessionWindow { max }),
        ]
    }

    proptest! {
        #[test]
        fn every_frame_round_trips_and_fits(frame in arb_frame()) {
            let bytes = frame.to_bytes();
            prop_assert_eq!(bytes.len(), frame.encoded_len());
            prop_assert!(bytes.len() <= MAX_PACKET_SIZE);
            let ids = if frame.is_lossy() {
                FIRST_LOSSY_ID..=LAST_LOSSY_ID
            } else {
                FIRST_FRAME_ID..=LAST_FRAME_ID
            };
            prop_assert!(ids.contains(&bytes[0]));
            prop_assert_eq!(Frame::decode(&bytes).unwrap(), frame);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = Frame::decode(&Bytes::from(bytes));
        }

        #[test]
        fn frame_prefixes_are_truncated_not_panics(frame in arb_frame(), cut in 0usize..64) {
            let bytes = frame.to_bytes();
            let cut = cut.min(bytes.len());
            let prefix = bytes.slice(..bytes.len() - cut);
            match Frame::decode(&prefix) {
                Ok(f) => {
                    let is_data = matches!(f, Frame::Data { .. } | Frame::LossyData { .. });
                    prop_assert!(cut == 0 || is_data);
                }
                Err(_) => prop_assert!(cut > 0),
            }
        }

        #[test]
        fn lossless_ids_with_garbage_never_panic(
            kind in FIRST_FRAME_ID..=LAST_LOSSY_ID,
            rest in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut v = vec![kind];
            v.extend(rest);
            let _ = Frame::decode(&Bytes::from(v));
        }
    }

    /// The sizes PROTOCOL.md states.
    #[test]
    fn frame_sizes_match_the_protocol_document() {
        let s = StreamId::from_bytes([0; 16]);
        let hello = Hello {
            min_version: 1,
            max_version: 1,
            capabilities: 0,
            session: SessionId([0; 16]),
            stream_window: 0,
            session_window: 0,
            proof: None,
        };
        let sizes = [
            (Frame::Hello(hello.clone()), 42),
            (Frame::Resume(hello.clone()), 42),
            (
                Frame::Hello(Hello {
                    proof: Some([0; 32]),
                    ..hello
                }),
                74,
            ),
            (
                Frame::HelloAck(HelloAck {
                    version: 1,
                    capabilities: 0,
                    session: SessionId([0; 16]),
                    resumed: false,
                    stream_window: 0,
                    session_window: 0,
                }),
                40,
            ),
            (
                Frame::HelloReject {
                    code: SessionCode::Normal,
                    min_version: 1,
                    max_version: 1,
                },
                7,
            ),
            (
                Frame::Close {
                    code: SessionCode::Normal,
                },
                3,
            ),
            (Frame::Ping { token: 0 }, 9),
            (Frame::SessionWindow { max: 0 }, 9),
            (Frame::Ack { received: 0 }, 9),
            (
                Frame::Open {
                    stream: s,
                    target: "a.bc:1".parse().unwrap(),
                },
                24,
            ),
            (Frame::OpenOk { stream: s }, 17),
            (
                Frame::OpenErr {
                    stream: s,
                    code: StreamCode::Cancelled,
                },
                19,
            ),
            (
                Frame::Data {
                    stream: s,
                    offset: 0,
                    ack: 0,
                    payload: Bytes::new(),
                },
                33,
            ),
            (
                Frame::Fin {
                    stream: s,
                    offset: 0,
                    ack: 0,
                },
                33,
            ),
            (
                Frame::Window {
                    stream: s,
                    max_offset: 0,
                    ack: 0,
                },
                33,
            ),
            (
                Frame::Rst {
                    stream: s,
                    code: StreamCode::Cancelled,
                    offset: 0,
                    received: 0,
                },
                35,
            ),
            (
                Frame::LossyData {
                    packet: 0,
                    stream: s,
                    offset: 0,
                    payload: Bytes::new(),
                },
                LOSSY_DATA_HEADER_LEN,
            ),
            (
                Frame::LossyAck {
                    delay_us: 0,
                    ranges: vec![(5, 9), (0, 3)],
                },
                38,
            ),
        ];
        for (f, n) in sizes {
            assert_eq!(f.to_bytes().len(), n, "{}", f.name());
        }
        assert_eq!(MAX_DATA_PAYLOAD, 1340);
        assert_eq!(
            LOSSY_DATA_HEADER_LEN, DATA_HEADER_LEN,
            "the same payload fits both"
        );
    }

    #[test]
    fn lossy_frames_use_lossy_ids_and_check_their_ranges() {
        let ack = |ranges: Vec<(u64, u64)>| Frame::LossyAck {
            delay_us: 7,
            ranges,
        };
        let f = ack(vec![(10, 12), (4, 8)]);
        assert!(f.is_lossy() && !f.is_sequenced());
        assert!((FIRST_LOSSY_ID..=LAST_LOSSY_ID).contains(&f.to_bytes()[0]));
        assert_eq!(Frame::decode(&f.to_bytes()), Ok(f));
        for bad in [
            vec![],
            vec![(4, 4)],
            vec![(4, 8), (10, 12)],
            vec![(8, 12), (4, 8)],
            vec![(0, 1); MAX_ACK_RANGES + 1],
        ] {
            let mut b = BytesMut::new();
            b.put_u8(kind::LOSSY_ACK);
            b.put_u32(0);
            b.put_u8(bad.len() as u8);
            for (x, y) in &bad {
                b.put_u64(*x);
                b.put_u64(*y);
            }
            assert!(
                matches!(
                    Frame::decode(&b.freeze()),
                    Err(DecodeError::InvalidField {
                        field: "ranges" | "range count",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn data_payload_is_zero_copy() {
        let frame = Frame::Data {
            stream: StreamId::from_bytes([1; 16]),
            offset: 5,
            ack: 6,
            payload: Bytes::from(vec![9u8; MAX_DATA_PAYLOAD]),
        };
        let bytes = frame.to_bytes();
        assert_eq!(bytes.len(), MAX_PACKET_SIZE);
        let Frame::Data { payload, .. } = Frame::decode(&bytes).unwrap() else {
            panic!("not data")
        };
        assert_eq!(
            payload.as_ptr(),
            bytes[DATA_HEADER_LEN..].as_ptr(),
            "payload must share the packet's memory"
        );
    }

    #[test]
    fn specific_errors() {
        assert_eq!(Frame::decode(&Bytes::new()), Err(DecodeError::Empty));
        assert_eq!(
            Frame::decode(&Bytes::from_static(&[0x10])),
            Err(DecodeError::NotCustomPacket(0x10))
        );
        assert_eq!(
            Frame::decode(&Bytes::from_static(&[0xBF])),
            Err(DecodeError::UnknownType(0xBF))
        );
        assert_eq!(
            Frame::decode(&Bytes::from_static(&[0xFF])),
            Err(DecodeError::NotCustomPacket(0xFF))
        );
        assert_eq!(
            Frame::decode(&Bytes::from_static(&[0xC0])),
            Err(DecodeError::UnknownType(0xC0))
        );
        assert_eq!(
            Frame::decode(&Bytes::from_static(&[kind::PING, 1, 2])),
            Err(DecodeError::Truncated("PING"))
        );
        assert_eq!(
            Frame::decode(&Bytes::from_static(&[kind::CLOSE, 0, 0, 9])),
            Err(DecodeError::TrailingBytes("CLOSE"))
        );
        assert_eq!(
            Frame::decode(&Bytes::from(vec![kind::DATA; MAX_PACKET_SIZE + 1])),
            Err(DecodeError::TooLarge(MAX_PACKET_SIZE + 1))
        );
        let mut open = vec![kind::OPEN];
        open.extend([3u8; 16]);
        open.push(7);
        open.extend(b"127.0.1");
        open.extend(22u16.to_be_bytes());
        assert_eq!(
            Frame::decode(&Bytes::from(open)),
            Err(DecodeError::InvalidTarget {
                stream: StreamId::from_bytes([3; 16]),
                error: TargetError::NumericName
            })
        );
    }
}
