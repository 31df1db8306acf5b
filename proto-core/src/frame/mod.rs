//! The wire codec: every frame of the protocol, encoded into one Tox custom packet.
//!
//! A frame's first byte is its type: an id in `160..=191` for frames sent as lossless
//! custom packets, in `192..=254` for the fast path's frames sent as lossy ones (LDATA,
//! LACK), as c-toxcore requires of each kind. The whole frame is at most
//! [`MAX_PACKET_SIZE`] bytes. Integers are big-endian. Layouts are tabled in PROTOCOL.md.
//!
//! `kind.rs` has the type bytes, `encode.rs` and `decode.rs` the two directions, `batch.rs`
//! BATCH. To add a frame type: its byte and name in `kind.rs`, its variant here (and in
//! [`Frame::kind`]), its layout in `encode.rs` and `decode.rs`, a row in PROTOCOL.md, and
//! the frame in the tests' `arb_frame`.
//!
//! Decoding is total: any byte string yields a [`Frame`] or a [`DecodeError`], never a panic,
//! and allocates nothing beyond the frame (a DATA payload is a zero-copy slice of the packet).

use bytes::{Bytes, BytesMut};

use crate::codes::{SessionCode, StreamCode};
use crate::ids::{SessionId, StreamId};
use crate::target::{Target, TargetError};

mod batch;
mod decode;
mod encode;
pub mod kind;
#[cfg(test)]
pub(crate) mod tests;

pub use batch::{batchable, batched_len, split_batch};
pub use encode::{encode_data_header, encode_lossy_data_header};

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
/// The bytes of a DGRAM or LDGRAM frame before its payload: type, flow, datagram number,
/// fragment index, fragment count.
pub const DATAGRAM_HEADER_LEN: usize = 1 + 4 + 4 + 1 + 1;
/// The length of a shared-secret proof (HMAC-SHA256).
pub const PROOF_LEN: usize = 32;

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

/// One datagram of a UDP flow, or one fragment of it (DGRAM, LDGRAM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// The flow (the client's number for it).
    pub flow: u32,
    /// The datagram's number in the flow's direction: every fragment of a datagram carries
    /// it, and the receiver delivers each number once.
    pub seq: u32,
    /// Which fragment this is, from 0.
    pub index: u8,
    /// How many fragments the datagram has (1: not fragmented); `index < count`.
    pub count: u8,
    /// The fragment's bytes.
    pub payload: Bytes,
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
    /// The client asks the server to listen on `bind` and open a stream toward the client
    /// for each connection it accepts there (reverse forwarding). The server answers
    /// LISTEN_OK or LISTEN_ERR; the listener lives as long as the session.
    Listen {
        /// The client's number for this listener, unique in the session.
        listener: u32,
        /// Where the server listens (`host:port`).
        bind: Target,
    },
    /// The server listens for `listener`.
    ListenOk {
        /// The listener.
        listener: u32,
    },
    /// The server refused `listener`, or (after LISTEN_OK) stopped listening for it.
    ListenErr {
        /// The listener.
        listener: u32,
        /// Why.
        code: StreamCode,
    },
    /// The client opens UDP flow `flow` toward `target` (UOPEN); the server answers
    /// UOPEN_OK or UCLOSE.
    FlowOpen {
        /// The client's number for the flow, unique in the session.
        flow: u32,
        /// Where the server sends the flow's datagrams.
        target: Target,
    },
    /// The server opened the flow (UOPEN_OK): datagrams may go both ways.
    FlowOpenOk {
        /// The flow.
        flow: u32,
    },
    /// The flow was refused, or ended (UCLOSE), by either side.
    FlowClose {
        /// The flow.
        flow: u32,
        /// Why.
        code: StreamCode,
    },
    /// A datagram or a fragment of one in a lossless packet (DGRAM): over a TCP relay.
    Datagram(Fragment),
    /// A datagram or a fragment of one in a lossy packet (LDGRAM): on a direct link.
    LossyDatagram(Fragment),
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

impl Frame {
    /// The frame's name as PROTOCOL.md writes it.
    pub fn name(&self) -> &'static str {
        kind::name(self.kind()).unwrap_or("?")
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
            Frame::Listen { .. } => kind::LISTEN,
            Frame::ListenOk { .. } => kind::LISTEN_OK,
            Frame::ListenErr { .. } => kind::LISTEN_ERR,
            Frame::FlowOpen { .. } => kind::FLOW_OPEN,
            Frame::FlowOpenOk { .. } => kind::FLOW_OPEN_OK,
            Frame::FlowClose { .. } => kind::FLOW_CLOSE,
            Frame::Datagram(_) => kind::DATAGRAM,
            Frame::LossyDatagram(_) => kind::LOSSY_DATAGRAM,
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
        kind::is_sequenced(self.kind())
    }

    /// The stream the frame is about, if it is a stream frame.
    #[cfg(any(test, feature = "testing"))]
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

    /// Encodes the frame into a new packet.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf.freeze()
    }
}
