//! The driver: one task owns the [`Endpoint`] and the transport, feeds inputs, drains
//! outputs, and arms one timer from the endpoint's deadline. Each stream's local side (a
//! TCP socket, stdio, or a [`TunnelStream`]) is moved by its own task through small bounded
//! channels: a stream without credit is not read from, so a slow far end pushes back all
//! the way to the local application, and memory stays bounded.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use std::task::Poll;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot};
use toxtun_proto::{
    Endpoint, Event, FriendError, Input, Output, PeerId, SendError, SessionCode, SessionStats,
    StreamCode, StreamId, Target, ToxId, Transport, TransportEvent, WriteError,
};

// What one stream can hold in this process, whatever its peer or its local side do (a
// reader that never reads, a target that never reads):
//   towards the peer:  UP_CHANNEL + 1 chunks of READ_CHUNK, plus the core's send buffer
//                      (at most the peer's window for the stream)    = 160 KiB + 256 KiB
//   towards the local: the core's receive buffer (our stream window) + DOWN_CHANNEL + 1
//                      chunks of DOWN_CHUNK, plus a TunnelStream's duplex buffer (64 KiB)
//                                                                   = 256 KiB + 320 KiB + 64 KiB
// so about 1.1 MiB per stream at the first 256 KiB windows, beside the kernel's buffers.
// A window grows (up to 4 MiB) only while its reader keeps up with the peer, and what a
// peer's windows grew, all its streams together, stays within the session window
// (16 MiB): so per peer add at most 16 MiB each way to the figure above. Sent bytes wait
// for their acknowledgement inside those windows (the frame log, or the fast path's
// packets in flight, which are further capped at 4 MiB per peer by its congestion
// window), and each peer's Tox queue holds at most 128 lossless and 256 lossy packets
// (0.5 MiB).

/// Bytes read from a local socket at once.
const READ_CHUNK: usize = 32 * 1024;
/// Chunks in flight from a local socket to the driver, per stream.
const UP_CHANNEL: usize = 4;
/// Chunks in flight from the driver to a local socket, per stream.
const DOWN_CHANNEL: usize = 4;
/// The most bytes one message to a stream's local side carries.
const DOWN_CHUNK: usize = 64 * 1024;
/// The most transport events or notes handled before the endpoint is drained.
const EVENT_BATCH: usize = 64;

/// What happened, for logs and `--json` (with the seed's status codes where they apply).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// The node's own Tox connection (402 connected, 401 offline).
    Tox {
        /// Connected or not.
        connected: bool,
    },
    /// A friend request was sent (104), or adding failed (102/103).
    FriendRequestSent {
        /// To whom.
        peer: PeerId,
        /// The seed's code.
        code: u16,
    },
    /// A friend request was decided by policy (101 accepted, else the refusal's code).
    FriendRequest {
        /// From whom.
        peer: PeerId,
        /// Accepted, or refused with this code.
        decision: Result<(), SessionCode>,
    },
    /// A friend came online (301) or went offline (302).
    Peer {
        /// Who.
        peer: PeerId,
        /// Online or not.
        online: bool,
    },
    /// A friend's link changed path: direct UDP (the fast path can run) or a TCP relay.
    PeerPath {
        /// Who.
        peer: PeerId,
        /// Direct UDP or not.
        direct: bool,
    },
    /// A session is up.
    SessionUp {
        /// With whom.
        peer: PeerId,
        /// Both sides offered the fast path: streams take it while the link is direct UDP.
        fast_path: bool,
    },
    /// The Tox link to the peer was lost while a session was up. Its streams are held
    /// (their local connections simply pause) until the link returns within the resume
    /// grace; then `SessionResumed`, else `SessionDown`.
    SessionSuspended {
        /// With whom.
        peer: PeerId,
    },
    /// A suspended session resumed: its streams carry on, nothing lost.
    SessionResumed {
        /// With whom.
        peer: PeerId,
    },
    /// A session ended.
    SessionDown {
        /// With whom.
        peer: PeerId,
        /// Why.
        code: SessionCode,
        /// Said by the peer.
        remote: bool,
    },
    /// A stream opened (locally or by the peer) to `target`.
    StreamOpen {
        /// The stream.
        stream: StreamId,
        /// Where it goes.
        target: Target,
        /// Opened by the peer.
        incoming: bool,
    },
    /// A stream ended; `code` is `None` for a clean close.
    StreamEnd {
        /// The stream.
        stream: StreamId,
        /// Why, if not cleanly.
        code: Option<StreamCode>,
    },
}

