//! Reverse forwarding (`forward -R`): a client asks the server to listen for it (LISTEN),
//! and the server opens a stream toward the client for each connection it accepts there.
//! The client keeps its listeners across sessions and asks again on each new one; the
//! server keeps them for the session (a resumed one included). A server's stream is
//! accepted only for a listener the client asked for and the server confirmed, and goes
//! only where the client's own listener says: the server names the listener's bind
//! address, never a destination.

use super::{Ctx, Role, Session};
use crate::codes::StreamCode;
use crate::event::Event;
use crate::frame::Frame;
use crate::policy::ServerPolicy;
use crate::target::Target;

/// The most listeners a server keeps for one client; more are refused with
/// `TooManyListeners`.
pub const MAX_LISTENERS_PER_PEER: usize = 16;

/// Where a client's listener stands in the current session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListenState {
    /// Not asked for in this session yet (no session, or the peer lacks the capability).
    Waiting,
    /// LISTEN sent; no answer yet.
    Asked,
    /// The server listens (LISTEN_OK).
    Listening,
    /// Refused or closed by the server in this session; asked again in the next one.
    Refused,
}

/// A client's listener: what it asked the server for, and where its streams go.
#[derive(Clone, Debug)]
pub(crate) struct ClientListener {
    pub id: u32,
    pub bind: Target,
    pub to: Target,
    pub state: ListenState,
}

/// A server's listener for its client.
#[derive(Clone, Debug)]
pub(crate) struct ServerListener {
    pub id: u32,
    pub bind: Target,
    /// The application listens (it answered the request with success).
    pub open: bool,
}

impl Session {
    /// Client: adds a listener; LISTEN goes out now if the session is up.
    pub(crate) fn add_listener(&mut self, id: u32, bind: Target, to: Target, ctx: &mut Ctx<'_>) {
        self.client_listeners.push(ClientListener {
            id,
            bind,
            to,
            state: ListenState::Waiting,
        });
        if self.is_established() {
            self.ask_listeners(ctx);
        }
    }

    /// Client: gives a listener up; the server stops listening (LISTEN_ERR 2000).
    pub(crate) fn remove_listener(&mut self, id: u32) -> bool {
        let Some(i) = self.client_listeners.iter().position(|l| l.id == id) else {
            return false;
        };
        let l = self.client_listeners.remove(i);
        if self.is_established() && matches!(l.state, ListenState::Asked | ListenState::Listening) {
            self.control.push_back(Frame::ListenErr {
                listener: id,
                code: StreamCode::Cancelled,
            });
        }
        true
    }

    /// Client, a new session established: every listener not asked for in it is asked
    /// for now, or refused at once if the server lacks the capability (no hang).
    pub(super) fn ask_listeners(&mut self, ctx: &mut Ctx<'_>) {
        for l in &mut self.client_listeners {
            if l.state != ListenState::Waiting {
                continue;
            }
            if self.reverse_negotiated {
                l.state = ListenState::Asked;
                self.control.push_back(Frame::Listen {
                    listener: l.id,
                    bind: l.bind.clone(),
                });
            } else {
                l.state = ListenState::Refused;
                ctx.events.push_back(Event::ListenRefused {
                    peer: self.peer,
                    bind: l.bind.clone(),
                    code: StreamCode::ReverseUnsupported,
                });
            }
        }
    }

    /// Client, the session ended: the server forgot its listeners; ask again in the next.
    pub(super) fn forget_listeners(&mut self) {
        for l in &mut self.client_listeners {
            l.state = ListenState::Waiting;
        }
        self.server_listeners.clear();
    }

    /// Client: the server's answer to LISTEN (or its end of a listener).
    pub(super) fn on_listen_answer(
        &mut self,
        listener: u32,
        answer: Result<(), StreamCode>,
        ctx: &mut Ctx<'_>,
    ) {
        if self.role != Role::Initiator {
            if answer.is_err() {
                // The client gave the listener up.
                self.close_server_listener(listener, StreamCode::Cancelled, false, ctx);
            }
            return;
        }
        let Some(l) = self.client_listeners.iter_mut().find(|l| l.id == listener) else {
            return; // given up meanwhile
        };
        if l.state == ListenState::Waiting {
            return; // an answer from an older session's request
        }
        let peer = self.peer;
        match answer {
            Ok(()) => {
                l.state = ListenState::Listening;
                ctx.events.push_back(Event::ListenReady {
                    peer,
                    bind: l.bind.clone(),
                });
            }
            Err(code) => {
                l.state = ListenState::Refused;
                ctx.events.push_back(Event::ListenRefused {
                    peer,
                    bind: l.bind.clone(),
                    code,
                });
            }
        }
    }

