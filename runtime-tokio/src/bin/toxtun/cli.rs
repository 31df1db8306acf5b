//! The command line: clap's definitions, and the parsing of what they take (server IDs,
//! `-L` specs, secrets). To add a flag: here, and in the lib's `settings.rs` if it changes
//! how a node runs.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use toxtun_proto::{SharedSecret, Target, ToxId};
use toxtun_tokio::config::read_secret_file;
use toxtun_tokio::settings::NetSettings;

use crate::Fail;

#[derive(Parser, Debug)]
#[command(name = "toxtun", version, about = "TCP tunnels over the Tox peer-to-peer network", long_about = None)]
pub(crate) struct Cli {
    /// More log output (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Print events as JSON lines on standard output (with the seed's status codes).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Where the identity lives (default: the platform's data directory).
    #[arg(long, global = true, env = "TOXTUN_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create on first use, or show, this machine's Tox identity (the ID to share).
    Id {
        /// Do not print the QR code.
        #[arg(long)]
        no_qr: bool,
        /// Show the identity `forward` and `pipe` use instead: its public key is what a
        /// server lists in a `[[client]] key` to admit this machine without a secret.
        #[arg(long)]
        client: bool,
    },
    /// Run a server: admit clients and connect their streams as the config allows.
    Serve {
        /// The TOML configuration (see examples/server.toml).
        #[arg(short, long)]
        config: PathBuf,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Forward local ports through a server, like ssh -L.
    Forward {
        /// [bind_address:]port:host:hostport (repeatable).
        #[arg(short = 'L', value_name = "[BIND:]PORT:HOST:HOSTPORT", required = true)]
        local: Vec<String>,
        /// The server's Tox ID (76 hex digits).
        server: String,
        #[command(flatten)]
        secret: SecretArgs,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Connect standard input and output to host:port through a server (for ssh's
    /// ProxyCommand: ssh -o ProxyCommand='toxtun pipe <id> %h:%p' user@host).
    Pipe {
        /// The server's Tox ID (76 hex digits).
        server: String,
        /// The target, host:port.
        target: String,
        #[command(flatten)]
        secret: SecretArgs,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Run a Tox bootstrap node (DHT and TCP relay), for private networks and tests.
    Bootstrap {
        /// UDP port for the DHT.
        #[arg(long, default_value_t = 33445)]
        port: u16,
        /// TCP relay port (0: none).
        #[arg(long, default_value_t = 33445)]
        tcp_port: u16,
        /// Announce on the local network too.
        #[arg(long)]
        lan_discovery: bool,
        /// The address others should use to reach this node, for the line it prints.
        #[arg(long, default_value = "127.0.0.1")]
        public_host: String,
    },
    /// With no network: a bootstrap node, a server and a client on loopback over the real
    /// Tox protocol, an HTTP-sized download through the tunnel checked byte for byte.
    Demo {
        /// MiB to download.
        #[arg(long, default_value_t = 32)]
        mib: usize,
    },
}

#[derive(Args, Debug)]
pub(crate) struct SecretArgs {
    /// A file holding the server's shared secret (instead of an allowlisted key).
    #[arg(long, value_name = "FILE")]
    pub(crate) secret_file: Option<PathBuf>,
    /// The shared secret itself (visible to other users in the process list; prefer a file).
    #[arg(
        long,
        value_name = "SECRET",
        env = "TOXTUN_SECRET",
        hide_env_values = true
    )]
    pub(crate) secret: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct NetArgs {
    /// Bootstrap node host:port:KEY (repeatable; default: the public list).
    #[arg(long, value_name = "HOST:PORT:KEY")]
    pub(crate) bootstrap: Vec<String>,
    /// Find peers on the local network by broadcast.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) lan_discovery: bool,
    /// Use TCP relays only (no UDP).
    #[arg(long)]
    pub(crate) tcp_only: bool,
    /// Keep streams this many seconds across a lost Tox link: if it returns in time, they
    /// resume with nothing lost (0: end them at once).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub(crate) resume_grace: u64,
    /// Never use the fast path (stream bytes in lossy packets with toxtun's own congestion
    /// control on a direct UDP link); carry everything in c-toxcore's lossless packets.
    #[arg(long)]
    pub(crate) no_fast_path: bool,
}

impl Cli {
    /// `pipe` runs inside another program's terminal (ssh's ProxyCommand): unless asked
    /// with `-v`, it says nothing but problems, as `ssh -W` does.
    pub(crate) fn quiet(&self) -> bool {
        self.verbose == 0 && matches!(self.command, Command::Pipe { .. })
    }
}

impl NetArgs {
    /// The settings these flags give.
    pub(crate) fn settings(&self) -> Result<NetSettings, Fail> {
        let mut bootstrap = Vec::new();
        for b in &self.bootstrap {
            bootstrap.push(b.parse()?);
        }
        Ok(NetSettings {
            bootstrap,
            lan_discovery: self.lan_discovery,
            udp: !self.tcp_only,
            resume_grace: Duration::from_secs(self.resume_grace),
            fast_path: !self.no_fast_path,
        })
    }
}

pub(crate) fn parse_server(s: &str) -> Result<ToxId, Fail> {
    s.parse::<ToxId>()
        .map_err(|e| Fail(format!("server Tox ID {s:?}: {e}")))
}

pub(crate) fn load_secret(a: &SecretArgs) -> Result<Option<SharedSecret>, Fail> {
    let raw = match (&a.secret, &a.secret_file) {
        (Some(_), Some(_)) => return Err(Fail("give --secret or --secret-file, not both".into())),
        (Some(s), None) => s.clone().into_bytes(),
        (None, Some(f)) => {
            read_secret_file(f).map_err(|e| Fail(format!("secret file {}: {e}", f.display())))?
        }
        (None, None) => return Ok(None),
    };
    Ok(Some(SharedSecret::new(raw)?))
}

/// `[bind:]port:host:hostport`, as ssh -L.
pub(crate) fn parse_forward(spec: &str) -> Result<(String, Target), Fail> {
    let bad = |why: &str| {
        Fail(format!(
            "-L {spec}: {why} (write [bind:]port:host:hostport)"
        ))
    };
    // The target is the last host:port; IPv6 hosts are bracketed.
    let (listen, target) = if let Some(i) = spec.find('[') {
        (spec[..i].trim_end_matches(':'), &spec[i..])
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.len() {
            3 => ("", spec.split_once(':').map_or("", |x| x.1)),
            4 => {
                let cut = parts[0].len() + 1 + parts[1].len();
                (&spec[..cut], &spec[cut + 1..])
            }
            _ => return Err(bad("expected 3 or 4 fields")),
        }
    };
    let listen = if listen.is_empty() {
        // ssh's default: loopback only.
        format!("127.0.0.1:{}", spec.split(':').next().unwrap_or_default())
    } else if listen.contains(':') {
        listen.to_string()
    } else {
        format!("127.0.0.1:{listen}")
    };
    let target: Target = target
        .parse()
        .map_err(|e: toxtun_proto::TargetError| bad(&e.to_string()))?;
    Ok((listen, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_specs_parse_like_ssh() {
        let (l, t) = parse_forward("8080:127.0.0.1:80").unwrap();
        assert_eq!(
            (l.as_str(), t.to_string().as_str()),
            ("127.0.0.1:8080", "127.0.0.1:80")
        );
        let (l, t) = parse_forward("0.0.0.0:2222:localhost:22").unwrap();
        assert_eq!(
            (l.as_str(), t.to_string().as_str()),
            ("0.0.0.0:2222", "localhost:22")
        );
        let (l, t) = parse_forward("2222:[::1]:22").unwrap();
        assert_eq!(
            (l.as_str(), t.to_string().as_str()),
            ("127.0.0.1:2222", "[::1]:22")
        );
        assert!(parse_forward("8080").is_err());
        assert!(parse_forward("8080:host:0").is_err());
        assert!(parse_forward("a:b:c:d:e").is_err());
    }

    #[test]
    fn secrets_and_server_ids_fail_clearly() {
        let e = parse_server("1234").unwrap_err().0;
        assert!(e.contains("76"), "{e}");
        let a = SecretArgs {
            secret: Some("short".into()),
            secret_file: None,
        };
        assert!(load_secret(&a).unwrap_err().0.contains("8 bytes"));
    }
}
