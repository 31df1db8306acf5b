//! The simulation harness: several clients and servers, each a protocol [`Endpoint`] with a
//! scripted application, on the mock Tox [`Network`], under virtual time. A scenario is a
//! list of operations (open, write, finish, reset, stall a reader, flap a link, restart a
//! node, refuse a target, let time pass) drawn from a seed. After every step the harness
//! checks its invariants:
//!
//! * every byte a reader gets is the next byte its writer wrote: exactly once, in order;
//! * a stream that closes cleanly delivered every byte written, both ways;
//! * no stream buffers more than its window, no peer more than its budget, no sender more
//!   than the peer's credit; nothing is sent while the transport said its queue is full;
//!
//! and at the end, after faults heal, readers resume, writers finish and timeouts run,
//! that every stream ended, on both sides, cleanly or with a reason.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use toxtun_proto::{
    ClientRule, Endpoint, EndpointConfig, Event, Input, Output, PeerId, ReadError, ServerPolicy,
    SessionCode, StreamCode, StreamId, TargetRules, TransportEvent, WriteError,
};
use toxtun_transport_mock::{BurstLoss, FlapPlan, LinkConfig, Network, NodeId};

/// A broken invariant, with what the harness saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimFailure(pub String);

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! fail {
    ($($t:tt)*) => { return Err(SimFailure(format!($($t)*))) };
}

/// Which end of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The side that opened it.
    Opener,
    /// The side that accepted it.
    Acceptor,
}

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
            flaps: (rng.next_u64() % 4 == 0).then(|| FlapPlan {
                mean_up: Duration::from_millis(500 + rng.next_u64() % 5000),
                min_down: Duration::from_millis(50),
                max_down: Duration::from_millis(50 + rng.next_u64() % 3000),
            }),
        }
        .with_lossy(rng.next_u64())
    }

    /// Half the shapes start with direct links, whose lossy packets are lost (up to 10%),
    /// duplicated (up to 5%) and reordered (up to 20 ms) at random.
    fn with_lossy(mut self, draw: u64) -> Self {
        self.link.direct = draw % 2 == 0;
        self.link.lossy_loss_per_mille = [0, 5, 30, 100][((draw >> 8) % 4) as usize];
        self.link.lossy_duplicate_per_mille = [0, 10, 50][((draw >> 16) % 3) as usize];
        self.link.lossy_reorder = Duration::from_millis([0, 2, 20][((draw >> 24) % 3) as usize]);
        // Bottlenecks as real paths have them: a short buffer, a broadband router's 100 ms,
        // a bloated DSL modem's 500 ms; and now and then losses in bursts (Wi-Fi).
        self.link.bottleneck_queue =
            Duration::from_millis([20, 100, 500][((draw >> 32) % 3) as usize]);
        // Some relays drop lossy packets: the fast path must find out and fall back.
        self.link.relay_drops_lossy = (draw >> 44) % 2 == 0;
        self.link.burst_loss = ((draw >> 40) % 4 == 0).then_some(BurstLoss {
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
        let end = |rng: &mut dyn RngCore| {
            if r(rng, 2) == 0 {
                End::Opener
            } else {
                End::Acceptor
            }
        };
        let size = |rng: &mut dyn RngCore| match r(rng, 10) {
            0 => 0,
            1..=6 => r(rng, 20_000),
            7 | 8 => r(rng, 300_000),
            _ => r(rng, 2_000_000),
        };
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
        } else {
            Op::Advance(Duration::from_millis(r(rng, 3000)))
        };
        ops.push(op);
    }
    ops
}

/// A link outage: mostly short (50 ms – 5 s), sometimes long (up to 60 s), and now and then
/// past the default resume grace of 120 s, which ends the link's streams.
fn random_outage(rng: &mut dyn RngCore) -> Duration {
    let ms = match rng.next_u64() % 20 {
        0..=14 => 50 + rng.next_u64() % 4950,
        15..=18 => 5_000 + rng.next_u64() % 55_000,
        _ => 121_000 + rng.next_u64() % 10_000,
    };
    Duration::from_millis(ms)
}

