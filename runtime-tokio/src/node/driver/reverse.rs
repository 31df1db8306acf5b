//! Reverse forwarding in the driver. As a server: the sockets it listens on for its
//! clients, and a stream toward the client for each connection they accept. As a client:
//! the listeners it asked servers for, and the local targets their streams may reach.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use toxtun_proto::{Event, PeerId, StreamCode, Target, Transport};

use super::super::stream::{pipes, run_stream, Note};
use super::super::NodeEvent;
use super::{now, Driver};

/// What the driver keeps for reverse forwarding.
#[derive(Debug, Default)]
pub(in crate::node) struct Reverse {
    /// Server: the accepting task of each listener, by client and listener number, with
    /// its bind address.
    listeners: HashMap<(PeerId, u32), (Target, tokio::task::AbortHandle)>,
    /// Server: listeners being bound, with their addresses. A client that restarts numbers
    /// its listeners from 1 again: a bind from its old session must not answer its new one.
    pending: HashMap<(PeerId, u32), Target>,
    /// Client: where streams from servers' listeners may go (what `listen` named).
    pub(super) targets: HashSet<Target>,
}

impl<T: Transport> Driver<T> {
    /// The endpoint's reverse-forwarding events; `false` if `e` is not one.
    pub(super) fn on_reverse_event(&mut self, e: &Event) -> bool {
        match e {
            Event::ListenRequested {
                peer,
                listener,
                bind,
            } => self.bind_listener(*peer, *listener, bind.clone()),
            Event::ListenClosed {
                peer,
                listener,
                code,
            } => self.stop_listener(*peer, *listener, *code),
            Event::ListenDenied { peer, bind, code } => self.emit(NodeEvent::ListenStopped {
                peer: *peer,
                bind: bind.clone(),
                code: *code,
            }),
            Event::ListenReady { peer, bind } => self.emit(NodeEvent::ListenReady {
                peer: *peer,
                bind: bind.clone(),
            }),
            Event::ListenRefused { peer, bind, code } => self.emit(NodeEvent::ListenRefused {
                peer: *peer,
                bind: bind.clone(),
                code: *code,
            }),
            _ => return false,
        }
        true
    }

    /// Server: binds `bind` for the client, off the driver's task.
    fn bind_listener(&mut self, peer: PeerId, listener: u32, bind: Target) {
        self.reverse.pending.insert((peer, listener), bind.clone());
        let notes = self.notes.clone();
        tokio::spawn(async move {
            let host = bind.host.to_wire();
            let r = match TcpListener::bind((host.as_str(), bind.port)).await {
                Ok(l) => Ok(l),
                Err(e) => {
                    tracing::warn!(%peer, %bind, "cannot listen for the client: {e}");
                    Err(StreamCode::ListenFailed)
                }
            };
            let _ = notes.send(Note::Listened(peer, listener, bind, r));
        });
    }

    /// Server: the bind finished; tell the client, and accept connections if it worked.
    pub(super) fn on_listened(
        &mut self,
        peer: PeerId,
        listener: u32,
        bind: Target,
        result: Result<TcpListener, StreamCode>,
    ) {
        match self.reverse.pending.get(&(peer, listener)) {
            Some(b) if *b == bind => {
                self.reverse.pending.remove(&(peer, listener));
            }
            _ => return, // asked for in a session that has ended: the socket just closes
        }
        let answer = result.as_ref().map(|_| ()).map_err(|c| *c);
        // The session may have ended, or the client given the listener up, meanwhile:
        // then the socket just closes.
        if self.endpoint.answer_listen(peer, listener, answer).is_err() {
            return;
        }
        let socket = match result {
            Ok(l) => l,
            Err(code) => return self.emit(NodeEvent::ListenStopped { peer, bind, code }),
        };
        let notes = self.notes.clone();
        let task = tokio::spawn(async move {
            loop {
                match socket.accept().await {
                    Ok((tcp, _)) => {
                        if notes.send(Note::ReverseConn(peer, listener, tcp)).is_err() {
                            return;
                        }
                    }
                    // Out of descriptors, most likely: let some close.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        self.reverse
            .listeners
            .insert((peer, listener), (bind.clone(), task.abort_handle()));
        self.emit(NodeEvent::Listening { peer, bind });
    }

    /// Server: a connection on a client's listener becomes a stream toward the client.
    pub(super) fn on_reverse_conn(&mut self, peer: PeerId, listener: u32, tcp: TcpStream) {
        let Some((bind, _)) = self.reverse.listeners.get(&(peer, listener)) else {
            return; // closed meanwhile: the connection is dropped
        };
        let bind = bind.clone();
        match self.endpoint.open_reverse(now(), peer, listener) {
            Ok(id) => {
                let _ = tcp.set_nodelay(true);
                let (io, p) = pipes(id, &self.notes, StreamCode::Cancelled);
                self.streams.insert(id, io);
                self.emit(NodeEvent::StreamOpen {
                    stream: id,
                    target: bind,
                    incoming: false,
                });
                tokio::spawn(run_stream(tcp, p));
            }
            Err(e) => {
                tracing::warn!(%peer, %bind, "connection on the client's listener dropped: {e}")
            }
        }
    }

    /// Server: stops listener `listener` of `peer` (the client gave it up, a reload).
    fn stop_listener(&mut self, peer: PeerId, listener: u32, code: StreamCode) {
        if let Some((bind, task)) = self.reverse.listeners.remove(&(peer, listener)) {
            task.abort();
            self.emit(NodeEvent::ListenStopped { peer, bind, code });
        }
    }

    /// Server: the session with `peer` ended, and its listeners with it.
    pub(super) fn stop_listeners_of(&mut self, peer: PeerId) {
        self.reverse.pending.retain(|(p, _), _| *p != peer);
        let ids: Vec<u32> = self
            .reverse
            .listeners
            .keys()
            .filter(|(p, _)| *p == peer)
            .map(|(_, l)| *l)
            .collect();
        for l in ids {
            self.stop_listener(peer, l, StreamCode::SessionClosed);
        }
    }
}
