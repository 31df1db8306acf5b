//! `toxtun-transport-mock` is an in-memory network of Tox-like nodes for testing toxtun
//! without a network. It mirrors the Tox semantics toxtun relies on: friend requests with a
//! message (dropped when the nospam is wrong), links that come up a while after both sides
//! are friends, lossless ordered delivery while a link is up, packets in flight lost when it
//! goes down, a per-friend send queue whose overflow is `QueueFull` backpressure followed by
//! `SendReady`, and per-link latency, jitter and bandwidth. Faults are scripted or random:
//! link flaps, partitions, node stops and restarts (a restarted node keeps its keys and
//! friends, as Tox's savedata does, and loses everything above the network).
//!
//! [`Network`] is sans-IO: virtual time that the caller advances, randomness from a seed,
//! so a simulation replays exactly. [`RealtimeNetwork`] is a thin real-time face over it
//! whose nodes implement [`toxtun_proto::Transport`] for runtimes (tokio, smol, …).

mod network;
mod realtime;

pub use network::{
    BurstLoss, FlapPlan, LinkConfig, NetStats, Network, NodeId, MAX_FRIEND_REQUEST_LEN,
};
pub use realtime::{MockTransport, RealtimeNetwork};