/// The byte at `offset` of the direction seeded `seed`: every byte is checkable alone.
fn byte_at(seed: u64, offset: u64) -> u8 {
    let x = (seed ^ offset.wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (x >> 56) as u8
}

fn bytes_at(seed: u64, offset: u64, len: usize) -> Bytes {
    (0..len as u64).map(|i| byte_at(seed, offset + i)).collect()
}

/// One direction of a stream, as the harness tracks it.
#[derive(Debug, Default, Clone)]
struct Flow {
    seed: u64,
    /// Bytes the writer's application still wants to write.
    pending: u64,
    /// Bytes the endpoint accepted.
    written: u64,
    /// The writer wants FIN after its pending bytes.
    fin_wanted: bool,
    fin_sent: bool,
    /// Bytes the reader got (checked one by one).
    read: u64,
    eof: bool,
}

#[derive(Debug, Clone)]
struct StreamRec {
    id: StreamId,
    opener: usize,
    acceptor: usize,
    /// [0]: opener → acceptor; [1]: acceptor → opener.
    flows: [Flow; 2],
    /// How each side's stream ended (None: still open there, or never seen).
    ended: [Option<String>; 2],
    /// The acceptor's endpoint saw the stream.
    seen_by_acceptor: bool,
    down_plan: (u64, bool),
    stalled: [bool; 2],
    /// Restarts of its two nodes, and sessions between them that expired after a suspension
    /// as long as the resume grace, when it opened: either may end it. Link flaps within
    /// the grace may not.
    excuses_at_open: (u64, u64, u64),
}

impl StreamRec {
    fn side_of(&self, node: usize) -> Option<usize> {
        if node == self.opener {
            Some(0)
        } else if node == self.acceptor {
            Some(1)
        } else {
            None
        }
    }
}

#[derive(Debug)]
struct SimNode {
    endpoint: Endpoint,
    config: EndpointConfig,
    is_server: bool,
    /// Per peer: the packet the transport refused with `QueueFull`.
    held: BTreeMap<PeerId, Bytes>,
    timeout: Option<Instant>,
    restarts: u64,
    refuse_next: bool,
    /// Streams with something to write or read, to try on the next pump.
    try_write: BTreeSet<StreamId>,
    try_read: BTreeSet<StreamId>,
    incoming: Vec<StreamId>,
}

/// Counters of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SimStats {
    /// Streams opened.
    pub streams: u64,
    /// Streams that closed cleanly on both sides.
    pub closed_clean: u64,
    /// Stream ends with a reason (reset or refused), counted per side.
    pub ended_with_reason: u64,
    /// Bytes read by applications, checked.
    pub bytes_checked: u64,
    /// Times a link went down (scripted flaps, random flaps, restarts).
    pub flaps: u64,
    /// Node restarts.
    pub restarts: u64,
    /// Steps run.
    pub steps: u64,
    /// Lossy packets (the fast path) the network carried or dropped.
    pub lossy_packets: u64,
}

/// A running scenario.
#[derive(Debug)]
pub struct Sim {
    net: Network,
    nodes: Vec<SimNode>,
    clients: usize,
    now: Instant,
    streams: Vec<StreamRec>,
    by_id: BTreeMap<StreamId, usize>,
    /// Stats of the run.
    pub stats: SimStats,
    seed: u64,
    start: Instant,
    /// Per (node, peer): since when the node's session with the peer has been suspended,
    /// as its own events tell (back-to-back flaps that never let the link come up count as
    /// one outage).
    suspended_since: BTreeMap<(usize, PeerId), Instant>,
    /// Per (client, server): sessions either side ended after a suspension of at least the
    /// grace (its resume never completed from its own point of view, though the other side
    /// may have seen one).
    expiries: BTreeMap<(usize, usize), u64>,
}

const ALLOWED_PORTS: &str = "127.0.0.1:1-30000";

