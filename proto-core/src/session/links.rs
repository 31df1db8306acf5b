//! What the peer and the link do to a session as a whole, both roles: the link coming and
//! going, HELLO accepted or refused, CLOSE, a protocol violation. Each method says what
//! the endpoint does with the session afterwards ([`Disposition`]).

use std::time::Instant;

use super::{Ctx, Disposition, Role, Session, State};
use crate::codes::SessionCode;
use crate::config::{Capabilities, EndpointConfig, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::frame::{Frame, Hello, HelloAck};
use crate::ids::SessionId;
use crate::policy::Admission;

/// What a HELLO_ACK did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HelloAckOutcome {
    /// Stale or unsolicited: nothing happened.
    Ignored,
    /// The session is established or resumed.
    Accepted,
    /// The server chose a version we do not speak: the session ended; the endpoint drops
    /// it and tells the server (CLOSE 1006).
    VersionMismatch,
    /// The server does not know the session we asked to resume.
    ResumeRefused,
}

impl Session {
    /// The friend link came up. `new_id` names a new session if a client starts one now.
    /// Returns whether the endpoint should ask the client to resume (a suspended server:
    /// the client may not have seen the link drop).
    pub(crate) fn on_link_up(
        &mut self,
        now: Instant,
        new_id: impl FnOnce() -> SessionId,
        config: &EndpointConfig,
    ) -> bool {
        self.link_up = true;
        self.unblock();
        match (self.role, self.state) {
            (Role::Initiator, State::Idle { .. }) => {
                self.send_hello(now, new_id(), config);
                false
            }
            (Role::Responder(_), _) => self.is_suspended(),
            _ => false,
        }
    }

