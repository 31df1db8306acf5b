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
    /// SIGHUP (or `toxtun reload`) rereads the config without touching live sessions.
    Serve {
        /// The TOML configuration (see examples/server.toml).
        #[arg(short, long)]
        config: PathBuf,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Forward local ports through a server, like ssh -L, -R and -D, and UDP ports (-U).
    Forward {
        /// [bind_address:]port:host:hostport (repeatable).
        #[arg(
            short = 'L',
            value_name = "[BIND:]PORT:HOST:HOSTPORT",
            required_unless_present_any = ["dynamic", "remote", "udp"]
        )]
        local: Vec<String>,
        /// Reverse, like ssh -R: the server listens on [bind_address:]port (loopback by
        /// default) and each connection to it comes here, to host:hostport (repeatable;
        /// the server's `listen` rules must allow it; e.g. -R 8080:127.0.0.1:3000).
        #[arg(short = 'R', value_name = "[BIND:]PORT:HOST:HOSTPORT")]
        remote: Vec<String>,
        /// A SOCKS 5 (and 4a) server on [bind_address:]port, like ssh -D: each CONNECT
        /// goes to the host the client names, resolved on the server's side, as the
        /// server's rules allow (repeatable; e.g. curl --socks5-hostname 127.0.0.1:1080).
        #[arg(short = 'D', value_name = "[BIND:]PORT")]
        dynamic: Vec<String>,
        /// UDP: each datagram to [bind_address:]port goes to host:hostport on the server's
        /// side, each sender in a flow of its own, and the answers come back (repeatable;
        /// the server's rules must allow `udp:host:hostport`; e.g. -U 5353:127.0.0.1:53,
        /// then dig -p 5353 @127.0.0.1 example.org).
        #[arg(short = 'U', value_name = "[BIND:]PORT:HOST:HOSTPORT")]
        udp: Vec<String>,
        /// The server's Tox ID (76 hex digits).
        server: String,
        #[command(flatten)]
        secret: SecretArgs,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Connect standard input and output to host:port through a server (for ssh's
    /// ProxyCommand: ssh -o ProxyCommand='toxtun pipe <id> %h:%p' user@host). Attaches to
    /// the toxtun process that already runs this identity (an agent, a forward), so it
    /// starts in milliseconds; with none, starts `toxtun agent` in the background first.
    Pipe {
        /// The server's Tox ID (76 hex digits).
        server: String,
        /// The target, host:port.
        target: String,
        /// How long the background agent stays after its last stream ends, like ssh's
        /// ControlPersist (e.g. 30s, 10m, 2h; 0: no agent, this pipe runs its own Tox
        /// instance and ends with it).
        #[arg(long, value_name = "DURATION", env = "TOXTUN_PERSIST", default_value = "10m", value_parser = parse_duration)]
        persist: Duration,
        #[command(flatten)]
        secret: SecretArgs,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Run this machine's client identity in the background for pipes and forwards to
    /// attach to (what `pipe` starts by itself); its log goes to agent.log in the data
    /// directory.
    Agent {
        /// Stop once no stream has been attached for this long (default: run until
        /// `toxtun stop`, SIGINT or SIGTERM).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        persist: Option<Duration>,
        #[command(flatten)]
        secret: SecretArgs,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Show what the running toxtun processes of this data directory are doing: each
    /// peer's link (direct UDP or TCP relay), round trip, window, bytes, open streams.
    Status,
    /// Stop the running toxtun processes of this data directory cleanly (their peers
    /// are told at once).
    Stop,
    /// Make the running server of this data directory reread its config file (as SIGHUP
    /// does) and print what changed. A file with an error is refused, and the running
    /// configuration stays.
    Reload,
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
    /// Print a shell completion script (e.g. toxtun completions bash >
    /// /etc/bash_completion.d/toxtun).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (toxtun.1, one per subcommand, toxtun.toml.5) into DIR, for
    /// packaging.
    #[command(hide = true)]
    Manpages {
        /// Where to write them.
        dir: PathBuf,
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
    /// The fast path's congestion controller for what this side sends: bbr (the default;
    /// model-based: paces at the path's measured bandwidth, shrugs off random loss, keeps
    /// queues short) or newreno (loss-based: every loss cuts its pace). A server's
    /// `[session] congestion` sets its own.
    #[arg(long, value_name = "NAME", env = "TOXTUN_CONGESTION")]
    pub(crate) congestion: Option<toxtun_proto::CongestionControl>,
}

impl Cli {
    /// `pipe` runs inside another program's terminal (ssh's ProxyCommand): unless asked
    /// with `-v`, it says nothing but problems, as `ssh -W` does.
    pub(crate) fn quiet(&self) -> bool {
        self.verbose == 0 && matches!(self.command, Command::Pipe { .. })
    }
}

impl NetArgs {
    /// These flags again, for a process started on their behalf (the agent).
    pub(crate) fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for b in &self.bootstrap {
            args.extend(["--bootstrap".to_string(), b.clone()]);
        }
        args.extend([
            "--lan-discovery".to_string(),
            self.lan_discovery.to_string(),
            "--resume-grace".to_string(),
            self.resume_grace.to_string(),
        ]);
        if self.tcp_only {
            args.push("--tcp-only".into());
        }
        if self.no_fast_path {
            args.push("--no-fast-path".into());
        }
        if let Some(cc) = self.congestion {
            args.extend(["--congestion".to_string(), cc.to_string()]);
        }
        args
    }

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
            congestion: self.congestion.unwrap_or_default(),
        })
    }
}

