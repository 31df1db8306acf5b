//! systemd's readiness protocol (`Type=notify`): `READY=1` once the server is on the Tox
//! network, and `STATUS=` lines with its peers and streams, which `systemctl status`
//! shows. A datagram to `$NOTIFY_SOCKET`, nothing more, so no library.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use toxtun_tokio::{Node, NodeEvent};

/// How often the STATUS line is refreshed while something changes.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// A connection to systemd's notification socket, if the service manager gave one.
struct Notifier {
    sock: UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
}

impl Notifier {
    fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_str()?;
        let addr = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(path).ok()?,
        };
        Some(Notifier {
            sock: UnixDatagram::unbound().ok()?,
            addr,
        })
    }

    fn send(&self, state: &str) {
        if let Err(e) = self.sock.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::debug!("sd_notify {state:?}: {e}");
        }
    }
}

/// Under systemd (`NOTIFY_SOCKET` set): READY=1 when the node first connects to the Tox
/// network, then a STATUS line of peers, sessions and streams whenever it changes.
/// Elsewhere, nothing.
pub(crate) fn spawn(node: &Node) {
    let Some(notifier) = Notifier::from_env() else {
        return;
    };
    let node = node.clone();
    let mut events = node.events();
    tokio::spawn(async move {
        let mut ready = false;
        let mut last = String::new();
        loop {
            match tokio::time::timeout(STATUS_EVERY, events.recv()).await {
                Ok(Ok(NodeEvent::Tox { connected: true })) if !ready => {
                    ready = true;
                    notifier.send("READY=1");
                }
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return,
                _ => {}
            }
            let Ok(status) = node.status().await else {
                return;
            };
            let sessions = status
                .peers
                .iter()
                .filter(|p| p.session.as_ref().is_some_and(|s| s.established))
                .count();
            let streams: usize = status.peers.iter().map(|p| p.streams.len()).sum();
            let line = format!(
                "STATUS={}; {sessions} session(s), {streams} stream(s)",
                if status.tox_connected {
                    "on the Tox network"
                } else {
                    "connecting to the Tox network"
                }
            );
            if line != last {
                notifier.send(&line);
                last = line;
            }
        }
    });
}
