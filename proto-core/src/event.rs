//! What the endpoint and its sessions speak with the world: the inputs a runtime feeds in,
//! the outputs it carries out, the events an application sees, the errors of its commands
//! and the counters it may read. Both [`crate::Endpoint`] and the per-peer sessions use
//! these types; neither imports the other's.

use bytes::Bytes;
use std::time::Instant;

use crate::codes::{SessionCode, StatusCode, StreamCode};
use crate::ids::{PeerId, StreamId};
use crate::target::Target;

/// Something that happened outside the core: a transport event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// The Tox friend link to the peer came up.
    PeerOnline(PeerId),
    /// The Tox friend link to the peer went down.
    PeerOffline(PeerId),
    /// A Tox friend request arrived; the endpoint answers with [`Event::FriendRequest`].
    FriendRequest {
        /// Who asks.
        peer: PeerId,
        /// The request's message (it carries the shared-secret proof, if any).
        message: Bytes,
    },
    /// A lossless custom packet arrived from a friend.
    Packet {
        /// The sender (authenticated by Tox).
        peer: PeerId,
        /// The packet, first byte included.
        packet: Bytes,
    },
    /// The transport's send queue for the peer is full: fed right after the transport
    /// refused the packet the endpoint emitted last for this peer. The caller keeps that
    /// packet and sends it first once there is room; until [`Input::SendReady`] the
    /// endpoint emits nothing more for this peer *in that packet's lane* (lossless, first
    /// byte 160..=191, or lossy, 192..=254), since a transport queues the two apart and a
    /// full lossless queue must not stop the fast path's acknowledgements. Backpressure,
    /// never loss.
    SendBlocked(PeerId),
    /// The transport's send queue for the peer has room again.
    SendReady(PeerId),
    /// The friend link's path changed: `direct` when it runs over UDP straight between the
    /// two (lossy packets travel, so the fast path may be used), not when it goes through a
    /// TCP relay. A link that comes up without this input counts as not direct.
    PathChanged {
        /// The friend.
        peer: PeerId,
        /// Whether the link is direct UDP.
        direct: bool,
    },
}

/// What the endpoint wants done. Drain with [`Endpoint::poll_output`] after every input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Output {
    /// Send this packet to the peer as one custom packet: lossless if its first byte is in
    /// 160..=191, lossy if in 192..=254 (the fast path's LDATA and LACK, which the transport
    /// may drop, and should rather drop than queue behind a full send queue).
    Transmit {
        /// The friend to send to.
        peer: PeerId,
        /// The packet, at most the configured `max_packet_size`.
        packet: Bytes,
    },
    /// Tell the application something.
    Event(Event),
    /// Nothing more to do now; call [`Endpoint::handle_timeout`] at this instant.
    Timeout(Instant),
}

