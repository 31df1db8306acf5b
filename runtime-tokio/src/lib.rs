//! `toxtun-tokio` drives a protocol [`toxtun_proto::Endpoint`] with tokio: one driver task
//! owns the endpoint and a [`toxtun_proto::Transport`] (the real Tox network, or the mock),
//! feeds it inputs, carries out its outputs and arms one timer from its deadline. Each
//! stream's local side — a TCP socket, stdio, or a [`TunnelStream`] for library users —
//! moves through bounded channels, so a stream without credit stops reading its socket.
//!
//! [`Node`] is the library API: `connect` to a server by Tox ID, `open` a stream that
//! implements `AsyncRead + AsyncWrite`, `forward` a local connection; a node made with
//! `NodeOptions { serve: true, .. }` connects incoming streams that its policy allows to
//! their targets. The `toxtun` binary builds on it; [`control`] is how its processes share
//! one identity (a lock, and a Unix socket that `status`, `stop` and attached pipes use).

pub mod config;
pub mod control;
pub mod metrics;
mod node;
pub mod settings;
pub mod socks;

pub use node::{
    ClosedListener, Counters, ListenerStatus, Node, NodeError, NodeEvent, NodeOptions, NodeStatus,
    PeerStatus, PendingStream, ReloadReport, ResetStream, SessionReport, StreamStatus,
    TunnelStream,
};
