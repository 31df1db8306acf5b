//! `toxtun pipe`: standard input and output connected to one target through a server
//! (for ssh's ProxyCommand).

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use toxtun_proto::Target;
use toxtun_tokio::NodeEvent;

use super::client_node;
use crate::cli::{parse_server, Cli, NetArgs, SecretArgs};
use crate::Fail;

/// Copies stdin to a stream to `target` and the stream to stdout; a clean end exits 0, a
/// reset or refusal fails with its code.
pub(crate) async fn run(
    cli: &Cli,
    server: &str,
    target: &str,
    secret: &SecretArgs,
    net: &NetArgs,
) -> Result<(), Fail> {
    let server = parse_server(server)?;
    let target: Target = target
        .parse()
        .map_err(|e| Fail(format!("target {target:?}: {e}")))?;
    let node = client_node(cli, server, secret, net).await?;
    let mut events = node.events();
    let stream = node.open(server.public_key, target).await?;
    let id = stream.id();
    let (mut r, mut w) = tokio::io::split(stream);
    let up = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut w).await;
        let _ = w.shutdown().await;
    });
    let mut stdout = tokio::io::stdout();
    let _ = tokio::io::copy(&mut r, &mut stdout).await;
    let _ = stdout.flush().await;
    up.abort();
    // A clean end exits 0; a reset or refusal exits 1 with its code.
    let end = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            match events.recv().await {
                Ok(NodeEvent::StreamEnd { stream, code }) if stream == id => return code,
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    })
    .await
    .unwrap_or(None);
    node.shutdown().await;
    match end {
        None => Ok(()),
        Some(code) => Err(Fail(format!("stream ended: {code}"))),
    }
}