impl NodeEvent {
    /// The seed's status code, where one applies.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            NodeEvent::Tox { connected } => Some(if *connected { 402 } else { 401 }),
            NodeEvent::FriendRequestSent { code, .. } => Some(*code),
            NodeEvent::FriendRequest {
                decision: Ok(()), ..
            } => Some(101),
            NodeEvent::Peer { online, .. } => Some(if *online { 301 } else { 302 }),
            _ => None,
        }
    }
}

/// What the local side of a stream sends to the driver.
enum Up {
    Data(Bytes),
    /// The local side finished writing (EOF).
    Fin,
    /// The local side failed.
    Abort(StreamCode),
}

/// What the driver sends to the local side of a stream.
#[derive(Debug)]
enum Down {
    /// Packets' payloads, in order, at most `DOWN_CHUNK` bytes together: written with one
    /// vectored write, not gathered by a copy first.
    Data(Vec<Bytes>),
    /// The peer finished: shut down our write side.
    Fin,
    /// The stream was reset or refused.
    Reset(StreamCode),
}

/// Notes from stream tasks to the driver.
enum Note {
    /// A chunk (or the end) waits in the stream's up channel.
    Up(StreamId),
    /// The stream's task consumed a down chunk: room to read more from the endpoint.
    DownSpace(StreamId),
    /// A connection to a target for an incoming stream succeeded or failed.
    Connected(StreamId, Result<TcpStream, StreamCode>),
}

/// The driver's end of one stream's channels.
struct StreamIo {
    up: mpsc::Receiver<Up>,
    /// A chunk the endpoint took only part of (waiting for credit).
    pending: Option<Bytes>,
    down: mpsc::Sender<Down>,
    /// Our FIN was given to the endpoint.
    fin_sent: bool,
}

/// The stream task's end of one stream's channels.
struct StreamPipes {
    id: StreamId,
    up: mpsc::Sender<Up>,
    down: mpsc::Receiver<Down>,
    notes: mpsc::UnboundedSender<Note>,
}

fn pipes(id: StreamId, notes: &mpsc::UnboundedSender<Note>) -> (StreamIo, StreamPipes) {
    let (up_tx, up_rx) = mpsc::channel(UP_CHANNEL);
    let (down_tx, down_rx) = mpsc::channel(DOWN_CHANNEL);
    (
        StreamIo {
            up: up_rx,
            pending: None,
            down: down_tx,
            fin_sent: false,
        },
        StreamPipes {
            id,
            up: up_tx,
            down: down_rx,
            notes: notes.clone(),
        },
    )
}

/// How a node behaves beyond its endpoint.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Connect incoming streams that the policy allowed to their targets (a server).
    /// Without it, incoming streams are refused with `NotAccepting`.
    pub serve: bool,
    /// How long connecting to a target may take.
    pub connect_timeout: Duration,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            serve: false,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Commands from handles to the driver.
enum Cmd {
    Befriend(ToxId, Vec<u8>, oneshot::Sender<Result<(), String>>),
    Open(PeerId, Target, oneshot::Sender<Result<StreamPipes, String>>),
    Shutdown(oneshot::Sender<()>),
    Stats(PeerId, oneshot::Sender<Option<SessionStats>>),
}

/// A handle to a running node. Cheap to clone. The node runs while any handle lives:
/// dropping the last one closes its sessions (CLOSE `Shutdown`) and stops it.
#[derive(Clone, Debug)]
pub struct Node {
    cmd: mpsc::Sender<Cmd>,
    events: broadcast::Sender<NodeEvent>,
    id: ToxId,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Befriend(..) => "Befriend",
            Cmd::Open(..) => "Open",
            Cmd::Shutdown(..) => "Shutdown",
            Cmd::Stats(..) => "Stats",
        })
    }
}

/// Why a node command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The node has stopped.
    #[error("the toxtun node has stopped")]
    Stopped,
    /// The command failed.
    #[error("{0}")]
    Failed(String),
}

