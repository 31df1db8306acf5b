//! A server's configuration reloaded while it runs: the new policy goes to the endpoint
//! (which ends what it no longer admits and resets what it no longer allows), new clients
//! are befriended, and clients that lost their admission are unfriended. What changed comes
//! back as a [`ReloadReport`], for the log and for `toxtun reload --json`.

use serde::{Deserialize, Serialize};
use toxtun_proto::{PolicyChanges, Reconfigured, SecretChange, ServerPolicy};

use super::{Cmd, Node, NodeError};

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Clients listed by key now and not before (befriended).
    pub clients_added: Vec<String>,
    /// Clients listed by key before and not now.
    pub clients_removed: Vec<String>,
    /// Clients whose `allow` list changed.
    pub rules_changed: Vec<String>,
    /// The shared secret: `unchanged`, `added`, `removed`, `changed` or `rules changed`.
    pub secret: String,
    /// `[limits]` changed (applied to new sessions and streams).
    pub limits_changed: bool,
    /// Sessions ended with code 1014 (Revoked): the new configuration admits them no more.
    pub sessions_revoked: Vec<String>,
    /// Streams reset with code 2001: their targets are no longer allowed.
    pub streams_reset: Vec<ResetStream>,
    /// Peers being unfriended: 2 s after the reload (once their CLOSE 1014 has left),
    /// unless a later reload admits them again by then.
    pub unfriended: Vec<String>,
    /// `-R` listeners closed (2015): the new `listen` rules no longer allow them.
    #[serde(default)]
    pub listeners_closed: Vec<ClosedListener>,
    /// The `listen` rules changed.
    #[serde(default)]
    pub listen_changed: bool,
    /// UDP flows closed (2001): the new `udp:` rules no longer allow their targets.
    #[serde(default)]
    pub flows_closed: Vec<ClosedFlow>,
}

/// A UDP flow a reload closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedFlow {
    /// The client's key.
    pub peer: String,
    /// The flow's target, which the new rules do not allow.
    pub target: String,
}

/// A listener a reload closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedListener {
    /// The client's key.
    pub peer: String,
    /// Where the server listened for it.
    pub bind: String,
}

/// A stream a reload reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetStream {
    /// The client's key.
    pub peer: String,
    /// The stream's ID.
    pub stream: String,
    /// Its target, which the new rules do not allow.
    pub target: String,
}

impl ReloadReport {
    pub(super) fn new(
        changes: &PolicyChanges,
        done: &Reconfigured,
        unfriended: &[toxtun_proto::PeerId],
    ) -> Self {
        let keys = |v: &[toxtun_proto::PeerId]| v.iter().map(|p| p.to_string()).collect();
        ReloadReport {
            clients_added: keys(&changes.added),
            clients_removed: keys(&changes.removed),
            rules_changed: keys(&changes.rules_changed),
            secret: match changes.secret {
                SecretChange::Unchanged => "unchanged",
                SecretChange::Added => "added",
                SecretChange::Removed => "removed",
                SecretChange::Changed => "changed",
                SecretChange::RulesChanged => "rules changed",
            }
            .to_string(),
            limits_changed: changes.limits_changed,
            sessions_revoked: keys(&done.revoked),
            streams_reset: done
                .reset
                .iter()
                .map(|(peer, stream, target)| ResetStream {
                    peer: peer.to_string(),
                    stream: stream.to_string(),
                    target: target.to_string(),
                })
                .collect(),
            unfriended: keys(unfriended),
            listeners_closed: done
                .listeners_closed
                .iter()
                .map(|(peer, _, bind)| ClosedListener {
                    peer: peer.to_string(),
                    bind: bind.to_string(),
                })
                .collect(),
            listen_changed: changes.listen_changed,
            flows_closed: done
                .flows_closed
                .iter()
                .map(|(peer, _, target)| ClosedFlow {
                    peer: peer.to_string(),
                    target: target.to_string(),
                })
                .collect(),
        }
    }

    /// Whether the new configuration's policy is the old one.
    pub fn is_unchanged(&self) -> bool {
        self.clients_added.is_empty()
            && self.clients_removed.is_empty()
            && self.rules_changed.is_empty()
            && self.secret == "unchanged"
            && !self.limits_changed
            && !self.listen_changed
    }

    /// One line per change, for the log and the terminal.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.is_unchanged() {
            out.push("no change to clients, rules, listen rules or limits".to_string());
        }
        let mut each = |what: &str, keys: &[String]| {
            out.extend(keys.iter().map(|k| format!("{what} {k}")));
        };
        each("client added:", &self.clients_added);
        each("client removed:", &self.clients_removed);
        each("rules changed for client", &self.rules_changed);
        each("session revoked (1014):", &self.sessions_revoked);
        each("unfriended:", &self.unfriended);
        if self.secret != "unchanged" {
            out.push(format!("shared secret: {}", self.secret));
        }
        if self.limits_changed {
            out.push("limits changed (for new sessions and streams)".to_string());
        }
        if self.listen_changed {
            out.push("listen rules changed".to_string());
        }
        for l in &self.listeners_closed {
            out.push(format!(
                "listener on {} for {} closed (2015): no longer allowed",
                l.bind, l.peer
            ));
        }
        for f in &self.flows_closed {
            out.push(format!(
                "UDP flow of {} to {} closed (2001): no longer allowed",
                f.peer, f.target
            ));
        }
        for s in &self.streams_reset {
            out.push(format!(
                "stream {} of {} to {} reset (2001): no longer allowed",
                s.stream, s.peer, s.target
            ));
        }
        out
    }
}

impl Node {
    /// Replaces a serving node's policy (a configuration reload): clients no longer
    /// admitted lose their sessions (1014) and their friendship, streams no longer allowed
    /// are reset (2001), new clients are befriended, and nothing else is touched.
    pub async fn reload(&self, policy: ServerPolicy) -> Result<ReloadReport, NodeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.cmd
            .send(Cmd::Reload(Box::new(policy), tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }
}
