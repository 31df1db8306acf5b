//! Where c-toxcore's start-up time goes, on loopback: a bootstrap node (with `RELAY=1`, also
//! a TCP relay), `EXTRA=n` more DHT nodes, and two peers that befriend each other; every
//! transport event is printed with its time since the peers started. LAN discovery off.
//!
//! `cargo run --release -p toxtun-transport-tox --example startup_timeline`
//!
//! Measured (BENCHMARKS.md): the peers see themselves connected after about 7.2 s whatever
//! the network's size; the friend request, sent at once, arrives 0.3 s after that; the
//! friend is online about 2 s later.

use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use toxtun_proto::{Transport, TransportEvent};
use toxtun_transport_tox::{ToxConfig, ToxOptions, ToxTransport};

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

fn poll(t: &mut ToxTransport) -> Option<TransportEvent> {
    match t.poll_event(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(e) => e,
        Poll::Pending => None,
    }
}

fn main() {
    let relay = std::env::var("RELAY").is_ok();
    let mut bo = ToxOptions::loopback();
    if relay {
        bo.start_port = 34567;
        bo.end_port = 34567;
        bo.tcp_port = 34567;
    } else {
        bo.tcp_port = 0;
    }
    let boot = ToxTransport::start(ToxConfig::new(bo, vec![])).unwrap();
    let node = boot.as_bootstrap_node("127.0.0.1").unwrap();
    let extra: usize = std::env::var("EXTRA")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let _others: Vec<ToxTransport> = (0..extra)
        .map(|_| {
            ToxTransport::start(ToxConfig::new(ToxOptions::loopback(), vec![node.clone()])).unwrap()
        })
        .collect();
    if extra > 0 {
        std::thread::sleep(Duration::from_secs(10));
    }
    let t0 = now();
    let mut a =
        ToxTransport::start(ToxConfig::new(ToxOptions::loopback(), vec![node.clone()])).unwrap();
    let mut b = ToxTransport::start(ToxConfig::new(ToxOptions::loopback(), vec![node])).unwrap();
    a.add_friend(&b.id(), b"x").unwrap();
    let (apk, bpk) = (a.id().public_key, b.id().public_key);
    let mut done = (false, false);
    while !(done.0 && done.1) && t0.elapsed() < Duration::from_secs(60) {
        while let Some(e) = poll(&mut a) {
            println!("{:.2} a {:?}", t0.elapsed().as_secs_f64(), e);
            if e == TransportEvent::FriendOnline(bpk) {
                done.0 = true;
            }
        }
        while let Some(e) = poll(&mut b) {
            println!("{:.2} b {:?}", t0.elapsed().as_secs_f64(), e);
            if let TransportEvent::FriendRequest { peer, .. } = e {
                b.accept_friend(peer).unwrap();
            }
            if e == TransportEvent::FriendOnline(apk) {
                done.1 = true;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