impl Node {
    /// Starts a node driving `endpoint` over `transport` on the current tokio runtime.
    pub fn spawn<T>(
        endpoint: Endpoint,
        transport: T,
        options: NodeOptions,
    ) -> (Node, tokio::task::JoinHandle<()>)
    where
        T: Transport + Send + 'static,
    {
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, _) = broadcast::channel(4096);
        let (note_tx, note_rx) = mpsc::unbounded_channel();
        let id = transport.id();
        let driver = Driver {
            endpoint,
            transport,
            options,
            held: HashMap::new(),
            streams: HashMap::new(),
            events: ev_tx.clone(),
            notes: note_tx,
            deadline: None,
            stats_logged: now(),
        };
        let join = tokio::spawn(driver.run(cmd_rx, note_rx));
        (
            Node {
                cmd: cmd_tx,
                events: ev_tx,
                id,
            },
            join,
        )
    }

    /// This node's Tox ID.
    pub fn id(&self) -> ToxId {
        self.id
    }

    /// Subscribes to the node's events.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    /// Befriends a server with a request carrying `message` and keeps a session with it,
    /// reconnecting by itself when it goes away and comes back.
    pub async fn connect(&self, server: ToxId, message: Vec<u8>) -> Result<(), NodeError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Befriend(server, message, tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await
            .map_err(|_| NodeError::Stopped)?
            .map_err(NodeError::Failed)
    }

    /// Opens a stream to `target` through `server`. Bytes may be written at once (they
    /// follow the OPEN without waiting for the server); a refusal ends the stream.
    pub async fn open(&self, server: PeerId, target: Target) -> Result<TunnelStream, NodeError> {
        let pipes = self.open_pipes(server, target).await?;
        let id = pipes.id;
        let (mine, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(run_stream(theirs, pipes));
        Ok(TunnelStream { id, io: mine })
    }

    async fn open_pipes(&self, server: PeerId, target: Target) -> Result<StreamPipes, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Open(server, target, tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await
            .map_err(|_| NodeError::Stopped)?
            .map_err(NodeError::Failed)
    }

    /// Carries a local connection (e.g. one a listener accepted) through a new stream until
    /// both directions end or the stream is reset. The socket is moved by the stream's own
    /// task, with no extra copy.
    pub async fn forward<S>(
        &self,
        server: PeerId,
        target: Target,
        local: S,
    ) -> Result<(), NodeError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let pipes = self.open_pipes(server, target).await?;
        tokio::spawn(run_stream(local, pipes))
            .await
            .map_err(|e| NodeError::Failed(e.to_string()))
    }

    /// The counters of the session with `peer` (bytes, resends, whether the fast path runs,
    /// its round trip and window), if there is one.
    pub async fn session_stats(&self, peer: PeerId) -> Result<Option<SessionStats>, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Stats(peer, tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Closes every session (CLOSE with `Shutdown`) and stops the node.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// One tunnelled stream as a byte stream (tokio's `AsyncRead` + `AsyncWrite`). Shutting
/// down its write side sends FIN (the other direction goes on); it reads end of stream
/// when the peer finishes, or when the stream is reset or refused (the node's events say
/// why, with the code).
#[derive(Debug)]
pub struct TunnelStream {
    id: StreamId,
    io: tokio::io::DuplexStream,
}

impl TunnelStream {
    /// The stream's ID.
    pub fn id(&self) -> StreamId {
        self.id
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Moves one stream's bytes between a local byte stream and the driver's channels, until
/// both directions are done or the stream is reset (then the local side is dropped).
async fn run_stream<S>(io: S, mut p: StreamPipes)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let id = p.id;
    let (mut rd, mut wr) = tokio::io::split(io);
    // Read straight into the buffer the chunk is handed on in (no copy out of a scratch
    // buffer). The core keeps the chunk until its bytes are copied into packets, so a
    // 32 KiB allocation, shared by the reads that filled it, lives that long at most.
    let mut buf = BytesMut::new();
    let (mut read_done, mut write_done) = (false, false);
    while !(read_done && write_done) {
        if buf.capacity() < READ_CHUNK / 2 {
            buf = BytesMut::with_capacity(READ_CHUNK);
        }
        tokio::select! {
            r = rd.read_buf(&mut buf), if !read_done => {
                let msg = match r {
                    Ok(0) => { read_done = true; Up::Fin }
                    Ok(_) => Up::Data(buf.split().freeze()),
                    Err(_) => { read_done = true; write_done = true; Up::Abort(StreamCode::TargetIo) }
                };
                // Waits while the stream has no credit: the socket is not read meanwhile.
                if p.up.send(msg).await.is_err() {
                    return; // the stream is gone (reset)
                }
                let _ = p.notes.send(Note::Up(id));
            }
            d = p.down.recv(), if !write_done => match d {
                Some(Down::Data(chunks)) => {
                    if write_all_vectored(&mut wr, chunks).await.is_err() {
                        let _ = p.up.try_send(Up::Abort(StreamCode::TargetIo));
                        let _ = p.notes.send(Note::Up(id));
                        return;
                    }
                    let _ = p.notes.send(Note::DownSpace(id));
                }
                Some(Down::Fin) => {
                    let _ = wr.shutdown().await;
                    write_done = true;
                }
                // Reset or refused (or the node stopped): drop the local side at once.
                Some(Down::Reset(code)) => {
                    tracing::debug!(stream = %id, code = code.code(), "stream reset: {code}");
                    return;
                }
                None => return,
            },
        }
    }
}

/// Whether a packet goes as a Tox lossy packet (first byte 192..=254).
fn is_lossy(packet: &[u8]) -> bool {
    toxtun_proto::transport::PacketKind::is_lossy(packet)
}

/// Writes every chunk, in order, with as few (vectored) writes as the socket allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    wr: &mut W,
    mut chunks: Vec<Bytes>,
) -> io::Result<()> {
    use bytes::Buf;
    let mut first = 0;
    loop {
        while chunks.get(first).is_some_and(Bytes::is_empty) {
            first += 1;
        }
        if first == chunks.len() {
            return Ok(());
        }
        let slices: Vec<io::IoSlice<'_>> = chunks[first..]
            .iter()
            .map(|c| io::IoSlice::new(c))
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let c = &mut chunks[first];
            let k = n.min(c.len());
            c.advance(k);
            n -= k;
            if c.is_empty() {
                first += 1;
            }
        }
    }
}

