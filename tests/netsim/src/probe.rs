//! The traffic of the WAN bench and tests: a server and its clients, each running on a
//! thread that entered one of the emulated WAN's namespaces (a thread's network namespace
//! is its own, so no process is needed for them).
//!
//! The server answers, on one port:
//! * `GET /bytes/<n>[?cc=<name>] HTTP/1.1` — an HTTP response of `n` bytes of the probe
//!   pattern, for curl;
//! * `DOWN <n> <cc>\n` — `n` bytes of the pattern, sent with congestion control `cc`;
//! * `UP <n>\n` — reads `n` bytes and answers their SHA-256 in hex;
//! * `ECHO\n` — sends back whatever comes, for round trips.
//!
//! The pattern is a seeded byte stream: both ends compute its SHA-256 for any length, so
//! every transfer is checked byte for byte.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::netns::{Namespace, NetsimError};

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// The probe's byte stream: the same for every transfer, so that its hash is known.
#[derive(Debug, Clone)]
pub struct Pattern(crate::path::Rng);

impl Default for Pattern {
    fn default() -> Self {
        Pattern(crate::path::Rng::new(0x70_7A_7E_7E))
    }
}

impl Pattern {
    /// Fills `buf` with the next bytes (`buf.len()` a multiple of 8).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let x = self.0.next_u64().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    }
}

