//! `toxtun pipe`: standard input and output connected to one target through a server
//! (for ssh's ProxyCommand).

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use toxtun_proto::{PeerId, Target};
use toxtun_tokio::{Node, NodeEvent};

use super::{client_node, StopSignals};
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
    let mut stop = StopSignals::new();
    let server = parse_server(server)?;
    let target: Target = target
        .parse()
        .map_err(|e| Fail(format!("target {target:?}: {e}")))?;
    let node = client_node(cli, server, secret, net).await?;
    let result = tokio::select! {
        r = carry(&node, server.public_key, target) => r,
        // ssh sends SIGHUP when it is done with its ProxyCommand: the server hears CLOSE
        // at once instead of waiting out its keepalive.
        sig = stop.recv() => {
            if !cli.quiet() {
                eprintln!("toxtun: {sig}: closing the session");
            }
            Ok(())
        }
    };
    node.shutdown().await;
    result
}

/// Copies stdin to a stream to `target` through `server`, and the stream to stdout, until
/// it ends; a reset or refusal is an error with its code.
async fn carry(node: &Node, server: PeerId, target: Target) -> Result<(), Fail> {
    let mut events = node.events();
    let stream = node.open(server, target).await?;
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
    match end {
        None => Ok(()),
        Some(code) => Err(Fail(format!("stream ended: {code}"))),
    }
}
