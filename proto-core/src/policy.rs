//! The server's policy: who may connect, what each may reach, and how much each may use.
//!
//! Default deny. A client is admitted if its public key is on the allowlist, or if it proves
//! knowledge of the shared secret; each admitted client may open only the targets its rules
//! allow. An endpoint with no [`ServerPolicy`] accepts no sessions at all.

use core::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::codes::SessionCode;
use crate::frame::PROOF_LEN;
use crate::ids::PeerId;
use crate::target::{Target, TargetPattern};

/// Domain separation for the proof carried in HELLO.
const HELLO_CONTEXT: &[u8] = b"toxtun/1 hello";
/// Domain separation for the proof carried in a Tox friend request.
const FRIEND_CONTEXT: &[u8] = b"toxtun/1 friend-request";
/// The prefix of every toxtun friend request message.
pub const FRIEND_REQUEST_PREFIX: &str = "toxtun/1";

/// A shared secret that admits clients who can prove they know it.
///
/// The proof is HMAC-SHA256 over a context string and both public keys (client then server).
/// Tox authenticates each packet's sender key, so a proof copied from one client is useless
/// to any other, and no extra round trip is needed.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret(Vec<u8>);

impl SharedSecret {
    /// The shortest secret accepted, in bytes.
    pub const MIN_LEN: usize = 8;

    /// Wraps a secret; it must be at least [`Self::MIN_LEN`] bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, PolicyError> {
        let secret = secret.into();
        if secret.len() < Self::MIN_LEN {
            return Err(PolicyError::SecretTooShort);
        }
        Ok(SharedSecret(secret))
    }

    fn mac(&self, context: &[u8], client: &PeerId, server: &PeerId) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(context);
        mac.update(client.as_bytes());
        mac.update(server.as_bytes());
        mac
    }

    /// The proof a client puts in its HELLO to `server`.
    pub fn hello_proof(&self, client: &PeerId, server: &PeerId) -> [u8; PROOF_LEN] {
        self.mac(HELLO_CONTEXT, client, server)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Checks a HELLO proof in constant time.
    pub fn verify_hello(&self, client: &PeerId, server: &PeerId, proof: &[u8]) -> bool {
        self.mac(HELLO_CONTEXT, client, server)
            .verify_slice(proof)
            .is_ok()
    }

    /// The friend request message a client sends to `server`: `toxtun/1 <64 hex digits>`.
    pub fn friend_request(&self, client: &PeerId, server: &PeerId) -> String {
        let proof: [u8; PROOF_LEN] = self
            .mac(FRIEND_CONTEXT, client, server)
            .finalize()
            .into_bytes()
            .into();
        let mut s = String::with_capacity(FRIEND_REQUEST_PREFIX.len() + 1 + 2 * PROOF_LEN);
        s.push_str(FRIEND_REQUEST_PREFIX);
        s.push(' ');
        for b in proof {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Checks a friend request message in constant time over the proof.
    pub fn verify_friend_request(&self, client: &PeerId, server: &PeerId, message: &[u8]) -> bool {
        let Some(hex) = message
            .strip_prefix(FRIEND_REQUEST_PREFIX.as_bytes())
            .and_then(|m| m.strip_prefix(b" "))
        else {
            return false;
        };
        let Some(proof) = decode_hex32(hex) else {
            return false;
        };
        self.mac(FRIEND_CONTEXT, client, server)
            .verify_slice(&proof)
            .is_ok()
    }
}

fn decode_hex32(hex: &[u8]) -> Option<[u8; PROOF_LEN]> {
    if hex.len() != 2 * PROOF_LEN {
        return None;
    }
    let mut out = [0u8; PROOF_LEN];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let s = core::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.write_str("SharedSecret(<redacted>)")
    }
}

/// The targets one client may reach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetRules {
    /// Allowed patterns for streams (TCP); a target must match one. Empty allows nothing.
    pub allow: Vec<TargetPattern>,
    /// Allowed patterns for UDP flows (`udp:host:port` in the configuration), apart from
    /// the TCP ones: allowing a TCP port never opens its UDP twin. Empty allows nothing.
    pub udp: Vec<TargetPattern>,
}

