//! Flow control: the session's and each stream's credit, granted as the application reads
//! and grown when credit, not the reader, held the peer back.

use std::collections::VecDeque;

use super::{Ctx, Session};
use crate::codes::SessionCode;
use crate::config::EndpointConfig;
use crate::event::Event;
use crate::ids::StreamId;
use crate::stream::{OpenState, Stream};

impl Session {
    /// Counts bytes as consumed for session credit and queues SESSION_WINDOW when half of
    /// the window is free again.
    pub(crate) fn consume(&mut self, n: u64, config: &EndpointConfig) {
        self.recv_consumed += n;
        let w = config.session_window;
        if self.recv_consumed + w - self.recv_max >= w / 2 {
            self.session_window_queued = true;
            if self.twins_on() {
                self.session_twin_due = true;
            }
        }
    }

    /// Whether credit grants go on the lossy lane too: the fast path runs and the peer
    /// takes twins. The credit then returns on the lane its bytes came by, not behind
    /// c-toxcore's congestion control for lossless packets, which on a mostly idle
    /// direction starts near a few hundred packets a second (a burst of a hundred OPENs
    /// held a SESSION_WINDOW there for 0.4 s), and not behind a lossless queue full of
    /// other streams' WINDOW frames. The sequenced originals still go in the log.
    pub(super) fn twins_on(&self) -> bool {
        self.lossy_credit && self.lossy_active()
    }

    /// Grants session credit up to a window past what was consumed, if that is more than
    /// granted so far (SESSION_WINDOW and its twin both grant through here).
    pub(super) fn grant_session(&mut self, config: &EndpointConfig) {
        self.recv_max = self
            .recv_max
            .max(self.recv_consumed + config.session_window);
    }

    /// Doubles a stream's window (up to `max_stream_window`) when the credit, not the
    /// reader, held the peer back (`RecvHalf::credit_starved`): windows follow the
    /// bandwidth-delay product without a round-trip estimate, and a slow reader's stream
    /// keeps `stream_window`. What windows grew beyond `stream_window`, all streams
    /// together, stays within `session_window`, so a peer with many fast streams cannot
    /// make either side buffer more than that beyond the first windows.
    pub(super) fn maybe_grow_window(&mut self, id: StreamId, config: &EndpointConfig) {
        let (first, max) = (
            u64::from(config.stream_window),
            u64::from(config.max_stream_window).min(config.session_window),
        );
        let wants = self
            .streams
            .get(&id)
            .is_some_and(|s| s.recv.window < max && s.recv.credit_starved());
        if !wants {
            return;
        }
        let grown: u64 = self
            .streams
            .values()
            .map(|s| s.recv.window.saturating_sub(first))
            .sum();
        let room = config.session_window.saturating_sub(grown);
        if let Some(s) = self.streams.get_mut(&id) {
            let w = s.recv.window;
            s.recv.window = (w * 2).min(max).min(w + room);
            s.recv.grown_at = s.recv.read;
        }
    }

    /// After the application read from a stream: maybe queue its WINDOW update.
    pub(crate) fn after_read(&mut self, id: StreamId, n: u64, config: &EndpointConfig) {
        self.consume(n, config);
        self.maybe_grow_window(id, config);
        let twins = self.twins_on();
        if let Some(s) = self.streams.get_mut(&id) {
            if s.recv.wants_window_update() {
                if !s.recv.window_update_queued {
                    s.recv.window_update_queued = true;
                    self.window_updates.push_back(id);
                }
                if twins && !s.recv.twin_queued {
                    s.recv.twin_queued = true;
                    self.twin_updates.push_back(id);
                }
            }
        }
    }

    /// SESSION_WINDOW or its lossy twin: credit only grows.
    pub(super) fn on_session_window(&mut self, max: u64) {
        if max > self.send_max {
            self.send_max = max;
        }
    }

    /// WINDOW or its lossy twin. A twin for a stream we no longer have is a late copy of
    /// credit we no longer need (its lossless original came first or comes later): it is
    /// ignored rather than answered with RST.
    pub(super) fn on_window(
        &mut self,
        stream: StreamId,
        max_offset: u64,
        ack: u64,
        twin: bool,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(s) = self.streams.get_mut(&stream) else {
            if !twin {
                self.unknown_stream(stream);
            }
            return;
        };
        if let Err(code) = s.send.on_ack(ack) {
            self.reset_stream(stream, code, true, ctx);
        } else if s.send.on_window(max_offset) && s.send.want_writable {
            s.send.want_writable = false;
            ctx.events.push_back(Event::StreamWritable { stream });
        }
    }
}

/// Counts what a DATA or LDATA frame did against the session credit we grant (a peer past
/// it breaks the session), and announces newly readable bytes of an open stream once.
pub(super) fn count_received_bytes(
    recv_total: &mut u64,
    recv_max: u64,
    s: &mut Stream,
    received: crate::stream::Received,
    events: &mut VecDeque<Event>,
) -> Result<(), SessionCode> {
    *recv_total += received.new_bytes;
    if *recv_total > recv_max {
        return Err(SessionCode::FlowControl);
    }
    if received.readable && !s.recv.readable_signaled && s.state == OpenState::Open {
        s.recv.readable_signaled = true;
        events.push_back(Event::StreamReadable { stream: s.id });
    }
    Ok(())
}
