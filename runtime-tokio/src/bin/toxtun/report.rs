//! What a running node tells its user: log lines, or JSON lines with `--json`.

use std::time::{Duration, Instant};

use toxtun_proto::{SessionCode, StreamCode};
use toxtun_tokio::{Node, NodeEvent};

/// Prints events: JSON lines with --json, else log lines; returns when the node stops.
/// `fast_path`: this node offers the fast path (the log says what is true of it).
pub(crate) fn report(node: &Node, json: bool, fast_path: bool) {
    let mut rx = node.events();
    tokio::spawn(async move {
        let mut paths = PathReport::new(fast_path);
        loop {
            match rx.recv().await {
                Ok(e) => {
                    if json {
                        println!("{}", event_json(&e));
                    } else {
                        log_event(&e, &mut paths);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("{n} events not shown (too many at once)");
                }
                Err(_) => return,
            }
        }
    });
}

fn event_json(e: &NodeEvent) -> String {
    let code = e.status_code();
    let v = match e {
        NodeEvent::Tox { connected } => {
            serde_json::json!({"event": if *connected {"tox_connected"} else {"tox_offline"}, "code": code})
        }
        NodeEvent::FriendRequestSent { peer, code } => {
            serde_json::json!({"event": "friend_request_sent", "code": code, "peer": peer.to_string()})
        }
        NodeEvent::FriendRequest { peer, decision } => {
            serde_json::json!({"event": "friend_request", "accepted": decision.is_ok(), "code": code.or(decision.err().map(|c| c.code())), "peer": peer.to_string()})
        }
        NodeEvent::Peer { peer, online } => {
            serde_json::json!({"event": if *online {"peer_online"} else {"peer_offline"}, "code": code, "peer": peer.to_string()})
        }
        NodeEvent::PeerPath { peer, direct } => {
            serde_json::json!({"event": "peer_path", "direct": direct, "peer": peer.to_string()})
        }
        NodeEvent::SessionUp { peer, fast_path } => {
            serde_json::json!({"event": "session_up", "fast_path": fast_path, "peer": peer.to_string()})
        }
        NodeEvent::SessionSuspended { peer } => {
            serde_json::json!({"event": "session_suspended", "peer": peer.to_string()})
        }
        NodeEvent::SessionResumed { peer } => {
            serde_json::json!({"event": "session_resumed", "peer": peer.to_string()})
        }
        NodeEvent::SessionDown { peer, code, remote } => {
            serde_json::json!({"event": "session_down", "code": code.code(), "reason": code.describe(), "remote": remote, "peer": peer.to_string()})
        }
        NodeEvent::StreamOpen {
            stream,
            target,
            incoming,
        } => {
            serde_json::json!({"event": "stream_open", "stream": stream.to_string(), "target": target.to_string(), "incoming": incoming})
        }
        NodeEvent::ListenReady { peer, bind } => {
            serde_json::json!({"event": "listen_ready", "peer": peer.to_string(), "bind": bind.to_string()})
        }
        NodeEvent::ListenRefused { peer, bind, code } => {
            serde_json::json!({"event": "listen_refused", "peer": peer.to_string(), "bind": bind.to_string(), "code": code.code(), "reason": code.describe()})
        }
        NodeEvent::Listening { peer, bind } => {
            serde_json::json!({"event": "listening", "peer": peer.to_string(), "bind": bind.to_string()})
        }
        NodeEvent::ListenStopped { peer, bind, code } => {
            serde_json::json!({"event": "listen_stopped", "peer": peer.to_string(), "bind": bind.to_string(), "code": code.code(), "reason": code.describe()})
        }
        NodeEvent::StreamDenied { peer, target, code } => {
            serde_json::json!({"event": "stream_denied", "peer": peer.to_string(), "target": target.to_string(), "code": code.code(), "reason": code.describe()})
        }
        NodeEvent::StreamEnd { stream, code } => {
            serde_json::json!({"event": "stream_end", "stream": stream.to_string(), "code": code.map(|c| c.code()), "reason": code.map(|c| c.describe())})
        }
        _ => serde_json::json!({"event": "other"}),
    };
    v.to_string()
}

/// What is known of each peer's link and session, so that a log line about the fast path
/// says what is true: a link alone does not tell whether streams take it (this side or the
/// peer may not offer it). Also how long a link stayed on a TCP relay.
struct PathReport {
    offered: bool,
    /// Per peer: since when the link has been on a TCP relay (`None`: direct, or not
    /// known), and (once a session is up) whether both offered the fast path.
    peers: std::collections::HashMap<toxtun_proto::PeerId, (Option<Instant>, Option<bool>)>,
}

impl PathReport {
    fn new(offered: bool) -> Self {
        PathReport {
            offered,
            peers: std::collections::HashMap::new(),
        }
    }

    /// What the fast path does for `peer` now, as a log line's tail.
    fn fast_path(&self, peer: &toxtun_proto::PeerId) -> &'static str {
        let negotiated = self.peers.get(peer).and_then(|p| p.1);
        match (self.offered, negotiated) {
            (false, _) => {
                "fast path off here (--no-fast-path, or fast_path = false): streams go lossless"
            }
            (true, None) => "fast path offered; the session decides",
            (true, Some(false)) => "the peer does not offer the fast path: streams go lossless",
            (true, Some(true)) => "streams take the fast path",
        }
    }
}