impl Sim {
    /// Builds the nodes and starts every client befriending and connecting to every server.
    pub fn new(seed: u64, cfg: &SimConfig) -> Self {
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        let mut net = Network::new(seed, start);
        net.set_default_link(cfg.link);
        let ids: Vec<NodeId> = (0..cfg.clients + cfg.servers)
            .map(|_| net.add_node())
            .collect();
        let client_keys: Vec<PeerId> = ids[..cfg.clients].iter().map(|n| net.peer_id(*n)).collect();
        let mut nodes = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let mut config = EndpointConfig::new(net.peer_id(*id));
            config.stream_window = cfg.stream_window;
            config.session_window = cfg.session_window;
            let is_server = i >= cfg.clients;
            if is_server {
                config.server = Some(ServerPolicy {
                    clients: client_keys
                        .iter()
                        .map(|k| ClientRule {
                            peer: *k,
                            targets: TargetRules::new(vec![ALLOWED_PORTS.parse().expect("rule")]),
                        })
                        .collect(),
                    ..Default::default()
                });
            }
            nodes.push(SimNode {
                endpoint: Endpoint::new(config.clone(), node_seed(seed, i, 0)).expect("config"),
                config,
                is_server,
                held: BTreeMap::new(),
                timeout: None,
                restarts: 0,
                refuse_next: false,
                try_write: BTreeSet::new(),
                try_read: BTreeSet::new(),
                incoming: Vec::new(),
            });
        }
        let mut sim = Sim {
            net,
            nodes,
            clients: cfg.clients,
            now: start,
            streams: Vec::new(),
            by_id: BTreeMap::new(),
            stats: SimStats::default(),
            seed,
            start,
            suspended_since: BTreeMap::new(),
            expiries: BTreeMap::new(),
        };
        for c in 0..cfg.clients {
            for s in cfg.clients..cfg.clients + cfg.servers {
                let sid = sim.net.tox_id(NodeId(s));
                sim.net
                    .add_friend(NodeId(c), &sid, b"toxtun/1")
                    .expect("befriend");
            }
            sim.connect_client(c);
            if cfg.flaps.is_some() {
                for s in cfg.clients..cfg.clients + cfg.servers {
                    sim.net.set_flaps(NodeId(c), NodeId(s), cfg.flaps);
                }
            }
        }
        sim
    }

    fn connect_client(&mut self, c: usize) {
        for s in self.clients..self.nodes.len() {
            let pk = self.net.peer_id(NodeId(s));
            self.nodes[c].endpoint.connect(self.now, pk);
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Darkens (or lights again) the path between client `client` and server `server`
    /// without telling either (see [`Op::Blackout`]).
    pub fn blackout(&mut self, client: usize, server: usize, on: bool) {
        let (c, s) = (NodeId(client), NodeId(self.clients + server));
        self.net.set_blackout(c, s, on);
    }

    /// Takes the friend link between client `client` and server `server` down (`false`; both
    /// are told, as c-toxcore reports a friend offline) or lets it come back.
    pub fn link(&mut self, client: usize, server: usize, up: bool) {
        let (c, s) = (NodeId(client), NodeId(self.clients + server));
        if up {
            self.net.link_up(c, s);
        } else {
            self.net.link_down(c, s);
        }
    }

    /// Marks the link between client `client` and server `server` direct or relayed
    /// without running the network (see [`Op::Path`]).
    pub fn net_set_direct(&mut self, client: usize, server: usize, direct: bool) {
        let (c, s) = (NodeId(client), NodeId(self.clients + server));
        self.net.set_direct(c, s, direct);
    }

    /// Streams opened so far: the index the next one gets.
    pub fn streams_opened(&self) -> usize {
        self.streams.len()
    }

    /// Bytes the given end of stream `ix` (in opening order) has read, each checked.
    pub fn bytes_read(&self, ix: usize, end: End) -> u64 {
        let flow = match end {
            End::Opener => 1,
            End::Acceptor => 0,
        };
        self.streams.get(ix).map_or(0, |r| r.flows[flow].read)
    }

    /// How the given end of stream `ix` ended, if it did.
    pub fn ended(&self, ix: usize, end: End) -> Option<&str> {
        let side = usize::from(end == End::Acceptor);
        self.streams.get(ix)?.ended[side].as_deref()
    }

    /// Fast-path statistics of node `node`'s session with node `peer`, if it has one.
    pub fn session_stats(&self, node: usize, peer: usize) -> Option<toxtun_proto::SessionStats> {
        let pk = self.net.peer_id(NodeId(peer));
        self.nodes.get(node)?.endpoint.session_stats(pk)
    }

    // ----- operations --------------------------------------------------------------------

    /// Applies one operation, then lets the network settle for a moment.
    pub fn apply(&mut self, op: &Op) -> Result<(), SimFailure> {
        match op {
            Op::Open {
                client,
                server,
                allowed,
                up,
                down,
                fin_up,
                fin_down,
            } => {
                let (c, s) = (*client, self.clients + server);
                let port = if *allowed {
                    1 + self.streams.len() % 30000
                } else {
                    40000
                };
                let target = format!("127.0.0.1:{port}").parse().expect("target");
                let spk = self.net.peer_id(NodeId(s));
                let id = self.nodes[c]
                    .endpoint
                    .open(self.now, spk, target)
                    .map_err(|e| SimFailure(format!("open failed: {e}")))?;
                let n = self.streams.len() as u64;
                let mut rec = StreamRec {
                    id,
                    opener: c,
                    acceptor: s,
                    flows: [Flow::default(), Flow::default()],
                    ended: [None, None],
                    seen_by_acceptor: false,
                    down_plan: (*down, *fin_down),
                    stalled: [false, false],
                    excuses_at_open: self.excuses(c, s),
                };
                rec.flows[0].seed = self.seed ^ (n << 1);
                rec.flows[1].seed = self.seed ^ (n << 1 | 1);
                rec.flows[0].pending = *up;
                rec.flows[0].fin_wanted = *fin_up;
                self.by_id.insert(id, self.streams.len());
                self.streams.push(rec);
                self.nodes[c].try_write.insert(id);
                self.stats.streams += 1;
            }
            Op::Write { stream, end, bytes } => {
                if let Some((node, flow, id)) = self.locate(*stream, *end) {
                    let f = &mut self.streams[*stream].flows[flow];
                    if !f.fin_wanted {
                        f.pending += bytes;
                        self.nodes[node].try_write.insert(id);
                    }
                }
            }
            Op::Finish { stream, end } => {
                if let Some((node, flow, id)) = self.locate(*stream, *end) {
                    self.streams[*stream].flows[flow].fin_wanted = true;
                    self.nodes[node].try_write.insert(id);
                }
            }
            Op::Reset { stream, end } => {
                if let Some((node, _, id)) = self.locate(*stream, *end) {
                    if self.nodes[node]
                        .endpoint
                        .reset(id, StreamCode::Cancelled)
                        .is_ok()
                    {
                        let side = self.streams[*stream].side_of(node).expect("side");
                        self.end_side(*stream, side, "reset locally (2000)".into())?;
                    }
                }
            }
            Op::Stall { stream, end, on } => {
                if let Some((node, _, id)) = self.locate(*stream, *end) {
                    let side = usize::from(*end == End::Acceptor);
                    self.streams[*stream].stalled[side] = *on;
                    if !on {
                        self.nodes[node].try_read.insert(id);
                    }
                }
            }
            Op::Flap {
                client,
                server,
                outage,
            } => {
                let (c, s) = (NodeId(*client), NodeId(self.clients + server));
                self.net.link_down(c, s);
                self.run_for(*outage)?;
                self.net.link_up(c, s);
            }
            Op::Restart { node } => self.restart(*node)?,
            Op::RefuseNext { server } => self.nodes[self.clients + server].refuse_next = true,
            Op::Advance(d) => self.run_for(*d)?,
            Op::Blackout {
                client,
                server,
                outage,
            } => {
                let (c, s) = (NodeId(*client), NodeId(self.clients + server));
                self.net.set_blackout(c, s, true);
                self.run_for(*outage)?;
                self.net.set_blackout(c, s, false);
            }
            Op::Path {
                client,
                server,
                direct,
            } => {
                let (c, s) = (NodeId(*client), NodeId(self.clients + server));
                self.net.set_direct(c, s, *direct);
            }
        }
        self.run_for(Duration::from_millis(20))
    }

    fn excuses(&self, client: usize, server: usize) -> (u64, u64, u64) {
        (
            self.nodes[client].restarts,
            self.nodes[server].restarts,
            self.expiries.get(&(client, server)).copied().unwrap_or(0),
        )
    }

    /// Whether stream `ix` may have lost its session at node `i` now: one of its nodes
    /// restarted since it opened, a session between them expired after the grace, or the
    /// node's session with the other end has been suspended for at least the grace.
    fn session_end_excused(&self, i: usize, ix: usize) -> bool {
        let rec = &self.streams[ix];
        let restarted = self.excuses(rec.opener, rec.acceptor) != rec.excuses_at_open;
        let other = if i == rec.opener {
            rec.acceptor
        } else {
            rec.opener
        };
        let grace = self.nodes[i].config.resume_grace;
        let outlasted = self
            .suspended_since
            .get(&(i, self.net.peer_id(NodeId(other))))
            .is_some_and(|since| self.now - *since >= grace);
        restarted || outlasted
    }

    /// The node and flow index for one end of stream `i`, if that end is still live.
    fn locate(&self, i: usize, end: End) -> Option<(usize, usize, StreamId)> {
        let rec = self.streams.get(i)?;
        let (node, side) = match end {
            End::Opener => (rec.opener, 0),
            End::Acceptor => (rec.acceptor, 1),
        };
        if rec.ended[side].is_some() || (side == 1 && !rec.seen_by_acceptor) {
            return None;
        }
        Some((node, side, rec.id))
    }

    fn restart(&mut self, node: usize) -> Result<(), SimFailure> {
        self.net.restart(NodeId(node));
        self.stats.restarts += 1;
        let n = &mut self.nodes[node];
        n.restarts += 1;
        n.endpoint = Endpoint::new(n.config.clone(), node_seed(self.seed, node, n.restarts))
            .expect("config");
        self.suspended_since.retain(|(n, _), _| *n != node);
        n.held.clear();
        n.timeout = None;
        n.try_read.clear();
        n.try_write.clear();
        n.incoming.clear();
        for i in 0..self.streams.len() {
            if let Some(side) = self.streams[i].side_of(node) {
                if self.streams[i].ended[side].is_none()
                    && (side == 0 || self.streams[i].seen_by_acceptor)
                {
                    self.end_side(i, side, "lost with its node (restart)".into())?;
                }
            }
        }
        if !self.nodes[node].is_server {
            self.connect_client(node);
        }
        Ok(())
    }

    // ----- running -----------------------------------------------------------------------

    /// Runs for `d` of virtual time, jumping from event to event.
    pub fn run_for(&mut self, d: Duration) -> Result<(), SimFailure> {
        let until = self.now + d;
        loop {
            let mut moved = true;
            let mut rounds = 0;
            while moved {
                moved = false;
                for i in 0..self.nodes.len() {
                    moved |= self.pump(i)?;
                }
                self.stats.steps += 1;
                self.check_bounds()?;
                rounds += 1;
                if rounds > 100_000 {
                    fail!(
                        "livelock: no quiet moment after 100000 rounds at {:?}",
                        self.elapsed()
                    );
                }
            }
            let next = [
                self.net.next_deadline(),
                self.nodes.iter().filter_map(|n| n.timeout).min(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.net.advance_to(self.now);
                }
                _ => {
                    self.now = until;
                    self.net.advance_to(until);
                    return Ok(());
                }
            }
        }
    }

    /// One node: transport events in, application actions, outputs out.
    fn pump(&mut self, i: usize) -> Result<bool, SimFailure> {
        let node = NodeId(i);
        let now = self.now;
        let mut moved = false;
        while let Some(ev) = self.net.poll_event(node) {
            moved = true;
            match ev {
                TransportEvent::SendReady(peer) => {
                    if let Some(p) = self.nodes[i].held.remove(&peer) {
                        match self.net.send(node, peer, p) {
                            Ok(()) => self.nodes[i]
                                .endpoint
                                .handle_input(now, Input::SendReady(peer)),
                            Err(toxtun_proto::SendError::QueueFull(p)) => {
                                self.nodes[i].held.insert(peer, p);
                            }
                            Err(_) => {}
                        }
                    }
                }
                TransportEvent::FriendOffline(peer) => {
                    // The link is gone, and with it the packet we were holding.
                    self.nodes[i].held.remove(&peer);
                    self.nodes[i]
                        .endpoint
                        .handle_input(now, Input::PeerOffline(peer));
                }
                other => {
                    if let Some(input) = other.into_input() {
                        self.nodes[i].endpoint.handle_input(now, input);
                    }
                }
            }
        }
        if self.nodes[i].timeout.is_some_and(|t| t <= now) {
            self.nodes[i].timeout = None;
            self.nodes[i].endpoint.handle_timeout(now);
            moved = true;
        }
        // Events first, so the application never acts on a stream that already ended.
        moved |= self.drain(i)?;
        if self.app(i)? {
            moved = true;
            self.drain(i)?;
        }
        Ok(moved)
    }

    /// Carries out everything node `i`'s endpoint wants done now.
    fn drain(&mut self, i: usize) -> Result<bool, SimFailure> {
        let node = NodeId(i);
        let now = self.now;
        let mut moved = false;
        loop {
            let out = self.nodes[i].endpoint.poll_output(now);
            match out {
                None => {
                    self.nodes[i].timeout = None;
                    break;
                }
                Some(Output::Timeout(t)) => {
                    self.nodes[i].timeout = Some(t);
                    break;
                }
                Some(Output::Transmit { peer, packet }) => {
                    moved = true;
                    if trace() {
                        let f = toxtun_proto::wire::Frame::decode(&packet).map(|f| match f {
                            toxtun_proto::wire::Frame::Data {
                                offset, payload, ..
                            } => {
                                format!("DATA @{offset} +{}", payload.len())
                            }
                            other => format!("{other:?}"),
                        });
                        eprintln!("{:?} node {i} -> {peer}: {f:?}", self.now - self.start);
                    }
                    // The mock's lossy channel never refuses (it drops), so only the lossless
                    // lane is ever blocked; lossy packets may go meanwhile.
                    if !toxtun_proto::transport::PacketKind::is_lossy(&packet)
                        && self.nodes[i].held.contains_key(&peer)
                    {
                        fail!("node {i} sent a lossless packet to a peer whose lossless queue it was told is full");
                    }
                    match self.net.send(node, peer, packet) {
                        Ok(()) => {}
                        Err(toxtun_proto::SendError::QueueFull(p)) => {
                            self.nodes[i].held.insert(peer, p);
                            self.nodes[i]
                                .endpoint
                                .handle_input(now, Input::SendBlocked(peer));
                        }
                        // Offline: the transport will report it; the endpoint ends the
                        // session then. Other errors would be harness bugs.
                        Err(toxtun_proto::SendError::Offline) => {}
                        Err(e) => fail!("node {i}: transport refused a packet: {e}"),
                    }
                }
                Some(Output::Event(e)) => {
                    moved = true;
                    if trace() {
                        eprintln!("{:?} node {i}: {e:?}", self.now - self.start);
                    }
                    self.on_event(i, e)?;
                }
            }
        }
        Ok(moved)
    }

    fn on_event(&mut self, i: usize, e: Event) -> Result<(), SimFailure> {
        match &e {
            Event::SessionSuspended { peer } => {
                self.suspended_since.entry((i, *peer)).or_insert(self.now);
            }
            Event::SessionResumed { peer }
            | Event::SessionEstablished { peer }
            | Event::SessionClosed { peer, .. } => {
                let since = self.suspended_since.remove(&(i, *peer));
                let grace = self.nodes[i].config.resume_grace;
                let expired = matches!(
                    e,
                    Event::SessionClosed {
                        code: SessionCode::LinkLost,
                        ..
                    }
                ) && since.is_some_and(|t| self.now - t >= grace);
                if expired {
                    let other = (0..self.nodes.len())
                        .find(|&n| self.net.peer_id(NodeId(n)) == *peer)
                        .expect("a node of the scenario");
                    let pair = if i < self.clients {
                        (i, other)
                    } else {
                        (other, i)
                    };
                    *self.expiries.entry(pair).or_default() += 1;
                }
            }
            _ => {}
        }
        match e {
            Event::FriendRequest {
                peer,
                decision: Ok(()),
            } => {
                let _ = self.net.accept_friend(NodeId(i), peer);
            }
            Event::StreamIncoming { stream, .. } => {
                let Some(&ix) = self.by_id.get(&stream) else {
                    fail!("node {i} got a stream nobody opened: {stream}");
                };
                if self.streams[ix].acceptor != i {
                    fail!("stream {stream} arrived at the wrong node");
                }
                if self.streams[ix].seen_by_acceptor {
                    fail!("stream {stream} arrived twice (a dead stream was reopened)");
                }
                self.streams[ix].seen_by_acceptor = true;
                self.nodes[i].incoming.push(stream);
            }
            Event::StreamReadable { stream } => {
                self.nodes[i].try_read.insert(stream);
            }
            Event::StreamWritable { stream } => {
                self.nodes[i].try_write.insert(stream);
            }
            Event::SessionClosed { peer, code, .. }
                if matches!(
                    code,
                    SessionCode::ProtocolViolation
                        | SessionCode::FlowControl
                        | SessionCode::HandshakeRequired
                        | SessionCode::VersionMismatch
                        | SessionCode::Unauthorized
                        | SessionCode::BadSecret
                ) =>
            {
                fail!("node {i}: session with {peer:?} closed with {code}");
            }
            Event::StreamRefused { stream, code } => {
                if is_violation(code) {
                    fail!("node {i}: stream {stream} refused with {code}");
                }
                let ix = self.index(stream)?;
                self.end_side(ix, 0, format!("refused {code}"))?;
            }
            Event::StreamReset { stream, code, .. } => {
                if is_violation(code) {
                    fail!("node {i}: stream {stream} reset with {code}: correct peers never violate the protocol");
                }
                let ix = self.index(stream)?;
                if code == StreamCode::SessionClosed && !self.session_end_excused(i, ix) {
                    fail!(
                        "node {i}: stream {stream} ended with {code}, yet neither node restarted \
                         and no outage outlasted the resume grace: link flaps must not end streams"
                    );
                }
                let side = self.streams[ix].side_of(i).expect("side");
                self.end_side(ix, side, format!("reset {code}"))?;
            }
            Event::StreamClosed { stream } => {
                let ix = self.index(stream)?;
                let side = self.streams[ix].side_of(i).expect("side");
                let rec = &self.streams[ix];
                let (mine, theirs) = (&rec.flows[side], &rec.flows[1 - side]);
                if !mine.fin_sent {
                    fail!("stream {stream} closed at node {i} before it sent FIN");
                }
                if !theirs.eof || theirs.read != theirs.written || !theirs.fin_sent {
                    fail!(
                        "stream {stream} closed at node {i} having read {} of {} bytes (eof {})",
                        theirs.read,
                        theirs.written,
                        theirs.eof
                    );
                }
                self.end_side(ix, side, "closed".into())?;
            }
            _ => {}
        }
        Ok(())
    }

    fn index(&self, stream: StreamId) -> Result<usize, SimFailure> {
        match self.by_id.get(&stream) {
            Some(&ix) => Ok(ix),
            None => fail!("event for unknown stream {stream}"),
        }
    }

    fn end_side(&mut self, ix: usize, side: usize, how: String) -> Result<(), SimFailure> {
        let rec = &mut self.streams[ix];
        if let Some(prev) = &rec.ended[side] {
            fail!(
                "stream {} ended twice on one side: {prev}, then {how}",
                rec.id
            );
        }
        if how == "closed" {
            if rec.ended[1 - side].as_deref() == Some("closed") {
                self.stats.closed_clean += 1;
            }
        } else {
            self.stats.ended_with_reason += 1;
        }
        rec.ended[side] = Some(how);
        Ok(())
    }

    /// The scripted application of node `i`: accept or refuse, write, read and check.
    fn app(&mut self, i: usize) -> Result<bool, SimFailure> {
        let mut moved = false;
        for stream in std::mem::take(&mut self.nodes[i].incoming) {
            moved = true;
            let ix = self.index(stream)?;
            if self.streams[ix].ended[1].is_some() {
                continue; // reset (e.g. by a link flap) before the application got to it
            }
            if self.nodes[i].refuse_next {
                self.nodes[i].refuse_next = false;
                self.nodes[i]
                    .endpoint
                    .refuse(stream, StreamCode::TargetRefused)
                    .map_err(|e| SimFailure(format!("refuse: {e}")))?;
                self.end_side(ix, 1, "refused by its application".into())?;
                continue;
            }
            self.nodes[i]
                .endpoint
                .accept(stream)
                .map_err(|e| SimFailure(format!("accept: {e}")))?;
            let (down, fin) = self.streams[ix].down_plan;
            let f = &mut self.streams[ix].flows[1];
            f.pending += down;
            f.fin_wanted |= fin;
            self.nodes[i].try_write.insert(stream);
        }
        for stream in std::mem::take(&mut self.nodes[i].try_write) {
            let Some(&ix) = self.by_id.get(&stream) else {
                continue;
            };
            let Some(side) = self.streams[ix].side_of(i) else {
                continue;
            };
            if self.streams[ix].ended[side].is_some()
                || (side == 1 && !self.streams[ix].seen_by_acceptor)
            {
                continue;
            }
            loop {
                let f = &self.streams[ix].flows[side];
                if f.pending == 0 {
                    break;
                }
                let len = f.pending.min(64 * 1024) as usize;
                let data = bytes_at(f.seed, f.written, len);
                match self.nodes[i].endpoint.write(stream, data) {
                    Ok(n) => {
                        moved = true;
                        let f = &mut self.streams[ix].flows[side];
                        f.pending -= n as u64;
                        f.written += n as u64;
                        if n < len {
                            break;
                        }
                    }
                    Err(WriteError::Blocked) => break,
                    // It ended during this pass (e.g. closed by our own FIN): the event
                    // follows in the next drain.
                    Err(WriteError::UnknownStream) => break,
                    Err(e) => fail!("write on live stream {stream} failed: {e}"),
                }
            }
            let f = &self.streams[ix].flows[side];
            if f.pending == 0 && f.fin_wanted && !f.fin_sent {
                match self.nodes[i].endpoint.finish(stream) {
                    Ok(()) => {
                        moved = true;
                        self.streams[ix].flows[side].fin_sent = true;
                    }
                    Err(toxtun_proto::StreamError::UnknownStream) => {}
                    Err(e) => fail!("finish on live stream {stream} failed: {e}"),
                }
            }
        }
        for stream in std::mem::take(&mut self.nodes[i].try_read) {
            let Some(&ix) = self.by_id.get(&stream) else {
                continue;
            };
            let Some(side) = self.streams[ix].side_of(i) else {
                continue;
            };
            if self.streams[ix].ended[side].is_some()
                || self.streams[ix].stalled[side]
                || (side == 1 && !self.streams[ix].seen_by_acceptor)
            {
                continue;
            }
            loop {
                match self.nodes[i].endpoint.read(stream, usize::MAX) {
                    Ok(Some(chunk)) => {
                        moved = true;
                        let f = &mut self.streams[ix].flows[1 - side];
                        for (k, b) in chunk.iter().enumerate() {
                            let off = f.read + k as u64;
                            if *b != byte_at(f.seed, off) {
                                fail!("stream {stream}: byte {off} differs (lost, duplicated or reordered bytes)");
                            }
                        }
                        f.read += chunk.len() as u64;
                        self.stats.bytes_checked += chunk.len() as u64;
                        if f.read > f.written {
                            fail!(
                                "stream {stream}: read {} bytes, only {} written",
                                f.read,
                                f.written
                            );
                        }
                    }
                    Ok(None) => {
                        let f = &mut self.streams[ix].flows[1 - side];
                        if !f.eof {
                            moved = true;
                            if !f.fin_sent || f.read != f.written {
                                fail!(
                                    "stream {stream}: end of stream after {} of {} bytes",
                                    f.read,
                                    f.written
                                );
                            }
                            f.eof = true;
                        }
                        break;
                    }
                    Err(ReadError::Blocked) | Err(ReadError::UnknownStream) => break,
                    Err(e) => fail!("read on live stream {stream} failed: {e}"),
                }
            }
        }
        Ok(moved)
    }

    /// The flow-control bounds on every endpoint.
    fn check_bounds(&self) -> Result<(), SimFailure> {
        for (i, n) in self.nodes.iter().enumerate() {
            let ep = &n.endpoint;
            for peer in ep.peers() {
                let Some(ss) = ep.session_stats(peer) else {
                    fail!("node {i}: listed peer {peer} has no session");
                };
                let bound = ep.config().session_window as usize + ep.config().max_packet_size;
                if ss.retransmit_buffered > bound {
                    fail!(
                        "node {i}: frame log holds {} bytes > bound {bound}",
                        ss.retransmit_buffered
                    );
                }
            }
            // Windows start at stream_window and grow, when readers keep up, to at most
            // max_stream_window; what a peer's streams grew together stays within the
            // session window.
            let first = u64::from(ep.config().stream_window);
            let max = u64::from(ep.config().max_stream_window);
            let mut grown: BTreeMap<PeerId, u64> = BTreeMap::new();
            for (stream, peer) in ep.streams() {
                let Some(st) = ep.stream_stats(stream) else {
                    fail!("node {i}: indexed stream {stream} has no state");
                };
                if st.recv_buffered as u64 > st.recv_window || st.recv_window > max {
                    fail!(
                        "node {i}: stream {stream} buffers {} > window {} (at most {max})",
                        st.recv_buffered,
                        st.recv_window
                    );
                }
                let g = grown.entry(peer).or_default();
                *g += st.recv_window - first;
                if *g > ep.config().session_window {
                    fail!("node {i}: peer {peer}'s stream windows grew {g} > session window");
                }
                // All endpoints share one configuration, so the peer's bound is ours.
                if st.send_buffered as u64 > max {
                    fail!(
                        "node {i}: stream {stream} holds {} unacknowledged > peer window {max}",
                        st.send_buffered
                    );
                }
                if let Some(ss) = ep.session_stats(peer) {
                    if ss.recv_buffered > ep.config().session_window {
                        fail!("node {i}: peer buffers {} > budget", ss.recv_buffered);
                    }
                }
            }
        }
        Ok(())
    }

    /// Heals every fault, resumes every reader, finishes every writer, runs the timeouts,
    /// and checks that every stream ended on both sides.
    pub fn finish(&mut self) -> Result<(), SimFailure> {
        self.stats.flaps += self.net.stats().link_downs;
        self.stats.lossy_packets += self.net.stats().lossy_sent;
        self.net.heal();
        for c in 0..self.clients {
            for s in self.clients..self.nodes.len() {
                self.net.set_flaps(NodeId(c), NodeId(s), None);
                self.net.link_up(NodeId(c), NodeId(s));
            }
        }
        for ix in 0..self.streams.len() {
            self.streams[ix].stalled = [false, false];
            for side in 0..2 {
                let node = if side == 0 {
                    self.streams[ix].opener
                } else {
                    self.streams[ix].acceptor
                };
                self.streams[ix].flows[side].fin_wanted = true;
                let id = self.streams[ix].id;
                self.nodes[node].try_write.insert(id);
                self.nodes[node].try_read.insert(id);
            }
        }
        // Long enough for open timeouts (30 s), idle timeouts (30 s) and reconnects.
        for _ in 0..40 {
            self.run_for(Duration::from_secs(5))?;
            if self.all_ended() {
                break;
            }
        }
        for rec in &self.streams {
            if rec.ended[0].is_none() {
                fail!(
                    "stream {} never ended at its opener (acceptor: {:?}; flows {:?})",
                    rec.id,
                    rec.ended[1],
                    rec.flows
                );
            }
            if rec.seen_by_acceptor && rec.ended[1].is_none() {
                fail!(
                    "stream {} never ended at its acceptor (opener: {:?})",
                    rec.id,
                    rec.ended[0]
                );
            }
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let left = n.endpoint.streams().count();
            if left > 0 {
                fail!("node {i} still holds {left} streams after every stream ended");
            }
        }
        Ok(())
    }

    fn all_ended(&self) -> bool {
        self.streams
            .iter()
            .all(|r| r.ended[0].is_some() && (!r.seen_by_acceptor || r.ended[1].is_some()))
    }
}

/// Codes that only a broken or hostile peer causes.
fn is_violation(code: StreamCode) -> bool {
    matches!(
        code,
        StreamCode::FlowControl
            | StreamCode::StreamState
            | StreamCode::UnknownStream
            | StreamCode::DuplicateStream
            | StreamCode::InvalidTarget
            | StreamCode::NotAccepting
    )
}

fn node_seed(seed: u64, node: usize, restarts: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&(node as u64).to_le_bytes());
    s[16..24].copy_from_slice(&restarts.to_le_bytes());
    s
}

