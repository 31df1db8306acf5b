//! `toxtun forward -U` over real Tox on loopback (a bootstrap node of the test's own, LAN
//! discovery off), driven by the programs people put through it: `dig` resolves a name
//! through a DNS server on the server's side, `iperf3 -u` pushes a UDP load through (its
//! control connection through `-L` beside it), and a flow the server's `udp:` rules do not
//! allow is refused with its code, counted in `toxtun status`.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// A tiny authoritative DNS server: every A query gets `10.1.2.3`. Returns its port.
fn dns_server() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            if let Some(answer) = dns_answer(&buf[..n]) {
                let _ = s.send_to(&answer, from);
            }
        }
    });
    port
}

/// The answer to one query: its ID and question, one A record (additional records,
/// such as dig's EDNS option, are left out).
fn dns_answer(q: &[u8]) -> Option<Vec<u8>> {
    let mut end = 12;
    while *q.get(end)? != 0 {
        end += 1 + usize::from(q[end]);
    }
    end += 1 + 4; // the root label, QTYPE, QCLASS
    let question = q.get(12..end)?;
    let mut a = Vec::new();
    a.extend_from_slice(&q[..2]);
    a.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    a.extend_from_slice(question);
    a.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3]);
    Some(a)
}

fn server_config(dir: &Path, boot: &str, allow: &[String]) {
    let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    std::fs::write(
        dir.join("server.toml"),
        format!(
            "[secret]\nvalue = \"a shared test secret\"\nallow = [{}]\n[network]\nbootstrap = [\"{boot}\"]\nlan_discovery = false\n",
            allow.join(", ")
        ),
    )
    .unwrap();
}

fn dig(port: u16, name: &str) -> std::process::Output {
    Command::new("dig")
        .args(["+short", "+tries=5", "+time=3", "-p"])
        .arg(port.to_string())
        .args(["@127.0.0.1", name])
        .output()
        .expect("dig runs (scripts/install-deps installs it)")
}

#[test]
fn dig_resolves_through_udp_forwarding_and_a_disallowed_flow_is_refused() {
    let (_boot, boot) = bootstrap();
    let dns = dns_server();
    let denied = dns_server();
    let (local, refused_local) = (free_port(), free_port());
    let sdir = tmp("udp-server");
    let cdir = tmp("udp-client");
    // TCP to the denied server's port is allowed: its UDP twin is not.
    server_config(
        &sdir,
        &boot,
        &[
            format!("udp:127.0.0.1:{dns}"),
            format!("127.0.0.1:{denied}"),
        ],
    );
    let (_server, server_id) = serve_config(&sdir);
    let specs = [
        "-U".to_string(),
        format!("{local}:127.0.0.1:{dns}"),
        "-U".to_string(),
        format!("{refused_local}:127.0.0.1:{denied}"),
    ];
    let (_forward, _events) = forward_up(&cdir, &specs, &boot, &server_id);

    // Several queries, each from a source port of its own: a flow each.
    for name in ["nas.example", "printer.example", "nas.example"] {
        let out = dig(local, name);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "10.1.2.3",
            "dig {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = dig(refused_local, "nas.example");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("10.1.2.3"),
        "the disallowed flow got an answer"
    );
    let out = run(&["--data-dir", cdir.to_str().unwrap(), "--json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {}", stderr(&out)));
    let c = &v["status"]["counters"];
    assert!(c["flows_opened"].as_u64() >= Some(3), "{v}");
    assert!(c["flows_refused"]["2001"].as_u64() >= Some(1), "{v}");
    let s = &v["status"]["peers"][0]["session"];
    assert!(s["datagrams_received"].as_u64() >= Some(3), "{v}");
    assert_eq!(s["datagrams_dropped"].as_u64(), Some(0), "{v}");
    // The human form says it too.
    let out = run(&["--data-dir", cdir.to_str().unwrap(), "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("UDP since start:"), "{text}");
}

#[test]
fn iperf3_udp_load_crosses_the_tunnel_with_little_loss() {
    let (_boot, boot) = bootstrap();
    let iperf = free_port();
    let sdir = tmp("udp-iperf-server");
    let cdir = tmp("udp-iperf-client");
    server_config(
        &sdir,
        &boot,
        &[
            format!("127.0.0.1:{iperf}"),
            format!("udp:127.0.0.1:{iperf}"),
        ],
    );
    let (_server, server_id) = serve_config(&sdir);
    let _iperf_server = Proc(
        Command::new("iperf3")
            .args(["-s", "-1", "-B", "127.0.0.1", "-p"])
            .arg(iperf.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("iperf3 runs (scripts/install-deps installs it)"),
    );
    // iperf3 talks TCP (its control connection) and UDP (the load) to one port.
    let local = free_port();
    let specs = [
        "-L".to_string(),
        format!("{local}:127.0.0.1:{iperf}"),
        "-U".to_string(),
        format!("{local}:127.0.0.1:{iperf}"),
    ];
    let (_forward, _events) = forward_up(&cdir, &specs, &boot, &server_id);
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("iperf3")
        .args([
            "-c",
            "127.0.0.1",
            "-u",
            "-b",
            "20M",
            "-t",
            "3",
            "-l",
            "1200",
            "--json",
        ])
        .args(["-p", &local.to_string()])
        .output()
        .expect("iperf3 runs");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let sum = &v["end"]["sum"];
    let (packets, lost) = (sum["packets"].as_u64(), sum["lost_percent"].as_f64());
    assert!(packets.is_some_and(|p| p > 3000), "iperf3 sent little: {v}");
    // On a shared machine a burst may lose a few; the bench measures the real figure.
    assert!(lost.is_some_and(|l| l < 5.0), "lost {lost:?}%: {sum}");
}
