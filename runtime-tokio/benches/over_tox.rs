//! toxtun over the real Tox protocol against c-toxcore's own ceiling, measured in the same
//! run, loopback only (a bootstrap node started here on 127.0.0.1, LAN discovery off):
//!
//! * raw: two processes moving max-size lossless custom packets one way as fast as
//!   c-toxcore accepts them (the baseline); then the same with lossy packets (c-toxcore's
//!   lossy ceiling here). Both skip
//!   c-toxcore's per-packet `mlock`, as toxtun does (`crypto_buffers.rs`); a third run,
//!   lossless, keeps it: c-toxcore as it ships;
//! * tunnel: `toxtun serve` and `toxtun forward` processes, a download and an upload
//!   through one forwarded connection, 1-byte round trips, start-up to the first byte,
//!   CPU and peak memory of both processes; and a cold 50 MB download through a second
//!   `forward` with `--no-fast-path` (c-toxcore's lossless packets only), for comparison.
//!
//! `cargo bench -p toxtun-tokio --bench over_tox` (`TOXTUN_BENCH_MB=1024` sets the volume of
//! each long transfer; `TOXTUN_BENCH_RAW_ONLY=1` measures only the raw baseline). Figures
//! and their ratios are printed at the end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use toxtun_proto::{SendError, ToxId, Transport, TransportEvent};
use toxtun_transport_tox::{BootstrapNode, ToxConfig, ToxOptions, ToxTransport};

const PACKET: usize = 1373;
const COLD_MB: u64 = 50;

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

