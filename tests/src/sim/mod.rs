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
    ClientRule, Endpoint, EndpointConfig, Input, ListenRules, PeerId, ServerPolicy, StreamCode,
    StreamId, TargetRules, TransportEvent,
};
use toxtun_transport_mock::{FlapPlan, Network, NodeId};

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

mod app;
mod apply;
mod checks;
mod datagrams;
mod events;
mod ops;

pub use ops::{random_ops, Op, SimConfig};

/// Which end of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The side that opened it.
    Opener,
    /// The side that accepted it.
    Acceptor,
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
    /// Streams a server opened toward a client for its listener (reverse forwarding).
    pub reverse_streams: u64,
    /// UDP datagrams clients sent on their flows.
    pub datagrams_sent: u64,
    /// Of them, those that reached the server (intact, once each).
    pub datagrams_delivered: u64,
    /// Of them, those whose echo came back to the client (intact, once each).
    pub datagrams_echoed: u64,
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
    /// (client, server node) pairs whose client asked the server to listen (`Op::Reverse`).
    listeners_asked: BTreeSet<(usize, usize)>,
    /// Per (server node, client): the listener the server's application listens for.
    listening: BTreeMap<(usize, PeerId), u32>,
    /// Every datagram sent, by its number: the client and server nodes it goes between.
    datagrams: BTreeMap<u64, (usize, usize)>,
    /// Datagrams that reached their server, and whose echo reached their client.
    delivered: BTreeSet<u64>,
    echoed: BTreeSet<u64>,
}

const ALLOWED_PORTS: &str = "127.0.0.1:1-30000";
/// Where clients may have servers listen (`Op::Reverse` binds 9000 + the client's index).
const LISTEN_PORTS: &str = "127.0.0.1:9000-9100";

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
            config.congestion = cfg.congestion;
            let is_server = i >= cfg.clients;
            if is_server {
                config.server = Some(server_policy(&client_keys));
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
            listeners_asked: BTreeSet::new(),
            listening: BTreeMap::new(),
            datagrams: BTreeMap::new(),
            delivered: BTreeSet::new(),
            echoed: BTreeSet::new(),
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

    pub(super) fn connect_client(&mut self, c: usize) {
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
    pub(super) fn pump(&mut self, i: usize) -> Result<bool, SimFailure> {
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
        self.stats.datagrams_delivered = self.delivered.len() as u64;
        self.stats.datagrams_echoed = self.echoed.len() as u64;
        Ok(())
    }

    pub(super) fn all_ended(&self) -> bool {
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

/// Every server's policy: each client by key, with the ports it may reach and where it
/// may have the server listen.
fn server_policy(client_keys: &[PeerId]) -> ServerPolicy {
    let rules = |p: &str| TargetRules::new(vec![p.parse().expect("rule")]);
    ServerPolicy {
        clients: client_keys
            .iter()
            .map(|k| ClientRule {
                peer: *k,
                targets: rules(ALLOWED_PORTS).with_udp(vec![ALLOWED_PORTS.parse().expect("rule")]),
            })
            .collect(),
        listen: ListenRules {
            clients: client_keys
                .iter()
                .map(|k| (*k, rules(LISTEN_PORTS)))
                .collect(),
            ..Default::default()
        },
        ..Default::default()
    }
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
