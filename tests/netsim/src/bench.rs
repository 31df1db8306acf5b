//! The WAN bench: for each path profile, toxtun beside kernel TCP (BBR and CUBIC, set per
//! socket) over the very same emulated path in the same run. It measures what a person
//! would see: goodput of a download and an upload (SHA-256 checked), the idle round trip,
//! the round trip of a small echo while a download runs, the time from an outage's end to
//! the first new byte, and the path toxtun used (direct UDP or TCP relay). Every transfer
//! that is cut short or stalls is counted, never hidden.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::NetsimError;
use crate::probe::{self, ProbeServer, Transfer};
use crate::profiles::Profile;
use crate::trace::{MetricsSampler, Series};
use crate::tunnel::{Tunnel, TunnelOptions};
use crate::wan::{Side, Wan};

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// The probe server's port on B.
const PROBE_PORT: u16 = 9000;
/// The tunnel's local port on A.
const LOCAL_PORT: u16 = 9100;
/// A transfer that moves nothing for this long is stuck.
const STALL: Duration = Duration::from_secs(60);
/// The toxtun server's metrics port on B's loopback (what the plots sample).
const METRICS_PORT: u16 = 9184;
/// How long toxtun and a kernel CUBIC flow share the bottleneck, downloading at once.
const COEXIST: Duration = Duration::from_secs(20);
/// How long each timed transfer of the lossless tunnel lasts (at its rate on a lossy path,
/// 50 MB would take an hour).
const LOSSLESS_TIME: Duration = Duration::from_secs(20);

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The `toxtun` binary.
    pub toxtun: PathBuf,
    /// Bytes of each download and upload.
    pub bytes: u64,
    /// Transfers through the tunnel each way, per profile.
    pub repeat: usize,
    /// Kernel TCP baselines too.
    pub kernel: bool,
    /// The lossless tunnel (`--no-fast-path`) too.
    pub lossless: bool,
    /// Where logs go (one folder per profile).
    pub run_dir: PathBuf,
}

/// How one kind of transfer went, over its repeats.
#[derive(Clone, Debug, Default)]
pub struct Goodput {
    /// MB/s of each transfer that completed intact.
    pub rates: Vec<f64>,
    /// Transfers that ended early or arrived damaged.
    pub cut: usize,
    /// Transfers that stopped moving.
    pub stuck: usize,
    /// What went wrong, for the log.
    pub failures: Vec<String>,
}

impl Goodput {
    fn record(&mut self, r: std::io::Result<Transfer>) {
        match r {
            Ok(t) if t.intact => self.rates.push(t.mb_per_s()),
            Ok(t) => {
                self.cut += 1;
                self.failures
                    .push(format!("{} bytes, damaged or short", t.bytes));
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                self.stuck += 1;
                self.failures.push(format!("stuck: {e}"));
            }
            Err(e) => {
                self.cut += 1;
                self.failures.push(e.to_string());
            }
        }
    }

    /// The median rate, if any transfer completed.
    pub fn median(&self) -> Option<f64> {
        let mut v = self.rates.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }

    fn show(&self) -> String {
        let mut s = match self.median() {
            Some(m) if self.rates.len() > 1 => {
                let lo = self.rates.iter().copied().fold(f64::MAX, f64::min);
                let hi = self.rates.iter().copied().fold(0.0, f64::max);
                format!("{m:.2} MB/s ({lo:.2}–{hi:.2}, {} runs)", self.rates.len())
            }
            Some(m) => format!("{m:.2} MB/s"),
            None => "—".into(),
        };
        if self.cut + self.stuck > 0 {
            s += &format!(" [{} cut, {} stuck]", self.cut, self.stuck);
        }
        s
    }
}

/// Recovery from one outage.
#[derive(Clone, Debug)]
pub struct Recovery {
    /// The outage's length.
    pub outage: Duration,
    /// When the path returned.
    pub back: Instant,
    /// From the path's return to the first new byte (`None`: none came).
    pub first_byte: Option<Duration>,
    /// The transfer completed intact.
    pub completed: bool,
}

