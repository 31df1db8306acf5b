//! A scenario as data: its operations, the shape of its network, and random draws of both.

use std::time::Duration;

use rand_chacha::rand_core::RngCore;
use toxtun_proto::CongestionControl;
use toxtun_transport_mock::{BurstLoss, FlapPlan, LinkConfig};

use super::End;

/// One operation of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A client opens a stream to a server; `allowed` picks a target inside or outside the
    /// server's rules. `up`/`down` bytes go each way, each followed by FIN if asked.
    Open {
        /// Client index.
        client: usize,
        /// Server index.
        server: usize,
        /// Whether the target is inside the rules.
        allowed: bool,
        /// Bytes the opener writes.
        up: u64,
        /// Bytes the acceptor writes.
        down: u64,
        /// Opener finishes after writing.
        fin_up: bool,
        /// Acceptor finishes after writing.
        fin_down: bool,
    },
    /// One side of a stream writes more bytes.
    Write {
        /// Index into the streams opened so far.
        stream: usize,
        /// Which side.
        end: End,
        /// How many bytes.
        bytes: u64,
    },
    /// One side finishes its direction.
    Finish {
        /// Index into the streams opened so far.
        stream: usize,
        /// Which side.
        end: End,
    },
    /// One side resets the stream.
    Reset {
        /// Index into the streams opened so far.
        stream: usize,
        /// Which side.
        end: End,
    },
    /// One side stops (or resumes) reading a stream.
    Stall {
        /// Index into the streams opened so far.
        stream: usize,
        /// Which side.
        end: End,
        /// Stop (true) or resume (false).
        on: bool,
    },
    /// The link between a client and a server goes down for a while.
    Flap {
        /// Client index.
        client: usize,
        /// Server index.
        server: usize,
        /// How long it stays down.
        outage: Duration,
    },
    /// A node restarts: it keeps its Tox keys and friends, loses its endpoint.
    Restart {
        /// Node index (clients first, then servers).
        node: usize,
    },
    /// A server's application refuses the next stream it is offered (target refused).
    RefuseNext {
        /// Server index.
        server: usize,
    },
    /// Reverse forwarding: the client asks the server to listen for it (once), and once
    /// it does, the server opens a stream toward the client as for a connection it
    /// accepted there; bytes each way as for `Open` (the server is the opener).
    Reverse {
        /// Client index.
        client: usize,
        /// Server index.
        server: usize,
        /// Bytes the server writes.
        up: u64,
        /// Bytes the client writes.
        down: u64,
        /// The server finishes after writing.
        fin_up: bool,
        /// The client finishes after writing.
        fin_down: bool,
    },
    /// UDP forwarding: the client opens a flow to the server (inside its `udp:` rules or
    /// not) and sends datagrams on it at once; the server's application echoes each one.
    /// Every datagram must arrive intact and at most once, each way.
    Udp {
        /// Client index.
        client: usize,
        /// Server index.
        server: usize,
        /// The target is inside the rules.
        allowed: bool,
        /// Datagrams sent (held by the client until the flow opens).
        datagrams: usize,
        /// The largest of them, in bytes (fragmented past a packet).
        size: usize,
    },
    /// Let time pass.
    Advance(Duration),
    /// The path between a client and a server goes dark for a while without the friend
    /// link going down (no side is told, as c-toxcore did not notice an 8 s outage): lossy
    /// packets are lost, lossless ones wait for the path's return.
    Blackout {
        /// Client index.
        client: usize,
        /// Server index.
        server: usize,
        /// How long the path stays dark.
        outage: Duration,
    },
    /// The link between a client and a server becomes direct UDP (the fast path may run)
    /// or relayed (lossy packets are dropped).
    Path {
        /// Client index.
        client: usize,
        /// Server index.
        server: usize,
        /// Direct or relayed.
        direct: bool,
    },
}

/// The shape of a scenario.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of clients.
    pub clients: usize,
    /// Number of servers.
    pub servers: usize,
    /// Every link's behaviour.
    pub link: LinkConfig,
    /// Stream window of every endpoint.
    pub stream_window: u32,
    /// Session budget of every endpoint.
    pub session_window: u64,
    /// Random flaps on every client–server link, beside the scripted ones.
    pub flaps: Option<FlapPlan>,
    /// Every endpoint's congestion controller.
    pub congestion: CongestionControl,
}

