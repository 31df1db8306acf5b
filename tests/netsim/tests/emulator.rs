//! The emulated WAN itself, with kernel TCP over it: the path does what it is told, and the
//! namespaces are what the network rule asks. Skips (and says why) where namespaces or TUN
//! are not available.

use std::net::SocketAddr;
use std::time::Duration;

use toxtun_netsim::probe::{self, ProbeServer};
use toxtun_netsim::{available, PathConfig, Side, Wan, Way};

fn wan(path: PathConfig, tag: &str) -> Option<Wan> {
    if let Err(why) = available() {
        eprintln!("skipped: {why}");
        return None;
    }
    Some(Wan::start(tag, path.clone(), path, 1).expect("the emulated WAN starts"))
}

fn server_addr(port: u16) -> SocketAddr {
    format!("{}:{port}", Wan::addr(Side::B)).parse().unwrap()
}

#[test]
fn kernel_tcp_sees_the_delay_and_the_bottleneck() {
    // 20 ms round trip, 20 Mbit/s (2.5 MB/s) with a 50 ms queue.
    let Some(w) = wan(
        PathConfig::delay(Duration::from_millis(10))
            .with_bottleneck(20_000_000, Duration::from_millis(50)),
        "e",
    ) else {
        return;
    };
    let _server = ProbeServer::start(w.namespace(Side::B), server_addr(9000)).unwrap();
    let rtts = probe::in_namespace(w.namespace(Side::A), || {
        probe::echo_round_trips(server_addr(9000), 20, 64, Duration::from_millis(5))
    })
    .unwrap()
    .unwrap();
    let (median, _) = probe::median_p99(&rtts);
    assert!(
        median >= Duration::from_millis(20) && median < Duration::from_millis(26),
        "idle round trip {median:?} on a 20 ms path"
    );
    let d = probe::in_namespace(w.namespace(Side::A), || {
        probe::download(server_addr(9000), 8_000_000, Some("cubic"), |_, _| {})
    })
    .unwrap()
    .unwrap();
    assert!(d.intact);
    let rate = d.mb_per_s();
    assert!(
        (1.6..=2.6).contains(&rate),
        "{rate:.2} MB/s through a 2.5 MB/s bottleneck"
    );
    let s = w.stats(Way::BToA);
    assert!(s.delivered > 5000, "{s:?}");
}

#[test]
fn the_namespaces_hold_nothing_else_and_outages_stop_everything() {
    let Some(w) = wan(PathConfig::delay(Duration::from_millis(5)), "o") else {
        return;
    };
    for side in [Side::A, Side::B] {
        let ns = w.namespace(side);
        let links = ns.ip(&["-o", "link", "show"]).unwrap();
        assert_eq!(links.lines().count(), 2, "lo and the device only: {links}");
        assert!(ns
            .ip(&["route", "show", "default"])
            .unwrap()
            .trim()
            .is_empty());
    }
    // A device added by someone else makes every later command refuse to run.
    w.namespace(Side::A)
        .ip(&["tuntap", "add", "dev", "intruder", "mode", "tun"])
        .unwrap();
    let refused = w.command(Side::A, "true").unwrap_err().to_string();
    assert!(refused.contains("intruder"), "{refused}");
    w.namespace(Side::A)
        .ip(&["link", "del", "intruder"])
        .unwrap();
    assert!(w.command(Side::A, "true").is_ok());

    let _server = ProbeServer::start(w.namespace(Side::B), server_addr(9001)).unwrap();
    w.set_outage(true);
    let during = probe::in_namespace(w.namespace(Side::A), || {
        std::net::TcpStream::connect_timeout(&server_addr(9001), Duration::from_millis(500))
    })
    .unwrap();
    assert!(during.is_err(), "nothing crosses an outage");
    w.set_outage(false);
    let rtts = probe::in_namespace(w.namespace(Side::A), || {
        probe::echo_round_trips(server_addr(9001), 3, 64, Duration::ZERO)
    })
    .unwrap()
    .unwrap();
    assert_eq!(rtts.len(), 3);
}