/// Runs the scenario `(seed, n_ops)`: shape and operations drawn from the seed.
pub fn run_scenario(seed: u64, n_ops: usize) -> Result<SimStats, SimFailure> {
    run_shaped(seed, n_ops, false)
}

/// Like [`run_scenario`], with random flaps on every link all the time: up for 0.2–2 s on
/// average, down for 50 ms up to 60 s (within the resume grace, so no stream may end for
/// it), beside the scripted flaps and restarts.
pub fn run_flappy_scenario(seed: u64, n_ops: usize) -> Result<SimStats, SimFailure> {
    run_shaped(seed, n_ops, true)
}

fn run_shaped(seed: u64, n_ops: usize, flappy: bool) -> Result<SimStats, SimFailure> {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[31] = 0x5C;
    let mut rng = ChaCha8Rng::from_seed(s);
    let mut cfg = SimConfig::random(&mut rng);
    if flappy {
        cfg.flaps = Some(FlapPlan {
            mean_up: Duration::from_millis(200 + rng.next_u64() % 1800),
            min_down: Duration::from_millis(50),
            max_down: Duration::from_millis(50 + rng.next_u64() % 60_000),
        });
    }
    let ops = random_ops(&mut rng, &cfg, n_ops);
    let mut sim = Sim::new(seed, &cfg);
    sim.run_for(Duration::from_secs(2))?;
    for (k, op) in ops.iter().enumerate() {
        if trace() {
            eprintln!("{:?} op {k}: {op:?}", sim.now - sim.start);
        }
        sim.apply(op)
            .map_err(|e| SimFailure(format!("op {k} {op:?}: {e}\nconfig {cfg:?}")))?;
    }
    sim.finish()
        .map_err(|e| SimFailure(format!("at the end: {e}\nconfig {cfg:?}")))?;
    Ok(sim.stats)
}

/// `TOXTUN_SIM_TRACE=1` prints every operation, packet and event of a replayed scenario.
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("TOXTUN_SIM_TRACE").is_some_and(|v| v == "1"))
}
