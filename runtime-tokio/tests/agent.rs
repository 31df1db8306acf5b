//! One process per identity, as a person meets it: the first `toxtun pipe` starts a
//! background agent that later pipes attach to, `toxtun status` and `toxtun stop` reach it,
//! and a second process with the same identity never breaks the first. Real Tox between
//! processes on loopback (our own bootstrap node, LAN discovery off).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::*;

/// Runs one pipe to the echo target, writing `msg` and closing stdin; returns whether it
/// succeeded, what came back, and what it printed on stderr.
fn pipe_echo(
    dir: &Path,
    boot: &str,
    server_id: &str,
    port: u16,
    msg: &[u8],
    extra: &[&str],
) -> (bool, Vec<u8>, String) {
    let mut pipe = pipe_with(
        dir,
        boot,
        server_id,
        &format!("127.0.0.1:{port}"),
        Stdio::piped(),
        true,
        extra,
    );
    let mut stdin = pipe.stdin.take().unwrap();
    stdin.write_all(msg).unwrap();
    drop(stdin);
    let mut out = Vec::new();
    pipe.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let status = wait_timeout(&mut pipe, Duration::from_secs(90)).expect("pipe finished");
    let mut err = String::new();
    pipe.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.success(), out, err)
}

/// `toxtun status --json` for `dir`: one object per running process.
fn status(dir: &Path) -> Vec<serde_json::Value> {
    let o = run(&["--json", "--data-dir", dir.to_str().unwrap(), "status"]);
    assert!(o.status.success(), "status: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn later_pipes_attach_to_the_agent_the_first_one_started() {
    let (_boot, boot) = bootstrap();
    let port = echo_server();
    let sdir = tmp("agent-serve");
    let cdir = tmp("agent-client");
    let (_server, server_id) = serve(&sdir, port, &boot);
    let _agent = StopOnDrop(cdir.clone());
    let persist: &[&str] = &["--persist", "60s"];

    let (ok, out, err) = pipe_echo(&cdir, &boot, &server_id, port, b"first", persist);
    assert!(ok, "{err}");
    assert_eq!((out.as_slice(), err.as_str()), (&b"first"[..], ""));
    let first = status(&cdir);
    assert_eq!(first.len(), 1, "one client process: {first:?}");
    assert_eq!(first[0]["role"], "client");
    let pid = first[0]["pid"].as_u64().unwrap();

    // The second pipe attaches to the same agent: no second Tox instance.
    let (ok, out, err) = pipe_echo(&cdir, &boot, &server_id, port, b"second", persist);
    assert!(ok, "{err}");
    assert_eq!((out.as_slice(), err.as_str()), (&b"second"[..], ""));
    let log = std::fs::read_to_string(cdir.join("agent.log")).unwrap();
    assert_eq!(
        log.matches("agent for").count(),
        1,
        "one agent started: {log}"
    );

    // While a stream is open, status shows it with the peer's link and session.
    let mut held = pipe_with(
        &cdir,
        &boot,
        &server_id,
        &format!("127.0.0.1:{port}"),
        Stdio::piped(),
        true,
        persist,
    );
    let mut stdin = held.stdin.take().unwrap();
    stdin.write_all(b"held").unwrap();
    let target = format!("127.0.0.1:{port}");
    let mut tries = 0;
    let st = loop {
        let st = status(&cdir);
        let streams = &st[0]["status"]["peers"][0]["streams"];
        if streams
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x["target"] == target.as_str()))
        {
            break st;
        }
        tries += 1;
        assert!(tries < 200, "the held stream never showed: {st:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(st[0]["pid"].as_u64(), Some(pid), "the same agent");
    let peer = &st[0]["status"]["peers"][0];
    assert_eq!(peer["key"].as_str(), Some(&server_id[..64]));
    assert_eq!(peer["online"], true);
    // Our bootstrap node has no TCP relay: the link can only be direct UDP.
    assert_eq!(peer["direct"], true, "{peer}");
    let session = &peer["session"];
    assert_eq!(session["established"], true, "{session}");
    assert_eq!(session["suspended"], false, "{session}");
    let rtt = session["rtt_ms"].as_f64().expect("a round trip");
    assert!(rtt > 0.0 && rtt < 2000.0, "a loopback round trip: {rtt} ms");
    assert!(session["bytes_sent"].as_u64().unwrap() >= 11, "{session}");
    let stream = &peer["streams"][0];
    assert_eq!(stream["incoming"], false);
    assert!(stream["age_secs"].as_f64().unwrap() < 30.0, "{stream}");
    // The human form names the same things.
    let text = run(&["--data-dir", cdir.to_str().unwrap(), "status"]);
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(text.contains("link: direct UDP"), "{text}");
    assert!(text.contains(&format!("to {target}")), "{text}");
    // The server's status sees the client.
    let srv = status(&sdir);
    assert_eq!(srv[0]["role"], "server");
    assert_eq!(
        srv[0]["status"]["peers"][0]["session"]["established"], true,
        "{srv:?}"
    );
    drop(stdin);
    let mut out = Vec::new();
    held.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(out, b"held");
    assert!(wait_timeout(&mut held, Duration::from_secs(20)).is_some_and(|s| s.success()));

    // `toxtun stop` ends the agent, and nothing answers any more.
    let o = run(&["--data-dir", cdir.to_str().unwrap(), "stop"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&pid.to_string()), "{}", stderr(&o));
    let mut tries = 0;
    while alive(pid) {
        tries += 1;
        assert!(tries < 100, "the agent {pid} is still running");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = run(&["--data-dir", cdir.to_str().unwrap(), "status"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no toxtun process"), "{}", stderr(&o));
}

#[test]
fn a_second_process_with_the_same_identity_never_breaks_the_first() {
    // Once, a pipe started beside a running forward waited 30 s, failed with 2009, and
    // the forward's link dropped meanwhile: two Tox instances fought over one key.
    let (_boot, boot) = bootstrap();
    let port = echo_server();
    let sdir = tmp("second-serve");
    let cdir = tmp("second-client");
    let (_server, server_id) = serve(&sdir, port, &boot);
    let local = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (forward, events) = forward_up(
        &cdir,
        &["-L".into(), format!("127.0.0.1:{local}:127.0.0.1:{port}")],
        &boot,
        &server_id,
    );
    // A long-lived connection through the forward.
    let mut conn = TcpStream::connect(("127.0.0.1", local)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut echo = |msg: &[u8]| {
        conn.write_all(msg).unwrap();
        let mut back = vec![0; msg.len()];
        conn.read_exact(&mut back).unwrap();
        back
    };
    assert_eq!(echo(b"before"), b"before");

    // A pipe with the same identity (and --persist 0: it would run its own instance if
    // nothing held the identity) attaches to the forward instead.
    let (ok, out, err) = pipe_echo(
        &cdir,
        &boot,
        &server_id,
        port,
        b"from the pipe",
        &["--persist", "0"],
    );
    assert!(ok, "{err}");
    assert_eq!((out.as_slice(), err.as_str()), (&b"from the pipe"[..], ""));
    assert_eq!(echo(b"after"), b"after", "the forward's stream carries on");
    let seen: Vec<String> = events.try_iter().map(|(_, l)| l).collect();
    for bad in ["session_suspended", "session_down", "peer_offline"] {
        assert!(
            !seen.iter().any(|l| l.contains(bad)),
            "the forward saw {bad}: {seen:?}"
        );
    }
    let st = status(&cdir);
    assert_eq!(st.len(), 1);
    assert_eq!(st[0]["pid"].as_u64(), Some(u64::from(forward.0.id())));
}

#[test]
fn a_second_serve_with_the_same_identity_fails_naming_the_first() {
    let (_boot, boot) = bootstrap();
    let sdir = tmp("twice");
    let (first, _) = serve(&sdir, 9, &boot);
    let conf = sdir.join("server.toml");
    // The first one has taken the lock once it listens on its socket.
    let mut tries = 0;
    while !Path::new(&sdir.join("server.sock")).exists() {
        tries += 1;
        assert!(tries < 100, "the first serve never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = run(&[
        "--data-dir",
        sdir.to_str().unwrap(),
        "serve",
        "--config",
        conf.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("in use by toxtun process {}", first.0.id())),
        "{err}"
    );
    assert!(err.contains("toxtun stop"), "{err}");
}
