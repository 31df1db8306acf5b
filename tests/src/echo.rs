//! A minimal async driver for one endpoint over any [`Transport`], with no runtime of its
//! own: the caller passes how to sleep until an instant. The tests run it under smol and
//! under tokio to show that neither the core nor the mock transport depends on either.
//!
//! The application is fixed: a client that sends a payload on one stream and reads back
//! the echo, and a server that echoes every stream it accepts.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use bytes::Bytes;
use futures_lite::future;
use toxtun_proto::{
    Endpoint, Event, Input, Output, PeerId, ReadError, SendError, StreamId, Target, ToxId,
    Transport, TransportEvent,
};

/// Sleeps until an instant; the runtime's own timer.
pub type Sleep = fn(Instant) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the echo application does.
#[derive(Debug)]
pub enum Role {
    /// Befriend `server`, open a stream to `target`, send `payload`, read the echo.
    Client {
        /// The server's Tox ID.
        server: ToxId,
        /// Where the stream goes.
        target: Target,
        /// What to send.
        payload: Bytes,
    },
    /// Accept friends and streams as the policy allows; echo every byte back.
    Server,
}

/// The endpoint, its transport and the echo application's state.
struct Echo<T> {
    ep: Endpoint,
    transport: T,
    role: Role,
    /// Per peer: the packet the transport refused with `QueueFull`.
    held: HashMap<PeerId, Bytes>,
    received: Vec<u8>,
    /// Per stream: what is still to write, and whether FIN follows it.
    to_write: HashMap<StreamId, (VecDeque<Bytes>, bool)>,
    deadline: Option<Instant>,
    /// The stream closed (the client's, or the server's first).
    done: bool,
}

/// Runs until the client's stream closed (returns the echo) or, for a server, until its
/// first stream closed (returns what it echoed).
pub async fn run<T: Transport>(
    ep: Endpoint,
    transport: T,
    role: Role,
    sleep: Sleep,
) -> Result<Vec<u8>, String> {
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    let mut app = Echo {
        ep,
        transport,
        role,
        held: HashMap::new(),
        received: Vec::new(),
        to_write: HashMap::new(),
        deadline: None,
        done: false,
    };
    app.start(now)?;
    // After its stream closed, an endpoint keeps running a moment, as a daemon does: the
    // peer's last fast-path packets still wait for their acknowledgement (the receiver
    // sends it within 2 ms), and the peer frees its stream only then.
    let mut linger_until: Option<Instant> = None;
    loop {
        // Carry out everything the endpoint wants, reacting to events as the app.
        while app.drain(now)? | app.write_pending() {}
        if app.done {
            let until = *linger_until.get_or_insert(now + std::time::Duration::from_millis(200));
            if now >= until {
                return Ok(app.received);
            }
            app.deadline = Some(app.deadline.map_or(until, |d: Instant| d.min(until)));
        }
        // Wait for the transport or the timer, whichever comes first.
        let deadline = app.deadline;
        let transport = &mut app.transport;
        let event = future::or(
            async { Some(std::future::poll_fn(|cx| transport.poll_event(cx)).await) },
            async {
                match deadline {
                    Some(t) => sleep(t).await,
                    None => future::pending::<()>().await,
                }
                None
            },
        )
        .await;
        #[allow(clippy::disallowed_methods)]
        {
            now = Instant::now();
        }
        match event {
            Some(None) => return Err("transport closed".into()),
            Some(Some(ev)) => app.on_transport(now, ev),
            None => {
                app.deadline = None;
                app.ep.handle_timeout(now);
            }
        }
    }
}

impl<T: Transport> Echo<T> {
    /// A client befriends the server and opens its stream, with the payload to write.
    fn start(&mut self, now: Instant) -> Result<(), String> {
        if let Role::Client {
            server,
            target,
            payload,
        } = &self.role
        {
            self.transport
                .add_friend(server, b"toxtun/1")
                .map_err(|e| e.to_string())?;
            let s = self
                .ep
                .open(now, server.public_key, target.clone())
                .map_err(|e| e.to_string())?;
            self.to_write
                .insert(s, (VecDeque::from([payload.clone()]), true));
        }
        Ok(())
    }

