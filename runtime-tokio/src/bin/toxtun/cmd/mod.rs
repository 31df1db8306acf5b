//! One module per subcommand, and what several of them share: the data directory, the
//! client node, waiting for Ctrl-C.

use std::path::PathBuf;

use rand_core::{OsRng, RngCore};
use tokio::signal::unix::{signal, Signal, SignalKind};
use toxtun_proto::{Endpoint, SharedSecret, ToxId};
use toxtun_tokio::control::{credential, Attach, ControlHandle, ControlServer, IdentityLock, Role};
use toxtun_tokio::{Node, NodeOptions};
use toxtun_transport_tox::ToxTransport;

use crate::cli::{Cli, NetArgs, SecretArgs};
use crate::report::{report, watch_progress};
use crate::Fail;

pub(crate) mod agent;
pub(crate) mod bootstrap;
pub(crate) mod demo;
pub(crate) mod docs;
pub(crate) mod forward;
pub(crate) mod id;
pub(crate) mod notify;
pub(crate) mod pipe;
pub(crate) mod serve;
pub(crate) mod socks;
pub(crate) mod status;

/// Where the identities live: `--data-dir`, else the platform's data directory.
pub(crate) fn data_dir(cli_dir: &Option<PathBuf>) -> Result<PathBuf, Fail> {
    match cli_dir {
        Some(d) => Ok(d.clone()),
        None => dirs::data_dir()
            .map(|d| d.join("toxtun"))
            .ok_or_else(|| Fail("no data directory on this platform; pass --data-dir".into())),
    }
}

/// Fresh randomness for an endpoint (session IDs, stream IDs).
pub(crate) fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    OsRng.fill_bytes(&mut s);
    s
}

/// The signals that stop toxtun cleanly: SIGINT (Ctrl-C), SIGTERM (`kill`, `systemctl
/// stop`) and SIGHUP (ssh ending its ProxyCommand, a terminal closing). Made before the
/// node starts, so that none of them kills the process before its sessions are closed:
/// without this, a peer learnt of the end only when its keepalive gave up (30 s).
pub(crate) struct StopSignals {
    term: Option<Signal>,
    hup: Option<Signal>,
}

impl StopSignals {
    /// Takes over the three signals from now on.
    pub(crate) fn new() -> Self {
        StopSignals {
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// SIGINT and SIGTERM only: for a server, whose SIGHUP means "reload".
    pub(crate) fn without_hangup() -> Self {
        StopSignals {
            term: signal(SignalKind::terminate()).ok(),
            hup: None,
        }
    }

    /// Waits for one of them; returns its name.
    pub(crate) async fn recv(&mut self) -> &'static str {
        async fn on(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            () = on(&mut self.term) => "SIGTERM",
            () = on(&mut self.hup) => "SIGHUP",
        }
    }
}

/// The process that runs this machine's client identity: its lock, its node, and the
/// control socket through which pipes attach to it.
pub(crate) struct ClientHolder {
    pub(crate) node: Node,
    pub(crate) control: ControlHandle,
    _lock: IdentityLock,
}

/// Takes the client identity (or fails, naming the process that has it), starts its Tox
/// instance (`client.tox`) and its control socket, and befriends `server` if given.
/// With `attach`, other pipes and forwards may open streams through it. Returns once the
/// friend request is on its way.
pub(crate) async fn hold_client(
    cli: &Cli,
    server: Option<ToxId>,
    secret: &SecretArgs,
    net: &NetArgs,
    attach: bool,
) -> Result<ClientHolder, Fail> {
    let dir = data_dir(&cli.data_dir)?;
    let settings = net.settings()?;
    let secret = crate::cli::load_secret(secret)?;
    // Before c-toxcore starts: two instances with one key fight over every friend link.
    let lock = IdentityLock::acquire(&dir, Role::Client)?;
    let control = ControlServer::bind(&dir, Role::Client)
        .map_err(|e| Fail(format!("control socket in {}: {e}", dir.display())))?;
    let transport = ToxTransport::start(settings.tox_config(dir.join("client.tox")))?;
    let me = toxtun_proto::Transport::id(&transport).public_key;
    if secret.is_none() && !cli.quiet() {
        eprintln!("toxtun: client key {me} (the server admits it with [[client]] key = \"{me}\")");
    }
    let cfg = settings.endpoint_config(me, secret.clone());
    let (node, _) = Node::spawn(
        Endpoint::new(cfg, seed())?,
        transport,
        NodeOptions::default(),
    );
    report(&node, cli.json, settings.fast_path);
    watch_progress(&node, cli.quiet());
    if let Some(server) = server {
        node.connect(server, friend_request(secret.as_ref(), me, &server))
            .await?;
    }
    let attach = attach.then(|| Attach {
        credential: credential(secret.as_ref()),
        friend_request: Box::new(move |server| friend_request(secret.as_ref(), me, server)),
    });
    let control = control.serve(node.clone(), attach, server.map(|s| s.public_key));
    Ok(ClientHolder {
        node,
        control,
        _lock: lock,
    })
}

/// The friend request a client sends `server`: the secret's proof, or the bare protocol
/// name for a client the server lists by key.
fn friend_request(
    secret: Option<&SharedSecret>,
    me: toxtun_proto::PeerId,
    server: &ToxId,
) -> Vec<u8> {
    match secret {
        Some(s) => s.friend_request(&me, &server.public_key),
        None => "toxtun/1".to_string(),
    }
    .into_bytes()
}
