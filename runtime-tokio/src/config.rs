//! The server's TOML configuration (`toxtun serve --config server.toml`).
//!
//! ```toml
//! # Clients admitted by key, each with its own targets.
//! [[client]]
//! key = "C0FFEE…64 hex digits…"
//! allow = ["127.0.0.1:22", "localhost:8000-8100", "udp:127.0.0.1:53"] # udp: for forward -U
//! listen = ["127.0.0.1:8000-8100"] # where it may have the server listen (forward -R)
//!
//! # Anyone proving this secret is admitted, with these targets.
//! [secret]
//! file = "/etc/toxtun/secret"     # or: value = "…"
//! allow = ["127.0.0.1:22"]
//!
//! [limits]
//! max_peers = 64
//! max_streams_per_peer = 256
//! max_flows_per_peer = 256        # UDP flows (each a socket on the server)
//!
//! [session]
//! resume_grace_secs = 120         # streams outlive a lost Tox link this long
//! fast_path = true                # lossy packets + own congestion control on direct UDP
//! congestion = "bbr"              # the fast path's controller: bbr or newreno
//!
//! [metrics]
//! listen = "127.0.0.1:9184"       # Prometheus text format at /metrics (default: off)
//!
//! [network]
//! bootstrap = ["host:port:KEY"]   # default: the public list
//! lan_discovery = true
//! udp = true
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toxtun_proto::{
    ClientRule, Limits, PeerId, ServerPolicy, SharedSecret, TargetPattern, TargetRules,
};
use toxtun_transport_tox::BootstrapNode;

/// Why a configuration file was refused. Messages say where and what.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped fields.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value is wrong.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the entry.
        what: String,
    },
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    client: Vec<ClientEntry>,
    secret: Option<SecretEntry>,
    #[serde(default)]
    limits: Option<LimitsEntry>,
    #[serde(default)]
    network: NetworkEntry,
    session: Option<SessionEntry>,
    metrics: Option<MetricsEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsEntry {
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionEntry {
    resume_grace_secs: Option<u64>,
    fast_path: Option<bool>,
    congestion: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    key: String,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    listen: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretEntry {
    value: Option<String>,
    file: Option<PathBuf>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    listen: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsEntry {
    max_peers: Option<usize>,
    max_streams_per_peer: Option<usize>,
    max_flows_per_peer: Option<usize>,
}

/// `[session]`'s values: the resume grace, the fast-path switch, the controller.
type SessionValues = (
    Option<u64>,
    Option<bool>,
    Option<toxtun_proto::CongestionControl>,
);

impl SessionEntry {
    /// The resume grace, the fast-path switch and the controller, checked.
    fn values(&self) -> Result<SessionValues, String> {
        if self.resume_grace_secs.is_some_and(|g| g > 24 * 3600) {
            return Err("session.resume_grace_secs: at most 86400 (a day)".into());
        }
        let congestion = match self.congestion.as_deref() {
            None => None,
            Some(name) => Some(
                name.parse()
                    .map_err(|e| format!("session.congestion: {e}"))?,
            ),
        };
        Ok((self.resume_grace_secs, self.fast_path, congestion))
    }
}

impl LimitsEntry {
    /// The limits given, the defaults for the others.
    fn limits(&self) -> Limits {
        let d = Limits::default();
        Limits {
            max_peers: self.max_peers.unwrap_or(d.max_peers),
            max_streams_per_peer: self.max_streams_per_peer.unwrap_or(d.max_streams_per_peer),
            max_flows_per_peer: self.max_flows_per_peer.unwrap_or(d.max_flows_per_peer),
        }
    }
}

/// Network settings of the config file.
#[derive(Debug, Deserialize, Default, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkEntry {
    /// Bootstrap nodes (`host:port:KEY`); empty: the public list.
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// LAN discovery (default on).
    pub lan_discovery: Option<bool>,
    /// UDP (default on).
    pub udp: Option<bool>,
}

/// A parsed server configuration.
#[derive(Debug)]
pub struct ServerConfig {
    /// The policy for the endpoint.
    pub policy: ServerPolicy,
    /// Bootstrap nodes given in the file (empty: use the default).
    pub bootstrap: Vec<BootstrapNode>,
    /// Network switches.
    pub network: NetworkEntry,
    /// How long streams outlive a lost Tox link (`[session] resume_grace_secs`), if set.
    pub resume_grace_secs: Option<u64>,
    /// The fast path's congestion controller (`[session] congestion`), if set.
    pub congestion: Option<toxtun_proto::CongestionControl>,
    /// Whether to offer the fast path (`[session] fast_path`), if set.
    pub fast_path: Option<bool>,
    /// Where to serve Prometheus metrics (`[metrics] listen`), if set.
    pub metrics: Option<std::net::SocketAddr>,
}

fn rules(path: &Path, who: &str, allow: &[String]) -> Result<TargetRules, ConfigError> {
    rules_of(path, who, "allow", allow)
}

fn rules_of(
    path: &Path,
    who: &str,
    key: &str,
    allow: &[String],
) -> Result<TargetRules, ConfigError> {
    let (mut tcp, mut udp) = (Vec::new(), Vec::new());
    for (i, a) in allow.iter().enumerate() {
        let invalid = |e: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            what: format!("{who}: {key}[{i}] = {a:?}: {e}"),
        };
        // `udp:host:port` allows UDP flows (`forward -U`); a bare `host:port`, streams.
        let (list, pattern) = match a.trim().strip_prefix("udp:") {
            Some(_) if key == "listen" => {
                return Err(invalid("UDP listeners are not supported".into()));
            }
            Some(rest) => (&mut udp, rest),
            None => (&mut tcp, a.as_str()),
        };
        let p: TargetPattern = pattern.parse().map_err(|e| invalid(format!("{e}")))?;
        list.push(p);
    }
    Ok(TargetRules::new(tcp).with_udp(udp))
}

/// Reads a shared-secret file. Trailing whitespace (the newline an editor adds) is not
/// part of the secret, so server and clients agree however the file was written.
pub fn read_secret_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut v = std::fs::read(path)?;
    while v.last().is_some_and(|b| b.is_ascii_whitespace()) {
        v.pop();
    }
    Ok(v)
}

