//! The transport interface: what toxtun needs from a Tox-like network, implemented by the
//! in-memory mock (`toxtun-transport-mock`) and the c-toxcore adapter
//! (`toxtun-transport-tox`), and driven by the runtime (`toxtun-tokio`).
//!
//! The [`crate::Endpoint`] never uses this trait: the runtime moves values between the two
//! ([`TransportEvent::into_input`] one way, [`crate::Output::Transmit`] the other). The trait
//! is here only because every transport and runtime already depends on this crate; it does
//! no I/O itself. Its one asynchronous method uses `core::task` and no runtime, so
//! transports work under tokio, smol or a hand-written executor alike.
//!
//! The seed's status codes map onto it: adding a friend gives 101 / 103 / 104 or 102,
//! sending fails with 202 / 203 / 204, friend status is 301 / 302, and the node's own
//! connection to the Tox network is 401 / 402.

use core::fmt;
use core::task::{Context, Poll};

use bytes::Bytes;

use crate::codes::StatusCode;
use crate::event::Input;
use crate::frame::{FIRST_FRAME_ID, FIRST_LOSSY_ID, LAST_FRAME_ID, LAST_LOSSY_ID};
use crate::ids::{PeerId, ToxId};

/// Which of c-toxcore's two kinds of custom packet a packet travels as, by its first byte:
/// 160..=191 lossless, 192..=254 lossy. Every transport sends each packet as its kind says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// A lossless custom packet: delivered in order, or the friend link drops.
    Lossless,
    /// A lossy custom packet: may be lost, late or reordered (the fast path's frames).
    Lossy,
}

impl PacketKind {
    /// The kind of `packet`; `None` if it is empty or its first byte is outside both
    /// ranges (not a packet toxtun sends).
    pub fn of(packet: &[u8]) -> Option<PacketKind> {
        match *packet.first()? {
            FIRST_FRAME_ID..=LAST_FRAME_ID => Some(PacketKind::Lossless),
            FIRST_LOSSY_ID..=LAST_LOSSY_ID => Some(PacketKind::Lossy),
            _ => None,
        }
    }

    /// Whether `packet` travels as a lossy custom packet.
    pub fn is_lossy(packet: &[u8]) -> bool {
        PacketKind::of(packet) == Some(PacketKind::Lossy)
    }
}

/// Something the network reports to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportEvent {
    /// This node's own connection to the Tox network changed (402 connected, 401 offline).
    SelfConnection {
        /// Whether the node is connected.
        connected: bool,
    },
    /// Someone asks to become a friend, with a message.
    FriendRequest {
        /// Who asks.
        peer: PeerId,
        /// The request's message.
        message: Bytes,
    },
    /// A friend's link came up (301).
    FriendOnline(PeerId),
    /// A friend's link went down (302).
    FriendOffline(PeerId),
    /// A custom packet arrived from a friend: lossless (first byte 160..=191) or lossy
    /// (192..=254).
    Packet {
        /// The friend.
        peer: PeerId,
        /// The packet, first byte included.
        packet: Bytes,
    },
    /// A friend's link changed path: `direct` UDP (lossy packets travel) or through a TCP
    /// relay (they do not). Follows `FriendOnline` when the link comes up direct.
    FriendPath {
        /// The friend.
        peer: PeerId,
        /// Whether the link is direct UDP.
        direct: bool,
    },
    /// The send queue to a friend that returned [`SendError::QueueFull`] has room again.
    SendReady(PeerId),
}

impl TransportEvent {
    /// The endpoint input this event becomes, if the endpoint cares about it.
    pub fn into_input(self) -> Option<Input> {
        Some(match self {
            TransportEvent::SelfConnection { .. } => return None,
            TransportEvent::FriendRequest { peer, message } => {
                Input::FriendRequest { peer, message }
            }
            TransportEvent::FriendOnline(p) => Input::PeerOnline(p),
            TransportEvent::FriendOffline(p) => Input::PeerOffline(p),
            TransportEvent::Packet { peer, packet } => Input::Packet { peer, packet },
            TransportEvent::SendReady(p) => Input::SendReady(p),
            TransportEvent::FriendPath { peer, direct } => Input::PathChanged { peer, direct },
        })
    }

    /// The seed's status code for this event, where one applies.
    pub fn status_code(&self) -> Option<StatusCode> {
        match self {
            TransportEvent::SelfConnection { connected: true } => Some(StatusCode::ToxConnected),
            TransportEvent::SelfConnection { connected: false } => Some(StatusCode::ToxOffline),
            TransportEvent::FriendOnline(_) => Some(StatusCode::PeerOnline),
            TransportEvent::FriendOffline(_) => Some(StatusCode::PeerOffline),
            _ => None,
        }
    }
}

