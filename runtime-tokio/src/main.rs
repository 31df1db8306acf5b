//! `toxtun`: TCP tunnels over the Tox network. See `toxtun --help` and the README.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use toxtun_proto::{
    ClientRule, Endpoint, EndpointConfig, ServerPolicy, SharedSecret, Target, TargetRules, ToxId,
};
use toxtun_tokio::config::{read_secret_file, ServerConfig};
use toxtun_tokio::{Node, NodeEvent, NodeOptions};
use toxtun_transport_tox::{public_nodes, BootstrapNode, ToxConfig, ToxOptions, ToxTransport};

#[derive(Parser, Debug)]
#[command(name = "toxtun", version, about = "TCP tunnels over the Tox peer-to-peer network", long_about = None)]
struct Cli {
    /// More log output (-v, -vv); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Print events as JSON lines on standard output (with the seed's status codes).
    #[arg(long, global = true)]
    json: bool,
    /// Where the identity lives (default: the platform's data directory).
    #[arg(long, global = true, env = "TOXTUN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
struct SecretArgs {
    /// A file holding the server's shared secret (instead of an allowlisted key).
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// The shared secret itself (visible to other users in the process list; prefer a file).
    #[arg(
        long,
        value_name = "SECRET",
        env = "TOXTUN_SECRET",
        hide_env_values = true
    )]
    secret: Option<String>,
}

#[derive(Args, Debug)]
struct NetArgs {
    /// Bootstrap node host:port:KEY (repeatable; default: the public list).
    #[arg(long, value_name = "HOST:PORT:KEY")]
    bootstrap: Vec<String>,
    /// Find peers on the local network by broadcast.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    lan_discovery: bool,
    /// Use TCP relays only (no UDP).
    #[arg(long)]
    tcp_only: bool,
    /// Keep streams this many seconds across a lost Tox link: if it returns in time, they
    /// resume with nothing lost (0: end them at once).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    resume_grace: u64,
    /// Never use the fast path (stream bytes in lossy packets with toxtun's own congestion
    /// control on a direct UDP link); carry everything in c-toxcore's lossless packets.
    #[arg(long)]
    no_fast_path: bool,
}

/// An error for people: what went wrong and, where possible, what to do.
#[derive(Debug)]
struct Fail(String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}

/// `--version`: toxtun's, c-toxcore's, and whether c-toxcore's per-packet `mlock` is
/// skipped (`toxtun_transport_tox::crypto_buffers`; `TOXTUN_TOXCORE_MLOCK=1` keeps it).
fn long_version() -> String {
    format!(
        "{} (c-toxcore {}; its per-packet mlock {})",
        env!("CARGO_PKG_VERSION"),
        toxtun_transport_tox::toxcore_version(),
        if toxtun_transport_tox::skips_toxcore_mlock() {
            "skipped"
        } else {
            "kept"
        }
    )
}

fn main() -> ExitCode {
    let matches = Cli::command().version(long_version()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logs(cli.verbose);
    // One thread: the driver task and its streams' tasks wake each other for every chunk,
    // and on one thread that is a queue push, not a futex and a cross-core wake-up; the
    // Tox instance has its own thread anyway. Measured over real Tox on loopback, a 400 MiB
    // download's plateau was 150-185 MB/s against 132-179 with tokio's multi-thread
    // runtime (BENCHMARKS.md).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("toxtun: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // Do not wait for blocking reads that can never finish (stdin in `pipe` while the
    // other side ended): they would keep the process alive after its work is done.
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg)) => {
            eprintln!("toxtun: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(verbose: u8) {
    let default = match verbose {
        0 => "warn,toxtun=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn data_dir(cli_dir: &Option<PathBuf>) -> Result<PathBuf, Fail> {
    match cli_dir {
        Some(d) => Ok(d.clone()),
        None => dirs::data_dir()
            .map(|d| d.join("toxtun"))
            .ok_or_else(|| Fail("no data directory on this platform; pass --data-dir".into())),
    }
}

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    OsRng.fill_bytes(&mut s);
    s
}

fn parse_server(s: &str) -> Result<ToxId, Fail> {
    s.parse::<ToxId>()
        .map_err(|e| Fail(format!("server Tox ID {s:?}: {e}")))
}

fn load_secret(a: &SecretArgs) -> Result<Option<SharedSecret>, Fail> {
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

fn tox_config(
    dir: &Path,
    file: &str,
    net: &NetArgs,
    extra: &[BootstrapNode],
) -> Result<ToxConfig, Fail> {
    let mut bootstrap: Vec<BootstrapNode> = extra.to_vec();
    for b in &net.bootstrap {
        bootstrap.push(b.parse()?);
    }
    if bootstrap.is_empty() {
        bootstrap = public_nodes();
    }
    let options = ToxOptions {
        local_discovery: net.lan_discovery,
        udp: !net.tcp_only,
        ..ToxOptions::default()
    };
    let mut c = ToxConfig::new(options, bootstrap);
    c.identity = Some(dir.join(file));
    Ok(c)
}

/// Prints events: JSON lines with --json, else log lines; returns when the node stops.
/// `fast_path`: this node offers the fast path (the log says what is true of it).
fn report(node: &Node, json: bool, fast_path: bool) {
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
        NodeEvent::SessionDown { peer, code, remote } => {
            tracing::warn!(code = code.code(), %peer, remote, "session ended: {code}")
        }
        NodeEvent::StreamOpen {
            stream,
            target,
            incoming,
        } => tracing::info!(%stream, %target, incoming, "stream opened"),
        NodeEvent::StreamEnd { stream, code: None } => tracing::debug!(%stream, "stream closed"),
        NodeEvent::StreamEnd {
            stream,
            code: Some(c),
        } => tracing::warn!(%stream, code = c.code(), "stream ended: {c}"),
        _ => {}
    }
}

/// Waits for Ctrl-C, then closes every session and stops.
async fn until_ctrl_c(node: &Node) {
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("toxtun: shutting down (closing sessions)");
    node.shutdown().await;
}

/// Logs progress while waiting for the server's session.
fn watch_progress(node: &Node) {
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
                Err(_) if !up => eprintln!(
                    "toxtun: still waiting for the server ({}s so far: joining the Tox network, friend request, handshake)",
                    start.elapsed().as_secs()
                ),
                Err(_) => {}
            }
        }
    });
}

