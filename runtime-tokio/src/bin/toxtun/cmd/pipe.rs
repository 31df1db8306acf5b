//! `toxtun pipe`: standard input and output connected to one target through a server
//! (for ssh's ProxyCommand).
//!
//! A pipe attaches to the process that runs this machine's client identity (an agent, a
//! forward), which opens the stream on its established session: no Tox start-up, so it
//! starts in milliseconds. With no such process, it starts `toxtun agent` in the
//! background (it stays `--persist` after its last stream, as ssh's ControlPersist) and
//! attaches to it; with `--persist 0` it runs its own Tox instance, as once every pipe did.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use toxtun_proto::{PeerId, StreamCode, Target};
use toxtun_tokio::control::{attach, credential, Attached, Request, Role};
use toxtun_tokio::{Node, NodeEvent};

use super::{data_dir, hold_client, StopSignals};
use crate::cli::{load_secret, parse_server, Cli, NetArgs, SecretArgs};
use crate::Fail;

/// The agent's log, in the data directory.
pub(crate) const AGENT_LOG: &str = "agent.log";
/// How long a failed agent is given to write why to its log and exit.
const AGENT_LAST_WORDS: Duration = Duration::from_secs(2);
/// How long a just-started agent may take to listen on its socket.
const AGENT_START: Duration = Duration::from_secs(30);

/// Copies stdin to a stream to `target` and the stream to stdout; a clean end exits 0, a
/// reset or refusal fails with its code.
pub(crate) async fn run(
    cli: &Cli,
    server: &str,
    target: &str,
    persist: Duration,
    secret: &SecretArgs,
    net: &NetArgs,
) -> Result<(), Fail> {
    let mut stop = StopSignals::new();
    let server_id = parse_server(server)?;
    let parsed: Target = target
        .parse()
        .map_err(|e| Fail(format!("target {target:?}: {e}")))?;
    let dir = data_dir(&cli.data_dir)?;
    let request = Request::Open {
        server: server_id.to_string(),
        target: parsed.to_string(),
        credential: credential(load_secret(secret)?.as_ref()),
        wait_accepted: false,
    };
    if let Some(done) = attached(&dir, request.clone(), &mut stop).await? {
        return done;
    }
    if persist.is_zero() {
        return own(cli, server_id, parsed, secret, net, stop).await;
    }
    let mut agent = start_agent(cli, &dir, persist, secret, net)?;
    wait_for_agent(&dir, &mut agent).await?;
    match attached(&dir, request, &mut stop).await {
        Ok(Some(done)) => done,
        Ok(None) => Err(went_away(&dir, &mut agent, "no socket".into()).await),
        Err(Fail(why)) => Err(went_away(&dir, &mut agent, why).await),
    }
}

/// An agent that fails after listening (a damaged identity file) closes its socket, then
/// writes the reason to its log and exits: wait for it to exit (2 s at most) before
/// reading the log, or a loaded machine reads it empty ("nothing in agent.log").
async fn went_away(dir: &Path, agent: &mut Child, why: String) -> Fail {
    let start = tokio::time::Instant::now();
    while agent.try_wait().ok().flatten().is_none() && start.elapsed() < AGENT_LAST_WORDS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Fail(format!(
        "the background agent went away ({why}): {}",
        last_line(&dir.join(AGENT_LOG))
    ))
}

/// Attaches stdin and stdout to a stream opened by the process holding the identity;
/// `None` if there is none. A stop signal ends the pipe (the holder then resets the
/// stream; its session stays for the next pipe).
async fn attached(
    dir: &Path,
    request: Request,
    stop: &mut StopSignals,
) -> Result<Option<Result<(), Fail>>, Fail> {
    let r = tokio::select! {
        r = attach(dir, request, tokio::io::stdin(), tokio::io::stdout()) => r,
        _ = stop.recv() => return Ok(Some(Ok(()))),
    };
    Ok(match r? {
        Attached::NoHolder => None,
        Attached::Refused { message, .. } => Some(Err(Fail(message))),
        // ssh closed our stdout: it is done with us.
        Attached::Ended(0) | Attached::OutputClosed => Some(Ok(())),
        Attached::Ended(code) => Some(Err(Fail(format!(
            "stream ended: {}",
            StreamCode::from_code(code)
        )))),
    })
}