/// Why a packet was not sent. `QueueFull` is backpressure, not failure: the packet comes
/// back to the caller, who sends it again after [`TransportEvent::SendReady`].
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The friend's send queue is full; here is the packet back.
    #[error("send queue full")]
    QueueFull(Bytes),
    /// The peer is not a friend (202).
    #[error("target is not a friend")]
    NotFriend,
    /// The friend is offline (204).
    #[error("target is offline")]
    Offline,
    /// The transport refused the packet for another reason (203).
    #[error("send failed: {0}")]
    Failed(&'static str),
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::QueueFull(p) => write!(f, "QueueFull({} bytes)", p.len()),
            SendError::NotFriend => f.write_str("NotFriend"),
            SendError::Offline => f.write_str("Offline"),
            SendError::Failed(r) => write!(f, "Failed({r:?})"),
        }
    }
}

impl SendError {
    /// The seed's status code (`QueueFull` has none: it is not a failure).
    pub fn status_code(&self) -> Option<StatusCode> {
        match self {
            SendError::QueueFull(_) => None,
            SendError::NotFriend => Some(StatusCode::NotFriend),
            SendError::Offline => Some(StatusCode::TargetOffline),
            SendError::Failed(_) => Some(StatusCode::SendFailed),
        }
    }
}

/// What adding a friend did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FriendAdded {
    /// The friend was added without a request (101).
    Added,
    /// A friend request was sent and waits for acceptance (104).
    RequestSent,
}

impl FriendAdded {
    /// The seed's status code.
    pub fn status_code(self) -> StatusCode {
        match self {
            FriendAdded::Added => StatusCode::FriendAdded,
            FriendAdded::RequestSent => StatusCode::FriendRequestSent,
        }
    }
}

/// Why adding a friend failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FriendError {
    /// Already a friend (103).
    #[error("already a friend")]
    AlreadyFriend,
    /// One's own key.
    #[error("cannot add oneself as a friend")]
    OwnKey,
    /// The request message is empty or too long.
    #[error("friend request message must be 1 to {max} bytes")]
    Message {
        /// The longest message allowed.
        max: usize,
    },
    /// Another failure (102).
    #[error("adding friend failed: {0}")]
    Failed(String),
}

impl FriendError {
    /// The seed's status code.
    pub fn status_code(&self) -> StatusCode {
        match self {
            FriendError::AlreadyFriend => StatusCode::AlreadyFriend,
            _ => StatusCode::FriendAddFailed,
        }
    }
}

/// Counters a transport keeps, for logs (`toxtun -vv` prints them beside each session's)
/// and benchmarks. Lossless and lossy packets are counted apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Lossless packets handed to the network.
    pub packets_sent: u64,
    /// Lossless packets received.
    pub packets_received: u64,
    /// Lossy packets handed to the network.
    pub lossy_sent: u64,
    /// Lossy packets received.
    pub lossy_received: u64,
    /// Times [`Transport::send`] answered [`SendError::QueueFull`] (backpressure).
    pub queue_full: u64,
    /// Times the network's own congestion control held a lossless packet back, to be
    /// retried (c-toxcore's SENDQ).
    pub network_busy: u64,
    /// Packets dropped in the transport: queued for a friend whose link went down, or
    /// lossy ones the network refused.
    pub dropped: u64,
}

/// A Tox-like network as one node sees it.
pub trait Transport {
    /// This node's Tox ID (public key, nospam, checksum): what others add as a friend.
    fn id(&self) -> ToxId;

    /// The largest packet [`Transport::send`] takes (1373 for Tox lossless packets).
    fn max_packet_size(&self) -> usize;

    /// Sends a friend request with `message`.
    fn add_friend(&mut self, id: &ToxId, message: &[u8]) -> Result<FriendAdded, FriendError>;

    /// Adds a friend without a request: accepts a request from `peer`, or restores a known
    /// friend.
    fn accept_friend(&mut self, peer: PeerId) -> Result<FriendAdded, FriendError>;

    /// Forgets a friend; its link goes down.
    fn remove_friend(&mut self, peer: PeerId) -> Result<(), FriendError>;

    /// Sends one packet: lossless if its first byte is in 160..=191 (delivered once, in
    /// order, or `QueueFull` comes back), lossy if in 192..=254 (sent soon on a direct
    /// link, and then may be lost, duplicated or reordered; a transport with a local queue
    /// answers `QueueFull` when it is full rather than dropping the packet itself, so that
    /// the sender's congestion control does not take its own queue for the network).
    fn send(&mut self, peer: PeerId, packet: Bytes) -> Result<(), SendError>;

    /// The next event; `Ready(None)` when the transport has shut down.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>>;

    /// The transport's counters so far (all zero for a transport that keeps none).
    fn stats(&self) -> TransportStats {
        TransportStats::default()
    }
}