/// One way of carrying bytes over the profile's path: kernel TCP with a congestion
/// control, or the tunnel.
#[derive(Clone, Debug, Default)]
pub struct Carrier {
    /// Its name in the table.
    pub name: String,
    /// The idle round trip of a 64-byte echo (median).
    pub idle_rtt: Option<Duration>,
    /// The round trip of a 64-byte echo while a download runs (median, p99).
    pub loaded_rtt: Option<(Duration, Duration)>,
    /// Downloads (B to A).
    pub down: Goodput,
    /// Uploads (A to B).
    pub up: Goodput,
    /// Outages cut into downloads.
    pub recoveries: Vec<Recovery>,
    /// toxtun only: the path used (direct UDP or TCP relay), and when it became direct.
    pub path: Option<String>,
    /// toxtun only: what the client reported around each outage.
    pub outage_events: Vec<Vec<String>>,
    /// The first download over time, for the plot.
    pub trace: Option<Series>,
    /// toxtun and kernel BBR: MB/s of it and of one kernel CUBIC flow downloading at once.
    pub coexist: Option<(f64, f64)>,
}

/// A profile's results.
#[derive(Clone, Debug)]
pub struct ProfileReport {
    /// The profile.
    pub profile: Profile,
    /// Kernel TCP BBR, kernel TCP CUBIC, toxtun.
    pub carriers: Vec<Carrier>,
}

fn echo(addr: SocketAddr, count: usize) -> std::io::Result<Vec<Duration>> {
    probe::echo_round_trips(addr, count, 64, Duration::from_millis(20))
}

/// Runs one download of `bytes` from `addr` (on A), optionally cutting an outage into it
/// one second in; returns the transfer and, for an outage, the recovery.
fn download_with_outage(
    wan: &Wan,
    addr: SocketAddr,
    bytes: u64,
    cc: Option<&'static str>,
    outage: Option<Duration>,
) -> Result<(std::io::Result<Transfer>, Option<Recovery>), NetsimError> {
    let marks: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let start = now();
    let back = outage.map(|o| {
        wan.schedule_outage(start + Duration::from_secs(1), o);
        start + Duration::from_secs(1) + o
    });
    let sink = Arc::clone(&marks);
    let r = probe::in_namespace(wan.namespace(Side::A), move || {
        probe::download_until_stalled(addr, bytes, cc, STALL, |t, got| {
            sink.lock().expect("no panics while held").push((t, got))
        })
    })?;
    let recovery = outage.zip(back).map(|(o, back)| {
        let marks = marks.lock().expect("no panics while held");
        let before = marks
            .iter()
            .rev()
            .find(|(t, _)| *t < back)
            .map_or(0, |m| m.1);
        let first = marks
            .iter()
            .find(|(t, got)| *t >= back && *got > before)
            .map(|(t, _)| *t - back);
        Recovery {
            outage: o,
            back,
            first_byte: first,
            completed: matches!(&r, Ok(t) if t.intact),
        }
    });
    Ok((r, recovery))
}

/// One download of `bytes` from `addr` (on A), traced for the plot: kernel TCP's sender
/// through `TCP_INFO` (congestion control `cc`), or toxtun's through its server's metrics.
fn traced_download(
    wan: &Wan,
    name: &str,
    addr: SocketAddr,
    bytes: u64,
    cc: Option<&'static str>,
) -> Result<(std::io::Result<Transfer>, Series), NetsimError> {
    let metrics: SocketAddr = format!("127.0.0.1:{METRICS_PORT}")
        .parse()
        .expect("an address");
    let sampler = match cc {
        None => Some(MetricsSampler::start(wan.namespace(Side::B), metrics)?),
        Some(_) => None,
    };
    probe::take_sender_trace();
    let marks: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let sink = Arc::clone(&marks);
    let start = now();
    let r = probe::in_namespace(wan.namespace(Side::A), move || {
        let progress = |t, got| sink.lock().expect("no panics while held").push((t, got));
        match cc {
            Some(_) => probe::download_traced(addr, bytes, cc, STALL, progress),
            None => probe::download_until_stalled(addr, bytes, None, STALL, progress),
        }
    })?;
    let sender = sampler.map_or_else(probe::take_sender_trace, MetricsSampler::finish);
    let marks = marks.lock().expect("no panics while held");
    Ok((r, Series::new(name, start, &marks, &sender)))
}

