//! `toxtun forward -L`: local ports forwarded through a server, like `ssh -L`.

use tokio::net::TcpListener;
use toxtun_proto::Target;

use super::{client_node, StopSignals};
use crate::cli::{parse_forward, parse_server, Cli, NetArgs, SecretArgs};
use crate::Fail;

/// Listens on each `-L` spec's local address and forwards every connection to its target
/// through `server`, until Ctrl-C.
pub(crate) async fn run(
    cli: &Cli,
    local: &[String],
    server: &str,
    secret: &SecretArgs,
    net: &NetArgs,
) -> Result<(), Fail> {
    let mut stop = StopSignals::new();
    let server = parse_server(server)?;
    let specs: Vec<(String, Target)> = local
        .iter()
        .map(|s| parse_forward(s))
        .collect::<Result<_, _>>()?;
    let mut listeners = Vec::new();
    for (listen, target) in specs {
        let l = TcpListener::bind(&listen)
            .await
            .map_err(|e| Fail(format!("cannot listen on {listen}: {e}")))?;
        eprintln!("toxtun: {listen} -> {target} via {}", server.public_key);
        listeners.push((l, target));
    }
    let node = client_node(cli, server, secret, net).await?;
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
    stop.until_stopped(&node).await;
    Ok(())
}
