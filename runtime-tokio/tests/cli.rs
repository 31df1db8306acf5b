//! The `toxtun` command as a person uses it: help, bad input, identity, and real tunnels
//! over the Tox protocol between processes on loopback (our own bootstrap node, LAN
//! discovery off, never the public list).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::*;

#[test]
fn every_command_has_help() {
    for cmd in [
        "id",
        "serve",
        "forward",
        "pipe",
        "agent",
        "status",
        "stop",
        "bootstrap",
        "demo",
    ] {
        let o = run(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd} --help");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("Usage: toxtun"), "{cmd}: {out}");
    }
    let o = run(&["--help"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("forward"));
}

#[test]
fn version_names_c_toxcore_and_that_its_per_packet_mlock_is_skipped() {
    let o = run(&["--version"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("c-toxcore 0.2."), "{out}");
    assert!(out.contains("per-packet mlock skipped"), "{out}");
    let o = toxtun()
        .arg("--version")
        .env("TOXTUN_TOXCORE_MLOCK", "1")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("per-packet mlock kept"));
}

#[test]
fn bad_arguments_fail_clearly() {
    let id = "A".repeat(76);
    // A malformed Tox ID names the character.
    let mut bad = id.clone();
    bad.replace_range(10..11, "x");
    let o = run(&["forward", "-L", "8080:127.0.0.1:22", &bad]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("character 11"), "{}", stderr(&o));
    // A wrong checksum says so.
    let o = run(&["pipe", &id, "127.0.0.1:22"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("checksum"), "{}", stderr(&o));
    // A bad -L spec (with a valid ID).
    let valid =
        toxtun_proto::ToxId::new(toxtun_proto::PeerId([0xAA; 32]), [1, 2, 3, 4]).to_string();
    let o = run(&["forward", "-L", "8080", &valid]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("-L 8080"), "{}", stderr(&o));
    // A bad target.
    let o = run(&["pipe", &id, "127.1:22"]);
    assert!(!o.status.success());
    // Missing arguments are clap's errors (exit 2).
    assert_eq!(run(&["pipe"]).status.code(), Some(2));
}

#[test]
fn bad_config_files_fail_clearly() {
    let d = tmp("config");
    let missing = d.join("nope.toml");
    let o = run(&["serve", "--config", missing.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
    let bad = d.join("bad.toml");
    std::fs::write(
        &bad,
        "[[client]]\nkey = \"nothex\"\nallow = [\"127.0.0.1:22\"]\n",
    )
    .unwrap();
    let o = run(&["serve", "--config", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("client[0].key"), "{}", stderr(&o));
    let typo = d.join("typo.toml");
    std::fs::write(&typo, "[limits]\nmax_peer = 1\n").unwrap();
    let o = run(&["serve", "--config", typo.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown field"), "{}", stderr(&o));
}

#[test]
fn id_is_persistent_private_and_never_overwritten_when_damaged() {
    let d = tmp("id");
    let dir = d.to_str().unwrap();
    let a = run(&["--data-dir", dir, "id", "--no-qr"]);
    assert!(a.status.success(), "{}", stderr(&a));
    let b = run(&["--data-dir", dir, "id", "--no-qr"]);
    let (ia, ib) = (
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout),
    );
    assert_eq!(ia, ib, "the same identity on every run");
    assert_eq!(ia.trim().len(), 76);
    use std::os::unix::fs::PermissionsExt;
    let file = d.join("server.tox");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::write(&file, b"garbage").unwrap();
    let c = run(&["--data-dir", dir, "id", "--no-qr"]);
    assert!(!c.status.success());
    assert!(
        stderr(&c).contains("not a valid Tox save"),
        "{}",
        stderr(&c)
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"garbage", "not overwritten");
}

#[test]
fn demo_moves_a_download_over_real_tox() {
    let o = run(&["demo", "--mib", "4"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("SHA-256 matches"), "{out}");
    assert!(out.contains("first byte"), "{out}");
}

#[test]
fn pipe_carries_a_request_and_response_through_a_serve_process() {
    // The client is admitted by its key, as `toxtun id --client` shows it (no secret).
    let (_boot, boot) = bootstrap();
    let port = echo_server();
    let sdir = tmp("serve");
    let cdir = tmp("pipe");
    let key = run(&["--data-dir", cdir.to_str().unwrap(), "id", "--client"]);
    assert!(key.status.success(), "{}", stderr(&key));
    let key = String::from_utf8_lossy(&key.stdout).trim().to_string();
    assert_eq!(key.len(), 64, "a public key: {key}");
    assert!(stderr(&run(&[
        "--data-dir",
        cdir.to_str().unwrap(),
        "id",
        "--client"
    ]))
    .contains(&format!("[[client]] key = \"{key}\"")));
    let (_server, server_id) = serve_admitting(&sdir, port, &boot, Some(&key));
    // As a user runs it: the pipe starts a background agent and attaches to it.
    let _agent = StopOnDrop(cdir.clone());
    let mut pipe = pipe_with(
        &cdir,
        &boot,
        &server_id,
        &format!("127.0.0.1:{port}"),
        Stdio::piped(),
        false,
        &["--persist", "60s"],
    );
    let request: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut stdin = pipe.stdin.take().unwrap();
    let req = request.clone();
    std::thread::spawn(move || {
        stdin.write_all(&req).unwrap();
        // EOF: the pipe half-closes; the echo comes back and then the end.
    });
    let mut out = Vec::new();
    let mut stdout = pipe.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        stdout.read_to_end(&mut out).unwrap();
        out
    });
    let status = wait_timeout(&mut pipe, Duration::from_secs(90)).expect("pipe finished");
    let out = reader.join().unwrap();
    let mut err = String::new();
    pipe.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "pipe failed: {err}");
    assert_eq!(out, request, "the echo came back byte for byte");
    // As ssh's ProxyCommand it writes into the user's terminal: nothing, when all is well
    // (it once printed seven INFO lines per ssh).
    assert_eq!(err, "", "pipe printed on stderr");
}

#[test]
fn pipe_to_a_refused_target_exits_non_zero_with_the_code() {
    let (_boot, boot) = bootstrap();
    let port = echo_server();
    let sdir = tmp("serve2");
    let cdir = tmp("pipe2");
    let (_server, server_id) = serve(&sdir, port, &boot);
    // Not in the rules:
    let mut pipe = pipe(&cdir, &boot, &server_id, "127.0.0.1:9", Stdio::null());
    let status = wait_timeout(&mut pipe, Duration::from_secs(90)).expect("pipe finished");
    let mut err = String::new();
    pipe.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(err.contains("2001"), "names the code: {err}");
}

#[test]
fn forward_reconnects_by_itself_when_the_server_process_restarts() {
    let (_boot, boot) = bootstrap();
    let port = echo_server();
    let sdir = tmp("serve3");
    let cdir = tmp("forward3");
    let (server, server_id) = serve(&sdir, port, &boot);
    let local = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _forward = Proc(
        toxtun()
            .args(["--data-dir", cdir.to_str().unwrap(), "forward", "-L"])
            .arg(format!("127.0.0.1:{local}:127.0.0.1:{port}"))
            .args([
                "--secret",
                "a shared test secret",
                "--lan-discovery",
                "false",
            ])
            .args(["--bootstrap", &boot, &server_id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        echo_eventually(local, b"before the restart", Duration::from_secs(90)),
        "the forwarded port works"
    );
    // The server process dies without a word (SIGKILL) and is started again: same identity,
    // same accepted friends, none of its sessions.
    drop(server);
    let (_server, again) = serve(&sdir, port, &boot);
    assert_eq!(again, server_id, "the server kept its identity");
    assert!(
        echo_eventually(local, b"after the restart", Duration::from_secs(120)),
        "forward reconnected by itself"
    );
}

#[test]
fn a_port_in_use_or_a_damaged_identity_fails_clearly_and_keeps_the_file() {
    // Never the public nodes: a bootstrap address nobody answers on.
    let nobody = format!("127.0.0.1:9:{}", "AB".repeat(32));
    let valid =
        toxtun_proto::ToxId::new(toxtun_proto::PeerId([0xAA; 32]), [1, 2, 3, 4]).to_string();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let d = tmp("busy");
    let o = toxtun()
        .args(["--data-dir", d.to_str().unwrap(), "forward", "-L"])
        .arg(format!("{port}:127.0.0.1:22"))
        .args(["--lan-discovery", "false", "--bootstrap", &nobody, &valid])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        stderr(&o)
    );
    // A damaged server identity: a clear error, and the file is left as it was.
    let d = tmp("damaged");
    let junk = b"this is not a Tox save file";
    std::fs::write(d.join("server.tox"), junk).unwrap();
    let conf = write_config(&d, 22, &nobody, None);
    let o = toxtun()
        .args(["--data-dir", d.to_str().unwrap(), "serve", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("server.tox"),
        "names the file: {}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(d.join("server.tox")).unwrap(), junk);
    // A damaged client identity under a pipe: the background agent it starts fails, and
    // the pipe says why (from the agent's log), in ssh's terminal.
    std::fs::write(d.join("client.tox"), junk).unwrap();
    let o = toxtun()
        .args([
            "--data-dir",
            d.to_str().unwrap(),
            "pipe",
            "--persist",
            "30s",
        ])
        .args(["--lan-discovery", "false", "--bootstrap", &nobody, &valid])
        .arg("127.0.0.1:22")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("client.tox"),
        "names the file: {}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(d.join("client.tox")).unwrap(), junk);
}

#[test]
fn a_client_without_the_fast_path_says_so_and_never_claims_it() {
    // Once, a client started with --no-fast-path logged "link is direct UDP: streams take
    // the fast path" while the server's counters showed it off.
    let (_boot, boot) = bootstrap();
    let port = echo_server();
    let sdir = tmp("serve-nofp");
    let cdir = tmp("pipe-nofp");
    let (_server, server_id) = serve(&sdir, port, &boot);
    let mut pipe = toxtun()
        .args([
            "--data-dir",
            cdir.to_str().unwrap(),
            "pipe",
            "--persist",
            "0",
        ])
        .args(["-v", "--secret", "a shared test secret", "--no-fast-path"])
        .args(["--lan-discovery", "false", "--bootstrap", &boot, &server_id])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = pipe.stdin.take().unwrap();
    std::thread::spawn(move || {
        stdin.write_all(b"hello without the fast path").unwrap();
    });
    let mut out = Vec::new();
    let mut stdout = pipe.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        stdout.read_to_end(&mut out).unwrap();
        out
    });
    let status = wait_timeout(&mut pipe, Duration::from_secs(90)).expect("pipe finished");
    let mut err = String::new();
    pipe.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(reader.join().unwrap(), b"hello without the fast path");
    assert!(
        err.contains("session established; fast path off here"),
        "{err}"
    );
    assert!(!err.contains("take the fast path"), "{err}");
}

#[test]
fn sigterm_to_serve_tells_its_clients_at_once() {
    // `systemctl stop` sends SIGTERM. Once, serve died on it without a word, and each
    // client learnt of it only when its keepalive gave up, 30 s later.
    let (_boot, boot) = bootstrap();
    let port = echo_server();
    let sdir = tmp("serve-term");
    let cdir = tmp("forward-term");
    let (mut server, server_id) = serve(&sdir, port, &boot);
    let local = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_client, events) = forward_up(
        &cdir,
        &["-L".into(), format!("127.0.0.1:{local}:127.0.0.1:{port}")],
        &boot,
        &server_id,
    );
    let sent = send_signal(&server.0, "TERM");
    let (at, line) = wait_for_event(
        &events,
        &["\"session_down\"", "\"code\":1011", "\"remote\":true"],
        Duration::from_secs(20),
    )
    .expect("the client heard the server shut down, with its code");
    assert!(
        at - sent < Duration::from_secs(5),
        "{line} came {:?} after SIGTERM (a keepalive would take 30 s)",
        at - sent
    );
    let status = wait_timeout(&mut server.0, Duration::from_secs(10)).expect("serve exited");
    assert!(
        status.success(),
        "serve exits cleanly on SIGTERM: {status:?}"
    );
}

#[test]
fn sighup_to_pipe_closes_its_session_on_the_server_at_once() {
    // ssh ends its ProxyCommand with SIGHUP. Once, the pipe died without telling the
    // server, which held the session until its keepalive gave up.
    let (_boot, boot) = bootstrap();
    let port = echo_server();
    let sdir = tmp("serve-hup");
    let cdir = tmp("pipe-hup");
    let conf = write_config(&sdir, port, &boot, None);
    let id = run(&["--data-dir", sdir.to_str().unwrap(), "id", "--no-qr"]);
    let server_id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    let mut server = Proc(
        toxtun()
            .args([
                "--json",
                "--data-dir",
                sdir.to_str().unwrap(),
                "serve",
                "--config",
            ])
            .arg(&conf)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let events = json_lines(&mut server.0);
    let mut pipe = Proc(pipe(
        &cdir,
        &boot,
        &server_id,
        &format!("127.0.0.1:{port}"),
        Stdio::piped(),
    ));
    wait_for_event(&events, &["\"session_up\""], Duration::from_secs(90))
        .expect("the pipe's session came up");
    let sent = send_signal(&pipe.0, "HUP");
    let (at, line) = wait_for_event(
        &events,
        &["\"session_down\"", "\"code\":1011", "\"remote\":true"],
        Duration::from_secs(20),
    )
    .expect("the server heard the pipe close its session, with the code");
    assert!(
        at - sent < Duration::from_secs(5),
        "{line} came {:?} after SIGHUP (a keepalive would take 30 s)",
        at - sent
    );
    let status = wait_timeout(&mut pipe.0, Duration::from_secs(10)).expect("pipe exited");
    assert!(status.success(), "pipe exits cleanly on SIGHUP: {status:?}");
    // Its own stream ended with the session it closed: no warning into ssh's terminal
    // (once, "stream ended: session ended (2010)").
    let mut err = String::new();
    pipe.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("WARN"), "{err}");
}

#[test]
fn manual_pages_and_completions_come_from_the_command_line() {
    let dir = tmp("man");
    let o = run(&["manpages", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    assert!(page("toxtun.1").contains(".TH toxtun 1"));
    for sub in [
        "id",
        "serve",
        "forward",
        "pipe",
        "agent",
        "status",
        "stop",
        "bootstrap",
        "demo",
        "completions",
    ] {
        let p = page(&format!("toxtun-{sub}.1"));
        assert!(
            p.contains(&format!(".TH toxtun-{sub} 1")),
            "toxtun-{sub}.1: {p}"
        );
    }
    // The pages say what --help says: the flags, from the same definitions.
    assert!(page("toxtun-forward.1").contains("SOCKS"));
    assert!(page("toxtun-pipe.1").contains("persist"));
    assert!(page("toxtun.toml.5").contains("max_streams_per_peer"));
    for (shell, mark) in [
        ("bash", "complete -F _toxtun"),
        ("zsh", "#compdef toxtun"),
        ("fish", "complete -c toxtun"),
    ] {
        let o = run(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let script = String::from_utf8_lossy(&o.stdout);
        assert!(script.contains(mark), "{shell}: {script}");
        assert!(script.contains("persist"), "{shell} knows pipe's flags");
    }
    assert_eq!(run(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn serve_tells_systemd_it_is_ready_once_on_the_tox_network() {
    // Type=notify: systemd's socket is a datagram socket named in NOTIFY_SOCKET.
    let (_boot, boot) = bootstrap();
    let sdir = tmp("notify");
    let path = sdir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let conf = write_config(&sdir, 9, &boot, None);
    let _server = Proc(
        toxtun()
            .args(["--data-dir", sdir.to_str().unwrap(), "serve", "--config"])
            .arg(&conf)
            .env("NOTIFY_SOCKET", &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !seen
        .iter()
        .any(|m: &String| m.starts_with("STATUS=on the Tox network"))
    {
        let n = sock.recv(&mut buf).expect("a notification within 60 s");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // Ready comes before it says it is on the network (a STATUS while it connects may
    // come first).
    let ready = seen.iter().position(|m| m == "READY=1");
    assert!(ready.is_some_and(|r| r < seen.len() - 1), "{seen:?}");
    assert!(
        seen.iter().any(|m| m.contains("0 session(s), 0 stream(s)")),
        "{seen:?}"
    );
}
