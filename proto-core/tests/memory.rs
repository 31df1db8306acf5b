//! Memory per idle stream: a server endpoint with 10,000 open, idle streams from 100
//! client peers, its heap measured by a counting allocator (the only test in this binary,
//! so nothing else allocates meanwhile). Goal: under 2 KiB of core state per idle stream.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use toxtun_proto::{
    ClientRule, Endpoint, EndpointConfig, Event, Input, Limits, Output, PeerId, ServerPolicy,
    TargetRules,
};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is
// updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SERVER: PeerId = PeerId([0x5E; 32]);
const PEERS: usize = 100;
const STREAMS_PER_PEER: usize = 100;

fn peer(i: usize) -> PeerId {
    let mut k = [0xC0u8; 32];
    k[..8].copy_from_slice(&(i as u64).to_le_bytes());
    PeerId(k)
}

/// Delivers every packet until nothing moves; the server accepts every incoming stream.
fn run(server: &mut Endpoint, clients: &mut [Endpoint], now: Instant) {
    let mut to_server: VecDeque<(PeerId, bytes::Bytes)> = VecDeque::new();
    loop {
        let mut moved = false;
        for (i, c) in clients.iter_mut().enumerate() {
            while let Some(o) = c.poll_output(now) {
                match o {
                    Output::Transmit { packet, .. } => to_server.push_back((peer(i), packet)),
                    Output::Timeout(_) => break,
                    Output::Event(_) => {}
                }
            }
        }
        while let Some((from, packet)) = to_server.pop_front() {
            moved = true;
            server.handle_input(now, Input::Packet { peer: from, packet });
        }
        while let Some(o) = server.poll_output(now) {
            match o {
                Output::Transmit { peer: to, packet } => {
                    moved = true;
                    let i = (0..PEERS).find(|&i| peer(i) == to).expect("a client");
                    clients[i].handle_input(
                        now,
                        Input::Packet {
                            peer: SERVER,
                            packet,
                        },
                    );
                }
                Output::Event(Event::StreamIncoming { stream, .. }) => {
                    server.accept(stream).expect("accept");
                }
                Output::Timeout(_) => break,
                Output::Event(_) => {}
            }
        }
        if !moved {
            return;
        }
    }
}

/// A server with a session to each of the 100 clients and `streams_per_peer` idle streams
/// from each, everything delivered and acknowledged; the clients are dropped before it
/// returns, so what is left on the heap is the server's.
fn server_with_idle_streams(streams_per_peer: usize) -> Endpoint {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut cfg = EndpointConfig::new(SERVER);
    cfg.server = Some(ServerPolicy {
        clients: (0..PEERS)
            .map(|i| ClientRule {
                peer: peer(i),
                targets: TargetRules::new(vec!["127.0.0.1:1-65535".parse().unwrap()]),
            })
            .collect(),
        limits: Limits {
            max_peers: PEERS,
            max_streams_per_peer: STREAMS_PER_PEER,
            ..Limits::default()
        },
        ..Default::default()
    });
    let mut server = Endpoint::new(cfg, [1; 32]).unwrap();
    let mut clients: Vec<Endpoint> = (0..PEERS)
        .map(|i| Endpoint::new(EndpointConfig::new(peer(i)), [i as u8; 32]).unwrap())
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.connect(now, SERVER);
        c.handle_input(now, Input::PeerOnline(SERVER));
        server.handle_input(now, Input::PeerOnline(peer(i)));
    }
    run(&mut server, &mut clients, now);
    for (i, c) in clients.iter_mut().enumerate() {
        for k in 0..streams_per_peer {
            let target = format!("127.0.0.1:{}", 1 + (i * STREAMS_PER_PEER + k) % 65535);
            c.open(now, SERVER, target.parse().unwrap()).unwrap();
        }
    }
    run(&mut server, &mut clients, now);
    // The acknowledgement timers fire, and the frame logs empty: idle.
    let later = now + std::time::Duration::from_millis(50);
    server.handle_timeout(later);
    for c in &mut clients {
        c.handle_timeout(later);
    }
    run(&mut server, &mut clients, later);
    assert_eq!(server.peers().count(), PEERS, "every session is up");
    assert_eq!(server.streams().count(), PEERS * streams_per_peer);
    for i in 0..PEERS {
        let ss = server.session_stats(peer(i)).unwrap();
        assert_eq!(ss.retransmit_buffered, 0, "everything acknowledged");
    }
    server
}

#[test]
fn ten_thousand_idle_streams_cost_under_2_kib_each() {
    let base = LIVE.load(Ordering::Relaxed);
    let without = server_with_idle_streams(0);
    let sessions_only = LIVE.load(Ordering::Relaxed) - base;
    drop(without);
    let base = LIVE.load(Ordering::Relaxed);
    let with = server_with_idle_streams(STREAMS_PER_PEER);
    let used = LIVE.load(Ordering::Relaxed) - base;
    let streams = with.streams().count();
    let per_stream = (used - sessions_only) as f64 / streams as f64;
    println!(
        "server core state: {} KiB for {PEERS} sessions; {} KiB with {streams} idle streams: \
         {per_stream:.0} bytes per idle stream",
        sessions_only / 1024,
        used / 1024
    );
    assert!(per_stream < 2048.0, "{per_stream} bytes per idle stream");
}
