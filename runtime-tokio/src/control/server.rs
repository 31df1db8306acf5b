//! The holder's side of the control socket: status, stop, and streams opened for attached
//! pipes on the node's own sessions.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify, Semaphore};
use toxtun_proto::{PeerId, StreamCode, StreamId, Target, ToxId};

use super::wire::{
    decode_request, encode_line, read_line, ControlError, DownFrame, ForwardPair, Reply, Request,
    FRAME_HEADER, MAX_DATA_FRAME, MAX_REQUEST,
};
use super::Role;
use crate::node::{Node, NodeEvent, ReloadReport, TunnelStream};

/// How long a connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Control connections served at once (each attached pipe holds one).
const MAX_CONNECTIONS: usize = 1024;

/// A stream opened for an attached client, with the events that will tell its end.
type Opened = (TunnelStream, broadcast::Receiver<NodeEvent>);

/// Makes the friend request message for a server.
pub type FriendRequest = Box<dyn Fn(&ToxId) -> Vec<u8> + Send + Sync>;

/// How a client process serves attached pipes: which secret it uses, and the friend
/// request it sends a server it has not befriended yet.
pub struct Attach {
    /// [`super::credential`] of this process's secret.
    pub credential: Option<String>,
    /// The friend request message for a server.
    pub friend_request: FriendRequest,
}

impl std::fmt::Debug for Attach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attach")
            .field("credential", &self.credential.is_some())
            .finish_non_exhaustive()
    }
}

/// A `reload` request, passed to whoever owns the configuration (`toxtun serve`), which
/// answers with what changed or why the file was refused.
pub type ReloadAsk = oneshot::Sender<Result<ReloadReport, String>>;

/// A bound control socket, not yet serving.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    reload: Option<mpsc::Sender<ReloadAsk>>,
}

/// What the process that serves the socket waits on: a `stop` request, or a while with
/// no attached stream.
#[derive(Debug)]
pub struct ControlHandle {
    stop: Arc<Notify>,
    attached: watch::Receiver<usize>,
    path: PathBuf,
    /// The accepting task, which ends with the handle (streams in progress go on).
    accept: tokio::task::AbortHandle,
}

struct Shared {
    node: Node,
    attach: Option<Attach>,
    reload: Option<mpsc::Sender<ReloadAsk>>,
    /// Servers this process befriended on a pipe's behalf (or at its start).
    befriended: Mutex<HashSet<PeerId>>,
    stop: Arc<Notify>,
    attached: watch::Sender<usize>,
    slots: Semaphore,
    uid: u32,
}

impl ControlServer {
    /// Binds `role`'s socket in `dir`. The caller holds the identity's lock, so a socket
    /// file already there is a dead holder's, and is replaced. Mode 0600.
    pub fn bind(dir: &Path, role: Role) -> std::io::Result<ControlServer> {
        use std::os::unix::fs::PermissionsExt;
        let path = role.socket_path(dir);
        // sun_path holds 108 bytes with its terminating NUL.
        if path.as_os_str().len() > 107 {
            return Err(std::io::Error::other(format!(
                "control socket path {} is longer than a Unix socket allows; use a shorter --data-dir",
                path.display()
            )));
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(ControlServer {
            listener,
            path,
            reload: None,
        })
    }

    /// Passes `reload` requests to `to` (else they are refused with 3004).
    pub fn with_reload(mut self, to: mpsc::Sender<ReloadAsk>) -> ControlServer {
        self.reload = Some(to);
        self
    }

    /// Serves requests for `node` from now on. With `attach`, pipes may open streams on
    /// the node's sessions; without (a server), they are told it cannot. `befriended`:
    /// servers the node already connects to.
    pub fn serve(
        self,
        node: Node,
        attach: Option<Attach>,
        befriended: impl IntoIterator<Item = PeerId>,
    ) -> ControlHandle {
        let stop = Arc::new(Notify::new());
        let (attached_tx, attached_rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            node,
            attach,
            reload: self.reload,
            befriended: Mutex::new(befriended.into_iter().collect()),
            stop: stop.clone(),
            attached: attached_tx,
            slots: Semaphore::new(MAX_CONNECTIONS),
            uid: rustix::process::geteuid().as_raw(),
        });
        let listener = self.listener;
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((sock, _)) => {
                        let shared = shared.clone();
                        tokio::spawn(async move { shared.connection(sock).await });
                    }
                    // Out of file descriptors, most likely: let some close.
                    Err(e) => {
                        tracing::warn!("control socket: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        ControlHandle {
            stop,
            attached: attached_rx,
            path: self.path,
            accept: accept.abort_handle(),
        }
    }
}

impl ControlHandle {
    /// Resolves when a `stop` request came.
    pub async fn stopped(&self) {
        self.stop.notified().await
    }