/// Starts `toxtun agent` for this identity in the background: its own process group (a
/// terminal's or ssh's SIGHUP to the pipe does not reach it), stdin closed, its output
/// appended to the agent log, the secret passed in its environment (not its arguments).
fn start_agent(
    cli: &Cli,
    dir: &Path,
    persist: Duration,
    secret: &SecretArgs,
    net: &NetArgs,
) -> Result<Child, Fail> {
    use std::os::unix::fs::OpenOptionsExt;
    toxtun_tokio::control::create_private_dir(dir)
        .map_err(|e| Fail(format!("data directory {}: {e}", dir.display())))?;
    let log_path = dir.join(AGENT_LOG);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| Fail(format!("agent log {}: {e}", log_path.display())))?;
    let exe = std::env::current_exe().map_err(|e| Fail(format!("finding toxtun itself: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--data-dir")
        .arg(dir)
        .arg("agent")
        .arg("--persist")
        .arg(format!("{}s", persist.as_secs().max(1)))
        .args(net.to_args());
    for _ in 0..cli.verbose {
        cmd.arg("-v");
    }
    if let Some(f) = &secret.secret_file {
        cmd.arg("--secret-file").arg(f);
    }
    match &secret.secret {
        Some(s) => cmd.env("TOXTUN_SECRET", s),
        None => cmd.env_remove("TOXTUN_SECRET"),
    };
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| Fail(e.to_string()))?)
        .stderr(log)
        .process_group(0);
    cmd.spawn()
        .map_err(|e| Fail(format!("cannot start the background agent: {e}")))
}

/// Waits until an agent listens on the client socket: ours, or one a concurrent pipe
/// started (ours then exits, having found the identity taken).
async fn wait_for_agent(dir: &Path, agent: &mut Child) -> Result<(), Fail> {
    let socket = Role::Client.socket_path(dir);
    let start = tokio::time::Instant::now();
    let mut exited_at = None;
    loop {
        if tokio::net::UnixStream::connect(&socket).await.is_ok() {
            return Ok(());
        }
        if exited_at.is_none() && agent.try_wait().ok().flatten().is_some() {
            exited_at = Some(tokio::time::Instant::now());
        }
        let late = exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2));
        if late || start.elapsed() > AGENT_START {
            return Err(Fail(format!(
                "the background agent did not start: {}",
                last_line(&dir.join(AGENT_LOG))
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The agent log's last line, for an error message.
fn last_line(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let line = text.lines().rev().find(|l| !l.trim().is_empty());
    match line {
        Some(l) => l.trim().trim_start_matches("toxtun: ").to_string(),
        None => format!("nothing in {}", path.display()),
    }
}

/// `--persist 0`: a Tox instance of its own for this one stream, gone with it.
async fn own(
    cli: &Cli,
    server: toxtun_proto::ToxId,
    target: Target,
    secret: &SecretArgs,
    net: &NetArgs,
    mut stop: StopSignals,
) -> Result<(), Fail> {
    let holder = hold_client(cli, Some(server), secret, net, false).await?;
    let node = holder.node.clone();
    let result = tokio::select! {
        r = carry(&node, server.public_key, target) => r,
        // ssh sends SIGHUP when it is done with its ProxyCommand: the server hears CLOSE
        // at once instead of waiting out its keepalive.
        sig = stop.recv() => {
            if !cli.quiet() {
                eprintln!("toxtun: {sig}: closing the session");
            }
            Ok(())
        }
    };
    node.shutdown().await;
    result
}

/// Copies stdin to a stream to `target` through `server`, and the stream to stdout, until
/// it ends; a reset or refusal is an error with its code.
async fn carry(node: &Node, server: PeerId, target: Target) -> Result<(), Fail> {
    let mut events = node.events();
    let stream = node.open(server, target).await?;
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
    match end {
        None => Ok(()),
        Some(code) => Err(Fail(format!("stream ended: {code}"))),
    }
}