impl TargetRules {
    /// Rules allowing the given patterns for streams, and no UDP flow.
    pub fn new(allow: Vec<TargetPattern>) -> Self {
        TargetRules {
            allow,
            udp: Vec::new(),
        }
    }

    /// These rules, also allowing UDP flows to `udp`.
    pub fn with_udp(mut self, udp: Vec<TargetPattern>) -> Self {
        self.udp = udp;
        self
    }

    /// The pattern that allows a stream to `target`, if any.
    pub fn allowing(&self, target: &Target) -> Option<&TargetPattern> {
        self.allow.iter().find(|p| p.matches(target))
    }

    /// The pattern that allows a UDP flow to `target`, if any.
    pub fn allowing_udp(&self, target: &Target) -> Option<&TargetPattern> {
        self.udp.iter().find(|p| p.matches(target))
    }
}

/// A client admitted by its public key, with its own target rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRule {
    /// The client's Tox public key.
    pub peer: PeerId,
    /// What it may reach.
    pub targets: TargetRules,
}

/// Limits that protect the server from one client and from many.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Sessions accepted at once; past it HELLO is refused with `TooManyPeers`.
    pub max_peers: usize,
    /// Streams open at once per peer; past it OPEN is refused with `TooManyStreams`.
    pub max_streams_per_peer: usize,
    /// UDP flows open at once per peer; past it UOPEN is refused with `TooManyFlows`.
    /// Each is a socket on the server.
    pub max_flows_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_peers: 64,
            max_streams_per_peer: 256,
            max_flows_per_peer: 256,
        }
    }
}

/// The whole server policy. `ServerPolicy::default()` admits nobody.
#[derive(Clone, Debug, Default)]
pub struct ServerPolicy {
    /// Clients admitted by key.
    pub clients: Vec<ClientRule>,
    /// A secret that admits any client proving it, with the rules such clients get.
    pub secret: Option<(SharedSecret, TargetRules)>,
    /// Resource limits.
    pub limits: Limits,
    /// Where clients may ask the server to listen for them (reverse forwarding). Empty
    /// allows nothing.
    pub listen: ListenRules,
}

/// Where each client may have the server listen (`listen = [...]` in the config).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenRules {
    /// Clients admitted by key, with their addresses.
    pub clients: Vec<(PeerId, TargetRules)>,
    /// Clients admitted by the shared secret.
    pub secret: TargetRules,
}

/// Which rule admitted a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// By its key: the index into [`ServerPolicy::clients`].
    Key(usize),
    /// By proving the shared secret.
    Secret,
}

impl ServerPolicy {
    /// Whether this policy can admit anyone at all (a server without it should say so).
    pub fn admits_anyone(&self) -> bool {
        !self.clients.is_empty() || self.secret.is_some()
    }

    /// Decides a HELLO from `client` to `server` carrying `proof`.
    pub fn admit(
        &self,
        client: &PeerId,
        server: &PeerId,
        proof: Option<&[u8; PROOF_LEN]>,
    ) -> Result<Admission, SessionCode> {
        if let Some(i) = self.clients.iter().position(|c| c.peer == *client) {
            return Ok(Admission::Key(i));
        }
        match (&self.secret, proof) {
            (Some((secret, _)), Some(p)) if secret.verify_hello(client, server, p) => {
                Ok(Admission::Secret)
            }
            (Some(_), Some(_)) => Err(SessionCode::BadSecret),
            _ => Err(SessionCode::Unauthorized),
        }
    }

    /// Decides a Tox friend request from `client` to `server` with `message`.
    pub fn admit_friend_request(
        &self,
        client: &PeerId,
        server: &PeerId,
        message: &[u8],
    ) -> Result<Admission, SessionCode> {
        if let Some(i) = self.clients.iter().position(|c| c.peer == *client) {
            return Ok(Admission::Key(i));
        }
        match &self.secret {
            Some((secret, _)) if secret.verify_friend_request(client, server, message) => {
                Ok(Admission::Secret)
            }
            Some(_) if message.starts_with(FRIEND_REQUEST_PREFIX.as_bytes()) => {
                Err(SessionCode::BadSecret)
            }
            _ => Err(SessionCode::Unauthorized),
        }
    }

