//! `toxtun serve`: admit clients and connect their streams as the config file allows.

use std::path::Path;

use toxtun_proto::Endpoint;
use toxtun_tokio::config::ServerConfig;
use toxtun_tokio::control::{ControlServer, IdentityLock, Role};
use toxtun_tokio::{Node, NodeOptions};
use toxtun_transport_tox::ToxTransport;

use super::{data_dir, seed, StopSignals};
use crate::cli::{Cli, NetArgs};
use crate::report::report;
use crate::Fail;

/// Serves with the configuration in `config` until Ctrl-C.
pub(crate) async fn run(cli: &Cli, config: &Path, net: &NetArgs) -> Result<(), Fail> {
    let mut stop = StopSignals::new();
    let conf = ServerConfig::load(config)?;
    if !conf.policy.admits_anyone() {
        eprintln!("toxtun: {} admits no client (no [[client]] and no [secret]): nothing is reachable. Add a rule to let someone in.", config.display());
    }
    for c in &conf.policy.clients {
        if c.targets.allow.is_empty() {
            eprintln!(
                "toxtun: client {} may reach no target (empty allow list)",
                c.peer
            );
        }
    }
    let dir = data_dir(&cli.data_dir)?;
    let mut settings = net.settings()?;
    settings.apply_server_file(&conf);
    // One process per identity; `toxtun status` and `toxtun stop` ask it on its socket.
    let _lock = IdentityLock::acquire(&dir, Role::Server)?;
    let control = ControlServer::bind(&dir, Role::Server)
        .map_err(|e| Fail(format!("control socket in {}: {e}", dir.display())))?;
    let transport = ToxTransport::start(settings.tox_config(dir.join("server.tox")))?;
    let id = toxtun_proto::Transport::id(&transport);
    let mut cfg = settings.endpoint_config(id.public_key, None);
    cfg.server = Some(conf.policy);
    let (node, done) = Node::spawn(
        Endpoint::new(cfg, seed())?,
        transport,
        NodeOptions {
            serve: true,
            ..Default::default()
        },
    );
    report(&node, cli.json, settings.fast_path);
    let control = control.serve(node.clone(), None, []);
    super::notify::spawn(&node);
    eprintln!("toxtun: serving as {id}");
    // The signal is taken first, and the node shut down after: its driver then ends as
    // asked, and that must not read as the node stopping by itself.
    let sig = tokio::select! {
        sig = stop.recv() => sig,
        () = control.stopped() => "stop requested",
        _ = done => return Err(Fail("the node stopped".into())),
    };
    eprintln!("toxtun: {sig}: shutting down (closing sessions)");
    node.shutdown().await;
    Ok(())
}
