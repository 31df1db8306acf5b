//! Timers: open and handshake timeouts, keepalive, idle timeout, the fast path's and
//! acknowledgement delays.

use std::time::Instant;

use super::{Ctx, Disposition, Role, Session, State, OPEN_RECHECK};
use crate::codes::{SessionCode, StreamCode};
use crate::config::EndpointConfig;
use crate::event::Event;
use crate::frame::Frame;
use crate::stream::{OpenState, Stream};

impl Session {
    /// The resume grace of a suspended session ran out: its streams end now (a client
    /// keeps trying for a new session).
    pub(crate) fn on_grace_timer(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Disposition {
        if self.resume_by.is_none_or(|t| now < t) {
            return Disposition::Keep;
        }
        match self.role {
            Role::Initiator => {
                self.fail_and_retry(now, SessionCode::LinkLost, false, ctx);
                Disposition::Keep
            }
            Role::Responder(_) => {
                self.end(SessionCode::LinkLost, false, ctx);
                Disposition::Remove
            }
        }
    }

    /// Whether a client's next HELLO is due (the endpoint names the new session).
    pub(crate) fn hello_retry_due(&self, now: Instant) -> bool {
        matches!(self.state, State::Idle { retry_at: Some(t) } if self.link_up && now >= t)
    }

    /// Runs the session's due timers. Timeouts that suspend or retry are handled here;
    /// the others end the session. Returns what the endpoint does with it, and the CLOSE
    /// to send the peer, if any.
    pub(crate) fn on_timers(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
    ) -> (Disposition, Option<SessionCode>) {
        let grace = !ctx.config.resume_grace.is_zero();
        let ending = match self.on_timeout(now, ctx) {
            Some(SessionCode::HandshakeTimeout) if self.is_suspended() => {
                // A resume got no answer: try again (with backoff) within the grace.
                self.schedule_retry(now, ctx.config);
                None
            }
            Some(SessionCode::IdleTimeout) if grace => {
                // Silence is an outage too: keep the streams, and a client resumes at
                // once (RESUME goes out if the link is really there).
                self.suspend(now, ctx);
                if self.role == Role::Initiator && self.link_up {
                    self.send_hello(now, self.id, ctx.config);
                }
                None
            }
            other => other,
        };
        let Some(code) = ending else {
            return (Disposition::Keep, None);
        };
        match self.role {
            Role::Initiator => {
                self.fail_and_retry(now, code, false, ctx);
                // Tell the peer, in case only our direction is dead.
                let close = (code == SessionCode::IdleTimeout).then_some(code);
                (Disposition::Keep, close)
            }
            Role::Responder(_) => {
                self.end(code, false, ctx);
                (Disposition::Remove, Some(code))
            }
        }
    }

    /// The next instant this session needs `handle_timeout`.
    pub(crate) fn deadline(&self, config: &EndpointConfig) -> Option<Instant> {
        let mut next = self.open_deadlines.front().map(|&(t, _)| t);
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        match self.state {
            State::Idle { retry_at: Some(t) } if self.link_up => consider(t),
            State::Idle { .. } => {}
            State::HelloSent { deadline } => consider(deadline),
            State::Established => {
                consider(self.last_recv + config.idle_timeout);
                consider(self.next_ping(config));
                if let Some(t) = self.ack_due {
                    consider(t);
                }
                if let Some(t) = self.lossy_rx.deadline() {
                    consider(t);
                }
                if let Some(t) = self.lossy_tx.deadline() {
                    consider(t);
                }
                if let Some(t) = self.lossy_tx.retry_at() {
                    consider(t);
                }
                if let Some(t) = self.pace_until {
                    consider(t);
                }
            }
        }
        if let Some(t) = self.resume_by {
            consider(t);
        }
        if let Some(t) = self.flow_deadline() {
            consider(t);
        }
        next
    }

    /// Whether an open whose timeout passed waits for the path rather than failing: the
    /// session is held (established or suspended, within its grace), and the peer either
    /// never acknowledged the OPEN (it never reached it: the path is out, or c-toxcore's
    /// queue holds it) or has been silent past the keepalive (its answer may be what the
    /// path holds). An open times out only when a peer that has it, and that the path
    /// reaches, does not answer; before, a stream opened during an 8 s outage failed with
    /// 2009 though its session was held.
    pub(super) fn path_holds_open(
        &self,
        now: Instant,
        s: &Stream,
        config: &EndpointConfig,
    ) -> bool {
        if self.is_suspended() {
            return true;
        }
        if !self.is_established() {
            return false; // no session to wait for: the handshake itself is failing
        }
        let acknowledged_count = self.tx_seq - self.log.len() as u64;
        let peer_has_it = s.open_seq.is_some_and(|q| q <= acknowledged_count);
        let silent = now >= self.last_recv + config.keepalive_interval * 3 / 2;
        !peer_has_it || silent
    }

    pub(super) fn next_ping(&self, config: &EndpointConfig) -> Instant {
        let since = self
            .last_ping
            .map_or(self.last_recv, |p| p.max(self.last_recv));
        since + config.keepalive_interval
    }

    /// Fires expired open timeouts and keepalives. Session-wide timeouts are returned for
    /// the endpoint to act on.
    fn on_timeout(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Option<SessionCode> {
        self.sweep_flows(now, ctx);
        while let Some(&(t, id)) = self.open_deadlines.front() {
            if t > now {
                break;
            }
            let opening = self
                .streams
                .get(&id)
                .filter(|s| matches!(s.state, OpenState::Opening { .. }));
            if opening.is_some_and(|s| self.path_holds_open(now, s, ctx.config)) {
                // Not the peer's silence but the path's: wait, as the session does. Every
                // deadline moves alike, so they stay in order.
                for (t, _) in self.open_deadlines.iter_mut() {
                    *t = (*t).max(now + OPEN_RECHECK);
                }
                break;
            }
            self.open_deadlines.pop_front();
            if opening.is_some() {
                self.reset_stream(id, StreamCode::OpenTimeout, false, ctx);
                ctx.events.push_back(Event::StreamRefused {
                    stream: id,
                    code: StreamCode::OpenTimeout,
                });
            }
        }
        match self.state {
            State::HelloSent { deadline } if now >= deadline => {
                return Some(SessionCode::HandshakeTimeout)
            }
            State::Established => {
                if now >= self.last_recv + ctx.config.idle_timeout {
                    return Some(SessionCode::IdleTimeout);
                }
                if self.ack_due.is_some_and(|t| now >= t) {
                    self.ack_due = None;
                    self.ack_now = true;
                }
                if self.pace_until.is_some_and(|t| now >= t) {
                    self.pace_until = None;
                }
                self.lossy_rx.on_timeout(now);
                self.lossy_tx.on_timeout(now);
                if self.lossy_tx.is_broken() {
                    if self.lossy_tx.retry_at().is_some_and(|t| now >= t) {
                        // Try the fast path again, from a fresh window: the link c-toxcore
                        // still calls direct may carry lossy packets again.
                        self.lossy_tx.new_path();
                        self.pace_until = None;
                        self.shadow_due = true;
                    } else {
                        // Lossy packets do not get through: what is in flight goes
                        // lossless.
                        self.lossy_tx.abandon_in_flight();
                    }
                }
                if self.lossy_tx.take_liveness_ping_request() && !self.liveness_ping_out {
                    // Does anything get through? A PONG while the probes stay unanswered
                    // says the fast path alone is down; silence says the path is.
                    self.liveness_ping_out = true;
                    self.ping_token = self.ping_token.wrapping_add(1);
                    self.queue_control(Frame::Ping {
                        token: self.ping_token,
                    });
                }
                if now >= self.next_ping(ctx.config) {
                    self.last_ping = Some(now);
                    self.ping_token = self.ping_token.wrapping_add(1);
                    self.queue_control(Frame::Ping {
                        token: self.ping_token,
                    });
                }
            }
            _ => {}
        }
        None
    }
}