/// The SHA-256 of the first `n` bytes of the pattern, in hex.
pub fn pattern_sha256(n: u64) -> String {
    let mut p = Pattern::default();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut left = n;
    while left > 0 {
        p.fill(&mut buf);
        let k = left.min(buf.len() as u64) as usize;
        h.update(&buf[..k]);
        left -= k as u64;
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sets the socket's congestion control (TCP_CONGESTION): `bbr`, `cubic`, `reno`.
pub fn set_congestion_control(stream: &TcpStream, name: &str) -> std::io::Result<()> {
    // SAFETY: the descriptor is an open TCP socket; the option value is `name`'s bytes,
    // valid for reads of their length during the call.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Moves the calling thread into namespace `ns` (its sockets are made there from now on).
fn enter(ns: &str) -> Result<(), NetsimError> {
    let path = format!("/run/netns/{ns}");
    let f = std::fs::File::open(&path).map_err(|e| NetsimError::Io(format!("{path}: {e}")))?;
    // SAFETY: `f` is an open namespace file; setns only changes this thread's namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        return Err(NetsimError::Io(format!(
            "setns {ns}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Runs `f` on a new thread inside namespace `ns` and returns what it returned.
pub fn in_namespace<T: Send + 'static>(
    ns: &Namespace,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetsimError> {
    spawn_in(ns, f)?
        .join()
        .map_err(|_| NetsimError::Io("a probe thread panicked".into()))
}

/// Starts `f` on a new thread inside namespace `ns`.
pub fn spawn_in<T: Send + 'static>(
    ns: &Namespace,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, NetsimError> {
    let name = ns.name().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(format!("probe-{name}"))
        .spawn(move || {
            let entered = enter(&name);
            let ok = entered.is_ok();
            let _ = tx.send(entered);
            if !ok {
                // The caller gets the error; this thread must not run `f` in the wrong
                // namespace. Park until the process ends.
                loop {
                    std::thread::park();
                }
            }
            f()
        })
        .map_err(|e| NetsimError::Io(e.to_string()))?;
    rx.recv()
        .map_err(|_| NetsimError::Io("probe thread died".into()))??;
    Ok(handle)
}

/// The probe server, listening in a namespace until dropped.
#[derive(Debug)]
pub struct ProbeServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProbeServer {
    /// Listens on `listen` inside `ns`.
    pub fn start(ns: &Namespace, listen: SocketAddr) -> Result<Self, NetsimError> {
        let listener = in_namespace(ns, move || TcpListener::bind(listen))?
            .map_err(|e| NetsimError::Io(format!("probe server {listen}: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| NetsimError::Io(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| NetsimError::Io(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        std::thread::spawn(move || {
                            let _ = serve_one(s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(ProbeServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens (inside its namespace).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ProbeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a kernel TCP sender's window and pacing were at one instant (`TCP_INFO`).
#[derive(Clone, Copy, Debug)]
pub struct SenderSample {
    /// When.
    pub at: Instant,
    /// The congestion window, bytes.
    pub window: u64,
    /// The pacing rate, bytes per second.
    pub pacing: u64,
}

/// Samples of the probe server's traced downloads (`DOWN n cc trace`), oldest first.
static SENDER_TRACE: Mutex<Vec<SenderSample>> = Mutex::new(Vec::new());

/// Bytes the probe server's latest upload (`UP`) received so far.
static UPLOAD_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Takes (and clears) what traced downloads sampled of their senders so far.
pub fn take_sender_trace() -> Vec<SenderSample> {
    std::mem::take(&mut *SENDER_TRACE.lock().expect("no panics while held"))
}

/// The socket's window and pacing rate now, from `TCP_INFO`.
fn sender_sample(s: &TcpStream) -> Option<SenderSample> {
    // SAFETY: an all-zero tcp_info is a valid value of this plain C struct.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the descriptor is an open TCP socket; `info` and `len` are valid for writes
    // of `len` bytes and live through the call.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| SenderSample {
        at: now(),
        window: u64::from(info.tcpi_snd_cwnd) * u64::from(info.tcpi_snd_mss),
        pacing: info.tcpi_pacing_rate,
    })
}

/// Sends `n` bytes of the pattern; `trace`: samples the socket's window every 50 ms.
fn send_pattern(s: &mut TcpStream, n: u64, trace: bool) -> std::io::Result<()> {
    let mut p = Pattern::default();
    let mut buf = vec![0u8; 1 << 16];
    let mut left = n;
    let mut sampled: Option<Instant> = None;
    while left > 0 {
        p.fill(&mut buf);
        let k = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..k])?;
        left -= k as u64;
        if trace && sampled.is_none_or(|t| now() - t >= Duration::from_millis(50)) {
            sampled = Some(now());
            if let Some(sample) = sender_sample(s) {
                SENDER_TRACE
                    .lock()
                    .expect("no panics while held")
                    .push(sample);
            }
        }
    }
    s.flush()
}

fn serve_one(s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut w = s;
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["GET", path, ..] => {
            // Headers up to the blank line.
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
                    break;
                }
            }
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            let n: Option<u64> = path.strip_prefix("/bytes/").and_then(|n| n.parse().ok());
            let Some(n) = n else {
                return w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            };
            if let Some(cc) = query.strip_prefix("cc=") {
                set_congestion_control(&w, cc)?;
            }
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
            )?;
            send_pattern(&mut w, n, false)
        }
        ["DOWN", n, cc, rest @ ..] => {
            let n: u64 = n.parse().unwrap_or(0);
            if *cc != "-" {
                set_congestion_control(&w, cc)?;
            }
            send_pattern(&mut w, n, rest == ["trace"])
        }
        ["UP", n] => {
            let n: u64 = n.parse().unwrap_or(0);
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut got = 0u64;
            // Bytes the BufReader already took come first.
            let early = reader.buffer().to_vec();
            reader.consume(early.len());
            h.update(&early);
            got += early.len() as u64;
            let mut r = reader.into_inner();
            UPLOAD_RECEIVED.store(got, Ordering::Relaxed);
            while got < n {
                let k = r.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
                got += k as u64;
                UPLOAD_RECEIVED.store(got, Ordering::Relaxed);
            }
            writeln!(w, "{} {got}", hex(&h.finalize()))
        }
        ["ECHO"] => {
            let early = reader.buffer().to_vec();
            reader.consume(early.len());
            w.write_all(&early)?;
            let mut r = reader.into_inner();
            let mut buf = vec![0u8; 4096];
            loop {
                let k = r.read(&mut buf)?;
                if k == 0 {
                    return Ok(());
                }
                w.write_all(&buf[..k])?;
            }
        }
        _ => Ok(()),
    }
}

/// A finished transfer, as its client saw it.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Bytes moved.
    pub bytes: u64,
    /// From the request to the last byte.
    pub elapsed: Duration,
    /// From the request to the first byte.
    pub first_byte: Duration,
    /// Every byte was the pattern's.
    pub intact: bool,
}

impl Transfer {
    /// Goodput, MB/s (10^6 bytes per second).
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Downloads `n` bytes from the probe server at `addr` (the server sends with congestion
/// control `cc`, or its default). `progress` sees the total after every read, with the
/// instant it arrived. Fails if the connection ends early, or moves nothing for 60 s.
pub fn download(
    addr: SocketAddr,
    n: u64,
    cc: Option<&str>,
    progress: impl FnMut(Instant, u64),
) -> std::io::Result<Transfer> {
    download_until_stalled(addr, n, cc, Duration::from_secs(60), progress)
}

/// [`download`], failing with `WouldBlock` once nothing arrived for `stall`.
pub fn download_until_stalled(
    addr: SocketAddr,
    n: u64,
    cc: Option<&str>,
    stall: Duration,
    progress: impl FnMut(Instant, u64),
) -> std::io::Result<Transfer> {
    let request = format!("DOWN {n} {}", cc.unwrap_or("-"));
    download_request(addr, &request, n, stall, progress)
}

/// [`download_until_stalled`], the probe server sampling its socket's window and pacing
/// rate as it sends (see [`take_sender_trace`]).
pub fn download_traced(
    addr: SocketAddr,
    n: u64,
    cc: Option<&str>,
    stall: Duration,
    progress: impl FnMut(Instant, u64),
) -> std::io::Result<Transfer> {
    let request = format!("DOWN {n} {} trace", cc.unwrap_or("-"));
    download_request(addr, &request, n, stall, progress)
}

fn download_request(
    addr: SocketAddr,
    request: &str,
    n: u64,
    stall: Duration,
    mut progress: impl FnMut(Instant, u64),
) -> std::io::Result<Transfer> {
    let start = now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30))?;
    s.set_read_timeout(Some(stall))?;
    writeln!(s, "{request}")?;
    let mut expected = Pattern::default();
    let mut want = vec![0u8; 1 << 16];
    let mut want_len = 0usize; // bytes of `want` not yet compared
    let mut want_at = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let (mut got, mut intact, mut first) = (0u64, true, None);
    while got < n {
        let k = s.read(&mut buf)?;
        if k == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the download ended after {got} of {n} bytes"),
            ));
        }
        let t = now();
        first.get_or_insert(t - start);
        let mut off = 0;
        while off < k {
            if want_at == want_len {
                expected.fill(&mut want);
                want_len = want.len();
                want_at = 0;
            }
            let m = (k - off).min(want_len - want_at);
            intact &= buf[off..off + m] == want[want_at..want_at + m];
            off += m;
            want_at += m;
        }
        got += k as u64;
        progress(t, got);
    }
    Ok(Transfer {
        bytes: got,
        elapsed: now() - start,
        first_byte: first.unwrap_or_default(),
        intact,
    })
}

