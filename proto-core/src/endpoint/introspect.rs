//! What an endpoint tells about itself: its sessions, streams and their counters.

use crate::event::{SessionStats, StreamStats};
use crate::ids::{PeerId, StreamId};
use crate::session::Session;

use super::Endpoint;

impl Endpoint {
    /// Counters of one stream.
    pub fn stream_stats(&self, stream: StreamId) -> Option<StreamStats> {
        let peer = *self.index.get(&stream)?;
        self.sessions.get(&peer)?.stream_stats(stream)
    }

    /// Counters of the session with one peer.
    pub fn session_stats(&self, peer: PeerId) -> Option<SessionStats> {
        Some(self.sessions.get(&peer)?.stats())
    }

    /// Every stream with its peer.
    pub fn streams(&self) -> impl Iterator<Item = (StreamId, PeerId)> + '_ {
        self.index.iter().map(|(s, p)| (*s, *p))
    }

    /// Peers with a session (live or reconnecting).
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.sessions.keys().copied()
    }

    /// Whether the session with the peer is established.
    pub fn is_established(&self, peer: PeerId) -> bool {
        self.sessions
            .get(&peer)
            .is_some_and(Session::is_established)
    }
}