    /// Under this (reloaded) policy, the admission of a client that `old` admitted as
    /// `was`: by key if its key is listed now; by the secret if it proved one and the
    /// secret is the same; else none (the session ends with `Revoked`). A client admitted
    /// by key whose key is gone is not moved to the secret: its HELLO proved none.
    pub fn readmit(
        &self,
        client: &PeerId,
        was: Admission,
        old: &ServerPolicy,
    ) -> Option<Admission> {
        if let Some(i) = self.clients.iter().position(|c| c.peer == *client) {
            return Some(Admission::Key(i));
        }
        let same_secret = match (&self.secret, &old.secret) {
            (Some((new, _)), Some((old, _))) => new == old,
            _ => false,
        };
        (was == Admission::Secret && same_secret).then_some(Admission::Secret)
    }

    /// What changes from this policy to `new`: for a reload to log and report.
    pub fn changes(&self, new: &ServerPolicy) -> PolicyChanges {
        let keys = |p: &ServerPolicy| -> Vec<PeerId> { p.clients.iter().map(|c| c.peer).collect() };
        let (old_keys, new_keys) = (keys(self), keys(new));
        let rules_of = |p: &ServerPolicy, k: &PeerId| {
            p.clients
                .iter()
                .find(|c| c.peer == *k)
                .map(|c| c.targets.clone())
        };
        let secret = match (&self.secret, &new.secret) {
            (None, None) => SecretChange::Unchanged,
            (None, Some(_)) => SecretChange::Added,
            (Some(_), None) => SecretChange::Removed,
            (Some((a, ra)), Some((b, rb))) if a == b => {
                if ra == rb {
                    SecretChange::Unchanged
                } else {
                    SecretChange::RulesChanged
                }
            }
            (Some(_), Some(_)) => SecretChange::Changed,
        };
        PolicyChanges {
            added: new_keys
                .iter()
                .filter(|k| !old_keys.contains(k))
                .copied()
                .collect(),
            removed: old_keys
                .iter()
                .filter(|k| !new_keys.contains(k))
                .copied()
                .collect(),
            rules_changed: new_keys
                .iter()
                .filter(|k| old_keys.contains(k) && rules_of(self, k) != rules_of(new, k))
                .copied()
                .collect(),
            secret,
            limits_changed: self.limits != new.limits,
            listen_changed: self.listen != new.listen,
        }
    }

    /// Where an admitted client may have the server listen.
    pub fn listen_rules(&self, client: &PeerId, admission: Admission) -> &TargetRules {
        static NONE: TargetRules = TargetRules {
            allow: Vec::new(),
            udp: Vec::new(),
        };
        match admission {
            Admission::Key(_) => self
                .listen
                .clients
                .iter()
                .find(|(p, _)| p == client)
                .map_or(&NONE, |(_, r)| r),
            Admission::Secret => &self.listen.secret,
        }
    }

    /// The rules that apply to an admitted client.
    pub fn rules(&self, admission: Admission) -> &TargetRules {
        static NONE: TargetRules = TargetRules {
            allow: Vec::new(),
            udp: Vec::new(),
        };
        match admission {
            Admission::Key(i) => self.clients.get(i).map_or(&NONE, |c| &c.targets),
            Admission::Secret => self.secret.as_ref().map_or(&NONE, |(_, r)| r),
        }
    }
}

/// What a reload changes in a [`ServerPolicy`] ([`ServerPolicy::changes`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyChanges {
    /// Clients listed now and not before: befriended at once.
    pub added: Vec<PeerId>,
    /// Clients listed before and not now: their sessions end (`Revoked`), and they are
    /// unfriended.
    pub removed: Vec<PeerId>,
    /// Clients listed in both whose `allow` list differs: streams the new list no longer
    /// allows are reset (`TargetNotAllowed`).
    pub rules_changed: Vec<PeerId>,
    /// What happened to the shared secret.
    pub secret: SecretChange,
    /// `[limits]` differ: applied to new sessions and streams.
    pub limits_changed: bool,
    /// The `listen` rules differ: listeners they no longer allow are closed.
    pub listen_changed: bool,
}

