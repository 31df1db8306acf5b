//! `toxtun forward -L` and `-D`: local ports forwarded through a server, like `ssh -L`,
//! and SOCKS servers, like `ssh -D` (`socks.rs`).
//!
//! The forward runs this machine's client identity (pipes then attach to it), or, if
//! another process already does (an agent), attaches to that one: it holds the other's
//! session for as long as it runs, and carries each accepted connection over the control
//! socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use toxtun_proto::{Target, ToxId};
use toxtun_tokio::control::{attach, credential, hold, Attached, Hold, Request};

use super::socks::{spawn_listener, Opener};
use super::{data_dir, hold_client, StopSignals};
use crate::cli::{
    load_secret, parse_dynamic, parse_forward, parse_server, Cli, NetArgs, SecretArgs,
};
use crate::Fail;

/// Listens on each `-L` spec's local address and forwards every connection to its target
/// through `server`, and serves SOCKS on each `-D` address, until Ctrl-C.
pub(crate) async fn run(
    cli: &Cli,
    local: &[String],
    dynamic: &[String],
    server: &str,
    secret: &SecretArgs,
    net: &NetArgs,
) -> Result<(), Fail> {
    let mut stop = StopSignals::new();
    let server = parse_server(server)?;
    let (listeners, socks) = bind(local, dynamic, &server).await?;
    let dir = data_dir(&cli.data_dir)?;
    let cred = credential(load_secret(secret)?.as_ref());
    match hold(&dir, server.to_string(), cred.clone()).await? {
        Some(Ok(held)) => {
            let opener = Arc::new(Opener::Attached {
                dir: dir.clone(),
                server,
                credential: cred.clone(),
            });
            for l in socks {
                spawn_listener(l, opener.clone());
            }
            return attached(held, listeners, dir, server, cred, stop).await;
        }
        Some(Err(Attached::Refused { message, .. })) => return Err(Fail(message)),
        Some(Err(other)) => return Err(Fail(format!("unexpected answer {other:?}"))),
        None => {}
    }
    let holder = hold_client(cli, Some(server), secret, net, true).await?;
    let node = holder.node.clone();
    let opener = Arc::new(Opener::Node(node.clone(), server.public_key));
    for l in socks {
        spawn_listener(l, opener.clone());
    }
    for (l, target) in listeners {
        let node = node.clone();
        let peer = server.public_key;
        tokio::spawn(async move {
            loop {
                let Ok((sock, from)) = l.accept().await else {
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let node = node.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    if let Err(e) = node.forward(peer, target.clone(), sock).await {
                        tracing::info!(%from, %target, "connection ended: {e}");
                    }
                });
            }
        });
    }
    let why = tokio::select! {
        sig = stop.recv() => sig,
        () = holder.control.stopped() => "stop requested",
    };
    eprintln!("toxtun: {why}: shutting down (closing sessions)");
    node.shutdown().await;
    Ok(())
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

/// Another process holds the identity: each accepted connection becomes a stream that
/// process opens, carried over the control socket, until Ctrl-C or until it stops.
async fn attached(
    mut held: Hold,
    listeners: Vec<(TcpListener, Target)>,
    dir: PathBuf,
    server: ToxId,
    credential: Option<String>,
    mut stop: StopSignals,
) -> Result<(), Fail> {
    eprintln!(
        "toxtun: attached to toxtun process {}, which runs this identity",
        held.pid
    );
    for (l, target) in listeners {
        let dir = dir.clone();
        let credential = credential.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, from)) = l.accept().await else {
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let request = Request::Open {
                    server: server.to_string(),
                    target: target.to_string(),
                    credential: credential.clone(),
                    wait_accepted: false,
                };
                let dir = dir.clone();
                tokio::spawn(carry(dir, request, sock, from, target.clone()));
            }
        });
    }
    tokio::select! {
        sig = stop.recv() => {
            eprintln!("toxtun: {sig}: detaching");
            Ok(())
        }
        () = held.closed() => Err(Fail(format!(
            "toxtun process {}, which ran this identity, stopped",
            held.pid
        ))),
    }
}

/// One accepted connection, as a stream the holder opens.
async fn carry(
    dir: PathBuf,
    request: Request,
    sock: tokio::net::TcpStream,
    from: std::net::SocketAddr,
    target: Target,
) {
    let (rd, wr) = sock.into_split();
    match attach(Path::new(&dir), request, rd, wr).await {
        Ok(Attached::Ended(0) | Attached::OutputClosed) => {}
        Ok(Attached::Ended(code)) => tracing::info!(
            %from, %target,
            "connection ended: {}",
            toxtun_proto::StreamCode::from_code(code)
        ),
        Ok(other) => tracing::warn!(%from, %target, "connection refused: {other:?}"),
        Err(e) => tracing::warn!(%from, %target, "connection failed: {e}"),
    }
}
