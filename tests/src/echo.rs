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

/// Runs until the client's stream closed (returns the echo) or, for a server, until its
/// first stream closed (returns what it echoed).
pub async fn run<T: Transport>(
    mut ep: Endpoint,
    mut transport: T,
    role: Role,
    sleep: Sleep,
) -> Result<Vec<u8>, String> {
    let mut held: HashMap<PeerId, Bytes> = HashMap::new();
    let mut received = Vec::new();
    let mut to_write: HashMap<StreamId, (VecDeque<Bytes>, bool)> = HashMap::new();
    #[allow(clippy::disallowed_methods)]
    let mut now = Instant::now();
    if let Role::Client {
        server,
        target,
        payload,
    } = &role
    {
        transport
            .add_friend(server, b"toxtun/1")
            .map_err(|e| e.to_string())?;
        let s = ep
            .open(now, server.public_key, target.clone())
            .map_err(|e| e.to_string())?;
        to_write.insert(s, (VecDeque::from([payload.clone()]), true));
    }
    let mut deadline = None;
    let mut done = false;
    // After its stream closed, an endpoint keeps running a moment, as a daemon does: the
    // peer's last fast-path packets still wait for their acknowledgement (the receiver
    // sends it within 2 ms), and the peer frees its stream only then.
    let mut linger_until: Option<Instant> = None;
    loop {
        // Carry out everything the endpoint wants, reacting to events as the app.
        let mut work = true;
        while work {
            work = false;
            while let Some(out) = ep.poll_output(now) {
                match out {
                    Output::Timeout(t) => {
                        deadline = Some(t);
                        break;
                    }
                    Output::Transmit { peer, packet } => match transport.send(peer, packet) {
                        Ok(()) | Err(SendError::Offline) => {}
                        Err(SendError::QueueFull(p)) => {
                            held.insert(peer, p);
                            ep.handle_input(now, Input::SendBlocked(peer));
                        }
                        Err(e) => return Err(format!("send: {e}")),
                    },
                    Output::Event(e) => {
                        work = true;
                        match e {
                            Event::FriendRequest {
                                peer,
                                decision: Ok(()),
                            } => {
                                let _ = transport.accept_friend(peer);
                            }
                            Event::StreamIncoming { stream, .. } => {
                                ep.accept(stream).map_err(|e| e.to_string())?;
                                to_write.insert(stream, (VecDeque::new(), false));
                            }
                            Event::StreamReadable { stream } => loop {
                                match ep.read(stream, usize::MAX) {
                                    Ok(Some(chunk)) => {
                                        received.extend_from_slice(&chunk);
                                        if matches!(role, Role::Server) {
                                            if let Some(w) = to_write.get_mut(&stream) {
                                                w.0.push_back(chunk);
                                            }
                                        }
                                    }
                                    Ok(None) => {
                                        if let Some(w) = to_write.get_mut(&stream) {
                                            w.1 = true; // echo finished: finish ours
                                        }
                                        break;
                                    }
                                    Err(ReadError::Blocked) => break,
                                    Err(e) => return Err(format!("read: {e}")),
                                }
                            },
                            // Done, but only after the drain: the FIN that closed the
                            // stream may still be waiting in the endpoint's output.
                            Event::StreamClosed { .. } => done = true,
                            Event::StreamReset { code, .. } | Event::StreamRefused { code, .. } => {
                                return Err(format!("stream ended: {code}"))
                            }
                            _ => {}
                        }
                    }
                }
            }
            for (stream, (queue, fin)) in to_write.iter_mut() {
                while let Some(front) = queue.front_mut() {
                    match ep.write(*stream, front.clone()) {
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
                    let _ = ep.finish(*stream);
                    work = true;
                }
            }
        }
        if done {
            let until = *linger_until.get_or_insert(now + std::time::Duration::from_millis(200));
            if now >= until {
                return Ok(received);
            }
            deadline = Some(deadline.map_or(until, |d: Instant| d.min(until)));
        }
        // Wait for the transport or the timer, whichever comes first.
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
            Some(Some(TransportEvent::SendReady(peer))) => {
                if let Some(p) = held.remove(&peer) {
                    match transport.send(peer, p) {
                        Ok(()) => ep.handle_input(now, Input::SendReady(peer)),
                        Err(SendError::QueueFull(p)) => {
                            held.insert(peer, p);
                        }
                        Err(_) => ep.handle_input(now, Input::SendReady(peer)),
                    }
                }
            }
            Some(Some(ev)) => {
                if let TransportEvent::FriendOffline(p) = &ev {
                    held.remove(p);
                }
                if let Some(input) = ev.into_input() {
                    ep.handle_input(now, input);
                }
            }
            None => {
                deadline = None;
                ep.handle_timeout(now);
            }
        }
    }
}
