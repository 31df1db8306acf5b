//! What the end-to-end tests of the `toxtun` command share: running it, a bootstrap node
//! and a server of their own on loopback (LAN discovery off, never the public list),
//! echo targets, and waiting for `--json` events.
#![allow(dead_code)] // each test file uses some of these

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub fn toxtun() -> Command {
    Command::new(env!("CARGO_BIN_EXE_toxtun"))
}

pub fn run(args: &[&str]) -> Output {
    toxtun().args(args).output().expect("toxtun runs")
}

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("toxtun-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Kills a child process when dropped.
pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops the toxtun processes of a data directory (a background agent) when dropped.
pub struct StopOnDrop(pub PathBuf);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = run(&["--data-dir", self.0.to_str().unwrap(), "stop"]);
    }
}
/// Starts `toxtun bootstrap` on a free port; returns it and its `host:port:KEY` line.
pub fn bootstrap() -> (Proc, String) {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut child = toxtun()
        .args(["bootstrap", "--port", &port, "--tcp-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Proc(child), line.trim().to_string())
}

/// A TCP port free on loopback a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
                let _ = s.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

pub fn write_config(dir: &Path, port: u16, boot: &str, client: Option<&str>) -> PathBuf {
    let conf = dir.join("server.toml");
    let auth = match client {
        Some(key) => format!("[[client]]\nkey = \"{key}\"\nallow = [\"127.0.0.1:{port}\"]\n"),
        None => {
            format!("[secret]\nvalue = \"a shared test secret\"\nallow = [\"127.0.0.1:{port}\"]\n")
        }
    };
    std::fs::write(
        &conf,
        format!("{auth}[network]\nbootstrap = [\"{boot}\"]\nlan_discovery = false\n"),
    )
    .unwrap();
    conf
}

/// Starts `toxtun serve` (shared secret, one allowed port) with its identity in `dir`.
pub fn serve(dir: &Path, port: u16, boot: &str) -> (Proc, String) {
    serve_admitting(dir, port, boot, None)
}

/// Starts `toxtun serve` admitting `client` by its key, or anyone with the shared secret.
pub fn serve_admitting(dir: &Path, port: u16, boot: &str, client: Option<&str>) -> (Proc, String) {
    write_config(dir, port, boot, client);
    serve_config(dir)
}

/// Starts `toxtun serve` on `dir/server.toml`, its log in `dir/serve.log`; returns it
/// and its Tox ID.
pub fn serve_config(dir: &Path) -> (Proc, String) {
    let id = run(&["--data-dir", dir.to_str().unwrap(), "id", "--no-qr"]);
    let server_id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let server = toxtun()
        .args(["--data-dir", dir.to_str().unwrap(), "serve", "--config"])
        .arg(dir.join("server.toml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    (Proc(server), server_id)
}

/// Deterministic bytes to move through a tunnel and compare.
pub fn body(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

/// Starts `toxtun pipe --persist 0` (a Tox instance of its own, no agent) to `target`
/// through the server, with the shared secret.
pub fn pipe(dir: &Path, boot: &str, server_id: &str, target: &str, stdout: Stdio) -> Child {
    pipe_with(
        dir,
        boot,
        server_id,
        target,
        stdout,
        true,
        &["--persist", "0"],
    )
}

pub fn pipe_with(
    dir: &Path,
    boot: &str,
    server_id: &str,
    target: &str,
    stdout: Stdio,
    secret: bool,
    extra: &[&str],
) -> Child {
    let secret: &[&str] = if secret {
        &["--secret", "a shared test secret"]
    } else {
        &[]
    };
    toxtun()
        .args(["--data-dir", dir.to_str().unwrap(), "pipe"])
        .args(secret)
        .args(extra)
        .args([
            "--lan-discovery",
            "false",
            "--bootstrap",
            boot,
            server_id,
            target,
        ])
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}
pub fn wait_timeout(c: &mut Child, d: Duration) -> Option<std::process::ExitStatus> {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        if let Some(s) = c.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    None
}

/// One connection through a forwarded port: sends `msg`, half-closes, reads the echo.
pub fn echo_through(port: u16, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    s.write_all(msg)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut back = Vec::new();
    s.read_to_end(&mut back)?;
    Ok(back)
}

/// Retries `echo_through` until the echo comes back or `within` passes.
pub fn echo_eventually(port: u16, msg: &[u8], within: Duration) -> bool {
    let end = std::time::Instant::now() + within;
    while std::time::Instant::now() < end {
        if echo_through(port, msg).is_ok_and(|b| b == msg) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}
/// The lines a child prints on stdout (its `--json` events), each with when it came.
pub fn json_lines(child: &mut Child) -> std::sync::mpsc::Receiver<(std::time::Instant, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            #[allow(clippy::disallowed_methods)]
            let at = std::time::Instant::now();
            if tx.send((at, line)).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a `--json` event line holding every one of `parts`.
pub fn wait_for_event(
    rx: &std::sync::mpsc::Receiver<(std::time::Instant, String)>,
    parts: &[&str],
    within: Duration,
) -> Option<(std::time::Instant, String)> {
    #[allow(clippy::disallowed_methods)]
    let end = std::time::Instant::now() + within;
    loop {
        #[allow(clippy::disallowed_methods)]
        let left = end.checked_duration_since(std::time::Instant::now())?;
        let (at, line) = rx.recv_timeout(left).ok()?;
        if parts.iter().all(|p| line.contains(p)) {
            return Some((at, line));
        }
    }
}

pub fn send_signal(child: &Child, sig: &str) -> std::time::Instant {
    let ok = Command::new("sh")
        .args(["-c", &format!("kill -{sig} {}", child.id())])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} failed");
    #[allow(clippy::disallowed_methods)]
    std::time::Instant::now()
}

/// An sshd of the test's own on a loopback port: its own host key, one user key, no
/// passwords; the programs people put through `toxtun pipe` are ssh and scp.
pub struct Sshd {
    _proc: Proc,
    /// Its port.
    pub port: u16,
    /// The user's private key.
    pub key: PathBuf,
    /// Who logs in (the user running the tests).
    pub user: String,
}

impl Sshd {
    /// Starts it with its files in `dir`.
    pub fn start(dir: &Path) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "the ssh tests need sshd (openssh-server): run scripts/install-deps"
        );
        for name in ["host", "user"] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-f")
                .arg(dir.join(name))
                .status()
                .unwrap()
                .success();
            assert!(ok, "ssh-keygen failed");
        }
        std::fs::copy(dir.join("user.pub"), dir.join("authorized_keys")).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let root = String::from_utf8_lossy(&Command::new("id").arg("-u").output().unwrap().stdout)
            .trim()
            == "0";
        if root {
            // sshd's privilege separation directory, which Debian's service makes.
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let cfg = dir.join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {keys}\n\
                 PidFile none\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 LogLevel ERROR\nMaxStartups 100\nMaxSessions 100\nSubsystem sftp internal-sftp\n",
                host = dir.join("host").display(),
                keys = dir.join("authorized_keys").display(),
            ),
        )
        .unwrap();
        let proc = Proc(
            Command::new(sshd)
                .args(["-D", "-e", "-f"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let user = String::from_utf8_lossy(&Command::new("id").arg("-un").output().unwrap().stdout)
            .trim()
            .to_string();
        Sshd {
            _proc: proc,
            port,
            key: dir.join("user"),
            user,
        }
    }

    /// `ssh` (or `scp`) to this sshd with no config of the user's, through `proxy` (a
    /// ProxyCommand) if given.
    pub fn command(&self, program: &str, proxy: Option<&str>) -> Command {
        let mut c = Command::new(program);
        c.args(["-F", "/dev/null", "-i"]).arg(&self.key).args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ]);
        if let Some(p) = proxy {
            c.arg("-o").arg(format!("ProxyCommand={p}"));
        }
        c.arg(if program == "scp" { "-P" } else { "-p" })
            .arg(self.port.to_string());
        c
    }
}

/// `toxtun forward` with `specs` (`-L …`, `-D …`) to the server through our bootstrap
/// node, with the shared test secret and LAN discovery off; `--json` events if `json`.
pub fn forward_command(
    dir: &Path,
    specs: &[String],
    boot: &str,
    server_id: &str,
    json: bool,
) -> Command {
    let mut c = toxtun();
    if json {
        c.arg("--json");
    }
    c.args(["--data-dir", dir.to_str().unwrap(), "forward"])
        .args(specs)
        .args([
            "--secret",
            "a shared test secret",
            "--lan-discovery",
            "false",
        ])
        .args(["--bootstrap", boot, server_id]);
    c
}

/// Starts [`forward_command`] with `--json` and waits until its session is up; returns
/// the process and its events.
pub fn forward_up(
    dir: &Path,
    specs: &[String],
    boot: &str,
    server_id: &str,
) -> (
    Proc,
    std::sync::mpsc::Receiver<(std::time::Instant, String)>,
) {
    let mut forward = Proc(
        forward_command(dir, specs, boot, server_id, true)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let events = json_lines(&mut forward.0);
    wait_for_event(&events, &["\"session_up\""], Duration::from_secs(90))
        .expect("the forward's session came up");
    (forward, events)
}