impl PolicyChanges {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        *self == PolicyChanges::default()
    }
}

/// What a reload does to the shared secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecretChange {
    /// The same secret with the same rules (or no secret before or after).
    #[default]
    Unchanged,
    /// A secret where there was none.
    Added,
    /// No secret any more: clients it admitted are revoked.
    Removed,
    /// Another secret: clients the old one admitted are revoked.
    Changed,
    /// The same secret with another `allow` list.
    RulesChanged,
}

/// Why a policy could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The shared secret is too short to resist guessing.
    #[error("shared secret must be at least {} bytes", SharedSecret::MIN_LEN)]
    SecretTooShort,
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: PeerId = PeerId([1; 32]);
    const SERVER: PeerId = PeerId([2; 32]);
    const OTHER: PeerId = PeerId([3; 32]);

    #[test]
    fn default_policy_denies_everyone() {
        let p = ServerPolicy::default();
        assert!(!p.admits_anyone());
        assert_eq!(
            p.admit(&CLIENT, &SERVER, None),
            Err(SessionCode::Unauthorized)
        );
        assert_eq!(
            p.admit_friend_request(&CLIENT, &SERVER, b"hi"),
            Err(SessionCode::Unauthorized)
        );
    }

    #[test]
    fn secret_proofs_bind_both_keys() {
        let s = SharedSecret::new("correct horse battery").unwrap();
        let p = ServerPolicy {
            secret: Some((s.clone(), TargetRules::default())),
            ..Default::default()
        };
        let proof = s.hello_proof(&CLIENT, &SERVER);
        assert_eq!(
            p.admit(&CLIENT, &SERVER, Some(&proof)),
            Ok(Admission::Secret)
        );
        // A proof copied to another client, or aimed at another server, is worthless.
        assert_eq!(
            p.admit(&OTHER, &SERVER, Some(&proof)),
            Err(SessionCode::BadSecret)
        );
        assert_eq!(
            p.admit(&CLIENT, &OTHER, Some(&proof)),
            Err(SessionCode::BadSecret)
        );
        let wrong = SharedSecret::new("wrong horse battery").unwrap();
        assert_eq!(
            p.admit(&CLIENT, &SERVER, Some(&wrong.hello_proof(&CLIENT, &SERVER))),
            Err(SessionCode::BadSecret)
        );
        let msg = s.friend_request(&CLIENT, &SERVER);
        assert!(msg.starts_with("toxtun/1 "));
        assert_eq!(
            p.admit_friend_request(&CLIENT, &SERVER, msg.as_bytes()),
            Ok(Admission::Secret)
        );
        assert_eq!(
            p.admit_friend_request(&OTHER, &SERVER, msg.as_bytes()),
            Err(SessionCode::BadSecret)
        );
        assert_eq!(
            p.admit_friend_request(&CLIENT, &SERVER, b"let me in"),
            Err(SessionCode::Unauthorized)
        );
        assert!(SharedSecret::new("short").is_err());
        assert_eq!(format!("{s:?}"), "SharedSecret(<redacted>)");
    }

    #[test]
    fn allowlisted_key_gets_its_own_rules() {
        let p = ServerPolicy {
            clients: vec![ClientRule {
                peer: CLIENT,
                targets: TargetRules::new(vec!["127.0.0.1:22".parse().unwrap()]),
            }],
            ..Default::default()
        };
        let a = p.admit(&CLIENT, &SERVER, None).unwrap();
        assert!(p
            .rules(a)
            .allowing(&"127.0.0.1:22".parse().unwrap())
            .is_some());
        assert!(p
            .rules(a)
            .allowing(&"127.0.0.1:23".parse().unwrap())
            .is_none());
        assert_eq!(
            p.admit(&OTHER, &SERVER, None),
            Err(SessionCode::Unauthorized)
        );
    }
}