fn total_mb() -> u64 {
    std::env::var("TOXTUN_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// Bytes received over time: enough to read the cold-start time and the plateau.
struct Progress {
    start: Instant,
    marks: Vec<(Duration, u64)>,
    /// CPU seconds both processes spent moving `cpu_bytes` (raw runs: from the first
    /// progress line to the end, so that their ≈ 10 s of joining the DHT is left out).
    cpu: f64,
    cpu_bytes: u64,
}

impl Progress {
    fn new() -> Self {
        Progress {
            start: now(),
            marks: vec![],
            cpu: 0.0,
            cpu_bytes: 0,
        }
    }
    fn add(&mut self, total: u64) {
        let last = self.marks.last().map_or(0, |m| m.1);
        if total >= last + (1 << 20) || self.marks.is_empty() {
            self.marks.push((self.start.elapsed(), total));
        }
    }
    /// Time from the first byte to `bytes`.
    fn time_to(&self, bytes: u64) -> Duration {
        let first = self.marks.first().map_or(Duration::ZERO, |m| m.0);
        let at = self
            .marks
            .iter()
            .find(|m| m.1 >= bytes)
            .or(self.marks.last())
            .map_or(Duration::ZERO, |m| m.0);
        at - first
    }
    /// MB/s over the last 40% of the bytes: past the slow start.
    fn plateau(&self) -> f64 {
        let (t_end, b_end) = *self.marks.last().expect("progress");
        let (t_mid, b_mid) = *self
            .marks
            .iter()
            .find(|m| m.1 >= b_end * 6 / 10)
            .expect("progress");
        (b_end - b_mid) as f64 / 1e6 / (t_end - t_mid).as_secs_f64().max(1e-9)
    }
}

// ----- the raw baseline: two processes, lossless custom packets -----------------------------

fn poll(t: &mut ToxTransport) -> Option<TransportEvent> {
    match t.poll_event(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(e) => e,
        Poll::Pending => None,
    }
}

fn raw_peer(boot: &str) -> ToxTransport {
    let node: BootstrapNode = boot.parse().expect("bootstrap line");
    ToxTransport::start(ToxConfig::new(ToxOptions::loopback(), vec![node])).expect("Tox starts")
}

/// The lossless packet that ends a lossy run (lossy packets may be lost, so the receiver
/// cannot count to the end).
const END: u8 = 0xAC;
/// The lossy packets' first byte (200: c-toxcore keeps 192..=199 for toxav).
const LOSSY: u8 = 0xC8;

/// Child role: receives `mb` MiB of packets from whoever befriends it, printing progress
/// lines "<micros since first packet> <bytes>" and then "done"; for lossy packets, until
/// the sender's END.
fn raw_receiver(boot: &str, mb: u64, lossy: bool) {
    let mut t = raw_peer(boot);
    println!("{}", t.id());
    std::io::stdout().flush().unwrap();
    let total = (mb << 20) / PACKET as u64;
    let mut got = 0u64;
    let mut first = None;
    let mut last_mark = 0u64;
    while got < total {
        match poll(&mut t) {
            Some(TransportEvent::FriendRequest { peer, .. }) => {
                t.accept_friend(peer).expect("accept");
            }
            Some(TransportEvent::Packet { packet, .. }) => {
                if lossy && packet[0] == END {
                    println!(
                        "{} {}",
                        first.map_or(0, |f: Instant| f.elapsed().as_micros()),
                        got * PACKET as u64
                    );
                    break;
                }
                let f = *first.get_or_insert_with(now);
                got += 1;
                let bytes = got * PACKET as u64;
                if bytes >= last_mark + (1 << 20) || got == total {
                    last_mark = bytes;
                    println!("{} {bytes}", f.elapsed().as_micros());
                }
            }
            Some(_) => {}
            None => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    println!("cpu {}", cpu_secs(std::process::id()));
    println!("done");
}

/// Child role: befriends `to` and sends `mb` MiB as fast as the transport takes them
/// (waiting for `SendReady` whenever its queue is full; lossy ones then END).
fn raw_sender(boot: &str, to: &str, mb: u64, lossy: bool) {
    let mut t = raw_peer(boot);
    let to: ToxId = to.parse().expect("Tox ID");
    t.add_friend(&to, b"raw bench").expect("friend request");
    while poll(&mut t) != Some(TransportEvent::FriendOnline(to.public_key)) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let pkt = Bytes::from({
        let mut v = vec![0x5Au8; PACKET];
        v[0] = if lossy { LOSSY } else { 0xAB };
        v
    });
    let total = (mb << 20) / PACKET as u64;
    let mut sent = 0;
    while sent < total {
        match t.send(to.public_key, pkt.clone()) {
            Ok(()) => sent += 1,
            Err(SendError::QueueFull(_)) => wait_send_ready(&mut t, to.public_key),
            Err(e) => panic!("send: {e}"),
        }
        while poll(&mut t).is_some() {}
    }
    if lossy {
        std::thread::sleep(Duration::from_millis(500));
        t.send(to.public_key, Bytes::from_static(&[END]))
            .expect("END");
        eprintln!(
            "raw lossy sender: {sent} packets sent, {} refused by c-toxcore",
            t.stats().lossy_dropped
        );
    }
    // Let the last packets drain before the process (and its Tox instance) goes.
    std::thread::sleep(Duration::from_secs(5));
}

/// Wakes the raw sender's thread.
struct Unpark(std::thread::Thread);
impl std::task::Wake for Unpark {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// Parks the raw sender until the transport says `SendReady` for `peer`: it sends again
/// the moment c-toxcore takes more, as a program waiting on the API would, rather than
/// polling on a timer (which made the baseline depend on scheduling).
fn wait_send_ready(t: &mut ToxTransport, peer: toxtun_proto::PeerId) {
    let waker = Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match t.poll_event(&mut cx) {
            Poll::Ready(Some(TransportEvent::SendReady(p))) if p == peer => return,
            Poll::Ready(Some(_)) => {}
            Poll::Ready(None) => panic!("the transport stopped"),
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(5)),
        }
    }
}

fn spawn_role(role: &str, args: &[&str], stock: bool) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    if stock {
        // c-toxcore as it ships: libsodium's per-packet mlock (see crypto_buffers.rs).
        cmd.env("TOXTUN_TOXCORE_MLOCK", "1");
    }
    cmd.env("TOXTUN_BENCH_ROLE", role)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a bench role")
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn raw(boot: &str, mb: u64, lossy: bool, stock: bool) -> Progress {
    let kind = if lossy { "lossy" } else { "lossless" };
    let mut rx = Killed(spawn_role(
        "raw-recv",
        &[boot, &mb.to_string(), kind],
        stock,
    ));
    let mut lines = BufReader::new(rx.0.stdout.take().unwrap()).lines();
    let id = lines.next().unwrap().unwrap();
    let tx = Killed(spawn_role(
        "raw-send",
        &[boot, &id, &mb.to_string(), kind],
        stock,
    ));
    let mut p = Progress::new();
    let mut at_first: Option<(f64, u64)> = None;
    for line in lines {
        let line = line.unwrap();
        if line == "done" {
            break;
        }
        if let Some(cpu) = line.strip_prefix("cpu ") {
            // The sender is still alive (it lingers 5 s): read its CPU time now.
            let end = cpu.parse::<f64>().unwrap() + cpu_secs(tx.0.id());
            let (start, bytes) = at_first.unwrap_or((0.0, 0));
            p.cpu = end - start;
            p.cpu_bytes = p.marks.last().map_or(0, |m| m.1) - bytes;
            continue;
        }
        let (us, bytes) = line.split_once(' ').unwrap();
        let bytes: u64 = bytes.parse().unwrap();
        if at_first.is_none() {
            at_first = Some((cpu_secs(rx.0.id()) + cpu_secs(tx.0.id()), bytes));
        }
        p.marks
            .push((Duration::from_micros(us.parse().unwrap()), bytes));
    }
    p
}

// ----- the tunnel: toxtun serve and toxtun forward processes --------------------------------

/// The target: first byte 'D' + 8-byte size: sends that many bytes; 'U': reads to the end,
/// answers the count; 'E': echo.
fn target() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    // One thread's event loop serves every connection (a thread each cost the 100
    // connections' step about half a core in wake-ups).
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let _ = s.set_nodelay(true);
                    let mut kind = [0u8; 1];
                    if s.read_exact(&mut kind).await.is_err() {
                        return;
                    }
                    match kind[0] {
                        b'D' => {
                            let mut n = [0u8; 8];
                            if s.read_exact(&mut n).await.is_err() {
                                return;
                            }
                            let mut left = u64::from_le_bytes(n);
                            let buf = vec![0x33u8; 256 * 1024];
                            while left > 0 {
                                let k = left.min(buf.len() as u64) as usize;
                                if s.write_all(&buf[..k]).await.is_err() {
                                    return;
                                }
                                left -= k as u64;
                            }
                        }
                        b'U' => {
                            let mut buf = vec![0u8; 256 * 1024];
                            let mut n = 0u64;
                            loop {
                                match s.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(k) => n += k as u64,
                                }
                            }
                            let _ = s.write_all(&n.to_le_bytes()).await;
                        }
                        _ => {
                            let mut buf = [0u8; 64];
                            while let Ok(k) = s.read(&mut buf).await {
                                if k == 0 || s.write_all(&buf[..k]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
    });
    port
}

fn toxtun(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_toxtun"));
    c.arg("--data-dir").arg(dir);
    c
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("toxtun-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// CPU seconds a process used so far (user + system).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Connects through the forwarded port, retrying while the tunnel comes up.
/// A local port nothing listens on (bound, read, released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How a bench client is admitted by the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// It proves the shared secret.
    Secret,
    /// Its key is on the server's allowlist.
    Key,
}

/// `toxtun forward` from `local` to the target's `port` through the server, with `extra`
/// flags; stderr discarded.
fn forward_cmd(
    dir: &Path,
    local: u16,
    port: u16,
    boot: &str,
    server_id: &str,
    auth: Auth,
    extra: &[&str],
) -> Command {
    let mut c = toxtun(dir);
    c.args(["--json", "forward"])
        .args(extra)
        .arg("-L")
        .arg(format!("127.0.0.1:{local}:127.0.0.1:{port}"));
    if auth == Auth::Secret {
        c.args(["--secret", "bench secret!"]);
    }
    c.args(["--lan-discovery", "false"])
        .args(["--bootstrap", boot, server_id])
        .stderr(Stdio::null());
    c
}

/// Asks the tunnel listening on `local` for one byte every 50 ms until one comes back (the
/// listener is up at once; the stream waits for the session). Whether it did in `tries`.
fn one_byte_through(local: u16, tries: usize) -> bool {
    for _ in 0..tries {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", local)) {
            s.write_all(b"D").unwrap();
            s.write_all(&1u64.to_le_bytes()).unwrap();
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("forward listens");
    s.set_nodelay(true).unwrap();
    s
}

fn download(port: u16, bytes: u64) -> Progress {
    let mut s = connect(port);
    s.write_all(b"D").unwrap();
    s.write_all(&bytes.to_le_bytes()).unwrap();
    let mut p = Progress::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    while got < bytes {
        let k = s.read(&mut buf).unwrap();
        assert!(k > 0, "the download ended early at {got}");
        got += k as u64;
        p.add(got);
    }
    p.marks.push((p.start.elapsed(), got));
    p
}

/// A 1 GiB-style download whose reader is slow for its first `slow` bytes (64 KiB every
/// 10 ms, about 6.5 MB/s), then reads at full speed.
fn slow_then_fast_download(port: u16, bytes: u64, slow: u64) -> Duration {
    let start = now();
    let mut s = connect(port);
    s.write_all(b"D").unwrap();
    s.write_all(&bytes.to_le_bytes()).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < bytes {
        let k = s.read(&mut buf).unwrap();
        assert!(k > 0, "the download ended early at {got}");
        got += k as u64;
        if got < slow {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    start.elapsed()
}

fn upload(port: u16, bytes: u64) -> Progress {
    let mut s = connect(port);
    s.write_all(b"U").unwrap();
    let buf = vec![0x44u8; 64 * 1024];
    let mut p = Progress::new();
    let mut sent = 0;
    while sent < bytes {
        let k = (bytes - sent).min(buf.len() as u64) as usize;
        s.write_all(&buf[..k]).unwrap();
        sent += k as u64;
        // Bytes accepted by the tunnel's local side: within a window of those that arrived.
        p.add(sent);
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut n = [0u8; 8];
    s.read_exact(&mut n).unwrap();
    assert_eq!(u64::from_le_bytes(n), bytes, "every byte arrived");
    p.marks.push((p.start.elapsed(), bytes));
    p
}

fn round_trips(port: u16, n: usize) -> (Duration, Duration) {
    let mut s = connect(port);
    s.write_all(b"E").unwrap();
    let mut times = Vec::with_capacity(n);
    let mut b = [0u8; 1];
    for _ in 0..n {
        let t = now();
        s.write_all(b"x").unwrap();
        s.read_exact(&mut b).unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    (times[n / 2], times[n * 99 / 100])
}

/// `n` downloads of `each` bytes at once: (aggregate MB/s, slowest/fastest throughput).
/// What `n` downloads at once did.
struct Concurrent {
    /// Bytes over the whole run, from before the first connect to the last byte, in MB/s.
    aggregate: f64,
    /// MB/s over the last 40% of all the bytes, as a single download's plateau is read.
    plateau: f64,
    /// The fastest connection's rate over the slowest's.
    spread: f64,
}

/// `n` downloads of `each` bytes at once.
fn concurrent(port: u16, n: usize, each: u64) -> Concurrent {
    // All readers on one thread's event loop: 100 reader threads spent about half a core
    // of this 2-core machine on their own wake-ups, CPU the tunnel then lacked.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let start = now();
        // Bytes of all the connections together, over time.
        let all = std::sync::Arc::new(std::sync::Mutex::new((Progress::new(), 0u64)));
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let all = all.clone();
                tokio::spawn(async move {
                    let t = now();
                    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .unwrap();
                    s.write_all(b"D").await.unwrap();
                    s.write_all(&each.to_le_bytes()).await.unwrap();
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut got = 0u64;
                    while got < each {
                        let k = s.read(&mut buf).await.unwrap();
                        assert!(k > 0, "a connection ended early at {got}");
                        got += k as u64;
                        let mut a = all.lock().unwrap();
                        a.1 += k as u64;
                        let total = a.1;
                        a.0.add(total);
                    }
                    each as f64 / 1e6 / t.elapsed().as_secs_f64()
                })
            })
            .collect();
        let mut rates = Vec::new();
        for t in tasks {
            rates.push(t.await.expect("every connection succeeds"));
        }
        let aggregate = (n as u64 * each) as f64 / 1e6 / start.elapsed().as_secs_f64();
        let (lo, hi) = rates
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        let mut all = all.lock().unwrap();
        let (elapsed, total) = (all.0.start.elapsed(), all.1);
        all.0.marks.push((elapsed, total));
        Concurrent {
            aggregate,
            plateau: all.0.plateau(),
            spread: hi / lo,
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match std::env::var("TOXTUN_BENCH_ROLE").as_deref() {
        Ok("raw-recv") => {
            return raw_receiver(&args[0], args[1].parse().unwrap(), args[2] == "lossy")
        }
        Ok("raw-send") => {
            return raw_sender(
                &args[0],
                &args[1],
                args[2].parse().unwrap(),
                args[3] == "lossy",
            )
        }
        _ => {}
    }
    if args.iter().any(|a| a == "--list") {
        return; // cargo bench --list
    }
    let mb = total_mb();
    // A bootstrap node per phase: in a network of a few nodes, the raw phase's processes,
    // once gone, would fill the DHT with dead nodes that c-toxcore keeps trying for a while
    // (the tunnel's friend then took minutes to come online).
    let bootstrap = || {
        let mut opts = ToxOptions::loopback();
        opts.tcp_port = 0;
        let node = ToxTransport::start(ToxConfig::new(opts, vec![])).expect("bootstrap node");
        let line = node
            .as_bootstrap_node("127.0.0.1")
            .expect("UDP bound")
            .to_string();
        (node, line)
    };

    println!("raw c-toxcore, two processes, {mb} MiB of lossless packets one way…");
    let (raw_boot, boot) = bootstrap();
    let raw_lossless = raw(&boot, mb, false, false);
    drop(raw_boot);
    println!("raw c-toxcore, two processes, {mb} MiB of lossy packets one way…");
    let (raw_boot, boot) = bootstrap();
    let raw_lossy = raw(&boot, mb, true, false);
    drop(raw_boot);
    println!(
        "raw c-toxcore as it ships (its per-packet mlock kept), {mb} MiB of lossless packets…"
    );
    let (raw_boot, boot) = bootstrap();
    let raw_stock = raw(&boot, mb, false, true).plateau();
    drop(raw_boot);
    let raw = raw_lossless;
    if std::env::var_os("TOXTUN_BENCH_RAW_ONLY").is_some() {
        println!(
            "raw lossless plateau {:.1} MB/s (as it ships: {raw_stock:.1}), 50 MB in {:.2} s; \
             raw lossy {:.1} MB/s",
            raw.plateau(),
            raw.time_to(COLD_MB * 1_000_000).as_secs_f64(),
            raw_lossy.plateau()
        );
        return;
    }
    let (_boot_node, boot) = bootstrap();
    let raw_cold = raw.time_to(COLD_MB * 1_000_000);
    let raw_plateau = raw.plateau();

    println!("toxtun serve + toxtun forward…");
    let port = target();
    let (sdir, cdir, adir) = (tmp("serve"), tmp("forward"), tmp("allowlisted"));
    // A second client admitted by its key rather than the secret: the server makes it a
    // friend at start, so its link comes up without its friend request.
    let key = toxtun(&adir).args(["id", "--client"]).output().unwrap();
    let key = String::from_utf8_lossy(&key.stdout).trim().to_string();
    let conf = sdir.join("server.toml");
    std::fs::write(
        &conf,
        format!(
            "[secret]\nvalue = \"bench secret!\"\nallow = [\"127.0.0.1:{port}\"]\n\
             [[client]]\nkey = \"{key}\"\nallow = [\"127.0.0.1:{port}\"]\n\
             [network]\nbootstrap = [\"{boot}\"]\nlan_discovery = false\n"
        ),
    )
    .unwrap();
    let id = toxtun(&sdir).args(["id", "--no-qr"]).output().unwrap();
    let server_id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    let mut serve = Killed(
        toxtun(&sdir)
            .args(["--json", "serve", "--config"])
            .arg(&conf)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait until the server is on the Tox network, as a server that has been running is.
    let mut out = BufReader::new(serve.0.stdout.take().unwrap()).lines();
    for line in out.by_ref() {
        if line.unwrap().contains("tox_connected") {
            break;
        }
    }
    std::thread::spawn(move || for _ in out {});
    // First the client the server allowlists by key (made a friend at the server's start),
    // kept running: in a network of three nodes, a client gone leaves a dead DHT node that
    // c-toxcore keeps trying, which would slow every start-up measured after it.
    let (allowlisted, _allowlisted_forward) =
        start_to_first_byte(&adir, &boot, &server_id, port, Auth::Key);
    let local = free_port();
    let start = now();
    let mut forward = Killed(
        forward_cmd(&cdir, local, port, &boot, &server_id, Auth::Secret, &[])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Where the start-up time goes: the client's own events, timed from its start.
    let (steps_tx, steps_rx) = std::sync::mpsc::channel();
    let fout = BufReader::new(forward.0.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in fout.lines().map_while(Result::ok) {
            for (key, name) in [
                ("tox_connected", "Tox network joined"),
                ("peer_online", "server online"),
                ("session_up", "session up"),
            ] {
                if line.contains(key) {
                    let _ = steps_tx.send((name, start.elapsed()));
                }
            }
        }
    });
    let (spid, fpid) = (serve.0.id(), forward.0.id());
    assert!(one_byte_through(local, 200), "the tunnel came up");
    let first_byte = start.elapsed();

    let me = std::process::id();
    let cpu0 = cpu_secs(spid) + cpu_secs(fpid);
    let (bench0, wall0) = (cpu_secs(me), now());
    let down = download(local, mb << 20);
    let cpu_down = cpu_secs(spid) + cpu_secs(fpid) - cpu0;
    // Cores used by the bench's own TCP ends (target and reader) during the download.
    let bench_down = (cpu_secs(me) - bench0) / wall0.elapsed().as_secs_f64();
    let up = upload(local, mb << 20);
    let (rtt_median, rtt_p99) = round_trips(local, 1000);
    let (c0, b0, w0) = ((cpu_secs(spid), cpu_secs(fpid)), cpu_secs(me), now());
    let many = concurrent(local, 100, 4 << 20);
    let wall = w0.elapsed().as_secs_f64();
    let cores_100 = (
        (cpu_secs(spid) - c0.0) / wall,
        (cpu_secs(fpid) - c0.1) / wall,
        (cpu_secs(me) - b0) / wall,
    );
    let rss_before_gib = (peak_rss_mib(spid), peak_rss_mib(fpid));
    let gib_took = slow_then_fast_download(local, 1 << 30, 64 << 20);

    // The same server, a second client that does not offer the fast path: c-toxcore's
    // lossless packets only, from a cold link.
    let ldir = tmp("forward-lossless");
    let local2 = free_port();
    let lossless_forward = Killed(
        forward_cmd(
            &ldir,
            local2,
            port,
            &boot,
            &server_id,
            Auth::Secret,
            &["--no-fast-path"],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    assert!(
        one_byte_through(local2, 400),
        "the lossless-only tunnel came up"
    );
    let lossless_cold = download(local2, COLD_MB * 1_000_000);
    drop(lossless_forward);
    let _ = std::fs::remove_dir_all(&ldir);
    // The idle figure is for one tunnel: the allowlisted client's session goes first.
    drop(_allowlisted_forward);
    let idle0 = (cpu_secs(spid), cpu_secs(fpid));
    std::thread::sleep(Duration::from_secs(10));
    let idle = (
        (cpu_secs(spid) - idle0.0) / 10.0 * 100.0,
        (cpu_secs(fpid) - idle0.1) / 10.0 * 100.0,
    );
    let rss = (peak_rss_mib(spid), peak_rss_mib(fpid));

    let down_secs = down.marks.last().unwrap().0.as_secs_f64();
    println!();
    println!("== toxtun over real Tox, loopback, figures beside c-toxcore's in the same run ==");
    println!(
        "steady state (last 40% of {mb} MiB): raw {raw_plateau:.1} MB/s; tunnel download \
         {:.1} MB/s ({:.2}x), upload {:.1} MB/s ({:.2}x)   (goal >= 0.90x each)",
        down.plateau(),
        down.plateau() / raw_plateau,
        up.plateau(),
        up.plateau() / raw_plateau
    );
    println!(
        "  raw above skips c-toxcore's per-packet mlock as toxtun does; c-toxcore as it ships \
         {raw_stock:.1} MB/s: tunnel download {:.2}x, upload {:.2}x that",
        down.plateau() / raw_stock,
        up.plateau() / raw_stock
    );
    let lossy_secs = raw_lossy.marks.last().map_or(0.0, |m| m.0.as_secs_f64());
    let lossy_bytes = raw_lossy.marks.last().map_or(0, |m| m.1);
    println!(
        "raw lossy packets: {:.1} MB/s delivered over {lossy_secs:.2} s ({:.1}% of {mb} MiB \
         arrived; lossless plateau {raw_plateau:.1} MB/s)",
        lossy_bytes as f64 / 1e6 / lossy_secs.max(1e-9),
        lossy_bytes as f64 * 100.0 / (mb << 20) as f64
    );
    println!(
        "cold {COLD_MB} MB: raw {:.2} s; tunnel download {:.2} s ({:.2}x faster), upload {:.2} s \
         ({:.2}x faster)   (goal >= 3x); tunnel with --no-fast-path {:.2} s ({:.2}x)",
        raw_cold.as_secs_f64(),
        down.time_to(COLD_MB * 1_000_000).as_secs_f64(),
        raw_cold.as_secs_f64() / down.time_to(COLD_MB * 1_000_000).as_secs_f64(),
        up.time_to(COLD_MB * 1_000_000).as_secs_f64(),
        raw_cold.as_secs_f64() / up.time_to(COLD_MB * 1_000_000).as_secs_f64(),
        lossless_cold.time_to(COLD_MB * 1_000_000).as_secs_f64(),
        raw_cold.as_secs_f64() / lossless_cold.time_to(COLD_MB * 1_000_000).as_secs_f64()
    );
    println!(
        "1-byte round trip through the tunnel: median {rtt_median:?}, p99 {rtt_p99:?}   \
         (goal: median < 3 ms, p99 < 10 ms)"
    );
    println!(
        "100 connections at once, 4 MiB each: all succeeded; aggregate {:.1} MB/s over the \
         whole run ({:.2}x the single connection's plateau; goal >= 1x), {:.1} MB/s over the \
         last 40% of the bytes, read as the single plateau is ({:.2}x); fastest/slowest \
         {:.2} (goal <= 2)",
        many.aggregate,
        many.aggregate / down.plateau(),
        many.plateau,
        many.plateau / down.plateau(),
        many.spread
    );
    println!(
        "cores in use: during the download, the bench's TCP ends {bench_down:.2}; during the \
         100 connections, serve {:.2} + forward {:.2} + the bench's 200 TCP ends {:.2} \
         (the machine has 2)",
        cores_100.0, cores_100.1, cores_100.2
    );
    let steps: Vec<String> = steps_rx
        .try_iter()
        .map(|(name, t)| format!("{name} {:.2} s", t.as_secs_f64()))
        .collect();
    println!(
        "client start -> first byte: {:.2} s   (goal < 5 s); on the way: {}",
        first_byte.as_secs_f64(),
        steps.join(", ")
    );
    println!(
        "  a client the server allowlists by key (a friend from the server's start): {:.2} s",
        allowlisted.as_secs_f64()
    );
    println!(
        "CPU: idle tunnel serve {:.2}% + forward {:.2}% of a core (goal < 1%); busy: {:.1} MB \
         per CPU-second (download, both processes; raw c-toxcore lossless {:.1})",
        idle.0,
        idle.1,
        (mb << 20) as f64 / 1e6 / cpu_down.max(1e-3),
        raw.cpu_bytes as f64 / 1e6 / raw.cpu.max(1e-3)
    );
    println!(
        "peak RSS: serve {:.1} MiB, forward {:.1} MiB ({mb} MiB each way; download took {down_secs:.1} s)",
        rss.0, rss.1
    );
    println!(
        "1 GiB download, the reader slow (6.5 MB/s) for its first 64 MiB: {:.1} s; peak RSS \
         before it serve {:.1} / forward {:.1} MiB, after it serve {:.1} / forward {:.1} MiB \
         (bound: about 1.1 MiB per stream beside the process, node/stream.rs)",
        gib_took.as_secs_f64(),
        rss_before_gib.0,
        rss_before_gib.1,
        rss.0,
        rss.1
    );
    drop(forward);
    drop(serve);
    for d in [&sdir, &cdir, &adir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Starts `toxtun forward` from `dir` (with the bench's secret, or as a client the server
/// allowlists by key) and times its start to the first byte through it; the process keeps
/// running until the returned guard drops.
fn start_to_first_byte(
    dir: &Path,
    boot: &str,
    server_id: &str,
    port: u16,
    auth: Auth,
) -> (Duration, Killed) {
    let local = free_port();
    let start = now();
    let f = Killed(
        forward_cmd(dir, local, port, boot, server_id, auth, &[])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(one_byte_through(local, 600), "the tunnel came up");
    (start.elapsed(), f)
}
