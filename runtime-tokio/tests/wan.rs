//! The WAN bench's short variant: real `toxtun` processes (bootstrap node and server on one
//! side, `forward` on the other) over the emulated internet path of `toxtun-netsim` — two
//! network namespaces made here, joined by TUN devices through a 50 ms, 100 Mbit/s path with
//! a 100 ms drop-tail queue — and the programs people put through a tunnel: curl for a
//! download, the project's probes for an upload and for a download cut by an 8 s outage.
//! Every transfer is checked byte for byte. Needs root (namespaces, TUN); elsewhere it says
//! why it skipped. Time bounds here only tell a stuck transfer from a slow one; speed is
//! the bench's business (`cargo bench -p toxtun-tokio --bench wan`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use toxtun_netsim::probe::{self, Pattern, ProbeServer};
use toxtun_netsim::tunnel::{Tunnel, TunnelOptions};
use toxtun_netsim::{available, profiles, Side, Wan};

const PROBE_PORT: u16 = 9000;
const LOCAL_PORT: u16 = 9100;
const BYTES: u64 = 8_000_000;

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

#[test]
fn a_tunnel_over_an_emulated_internet_path_carries_real_clients_byte_exact() {
    if let Err(why) = available() {
        println!("skipped: {why}");
        return;
    }
    let path = profiles::by_name("broadband").expect("a profile").path;
    let wan = Wan::start("t", path.clone(), path, 7).expect("the emulated WAN starts");
    let listen: SocketAddr = format!("0.0.0.0:{PROBE_PORT}").parse().unwrap();
    let _server = ProbeServer::start(wan.namespace(Side::B), listen).unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wan-test");
    let tunnel = Tunnel::start(
        &wan,
        std::path::Path::new(env!("CARGO_BIN_EXE_toxtun")),
        &TunnelOptions {
            target_port: PROBE_PORT,
            local_port: LOCAL_PORT,
            fast_path: true,
            dir: dir.clone(),
            metrics_port: None,
        },
    )
    .unwrap();
    let up = tunnel
        .wait_session(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e}; logs in {}", dir.display()));
    println!("session up {:.1} s after start", up.as_secs_f64());

    // curl, as a person would, through the forwarded port.
    let file = dir.join("download.bin");
    let out = wan
        .command(Side::A, "curl")
        .unwrap()
        .args(["--silent", "--show-error", "--max-time", "120", "--output"])
        .arg(&file)
        .args([
            "--write-out",
            "%{http_code} %{size_download} %{speed_download}",
        ])
        .arg(format!("http://127.0.0.1:{LOCAL_PORT}/bytes/{BYTES}"))
        .output()
        .expect("curl runs (scripts/install-deps installs it)");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl: {said} {}; logs in {}",
        String::from_utf8_lossy(&out.stderr),
        dir.display()
    );
    let got = std::fs::read(&file).unwrap();
    let mut want = vec![0u8; got.len().div_ceil(8) * 8];
    Pattern::default().fill(&mut want);
    assert_eq!(got.len() as u64, BYTES, "curl: {said}");
    assert!(got == want[..got.len()], "curl's download differs");
    println!("curl: {said} (code, bytes, bytes/s)");

    // An upload, checked by the far end's SHA-256.
    let addr = tunnel.local();
    let upload = probe::in_namespace(wan.namespace(Side::A), move || {
        probe::upload(addr, BYTES, None)
    })
    .unwrap()
    .expect("the upload completes");
    assert!(upload.intact, "{upload:?}");
    println!("upload: {:.2} MB/s", upload.mb_per_s());

    // A download cut by an 8 s outage one second in: it completes, and bytes flow again
    // soon after the path returns.
    let start = now();
    wan.schedule_outage(start + Duration::from_secs(1), Duration::from_secs(8));
    let back = start + Duration::from_secs(9);
    let marks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&marks);
    let big = 4 * BYTES;
    let d = probe::in_namespace(wan.namespace(Side::A), move || {
        probe::download_until_stalled(addr, big, None, Duration::from_secs(60), |t, got| {
            sink.lock().unwrap().push((t, got))
        })
    })
    .unwrap()
    .unwrap_or_else(|e| {
        panic!(
            "the download across the outage failed: {e}; logs in {}",
            dir.display()
        )
    });
    assert!(d.intact);
    let marks = marks.lock().unwrap();
    let before = marks
        .iter()
        .rev()
        .find(|(t, _)| *t < back)
        .map_or(0, |m| m.1);
    assert!(
        before < big,
        "the download ended before the outage: nothing tested"
    );
    let first = marks
        .iter()
        .find(|(t, got)| *t >= back && *got > before)
        .map(|(t, _)| *t - back)
        .expect("bytes after the outage");
    println!(
        "8 s outage: first new byte {:.0} ms after the path returned; path {:?}",
        first.as_secs_f64() * 1e3,
        tunnel
            .direct()
            .map(|d| if d { "direct UDP" } else { "TCP relay" })
    );
    assert!(
        first < Duration::from_secs(15),
        "nothing moved for {first:?} after the path returned; logs in {}",
        dir.display()
    );
}