impl SimConfig {
    /// Draws a shape from `rng`: 1–3 clients, 1–2 servers, a few link personalities.
    pub fn random(rng: &mut impl RngCore) -> Self {
        let latency = Duration::from_millis(1 + rng.next_u64() % 60);
        SimConfig {
            clients: 1 + (rng.next_u64() % 3) as usize,
            servers: 1 + (rng.next_u64() % 2) as usize,
            link: LinkConfig {
                latency,
                jitter: Duration::from_millis(rng.next_u64() % 10),
                bandwidth: [None, Some(2_000_000), Some(20_000_000)][(rng.next_u64() % 3) as usize],
                queue_capacity: [4, 32, 256][(rng.next_u64() % 3) as usize],
                connect_delay: Duration::from_millis(50 + rng.next_u64() % 500),
                ..LinkConfig::default()
            },
            stream_window: [4096, 64 * 1024, 256 * 1024][(rng.next_u64() % 3) as usize],
            session_window: [256 * 1024, 1 << 20, 16 << 20][(rng.next_u64() % 3) as usize],
            flaps: rng.next_u64().is_multiple_of(4).then(|| FlapPlan {
                mean_up: Duration::from_millis(500 + rng.next_u64() % 5000),
                min_down: Duration::from_millis(50),
                max_down: Duration::from_millis(50 + rng.next_u64() % 3000),
            }),
            // Both controllers, so that each meets every shape.
            congestion: if rng.next_u64().is_multiple_of(2) {
                CongestionControl::Bbr
            } else {
                CongestionControl::NewReno
            },
        }
        .with_lossy(rng.next_u64())
    }

    /// Half the shapes start with direct links, whose lossy packets are lost (up to 10%),
    /// duplicated (up to 5%) and reordered (up to 20 ms) at random.
    fn with_lossy(mut self, draw: u64) -> Self {
        self.link.direct = draw.is_multiple_of(2);
        self.link.lossy_loss_per_mille = [0, 5, 30, 100][((draw >> 8) % 4) as usize];
        self.link.lossy_duplicate_per_mille = [0, 10, 50][((draw >> 16) % 3) as usize];
        self.link.lossy_reorder = Duration::from_millis([0, 2, 20][((draw >> 24) % 3) as usize]);
        // Bottlenecks as real paths have them: a short buffer, a broadband router's 100 ms,
        // a bloated DSL modem's 500 ms; and now and then losses in bursts (Wi-Fi).
        self.link.bottleneck_queue =
            Duration::from_millis([20, 100, 500][((draw >> 32) % 3) as usize]);
        // Some relays drop lossy packets: the fast path must find out and fall back.
        self.link.relay_drops_lossy = (draw >> 44).is_multiple_of(2);
        self.link.burst_loss = (draw >> 40).is_multiple_of(4).then_some(BurstLoss {
            enter_per_mille: 5,
            leave_per_mille: 200,
            loss_per_mille: 800,
        });
        self
    }

    /// One client and one server joined by a direct path like an internet one: `rtt`
    /// round trip, a bottleneck of `bandwidth` bytes per second with a drop-tail queue of
    /// `queue`, and default windows. Lossless packets get 500 kB/s, about what c-toxcore's
    /// own congestion control gave them on such paths (BENCHMARKS.md, "Real paths"): a
    /// transfer that falls back to them for good crawls, as it did there. The regression
    /// tests of real paths start here.
    pub fn wan(rtt: Duration, bandwidth: u64, queue: Duration) -> Self {
        SimConfig {
            clients: 1,
            servers: 1,
            link: LinkConfig {
                latency: rtt / 2,
                bandwidth: Some(bandwidth),
                bottleneck_queue: queue,
                queue_capacity: 1024,
                direct: true,
                lossless_bandwidth: Some(500_000),
                ..LinkConfig::default()
            },
            stream_window: 256 * 1024,
            session_window: 16 << 20,
            flaps: None,
            congestion: CongestionControl::default(),
        }
    }
}

