//! `toxtun forward -L`, `-D`, `-R` and `-U`: local ports forwarded through a server, like
//! `ssh -L`, SOCKS servers, like `ssh -D` (`socks.rs`), the server's ports forwarded here,
//! like `ssh -R`, and local UDP ports forwarded through the server.
//!
//! The forward runs this machine's client identity (pipes then attach to it), or, if
//! another process already does (an agent), attaches to that one: it holds the other's
//! session for as long as it runs, and carries each accepted connection over the control
//! socket. Either way an [`Opener`] opens the streams, and the listeners are the same.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use toxtun_proto::{PeerId, StreamCode, Target, ToxId};
use toxtun_tokio::control::{attach, credential, hold, Attached, Hold, Request};
use toxtun_tokio::Node;

use super::{data_dir, hold_client, StopSignals};
use crate::cli::{
    load_secret, parse_dynamic, parse_forward, parse_reverse, parse_server, parse_udp, Cli,
    NetArgs, SecretArgs,
};
use crate::Fail;

/// Where the streams of accepted connections (`-L`) and SOCKS requests (`-D`) are opened.
pub(crate) enum Opener {
    /// On this process's own node.
    Node(Node, PeerId),
    /// By the process that runs the identity, over its control socket.
    Attached(AttachedTo),
}

/// The process that runs the identity, as an attached forward asks it for streams.
pub(crate) struct AttachedTo {
    /// Its data directory (where its control socket is).
    pub(crate) dir: PathBuf,
    server: ToxId,
    credential: Option<String>,
}

impl AttachedTo {
    /// The control request for a stream to `target`.
    pub(crate) fn request(&self, target: &Target, wait_accepted: bool) -> Request {
        Request::Open {
            server: self.server.to_string(),
            target: target.to_string(),
            credential: self.credential.clone(),
            wait_accepted,
        }
    }
}

impl Opener {
    /// Carries one accepted `-L` connection through a new stream to `target`.
    async fn forward(&self, sock: TcpStream, from: SocketAddr, target: Target) {
        match self {
            Opener::Node(node, peer) => {
                if let Err(e) = node.forward(*peer, target.clone(), sock).await {
                    tracing::info!(%from, %target, "connection ended: {e}");
                }
            }
            Opener::Attached(to) => {
                let (rd, wr) = sock.into_split();
                match attach(&to.dir, to.request(&target, false), rd, wr).await {
                    Ok(Attached::Ended(0) | Attached::OutputClosed) => {}
                    Ok(Attached::Ended(code)) => tracing::info!(
                        %from, %target,
                        "connection ended: {}",
                        StreamCode::from_code(code)
                    ),
                    Ok(other) => tracing::warn!(%from, %target, "connection refused: {other:?}"),
                    Err(e) => tracing::warn!(%from, %target, "connection failed: {e}"),
                }
            }
        }
    }
}

/// Accepts connections on `listener` until the process ends, handing each to `on` in a
/// task of its own.
pub(crate) fn spawn_accepting<F, Fut>(listener: TcpListener, on: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((sock, from)) => {
                    let _ = sock.set_nodelay(true);
                    tokio::spawn(on(sock, from));
                }
                // Out of file descriptors, most likely: let some close.
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

/// A forward's `-L`, `-D` and `-R` specs, as given.
pub(crate) struct Specs<'a> {
    pub(crate) local: &'a [String],
    pub(crate) dynamic: &'a [String],
    pub(crate) remote: &'a [String],
    pub(crate) udp: &'a [String],
}

