//! UDP forwarding in the driver (`forward -U`): a client's local UDP sockets, where each
//! source address becomes a flow through its server, and a server's sockets toward each
//! flow's target. Datagrams move between them and the endpoint as they come, one by one:
//! nothing here queues more than the bounded input channel, and a datagram that finds it
//! (or a socket's send buffer) full is dropped and counted, as UDP expects.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use toxtun_proto::{Event, PeerId, StreamCode, Target, Transport};

use super::{now, Driver, Note};

/// Datagrams read from sockets and waiting for the driver; past it they are dropped
/// (counted in `udp_dropped`). About 1.4 MB of full-size datagrams: 0.2 s at 50 Mbit/s.
pub(in crate::node) const UDP_IN_QUEUE: usize = 1024;
/// Flows one `-U` forward keeps (one per source address); a new source past it closes
/// the least recently used, as a NAT's table does.
const MAX_FLOWS_PER_FORWARD: usize = 256;
/// How long datagrams from a source whose flow the server refused are dropped before its
/// next datagram asks again: a refused DNS client does not send a UOPEN per retry.
const REFUSED_BACKOFF: Duration = Duration::from_secs(2);

/// A datagram read from a socket.
#[derive(Debug)]
pub(in crate::node) enum UdpIn {
    /// Client: from a local application, on forward `forward`.
    Local {
        forward: u32,
        from: SocketAddr,
        payload: Bytes,
    },
    /// Server: from flow `flow`'s target.
    Target {
        peer: PeerId,
        flow: u32,
        payload: Bytes,
    },
}

/// A client's `-U` forward: its socket, and where its flows go.
struct Forward {
    socket: Arc<UdpSocket>,
    server: PeerId,
    target: Target,
    reader: AbortHandle,
}

/// Where a flow's datagrams from the peer go.
enum FlowEnd {
    /// Client: back to the local source address, from the forward's socket.
    Local { forward: u32, from: SocketAddr },
    /// Server: to the target, on the flow's own connected socket.
    Target {
        socket: Arc<UdpSocket>,
        reader: AbortHandle,
    },
}

/// A client's flow for one source address.
struct Source {
    peer: PeerId,
    flow: u32,
    last: Instant,
}

/// The driver's UDP state.
pub(in crate::node) struct Udp {
    forwards: HashMap<u32, Forward>,
    sources: HashMap<(u32, SocketAddr), Source>,
    flows: HashMap<(PeerId, u32), FlowEnd>,
    refused: HashMap<(u32, SocketAddr), Instant>,
    next_forward: u32,
    tx: mpsc::Sender<UdpIn>,
    /// Datagrams dropped here before the endpoint saw them (the input channel was full)
    /// or after (a socket's send buffer was full).
    pub(in crate::node) dropped: Arc<AtomicU64>,
}