/// What the application learns from the endpoint. Every stream ends with exactly one of
/// `StreamRefused`, `StreamReset` or `StreamClosed` (except those the application reset or
/// refused itself, which end at that call).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The endpoint decided a Tox friend request: the transport should accept or refuse it.
    FriendRequest {
        /// Who asked.
        peer: PeerId,
        /// `Ok` to accept, or the code it was refused with.
        decision: Result<(), SessionCode>,
    },
    /// The peer's Tox link came up (seed code 301).
    PeerOnline {
        /// The peer.
        peer: PeerId,
    },
    /// The peer's Tox link went down (seed code 302).
    PeerOffline {
        /// The peer.
        peer: PeerId,
    },
    /// A session completed its handshake; streams may move.
    SessionEstablished {
        /// The peer.
        peer: PeerId,
    },
    /// The Tox link to the peer was lost (or went silent) while a session was up. Its
    /// streams are kept: they resume with nothing lost if the link returns within the
    /// configured `resume_grace`, and end with `SessionClosed` (`LinkLost`) otherwise.
    SessionSuspended {
        /// The peer.
        peer: PeerId,
    },
    /// A suspended session was resumed; its streams carry on where they were.
    SessionResumed {
        /// The peer.
        peer: PeerId,
    },
    /// A session ended (or its handshake was refused); all its streams were reset.
    SessionClosed {
        /// The peer.
        peer: PeerId,
        /// Why.
        code: SessionCode,
        /// Whether the peer said so (HELLO_REJECT / CLOSE) rather than this side deciding.
        remote: bool,
    },
    /// The peer asks for a stream to `target`, and the policy allows it: connect, then
    /// [`Endpoint::accept`] or [`Endpoint::refuse`].
    StreamIncoming {
        /// The new stream.
        stream: StreamId,
        /// Who opened it.
        peer: PeerId,
        /// Where to connect.
        target: Target,
    },
    /// The endpoint refused the peer's OPEN itself (OPEN_ERR went out): the rules do not
    /// allow the target, the peer is at its stream limit, this side serves no streams, or
    /// the stream id was in use. The application never had the stream: this is for its
    /// log and counters.
    StreamDenied {
        /// The refused stream.
        stream: StreamId,
        /// Who asked.
        peer: PeerId,
        /// What it asked for.
        target: Target,
        /// The code sent in OPEN_ERR.
        code: StreamCode,
    },
    /// Server: the client asks it to listen on `bind` (its rules allow it). Listen, then
    /// [`Endpoint::answer_listen`]; for each connection accepted there,
    /// [`Endpoint::open_reverse`]. The listener ends with `ListenClosed`, or with the
    /// session (`SessionClosed`).
    ListenRequested {
        /// The client.
        peer: PeerId,
        /// The client's number for the listener.
        listener: u32,
        /// Where to listen.
        bind: Target,
    },
    /// Server: a listener the application opened ends (the client gave it up, or a reload
    /// no longer allows it): stop listening.
    ListenClosed {
        /// The client.
        peer: PeerId,
        /// The listener.
        listener: u32,
        /// Why (`Cancelled`: the client gave it up; `ListenNotAllowed`: a reload).
        code: StreamCode,
    },
    /// Server: a LISTEN its rules refused (for the log and counters).
    ListenDenied {
        /// The client.
        peer: PeerId,
        /// Where it asked to listen.
        bind: Target,
        /// The code sent back.
        code: StreamCode,
    },
    /// Client: the server listens on `bind` for it.
    ListenReady {
        /// The server.
        peer: PeerId,
        /// Where it listens.
        bind: Target,
    },
    /// Client: the server refused to listen on `bind`, or stopped. The endpoint asks again
    /// in the next session.
    ListenRefused {
        /// The server.
        peer: PeerId,
        /// Where it was asked to listen.
        bind: Target,
        /// Why.
        code: StreamCode,
    },
    /// Server: the client opens UDP flow `flow` to `target` (its `udp:` rules allow it).
    /// Bind a socket toward the target, then [`Endpoint::answer_flow`]; datagrams then
    /// come as `Datagram`. The flow ends with `FlowClosed`, or with the session.
    FlowRequested {
        /// The client.
        peer: PeerId,
        /// The client's number for the flow.
        flow: u32,
        /// Where its datagrams go.
        target: Target,
    },
    /// Server: a UOPEN its rules or limits refused (for the log and counters).
    FlowDenied {
        /// The client.
        peer: PeerId,
        /// Where the flow would have gone.
        target: Target,
        /// The code sent back (`TargetNotAllowed`, `TooManyFlows`, `DuplicateStream`).
        code: StreamCode,
    },
    /// Client: the server opened the flow; datagrams held until now go out.
    FlowOpened {
        /// The server.
        peer: PeerId,
        /// The flow.
        flow: u32,
    },
    /// Client: the server refused the flow (or the peer has no UDP forwarding).
    FlowRefused {
        /// The server.
        peer: PeerId,
        /// The flow.
        flow: u32,
        /// Why.
        code: StreamCode,
    },
    /// A flow ended: closed by the peer (`remote`), idle past the timeout (`FlowIdle`),
    /// or with its session (`SessionClosed`).
    FlowClosed {
        /// The peer.
        peer: PeerId,
        /// The flow.
        flow: u32,
        /// Why.
        code: StreamCode,
        /// Whether the peer ended it.
        remote: bool,
    },
    /// A datagram of an open flow arrived, whole and for the first time.
    Datagram {
        /// The peer.
        peer: PeerId,
        /// The flow.
        flow: u32,
        /// The datagram.
        payload: Bytes,
    },
    /// The peer accepted a stream this side opened (OPEN_OK).
    StreamOpened {
        /// The stream.
        stream: StreamId,
    },
    /// A stream this side opened was refused (OPEN_ERR) or timed out opening; it is gone.
    StreamRefused {
        /// The stream.
        stream: StreamId,
        /// Why.
        code: StreamCode,
    },
    /// Bytes or the end of the stream can be read.
    StreamReadable {
        /// The stream.
        stream: StreamId,
    },
    /// More bytes can be written.
    StreamWritable {
        /// The stream.
        stream: StreamId,
    },
    /// The stream was aborted; it is gone.
    StreamReset {
        /// The stream.
        stream: StreamId,
        /// Why.
        code: StreamCode,
        /// Whether the peer reset it (RST) rather than this side.
        remote: bool,
    },
    /// Both directions finished cleanly; the stream is gone.
    StreamClosed {
        /// The stream.
        stream: StreamId,
    },
}