    /// The drain rule: sends the endpoint's packets and handles its events. Returns
    /// whether an event came (the application may have more to do).
    fn drain(&mut self, now: Instant) -> Result<bool, String> {
        let mut work = false;
        while let Some(out) = self.ep.poll_output(now) {
            match out {
                Output::Timeout(t) => {
                    self.deadline = Some(t);
                    break;
                }
                Output::Transmit { peer, packet } => match self.transport.send(peer, packet) {
                    Ok(()) | Err(SendError::Offline) => {}
                    Err(SendError::QueueFull(p)) => {
                        self.held.insert(peer, p);
                        self.ep.handle_input(now, Input::SendBlocked(peer));
                    }
                    Err(e) => return Err(format!("send: {e}")),
                },
                Output::Event(e) => {
                    work = true;
                    self.on_event(e)?;
                }
            }
        }
        Ok(work)
    }

    fn on_event(&mut self, e: Event) -> Result<(), String> {
        match e {
            Event::FriendRequest {
                peer,
                decision: Ok(()),
            } => {
                let _ = self.transport.accept_friend(peer);
            }
            Event::StreamIncoming { stream, .. } => {
                self.ep.accept(stream).map_err(|e| e.to_string())?;
                self.to_write.insert(stream, (VecDeque::new(), false));
            }
            Event::StreamReadable { stream } => self.read_all(stream)?,
            // Done, but only after the drain: the FIN that closed the stream may still be
            // waiting in the endpoint's output.
            Event::StreamClosed { .. } => self.done = true,
            Event::StreamReset { code, .. } | Event::StreamRefused { code, .. } => {
                return Err(format!("stream ended: {code}"))
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads what `stream` has; a server queues it to echo back, and finishes its side
    /// once the peer's ended.
    fn read_all(&mut self, stream: StreamId) -> Result<(), String> {
        loop {
            match self.ep.read(stream, usize::MAX) {
                Ok(Some(chunk)) => {
                    self.received.extend_from_slice(&chunk);
                    if matches!(self.role, Role::Server) {
                        if let Some(w) = self.to_write.get_mut(&stream) {
                            w.0.push_back(chunk);
                        }
                    }
                }
                Ok(None) => {
                    if let Some(w) = self.to_write.get_mut(&stream) {
                        w.1 = true; // echo finished: finish ours
                    }
                    return Ok(());
                }
                Err(ReadError::Blocked) => return Ok(()),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Writes what the credit allows; returns whether a FIN went (more output follows).
    fn write_pending(&mut self) -> bool {
        let mut work = false;
        for (stream, (queue, fin)) in self.to_write.iter_mut() {
            while let Some(front) = queue.front_mut() {
                match self.ep.write(*stream, front.clone()) {
                    Ok(n) if n == front.len() => {
                        queue.pop_front();
                    }
                    Ok(n) => {
                        let _ = front.split_to(n);
                        break;
                    }
                    Err(_) => break,
                }
            }
            if queue.is_empty() && *fin {
                *fin = false;
                let _ = self.ep.finish(*stream);
                work = true;
            }
        }
        work
    }

    /// A transport event: a held packet goes on `SendReady`; the rest goes to the endpoint.
    fn on_transport(&mut self, now: Instant, ev: TransportEvent) {
        if let TransportEvent::SendReady(peer) = ev {
            if let Some(p) = self.held.remove(&peer) {
                match self.transport.send(peer, p) {
                    Ok(()) => self.ep.handle_input(now, Input::SendReady(peer)),
                    Err(SendError::QueueFull(p)) => {
                        self.held.insert(peer, p);
                    }
                    Err(_) => self.ep.handle_input(now, Input::SendReady(peer)),
                }
            }
            return;
        }
        if let TransportEvent::FriendOffline(p) = &ev {
            self.held.remove(p);
        }
        if let Some(input) = ev.into_input() {
            self.ep.handle_input(now, input);
        }
    }
}