    /// The friend link went down: suspend within the resume grace, else end (a client
    /// keeps trying).
    pub(crate) fn on_link_lost(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> Disposition {
        self.link_up = false;
        self.unblock();
        let grace = !ctx.config.resume_grace.is_zero();
        match (self.role, self.state) {
            (_, State::Established) if grace => self.suspend(now, ctx),
            (_, State::HelloSent { .. }) if self.is_suspended() => {
                self.state = State::Idle { retry_at: None };
            }
            (_, State::Idle { .. }) => {}
            (Role::Initiator, _) => self.fail_and_retry(now, SessionCode::LinkLost, false, ctx),
            (Role::Responder(_), _) => {
                self.end(SessionCode::LinkLost, false, ctx);
                return Disposition::Remove;
            }
        }
        Disposition::Keep
    }

    /// A packet from the peer decoded: the link is there, whatever the transport said.
    pub(crate) fn on_packet_heard(&mut self) {
        self.link_up = true;
    }

    /// Asks the client to resume (CLOSE 1013) once per outage: whether to send it now.
    pub(crate) fn ask_resume_once(&mut self) -> bool {
        !std::mem::replace(&mut self.resume_asked, true)
    }

    /// HELLO_REJECT for our HELLO: a refusal that retrying cannot fix ends the session.
    pub(crate) fn on_hello_reject(
        &mut self,
        now: Instant,
        code: SessionCode,
        ctx: &mut Ctx<'_>,
    ) -> Disposition {
        if !matches!(self.state, State::HelloSent { .. }) {
            return Disposition::Keep;
        }
        let fatal = matches!(
            code,
            SessionCode::Unauthorized | SessionCode::BadSecret | SessionCode::VersionMismatch
        );
        if fatal {
            self.end(code, true, ctx);
            return Disposition::Remove;
        }
        self.fail_and_retry(now, code, true, ctx);
        Disposition::Keep
    }

    /// CLOSE from the peer (other than 1013, see [`Session::on_resume_required`]).
    pub(crate) fn on_close(
        &mut self,
        now: Instant,
        code: SessionCode,
        ctx: &mut Ctx<'_>,
    ) -> Disposition {
        if !(self.is_established() || matches!(self.state, State::HelloSent { .. })) {
            return Disposition::Keep;
        }
        match self.role {
            Role::Initiator => {
                self.fail_and_retry(now, code, true, ctx);
                Disposition::Keep
            }
            Role::Responder(_) => {
                self.end(code, true, ctx);
                Disposition::Remove
            }
        }
    }

    /// The server saw the link drop and we did not: suspend and resume at once. Returns
    /// whether anything changed.
    pub(crate) fn on_resume_required(&mut self, now: Instant, ctx: &mut Ctx<'_>) -> bool {
        if self.role != Role::Initiator {
            return false;
        }
        match self.state {
            State::Established if !ctx.config.resume_grace.is_zero() => {
                self.suspend(now, ctx);
                self.send_hello(now, self.id, ctx.config);
            }
            State::Established => {
                self.end(SessionCode::LinkLost, true, ctx);
                self.schedule_retry(now, ctx.config);
            }
            State::Idle { .. } if self.is_suspended() && self.link_up => {
                self.send_hello(now, self.id, ctx.config);
            }
            _ => return false,
        }
        true
    }

    /// The peer broke the protocol: the session ends with `code` (the endpoint sends the
    /// CLOSE), and a client tries again later. `None`: there was no session to end.
    pub(crate) fn on_protocol_violation(
        &mut self,
        now: Instant,
        code: SessionCode,
        ctx: &mut Ctx<'_>,
    ) -> Option<Disposition> {
        if matches!(self.state, State::Idle { .. }) {
            return None;
        }
        self.end(code, false, ctx);
        match self.role {
            Role::Initiator => {
                self.schedule_retry(now, ctx.config);
                Some(Disposition::Keep)
            }
            Role::Responder(_) => Some(Disposition::Remove),
        }
    }

    /// As a server: RESUME for this session, from a client the policy admitted. Returns
    /// `false` if it is not a session we know (we restarted, or it outlived its grace).
    pub(crate) fn accept_resume(
        &mut self,
        now: Instant,
        h: &Hello,
        version: u16,
        admission: Admission,
        ctx: &mut Ctx<'_>,
    ) -> bool {
        if self.id != h.session || !(self.is_established() || self.is_suspended()) {
            return false;
        }
        // The client's link dropped, whether or not we saw it.
        self.role = Role::Responder(admission);
        self.link_up = true;
        self.suspend(now, ctx);
        let capabilities = [
            (self.lossy_negotiated, Capabilities::LOSSY_DATA),
            (self.lossy_credit, Capabilities::LOSSY_CREDIT),
            (self.batching, Capabilities::BATCH),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |caps, (_, c)| caps | c.0);
        self.queue_control(Frame::HelloAck(HelloAck {
            version,
            capabilities,
            session: h.session,
            resumed: true,
            stream_window: ctx.config.stream_window,
            session_window: ctx.config.session_window,
        }));
        self.resume(now, ctx);
        true
    }

    /// As a server: HELLO from a client the policy admitted starts a new session (ending
    /// whatever the peer had with us: it started over). `direct`: the link is direct UDP.
    pub(crate) fn accept_hello(
        &mut self,
        now: Instant,
        h: &Hello,
        version: u16,
        admission: Admission,
        direct: bool,
        ctx: &mut Ctx<'_>,
    ) {
        if self.is_established() || self.is_suspended() {
            self.end(SessionCode::SessionUnknown, true, ctx);
        }
        self.role = Role::Responder(admission);
        self.set_path(direct);
        self.id = h.session;
        self.link_up = true;
        let capabilities = h.capabilities & ctx.config.capabilities().0;
        self.queue_control(Frame::HelloAck(HelloAck {
            version,
            capabilities,
            session: h.session,
            resumed: false,
            stream_window: ctx.config.stream_window,
            session_window: ctx.config.session_window,
        }));
        self.establish(
            now,
            h.stream_window,
            h.session_window,
            Capabilities(capabilities),
            ctx,
        );
    }

    /// As a client: the server's HELLO_ACK.
    pub(crate) fn on_hello_ack(
        &mut self,
        now: Instant,
        a: &HelloAck,
        ctx: &mut Ctx<'_>,
    ) -> HelloAckOutcome {
        if !matches!(self.state, State::HelloSent { .. }) || a.session != self.id {
            return HelloAckOutcome::Ignored;
        }
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&a.version) {
            self.end(SessionCode::VersionMismatch, false, ctx);
            return HelloAckOutcome::VersionMismatch;
        }
        match (self.is_suspended(), a.resumed) {
            (true, true) => self.resume(now, ctx),
            // A server answers RESUME with resumed set, or refuses it.
            (true, false) => return HelloAckOutcome::ResumeRefused,
            _ => {
                let caps = Capabilities(a.capabilities & ctx.config.capabilities().0);
                self.establish(now, a.stream_window, a.session_window, caps, ctx)
            }
        }
        HelloAckOutcome::Accepted
    }

    /// The server does not know the session we tried to resume: it restarted, so its
    /// streams are gone. End ours at once with that code and start session `id` now.
    /// Returns `false` if we were not resuming.
    pub(crate) fn restart_refused_resume(
        &mut self,
        now: Instant,
        id: SessionId,
        ctx: &mut Ctx<'_>,
    ) -> bool {
        if !(self.is_suspended() && matches!(self.state, State::HelloSent { .. })) {
            return false;
        }
        self.end_keeping_unsent(SessionCode::SessionUnknown, true, ctx);
        self.send_hello(now, id, ctx.config);
        true
    }

    /// As a client: start this session, which the endpoint just made.
    pub(crate) fn start(
        &mut self,
        now: Instant,
        direct: bool,
        online: bool,
        config: &EndpointConfig,
    ) {
        self.path_direct = direct;
        if online {
            self.link_up = true;
            self.send_hello(now, self.id, config);
        }
    }
}