/// Downloads from each of `addrs` at once (kernel TCP `cc` for each, or the default) for
/// `length`: the MB/s each got.
fn downloads_at_once(
    wan: &Wan,
    addrs: &[(SocketAddr, Option<&'static str>)],
    length: Duration,
) -> Result<Vec<f64>, NetsimError> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut running = Vec::new();
    for &(addr, cc) in addrs {
        let flag = Arc::clone(&stop);
        running.push(probe::spawn_in(wan.namespace(Side::A), move || {
            probe::download_until_stopped(addr, cc, &flag)
        })?);
    }
    std::thread::sleep(length);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(running
        .into_iter()
        .map(|h| {
            let got = h.join().ok().and_then(Result::ok).unwrap_or(0);
            got as f64 / 1e6 / length.as_secs_f64()
        })
        .collect())
}

/// toxtun (its tunnel's end `tunnel` on A) and one kernel CUBIC flow downloading at once
/// over the same bottleneck: the MB/s of each.
/// (`tunnel` on A, or kernel TCP with congestion control `cc`.)
fn coexist(
    wan: &Wan,
    tunnel: SocketAddr,
    cc: Option<&'static str>,
) -> Result<(f64, f64), NetsimError> {
    let direct: SocketAddr = format!("{}:{PROBE_PORT}", Wan::addr(Side::B))
        .parse()
        .expect("an address");
    let got = downloads_at_once(wan, &[(tunnel, cc), (direct, Some("cubic"))], COEXIST)?;
    Ok((got[0], got[1]))
}

/// While a download from `bulk` runs, 64-byte echoes to `echo_addr`: their median and
/// p99 round trip.
fn loaded_rtt(
    wan: &Wan,
    bulk: SocketAddr,
    echo_addr: SocketAddr,
    cc: Option<&'static str>,
) -> Result<Option<(Duration, Duration)>, NetsimError> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let downloading = probe::spawn_in(wan.namespace(Side::A), move || {
        probe::download_until_stopped(bulk, cc, &flag)
    })?;
    std::thread::sleep(Duration::from_secs(3)); // past the start-up, into the bulk
    let rtts = probe::in_namespace(wan.namespace(Side::A), move || echo(echo_addr, 50))?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = downloading.join();
    Ok(rtts.ok().map(|r| probe::median_p99(&r)))
}

/// A download cut by an outage one second in must still be running then (30 MB last
/// about 3 s on the broadband path).
fn outage_bytes(opts: &BenchOptions) -> u64 {
    opts.bytes.max(30_000_000)
}

fn kernel(
    wan: &Wan,
    profile: &Profile,
    cc: &'static str,
    opts: &BenchOptions,
) -> Result<Carrier, NetsimError> {
    let addr: SocketAddr = format!("{}:{PROBE_PORT}", Wan::addr(Side::B))
        .parse()
        .expect("an address");
    let mut c = Carrier {
        name: format!("kernel TCP {cc}"),
        ..Carrier::default()
    };
    c.idle_rtt = probe::in_namespace(wan.namespace(Side::A), move || echo(addr, 20))?
        .ok()
        .map(|r| probe::median_p99(&r).0);
    let (r, trace) = traced_download(wan, &c.name, addr, opts.bytes, Some(cc))?;
    c.down.record(r);
    c.trace = Some(trace);
    let n = opts.bytes;
    c.up.record(probe::in_namespace(wan.namespace(Side::A), move || {
        probe::upload(addr, n, Some(cc))
    })?);
    c.loaded_rtt = loaded_rtt(wan, addr, addr, Some(cc))?;
    // Kernel BBR beside CUBIC: what the same share looks like for the kernel's BBR.
    if cc == "bbr" && profile.outages.is_empty() {
        c.coexist = Some(coexist(wan, addr, Some("bbr"))?);
    }
    for &o in &profile.outages {
        let (_, rec) = download_with_outage(wan, addr, outage_bytes(opts), Some(cc), Some(o))?;
        c.recoveries.extend(rec);
    }
    Ok(c)
}

fn tunnel(wan: &Wan, profile: &Profile, opts: &BenchOptions) -> Result<Carrier, NetsimError> {
    let dir = opts.run_dir.join(profile.name);
    let t = Tunnel::start(
        wan,
        &opts.toxtun,
        &TunnelOptions {
            target_port: PROBE_PORT,
            local_port: LOCAL_PORT,
            fast_path: true,
            dir: dir.clone(),
            metrics_port: Some(METRICS_PORT),
        },
    )?;
    let up_at = t.wait_session(Duration::from_secs(90))?;
    // Give c-toxcore a while to find the direct route (it searches the DHT for the peer's
    // address every 20 s after its first tries); a profile that blocks UDP never gets it.
    let direct_at = t.wait_direct(up_at + Duration::from_secs(45));
    let path = match (direct_at, t.direct()) {
        (Some(d), _) => format!(
            "direct UDP ({:.1} s after start; session at {:.1} s)",
            d.as_secs_f64(),
            up_at.as_secs_f64()
        ),
        (None, _) => format!(
            "TCP relay (session at {:.1} s; no direct route within 45 s)",
            up_at.as_secs_f64()
        ),
    };
    let addr = t.local();
    let mut c = Carrier {
        name: "toxtun".into(),
        path: Some(path),
        ..Carrier::default()
    };
    c.idle_rtt = probe::in_namespace(wan.namespace(Side::A), move || echo(addr, 20))?
        .ok()
        .map(|r| probe::median_p99(&r).0);
    for i in 0..opts.repeat {
        let r = if i == 0 {
            let (r, trace) = traced_download(wan, &c.name, addr, opts.bytes, None)?;
            c.trace = Some(trace);
            r
        } else {
            download_with_outage(wan, addr, opts.bytes, None, None)?.0
        };
        c.down.record(r);
        let n = opts.bytes;
        c.up.record(probe::in_namespace(wan.namespace(Side::A), move || {
            probe::upload(addr, n, None)
        })?);
    }
    c.loaded_rtt = loaded_rtt(wan, addr, addr, None)?;
    if profile.outages.is_empty() {
        c.coexist = Some(coexist(wan, addr, None)?);
    }
    tunnel_outages(wan, &t, profile, opts, &mut c)?;
    if t.direct() == Some(false) && direct_at.is_some() {
        c.path = Some(format!("{} then a TCP relay", c.path.unwrap_or_default()));
    }
    Ok(c)
}