/// Connects to a target for an incoming stream; the rules were checked by the endpoint
/// (a name target was allowed by name, so any address it resolves to is what was allowed).
async fn connect_target(target: Target, timeout: Duration) -> Result<TcpStream, StreamCode> {
    let host = target.host.to_wire();
    match tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), target.port))).await {
        Err(_) => Err(StreamCode::TargetTimeout),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Err(StreamCode::TargetRefused)
        }
        Ok(Err(_)) => Err(StreamCode::TargetUnreachable),
    }
}

struct Driver<T> {
    endpoint: Endpoint,
    transport: T,
    options: NodeOptions,
    /// Per peer and lane (lossy or not): the packet the transport refused with `QueueFull`,
    /// sent first later. The endpoint blocks only that lane meanwhile.
    held: HashMap<(PeerId, bool), Bytes>,
    streams: HashMap<StreamId, StreamIo>,
    events: broadcast::Sender<NodeEvent>,
    notes: mpsc::UnboundedSender<Note>,
    deadline: Option<Instant>,
    /// When session counters were last logged (at debug level, every `STATS_LOG_EVERY`).
    stats_logged: Instant,
}

/// How often `-vv` (debug) logs each session's counters: RTT, congestion window, losses.
const STATS_LOG_EVERY: Duration = Duration::from_secs(2);

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

