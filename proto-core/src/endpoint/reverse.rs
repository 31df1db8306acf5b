//! Reverse forwarding at the endpoint (`forward -R`): the client's listeners, the
//! server's answers to them, and the streams a server opens toward its client for a
//! connection one of them accepted.

use std::time::Instant;

use crate::codes::StreamCode;
use crate::event::{OpenError, StreamError};
use crate::ids::{PeerId, StreamId};
use crate::session::Role;
use crate::target::Target;

use super::Endpoint;

impl Endpoint {
    /// Client: asks the server `peer` to listen on `bind` and to open a stream toward us
    /// for each connection it accepts there; such streams come as `StreamIncoming` with
    /// `to` as their target (where the application connects them), and no other stream
    /// from the server is accepted. Connects to the server if needed. The listener is asked
    /// for again in each new session until [`Endpoint::unlisten`]; `ListenReady` or
    /// `ListenRefused` says how each request went. Returns the listener's number.
    pub fn listen(
        &mut self,
        now: Instant,
        peer: PeerId,
        bind: Target,
        to: Target,
    ) -> Result<u32, OpenError> {
        if peer == self.config.local_id {
            return Err(OpenError::SelfPeer);
        }
        self.connect(now, peer);
        self.next_listener = self.next_listener.wrapping_add(1);
        let id = self.next_listener;
        let (sessions, mut ctx) = self.ctx();
        let s = sessions.get_mut(&peer).expect("connect created it");
        s.add_listener(id, bind, to, &mut ctx);
        self.mark_ready(peer);
        Ok(id)
    }

    /// Client: gives listener `id` up; the server stops listening. Streams it opened go on.
    pub fn unlisten(&mut self, peer: PeerId, id: u32) -> bool {
        let removed = self
            .sessions
            .get_mut(&peer)
            .is_some_and(|s| s.remove_listener(id));
        self.mark_ready(peer);
        removed
    }

    /// Server: answers a `ListenRequested`: `Ok` once listening (LISTEN_OK), else the
    /// code to refuse with (`ListenFailed` when the address cannot be bound).
    pub fn answer_listen(
        &mut self,
        peer: PeerId,
        listener: u32,
        result: Result<(), StreamCode>,
    ) -> Result<(), StreamError> {
        let answered = self
            .sessions
            .get_mut(&peer)
            .is_some_and(|s| s.answer_listen(listener, result));
        if !answered {
            return Err(StreamError::UnknownStream);
        }
        self.mark_ready(peer);
        Ok(())
    }

    /// Server: opens a stream toward the client `peer` for a connection its listener
    /// `listener` accepted. The client connects it where its listener says. The stream
    /// then behaves as any other: `StreamOpened` or `StreamRefused`, and so on.
    pub fn open_reverse(
        &mut self,
        now: Instant,
        peer: PeerId,
        listener: u32,
    ) -> Result<StreamId, OpenError> {
        let bind = self
            .sessions
            .get(&peer)
            .filter(|s| matches!(s.role(), Role::Responder(_)))
            .and_then(|s| s.listener_bind(listener))
            .ok_or(OpenError::NotListening)?;
        Ok(self.open_on(now, peer, bind))
    }
}
