//! c-toxcore's own figures on loopback, the baseline for everything toxtun does over Tox:
//! time from start to a friend online, and raw lossless throughput of max-size custom
//! packets sent as fast as the transport accepts them, one way, then the other. A bootstrap
//! node started here on 127.0.0.1; LAN discovery off; nothing leaves loopback.
//!
//! `cargo bench -p toxtun-transport-tox --bench raw` (`RAW_MB=200` to change the volume).

use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use toxtun_proto::{SendError, Transport, TransportEvent};
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

fn wait(t: &mut ToxTransport, want: impl Fn(&TransportEvent) -> bool) {
    let end = now() + Duration::from_secs(90);
    while now() < end {
        match poll(t) {
            Some(e) if want(&e) => return,
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    panic!("timed out");
}

fn one_way(
    from: &mut ToxTransport,
    to: &mut ToxTransport,
    bytes: u64,
) -> (Duration, Vec<(f64, f64)>) {
    let peer = to.id().public_key;
    let total = bytes / 1373;
    let pkt = Bytes::from({
        let mut v = vec![0x5Au8; 1373];
        v[0] = 0xAB;
        v
    });
    let (mut sent, mut got) = (0u64, 0u64);
    let start = now();
    let mut curve = vec![];
    let mut next_mark = Duration::from_secs(1);
    while got < total {
        while sent < total {
            match from.send(peer, pkt.clone()) {
                Ok(()) => sent += 1,
                Err(SendError::QueueFull(_)) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let mut any = false;
        while let Some(e) = poll(to) {
            if matches!(e, TransportEvent::Packet { .. }) {
                got += 1;
                any = true;
            }
        }
        while poll(from).is_some() {}
        if start.elapsed() >= next_mark {
            curve.push((next_mark.as_secs_f64(), (got * 1373) as f64 / 1e6));
            next_mark += Duration::from_secs(1);
        }
        if !any {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    (start.elapsed(), curve)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mb: u64 = std::env::var("RAW_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let boot = ToxTransport::start(ToxConfig::new(ToxOptions::loopback(), vec![])).unwrap();
    let node = boot.as_bootstrap_node("127.0.0.1").unwrap();
    let t0 = now();
    let mut a =
        ToxTransport::start(ToxConfig::new(ToxOptions::loopback(), vec![node.clone()])).unwrap();
    let mut b = ToxTransport::start(ToxConfig::new(ToxOptions::loopback(), vec![node])).unwrap();
    a.add_friend(&b.id(), b"toxtun/1 bench").unwrap();
    wait(&mut b, |e| {
        matches!(e, TransportEvent::FriendRequest { .. })
    });
    b.accept_friend(a.id().public_key).unwrap();
    let bpk = b.id().public_key;
    wait(&mut a, |e| *e == TransportEvent::FriendOnline(bpk));
    let online = t0.elapsed();
    let apk = a.id().public_key;
    wait(&mut b, |e| *e == TransportEvent::FriendOnline(apk));
    println!(
        "c-toxcore {} on loopback (own bootstrap node, LAN discovery off)",
        toxtun_transport_tox::toxcore_version()
    );
    println!("start -> friend online: {:.1} s", online.as_secs_f64());
    let (took, curve) = one_way(&mut a, &mut b, mb << 20);
    println!(
        "a -> b: {mb} MiB of 1373-byte lossless packets in {:.2} s = {:.1} MB/s average",
        took.as_secs_f64(),
        (mb << 20) as f64 / 1e6 / took.as_secs_f64()
    );
    let steps: Vec<String> = curve
        .windows(2)
        .map(|w| format!("{:.0}", w[1].1 - w[0].1))
        .collect();
    println!(
        "  MB delivered per second, second by second: {}",
        steps.join(" ")
    );
    let (took, _) = one_way(&mut b, &mut a, mb << 20);
    println!(
        "b -> a (link warm): {mb} MiB in {:.2} s = {:.1} MB/s",
        took.as_secs_f64(),
        (mb << 20) as f64 / 1e6 / took.as_secs_f64()
    );
}
