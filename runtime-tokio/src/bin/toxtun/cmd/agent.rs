//! `toxtun agent`: this machine's client identity, run for pipes and forwards to attach
//! to. `pipe` starts one in the background when none runs (ssh's ControlMaster with
//! ControlPersist); it stays while streams are attached, and `--persist` after the last.

use std::time::Duration;

use super::{data_dir, hold_client, StopSignals};
use crate::cli::{Cli, NetArgs, SecretArgs};
use crate::cmd::pipe::AGENT_LOG;
use crate::Fail;

/// An agent's log is started afresh past this size when an agent takes the identity.
const LOG_LIMIT: u64 = 1 << 20;

/// Runs until `toxtun stop`, SIGINT or SIGTERM, or `persist` without an attached stream.
/// SIGHUP is ignored: a daemon outlives the terminal or ssh that started it.
pub(crate) async fn run(
    cli: &Cli,
    persist: Option<Duration>,
    secret: &SecretArgs,
    net: &NetArgs,
) -> Result<(), Fail> {
    let mut stop = StopSignals::new();
    let dir = data_dir(&cli.data_dir)?;
    let holder = hold_client(cli, None, secret, net, true).await?;
    let log = dir.join(AGENT_LOG);
    if std::fs::metadata(&log).is_ok_and(|m| m.len() > LOG_LIMIT) {
        // Its writers append, so they carry on at the new end.
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&log) {
            let _ = f.set_len(0);
        }
    }
    tracing::info!(
        pid = std::process::id(),
        "agent for {}: pipes attach through {}{}",
        dir.display(),
        toxtun_tokio::control::Role::Client
            .socket_path(&dir)
            .display(),
        persist.map_or(String::new(), |p| format!(
            "; it stops {} s after its last stream",
            p.as_secs()
        )),
    );
    let idle = async {
        match persist {
            Some(p) => holder.control.idle_for(p).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(idle);
    let why = loop {
        tokio::select! {
            sig = stop.recv() => if sig != "SIGHUP" {
                break format!("{sig}: shutting down (closing sessions)");
            },
            () = holder.control.stopped() => break "stop requested: shutting down (closing sessions)".to_string(),
            () = &mut idle => break format!(
                "no stream for {} s: shutting down (closing sessions)",
                persist.unwrap_or_default().as_secs()
            ),
        }
    };
    tracing::info!("{why}");
    holder.node.shutdown().await;
    Ok(())
}
