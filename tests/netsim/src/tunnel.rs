//! A real toxtun tunnel across the emulated WAN: `toxtun bootstrap` and `toxtun serve` on
//! side B, `toxtun forward` on side A, each a process of the given `toxtun` binary run in
//! its namespace, LAN discovery off, bootstrapping only from the node started here. The
//! client forwards `127.0.0.1:<port>` on A to the probe server on B.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::NetsimError;
use crate::wan::{Side, Wan, ADDR_B};

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// How to run the tunnel.
#[derive(Clone, Debug)]
pub struct TunnelOptions {
    /// The port on B the server connects streams to (the probe server's).
    pub target_port: u16,
    /// The port on A's loopback the client forwards.
    pub local_port: u16,
    /// Offer the fast path (both sides).
    pub fast_path: bool,
    /// Where logs and identities go.
    pub dir: PathBuf,
    /// The server serves Prometheus metrics on this port of B's loopback.
    pub metrics_port: Option<u16>,
}

/// What the client reported, as `--json` events with the instant each arrived.
#[derive(Debug, Default)]
struct Seen {
    lines: Vec<(Instant, String)>,
}

/// A running tunnel; its processes are killed when it is dropped.
#[derive(Debug)]
pub struct Tunnel {
    children: Vec<Child>,
    local: SocketAddr,
    client_seen: Arc<Mutex<Seen>>,
    server_seen: Arc<Mutex<Seen>>,
    started: Instant,
}

/// Copies a process's `--json` events to `file`, keeping each with the instant it came.
fn record(out: std::process::ChildStdout, file: PathBuf) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut file = std::fs::File::create(file).ok();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(f) = file.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
            sink.lock()
                .expect("no panics while held")
                .lines
                .push((now(), line));
        }
    });
    seen
}

fn io(e: std::io::Error) -> NetsimError {
    NetsimError::Io(e.to_string())
}

/// A log file in the run's directory, for a child's stderr.
fn log(opts: &TunnelOptions, name: &str) -> Result<Stdio, NetsimError> {
    Ok(Stdio::from(
        std::fs::File::create(opts.dir.join(name)).map_err(io)?,
    ))
}

/// Starts the bootstrap node (DHT and TCP relay) on B's address; returns it and the
/// `--bootstrap` line it printed.
fn start_bootstrap(
    wan: &Wan,
    toxtun: &Path,
    opts: &TunnelOptions,
) -> Result<(Child, String), NetsimError> {
    let mut boot = wan
        .command(Side::B, toxtun)?
        .args(["bootstrap", "--port", "33445", "--tcp-port", "33445"])
        .args(["--public-host", ADDR_B])
        .stdout(Stdio::piped())
        .stderr(log(opts, "bootstrap.log")?)
        .spawn()
        .map_err(io)?;
    let mut line = String::new();
    BufReader::new(boot.stdout.take().expect("piped"))
        .read_line(&mut line)
        .map_err(io)?;
    let boot_line = line.trim().to_string();
    if boot_line.is_empty() {
        return Err(NetsimError::Io(
            "toxtun bootstrap printed no address".into(),
        ));
    }
    Ok((boot, boot_line))
}

