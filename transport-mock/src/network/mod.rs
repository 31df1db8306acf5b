//! The sans-IO network: nodes, friendships, links and packets in flight, under a virtual
//! clock the caller advances. Deterministic for a seed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
mod link;

use link::{random_up, Dir, Link};
pub use link::{BurstLoss, FlapPlan, LinkConfig};

use toxtun_proto::{
    FriendAdded, FriendError, PacketKind, PeerId, SendError, ToxId, TransportEvent, MAX_PACKET_SIZE,
};

/// The longest friend request message c-toxcore takes (`TOX_MAX_FRIEND_REQUEST_LENGTH`).
pub const MAX_FRIEND_REQUEST_LEN: usize = 1016;

/// A node of the network, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub usize);

#[derive(Debug)]
struct Node {
    id: ToxId,
    running: bool,
    friends: BTreeSet<PeerId>,
    events: VecDeque<TransportEvent>,
    group: u32,
}

/// Counters of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Packets delivered.
    pub packets_delivered: u64,
    /// Bytes delivered.
    pub bytes_delivered: u64,
    /// Packets lost because their link went down while they were in flight.
    pub packets_lost: u64,
    /// Times a link went down.
    pub link_downs: u64,
    /// `send` calls answered with `QueueFull`.
    pub queue_full: u64,
    /// Lossy packets sent.
    pub lossy_sent: u64,
    /// Lossy packets dropped (at random, at a bottleneck, or on a relayed link).
    pub lossy_dropped: u64,
}

/// An in-memory Tox-like network.
#[derive(Debug)]
pub struct Network {
    now: Instant,
    rng: ChaCha8Rng,
    nodes: Vec<Node>,
    by_key: BTreeMap<PeerId, NodeId>,
    links: BTreeMap<(usize, usize), Link>,
    default_link: LinkConfig,
    requests: VecDeque<(Instant, NodeId, NodeId, Bytes)>,
    stats: NetStats,
}