fn log_event(e: &NodeEvent, paths: &mut PathReport) {
    match e {
        NodeEvent::PeerPath { peer, direct } => {
            let entry = paths.peers.entry(*peer).or_insert((None, None));
            let relayed_since = entry.0;
            entry.0 = if *direct {
                None
            } else {
                Some(relayed_since.unwrap_or_else(Instant::now))
            };
            let how = paths.fast_path(peer);
            match (direct, relayed_since) {
                (true, Some(t)) => tracing::info!(
                    %peer,
                    relayed_secs = t.elapsed().as_secs(),
                    "link is direct UDP after {:.1} s on a TCP relay: {how}",
                    t.elapsed().as_secs_f64()
                ),
                (true, None) => tracing::info!(%peer, "link is direct UDP: {how}"),
                (false, _) => tracing::info!(
                    %peer,
                    "link goes through a TCP relay (c-toxcore has not found a direct UDP route \
                     to the peer, or lost it): {how}"
                ),
            }
        }
        NodeEvent::SessionUp { peer, fast_path } => {
            paths.peers.entry(*peer).or_insert((None, None)).1 = Some(*fast_path);
            let how = paths.fast_path(peer);
            tracing::info!(%peer, "session established; {how}")
        }
        NodeEvent::Peer {
            peer,
            online: false,
        } => {
            paths.peers.remove(peer);
            tracing::info!(code = 302, %peer, "peer offline")
        }
        other => log_plain_event(other),
    }
}

fn log_plain_event(e: &NodeEvent) {
    match e {
        NodeEvent::Tox { connected: true } => {
            tracing::info!(code = 402, "connected to the Tox network")
        }
        NodeEvent::Tox { connected: false } => {
            tracing::warn!(code = 401, "offline from the Tox network")
        }
        NodeEvent::FriendRequestSent { peer, code } => {
            tracing::info!(code, %peer, "friend request sent; waiting for the server to accept")
        }
        NodeEvent::FriendRequest {
            peer,
            decision: Ok(()),
        } => tracing::info!(code = 101, %peer, "friend request accepted"),
        NodeEvent::FriendRequest {
            peer,
            decision: Err(c),
        } => tracing::warn!(code = c.code(), %peer, "friend request refused: {c}"),
        NodeEvent::Peer { peer, online: true } => tracing::info!(code = 301, %peer, "peer online"),

        NodeEvent::SessionSuspended { peer } => tracing::warn!(
            %peer,
            "link to the peer lost; its streams are held while it returns"
        ),
        NodeEvent::SessionResumed { peer } => {
            tracing::info!(%peer, "session resumed; streams carry on")
        }
        // Ended here on purpose (a signal, a disconnect): news, not a problem.
        NodeEvent::SessionDown { peer, code, remote }
            if !remote && matches!(code, SessionCode::Shutdown | SessionCode::Normal) =>
        {
            tracing::info!(code = code.code(), %peer, remote, "session ended: {code}")
        }
        NodeEvent::SessionDown { peer, code, remote } => {
            tracing::warn!(code = code.code(), %peer, remote, "session ended: {code}")
        }
        NodeEvent::StreamOpen {
            stream,
            target,
            incoming,
        } => tracing::info!(%stream, %target, incoming, "stream opened"),
        NodeEvent::StreamDenied { peer, target, code } => {
            tracing::warn!(%peer, %target, code = code.code(), "stream refused: {code}")
        }
        NodeEvent::ListenReady { peer, bind } => {
            tracing::info!(%peer, %bind, "the server listens on {bind} for us (-R)")
        }
        NodeEvent::ListenRefused { peer, bind, code } => tracing::warn!(
            %peer, %bind, code = code.code(), "the server will not listen on {bind}: {code}"
        ),
        NodeEvent::Listening { peer, bind } => {
            tracing::info!(%peer, %bind, "listening on {bind} for the client (-R)")
        }
        NodeEvent::ListenStopped { peer, bind, code } => tracing::info!(
            %peer, %bind, code = code.code(), "not listening on {bind} for the client: {code}"
        ),
        NodeEvent::StreamEnd { stream, code: None } => tracing::debug!(%stream, "stream closed"),
        // An application that hung up, or a session's end (logged itself, at the level
        // its cause deserves), is no problem of the stream's: only the rest warns. Once,
        // a pipe that ssh ended printed "session ended (2010)" into the user's terminal.
        NodeEvent::StreamEnd {
            stream,
            code: Some(c @ (StreamCode::Cancelled | StreamCode::SessionClosed)),
        } => tracing::info!(%stream, code = c.code(), "stream ended: {c}"),
        NodeEvent::StreamEnd {
            stream,
            code: Some(c),
        } => tracing::warn!(%stream, code = c.code(), "stream ended: {c}"),
        _ => {}
    }
}

/// Logs progress while waiting for the server's session.
pub(crate) fn watch_progress(node: &Node, quiet: bool) {
    let mut rx = node.events();
    tokio::spawn(async move {
        let start = Instant::now();
        let mut up = false;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Ok(NodeEvent::SessionUp { .. })) => up = true,
                Ok(Ok(NodeEvent::SessionDown { .. })) => up = false,
                Ok(Ok(_)) => {}
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(_)) => return,
                // Quiet (a ProxyCommand): only a wait that looks like a problem.
                Err(_) if !up && (!quiet || start.elapsed() >= Duration::from_secs(30)) => eprintln!(
                    "toxtun: still waiting for the server ({}s so far: joining the Tox network, friend request, handshake)",
                    start.elapsed().as_secs()
                ),
                Err(_) => {}
            }
        }
    });
}
