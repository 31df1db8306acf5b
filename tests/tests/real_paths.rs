//! Bulk transfers over simulated internet paths (the mock network's bottleneck queue,
//! delay, burst loss and blackouts), each a replayable seed: the regressions of issue 15.
//!
//! Every test here failed before its fix: a burst of drop-tail losses cut a download with
//! 2006 (the receiver counted each packet held past a gap as a separate range and gave up
//! at 1024), and a path that went dark without c-toxcore noticing left the fast path
//! backing off for minutes, then crawling over lossless packets.

use std::time::Duration;

use toxtun_tests::sim::{End, Op, Sim, SimConfig, SimFailure};
use toxtun_transport_mock::BurstLoss;

const MB: u64 = 1 << 20;

/// Which way the bulk bytes go.
#[derive(Clone, Copy, Debug)]
enum Way {
    /// The server sends (a download).
    Down,
    /// The client sends (an upload).
    Up,
}

/// Opens one stream from the client and sends `bytes` the given way, then FIN; runs until
/// the reader has them all or `limit` of virtual time passed. Returns the virtual time the
/// transfer took.
fn transfer(sim: &mut Sim, way: Way, bytes: u64, limit: Duration) -> Result<Duration, SimFailure> {
    sim.run_for(Duration::from_secs(1))?;
    let start = sim.elapsed();
    let (up, down, reader) = match way {
        Way::Down => (0, bytes, End::Opener),
        Way::Up => (bytes, 0, End::Acceptor),
    };
    let ix = sim.streams_opened();
    sim.apply(&Op::Open {
        client: 0,
        server: 0,
        allowed: true,
        up,
        down,
        fin_up: true,
        fin_down: true,
    })?;
    while sim.bytes_read(ix, reader) < bytes {
        if let Some(how) = sim.ended(ix, reader) {
            return Err(SimFailure(format!(
                "the transfer ended after {} of {bytes} bytes: {how}",
                sim.bytes_read(ix, reader)
            )));
        }
        if sim.elapsed() - start > limit {
            return Err(SimFailure(format!(
                "stuck: {} of {bytes} bytes after {limit:?}",
                sim.bytes_read(ix, reader)
            )));
        }
        sim.run_for(Duration::from_millis(100))?;
    }
    Ok(sim.elapsed() - start)
}

/// The paths of the WAN bench (`tests/netsim`), as the mock network models them.
fn profiles() -> Vec<(&'static str, SimConfig)> {
    let ms = Duration::from_millis;
    let broadband = SimConfig::wan(ms(50), 12_500_000, ms(100));
    let mut wifi = broadband.clone();
    wifi.link.lossy_loss_per_mille = 10;
    let mut intercontinental = SimConfig::wan(ms(150), 2_500_000, ms(200));
    intercontinental.link.lossy_loss_per_mille = 2;
    let dsl = SimConfig::wan(ms(20), 1_250_000, ms(500));
    let mut bursty = broadband.clone();
    bursty.link.burst_loss = Some(BurstLoss {
        enter_per_mille: 2,
        leave_per_mille: 100,
        loss_per_mille: 900,
    });
    vec![
        ("broadband", broadband),
        ("lossy wi-fi", wifi),
        ("intercontinental", intercontinental),
        ("bloated dsl", dsl),
        ("burst loss", bursty),
    ]
}

#[test]
fn a_burst_of_drop_tail_losses_does_not_cut_a_download() {
    // The path the cut was seen on: the slow start overshoots the 100 ms queue, and the
    // bottleneck drops hundreds of packets while a megabyte and more is in flight.
    let (_, cfg) = profiles().remove(0);
    for way in [Way::Down, Way::Up] {
        let mut sim = Sim::new(1, &cfg);
        let took = transfer(&mut sim, way, 20 * MB, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{way:?}: {e}"));
        let sender = match way {
            Way::Down => sim.session_stats(1, 0),
            Way::Up => sim.session_stats(0, 1),
        }
        .expect("the sender's session");
        println!(
            "{way:?}: 20 MiB in {took:?}, {} of {} packets lost, window {} B",
            sender.lossy_packets_lost, sender.lossy_packets_sent, sender.congestion_window
        );
        assert!(
            sender.lossy_packets_lost > 0,
            "{way:?}: the bottleneck dropped nothing, so this tested nothing"
        );
        // 20 MiB at 12.5 MB/s is 1.7 s; slow start and the losses' recovery add some.
        assert!(
            took < Duration::from_secs(6),
            "{way:?}: 20 MiB took {took:?} on a 100 Mbit/s path"
        );
        sim.finish().unwrap_or_else(|e| panic!("{way:?}: {e}"));
    }
}

#[test]
fn every_profile_carries_a_transfer_both_ways_byte_exact() {
    for (name, cfg) in profiles() {
        let rate = cfg.link.bandwidth.expect("a bottleneck");
        let bytes = 4 * MB;
        for way in [Way::Down, Way::Up] {
            let mut sim = Sim::new(7, &cfg);
            // Ten times what the bottleneck needs for the bytes, at least a minute: a
            // transfer that crawls fails as surely as one that stops.
            let limit = Duration::from_secs((10 * bytes / rate).max(60));
            let took = transfer(&mut sim, way, bytes, limit)
                .unwrap_or_else(|e| panic!("{name} {way:?}: {e}"));
            println!("{name} {way:?}: 4 MiB in {took:?}");
            sim.finish()
                .unwrap_or_else(|e| panic!("{name} {way:?}: {e}"));
        }
    }
}