impl Network {
    /// An empty network whose clock starts at `start`.
    pub fn new(seed: u64, start: Instant) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        Network {
            now: start,
            rng: ChaCha8Rng::from_seed(s),
            nodes: Vec::new(),
            by_key: BTreeMap::new(),
            links: BTreeMap::new(),
            default_link: LinkConfig::default(),
            requests: VecDeque::new(),
            stats: NetStats::default(),
        }
    }

    /// The network's clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// The configuration of links made from now on.
    pub fn set_default_link(&mut self, config: LinkConfig) {
        self.default_link = config;
    }

    /// Adds a node with a fresh key pair drawn from the seed; it is running and connected.
    pub fn add_node(&mut self) -> NodeId {
        loop {
            let mut pk = [0u8; 32];
            self.rng.fill_bytes(&mut pk);
            let mut nospam = [0u8; 4];
            self.rng.fill_bytes(&mut nospam);
            let pk = PeerId(pk);
            if self.by_key.contains_key(&pk) {
                continue;
            }
            let id = NodeId(self.nodes.len());
            let mut events = VecDeque::new();
            events.push_back(TransportEvent::SelfConnection { connected: true });
            self.nodes.push(Node {
                id: ToxId::new(pk, nospam),
                running: true,
                friends: BTreeSet::new(),
                events,
                group: 0,
            });
            self.by_key.insert(pk, id);
            return id;
        }
    }

    /// A node's Tox ID.
    pub fn tox_id(&self, node: NodeId) -> ToxId {
        self.nodes[node.0].id
    }

    /// A node's public key.
    pub fn peer_id(&self, node: NodeId) -> PeerId {
        self.nodes[node.0].id.public_key
    }

    /// The node with this key.
    pub fn node_of(&self, peer: PeerId) -> Option<NodeId> {
        self.by_key.get(&peer).copied()
    }

    /// Every node.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> {
        (0..self.nodes.len()).map(NodeId)
    }

    fn key(a: NodeId, b: NodeId) -> (usize, usize) {
        (a.0.min(b.0), a.0.max(b.0))
    }

    fn link_mut(&mut self, a: NodeId, b: NodeId) -> &mut Link {
        let now = self.now;
        let config = self.default_link;
        self.links.entry(Self::key(a, b)).or_insert_with(|| Link {
            config,
            forced_down: false,
            online: false,
            up_at: None,
            dirs: [Dir::new(now), Dir::new(now)],
            flaps: None,
            flap_at: None,
            flapped_down: false,
            blackout: false,
        })
    }

    /// Configures the link between two nodes.
    pub fn set_link(&mut self, a: NodeId, b: NodeId, config: LinkConfig) {
        self.link_mut(a, b).config = config;
    }

    /// Whether the friend link between two nodes is up.
    pub fn is_online(&self, a: NodeId, b: NodeId) -> bool {
        self.links.get(&Self::key(a, b)).is_some_and(|l| l.online)
    }

    // ----- what a node does --------------------------------------------------------------

    /// Node `node` sends a friend request to `to` with `message`.
    pub fn add_friend(
        &mut self,
        node: NodeId,
        to: &ToxId,
        message: &[u8],
    ) -> Result<FriendAdded, FriendError> {
        let me = self.peer_id(node);
        if to.public_key == me {
            return Err(FriendError::OwnKey);
        }
        if message.is_empty() || message.len() > MAX_FRIEND_REQUEST_LEN {
            return Err(FriendError::Message {
                max: MAX_FRIEND_REQUEST_LEN,
            });
        }
        if !self.nodes[node.0].friends.insert(to.public_key) {
            return Err(FriendError::AlreadyFriend);
        }
        if let Some(target) = self.node_of(to.public_key) {
            // Tox drops requests whose nospam is wrong: the request simply never arrives.
            if self.nodes[target.0].id.nospam == to.nospam {
                let latency = self.link_mut(node, target).config.latency;
                self.requests.push_back((
                    self.now + latency,
                    node,
                    target,
                    Bytes::copy_from_slice(message),
                ));
            }
            self.update_link(node, target);
        }
        Ok(FriendAdded::RequestSent)
    }

    /// Node `node` adds `peer` as a friend without a request (accepting one).
    pub fn accept_friend(
        &mut self,
        node: NodeId,
        peer: PeerId,
    ) -> Result<FriendAdded, FriendError> {
        if peer == self.peer_id(node) {
            return Err(FriendError::OwnKey);
        }
        if !self.nodes[node.0].friends.insert(peer) {
            return Err(FriendError::AlreadyFriend);
        }
        if let Some(other) = self.node_of(peer) {
            self.update_link(node, other);
        }
        Ok(FriendAdded::Added)
    }

    /// Node `node` forgets `peer`.
    pub fn remove_friend(&mut self, node: NodeId, peer: PeerId) -> Result<(), FriendError> {
        if !self.nodes[node.0].friends.remove(&peer) {
            return Err(FriendError::Failed("not a friend".into()));
        }
        if let Some(other) = self.node_of(peer) {
            self.update_link(node, other);
        }
        Ok(())
    }

    /// Marks the link between `a` and `b` direct UDP or relayed; if it is up, both nodes are
    /// told, as c-toxcore reports a change of path.
    pub fn set_direct(&mut self, a: NodeId, b: NodeId, direct: bool) {
        let (pa, pb) = (self.peer_id(a), self.peer_id(b));
        let link = self.link_mut(a, b);
        if link.config.direct == direct {
            return;
        }
        link.config.direct = direct;
        if !direct && link.config.relay_drops_lossy {
            for d in &mut link.dirs {
                d.lossy.clear();
            }
        }
        if link.online {
            self.nodes[a.0]
                .events
                .push_back(TransportEvent::FriendPath { peer: pb, direct });
            self.nodes[b.0]
                .events
                .push_back(TransportEvent::FriendPath { peer: pa, direct });
        }
    }

    /// Node `node` sends a packet to `peer`: lossless (queued, in order) or lossy (maybe
    /// lost, duplicated or reordered on the way; dropped on a relayed link that drops them).
    pub fn send(&mut self, node: NodeId, peer: PeerId, packet: Bytes) -> Result<(), SendError> {
        if !self.nodes[node.0].running {
            return Err(SendError::Failed("node is stopped"));
        }
        if !self.nodes[node.0].friends.contains(&peer) {
            return Err(SendError::NotFriend);
        }
        if packet.is_empty() || packet.len() > MAX_PACKET_SIZE {
            return Err(SendError::Failed("packet size outside 1..=1373"));
        }
        let Some(kind) = PacketKind::of(&packet) else {
            return Err(SendError::Failed("first byte outside 160..=254"));
        };
        let lossy = kind == PacketKind::Lossy;
        let Some(other) = self.node_of(peer) else {
            return Err(SendError::Offline);
        };
        let now = self.now;
        let dir_ix = usize::from(node.0 > other.0);
        let jitter_draw = self.rng.next_u64();
        let link = self.link_mut(node, other);
        if !link.online {
            return Err(SendError::Offline);
        }
        let cfg = link.config;
        let blackout = link.blackout;
        let dir = &mut link.dirs[dir_ix];
        if lossy {
            let dropped = dir.send_lossy(&cfg, blackout, now, jitter_draw, packet);
            self.stats.lossy_sent += 1;
            self.stats.lossy_dropped += u64::from(dropped);
            return Ok(());
        }
        dir.send_lossless(&cfg, now, jitter_draw, packet)
            .map_err(|packet| {
                self.stats.queue_full += 1;
                SendError::QueueFull(packet)
            })
    }

    /// The next event for `node`, if any.
    pub fn poll_event(&mut self, node: NodeId) -> Option<TransportEvent> {
        self.nodes[node.0].events.pop_front()
    }

    /// Whether `node` has events waiting.
    pub fn has_events(&self, node: NodeId) -> bool {
        !self.nodes[node.0].events.is_empty()
    }

    // ----- faults ------------------------------------------------------------------------

    /// Forces the link between two nodes down (in-flight packets are lost).
    pub fn link_down(&mut self, a: NodeId, b: NodeId) {
        self.link_mut(a, b).forced_down = true;
        self.update_link(a, b);
    }

    /// Lets the link between two nodes come back (after its connect delay).
    pub fn link_up(&mut self, a: NodeId, b: NodeId) {
        self.link_mut(a, b).forced_down = false;
        self.update_link(a, b);
    }

    /// Starts (`true`) or ends a blackout of the path between two nodes: the friend link
    /// stays up and nobody is told, but nothing gets through. Lossy packets are lost;
    /// lossless ones wait, and when the blackout ends they arrive one latency later, in
    /// order (c-toxcore resends them once its peer answers again).
    pub fn set_blackout(&mut self, a: NodeId, b: NodeId, on: bool) {
        let now = self.now;
        let link = self.link_mut(a, b);
        if link.blackout == on {
            return;
        }
        link.blackout = on;
        if on {
            return;
        }
        let latency = link.config.latency;
        for d in &mut link.dirs {
            let mut last = now;
            for (t, _) in d.inflight.iter_mut() {
                *t = (*t).max(now + latency).max(last);
                last = *t;
            }
            d.last_arrival = d.last_arrival.max(last);
            d.busy_until = d.busy_until.max(now);
            d.lossless_busy_until = d.lossless_busy_until.max(now);
        }
    }

    /// Whether the path between two nodes is blacked out.
    pub fn is_blacked_out(&self, a: NodeId, b: NodeId) -> bool {
        self.links.get(&Self::key(a, b)).is_some_and(|l| l.blackout)
    }

    /// Flaps the link at random from now on (`None` stops flapping).
    pub fn set_flaps(&mut self, a: NodeId, b: NodeId, plan: Option<FlapPlan>) {
        let draw = self.rng.next_u64();
        let now = self.now;
        let link = self.link_mut(a, b);
        link.flaps = plan;
        link.flap_at = plan.map(|p| now + random_up(p, draw));
        if plan.is_none() && link.flapped_down {
            link.flapped_down = false;
            link.forced_down = false;
            self.update_link(a, b);
        }
    }

    /// Cuts `side` off from every other node (links across the cut go down).
    pub fn partition(&mut self, side: &[NodeId]) {
        for n in &mut self.nodes {
            n.group = 0;
        }
        for n in side {
            self.nodes[n.0].group = 1;
        }
        self.update_all();
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.group = 0;
        }
        self.update_all();
    }

    /// Stops a node: its links go down, its queued events are gone.
    pub fn stop(&mut self, node: NodeId) {
        self.nodes[node.0].running = false;
        self.nodes[node.0].events.clear();
        self.update_node_links(node);
    }

    /// Starts a stopped node. It keeps its keys and friends (as Tox's savedata does).
    pub fn start(&mut self, node: NodeId) {
        let n = &mut self.nodes[node.0];
        if !n.running {
            n.running = true;
            n.events
                .push_back(TransportEvent::SelfConnection { connected: true });
            self.update_node_links(node);
        }
    }

    /// Stops and starts a node at once: every state above the network is lost.
    pub fn restart(&mut self, node: NodeId) {
        self.stop(node);
        self.start(node);
    }

    fn update_all(&mut self) {
        let keys: Vec<(usize, usize)> = self.links.keys().copied().collect();
        for (a, b) in keys {
            self.update_link(NodeId(a), NodeId(b));
        }
    }

    fn update_node_links(&mut self, node: NodeId) {
        let keys: Vec<(usize, usize)> = self
            .links
            .keys()
            .filter(|(a, b)| *a == node.0 || *b == node.0)
            .copied()
            .collect();
        for (a, b) in keys {
            self.update_link(NodeId(a), NodeId(b));
        }
    }

    /// Brings the link's state in line with friendships, running nodes and faults.
    fn update_link(&mut self, a: NodeId, b: NodeId) {
        let (na, nb) = (&self.nodes[a.0], &self.nodes[b.0]);
        let reachable = na.running
            && nb.running
            && na.group == nb.group
            && na.friends.contains(&nb.id.public_key)
            && nb.friends.contains(&na.id.public_key);
        let (pa, pb) = (na.id.public_key, nb.id.public_key);
        let (ra, rb) = (na.running, nb.running);
        let now = self.now;
        let link = self.link_mut(a, b);
        let should = reachable && !link.forced_down;
        if should {
            if !link.online && link.up_at.is_none() {
                link.up_at = Some(now + link.config.connect_delay);
            }
            return;
        }
        link.up_at = None;
        if link.online {
            link.online = false;
            let mut lost = 0;
            for d in &mut link.dirs {
                lost += d.inflight.len() as u64;
                d.inflight.clear();
                d.lossy.clear();
                d.blocked = false;
            }
            self.stats.packets_lost += lost;
            self.stats.link_downs += 1;
            if ra {
                self.nodes[a.0]
                    .events
                    .push_back(TransportEvent::FriendOffline(pb));
            }
            if rb {
                self.nodes[b.0]
                    .events
                    .push_back(TransportEvent::FriendOffline(pa));
            }
        }
    }

    // ----- time --------------------------------------------------------------------------

    /// The earliest instant something is due (a packet, a request, a link coming up, a flap).
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.requests.front().map(|r| r.0);
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for link in self.links.values() {
            if let Some(t) = link.up_at {
                consider(t);
            }
            if let Some(t) = link.flap_at {
                consider(t);
            }
            for d in &link.dirs {
                if let Some((t, _)) = d.inflight.front().filter(|_| !link.blackout) {
                    consider(*t);
                }
                if let Some(t) = d.lossy.iter().map(|(t, _)| *t).min() {
                    consider(t);
                }
            }
        }
        next
    }

    /// Moves the clock to `t`, doing everything due on the way, in time order.
    pub fn advance_to(&mut self, t: Instant) {
        while let Some(due) = self.next_deadline().filter(|d| *d <= t) {
            self.now = self.now.max(due);
            self.fire(due);
        }
        self.now = self.now.max(t);
    }

    fn fire(&mut self, due: Instant) {
        // Friend requests (kept in send order; latencies may differ per link, so scan).
        let mut i = 0;
        while i < self.requests.len() {
            if self.requests[i].0 <= due {
                let (_, from, to, message) = self.requests.remove(i).expect("index valid");
                let from_pk = self.peer_id(from);
                let target = &mut self.nodes[to.0];
                if target.running && !target.friends.contains(&from_pk) {
                    target.events.push_back(TransportEvent::FriendRequest {
                        peer: from_pk,
                        message,
                    });
                }
            } else {
                i += 1;
            }
        }
        let keys: Vec<(usize, usize)> = self.links.keys().copied().collect();
        for (a, b) in keys {
            self.fire_link(NodeId(a), NodeId(b), due);
        }
    }

    fn fire_link(&mut self, a: NodeId, b: NodeId, due: Instant) {
        let (pa, pb) = (self.peer_id(a), self.peer_id(b));
        let draw = self.rng.next_u64();
        if self.link_mut(a, b).flap_if_due(due, draw) {
            self.update_link(a, b);
        }
        let link = self.link_mut(a, b);
        if link.come_up_if_due(due) {
            let direct = link.config.direct;
            for (node, peer) in [(a, pb), (b, pa)] {
                let events = &mut self.nodes[node.0].events;
                events.push_back(TransportEvent::FriendOnline(peer));
                if direct {
                    events.push_back(TransportEvent::FriendPath { peer, direct: true });
                }
            }
        }
        for (dir_ix, (from, to, from_pk)) in [(a, b, pa), (b, a, pb)].into_iter().enumerate() {
            self.deliver_due(a, b, dir_ix, (from, to, from_pk), due);
        }
    }

    /// Delivers what is due on one direction of the link `a`–`b`: lossy packets (lost
    /// instead in a blackout), then lossless ones in order, with `SendReady` to a sender
    /// that now has room.
    fn deliver_due(
        &mut self,
        a: NodeId,
        b: NodeId,
        dir_ix: usize,
        (from, to, from_pk): (NodeId, NodeId, PeerId),
        due: Instant,
    ) {
        let link = self.link_mut(a, b);
        let blackout = link.blackout;
        let dir = &mut link.dirs[dir_ix];
        if blackout {
            // Lossy packets due now are lost on the dark path; lossless ones wait.
            let before = dir.lossy.len();
            dir.lossy.retain(|(t, _)| *t > due);
            self.stats.lossy_dropped += (before - dir.lossy.len()) as u64;
            return;
        }
        for packet in dir.take_lossy_due(due) {
            self.deliver(to, from_pk, packet);
        }
        loop {
            let link = self.link_mut(a, b);
            let cap = link.config.queue_capacity;
            let Some((packet, ready)) = link.dirs[dir_ix].pop_lossless_due(due, cap) else {
                break;
            };
            self.deliver(to, from_pk, packet);
            if ready {
                let to_pk = self.peer_id(to);
                self.nodes[from.0]
                    .events
                    .push_back(TransportEvent::SendReady(to_pk));
            }
        }
    }

    /// A packet from `from` arrives at node `to`.
    fn deliver(&mut self, to: NodeId, from: PeerId, packet: Bytes) {
        self.stats.packets_delivered += 1;
        self.stats.bytes_delivered += packet.len() as u64;
        self.nodes[to.0]
            .events
            .push_back(TransportEvent::Packet { peer: from, packet });
    }
}