impl ServerConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(path, &text)
    }

    /// Parses configuration text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let invalid = |what: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            what,
        };
        let mut policy = ServerPolicy::default();
        for (i, c) in file.client.iter().enumerate() {
            let key = c.key.trim();
            // Accept a full Tox ID too: people copy what `toxtun id` prints.
            let peer = if key.len() == 76 {
                key.parse::<toxtun_proto::ToxId>()
                    .map(|id| id.public_key)
                    .map_err(|e| invalid(format!("client[{i}].key: {e}")))?
            } else {
                PeerId::from_hex(key).map_err(|e| invalid(format!("client[{i}].key: {e}")))?
            };
            let who = format!("client[{i}]");
            policy.clients.push(ClientRule {
                peer,
                targets: rules(path, &who, &c.allow)?,
            });
            policy
                .listen
                .clients
                .push((peer, rules_of(path, &who, "listen", &c.listen)?));
        }
        if let Some(s) = &file.secret {
            let value = match (&s.value, &s.file) {
                (Some(v), None) => v.clone().into_bytes(),
                (None, Some(f)) => read_secret_file(f)
                    .map_err(|e| invalid(format!("secret.file {}: {e}", f.display())))?,
                _ => return Err(invalid("secret: give exactly one of value or file".into())),
            };
            let secret = SharedSecret::new(value).map_err(|e| invalid(format!("secret: {e}")))?;
            policy.secret = Some((secret, rules(path, "secret", &s.allow)?));
            policy.listen.secret = rules_of(path, "secret", "listen", &s.listen)?;
        }
        if let Some(l) = &file.limits {
            policy.limits = l.limits();
        }
        let mut bootstrap = Vec::new();
        for (i, b) in file.network.bootstrap.iter().enumerate() {
            bootstrap.push(
                b.parse()
                    .map_err(|e| invalid(format!("network.bootstrap[{i}]: {e}")))?,
            );
        }
        let (resume_grace_secs, fast_path, congestion) = match &file.session {
            Some(sess) => sess.values().map_err(invalid)?,
            None => (None, None, None),
        };
        let metrics = match &file.metrics {
            None => None,
            Some(m) => Some(m.listen.parse().map_err(|e| {
                invalid(format!(
                    "metrics.listen = {:?}: {e} (an address and port, e.g. \"127.0.0.1:9184\")",
                    m.listen
                ))
            })?),
        };
        Ok(ServerConfig {
            policy,
            bootstrap,
            network: file.network,
            resume_grace_secs,
            fast_path,
            congestion,
            metrics,
        })
    }

    /// The sections that differ from `running`'s and that only a restart applies: a reload
    /// changes clients, secret, rules and limits, and says these stay as they were.
    pub fn needs_restart(&self, running: &ServerConfig) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.bootstrap != running.bootstrap || self.network != running.network {
            out.push("[network]");
        }
        if (self.resume_grace_secs, self.fast_path, self.congestion)
            != (
                running.resume_grace_secs,
                running.fast_path,
                running.congestion,
            )
        {
            out.push("[session]");
        }
        if self.metrics != running.metrics {
            out.push("[metrics]");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::parse(Path::new("server.toml"), t)
    }

    #[test]
    fn a_full_config_parses() {
        let k = "AB".repeat(32);
        let c = parse(&format!(
            "[[client]]\nkey = \"{k}\"\nallow = [\"127.0.0.1:22\", \"*.lan:*\"]\n\
             [secret]\nvalue = \"a long enough secret\"\nallow = [\"127.0.0.1:80\"]\n\
             [limits]\nmax_peers = 3\n[session]\nresume_grace_secs = 30\nfast_path = false\n[network]\nbootstrap = [\"127.0.0.1:33445:{k}\"]\nudp = false\n"
        ))
        .unwrap();
        assert_eq!(c.policy.clients.len(), 1);
        assert_eq!(c.policy.clients[0].targets.allow.len(), 2);
        assert!(c.policy.secret.is_some());
        assert_eq!(c.policy.limits.max_peers, 3);
        assert_eq!(c.policy.limits.max_streams_per_peer, 256);
        assert_eq!(c.bootstrap.len(), 1);
        assert_eq!(c.network.udp, Some(false));
        assert_eq!(c.resume_grace_secs, Some(30));
        assert_eq!(c.fast_path, Some(false));
        assert!(
            c.policy.listen.clients[0].1.allow.is_empty(),
            "no listen: none"
        );
    }

    #[test]
    fn listen_rules_parse_per_client_and_for_the_secret() {
        let k = "AB".repeat(32);
        let c = parse(&format!(
            "[[client]]\nkey = \"{k}\"\nlisten = [\"127.0.0.1:8000-8100\"]\n\
             [secret]\nvalue = \"a long enough secret\"\nlisten = [\"127.0.0.1:9000\"]\n"
        ))
        .unwrap();
        let bind: toxtun_proto::Target = "127.0.0.1:8080".parse().unwrap();
        assert!(c.policy.listen.clients[0].1.allowing(&bind).is_some());
        assert_eq!(c.policy.listen.secret.allow.len(), 1);
        let e = parse(&format!("[[client]]\nkey = \"{k}\"\nlisten = [\"8080\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("client[0]: listen[0]"), "{e}");
    }

    #[test]
    fn udp_rules_are_their_own_list() {
        let k = "AB".repeat(32);
        let c = parse(&format!(
            "[[client]]\nkey = \"{k}\"\nallow = [\"127.0.0.1:53\", \"udp:127.0.0.1:5300-5400\"]\n"
        ))
        .unwrap();
        let rules = &c.policy.clients[0].targets;
        let dns: toxtun_proto::Target = "127.0.0.1:53".parse().unwrap();
        let alt: toxtun_proto::Target = "127.0.0.1:5353".parse().unwrap();
        assert!(rules.allowing(&dns).is_some() && rules.allowing_udp(&dns).is_none());
        assert!(rules.allowing_udp(&alt).is_some() && rules.allowing(&alt).is_none());
        for bad in ["udp:8080", "udp:"] {
            let e = parse(&format!("[[client]]\nkey = \"{k}\"\nallow = [\"{bad}\"]\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("client[0]: allow[0]"), "{e}");
        }
        let e = parse(&format!(
            "[[client]]\nkey = \"{k}\"\nlisten = [\"udp:127.0.0.1:9\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("UDP listeners are not supported"), "{e}");
    }

    #[test]
    fn the_shipped_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/server.toml");
        let c = ServerConfig::load(&path).unwrap();
        assert_eq!(c.policy.clients.len(), 1);
        assert!(c.policy.secret.is_none());
    }

    #[test]
    fn a_reload_names_the_sections_only_a_restart_applies() {
        let base = parse(&format!("[[client]]\nkey = \"{}\"\n", "AB".repeat(32))).unwrap();
        let other = parse(
            "[session]\nfast_path = false\n[metrics]\nlisten = \"127.0.0.1:9184\"\n[network]\nudp = false\n",
        )
        .unwrap();
        assert_eq!(
            other.needs_restart(&base),
            ["[network]", "[session]", "[metrics]"]
        );
        assert!(parse("").unwrap().needs_restart(&base).is_empty());
        let e = parse("[metrics]\nlisten = \"9184\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.listen"), "{e}");
    }

    #[test]
    fn an_empty_config_admits_nobody() {
        assert!(!parse("").unwrap().policy.admits_anyone());
    }

    #[test]
    fn errors_name_the_entry() {
        let k = "AB".repeat(32);
        let e = parse(&format!(
            "[[client]]\nkey = \"{k}\"\nallow = [\"127.0.0.1\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("client[0]: allow[0]") && e.contains("port"),
            "{e}"
        );
        let e = parse("[[client]]\nkey = \"xyz\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("client[0].key"), "{e}");
        let e = parse("[limits]\nmax_peer = 3\n").unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
        let e = parse("[secret]\nvalue = \"short\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 8"), "{e}");
        let e = parse("[[client]\n").unwrap_err().to_string();
        assert!(e.contains("server.toml"), "{e}");
    }
}