    /// Resolves once no pipe has been attached for `linger` (counted from the last one's
    /// end, or from now if none is attached).
    pub async fn idle_for(&self, linger: Duration) {
        let mut attached = self.attached.clone();
        loop {
            while *attached.borrow_and_update() > 0 {
                if attached.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(linger) => return,
                r = attached.changed() => if r.is_err() {
                    return std::future::pending().await;
                },
            }
        }
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        // A clean exit leaves no socket behind (a crash's is replaced by the next holder).
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Counts an attached pipe while it lives.
struct AttachedGuard<'a>(&'a watch::Sender<usize>);
impl<'a> AttachedGuard<'a> {
    fn new(tx: &'a watch::Sender<usize>) -> Self {
        tx.send_modify(|n| *n += 1);
        AttachedGuard(tx)
    }
}
impl Drop for AttachedGuard<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Shared {
    async fn connection(&self, sock: UnixStream) {
        let (rd, mut wr) = sock.into_split();
        let mut rd = BufReader::new(rd);
        let Ok(_slot) = self.slots.try_acquire() else {
            return finish(&mut rd, &mut wr, ControlError::Busy.reply()).await;
        };
        // Only the owner may use this identity: the socket's mode says so, and the peer's
        // credentials are checked too (a socket in a shared directory, a copied path).
        // Root may too (it can read the identity file anyway): an operator's `sudo toxtun
        // status` to a server that runs as systemd's dynamic user.
        let uid = wr.as_ref().peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
        if uid != self.uid && uid != 0 {
            tracing::warn!(
                uid,
                "control socket: refused a connection from another user"
            );
            return finish(&mut rd, &mut wr, ControlError::NotOwner(uid).reply()).await;
        }
        let request =
            match tokio::time::timeout(REQUEST_TIMEOUT, read_line(&mut rd, MAX_REQUEST)).await {
                Err(_) => Err(ControlError::Timeout),
                Ok(r) => r.and_then(|line| decode_request(&line)),
            };
        let result = match request {
            Ok(request) => match self.answer(request, &mut rd, &mut wr).await {
                // The connection carried a stream or a hold: it is done.
                Ok(None) => return,
                Ok(Some(reply)) => Ok(reply),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let reply = result.unwrap_or_else(|e| {
            tracing::info!(code = e.code(), "control request refused: {e}");
            e.reply()
        });
        finish(&mut rd, &mut wr, reply).await;
    }

    /// Carries out one request. `Ok(None)`: it took the connection over (a stream, a
    /// hold) and has finished with it; else the reply to send.
    async fn answer(
        &self,
        request: Request,
        rd: &mut BufReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
    ) -> Result<Option<Reply>, ControlError> {
        let pid = std::process::id();
        match request {
            Request::Status => match self.node.status().await {
                Ok(status) => Ok(Some(Reply::Status { pid, status })),
                Err(e) => Err(ControlError::Node(e.to_string())),
            },
            Request::Stop => {
                self.stop.notify_one();
                Ok(Some(Reply::Stopping { pid }))
            }
            Request::Reload => {
                let to = self
                    .reload
                    .as_ref()
                    .ok_or(ControlError::Unsupported(pid, "reload a configuration"))?;
                let (tx, rx) = oneshot::channel();
                let stopped = || ControlError::Node("the server is stopping".into());
                to.send(tx).await.map_err(|_| stopped())?;
                match rx.await.map_err(|_| stopped())? {
                    Ok(report) => Ok(Some(Reply::Reloaded { pid, report })),
                    Err(message) => Err(ControlError::Config(message)),
                }
            }
            Request::Hold {
                server,
                credential,
                reverse,
                udp,
            } => {
                self.hold(&server, credential, (&reverse, &udp), rd, wr)
                    .await
            }
            Request::Open {
                server,
                target,
                credential,
                wait_accepted,
            } => {
                let (stream, events) = match self
                    .open(&server, &target, credential, wait_accepted)
                    .await?
                {
                    Ok(opened) => opened,
                    Err(code) => {
                        let refused = Reply::Refused { code: code.code() };
                        let _ = wr.write_all(&encode_line(&refused)).await;
                        return Ok(None);
                    }
                };
                let reply = Reply::Opened {
                    stream: stream.id().to_string(),
                };
                if wr.write_all(&encode_line(&reply)).await.is_ok() {
                    let _attached = AttachedGuard::new(&self.attached);
                    relay(stream, rd, wr, events).await;
                } else {
                    stream.reset(StreamCode::Cancelled).await;
                }
                Ok(None)
            }
        }
    }

    /// Opens a stream for an attached pipe, befriending the server first if this process
    /// has not yet. Events are subscribed before the open, so the stream's end is seen.
    /// With `wait_accepted`, only once the server has accepted it; its refusal is
    /// `Ok(Err(code))`.
    async fn open(
        &self,
        server: &str,
        target: &str,
        credential: Option<String>,
        wait_accepted: bool,
    ) -> Result<Result<Opened, StreamCode>, ControlError> {
        let peer = self.befriend(server, credential).await?;
        let target: Target = target
            .parse()
            .map_err(|e| ControlError::BadArgument(format!("target: {e}")))?;
        let events = self.node.events();
        let node_err = |e: crate::node::NodeError| ControlError::Node(e.to_string());
        let stream = if wait_accepted {
            let mut pending = self
                .node
                .open_pending(peer, target)
                .await
                .map_err(node_err)?;
            if let Err(code) = pending.accepted().await {
                return Ok(Err(code));
            }
            pending.into_stream()
        } else {
            self.node.open(peer, target).await.map_err(node_err)?
        };
        Ok(Ok((stream, events)))
    }

    /// Checks the requester's secret against ours and befriends `server` unless this
    /// process already keeps a session with it.
    /// A `hold`: the session with `server` (and its reverse forwards) stays while the
    /// holder's connection does.
    async fn hold(
        &self,
        server: &str,
        credential: Option<String>,
        (reverse, udp): (&[ForwardPair], &[ForwardPair]),
        rd: &mut BufReader<OwnedReadHalf>,
        wr: &mut OwnedWriteHalf,
    ) -> Result<Option<Reply>, ControlError> {
        let pid = std::process::id();
        let peer = self.befriend(server, credential).await?;
        let mut given_up = HeldForwards {
            node: self.node.clone(),
            peer,
            listeners: Vec::new(),
            udp: Vec::new(),
        };
        given_up.udp = self.forward_udp(peer, udp).await?;
        given_up.listeners = self.listen(peer, reverse).await?;
        if wr
            .write_all(&encode_line(&Reply::Holding { pid }))
            .await
            .is_ok()
        {
            let _attached = AttachedGuard::new(&self.attached);
            // Until the holder closes (or sends anything: it never should).
            let mut byte = [0u8; 1];
            let _ = rd.read(&mut byte).await;
        }
        Ok(None)
    }

    /// The UDP forwards of a `hold`: this process binds each address and forwards its
    /// datagrams for as long as the hold lasts. A port in use fails the hold.
    async fn forward_udp(
        &self,
        peer: PeerId,
        udp: &[(String, String)],
    ) -> Result<Vec<u32>, ControlError> {
        let mut bound = Vec::new();
        for (bind, to) in udp {
            let target = to
                .parse::<Target>()
                .map_err(|e| ControlError::BadArgument(format!("-U {to}: {e}")))?;
            let socket = tokio::net::UdpSocket::bind(bind.as_str())
                .await
                .map_err(|e| ControlError::BadArgument(format!("cannot bind UDP {bind}: {e}")))?;
            bound.push((socket, target));
        }
        let mut ids = Vec::new();
        for (socket, target) in bound {
            let id = self
                .node
                .forward_udp(peer, socket, target)
                .await
                .map_err(|e| ControlError::Node(e.to_string()))?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// The reverse forwards of a `hold`, asked of the server for as long as it lasts.
    async fn listen(
        &self,
        peer: PeerId,
        reverse: &[(String, String)],
    ) -> Result<Vec<u32>, ControlError> {
        let mut parsed = Vec::new();
        for (bind, to) in reverse {
            let t = |s: &str| {
                s.parse::<Target>()
                    .map_err(|e| ControlError::BadArgument(format!("-R {s}: {e}")))
            };
            parsed.push((t(bind)?, t(to)?));
        }
        let mut ids = Vec::new();
        for (bind, to) in parsed {
            let id = self
                .node
                .listen(peer, bind, to)
                .await
                .map_err(|e| ControlError::Node(e.to_string()))?;
            ids.push(id);
        }
        Ok(ids)
    }

    async fn befriend(
        &self,
        server: &str,
        credential: Option<String>,
    ) -> Result<PeerId, ControlError> {
        let attach = self.attach.as_ref().ok_or(ControlError::Unsupported(
            std::process::id(),
            "take attached streams (it is a server, or a pipe run with --persist 0)",
        ))?;
        if credential != attach.credential {
            return Err(ControlError::OtherSecret(std::process::id()));
        }
        let server: ToxId = server
            .parse()
            .map_err(|e| ControlError::BadArgument(format!("server Tox ID: {e}")))?;
        let peer = server.public_key;
        let new = self
            .befriended
            .lock()
            .map(|mut s| s.insert(peer))
            .unwrap_or(false);
        if new {
            if let Err(e) = self
                .node
                .connect(server, (attach.friend_request)(&server))
                .await
            {
                if let Ok(mut s) = self.befriended.lock() {
                    s.remove(&peer);
                }
                return Err(ControlError::Node(e.to_string()));
            }
        }
        Ok(peer)
    }
}

/// Sends the last reply of a connection and closes it, first reading (a bounded amount
/// of) what the client still sends: a socket closed with unread bytes, or before the
/// client wrote its request, would cost the client the reply.
async fn finish(rd: &mut BufReader<OwnedReadHalf>, wr: &mut OwnedWriteHalf, reply: Reply) {
    let _ = wr.write_all(&encode_line(&reply)).await;
    let _ = wr.shutdown().await;
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::io::copy(&mut rd.take(1 << 20), &mut tokio::io::sink()),
    )
    .await;
}

/// Carries one stream between the tunnel and an attached pipe: the pipe's bytes up as
/// they come (its half-close is our FIN), the stream's bytes down in frames, then an
/// `End` with the stream's code. The pipe going away mid-stream resets it (2000).
async fn relay(
    stream: TunnelStream,
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
    mut events: broadcast::Receiver<NodeEvent>,
) {
    let id = stream.id();
    let (mut tr, mut tw) = tokio::io::split(stream);
    let local_ok = {
        let up = async {
            if tokio::io::copy(rd, &mut tw).await.is_ok() {
                let _ = tw.shutdown().await;
                std::future::pending::<()>().await
            }
        };
        let down = async {
            // Each frame is one write: its header is filled in front of the bytes read.
            let mut buf = BytesMut::zeroed(FRAME_HEADER + MAX_DATA_FRAME);
            loop {
                let n = tr.read(&mut buf[FRAME_HEADER..]).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                buf[..FRAME_HEADER].copy_from_slice(&DownFrame::data_header(n));
                wr.write_all(&buf[..FRAME_HEADER + n]).await?;
            }
        };
        tokio::select! {
            r = down => r.is_ok(),
            () = up => false,
        }
    };
    if !local_ok {
        tr.unsplit(tw).reset(StreamCode::Cancelled).await;
        return;
    }
    let code = end_code(&mut events, id);
    let mut end = BytesMut::new();
    DownFrame::End(code).encode(&mut end);
    let _ = wr.write_all(&end).await;
    let _ = wr.shutdown().await;
}

/// The code the stream ended with (0 if cleanly). The node reports a reset before the
/// stream's local side sees its end, so the event is already waiting.
fn end_code(events: &mut broadcast::Receiver<NodeEvent>, id: StreamId) -> u16 {
    loop {
        match events.try_recv() {
            Ok(NodeEvent::StreamEnd { stream, code }) if stream == id => {
                return code.map_or(0, |c| c.code())
            }
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => return 0,
        }
    }
}

/// What a `hold` set up, given up when it ends: its `-R` listeners, its `-U` forwards.
struct HeldForwards {
    node: Node,
    peer: PeerId,
    listeners: Vec<u32>,
    /// The hold's UDP forwards, stopped with it.
    udp: Vec<u32>,
}

impl Drop for HeldForwards {
    fn drop(&mut self) {
        let (node, peer) = (self.node.clone(), self.peer);
        let ids = std::mem::take(&mut self.listeners);
        let udp = std::mem::take(&mut self.udp);
        if ids.is_empty() && udp.is_empty() {
            return;
        }
        tokio::spawn(async move {
            for id in ids {
                node.unlisten(peer, id).await;
            }
            for id in udp {
                node.stop_udp(id).await;
            }
        });
    }
}
