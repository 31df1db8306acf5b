//! Time series of one download, for the WAN bench's plots: the goodput the receiver saw,
//! and the sender's congestion window and pacing rate. Kernel TCP's sender is the probe
//! server, sampled through `TCP_INFO` ([`crate::probe::take_sender_trace`]); toxtun's is
//! the `toxtun serve` process, sampled through its Prometheus metrics ([`MetricsSampler`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::{Namespace, NetsimError};
use crate::probe::{self, SenderSample};

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// One carrier's download over time: (seconds since the request, value) points.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// The carrier's name.
    pub name: String,
    /// Goodput, MB/s, per [`BUCKET`].
    pub goodput: Vec<(f64, f64)>,
    /// The sender's congestion window, KB.
    pub window: Vec<(f64, f64)>,
    /// The sender's pacing rate, MB/s.
    pub pacing: Vec<(f64, f64)>,
}

/// The goodput series' resolution.
pub const BUCKET: Duration = Duration::from_millis(250);

impl Series {
    /// A series from a download that started at `start`: the receiver's progress marks
    /// (instant, total bytes) and the sender's samples.
    pub fn new(
        name: &str,
        start: Instant,
        marks: &[(Instant, u64)],
        sender: &[SenderSample],
    ) -> Self {
        let secs = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
        let mut goodput = Vec::new();
        let (mut edge, mut before) = (start + BUCKET, 0u64);
        let mut last = 0u64;
        for &(t, got) in marks {
            while t >= edge {
                goodput.push((
                    secs(edge),
                    (last - before) as f64 / 1e6 / BUCKET.as_secs_f64(),
                ));
                before = last;
                edge += BUCKET;
            }
            last = got;
        }
        Series {
            name: name.into(),
            goodput,
            window: sender
                .iter()
                .map(|s| (secs(s.at), s.window as f64 / 1e3))
                .collect(),
            pacing: sender
                .iter()
                .map(|s| (secs(s.at), s.pacing as f64 / 1e6))
                .collect(),
        }
    }
}

/// The series as CSV (`carrier,series,seconds,value`), for other tools to plot.
pub fn csv(series: &[Series]) -> String {
    let mut out = String::from("carrier,series,seconds,value\n");
    for s in series {
        for (name, points) in [
            ("goodput_mb_s", &s.goodput),
            ("window_kb", &s.window),
            ("pacing_mb_s", &s.pacing),
        ] {
            for (t, v) in points {
                out += &format!("{},{name},{t:.3},{v:.3}\n", s.name);
            }
        }
    }
    out
}

/// Polls a `toxtun serve` process's metrics (inside its namespace) every 100 ms, for its
/// first peer's window and pacing rate, until finished.
#[derive(Debug)]
pub struct MetricsSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<SenderSample>>,
}

impl MetricsSampler {
    /// Starts polling `http://<addr>/metrics` from inside `ns`.
    pub fn start(ns: &Namespace, addr: SocketAddr) -> Result<Self, NetsimError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = probe::spawn_in(ns, move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Some(s) = scrape(addr) {
                    samples.push(s);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        })?;
        Ok(MetricsSampler { stop, thread })
    }

    /// Stops polling; what it sampled.
    pub fn finish(self) -> Vec<SenderSample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// One scrape: the window and pacing rate of the first peer with both.
fn scrape(addr: SocketAddr) -> Option<SenderSample> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some(SenderSample {
        at: now(),
        window: value("toxtun_peer_congestion_window_bytes")? as u64,
        pacing: value("toxtun_peer_pacing_rate_bytes_per_second")? as u64,
    })
}