impl Event {
    /// The seed's status code for this event, where one applies.
    pub fn status_code(&self) -> Option<StatusCode> {
        match self {
            Event::PeerOnline { .. } => Some(StatusCode::PeerOnline),
            Event::PeerOffline { .. } => Some(StatusCode::PeerOffline),
            _ => None,
        }
    }

    /// The stream this event is about, if any.
    pub fn stream(&self) -> Option<StreamId> {
        match self {
            Event::StreamIncoming { stream, .. }
            | Event::StreamOpened { stream }
            | Event::StreamRefused { stream, .. }
            | Event::StreamReadable { stream }
            | Event::StreamWritable { stream }
            | Event::StreamReset { stream, .. }
            | Event::StreamClosed { stream } => Some(*stream),
            _ => None,
        }
    }
}

/// Why a stream could not be opened locally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Opening a stream to oneself makes no sense.
    #[error("cannot open a stream to this endpoint itself")]
    SelfPeer,
    /// No open listener of that number for that peer (reverse forwarding).
    #[error("no such listener for this peer")]
    NotListening,
}

/// Why a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// No such stream (never existed, or already ended).
    #[error("unknown stream")]
    UnknownStream,
    /// No credit now; `StreamWritable` will say when there is.
    #[error("stream has no credit; wait for StreamWritable")]
    Blocked,
    /// The application already finished this direction.
    #[error("stream already finished")]
    Finished,
    /// An incoming stream must be accepted first.
    #[error("stream not accepted yet")]
    NotAccepted,
}

/// Why a datagram was not sent. Each is counted in [`SessionStats`] too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// No such flow (never existed, or already ended).
    #[error("unknown UDP flow")]
    UnknownFlow,
    /// The flow is not open yet on this side (a server answers `FlowRequested` first).
    #[error("UDP flow not open yet")]
    NotOpen,
    /// Larger than a UDP datagram can be.
    #[error("datagram of {0} bytes is larger than {max}", max = crate::flow::MAX_DATAGRAM)]
    TooLarge(usize),
    /// The session's datagram queue (or the flow's, before it opened) is full: the
    /// datagram is dropped, as a full router queue drops it.
    #[error("datagram queue full: dropped")]
    QueueFull,
}

/// Why a read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No such stream (never existed, or already ended).
    #[error("unknown stream")]
    UnknownStream,
    /// Nothing to read now; `StreamReadable` will say when there is.
    #[error("nothing to read yet")]
    Blocked,
    /// An incoming stream must be accepted first.
    #[error("stream not accepted yet")]
    NotAccepted,
}

/// Why a stream command (finish, reset, accept, refuse) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// No such stream (never existed, or already ended).
    #[error("unknown stream")]
    UnknownStream,
    /// The stream is not in a state that allows this (e.g. accepting a local stream).
    #[error("stream is not waiting for this")]
    WrongState,
}

