//! The WAN bench: toxtun beside kernel TCP (BBR and CUBIC) over the same emulated internet
//! path in the same run, for every profile of `toxtun_netsim::profiles` (two network
//! namespaces joined by TUN devices through a userspace path; nothing leaves them).
//!
//! `cargo bench -p toxtun-tokio --bench wan` (as root: namespaces and TUN devices). Settings:
//! * `TOXTUN_WAN_PROFILES=broadband,outage` — which profiles (default: all);
//! * `TOXTUN_WAN_MB=50` — MB of each download and upload (10^6 bytes);
//! * `TOXTUN_WAN_REPEAT=1` — tunnel transfers each way per profile (10 for the "0 cut,
//!   0 stuck" goal);
//! * `TOXTUN_WAN_KERNEL=0` — skip the kernel TCP baselines;
//! * `TOXTUN_WAN_LOSSLESS=0` — skip the lossless tunnel (`--no-fast-path`, 20 s timed
//!   transfers each way: c-toxcore's own congestion control, the "3×" goal's baseline);
//! * `TOXTUN_WAN_OUTAGES=8,30` — the outages (seconds) of the profiles that have them;
//! * `TOXTUN_WAN_STARTS=9` — instead of the rest: start the tunnel that many times on each
//!   chosen profile and report how long each took to a session and to a direct UDP path.
//!
//! Logs of every toxtun process stay in `target/tmp/wan-bench/<profile>/`, with
//! `plot.svg`: goodput, congestion window and pacing rate over the first download, for
//! kernel BBR, CUBIC and toxtun. Each profile ends with issue 17's goals judged
//! (`toxtun_netsim::goals`); Markdown tables of everything measured and of the goals are
//! printed at the end.

use std::path::PathBuf;

use toxtun_netsim::bench::{markdown, run_profile, BenchOptions};
use toxtun_netsim::{goals, profiles};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo bench -- --list
    }
    if let Err(why) = toxtun_netsim::available() {
        println!("wan bench skipped: {why}");
        return;
    }
    let wanted = std::env::var("TOXTUN_WAN_PROFILES").unwrap_or_default();
    let outages: Option<Vec<std::time::Duration>> =
        std::env::var("TOXTUN_WAN_OUTAGES").ok().map(|v| {
            v.split(',')
                .filter_map(|s| s.parse().ok())
                .map(std::time::Duration::from_secs)
                .collect()
        });
    let chosen: Vec<_> = profiles::all()
        .into_iter()
        .filter(|p| wanted.is_empty() || wanted.split(',').any(|w| w == p.name))
        .map(|mut p| {
            if let (Some(o), false) = (&outages, p.outages.is_empty()) {
                p.outages = o.clone();
            }
            p
        })
        .collect();
    let opts = BenchOptions {
        toxtun: PathBuf::from(env!("CARGO_BIN_EXE_toxtun")),
        bytes: env("TOXTUN_WAN_MB", 50u64) * 1_000_000,
        repeat: env("TOXTUN_WAN_REPEAT", 1usize),
        kernel: env("TOXTUN_WAN_KERNEL", 1u8) != 0,
        lossless: env("TOXTUN_WAN_LOSSLESS", 1u8) != 0,
        run_dir: PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wan-bench"),
    };
    println!(
        "wan bench: {} MB each way, {} tunnel run(s) per profile; logs in {}",
        opts.bytes / 1_000_000,
        opts.repeat,
        opts.run_dir.display()
    );
    if let Ok(n) = std::env::var("TOXTUN_WAN_STARTS") {
        let n: usize = n.parse().unwrap_or(9);
        for p in &chosen {
            println!("{} ({}): {n} fresh starts", p.name, p.about);
            match toxtun_netsim::bench::start_times(p, &opts, n) {
                Ok(times) => {
                    let relayed = times
                        .iter()
                        .filter(|(up, d)| {
                            d.is_none_or(|d| d > *up + std::time::Duration::from_secs(20))
                        })
                        .count();
                    println!("  {relayed} of {n} starts stayed on the TCP relay 20 s or more after the session");
                }
                Err(e) => println!("  FAILED: {e}"),
            }
        }
        return;
    }
    let mut reports = Vec::new();
    let mut checks = Vec::new();
    for p in &chosen {
        println!("{} ({})", p.name, p.about);
        match run_profile(p, &opts) {
            Ok(r) => {
                let c = goals::check(&r);
                println!("  goals:\n{}", goals::lines(&c));
                checks.extend(c);
                reports.push(r);
            }
            Err(e) => println!("  FAILED: {e}"),
        }
    }
    println!("\n{}", markdown(&reports));
    println!("\n{}", goals::markdown(&checks));
}