/// Downloads from the probe server at `addr` until `stop` is set (or the connection ends),
/// for load beside a measurement; returns the bytes read.
pub fn download_until_stopped(
    addr: SocketAddr,
    cc: Option<&str>,
    stop: &AtomicBool,
) -> std::io::Result<u64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    writeln!(s, "DOWN {} {}", u64::MAX / 2, cc.unwrap_or("-"))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => got += k as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Uploads the pattern to the probe server at `addr` (in this process) for `length`: the
/// bytes the server received by then, over `length` (a timed measurement for a carrier too
/// slow to finish a fixed size; `intact` is not checked). The connection is dropped after.
pub fn upload_for(addr: SocketAddr, length: Duration) -> std::io::Result<Transfer> {
    let start = now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30))?;
    writeln!(s, "UP {}", u64::MAX / 2)?;
    let mut p = Pattern::default();
    let mut buf = vec![0u8; 1 << 14];
    p.fill(&mut buf);
    let mut at = 0;
    while now() - start < length {
        let left = length
            .saturating_sub(now() - start)
            .max(Duration::from_millis(1));
        s.set_write_timeout(Some(left))?;
        match s.write(&buf[at..]) {
            Ok(k) => {
                at += k;
                if at == buf.len() {
                    p.fill(&mut buf);
                    at = 0;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Transfer {
        bytes: UPLOAD_RECEIVED.load(Ordering::Relaxed),
        elapsed: length,
        first_byte: Duration::ZERO,
        intact: true,
    })
}

/// Uploads `n` bytes of the pattern to the probe server at `addr`, this socket sending with
/// congestion control `cc` (or the default); the server's hash decides `intact`.
pub fn upload(addr: SocketAddr, n: u64, cc: Option<&str>) -> std::io::Result<Transfer> {
    let start = now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30))?;
    s.set_read_timeout(Some(Duration::from_secs(300)))?;
    s.set_write_timeout(Some(Duration::from_secs(60)))?;
    if let Some(cc) = cc {
        set_congestion_control(&s, cc)?;
    }
    writeln!(s, "UP {n}")?;
    send_pattern(&mut s, n, false)?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    let elapsed = now() - start;
    let mut words = line.split_whitespace();
    let (hash, got) = (
        words.next().unwrap_or(""),
        words.next().and_then(|g| g.parse().ok()).unwrap_or(0),
    );
    Ok(Transfer {
        bytes: got,
        elapsed,
        first_byte: Duration::ZERO,
        intact: got == n && hash == pattern_sha256(n),
    })
}

