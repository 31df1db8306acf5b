//! `toxtun-proto` is the protocol core of toxtun: a sans-IO state machine that multiplexes
//! TCP-like byte streams, each named by a UUID, over one Tox friend link per peer. It owns
//! the wire codec, the handshake and server policy, stream routing, flow control, keepalive
//! and close semantics, resumption after link outages, and the fast path's own loss
//! recovery and congestion control over lossy packets. It does no I/O at all: no sockets, no threads, no clock reads, no
//! async, no randomness beyond the seed it is given. A runtime (`toxtun-tokio`), a test
//! harness or your own program feeds it inputs and carries out its outputs.
//!
//! # Shape
//!
//! * [`Endpoint::new`]`(config, seed)` — one per Tox identity; a client, a server (with a
//!   [`ServerPolicy`]) or both.
//! * [`Endpoint::handle_input`]`(now, Input)` — transport events: a friend came online or
//!   went offline, a friend request, a packet, the send queue filled or drained, the link
//!   became direct UDP or relayed.
//! * Commands, each with its own error type: [`Endpoint::connect`], [`Endpoint::open`],
//!   [`Endpoint::write`], [`Endpoint::read`], [`Endpoint::finish`], [`Endpoint::reset`],
//!   [`Endpoint::accept`], [`Endpoint::refuse`].
//! * [`Endpoint::handle_timeout`]`(now)` — when the deadline it gave has come.
//! * [`Endpoint::poll_output`]`(now)` — [`Output::Transmit`] (a packet for a friend, at most
//!   `max_packet_size` bytes: a lossless custom packet if its first byte is in 160..=191, a
//!   lossy one if in 200..=254), [`Output::Event`], or [`Output::Timeout`] (the next
//!   deadline).
//!
//! # The drain rule
//!
//! After every input, timeout or command, call [`Endpoint::poll_output`] until it returns
//! `None` or `Some(Output::Timeout(t))`, carrying out each output in order. Then wait for
//! the next input or for `t`, whichever comes first, and call [`Endpoint::handle_timeout`]
//! when `t` has passed (read the clock; do not trust the timer to be punctual).
//!
//! If the transport cannot take a packet because its send queue is full, keep that packet,
//! feed [`Input::SendBlocked`], and send the packet first when there is room again, then feed
//! [`Input::SendReady`]. No lossless packet is ever dropped. Lossy packets (the fast path,
//! used only after [`Input::PathChanged`] said the link is direct) may be dropped anywhere:
//! the endpoint's own recovery resends what they carried.
//!
//! ```
//! use std::time::Instant;
//! use toxtun_proto::{Endpoint, EndpointConfig, Input, Output, PeerId};
//!
//! let mut client = Endpoint::new(EndpointConfig::new(PeerId([1; 32])), [7; 32]).unwrap();
//! let server = PeerId([2; 32]);
//! let now = Instant::now();
//! client.connect(now, server);
//! client.handle_input(now, Input::PeerOnline(server));
//! while let Some(out) = client.poll_output(now) {
//!     match out {
//!         Output::Transmit { peer, packet } => { /* send `packet` to `peer` over Tox */ }
//!         Output::Event(e) => { /* tell the application */ }
//!         Output::Timeout(t) => break, // call handle_timeout at t
//!     }
//! }
//! ```
//!
//! See PROTOCOL.md for the frames and codes, ARCHITECTURE.md for how the crates fit.

#![warn(missing_docs)]

pub mod codes;
mod collections;
pub mod config;
mod endpoint;
mod event;
mod flow;
mod frame;
pub mod ids;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "testing")]
pub use testing::pair;
pub mod policy;
mod recovery;
mod session;
mod stream;
pub mod target;
pub mod transport;

/// The wire codec, for tests, benchmarks and the fuzz crate (the `testing` feature): every
/// frame of PROTOCOL.md as a [`wire::Frame`], and its encoding and decoding. An embedder
/// never needs it: the endpoint takes and gives whole packets.
#[cfg(feature = "testing")]
pub mod wire {
    pub use crate::frame::*;
}

pub use codes::{SessionCode, StatusCode, StreamCode};
pub use config::{Capabilities, ConfigError, EndpointConfig, PROTOCOL_VERSION};
pub use endpoint::{Endpoint, Reconfigured};
pub use event::{
    DatagramError, Event, Input, OpenError, Output, ReadError, SessionStats, StreamError,
    StreamStats, WriteError,
};
pub use flow::MAX_DATAGRAM;
pub use frame::MAX_PACKET_SIZE;
pub use ids::{PeerId, SessionId, StreamId, ToxId, ToxIdError};
pub use policy::{
    ClientRule, Limits, ListenRules, PolicyChanges, SecretChange, ServerPolicy, SharedSecret,
    TargetRules,
};
pub use recovery::congestion::CongestionControl;
pub use session::{MAX_LISTENERS_PER_PEER, MAX_QUEUED_BYTES};
pub use target::{Host, Target, TargetError, TargetPattern};
pub use transport::{
    FriendAdded, FriendError, PacketKind, SendError, Transport, TransportEvent, TransportStats,
};
