//! `toxtun forward -D`: a SOCKS 5 (and 4a) server on a local port. Each CONNECT becomes a
//! stream to the target the client names, checked by the server against this client's
//! rules as for `-L`; the client hears the outcome as its SOCKS reply (not allowed 0x02,
//! refused 0x05, unreachable 0x04, timed out 0x06, …) before any byte flows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use toxtun_proto::{PeerId, StreamCode, Target};
use toxtun_tokio::control::{open, Attached, Opening};
use toxtun_tokio::socks::{self, Version};
use toxtun_tokio::Node;

use super::forward::Opener;

/// How long a SOCKS client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one SOCKS client: its handshake, the stream it asks for, the reply, the bytes.
pub(crate) async fn serve(opener: Arc<Opener>, mut sock: TcpStream, from: SocketAddr) {
    let (version, target) =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, socks::accept(&mut sock)).await {
            Ok(Ok(asked)) => asked,
            Ok(Err(e)) => return tracing::info!(%from, "SOCKS: {e}"),
            Err(_) => return tracing::info!(%from, "SOCKS: no request within 10 s"),
        };
    match &*opener {
        Opener::Node(node, peer) => via_node(node, *peer, sock, from, version, target).await,
        Opener::Attached(to) => match open(&to.dir, to.request(&target, true)).await {
            Ok(Opening::Open(stream)) => {
                if socks::reply(&mut sock, version, Ok(())).await.is_ok() {
                    let (rd, wr) = sock.into_split();
                    let _ = stream.relay(rd, wr).await;
                }
            }
            Ok(Opening::Other(Attached::Ended(code))) => {
                refuse(
                    &mut sock,
                    from,
                    version,
                    &target,
                    StreamCode::from_code(code),
                )
                .await
            }
            Ok(other) => {
                tracing::warn!(%from, %target, "SOCKS: {other:?}");
                let _ = socks::reply(&mut sock, version, Err(0x01)).await;
            }
            Err(e) => {
                tracing::warn!(%from, %target, "SOCKS: {e}");
                let _ = socks::reply(&mut sock, version, Err(0x01)).await;
            }
        },
    }
}

async fn via_node(
    node: &Node,
    peer: PeerId,
    mut sock: TcpStream,
    from: SocketAddr,
    version: Version,
    target: Target,
) {
    let mut pending = match node.open_pending(peer, target.clone()).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%from, %target, "SOCKS: {e}");
            let _ = socks::reply(&mut sock, version, Err(0x01)).await;
            return;
        }
    };
    match pending.accepted().await {
        Ok(()) => {
            if socks::reply(&mut sock, version, Ok(())).await.is_ok() {
                pending.carry(sock).await;
            }
        }
        Err(code) => refuse(&mut sock, from, version, &target, code).await,
    }
}

/// Tells the SOCKS client why its target cannot be reached, in its words and ours.
async fn refuse(
    sock: &mut TcpStream,
    from: SocketAddr,
    version: Version,
    target: &Target,
    code: StreamCode,
) {
    tracing::info!(%from, %target, code = code.code(), "SOCKS: {code}");
    let _ = socks::reply(sock, version, Err(socks::reply_code(code))).await;
}