impl Udp {
    /// The state, and the receiving end of its input channel (the driver's loop reads it).
    pub(in crate::node) fn new() -> (Self, mpsc::Receiver<UdpIn>) {
        let (tx, rx) = mpsc::channel(UDP_IN_QUEUE);
        let udp = Udp {
            forwards: HashMap::new(),
            sources: HashMap::new(),
            flows: HashMap::new(),
            refused: HashMap::new(),
            next_forward: 0,
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (udp, rx)
    }

    /// Reads datagrams from `socket` into the input channel, until aborted.
    fn spawn_reader<F>(&self, socket: Arc<UdpSocket>, wrap: F) -> AbortHandle
    where
        F: Fn(SocketAddr, Bytes) -> UdpIn + Send + 'static,
    {
        let (tx, dropped) = (self.tx.clone(), self.dropped.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        match tx.try_send(wrap(from, Bytes::copy_from_slice(&buf[..n]))) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                    // A connected socket hears ICMP "port unreachable" as an error once:
                    // the target is not up (yet); UDP carries on.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(e) => {
                        tracing::debug!("UDP receive failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
        .abort_handle()
    }

    fn forget_flow(&mut self, peer: PeerId, flow: u32) -> Option<FlowEnd> {
        let end = self.flows.remove(&(peer, flow))?;
        match &end {
            FlowEnd::Local { forward, from } => {
                self.sources.remove(&(*forward, *from));
            }
            FlowEnd::Target { reader, .. } => reader.abort(),
        }
        Some(end)
    }

    /// Sends `payload` where flow `(peer, flow)` ends on this side.
    fn deliver(&self, peer: PeerId, flow: u32, payload: &[u8]) {
        let sent = match self.flows.get(&(peer, flow)) {
            Some(FlowEnd::Local { forward, from }) => match self.forwards.get(forward) {
                Some(f) => f.socket.try_send_to(payload, *from).map(|_| ()),
                None => return,
            },
            Some(FlowEnd::Target { socket, .. }) => socket.try_send(payload).map(|_| ()),
            None => return,
        };
        if sent.is_err() {
            // The send buffer is full (or the target went): UDP drops it.
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Udp {
    fn drop(&mut self) {
        for f in self.forwards.values() {
            f.reader.abort();
        }
        for end in self.flows.values() {
            if let FlowEnd::Target { reader, .. } = end {
                reader.abort();
            }
        }
    }
}

/// Server: a socket connected toward `target` (its name resolved here).
pub(in crate::node) async fn bind_toward(target: &Target) -> Result<UdpSocket, StreamCode> {
    let host = target.host.to_wire();
    let addr = tokio::net::lookup_host((host.as_str(), target.port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or(StreamCode::TargetUnreachable)?;
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|_| StreamCode::TargetIo)?;
    socket
        .connect(addr)
        .await
        .map_err(|_| StreamCode::TargetUnreachable)?;
    Ok(socket)
}

impl<T: Transport> Driver<T> {
    /// Client: forwards each datagram that reaches `socket` to `target` through `server`,
    /// one flow per source address, and the answers back to that address.
    pub(super) fn forward_udp(&mut self, server: PeerId, socket: UdpSocket, target: Target) -> u32 {
        self.udp.next_forward += 1;
        let id = self.udp.next_forward;
        let socket = Arc::new(socket);
        let reader = self
            .udp
            .spawn_reader(socket.clone(), move |from, payload| UdpIn::Local {
                forward: id,
                from,
                payload,
            });
        self.udp.forwards.insert(
            id,
            Forward {
                socket,
                server,
                target,
                reader,
            },
        );
        self.endpoint.connect(now(), server);
        id
    }

    /// Stops forward `id`: its socket closes, its flows end.
    pub(super) fn stop_udp(&mut self, id: u32) {
        let Some(f) = self.udp.forwards.remove(&id) else {
            return;
        };
        f.reader.abort();
        let flows: Vec<(PeerId, u32)> = self
            .udp
            .sources
            .iter()
            .filter(|((fw, _), _)| *fw == id)
            .map(|(_, s)| (s.peer, s.flow))
            .collect();
        for (peer, flow) in flows {
            self.udp.forget_flow(peer, flow);
            self.endpoint.close_flow(peer, flow);
        }
        self.udp.refused.retain(|(fw, _), _| *fw != id);
    }

    /// A datagram read from a socket: into its flow (a client opens one for a new source).
    pub(super) fn on_udp_in(&mut self, msg: UdpIn) {
        let now = now();
        let (peer, flow, payload) = match msg {
            UdpIn::Target {
                peer,
                flow,
                payload,
            } => (peer, flow, payload),
            UdpIn::Local {
                forward,
                from,
                payload,
            } => match self.client_flow(now, forward, from) {
                Some((peer, flow)) => (peer, flow, payload),
                None => {
                    self.udp.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        };
        // A full queue is counted by the endpoint (the session's `datagrams_dropped`).
        let _ = self.endpoint.send_datagram(now, peer, flow, payload);
    }

    /// Client: the flow for datagrams from `from` on `forward`, opened if new (and not
    /// refused a moment ago).
    fn client_flow(
        &mut self,
        now: Instant,
        forward: u32,
        from: SocketAddr,
    ) -> Option<(PeerId, u32)> {
        let udp = &mut self.udp;
        if let Some(s) = udp.sources.get_mut(&(forward, from)) {
            s.last = now;
            return Some((s.peer, s.flow));
        }
        if udp.refused.get(&(forward, from)).is_some_and(|t| now < *t) {
            return None;
        }
        udp.refused.retain(|_, t| now < *t);
        let f = udp.forwards.get(&forward)?;
        let (server, target) = (f.server, f.target.clone());
        let in_use = udp.sources.keys().filter(|(fw, _)| *fw == forward).count();
        if in_use >= MAX_FLOWS_PER_FORWARD {
            let oldest = udp
                .sources
                .iter()
                .filter(|((fw, _), _)| *fw == forward)
                .min_by_key(|(_, s)| s.last)
                .map(|(_, s)| (s.peer, s.flow));
            if let Some((peer, flow)) = oldest {
                udp.forget_flow(peer, flow);
                self.endpoint.close_flow(peer, flow);
            }
        }
        let flow = self.endpoint.open_flow(now, server, target.clone()).ok()?;
        tracing::debug!(%from, %target, flow, "UDP flow opening");
        let udp = &mut self.udp;
        udp.sources.insert(
            (forward, from),
            Source {
                peer: server,
                flow,
                last: now,
            },
        );
        udp.flows
            .insert((server, flow), FlowEnd::Local { forward, from });
        Some((server, flow))
    }

    /// The endpoint's flow events; `false` for any other event.
    pub(super) fn on_flow_event(&mut self, e: &Event) -> bool {
        match e {
            Event::Datagram {
                peer,
                flow,
                payload,
            } => self.udp.deliver(*peer, *flow, payload),
            Event::FlowRequested { peer, flow, target } => {
                let (peer, flow, target) = (*peer, *flow, target.clone());
                let notes = self.notes.clone();
                tokio::spawn(async move {
                    let r = bind_toward(&target).await;
                    let _ = notes.send(Note::FlowBound(peer, flow, target, r));
                });
            }
            Event::FlowOpened { peer, flow } => {
                tracing::debug!(%peer, flow, "UDP flow open");
            }
            Event::FlowRefused { peer, flow, code } => {
                if let Some(FlowEnd::Local { forward, from }) = self.udp.forget_flow(*peer, *flow) {
                    let target = self.udp.forwards.get(&forward).map(|f| f.target.clone());
                    tracing::warn!(%peer, %from, target = ?target.map(|t| t.to_string()),
                        code = code.code(), "UDP flow refused: {code}");
                    self.udp
                        .refused
                        .insert((forward, from), now() + REFUSED_BACKOFF);
                }
            }
            Event::FlowClosed {
                peer, flow, code, ..
            } => {
                tracing::debug!(%peer, flow, code = code.code(), "UDP flow ended: {code}");
                self.udp.forget_flow(*peer, *flow);
            }
            Event::FlowDenied { peer, target, code } => {
                tracing::info!(%peer, %target, code = code.code(), "UDP flow refused: {code}");
            }
            _ => return false,
        }
        true
    }

    /// Server: the socket for a flow is bound toward its target (or could not be).
    pub(super) fn on_flow_bound(
        &mut self,
        peer: PeerId,
        flow: u32,
        target: Target,
        r: Result<UdpSocket, StreamCode>,
    ) {
        match r {
            Ok(socket) => {
                if self.endpoint.answer_flow(peer, flow, Ok(())).is_err() {
                    return; // the client closed it meanwhile
                }
                tracing::debug!(%peer, %target, flow, "UDP flow open");
                self.counters.flows_opened += 1;
                let socket = Arc::new(socket);
                let reader =
                    self.udp
                        .spawn_reader(socket.clone(), move |_, payload| UdpIn::Target {
                            peer,
                            flow,
                            payload,
                        });
                self.udp
                    .flows
                    .insert((peer, flow), FlowEnd::Target { socket, reader });
            }
            Err(code) => {
                tracing::info!(%peer, %target, code = code.code(), "UDP target: {code}");
                if self.endpoint.answer_flow(peer, flow, Err(code)).is_ok() {
                    self.counters.flow_refused(code);
                }
            }
        }
    }

    /// Datagrams dropped by this node outside the endpoint, for `status`.
    pub(super) fn udp_dropped(&self) -> u64 {
        self.udp.dropped.load(Ordering::Relaxed)
    }
}