/// Draws `n` operations from `rng` for a scenario of shape `cfg`.
pub fn random_ops(rng: &mut impl RngCore, cfg: &SimConfig, n: usize) -> Vec<Op> {
    let mut ops = Vec::with_capacity(n);
    let mut opened = 0usize;
    let r = |rng: &mut dyn RngCore, m: u64| rng.next_u64() % m.max(1);
    for _ in 0..n {
        let pick = r(rng, 100);
        let stream = |rng: &mut dyn RngCore| r(rng, opened as u64) as usize;
        let (end, size) = (random_end, random_size);
        let op = if opened == 0 || pick < 30 {
            opened += 1;
            Op::Open {
                client: r(rng, cfg.clients as u64) as usize,
                server: r(rng, cfg.servers as u64) as usize,
                allowed: r(rng, 10) != 0,
                up: size(rng),
                down: size(rng),
                fin_up: r(rng, 4) != 0,
                fin_down: r(rng, 4) != 0,
            }
        } else if pick < 45 {
            Op::Write {
                stream: stream(rng),
                end: end(rng),
                bytes: size(rng),
            }
        } else if pick < 55 {
            Op::Finish {
                stream: stream(rng),
                end: end(rng),
            }
        } else if pick < 60 {
            Op::Reset {
                stream: stream(rng),
                end: end(rng),
            }
        } else if pick < 68 {
            Op::Stall {
                stream: stream(rng),
                end: end(rng),
                on: r(rng, 2) == 0,
            }
        } else if pick < 76 {
            Op::Flap {
                client: r(rng, cfg.clients as u64) as usize,
                server: r(rng, cfg.servers as u64) as usize,
                outage: random_outage(rng),
            }
        } else if pick < 80 {
            Op::Restart {
                node: r(rng, (cfg.clients + cfg.servers) as u64) as usize,
            }
        } else if pick < 84 {
            Op::RefuseNext {
                server: r(rng, cfg.servers as u64) as usize,
            }
        } else if pick < 87 {
            Op::Path {
                client: r(rng, cfg.clients as u64) as usize,
                server: r(rng, cfg.servers as u64) as usize,
                direct: r(rng, 2) == 0,
            }
        } else if pick < 90 {
            Op::Blackout {
                client: r(rng, cfg.clients as u64) as usize,
                server: r(rng, cfg.servers as u64) as usize,
                outage: random_outage(rng).min(Duration::from_secs(45)),
            }
        } else if pick < 97 {
            opened += 1;
            random_reverse(rng, cfg)
        } else if pick < 99 {
            random_udp(rng, cfg)
        } else {
            Op::Advance(Duration::from_millis(r(rng, 3000)))
        };
        ops.push(op);
    }
    ops
}

/// A UDP flow between a random client and server, mostly inside the rules, with up to
/// 32 datagrams of up to 5 kB (fragmented past one packet).
fn random_udp(rng: &mut impl RngCore, cfg: &SimConfig) -> Op {
    let r = |rng: &mut dyn RngCore, m: u64| rng.next_u64() % m.max(1);
    Op::Udp {
        client: r(rng, cfg.clients as u64) as usize,
        server: r(rng, cfg.servers as u64) as usize,
        allowed: r(rng, 8) != 0,
        datagrams: 1 + r(rng, 32) as usize,
        size: 8 + r(rng, 5000) as usize,
    }
}

/// A reverse stream between a random client and server, with random bytes each way.
fn random_reverse(rng: &mut impl RngCore, cfg: &SimConfig) -> Op {
    let r = |rng: &mut dyn RngCore, m: u64| rng.next_u64() % m.max(1);
    Op::Reverse {
        client: r(rng, cfg.clients as u64) as usize,
        server: r(rng, cfg.servers as u64) as usize,
        up: random_size(rng),
        down: random_size(rng),
        fin_up: r(rng, 4) != 0,
        fin_down: r(rng, 4) != 0,
    }
}

/// Either end of a stream, evenly.
fn random_end(rng: &mut dyn RngCore) -> End {
    if rng.next_u64().is_multiple_of(2) {
        End::Opener
    } else {
        End::Acceptor
    }
}

/// Bytes to write: none a tenth of the time, mostly under 20 kB, sometimes up to 2 MB.
fn random_size(rng: &mut dyn RngCore) -> u64 {
    let r = |rng: &mut dyn RngCore, m: u64| rng.next_u64() % m;
    match r(rng, 10) {
        0 => 0,
        1..=6 => r(rng, 20_000),
        7 | 8 => r(rng, 300_000),
        _ => r(rng, 2_000_000),
    }
}

/// A link outage: mostly short (50 ms – 5 s), sometimes long (up to 60 s), and now and then
/// past the default resume grace of 120 s, which ends the link's streams.
pub(super) fn random_outage(rng: &mut dyn RngCore) -> Duration {
    let ms = match rng.next_u64() % 20 {
        0..=14 => 50 + rng.next_u64() % 4950,
        15..=18 => 5_000 + rng.next_u64() % 55_000,
        _ => 121_000 + rng.next_u64() % 10_000,
    };
    Duration::from_millis(ms)
}