async fn client_node(
    cli: &Cli,
    server: ToxId,
    secret: &SecretArgs,
    net: &NetArgs,
) -> Result<Node, Fail> {
    let dir = data_dir(&cli.data_dir)?;
    let transport = ToxTransport::start(tox_config(&dir, "client.tox", net, &[])?)?;
    let me = toxtun_proto::Transport::id(&transport).public_key;
    let secret = load_secret(secret)?;
    if secret.is_none() {
        eprintln!("toxtun: client key {me} (the server admits it with [[client]] key = \"{me}\")");
    }
    let mut cfg = EndpointConfig::new(me);
    cfg.client_secret = secret.clone();
    cfg.resume_grace = Duration::from_secs(net.resume_grace);
    cfg.fast_path = !net.no_fast_path;
    let message = match &secret {
        Some(s) => s.friend_request(&me, &server.public_key),
        None => "toxtun/1".to_string(),
    };
    let (node, _) = Node::spawn(
        Endpoint::new(cfg, seed())?,
        transport,
        NodeOptions::default(),
    );
    report(&node, cli.json, !net.no_fast_path);
    watch_progress(&node);
    node.connect(server, message.into_bytes()).await?;
    Ok(node)
}

/// `[bind:]port:host:hostport`, as ssh -L.
fn parse_forward(spec: &str) -> Result<(String, Target), Fail> {
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

async fn run(cli: Cli) -> Result<(), Fail> {
    match &cli.command {
        Command::Id { no_qr, client } => {
            let dir = data_dir(&cli.data_dir)?;
            let file = if *client { "client.tox" } else { "server.tox" };
            let mut cfg = ToxConfig::new(
                ToxOptions {
                    udp: false,
                    local_discovery: false,
                    ..ToxOptions::default()
                },
                vec![],
            );
            cfg.identity = Some(dir.join(file));
            let t = ToxTransport::start(cfg)?;
            let id = toxtun_proto::Transport::id(&t);
            if *client {
                // A client is named by its public key: the nospam and checksum of a Tox ID
                // only matter to those who send it friend requests.
                println!("{}", id.public_key);
                eprintln!(
                    "(client identity in {}; a server admits it with [[client]] key = \"{}\")",
                    dir.join(file).display(),
                    id.public_key
                );
                return Ok(());
            }
            println!("{id}");
            eprintln!("(identity in {})", dir.join(file).display());
            if !no_qr {
                if let Ok(code) = qrcode::QrCode::new(id.to_string()) {
                    let s = code
                        .render::<qrcode::render::unicode::Dense1x2>()
                        .quiet_zone(true)
                        .build();
                    eprintln!("{s}");
                }
            }
            Ok(())
        }
        Command::Serve { config, net } => {
            let conf = ServerConfig::load(config)?;
            if !conf.policy.admits_anyone() {
                eprintln!("toxtun: {} admits no client (no [[client]] and no [secret]): nothing is reachable. Add a rule to let someone in.", config.display());
            }
            for c in &conf.policy.clients {
                if c.targets.allow.is_empty() {
                    eprintln!(
                        "toxtun: client {} may reach no target (empty allow list)",
                        c.peer
                    );
                }
            }
            let dir = data_dir(&cli.data_dir)?;
            let mut net_args = NetArgs {
                bootstrap: net.bootstrap.clone(),
                lan_discovery: conf.network.lan_discovery.unwrap_or(net.lan_discovery),
                tcp_only: net.tcp_only || conf.network.udp == Some(false),
                resume_grace: conf.resume_grace_secs.unwrap_or(net.resume_grace),
                no_fast_path: net.no_fast_path || conf.fast_path == Some(false),
            };
            net_args
                .bootstrap
                .extend(conf.network.bootstrap.iter().cloned());
            let transport = ToxTransport::start(tox_config(&dir, "server.tox", &net_args, &[])?)?;
            let id = toxtun_proto::Transport::id(&transport);
            let mut cfg = EndpointConfig::new(id.public_key);
            cfg.server = Some(conf.policy);
            cfg.resume_grace = Duration::from_secs(net_args.resume_grace);
            cfg.fast_path = !net_args.no_fast_path;
            let (node, done) = Node::spawn(
                Endpoint::new(cfg, seed())?,
                transport,
                NodeOptions {
                    serve: true,
                    ..Default::default()
                },
            );
            report(&node, cli.json, !net_args.no_fast_path);
            eprintln!("toxtun: serving as {id}");
            tokio::select! {
                () = until_ctrl_c(&node) => {}
                _ = done => return Err(Fail("the node stopped".into())),
            }
            Ok(())
        }
        Command::Forward {
            local,
            server,
            secret,
            net,
        } => {
            let server = parse_server(server)?;
            let specs: Vec<(String, Target)> = local
                .iter()
                .map(|s| parse_forward(s))
                .collect::<Result<_, _>>()?;
            let mut listeners = Vec::new();
            for (listen, target) in specs {
                let l = TcpListener::bind(&listen)
                    .await
                    .map_err(|e| Fail(format!("cannot listen on {listen}: {e}")))?;
                eprintln!("toxtun: {listen} -> {target} via {}", server.public_key);
                listeners.push((l, target));
            }
            let node = client_node(&cli, server, secret, net).await?;
            for (l, target) in listeners {
                let node = node.clone();
                let peer = server.public_key;
                tokio::spawn(async move {
                    loop {
                        let Ok((sock, from)) = l.accept().await else {
                            continue;
                        };
                        let _ = sock.set_nodelay(true);
                        let node = node.clone();
                        let target = target.clone();
                        tokio::spawn(async move {
                            if let Err(e) = node.forward(peer, target.clone(), sock).await {
                                tracing::info!(%from, %target, "connection ended: {e}");
                            }
                        });
                    }
                });
            }
            until_ctrl_c(&node).await;
            Ok(())
        }
        Command::Pipe {
            server,
            target,
            secret,
            net,
        } => {
            let server = parse_server(server)?;
            let target: Target = target
                .parse()
                .map_err(|e| Fail(format!("target {target:?}: {e}")))?;
            let node = client_node(&cli, server, secret, net).await?;
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
        Command::Bootstrap {
            port,
            tcp_port,
            lan_discovery,
            public_host,
        } => {
            let t = ToxTransport::start(ToxConfig::new(
                ToxOptions {
                    local_discovery: *lan_discovery,
                    start_port: *port,
                    end_port: *port,
                    tcp_port: *tcp_port,
                    ..ToxOptions::default()
                },
                vec![],
            ))?;
            let node = t
                .as_bootstrap_node(public_host)
                .ok_or_else(|| Fail("UDP is not bound".into()))?;
            println!("{node}");
            eprintln!(
                "toxtun: bootstrap node running (UDP {port}, TCP relay {}); use --bootstrap {node}",
                if *tcp_port == 0 {
                    "off".to_string()
                } else {
                    tcp_port.to_string()
                }
            );
            let _ = tokio::signal::ctrl_c().await;
            drop(t);
            Ok(())
        }
        Command::Demo { mib } => demo(*mib, cli.json).await,
    }
}

/// Everything on loopback, over the real Tox protocol: our own bootstrap node (LAN
/// discovery off, never the public list), a server that allows one client one target, a
/// client that downloads through the tunnel.
async fn demo(mib: usize, json: bool) -> Result<(), Fail> {
    let t0 = Instant::now();
    let opts = ToxOptions::loopback();
    println!("toxtun demo: a real tunnel over the Tox protocol, on loopback only");
    let boot = ToxTransport::start(ToxConfig::new(opts.clone(), vec![]))?;
    let node = boot
        .as_bootstrap_node("127.0.0.1")
        .ok_or_else(|| Fail("the bootstrap node has no UDP port".into()))?;
    println!("  bootstrap node  {node}");

    // The target: an HTTP-ish server with a body to download.
    let body: Vec<u8> = (0..mib << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let expected = Sha256::digest(&body);
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let http_port = http.local_addr()?.port();
    let served = body.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = http.accept().await {
            let served = served.clone();
            tokio::spawn(async move {
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req).await;
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                    served.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&served).await;
                let _ = s.shutdown().await;
            });
        }
    });
    println!("  target          http://127.0.0.1:{http_port}/ ({mib} MiB)");

    let server_t = ToxTransport::start(ToxConfig::new(opts.clone(), vec![node.clone()]))?;
    let client_t = ToxTransport::start(ToxConfig::new(opts, vec![node]))?;
    let (sid, cid) = (
        toxtun_proto::Transport::id(&server_t),
        toxtun_proto::Transport::id(&client_t),
    );
    let mut scfg = EndpointConfig::new(sid.public_key);
    scfg.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: cid.public_key,
            targets: TargetRules::new(vec![format!("127.0.0.1:{http_port}").parse()?]),
        }],
        ..Default::default()
    });
    let (server, _) = Node::spawn(
        Endpoint::new(scfg, seed())?,
        server_t,
        NodeOptions {
            serve: true,
            ..Default::default()
        },
    );
    let (client, _) = Node::spawn(
        Endpoint::new(EndpointConfig::new(cid.public_key), seed())?,
        client_t,
        NodeOptions::default(),
    );
    if json {
        report(&client, true, true);
    }
    println!("  server          {sid}");
    println!("  client          {cid}");
    println!("joining the Tox network and befriending the server (c-toxcore needs about 10 s)…");
    let mut ev = client.events();
    let start = Instant::now();
    client.connect(sid, b"toxtun/1 demo".to_vec()).await?;
    let waiting = tokio::spawn(async move {
        let mut n = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            n += 3;
            println!("  … {n} s");
        }
    });
    let mut s = client
        .open(sid.public_key, format!("127.0.0.1:{http_port}").parse()?)
        .await?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut first = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(120), s.read_exact(&mut first))
        .await
        .map_err(|_| Fail("no answer through the tunnel in 120 s".into()))??;
    waiting.abort();
    let to_first_byte = start.elapsed();
    let mut session_at = None;
    while let Ok(e) = ev.try_recv() {
        if matches!(e, NodeEvent::SessionUp { .. }) && session_at.is_none() {
            session_at = Some(());
        }
    }
    println!(
        "tunnel up: first byte {:.1} s after the client started",
        to_first_byte.as_secs_f64()
    );
    let t = Instant::now();
    let mut got = first.to_vec();
    s.read_to_end(&mut got).await?;
    let took = t.elapsed();
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .ok_or_else(|| Fail("no HTTP header came back".into()))?;
    let ok = Sha256::digest(&got[head_end..]) == expected;
    println!(
        "downloaded {} bytes in {:.2} s = {:.1} MB/s; SHA-256 {}",
        got.len() - head_end,
        took.as_secs_f64(),
        (got.len() - head_end) as f64 / 1e6 / took.as_secs_f64(),
        if ok { "matches" } else { "DIFFERS" }
    );
    match client.session_stats(sid.public_key).await {
        Ok(Some(st)) if st.lossy_packets_received > 0 => println!(
            "fast path: {} lossy packets with toxtun's own congestion control, round trip {}; \
             c-toxcore's lossless packets would have started at ≈ 5 MB/s (see BENCHMARKS.md)",
            st.lossy_packets_received,
            server
                .session_stats(cid.public_key)
                .await
                .ok()
                .flatten()
                .and_then(|s| s.rtt)
                .map_or("unmeasured".to_string(), |r| format!(
                    "{:.1} ms",
                    r.as_secs_f64() * 1e3
                ))
        ),
        _ => println!(
            "the fast path was not used (the link is not direct UDP): c-toxcore's lossless \
             packets start slow and grow about 1.6x per second; see BENCHMARKS.md"
        ),
    }
    client.shutdown().await;
    server.shutdown().await;
    drop(boot);
    println!("demo finished in {:.1} s", t0.elapsed().as_secs_f64());
    if ok {
        Ok(())
    } else {
        Err(Fail(
            "the download differs from what the server sent".into(),
        ))
    }
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
