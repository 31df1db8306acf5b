//! Running a server for real, over real Tox on loopback (a bootstrap node of the test's
//! own, LAN discovery off): `toxtun serve` rereads its config on SIGHUP and on
//! `toxtun reload` (a broken file is refused and the running rules stay; a narrowed rule
//! closes exactly the connections it no longer allows, and the others carry on), and
//! serves Prometheus metrics that curl scrapes from a live tunnel.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::*;

fn config(dir: &Path, boot: &str, ports: &[u16]) {
    config_with(dir, boot, ports, "");
}

fn config_with(dir: &Path, boot: &str, ports: &[u16], extra: &str) {
    let allow: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    std::fs::write(
        dir.join("server.toml"),
        format!(
            "[secret]\nvalue = \"a shared test secret\"\nallow = [{}]\n[network]\nbootstrap = [\"{boot}\"]\nlan_discovery = false\n{extra}",
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
    let (server, server_id) = serve_config(&sdir);
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

/// One metric's value in a scrape: the line `name{labels} value`.
fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)?
            .strip_prefix(' ')?
            .parse()
            .ok()
    })
}

#[test]
fn metrics_scraped_by_curl_show_the_live_tunnel() {
    let (_boot, boot) = bootstrap();
    let (echo, denied) = (echo_server(), echo_server());
    let sdir = tmp("metrics-server");
    let cdir = tmp("metrics-client");
    let port = free_port();
    config_with(
        &sdir,
        &boot,
        &[echo],
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let (_server, server_id) = serve_config(&sdir);
    let (l_echo, l_denied) = (free_port(), free_port());
    let specs = [
        "-L".to_string(),
        format!("{l_echo}:127.0.0.1:{echo}"),
        "-L".to_string(),
        format!("{l_denied}:127.0.0.1:{denied}"),
    ];
    let (_forward, _events) = forward_up(&cdir, &specs, &boot, &server_id);
    let payload = vec![7u8; 1 << 20];
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while echo_through(l_echo, &payload).map_or(true, |b| b != payload) {
        assert!(
            std::time::Instant::now() < end,
            "no echo through the tunnel"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(!echo_through(l_denied, b"x").is_ok_and(|b| b == b"x"));
    // The server has one peer, the client: its key labels the peer metrics.
    std::thread::sleep(Duration::from_secs(1));
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let peer_line = text
        .lines()
        .find(|l| l.starts_with("toxtun_peer_online{"))
        .unwrap_or_else(|| panic!("no peer in\n{text}"));
    let labels = &peer_line[..peer_line.find('}').unwrap() + 1];
    let peer = |name: &str| {
        metric(
            &text,
            &format!(
                "toxtun_peer_{name}{}",
                &labels["toxtun_peer_online".len()..]
            ),
        )
        .unwrap_or_else(|| panic!("no toxtun_peer_{name} in\n{text}"))
    };
    assert_eq!(peer("online"), 1.0);
    assert_eq!(peer("session_established"), 1.0);
    let rtt = peer("rtt_seconds");
    assert!(rtt > 0.0 && rtt < 2.0, "round trip {rtt} s");
    assert!(peer("received_bytes_total") >= (1 << 20) as f64, "{text}");
    assert!(peer("sent_bytes_total") >= (1 << 20) as f64, "{text}");
    assert_eq!(metric(&text, "toxtun_tox_connected"), Some(1.0));
    assert_eq!(metric(&text, "toxtun_sessions"), Some(1.0));
    assert!(metric(&text, "toxtun_streams_opened_total").unwrap() >= 1.0);
    assert_eq!(
        metric(&text, "toxtun_streams_refused_total{code=\"2001\"}"),
        Some(1.0),
        "{text}"
    );
    // Anything but /metrics is not found.
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}