/// Round trips of `count` small messages (`size` bytes), one at a time, `gap` apart.
pub fn echo_round_trips(
    addr: SocketAddr,
    count: usize,
    size: usize,
    gap: Duration,
) -> std::io::Result<Vec<Duration>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30))?;
    s.set_nodelay(true)?;
    s.write_all(b"ECHO\n")?;
    let msg = vec![0x42u8; size];
    let mut back = vec![0u8; size];
    let mut rtts = Vec::with_capacity(count);
    for _ in 0..count {
        let t = now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        rtts.push(now() - t);
        std::thread::sleep(gap);
    }
    Ok(rtts)
}

/// The median and the 99th percentile of `samples`.
pub fn median_p99(samples: &[Duration]) -> (Duration, Duration) {
    let mut v = samples.to_vec();
    v.sort_unstable();
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_hash_matches_what_is_sent() {
        let mut p = Pattern::default();
        let mut buf = vec![0u8; 1 << 16];
        let mut h = Sha256::new();
        for _ in 0..3 {
            p.fill(&mut buf);
            h.update(&buf);
        }
        assert_eq!(hex(&h.finalize()), pattern_sha256(3 << 16));
        assert_ne!(pattern_sha256(10), pattern_sha256(11));
    }

    #[test]
    fn downloads_uploads_and_echoes_check_their_bytes_on_loopback() {
        // Loopback in this process's namespace: the protocol, without the emulator.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                std::thread::spawn(move || serve_one(s));
            }
        });
        let n = 3_000_001;
        let mut last = 0;
        let d = download(addr, n, None, |_, got| last = got).unwrap();
        assert!(d.intact && d.bytes == n && last == n, "{d:?}");
        let u = upload(addr, n, Some("cubic")).unwrap();
        assert!(u.intact, "{u:?}");
        let rtts = echo_round_trips(addr, 5, 64, Duration::ZERO).unwrap();
        assert_eq!(rtts.len(), 5);
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /bytes/1000?cc=reno HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let text = String::from_utf8_lossy(&all[..60]);
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        let body = &all[all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        assert_eq!(body.len(), 1000);
        assert_eq!(hex(&Sha256::digest(body)), pattern_sha256(1000));
    }
}