/// `toxtun id` in `dir`: the server's Tox ID, or (`client`) the client's public key.
fn toxtun_id(wan: &Wan, toxtun: &Path, dir: &Path, client: bool) -> Result<String, NetsimError> {
    let mut c = wan.command(if client { Side::A } else { Side::B }, toxtun)?;
    c.arg("--data-dir").arg(dir).args(["id", "--no-qr"]);
    if client {
        c.arg("--client");
    }
    let out = c.output().map_err(io)?;
    if !out.status.success() {
        return Err(NetsimError::Io(format!(
            "toxtun id: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string())
}

/// Starts `toxtun serve` on B, admitting `client_key` to the target port only.
fn start_server(
    wan: &Wan,
    toxtun: &Path,
    opts: &TunnelOptions,
    client_key: &str,
    boot_line: &str,
) -> Result<(Child, Arc<Mutex<Seen>>), NetsimError> {
    let config = opts.dir.join("server.toml");
    let metrics = opts.metrics_port.map_or(String::new(), |p| {
        format!("\n[metrics]\nlisten = \"127.0.0.1:{p}\"\n")
    });
    std::fs::write(
        &config,
        format!(
            "[[client]]\nkey = \"{client_key}\"\nallow = [\"127.0.0.1:{port}\"]\n\n\
             [session]\nfast_path = {fast}\n\n\
             [network]\nbootstrap = [\"{boot_line}\"]\nlan_discovery = false\n{metrics}",
            port = opts.target_port,
            fast = opts.fast_path,
        ),
    )
    .map_err(io)?;
    let mut server = wan
        .command(Side::B, toxtun)?
        .args(["-vv", "--json", "--data-dir"])
        .arg(opts.dir.join("server"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(log(opts, "server.log")?)
        .spawn()
        .map_err(io)?;
    let seen = record(
        server.stdout.take().expect("piped"),
        opts.dir.join("server.json"),
    );
    Ok((server, seen))
}

/// Starts `toxtun forward` on A, forwarding the local port to the target through
/// `server_id`.
fn start_client(
    wan: &Wan,
    toxtun: &Path,
    opts: &TunnelOptions,
    server_id: &str,
    boot_line: &str,
) -> Result<(Child, Arc<Mutex<Seen>>), NetsimError> {
    let mut client = wan.command(Side::A, toxtun)?;
    client
        .args(["-vv", "--json", "--data-dir"])
        .arg(opts.dir.join("client"))
        .arg("forward")
        .arg("-L")
        .arg(format!(
            "127.0.0.1:{}:127.0.0.1:{}",
            opts.local_port, opts.target_port
        ))
        .args(["--lan-discovery", "false", "--bootstrap", boot_line]);
    if !opts.fast_path {
        client.arg("--no-fast-path");
    }
    let mut client = client
        .arg(server_id)
        .stdout(Stdio::piped())
        .stderr(log(opts, "client.log")?)
        .spawn()
        .map_err(io)?;
    let seen = record(
        client.stdout.take().expect("piped"),
        opts.dir.join("client.json"),
    );
    Ok((client, seen))
}

impl Tunnel {
    /// Starts the bootstrap node and the server on B, then the client on A.
    pub fn start(wan: &Wan, toxtun: &Path, opts: &TunnelOptions) -> Result<Self, NetsimError> {
        let _ = std::fs::remove_dir_all(&opts.dir);
        std::fs::create_dir_all(&opts.dir).map_err(io)?;
        let started = now();
        let mut children = Vec::new();
        let (boot, boot_line) = start_bootstrap(wan, toxtun, opts)?;
        children.push(boot);
        // Identities: the server's ID, the client's key (admitted by it).
        let server_id = toxtun_id(wan, toxtun, &opts.dir.join("server"), false)?;
        let client_key = toxtun_id(wan, toxtun, &opts.dir.join("client"), true)?;
        let (server, server_seen) = start_server(wan, toxtun, opts, &client_key, &boot_line)?;
        children.push(server);
        let (client, client_seen) = start_client(wan, toxtun, opts, &server_id, &boot_line)?;
        children.push(client);
        Ok(Tunnel {
            children,
            local: format!("127.0.0.1:{}", opts.local_port)
                .parse()
                .expect("an address"),
            client_seen,
            server_seen,
            started,
        })
    }

    /// The client's end, on A's loopback.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// When the client first reported `event` (a `--json` event name) with `field`
    /// (`"key":value`, or empty), since the tunnel started.
    pub fn first(&self, event: &str, field: &str) -> Option<Duration> {
        let tag = format!("\"event\":\"{event}\"");
        self.client_seen
            .lock()
            .expect("no panics while held")
            .lines
            .iter()
            .find(|(_, l)| l.contains(&tag) && l.contains(field))
            .map(|(t, _)| *t - self.started)
    }

    /// The events of the client (side A) or the server (B) between `from` and `to`: their
    /// names and, for paths, whether direct, each with its time since `origin` (what
    /// happened around an outage).
    pub fn events_between(
        &self,
        side: Side,
        from: Instant,
        to: Instant,
        origin: Instant,
    ) -> Vec<String> {
        let seen = match side {
            Side::A => &self.client_seen,
            Side::B => &self.server_seen,
        };
        seen.lock()
            .expect("no panics while held")
            .lines
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(t, l)| {
                let name = l
                    .split("\"event\":\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("?");
                let extra = if l.contains("\"direct\":true") {
                    " direct"
                } else if l.contains("\"direct\":false") {
                    " relay"
                } else {
                    ""
                };
                let at = if *t >= origin {
                    format!("+{:.1} s", (*t - origin).as_secs_f64())
                } else {
                    format!("-{:.1} s", (origin - *t).as_secs_f64())
                };
                format!("{at} {name}{extra}")
            })
            .collect()
    }

    /// Whether the client's latest path report says direct UDP (`None`: none yet).
    pub fn direct(&self) -> Option<bool> {
        self.client_seen
            .lock()
            .expect("no panics while held")
            .lines
            .iter()
            .rev()
            .find(|(_, l)| l.contains("\"event\":\"peer_path\""))
            .map(|(_, l)| l.contains("\"direct\":true"))
    }

    /// Waits until the session is up (at most `limit`); returns how long it took since
    /// the start.
    pub fn wait_session(&self, limit: Duration) -> Result<Duration, NetsimError> {
        loop {
            if let Some(t) = self.first("session_up", "") {
                return Ok(t);
            }
            if self.started.elapsed() > limit {
                return Err(NetsimError::Io(format!(
                    "no session after {limit:?} (logs in the run folder)"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the client reports a direct UDP path (at most `limit` since the start);
    /// `None` if it did not.
    pub fn wait_direct(&self, limit: Duration) -> Option<Duration> {
        loop {
            if self.direct() == Some(true) {
                return self.first("peer_path", "\"direct\":true");
            }
            if self.started.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last session counters line a process logged at -vv, if any (`server.log` or
    /// `client.log` in `dir`).
    pub fn last_counters(dir: &Path, log: &str) -> Option<String> {
        let mut s = String::new();
        std::fs::File::open(dir.join(log))
            .ok()?
            .read_to_string(&mut s)
            .ok()?;
        s.lines()
            .rev()
            .find(|l| l.contains("session counters"))
            .map(str::to_string)
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
