//! A node: the public API (`Node`, `NodeEvent`, `TunnelStream`). `driver.rs` is the task
//! that runs it, `stream.rs` each stream's local side.
//!
//! The driver: one task owns the [`Endpoint`] and the transport, feeds inputs, drains
//! outputs, and arms one timer from the endpoint's deadline. Each stream's local side (a
//! TCP socket, stdio, or a [`TunnelStream`]) is moved by its own task through small bounded
//! channels: a stream without credit is not read from, so a slow far end pushes back all
//! the way to the local application, and memory stays bounded.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, mpsc, oneshot};
use toxtun_proto::{
    Endpoint, PeerId, ServerPolicy, SessionCode, SessionStats, StreamCode, StreamId, Target, ToxId,
    Transport,
};

mod driver;
mod listen;
mod outbox;
mod reload;
mod status;
mod stream;

use driver::Driver;
pub use reload::{ClosedListener, ReloadReport, ResetStream};
pub use status::{Counters, ListenerStatus, NodeStatus, PeerStatus, SessionReport, StreamStatus};
pub use stream::TunnelStream;
use stream::{run_stream, StreamPipes};

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
    /// The endpoint refused a peer's stream itself (the rules, a limit): it never opened.
    StreamDenied {
        /// Who asked.
        peer: PeerId,
        /// What it asked for.
        target: Target,
        /// The code the peer was sent (2001 not allowed, 2005 too many, …).
        code: StreamCode,
    },
    /// Client: the server listens on `bind` for us (reverse forwarding).
    ListenReady {
        /// The server.
        peer: PeerId,
        /// Where it listens.
        bind: Target,
    },
    /// Client: the server refused to listen on `bind`, or stopped (asked again in the
    /// next session).
    ListenRefused {
        /// The server.
        peer: PeerId,
        /// Where.
        bind: Target,
        /// Why (2015 not allowed, 2016 could not, 2017 not supported, …).
        code: StreamCode,
    },
    /// Server: listening on `bind` for the client.
    Listening {
        /// The client.
        peer: PeerId,
        /// Where.
        bind: Target,
    },
    /// Server: a client's listener refused or ended.
    ListenStopped {
        /// The client.
        peer: PeerId,
        /// Where.
        bind: Target,
        /// Why (2015 not allowed, 2016 the address could not be bound, 2000 the client
        /// gave it up, 2010 the session ended).
        code: StreamCode,
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
    /// With a sender, the stream's acceptance (OPEN_OK) or refusal is sent on it.
    Open(
        PeerId,
        Target,
        Option<oneshot::Sender<Result<(), StreamCode>>>,
        oneshot::Sender<Result<StreamPipes, String>>,
    ),
    Shutdown(oneshot::Sender<()>),
    Stats(PeerId, oneshot::Sender<Option<SessionStats>>),
    Status(oneshot::Sender<NodeStatus>),
    Reset(StreamId, StreamCode),
    Reload(Box<ServerPolicy>, oneshot::Sender<ReloadReport>),
    Listen(PeerId, Target, Target, oneshot::Sender<Result<u32, String>>),
    Unlisten(PeerId, u32),
    ForwardUdp(PeerId, tokio::net::UdpSocket, Target, oneshot::Sender<u32>),
    StopUdp(u32),
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
            Cmd::Status(..) => "Status",
            Cmd::Reset(..) => "Reset",
            Cmd::Reload(..) => "Reload",
            Cmd::Listen(..) => "Listen",
            Cmd::Unlisten(..) => "Unlisten",
            Cmd::ForwardUdp(..) => "ForwardUdp",
            Cmd::StopUdp(..) => "StopUdp",
        })
    }
}

/// A stream opened by [`Node::open_pending`]: first learn whether the server accepted
/// it, then give it its local side.
pub struct PendingStream {
    pipes: StreamPipes,
    opened: oneshot::Receiver<Result<(), StreamCode>>,
    /// The answer, once heard.
    answer: Option<Result<(), StreamCode>>,
    cmd: mpsc::Sender<Cmd>,
}

impl std::fmt::Debug for PendingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingStream")
            .field("id", &self.pipes.id)
            .finish_non_exhaustive()
    }
}

impl PendingStream {
    /// The stream's ID.
    pub fn id(&self) -> StreamId {
        self.pipes.id
    }

    /// Waits for the server's answer: accepted, or refused (or reset, or timed out) with
    /// its code. Asked again, it gives the same answer.
    pub async fn accepted(&mut self) -> Result<(), StreamCode> {
        if let Some(answer) = self.answer {
            return answer;
        }
        let answer = (&mut self.opened)
            .await
            .unwrap_or(Err(StreamCode::SessionClosed));
        self.answer = Some(answer);
        answer
    }

    /// The stream as a byte stream, as [`Node::open`] gives it.
    pub fn into_stream(self) -> TunnelStream {
        let id = self.pipes.id;
        let (mine, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(run_stream(theirs, self.pipes));
        TunnelStream {
            id,
            io: mine,
            cmd: self.cmd,
        }
    }

    /// Carries `local` through the stream until both directions end or the stream is
    /// reset, as [`Node::forward`] does.
    pub async fn carry<S>(self, local: S)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let _ = tokio::spawn(run_stream(local, self.pipes)).await;
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
        let driver = Driver::new(endpoint, transport, options, ev_tx.clone(), note_tx);
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
        Ok(TunnelStream {
            id,
            io: mine,
            cmd: self.cmd.clone(),
        })
    }

    async fn open_pipes(&self, server: PeerId, target: Target) -> Result<StreamPipes, NodeError> {
        self.open_pipes_confirmed(server, target, None).await
    }

    async fn open_pipes_confirmed(
        &self,
        server: PeerId,
        target: Target,
        confirm: Option<oneshot::Sender<Result<(), StreamCode>>>,
    ) -> Result<StreamPipes, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Open(server, target, confirm, tx))
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

    /// Opens a stream to `target` through `server` whose local side is given later, once
    /// the server has accepted it or said why not: for a local protocol that answers its
    /// client only then (SOCKS).
    pub async fn open_pending(
        &self,
        server: PeerId,
        target: Target,
    ) -> Result<PendingStream, NodeError> {
        let (tx, rx) = oneshot::channel();
        let pipes = self.open_pipes_confirmed(server, target, Some(tx)).await?;
        Ok(PendingStream {
            pipes,
            opened: rx,
            answer: None,
            cmd: self.cmd.clone(),
        })
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

    /// Every peer the node knows, its link, session counters and open streams: what
    /// `toxtun status` prints.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Status(tx))
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