impl<T: Transport> Driver<T> {
    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Cmd>,
        mut notes: mpsc::UnboundedReceiver<Note>,
    ) {
        self.befriend_allowlisted();
        loop {
            self.drain();
            self.log_stats();
            let deadline = self.deadline;
            let sleep = async move {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let transport = &mut self.transport;
            // Transport events come in batches (a burst of packets): take what is ready,
            // up to a bound, so the endpoint is drained once per batch, not per packet.
            let batch = std::future::poll_fn(|cx| {
                let mut evs = Vec::new();
                while evs.len() < EVENT_BATCH {
                    match transport.poll_event(cx) {
                        Poll::Ready(Some(ev)) => evs.push(ev),
                        Poll::Ready(None) if evs.is_empty() => return Poll::Ready(None),
                        Poll::Ready(None) | Poll::Pending => break,
                    }
                }
                if evs.is_empty() {
                    Poll::Pending
                } else {
                    Poll::Ready(Some(evs))
                }
            });
            tokio::select! {
                evs = batch => match evs {
                    Some(evs) => {
                        for ev in evs {
                            self.on_transport(ev);
                        }
                    }
                    None => {
                        tracing::warn!("transport stopped; the node stops");
                        return;
                    }
                },
                cmd = cmds.recv() => match cmd {
                    Some(Cmd::Shutdown(done)) => {
                        self.endpoint.shutdown();
                        self.drain();
                        // Let the CLOSE frames reach the transport before going.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.on_cmd(cmd),
                    None => {
                        self.endpoint.shutdown();
                        self.drain();
                        return;
                    }
                },
                Some(note) = notes.recv() => {
                    self.on_note(note);
                    for _ in 1..EVENT_BATCH {
                        match notes.try_recv() {
                            Ok(note) => self.on_note(note),
                            Err(_) => break,
                        }
                    }
                }
                () = sleep => self.endpoint.handle_timeout(now()),
            }
        }
    }

    /// A server makes the clients it allowlists by key its friends at once. c-toxcore then
    /// looks for them on the network from the start (a server is usually long on it), so
    /// such a client's link comes up without its friend request having to find the server
    /// first: over real Tox on loopback, 7.2 s from the client's start to its first byte
    /// instead of 10.2 s (BENCHMARKS.md). Who may *use* the link is still the policy's
    /// decision, at the handshake.
    fn befriend_allowlisted(&mut self) {
        let Some(policy) = &self.endpoint.config().server else {
            return;
        };
        let keys: Vec<PeerId> = policy.clients.iter().map(|c| c.peer).collect();
        for peer in keys {
            match self.transport.accept_friend(peer) {
                Ok(_) | Err(FriendError::AlreadyFriend) => {}
                Err(e) => {
                    tracing::warn!(%peer, "cannot add the allowlisted client as a friend: {e}")
                }
            }
        }
    }

    /// At debug level, each session's counters every `STATS_LOG_EVERY`: what a person
    /// looks at when a tunnel is slower than expected.
    fn log_stats(&mut self) {
        if !tracing::enabled!(tracing::Level::DEBUG)
            || self.stats_logged.elapsed() < STATS_LOG_EVERY
        {
            return;
        }
        self.stats_logged = now();
        tracing::debug!(stats = ?self.transport.stats(), "transport counters");
        for peer in self.endpoint.peers() {
            if let Some(st) = self.endpoint.session_stats(peer) {
                tracing::debug!(%peer, stats = ?st, "session counters");
            }
        }
    }

    fn emit(&self, e: NodeEvent) {
        let _ = self.events.send(e);
    }

    /// The drain rule: carry out outputs until the endpoint is idle.
    fn drain(&mut self) {
        let now = now();
        loop {
            match self.endpoint.poll_output(now) {
                None => {
                    self.deadline = None;
                    return;
                }
                Some(Output::Timeout(t)) => {
                    self.deadline = Some(t);
                    return;
                }
                Some(Output::Transmit { peer, packet }) => self.transmit(now, peer, packet),
                Some(Output::Event(e)) => self.on_endpoint_event(e),
            }
        }
    }

    fn transmit(&mut self, now: Instant, peer: PeerId, packet: Bytes) {
        match self.transport.send(peer, packet) {
            Ok(()) => {}
            Err(SendError::QueueFull(p)) => {
                self.held.insert((peer, is_lossy(&p)), p);
                self.endpoint.handle_input(now, Input::SendBlocked(peer));
            }
            // The link is down: the transport reports it, and the endpoint ends the session.
            Err(SendError::Offline) | Err(SendError::NotFriend) => {}
            Err(e) => tracing::warn!(code = ?e.status_code().map(|c| c.code()), "send failed: {e}"),
        }
    }

    fn on_transport(&mut self, ev: TransportEvent) {
        let now = now();
        match ev {
            TransportEvent::SendReady(peer) => {
                // Each lane's held packet first, in its lane's order; the endpoint hears
                // SendReady only once neither is still refused (it then unblocks both).
                let mut still_full = false;
                for lane in [false, true] {
                    if let Some(p) = self.held.remove(&(peer, lane)) {
                        if let Err(SendError::QueueFull(p)) = self.transport.send(peer, p) {
                            self.held.insert((peer, lane), p);
                            still_full = true;
                        }
                    }
                }
                if !still_full {
                    self.endpoint.handle_input(now, Input::SendReady(peer));
                }
            }
            TransportEvent::SelfConnection { connected } => {
                self.emit(NodeEvent::Tox { connected });
            }
            other => {
                match &other {
                    TransportEvent::FriendOnline(p) => self.emit(NodeEvent::Peer {
                        peer: *p,
                        online: true,
                    }),
                    TransportEvent::FriendOffline(p) => {
                        self.held.remove(&(*p, false));
                        self.held.remove(&(*p, true));
                        self.emit(NodeEvent::Peer {
                            peer: *p,
                            online: false,
                        })
                    }
                    TransportEvent::FriendPath { peer, direct } => self.emit(NodeEvent::PeerPath {
                        peer: *peer,
                        direct: *direct,
                    }),
                    _ => {}
                }
                if let Some(input) = other.into_input() {
                    self.endpoint.handle_input(now, input);
                }
            }
        }
    }

    fn on_endpoint_event(&mut self, e: Event) {
        match e {
            Event::FriendRequest { peer, decision } => {
                if decision.is_ok() {
                    match self.transport.accept_friend(peer) {
                        Ok(_) | Err(FriendError::AlreadyFriend) => {}
                        Err(err) => tracing::warn!(%peer, "accepting friend failed: {err}"),
                    }
                }
                self.emit(NodeEvent::FriendRequest { peer, decision });
            }
            Event::SessionEstablished { peer } => {
                let fast_path = self
                    .endpoint
                    .session_stats(peer)
                    .is_some_and(|s| s.fast_path_negotiated);
                self.emit(NodeEvent::SessionUp { peer, fast_path })
            }
            Event::SessionSuspended { peer } => self.emit(NodeEvent::SessionSuspended { peer }),
            Event::SessionResumed { peer } => self.emit(NodeEvent::SessionResumed { peer }),
            Event::SessionClosed { peer, code, remote } => {
                self.emit(NodeEvent::SessionDown { peer, code, remote })
            }
            Event::StreamIncoming { stream, target, .. } => {
                self.emit(NodeEvent::StreamOpen {
                    stream,
                    target: target.clone(),
                    incoming: true,
                });
                if !self.options.serve {
                    let _ = self.endpoint.refuse(stream, StreamCode::NotAccepting);
                    return;
                }
                let notes = self.notes.clone();
                let timeout = self.options.connect_timeout;
                tokio::spawn(async move {
                    let r = connect_target(target, timeout).await;
                    let _ = notes.send(Note::Connected(stream, r));
                });
            }
            Event::StreamReadable { stream } => self.pump_down(stream),
            Event::StreamWritable { stream } => self.pump_up(stream),
            Event::StreamRefused { stream, code } | Event::StreamReset { stream, code, .. } => {
                if let Some(io) = self.streams.remove(&stream) {
                    let _ = io.down.try_send(Down::Reset(code));
                }
                self.emit(NodeEvent::StreamEnd {
                    stream,
                    code: Some(code),
                });
            }
            Event::StreamClosed { stream } => {
                self.streams.remove(&stream);
                self.emit(NodeEvent::StreamEnd { stream, code: None });
            }
            _ => {}
        }
    }

    /// Moves bytes from the endpoint to the stream's local side while it has room. The
    /// endpoint hands out one packet's payload per read; up to `DOWN_CHUNK` of them go in
    /// one message, which the stream's task writes with one vectored write, so the local
    /// socket sees a few large writes, not one per packet, and nothing is copied to
    /// gather them.
    fn pump_down(&mut self, stream: StreamId) {
        let Some(io) = self.streams.get_mut(&stream) else {
            return;
        };
        loop {
            let Ok(permit) = io.down.try_reserve() else {
                return; // full (DownSpace will call again) or gone
            };
            let mut chunks: Vec<Bytes> = Vec::new();
            let mut have = 0;
            let end = loop {
                if have >= DOWN_CHUNK {
                    break false;
                }
                match self.endpoint.read(stream, DOWN_CHUNK - have) {
                    Ok(Some(b)) => {
                        have += b.len();
                        chunks.push(b);
                    }
                    Ok(None) => break true,
                    Err(_) => break false,
                }
            };
            let data = chunks;
            match (data.is_empty(), end) {
                (false, false) => permit.send(Down::Data(data)),
                (false, true) => {
                    permit.send(Down::Data(data));
                    // The end follows on the next round (or when there is room).
                }
                (true, true) => {
                    permit.send(Down::Fin);
                    return;
                }
                (true, false) => return,
            }
        }
    }

    /// Moves bytes from the stream's local side into the endpoint while it has credit.
    fn pump_up(&mut self, stream: StreamId) {
        loop {
            let Some(io) = self.streams.get_mut(&stream) else {
                return;
            };
            let chunk = match io.pending.take() {
                Some(c) => c,
                None => match io.up.try_recv() {
                    Ok(Up::Data(b)) => b,
                    Ok(Up::Fin) => {
                        io.fin_sent = true;
                        let _ = self.endpoint.finish(stream);
                        return;
                    }
                    Ok(Up::Abort(code)) => {
                        self.streams.remove(&stream);
                        let _ = self.endpoint.reset(stream, code);
                        self.emit(NodeEvent::StreamEnd {
                            stream,
                            code: Some(code),
                        });
                        return;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => return,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        // The local side went away without finishing: abort.
                        if !io.fin_sent {
                            self.streams.remove(&stream);
                            let _ = self.endpoint.reset(stream, StreamCode::Cancelled);
                        }
                        return;
                    }
                },
            };
            match self.endpoint.write(stream, chunk.clone()) {
                Ok(n) if n == chunk.len() => {}
                Ok(n) => {
                    io.pending = Some(chunk.slice(n..));
                    return;
                }
                Err(WriteError::Blocked) => {
                    io.pending = Some(chunk);
                    return;
                }
                Err(_) => return,
            }
        }
    }

    fn on_note(&mut self, note: Note) {
        match note {
            Note::Up(id) => self.pump_up(id),
            Note::DownSpace(id) => self.pump_down(id),
            Note::Connected(id, Ok(tcp)) => {
                if self.endpoint.accept(id).is_ok() {
                    let (io, pipes) = pipes(id, &self.notes);
                    self.streams.insert(id, io);
                    tokio::spawn(run_stream(tcp, pipes));
                    self.pump_down(id);
                }
            }
            Note::Connected(id, Err(code)) => {
                tracing::info!(stream = %id, code = code.code(), "target: {code}");
                let _ = self.endpoint.refuse(id, code);
                self.emit(NodeEvent::StreamEnd {
                    stream: id,
                    code: Some(code),
                });
            }
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Befriend(server, message, reply) => {
                let r = match self.transport.add_friend(&server, &message) {
                    Ok(added) => {
                        self.emit(NodeEvent::FriendRequestSent {
                            peer: server.public_key,
                            code: added.status_code().code(),
                        });
                        Ok(())
                    }
                    Err(toxtun_proto::FriendError::AlreadyFriend) => Ok(()),
                    Err(e) => {
                        self.emit(NodeEvent::FriendRequestSent {
                            peer: server.public_key,
                            code: e.status_code().code(),
                        });
                        Err(e.to_string())
                    }
                };
                if r.is_ok() {
                    self.endpoint.connect(now(), server.public_key);
                }
                let _ = reply.send(r);
            }
            Cmd::Open(server, target, reply) => {
                let r = match self.endpoint.open(now(), server, target.clone()) {
                    Ok(id) => {
                        let (io, pipes) = pipes(id, &self.notes);
                        self.streams.insert(id, io);
                        self.emit(NodeEvent::StreamOpen {
                            stream: id,
                            target,
                            incoming: false,
                        });
                        Ok(pipes)
                    }
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(r);
            }
            Cmd::Stats(peer, reply) => {
                let _ = reply.send(self.endpoint.session_stats(peer));
            }
            Cmd::Shutdown(_) => unreachable!("handled in run"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most 5 bytes per call, from the first non-empty slice only
    /// (as a socket with a full buffer, or a writer without vectored writes, does).
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(5);
            self.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn vectored_writes_deliver_every_chunk_in_order_through_short_writes() {
        let chunks: Vec<Bytes> = ["abc", "", "defghijk", "", "l", "mnopqrstu", ""]
            .iter()
            .map(|s| Bytes::from_static(s.as_bytes()))
            .collect();
        let mut w = Trickle(Vec::new());
        write_all_vectored(&mut w, chunks).await.unwrap();
        assert_eq!(w.0, b"abcdefghijklmnopqrstu");
        write_all_vectored(&mut w, vec![Bytes::new()])
            .await
            .unwrap();
        assert_eq!(w.0.len(), 21, "empty chunks write nothing and do not fail");
    }
}