/// The profile's outages, each cut into one download through tunnel `t`: its recovery,
/// and what each side reported around it.
fn tunnel_outages(
    wan: &Wan,
    t: &Tunnel,
    profile: &Profile,
    opts: &BenchOptions,
    c: &mut Carrier,
) -> Result<(), NetsimError> {
    for &o in &profile.outages {
        let (r, rec) = download_with_outage(wan, t.local(), outage_bytes(opts), None, Some(o))?;
        // Its bytes are checked, but its time is mostly the outage's: not a goodput.
        let mut whole = Goodput::default();
        whole.record(r);
        c.down.cut += whole.cut;
        c.down.stuck += whole.stuck;
        c.down.failures.extend(whole.failures);
        if let Some(rec) = rec {
            let start = rec.back - o - Duration::from_secs(1);
            let until = rec.back + rec.first_byte.unwrap_or(STALL) + Duration::from_secs(1);
            c.outage_events.push(vec![
                format!(
                    "client: {}",
                    t.events_between(Side::A, start, until, rec.back).join(", ")
                ),
                format!(
                    "server: {}",
                    t.events_between(Side::B, start, until, rec.back).join(", ")
                ),
            ]);
            c.recoveries.push(rec);
        }
    }
    Ok(())
}

/// The tunnel without its fast path (`--no-fast-path`: c-toxcore's lossless packets and
/// its congestion control, as tuntox carries bytes): timed transfers each way.
fn lossless(wan: &Wan, profile: &Profile, opts: &BenchOptions) -> Result<Carrier, NetsimError> {
    let t = Tunnel::start(
        wan,
        &opts.toxtun,
        &TunnelOptions {
            target_port: PROBE_PORT,
            local_port: LOCAL_PORT,
            fast_path: false,
            dir: opts.run_dir.join(profile.name).join("lossless"),
            metrics_port: None,
        },
    )?;
    let up_at = t.wait_session(Duration::from_secs(90))?;
    let _ = t.wait_direct(up_at + Duration::from_secs(45));
    let addr = t.local();
    let mut c = Carrier {
        name: "toxtun lossless".into(),
        ..Carrier::default()
    };
    c.idle_rtt = probe::in_namespace(wan.namespace(Side::A), move || echo(addr, 20))?
        .ok()
        .map(|r| probe::median_p99(&r).0);
    c.down.rates = downloads_at_once(wan, &[(addr, None)], LOSSLESS_TIME)?;
    c.up.record(probe::in_namespace(wan.namespace(Side::A), move || {
        probe::upload_for(addr, LOSSLESS_TIME)
    })?);
    Ok(c)
}

/// How long `n` fresh starts of the tunnel took to a session and to a direct UDP path
/// (`None`: still on the TCP relay after 60 s), each with fresh identities: how often
/// c-toxcore keeps a new link on the relay.
pub fn start_times(
    profile: &Profile,
    opts: &BenchOptions,
    n: usize,
) -> Result<Vec<(Duration, Option<Duration>)>, NetsimError> {
    let wan = Wan::start("s", profile.path.clone(), profile.path.clone(), 0x57A7)?;
    let mut times = Vec::new();
    for i in 0..n {
        let t = Tunnel::start(
            &wan,
            &opts.toxtun,
            &TunnelOptions {
                target_port: PROBE_PORT,
                local_port: LOCAL_PORT,
                fast_path: true,
                dir: opts.run_dir.join(format!("start-{i}")),
                metrics_port: None,
            },
        )?;
        let up = t.wait_session(Duration::from_secs(90))?;
        let direct = t.wait_direct(up + Duration::from_secs(60));
        println!(
            "  start {}: session {:.1} s, direct UDP {}",
            i + 1,
            up.as_secs_f64(),
            direct.map_or("not within 60 s".into(), |d| format!(
                "{:.1} s",
                d.as_secs_f64()
            ))
        );
        times.push((up, direct));
    }
    Ok(times)
}

