//! UDP forwarding at the endpoint (`forward -U`): the client's flows and datagrams, and
//! the server's answers to them. See `session/flows.rs` for how they travel.

use std::time::Instant;

use bytes::Bytes;

use crate::codes::StreamCode;
use crate::event::{DatagramError, OpenError, StreamError};
use crate::ids::PeerId;
use crate::target::Target;

use super::Endpoint;

impl Endpoint {
    /// Client: opens a UDP flow to `target` through the server `peer`, connecting to it if
    /// needed. Datagrams may be sent at once: the first few are held until the server
    /// opens the flow (`FlowOpened`) or refuses it (`FlowRefused`). Returns the flow's
    /// number. A flow ends with [`Endpoint::close_flow`], when it idles for the
    /// configuration's `flow_idle_timeout`, or with its session (`FlowClosed`).
    pub fn open_flow(
        &mut self,
        now: Instant,
        peer: PeerId,
        target: Target,
    ) -> Result<u32, OpenError> {
        if peer == self.config.local_id {
            return Err(OpenError::SelfPeer);
        }
        self.connect(now, peer);
        let mut id = self.next_flow;
        loop {
            id = id.wrapping_add(1);
            if !self.sessions.get(&peer).is_some_and(|s| s.has_flow(id)) {
                break;
            }
        }
        self.next_flow = id;
        let (sessions, mut ctx) = self.ctx();
        let s = sessions.get_mut(&peer).expect("connect created it");
        s.add_flow(id, target, now, &mut ctx);
        self.mark_ready(peer);
        Ok(id)
    }

    /// Ends flow `flow` with `peer` (the peer hears UCLOSE 2000). `false` if there is no
    /// such flow.
    pub fn close_flow(&mut self, peer: PeerId, flow: u32) -> bool {
        let closed = self
            .sessions
            .get_mut(&peer)
            .is_some_and(|s| s.close_flow(flow, StreamCode::Cancelled));
        self.mark_ready(peer);
        closed
    }

    /// Sends one datagram on flow `flow` with `peer`. It arrives whole and once, or not at
    /// all, as UDP does; a full queue drops it here (`QueueFull`, counted).
    pub fn send_datagram(
        &mut self,
        now: Instant,
        peer: PeerId,
        flow: u32,
        payload: Bytes,
    ) -> Result<(), DatagramError> {
        let (sessions, ctx) = self.ctx();
        let s = sessions.get_mut(&peer).ok_or(DatagramError::UnknownFlow)?;
        s.send_datagram(now, flow, payload, &ctx)?;
        self.mark_ready(peer);
        Ok(())
    }

    /// Server: answers a `FlowRequested`: `Ok` once a socket toward the target is ready
    /// (UOPEN_OK), else the code to refuse with (`TargetUnreachable` when the name does
    /// not resolve).
    pub fn answer_flow(
        &mut self,
        peer: PeerId,
        flow: u32,
        result: Result<(), StreamCode>,
    ) -> Result<(), StreamError> {
        let answered = self
            .sessions
            .get_mut(&peer)
            .is_some_and(|s| s.answer_flow(flow, result));
        if !answered {
            return Err(StreamError::UnknownStream);
        }
        self.mark_ready(peer);
        Ok(())
    }
}