/// `90`, `90s`, `10m`, `2h`: a duration as ssh's ControlPersist takes it (bare numbers
/// are seconds).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with s, m or h (e.g. 10m)"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
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

/// `[bind:]port`, as ssh -D: loopback unless a bind address is given.
pub(crate) fn parse_dynamic(spec: &str) -> Result<String, Fail> {
    let bad = || {
        Fail(format!(
            "-D {spec}: write [bind:]port (e.g. 1080 or 0.0.0.0:1080)"
        ))
    };
    let (bind, port) = match spec.rsplit_once(':') {
        Some((b, p)) => (b.trim_start_matches('[').trim_end_matches(']'), p),
        None => ("127.0.0.1", spec),
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || bind.is_empty() {
        return Err(bad());
    }
    Ok(if bind.contains(':') {
        format!("[{bind}]:{port}")
    } else {
        format!("{bind}:{port}")
    })
}

/// `[bind:]port:host:hostport`, as ssh -L.
pub(crate) fn parse_forward(spec: &str) -> Result<(String, Target), Fail> {
    parse_spec("-L", spec)
}

/// `[bind:]port:host:hostport` for UDP (`-U`): as `-L`, loopback unless a bind address
/// says otherwise.
pub(crate) fn parse_udp(spec: &str) -> Result<(String, Target), Fail> {
    parse_spec("-U", spec)
}

/// `[bind:]port:host:hostport`, as ssh -R: where the server listens (loopback unless a
/// bind address is given, as ssh does without `GatewayPorts`), and where this side
/// connects each stream.
pub(crate) fn parse_reverse(spec: &str) -> Result<(Target, Target), Fail> {
    let (bind, to) = parse_spec("-R", spec)?;
    let bind = bind
        .parse()
        .map_err(|e: toxtun_proto::TargetError| Fail(format!("-R {spec}: bind address: {e}")))?;
    Ok((bind, to))
}

fn parse_spec(flag: &str, spec: &str) -> Result<(String, Target), Fail> {
    let bad = |why: &str| {
        Fail(format!(
            "{flag} {spec}: {why} (write [bind:]port:host:hostport)"
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
        let (b, t) = parse_reverse("8080:127.0.0.1:3000").unwrap();
        assert_eq!(
            (b.to_string().as_str(), t.to_string().as_str()),
            ("127.0.0.1:8080", "127.0.0.1:3000")
        );
        let (b, _) = parse_reverse("0.0.0.0:8080:localhost:3000").unwrap();
        assert_eq!(b.to_string(), "0.0.0.0:8080");
        let e = parse_reverse("8080:x").unwrap_err().0;
        assert!(e.starts_with("-R 8080:x"), "{e}");
    }

    #[test]
    fn dynamic_specs_parse_like_ssh() {
        assert_eq!(parse_dynamic("1080").unwrap(), "127.0.0.1:1080");
        assert_eq!(parse_dynamic("0.0.0.0:1080").unwrap(), "0.0.0.0:1080");
        assert_eq!(parse_dynamic("[::1]:1080").unwrap(), "[::1]:1080");
        assert!(parse_dynamic("socks").is_err());
        assert!(parse_dynamic("0").is_err());
        assert!(parse_dynamic(":1080").is_err());
    }

    #[test]
    fn durations_read_as_control_persist_does() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("10 minutes").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
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
