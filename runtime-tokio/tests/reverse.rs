//! `toxtun forward -R` over real Tox on loopback (a bootstrap node of the test's own, LAN
//! discovery off): the server listens where its `listen` rules allow, curl on the server's
//! side downloads from an HTTP server on the client's side byte for byte, and a listener
//! the rules do not allow is refused with its code and never bound.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};

/// A small HTTP/1.0 server that answers every request with `body`.
fn http_server(body: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let body = std::sync::Arc::new(body);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                // The request's head, to its empty line.
                while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    line.clear();
                }
                let mut s = s;
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
            });
        }
    });
    port
}

fn server_config(dir: &Path, boot: &str, listen: u16) {
    std::fs::write(
        dir.join("server.toml"),
        format!(
            "[secret]\nvalue = \"a shared test secret\"\nallow = []\nlisten = [\"127.0.0.1:{listen}\"]\n[network]\nbootstrap = [\"{boot}\"]\nlan_discovery = false\n"
        ),
    )
    .unwrap();
}

#[test]
fn curl_on_the_server_downloads_from_the_client_through_reverse_forwarding() {
    let (_boot, boot) = bootstrap();
    let body = body(8 << 20);
    let web = http_server(body.clone());
    let (allowed, denied) = (free_port(), free_port());
    let sdir = tmp("reverse-server");
    let cdir = tmp("reverse-client");
    server_config(&sdir, &boot, allowed);
    let (_server, server_id) = serve_config(&sdir);
    let specs = [
        "-R".to_string(),
        format!("{allowed}:127.0.0.1:{web}"),
        "-R".to_string(),
        format!("{denied}:127.0.0.1:{web}"),
    ];
    let (_forward, events) = forward_up(&cdir, &specs, &boot, &server_id);
    let bind = |p: u16| format!("\"bind\":\"127.0.0.1:{p}\"");
    // Both answers, in whichever order they come.
    let (mut ready, mut refused) = (None, None);
    while ready.is_none() || refused.is_none() {
        let (_, line) = wait_for_event(&events, &["\"listen_"], Duration::from_secs(30))
            .expect("both listeners answered");
        if line.contains("\"listen_ready\"") && line.contains(&bind(allowed)) {
            ready = Some(line);
        } else if line.contains("\"listen_refused\"") && line.contains(&bind(denied)) {
            refused = Some(line);
        } else {
            panic!("unexpected: {line}");
        }
    }
    let refused = refused.unwrap();
    assert!(refused.contains("\"code\":2015"), "{refused}");
    // `toxtun status` shows both, as they stand.
    let out = run(&["--data-dir", cdir.to_str().unwrap(), "--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    let listeners = &v["status"]["peers"][0]["listeners"];
    let state = |p: u16| {
        listeners
            .as_array()
            .and_then(|a| a.iter().find(|l| l["bind"] == format!("127.0.0.1:{p}")))
            .map(|l| l["state"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(state(allowed).as_deref(), Some("listening"), "{v}");
    assert!(state(denied).is_some_and(|s| s.contains("2015")), "{v}");
    assert!(
        TcpStream::connect(("127.0.0.1", denied)).is_err(),
        "nothing listens on the refused port"
    );

    let got = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "120"])
        .arg(format!("http://127.0.0.1:{allowed}/file"))
        .output()
        .expect("curl runs");
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(got.stdout.len(), body.len());
    assert_eq!(Sha256::digest(&got.stdout), Sha256::digest(&body));
}