/// Runs every measurement of `profile`; prints as it goes.
pub fn run_profile(profile: &Profile, opts: &BenchOptions) -> Result<ProfileReport, NetsimError> {
    let wan = Wan::start("b", profile.path.clone(), profile.path.clone(), 0x5EED)?;
    let listen: SocketAddr = format!("0.0.0.0:{PROBE_PORT}").parse().expect("an address");
    let _server = ProbeServer::start(wan.namespace(Side::B), listen)?;
    let mut carriers = Vec::new();
    if opts.kernel {
        for cc in ["bbr", "cubic"] {
            let c = kernel(&wan, profile, cc, opts)?;
            println!("  {}", line(&c));
            carriers.push(c);
        }
    }
    let c = tunnel(&wan, profile, opts)?;
    println!("  {}", line(&c));
    carriers.push(c);
    // Without UDP there is no fast path, and the outage profile's path is broadband's.
    if opts.lossless && !profile.path.block_udp && profile.outages.is_empty() {
        let c = lossless(&wan, profile, opts)?;
        println!("  {}", line(&c));
        carriers.push(c);
    }
    let traces: Vec<Series> = carriers.iter().filter_map(|c| c.trace.clone()).collect();
    let _ = std::fs::write(
        opts.run_dir.join(profile.name).join("trace.csv"),
        crate::trace::csv(&traces),
    );
    let svg = opts.run_dir.join(profile.name).join("plot.svg");
    let title = format!("{}: {}", profile.name, profile.about);
    match crate::plot::write_svg(&svg, &title, &traces) {
        Ok(()) => println!("  plot: {}", svg.display()),
        Err(e) => println!("  plot failed: {e}"),
    }
    Ok(ProfileReport {
        profile: profile.clone(),
        carriers,
    })
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("—".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
}

fn line(c: &Carrier) -> String {
    let mut s = format!(
        "{:<16} down {:<28} up {:<28} idle RTT {:<8} loaded RTT {}",
        c.name,
        c.down.show(),
        c.up.show(),
        ms(c.idle_rtt),
        c.loaded_rtt.map_or("—".into(), |(m, p)| format!(
            "{} (p99 {})",
            ms(Some(m)),
            ms(Some(p))
        ))
    );
    for r in &c.recoveries {
        s += &format!(
            "; {:.0} s outage: first new byte {} after the path returned{}",
            r.outage.as_secs_f64(),
            ms(r.first_byte),
            if r.completed { "" } else { ", NOT completed" }
        );
    }
    if let Some((t, k)) = c.coexist {
        s += &format!("; beside one CUBIC flow: {t:.2} MB/s vs its {k:.2}");
    }
    if let Some(p) = &c.path {
        s += &format!("; path: {p}");
    }
    for (r, ev) in c.recoveries.iter().zip(&c.outage_events) {
        s += &format!(
            "\n      {:.0} s outage, events from the path's return: {}",
            r.outage.as_secs_f64(),
            ev.join("; ")
        );
    }
    for f in c.down.failures.iter().chain(&c.up.failures) {
        s += &format!("\n      failure: {f}");
    }
    s
}

/// The results as a Markdown table (for BENCHMARKS.md), one row per profile and carrier.
pub fn markdown(reports: &[ProfileReport]) -> String {
    let mut s = String::from(
        "| profile | carrier | download | upload | idle RTT | RTT under load (p99) | after outage: first new byte | path |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        for c in &r.carriers {
            let rec = if c.recoveries.is_empty() {
                String::new()
            } else {
                c.recoveries
                    .iter()
                    .map(|x| {
                        format!(
                            "{:.0} s: {}{}",
                            x.outage.as_secs_f64(),
                            ms(x.first_byte),
                            if x.completed { "" } else { " (not completed)" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.profile.name,
                c.name,
                c.down.show(),
                c.up.show(),
                ms(c.idle_rtt),
                c.loaded_rtt.map_or("—".into(), |(m, p)| format!(
                    "{} ({})",
                    ms(Some(m)),
                    ms(Some(p))
                )),
                rec,
                c.path.as_deref().unwrap_or(""),
            );
        }
    }
    s
}