/// Counters of one stream, for tests, metrics and the daemon's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStats {
    /// The peer.
    pub peer: PeerId,
    /// Bytes received and not yet read.
    pub recv_buffered: usize,
    /// Bytes written and not yet acknowledged (unsent plus in flight).
    pub send_buffered: usize,
    /// Bytes written and not yet sent: on the fast path at most half the congestion
    /// window (about one bandwidth-delay product) or 256 KiB, whichever is more.
    pub send_unsent: usize,
    /// The credit the peer granted this stream, as a span from the acknowledged offset.
    pub send_window: u64,
    /// This stream's receive window: `stream_window`, doubled each time the credit, not the
    /// reader, held the peer back, up to `max_stream_window`.
    pub recv_window: u64,
    /// Bytes received on this stream so far.
    pub received: u64,
    /// Bytes sent on this stream so far.
    pub sent: u64,
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// The handshake is done.
    pub established: bool,
    /// Streams open (either direction).
    pub streams: usize,
    /// Stream bytes received and not yet read, across streams (bounded by the budget).
    pub recv_buffered: u64,
    /// Stream bytes sent in this session.
    pub sent: u64,
    /// Stream bytes received in this session.
    pub received: u64,
    /// The link is lost and the session waits for it (within the resume grace).
    pub suspended: bool,
    /// Bytes of sent frames kept until the peer acknowledges them (bounded by the
    /// session window), for a resend after a link outage.
    pub retransmit_buffered: usize,
    /// ACK frames sent in this session (9 bytes each).
    pub acks_sent: u64,
    /// Frames resent after link outages in this session.
    pub frames_resent: u64,
    /// Stream bytes go on the fast path now (negotiated, direct link, lossy packets get
    /// through).
    pub fast_path: bool,
    /// Both sides offered the fast path in the handshake: it runs whenever the link is
    /// direct UDP and lossy packets get through.
    pub fast_path_negotiated: bool,
    /// LDATA packets sent in this session.
    pub lossy_packets_sent: u64,
    /// LDATA packets declared lost (their bytes were sent again).
    pub lossy_packets_lost: u64,
    /// Stream bytes sent again after a loss (on either path).
    pub lossy_bytes_resent: u64,
    /// Probe timeouts: no LACK came for a while, so the oldest packets went again (a
    /// stall on the way, or the tail of a loss; not a loss by itself).
    pub lossy_probe_timeouts: u64,
    /// Fast-path copies made of stream bytes that waited in the frame log as DATA when the
    /// fast path (re)started (their lossless originals were slower).
    pub lossy_shadows: u64,
    /// LDATA packets declared lost that were acknowledged after all (the path reorders):
    /// each raised the reordering thresholds, and an episode of only such losses had its
    /// window reduction undone.
    pub lossy_spurious_losses: u64,
    /// LDATA packets received, and how many of them were duplicates.
    pub lossy_packets_received: u64,
    /// Duplicate LDATA packets received (ignored).
    pub lossy_duplicates: u64,
    /// The fast path's smoothed round trip, once measured.
    pub rtt: Option<std::time::Duration>,
    /// The fast path's congestion window, in bytes.
    pub congestion_window: usize,
    /// The fast path's payload bytes in flight (sent, neither acknowledged nor lost).
    pub bytes_in_flight: usize,
    /// The rate the fast path's pacer lets bytes out, bytes per second, once the round
    /// trip is measured.
    pub pacing_rate: Option<u64>,
    /// The smallest round trip the fast path measured: the path with no queue.
    pub min_rtt: Option<std::time::Duration>,
    /// UDP flows open (or opening).
    pub flows: usize,
    /// Datagrams sent on this session's flows.
    pub datagrams_sent: u64,
    /// Datagrams delivered, whole and once.
    pub datagrams_received: u64,
    /// Datagrams dropped here before sending: the queue was full (a local flood), or the
    /// flow's hold before it opened.
    pub datagrams_dropped: u64,
    /// Datagrams or fragments that arrived and were discarded: repeats, given-up
    /// incomplete datagrams, or for flows no longer open.
    pub datagrams_discarded: u64,
}
