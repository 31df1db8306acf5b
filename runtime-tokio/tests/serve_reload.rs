//! `toxtun serve` rereads its config on SIGHUP and on `toxtun reload`, over real Tox on
//! loopback (a bootstrap node of the test's own, LAN discovery off): a broken file is
//! refused and the running rules stay; a narrowed rule closes exactly the connections it
//! no longer allows, and the others carry on.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;

fn config(dir: &Path, boot: &str, ports: &[u16]) {
    let allow: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    std::fs::write(
        dir.join("server.toml"),
        format!(
            "[secret]\nvalue = \"a shared test secret\"\nallow = [{}]\n[network]\nbootstrap = [\"{boot}\"]\nlan_discovery = false\n",
            allow.join(", ")
        ),
    )
    .unwrap();
}

/// A connection through a forwarded port that echoes one round trip now.
fn echoing(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert!(round_trip(&mut s), "echo through {port}");
    s
}

fn round_trip(s: &mut TcpStream) -> bool {
    let mut back = [0u8; 5];
    s.write_all(b"hello").is_ok() && s.read_exact(&mut back).is_ok() && &back == b"hello"
}

fn reload(dir: &Path, json: bool) -> std::process::Output {
    let mut c = toxtun();
    if json {
        c.arg("--json");
    }
    c.args(["--data-dir", dir.to_str().unwrap(), "reload"])
        .output()
        .unwrap()
}

#[test]
fn reload_refuses_a_broken_file_and_narrows_only_what_it_must() {
    let (_boot, boot) = bootstrap();
    let (kept, narrowed) = (echo_server(), echo_server());
    let sdir = tmp("reload-server");
    let cdir = tmp("reload-client");
    config(&sdir, &boot, &[kept, narrowed]);
    let id = run(&["--data-dir", sdir.to_str().unwrap(), "id", "--no-qr"]);
    let server_id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    let log = std::fs::File::create(sdir.join("serve.log")).unwrap();
    let server = Proc(
        toxtun()
            .args(["--data-dir", sdir.to_str().unwrap(), "serve", "--config"])
            .arg(sdir.join("server.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let (lk, ln) = (free_port(), free_port());
    let specs = [
        "-L".to_string(),
        format!("{lk}:127.0.0.1:{kept}"),
        "-L".to_string(),
        format!("{ln}:127.0.0.1:{narrowed}"),
    ];
    let (_forward, _events) = forward_up(&cdir, &specs, &boot, &server_id);
    assert!(echo_eventually(lk, b"first", Duration::from_secs(60)));
    let (mut a, mut b) = (echoing(lk), echoing(ln));

    // A broken file: refused on both paths, with the parser's message, and nothing changes.
    std::fs::write(sdir.join("server.toml"), "[[client]\n").unwrap();
    let out = reload(&sdir, false);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("3011") && err.contains("server.toml"), "{err}");
    send_signal(&server.0, "HUP");
    std::thread::sleep(Duration::from_secs(1));
    assert!(round_trip(&mut a) && round_trip(&mut b), "both still echo");

    // Narrowed: the connection to the removed target closes; the other goes on.
    config(&sdir, &boot, &[kept]);
    let out = reload(&sdir, true);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reset = &v["reload"]["streams_reset"];
    assert_eq!(reset.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(reset[0]["target"], format!("127.0.0.1:{narrowed}"));
    assert_eq!(v["reload"]["secret"], "rules changed");
    let mut rest = Vec::new();
    let r = b.read_to_end(&mut rest);
    assert!(
        r.is_err() || rest.is_empty(),
        "the narrowed connection ended"
    );
    assert!(round_trip(&mut a), "the kept connection still echoes");
    assert!(echo_through(lk, b"new").is_ok_and(|e| e == b"new"));
    assert!(
        !echo_through(ln, b"new").is_ok_and(|e| e == b"new"),
        "a new connection to the narrowed target is refused"
    );

    // SIGHUP with the same file: nothing to do, and the log says so.
    send_signal(&server.0, "HUP");
    std::thread::sleep(Duration::from_secs(1));
    assert!(round_trip(&mut a));
    let log = std::fs::read_to_string(sdir.join("serve.log")).unwrap();
    assert!(log.contains("reload refused"), "{log}");
    assert!(log.contains("reset (2001)"), "{log}");
    assert!(log.contains("no change to clients"), "{log}");
}