/// Listens on each `-L` spec's local address and forwards every connection to its target
/// through `server`, serves SOCKS on each `-D` address, and has the server listen for each
/// `-R`, until Ctrl-C.
pub(crate) async fn run(
    cli: &Cli,
    specs: &Specs<'_>,
    server: &str,
    secret: &SecretArgs,
    net: &NetArgs,
) -> Result<(), Fail> {
    let mut stop = StopSignals::new();
    let server = parse_server(server)?;
    let (listeners, socks) = bind(specs.local, specs.dynamic, &server).await?;
    let udp = check_udp(specs.udp, &server).await?;
    let reverse = specs
        .remote
        .iter()
        .map(|s| parse_reverse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let dir = data_dir(&cli.data_dir)?;
    let cred = credential(load_secret(secret)?.as_ref());
    let runs = take_identity(
        cli,
        &dir,
        server,
        cred.clone(),
        (secret, net),
        (&reverse, &udp),
    )
    .await?;
    for (bind, to) in &reverse {
        eprintln!(
            "toxtun: {} listens on {bind} -> {to} here",
            server.public_key
        );
    }
    let opener = Arc::new(match &runs {
        Runs::Own(h) => Opener::Node(h.node.clone(), server.public_key),
        Runs::Attached(_) => Opener::Attached(AttachedTo {
            dir,
            server,
            credential: cred,
        }),
    });
    for (l, target) in listeners {
        let opener = opener.clone();
        spawn_accepting(l, move |sock, from| {
            let opener = opener.clone();
            let target = target.clone();
            async move { opener.forward(sock, from, target).await }
        });
    }
    for l in socks {
        let opener = opener.clone();
        spawn_accepting(l, move |sock, from| {
            super::socks::serve(opener.clone(), sock, from)
        });
    }
    match runs {
        Runs::Own(holder) => {
            let why = tokio::select! {
                sig = stop.recv() => sig,
                () = holder.control.stopped() => "stop requested",
            };
            eprintln!("toxtun: {why}: shutting down (closing sessions)");
            holder.node.shutdown().await;
            Ok(())
        }
        Runs::Attached(mut held) => tokio::select! {
            sig = stop.recv() => {
                eprintln!("toxtun: {sig}: detaching");
                Ok(())
            }
            () = held.closed() => Err(Fail(format!(
                "toxtun process {}, which ran this identity, stopped",
                held.pid
            ))),
        },
    }
}

/// Attaches to whatever runs the client identity (holding `reverse` and `udp` there: it
/// asks the server to listen, and binds the UDP ports), or runs it in this process (and
/// does both here).
async fn take_identity(
    cli: &Cli,
    dir: &std::path::Path,
    server: ToxId,
    cred: Option<String>,
    (secret, net): (&SecretArgs, &NetArgs),
    (reverse, udp): (&[ReverseSpec], &[UdpSpec]),
) -> Result<Runs, Fail> {
    let specs = (as_text(reverse), as_text(udp));
    Ok(match hold(dir, server.to_string(), cred, specs).await? {
        Some(Ok(held)) => {
            eprintln!(
                "toxtun: attached to toxtun process {}, which runs this identity",
                held.pid
            );
            Runs::Attached(held)
        }
        Some(Err(Attached::Refused { message, .. })) => return Err(Fail(message)),
        Some(Err(other)) => return Err(Fail(format!("unexpected answer {other:?}"))),
        None => {
            let holder = hold_client(cli, Some(server), secret, net, true).await?;
            for (bind, to) in reverse {
                holder
                    .node
                    .listen(server.public_key, bind.clone(), to.clone())
                    .await
                    .map_err(|e| Fail(format!("-R {bind}: {e}")))?;
            }
            for (at, target) in udp {
                let socket = tokio::net::UdpSocket::bind(at)
                    .await
                    .map_err(|e| Fail(format!("cannot bind UDP {at}: {e}")))?;
                holder
                    .node
                    .forward_udp(server.public_key, socket, target.clone())
                    .await
                    .map_err(|e| Fail(format!("-U {at}: {e}")))?;
            }
            Runs::Own(holder)
        }
    })
}

/// A `-R`: where the server listens, where its connections go here.
type ReverseSpec = (Target, Target);
/// A `-U`: the local address (checked free), where its datagrams go on the server's side.
type UdpSpec = (SocketAddr, Target);

/// (`bind`, `to`) pairs as the control socket carries them.
fn as_text<A: std::fmt::Display, B: std::fmt::Display>(v: &[(A, B)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Who runs the identity for this forward.
enum Runs {
    /// This process.
    Own(super::ClientHolder),
    /// Another one, which this forward holds.
    Attached(Hold),
}

/// Checks every `-U` address can be bound, as the TCP listeners are bound first: a port
/// in use fails before Tox starts. The sockets close again: whoever runs the identity
/// (this process, or the agent it attaches to) binds them for real.
async fn check_udp(specs: &[String], server: &ToxId) -> Result<Vec<UdpSpec>, Fail> {
    let mut out = Vec::new();
    for spec in specs {
        let (at, target) = parse_udp(spec)?;
        let socket = tokio::net::UdpSocket::bind(&at)
            .await
            .map_err(|e| Fail(format!("cannot bind UDP {at}: {e}")))?;
        let at = socket
            .local_addr()
            .map_err(|e| Fail(format!("UDP {at}: {e}")))?;
        eprintln!("toxtun: UDP {at} -> {target} via {}", server.public_key);
        out.push((at, target));
    }
    Ok(out)
}

/// Binds every `-L` and `-D` listener first: a port in use fails before Tox starts.
async fn bind(
    local: &[String],
    dynamic: &[String],
    server: &ToxId,
) -> Result<(Vec<(TcpListener, Target)>, Vec<TcpListener>), Fail> {
    async fn listen(at: &str) -> Result<TcpListener, Fail> {
        TcpListener::bind(at)
            .await
            .map_err(|e| Fail(format!("cannot listen on {at}: {e}")))
    }
    let mut listeners = Vec::new();
    for spec in local {
        let (at, target) = parse_forward(spec)?;
        let l = listen(&at).await?;
        eprintln!("toxtun: {at} -> {target} via {}", server.public_key);
        listeners.push((l, target));
    }
    let mut socks = Vec::new();
    for spec in dynamic {
        let at = parse_dynamic(spec)?;
        socks.push(listen(&at).await?);
        eprintln!("toxtun: SOCKS on {at} via {}", server.public_key);
    }
    Ok((listeners, socks))
}
