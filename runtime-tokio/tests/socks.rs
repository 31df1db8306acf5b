//! `toxtun forward -D`: curl through the SOCKS server to a local HTTP server, over real
//! Tox between processes on loopback (our own bootstrap node, LAN discovery off); a
//! refused target comes back as the SOCKS reply its code maps to.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};

mod common;
use common::*;

/// An HTTP server answering every request with `body`.
fn http_server(body: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(&body);
            });
        }
    });
    port
}

fn curl(proxy_flag: &str, socks: u16, url: &str) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "60", proxy_flag])
        .arg(format!("127.0.0.1:{socks}"))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("curl runs (scripts/install-deps installs it)")
}

#[test]
fn curl_through_forward_d_reaches_what_the_server_allows_and_hears_why_not() {
    let (_boot, boot) = bootstrap();
    let body: Vec<u8> = (0..2_000_000u32).map(|i| (i % 249) as u8).collect();
    let http = http_server(body.clone());
    let closed = free_port(); // allowed, but nothing listens there
    let sdir = tmp("socks-serve");
    let cdir = tmp("socks-client");
    let conf = sdir.join("server.toml");
    std::fs::write(
        &conf,
        format!(
            "[secret]\nvalue = \"a shared test secret\"\n\
             allow = [\"127.0.0.1:{http}\", \"localhost:{http}\", \"127.0.0.1:{closed}\"]\n\
             [network]\nbootstrap = [\"{boot}\"]\nlan_discovery = false\n"
        ),
    )
    .unwrap();
    let id = run(&["--data-dir", sdir.to_str().unwrap(), "id", "--no-qr"]);
    let server_id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    let _server = Proc(
        toxtun()
            .args(["--data-dir", sdir.to_str().unwrap(), "serve", "--config"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let socks = free_port();
    let (_forward, _) = forward_up(&cdir, &["-D".into(), socks.to_string()], &boot, &server_id);

    // A name, resolved on the server's side; an IPv4 address; SOCKS 4a.
    for (flag, host) in [
        ("--socks5-hostname", "localhost"),
        ("--socks5", "127.0.0.1"),
        ("--socks4a", "localhost"),
    ] {
        let o = curl(flag, socks, &format!("http://{host}:{http}/file"));
        assert!(o.status.success(), "{flag}: {}", stderr(&o));
        assert!(o.stdout == body, "{flag}: the body byte for byte");
    }
    // Not in the rules: "connection not allowed by ruleset" (2).
    let o = curl(
        "--socks5-hostname",
        socks,
        &format!("http://localhost:{}/", http + 1),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("(2)"), "{}", stderr(&o));
    // Allowed, but refused by the target: "connection refused" (5).
    let o = curl("--socks5", socks, &format!("http://127.0.0.1:{closed}/"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("(5)"), "{}", stderr(&o));
    // A client that wants a password is told no method is acceptable.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", socks)).unwrap();
    s.write_all(&[5, 1, 2]).unwrap();
    let mut answer = [0u8; 2];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [5, 0xff]);

    // A second forward with the same identity attaches to the first, -D and all.
    let socks2 = free_port();
    let mut second = Proc(
        forward_command(
            &cdir,
            &["-D".into(), socks2.to_string()],
            &boot,
            &server_id,
            false,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let mut err = BufReader::new(second.0.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("attached to toxtun process") {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "the second forward ended"
        );
    }
    let o = curl(
        "--socks5-hostname",
        socks2,
        &format!("http://localhost:{http}/"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout == body);
    let o = curl(
        "--socks5-hostname",
        socks2,
        &format!("http://localhost:{}/", http + 1),
    );
    assert!(
        stderr(&o).contains("(2)"),
        "attached, the same reply: {}",
        stderr(&o)
    );
}
