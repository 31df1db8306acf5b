//! One module per subcommand, and what several of them share: the data directory, the
//! client node, waiting for Ctrl-C.

use std::path::PathBuf;

use rand_core::{OsRng, RngCore};
use tokio::signal::unix::{signal, Signal, SignalKind};
use toxtun_proto::{Endpoint, ToxId};
use toxtun_tokio::{Node, NodeOptions};
use toxtun_transport_tox::ToxTransport;

use crate::cli::{Cli, NetArgs, SecretArgs};
use crate::report::{report, watch_progress};
use crate::Fail;

pub(crate) mod bootstrap;
pub(crate) mod demo;
pub(crate) mod forward;
pub(crate) mod id;
pub(crate) mod pipe;
pub(crate) mod serve;

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

    /// Waits for one of them, then closes every session (CLOSE 1011 to each peer, which
    /// frees our session at once) and stops.
    pub(crate) async fn until_stopped(&mut self, node: &Node) {
        let sig = self.recv().await;
        eprintln!("toxtun: {sig}: shutting down (closing sessions)");
        node.shutdown().await;
    }
}

/// A client node with its own Tox instance (`client.tox`), befriending `server` and
/// reporting its events; returns once the friend request is on its way.
pub(crate) async fn client_node(
    cli: &Cli,
    server: ToxId,
    secret: &SecretArgs,
    net: &NetArgs,
) -> Result<Node, Fail> {
    let dir = data_dir(&cli.data_dir)?;
    let settings = net.settings()?;
    let transport = ToxTransport::start(settings.tox_config(dir.join("client.tox")))?;
    let me = toxtun_proto::Transport::id(&transport).public_key;
    let secret = crate::cli::load_secret(secret)?;
    if secret.is_none() && !cli.quiet() {
        eprintln!("toxtun: client key {me} (the server admits it with [[client]] key = \"{me}\")");
    }
    let cfg = settings.endpoint_config(me, secret.clone());
    let message = match &secret {
        Some(s) => s.friend_request(&me, &server.public_key),
        None => "toxtun/1".to_string(),
    };
    let (node, _) = Node::spawn(
        Endpoint::new(cfg, seed())?,
        transport,
        NodeOptions::default(),
    );
    report(&node, cli.json, settings.fast_path);
    watch_progress(&node, cli.quiet());
    node.connect(server, message.into_bytes()).await?;
    Ok(node)
}
