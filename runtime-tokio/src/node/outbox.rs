//! Packets the transport refused with `QueueFull`: at most one per peer and lane (lossless
//! or lossy), sent first once the transport has room. The endpoint blocks only that lane
//! meanwhile, so nothing else overtakes the held packet in its lane.

use std::collections::HashMap;

use bytes::Bytes;
use toxtun_proto::{PacketKind, PeerId, SendError, Transport};

/// The held packets, by peer and lane (`true`: lossy).
#[derive(Debug, Default)]
pub(super) struct Outbox {
    held: HashMap<(PeerId, bool), Bytes>,
}

impl Outbox {
    /// Holds a refused packet until [`Outbox::retry`].
    pub(super) fn hold(&mut self, peer: PeerId, packet: Bytes) {
        self.held
            .insert((peer, PacketKind::is_lossy(&packet)), packet);
    }

    /// Sends `peer`'s held packets, lossless lane first; returns whether none is still
    /// refused (then the endpoint may send on both lanes again).
    pub(super) fn retry<T: Transport>(&mut self, peer: PeerId, transport: &mut T) -> bool {
        let mut still_full = false;
        for lane in [false, true] {
            if let Some(p) = self.held.remove(&(peer, lane)) {
                if let Err(SendError::QueueFull(p)) = transport.send(peer, p) {
                    self.held.insert((peer, lane), p);
                    still_full = true;
                }
            }
        }
        !still_full
    }

    /// The peer went offline: what was held for it is for a link that is gone (the
    /// endpoint resends what matters after a resume).
    pub(super) fn forget(&mut self, peer: PeerId) {
        self.held.remove(&(peer, false));
        self.held.remove(&(peer, true));
    }
}
