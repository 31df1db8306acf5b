//! `toxtun serve`: admit clients and connect their streams as the config file allows,
//! rereading it on SIGHUP or `toxtun reload`.

use std::path::Path;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use toxtun_proto::Endpoint;
use toxtun_tokio::config::ServerConfig;
use toxtun_tokio::control::{ControlServer, IdentityLock, Role};
use toxtun_tokio::metrics::MetricsServer;
use toxtun_tokio::{Node, NodeOptions, ReloadReport};
use toxtun_transport_tox::ToxTransport;

use super::{data_dir, seed, StopSignals};
use crate::cli::{Cli, NetArgs};
use crate::report::report;
use crate::Fail;

/// Serves with the configuration in `config` until Ctrl-C, SIGTERM or `toxtun stop`.
pub(crate) async fn run(cli: &Cli, config: &Path, net: &NetArgs) -> Result<(), Fail> {
    let mut stop = StopSignals::without_hangup();
    let mut hangup =
        signal(SignalKind::hangup()).map_err(|e| Fail(format!("cannot take SIGHUP: {e}")))?;
    let conf = ServerConfig::load(config)?;
    warn_about(config, &conf);
    let dir = data_dir(&cli.data_dir)?;
    let mut settings = net.settings()?;
    settings.apply_server_file(&conf);
    // One process per identity; `toxtun status` and `toxtun stop` ask it on its socket.
    let _lock = IdentityLock::acquire(&dir, Role::Server)?;
    let (reload_tx, mut reload_rx) = mpsc::channel(4);
    let control = ControlServer::bind(&dir, Role::Server)
        .map_err(|e| Fail(format!("control socket in {}: {e}", dir.display())))?
        .with_reload(reload_tx);
    let transport = ToxTransport::start(settings.tox_config(dir.join("server.tox")))?;
    let id = toxtun_proto::Transport::id(&transport);
    let mut cfg = settings.endpoint_config(id.public_key, None);
    cfg.server = Some(conf.policy.clone());
    let (node, mut done) = Node::spawn(
        Endpoint::new(cfg, seed())?,
        transport,
        NodeOptions {
            serve: true,
            ..Default::default()
        },
    );
    report(&node, cli.json, settings.fast_path);
    let _metrics = match conf.metrics {
        Some(addr) => Some(metrics(addr, &node).await?),
        None => None,
    };
    let control = control.serve(node.clone(), None, []);
    super::notify::spawn(&node);
    eprintln!("toxtun: serving as {id}");
    // What the process started with: a reload applies only the policy (to the node), and
    // says which of the other sections changed since.
    let started = conf;
    // The signal is taken first, and the node shut down after: its driver then ends as
    // asked, and that must not read as the node stopping by itself.
    let sig = loop {
        tokio::select! {
            sig = stop.recv() => break sig,
            () = control.stopped() => break "stop requested",
            _ = &mut done => return Err(Fail("the node stopped".into())),
            _ = hangup.recv() => {
                let _ = reload(cli, config, &node, &started).await;
            }
            Some(ask) = reload_rx.recv() => {
                let _ = ask.send(reload(cli, config, &node, &started).await);
            }
        }
    };
    eprintln!("toxtun: {sig}: shutting down (closing sessions)");
    node.shutdown().await;
    Ok(())
}

/// Serves `[metrics]` at `addr`.
async fn metrics(addr: std::net::SocketAddr, node: &Node) -> Result<MetricsServer, Fail> {
    let m = MetricsServer::start(addr, node.clone())
        .await
        .map_err(|e| Fail(format!("[metrics] listen = \"{addr}\": {e}")))?;
    if !addr.ip().is_loopback() {
        eprintln!(
            "toxtun: metrics on {addr} are readable by anyone who can reach that address (peer keys, traffic): keep it on loopback or behind a firewall"
        );
    }
    tracing::info!("metrics at http://{}/metrics", m.local_addr());
    Ok(m)
}

/// What a person should hear about a configuration before it is used.
fn warn_about(config: &Path, conf: &ServerConfig) {
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
}

/// Rereads `config` and applies it to `node`: a file with an error is refused as at the
/// start, and the running configuration stays. What changed is logged (and printed as a
/// JSON line with `--json`).
async fn reload(
    cli: &Cli,
    config: &Path,
    node: &Node,
    started: &ServerConfig,
) -> Result<ReloadReport, String> {
    let conf = match ServerConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("toxtun: reload refused, the running configuration stays: {e}");
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"event": "reload_refused", "code": 3011, "error": e.to_string()})
                );
            }
            return Err(e.to_string());
        }
    };
    warn_about(config, &conf);
    let later = conf.needs_restart(started);
    let report = node.reload(conf.policy).await.map_err(|e| e.to_string())?;
    eprintln!("toxtun: reloaded {}", config.display());
    for line in report.lines() {
        eprintln!("toxtun: reload: {line}");
    }
    if !later.is_empty() {
        eprintln!(
            "toxtun: reload: {} changed: applied at the next restart",
            later.join(", ")
        );
    }
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"event": "reloaded", "changes": report, "restart_needed": later})
        );
    }
    Ok(report)
}