    /// Client: where a stream the server opens to `bind` goes, if the client asked for a
    /// listener there and the server confirmed it.
    pub(super) fn reverse_destination(&self, bind: &Target) -> Option<Target> {
        self.client_listeners
            .iter()
            .find(|l| l.state == ListenState::Listening && l.bind == *bind)
            .map(|l| l.to.clone())
    }

    /// Server: the client asks for a listener. Refused at once if the rules do not allow
    /// it; else the application decides (it binds the address).
    pub(super) fn on_listen(&mut self, listener: u32, bind: Target, ctx: &mut Ctx<'_>) {
        let refuse = |this: &mut Self, code: StreamCode| {
            this.control.push_back(Frame::ListenErr { listener, code });
        };
        let Role::Responder(admission) = self.role else {
            return refuse(self, StreamCode::NotAccepting);
        };
        let Some(policy) = ctx.config.server.as_ref() else {
            return refuse(self, StreamCode::NotAccepting);
        };
        if self.server_listeners.iter().any(|l| l.id == listener) {
            return refuse(self, StreamCode::DuplicateStream);
        }
        if self.server_listeners.len() >= MAX_LISTENERS_PER_PEER {
            return refuse(self, StreamCode::TooManyListeners);
        }
        if policy
            .listen_rules(&self.peer, admission)
            .allowing(&bind)
            .is_none()
        {
            ctx.events.push_back(Event::ListenDenied {
                peer: self.peer,
                bind,
                code: StreamCode::ListenNotAllowed,
            });
            return refuse(self, StreamCode::ListenNotAllowed);
        }
        self.server_listeners.push(ServerListener {
            id: listener,
            bind: bind.clone(),
            open: false,
        });
        ctx.events.push_back(Event::ListenRequested {
            peer: self.peer,
            listener,
            bind,
        });
    }

    /// Server: the application's answer to `ListenRequested`. `false` if there is no such
    /// request (the client gave it up, or the session ended).
    pub(crate) fn answer_listen(&mut self, listener: u32, result: Result<(), StreamCode>) -> bool {
        let Some(i) = self
            .server_listeners
            .iter()
            .position(|l| l.id == listener && !l.open)
        else {
            return false;
        };
        match result {
            Ok(()) => {
                self.server_listeners[i].open = true;
                self.control.push_back(Frame::ListenOk { listener });
            }
            Err(code) => {
                self.server_listeners.remove(i);
                self.control.push_back(Frame::ListenErr { listener, code });
            }
        }
        true
    }

    /// Server: the bind address of an open listener, for a stream toward the client.
    pub(crate) fn listener_bind(&self, listener: u32) -> Option<Target> {
        self.server_listeners
            .iter()
            .find(|l| l.id == listener && l.open)
            .map(|l| l.bind.clone())
    }

    /// Server: ends a listener with `code`, telling the client if `tell`, and the
    /// application (`ListenClosed`) if it listens.
    fn close_server_listener(
        &mut self,
        listener: u32,
        code: StreamCode,
        tell: bool,
        ctx: &mut Ctx<'_>,
    ) {
        let Some(i) = self.server_listeners.iter().position(|l| l.id == listener) else {
            return;
        };
        self.server_listeners.remove(i);
        if tell {
            self.control.push_back(Frame::ListenErr { listener, code });
        }
        ctx.events.push_back(Event::ListenClosed {
            peer: self.peer,
            listener,
            code,
        });
    }

    /// Server, after a reload: listeners the new rules no longer allow end with
    /// `ListenNotAllowed`. Returns them with their bind addresses.
    pub(crate) fn recheck_listeners(
        &mut self,
        policy: &ServerPolicy,
        ctx: &mut Ctx<'_>,
    ) -> Vec<(u32, Target)> {
        let Role::Responder(admission) = self.role else {
            return Vec::new();
        };
        let rules = policy.listen_rules(&self.peer, admission);
        let gone: Vec<(u32, Target)> = self
            .server_listeners
            .iter()
            .filter(|l| rules.allowing(&l.bind).is_none())
            .map(|l| (l.id, l.bind.clone()))
            .collect();
        for (id, _) in &gone {
            self.close_server_listener(*id, StreamCode::ListenNotAllowed, true, ctx);
        }
        gone
    }
}
