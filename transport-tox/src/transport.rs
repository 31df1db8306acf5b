//! [`ToxTransport`]: a c-toxcore instance on its own thread, behind the [`Transport`] trait.
//!
//! The thread runs `tox_iterate`; callbacks only record events. The rest of the program
//! talks to it through shared queues and a condition variable: `send` puts the packet in
//! the friend's outgoing queue and wakes the thread at once (no waiting out the iteration
//! interval). When c-toxcore's congestion window is full (`SENDQ`), the packet stays at the
//! head of its queue and is retried after the next iteration: it is never dropped. When the
//! friend's queue is full, `send` answers `QueueFull` and later `SendReady`.
//!
//! Lossy packets (first byte 192..=254, the fast path) have their own short queue, sent
//! first on each wake-up; c-toxcore puts them on the wire at once over a direct UDP link.
//! A full lossy queue answers `QueueFull` too, and `SendReady` once it has room: a packet
//! dropped here would read to the fast path's congestion control as loss on the network,
//! and cut its window for what was only this thread being late (a scheduling hiccup on a
//! busy machine). Friend links report their path (`FriendPath`) whenever c-toxcore's
//! connection status moves between TCP and UDP.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use toxtun_proto::{
    FriendAdded, FriendError, PacketKind, PeerId, SendError, ToxId, Transport, TransportEvent,
    TransportStats,
};

use crate::bootstrap::BootstrapNode;
use crate::ffi;
use crate::identity;
use crate::tox::{RawTox, ToxError, ToxOptions};

mod thread;

/// How to run a Tox node.
#[derive(Debug, Clone)]
pub struct ToxConfig {
    /// Network options.
    pub options: ToxOptions,
    /// Where the identity (keys, nospam, friends) lives. Loaded at start (a damaged file is
    /// an error, never overwritten), created if missing, saved whenever friends change.
    /// `None`: a fresh identity each run, never saved.
    pub identity: Option<PathBuf>,
    /// Nodes to join the network through. Tests use a node they started on 127.0.0.1.
    pub bootstrap: Vec<BootstrapNode>,
    /// Packets waiting per friend before `send` answers `QueueFull`.
    pub queue_capacity: usize,
}

impl ToxConfig {
    /// A configuration with the given options and bootstrap nodes, no identity file.
    pub fn new(options: ToxOptions, bootstrap: Vec<BootstrapNode>) -> Self {
        ToxConfig {
            options,
            identity: None,
            bootstrap,
            queue_capacity: 128,
        }
    }
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// c-toxcore refused (bad identity data, port in use, bad proxy, …).
    #[error(transparent)]
    Tox(#[from] ToxError),
    /// The identity file is not a usable Tox save. It is left as it is: it may hold the
    /// only copy of keys that friends know.
    #[error(
        "identity file {path}: {error}. It was left untouched; move it aside to start with a \
         new identity (friends will need the new Tox ID)"
    )]
    DamagedIdentity {
        /// The file.
        path: PathBuf,
        /// What c-toxcore said.
        error: ToxError,
    },
    /// The identity file could not be read or written.
    #[error("identity file {path}: {error}")]
    Identity {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
}

/// Counters of the transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ToxStats {
    /// Packets handed to c-toxcore.
    pub packets_sent: u64,
    /// Times c-toxcore answered SENDQ (the packet was kept and retried).
    pub sendq: u64,
    /// Packets received.
    pub packets_received: u64,
    /// Packets dropped because their friend went offline while they waited.
    pub dropped_offline: u64,
    /// Lossy packets handed to c-toxcore.
    pub lossy_sent: u64,
    /// Lossy packets received.
    pub lossy_received: u64,
    /// Lossy packets c-toxcore refused (the link stopped being direct, say).
    pub lossy_dropped: u64,
    /// Times `send` answered `QueueFull`.
    pub queue_full: u64,
}

impl From<ToxStats> for TransportStats {
    fn from(t: ToxStats) -> TransportStats {
        let mut s = TransportStats::default();
        s.packets_sent = t.packets_sent;
        s.packets_received = t.packets_received - t.lossy_received;
        s.lossy_sent = t.lossy_sent;
        s.lossy_received = t.lossy_received;
        s.queue_full = t.queue_full;
        s.network_busy = t.sendq;
        s.dropped = t.dropped_offline + t.lossy_dropped;
        s
    }
}

/// How often the Tox thread iterates while packets flow (see `run`).
const ACTIVE_WAIT: Duration = Duration::from_micros(250);
/// How long packets flowing keep the Tox thread on `ACTIVE_WAIT`.
const ACTIVE_SPELL: Duration = Duration::from_millis(100);
/// How often the Tox thread iterates after an active spell, while an answer to what it
/// sent may still be on its way (see `WARM_SPELL`).
const WARM_WAIT: Duration = Duration::from_millis(1);
/// How long after the last packet the Tox thread still iterates every `WARM_WAIT`: a
/// reply comes a round trip after the request, and on a 150 ms path it came after the
/// active spell, when the thread slept c-toxcore's interval (up to 50 ms) before reading
/// it: the tunnel added 50 ms to every idle round trip there (201 against 151 ms), and
/// 1 ms on a 50 ms path. A second covers any path's round trip, for 1,000 wakeups.
const WARM_SPELL: Duration = Duration::from_secs(1);

/// Lossy packets waiting per friend before `send` answers `QueueFull`: at 1373 bytes,
/// 0.35 MiB, a few milliseconds at c-toxcore's packet rate. The fast path's pacer keeps it
/// near empty.
const LOSSY_QUEUE: usize = 256;

#[derive(Debug)]
struct Friend {
    number: u32,
    online: bool,
    /// The link is direct UDP.
    direct: bool,
}

#[derive(Debug, Default)]
struct Outgoing {
    queue: VecDeque<Bytes>,
    /// `send` answered `QueueFull` for a lossless packet; announce `SendReady` when there
    /// is room.
    blocked: bool,
    /// The same for a lossy packet. The lanes are apart: a full lossless queue (c-toxcore
    /// holding lossless packets back) does not delay the `SendReady` of a lossy one.
    lossy_blocked: bool,
    /// Lossy packets, sent before the lossless ones.
    lossy: VecDeque<Bytes>,
    /// Lossless packets the Tox thread took and is handing to c-toxcore: they still count
    /// against the queue's capacity.
    taken: usize,
    /// Lossy packets the Tox thread took, likewise.
    lossy_taken: usize,
}

/// One friend's queued packets, taken by the Tox thread to send with the lock released.
struct Batch {
    peer: PeerId,
    friend: u32,
    lossy: VecDeque<Bytes>,
    lossless: VecDeque<Bytes>,
}

enum Command {
    AddFriend(
        ToxId,
        Vec<u8>,
        std::sync::mpsc::SyncSender<Result<FriendAdded, FriendError>>,
    ),
    AcceptFriend(
        PeerId,
        std::sync::mpsc::SyncSender<Result<FriendAdded, FriendError>>,
    ),
    RemoveFriend(PeerId, std::sync::mpsc::SyncSender<Result<(), FriendError>>),
    Savedata(std::sync::mpsc::SyncSender<Vec<u8>>),
}

#[derive(Default)]
struct State {
    events: VecDeque<TransportEvent>,
    waker: Option<Waker>,
    friends: HashMap<PeerId, Friend>,
    outq: HashMap<PeerId, Outgoing>,
    commands: VecDeque<Command>,
    closed: bool,
    connected: bool,
    stats: ToxStats,
    /// The Tox thread waits on the condition variable (senders must wake it).
    sleeping: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A Tox node as a [`Transport`]. Dropping it stops the node (and saves its identity).
pub struct ToxTransport {
    shared: Arc<Shared>,
    id: ToxId,
    dht_id: [u8; 32],
    udp_port: Option<u16>,
    tcp_port: Option<u16>,
    max_packet: usize,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ToxTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToxTransport")
            .field("id", &self.id)
            .field("udp_port", &self.udp_port)
            .finish_non_exhaustive()
    }
}

impl ToxTransport {
    /// Starts a node: loads or creates its identity, joins through the bootstrap nodes,
    /// and runs c-toxcore on its own thread.
    pub fn start(config: ToxConfig) -> Result<Self, StartError> {
        // Refers to the replacements of libsodium's lock functions, so that they are linked
        // into every program that starts a node (crypto_buffers.rs).
        std::hint::black_box(crate::crypto_buffers::skips_toxcore_mlock());
        let io_err = |path: &PathBuf| {
            let path = path.clone();
            move |error| StartError::Identity { path, error }
        };
        let saved = match &config.identity {
            Some(p) => identity::load(p).map_err(io_err(p))?,
            None => None,
        };
        let mut tox = RawTox::new(&config.options, saved.as_deref()).map_err(|e| {
            match (&config.identity, &e) {
                (Some(path), ToxError::BadSavedata | ToxError::EncryptedSavedata) => {
                    StartError::DamagedIdentity {
                        path: path.clone(),
                        error: e,
                    }
                }
                _ => StartError::Tox(e),
            }
        })?;
        if let (Some(p), None) = (&config.identity, &saved) {
            identity::save_atomic(p, &tox.savedata()).map_err(io_err(p))?;
        }
        for node in &config.bootstrap {
            tox.bootstrap(&node.host, node.port, &node.key)?;
        }
        let mut state = State::default();
        for (number, pk) in tox.friends() {
            state.friends.insert(
                pk,
                Friend {
                    number,
                    online: false,
                    direct: false,
                },
            );
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wake: Condvar::new(),
            capacity: config.queue_capacity.max(1),
        });
        let id = tox.address();
        let dht_id = tox.dht_id();
        let (udp_port, tcp_port) = (tox.udp_port(), tox.tcp_port());
        // SAFETY: a plain getter of a constant.
        let max_packet = unsafe { ffi::tox_max_custom_packet_size() } as usize;
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("toxtun-tox".into())
            .spawn(move || thread::ToxThread::new(tox, &s, config).run())
            .map_err(|e| ToxError::Other(format!("spawn the Tox thread: {e}")))?;
        Ok(ToxTransport {
            shared,
            id,
            dht_id,
            udp_port,
            tcp_port,
            max_packet,
            thread: Some(thread),
        })
    }

    /// The DHT key others bootstrap from.
    pub fn dht_id(&self) -> [u8; 32] {
        self.dht_id
    }

    /// The bound UDP port.
    pub fn udp_port(&self) -> Option<u16> {
        self.udp_port
    }

    /// The TCP relay port, if this node runs a relay.
    pub fn tcp_port(&self) -> Option<u16> {
        self.tcp_port
    }

    /// This node as a bootstrap node reachable at `host`.
    pub fn as_bootstrap_node(&self, host: &str) -> Option<BootstrapNode> {
        Some(BootstrapNode {
            host: host.to_string(),
            port: self.udp_port?,
            key: self.dht_id,
        })
    }

    /// Whether the node is connected to the Tox network (402) or not (401).
    pub fn is_connected(&self) -> bool {
        self.shared.lock().connected
    }

    /// Whether the link to a friend is up and direct UDP (lossy packets travel), as
    /// c-toxcore last reported it.
    pub fn is_direct(&self, peer: &PeerId) -> bool {
        self.shared
            .lock()
            .friends
            .get(peer)
            .is_some_and(|f| f.online && f.direct)
    }

    /// Counters.
    pub fn stats(&self) -> ToxStats {
        self.shared.lock().stats
    }

    /// The current savedata (keys, nospam, friends).
    pub fn savedata(&self) -> Vec<u8> {
        self.call(Command::Savedata).unwrap_or_default()
    }

    fn call<R>(&self, make: impl FnOnce(std::sync::mpsc::SyncSender<R>) -> Command) -> Option<R> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        {
            let mut st = self.shared.lock();
            if st.closed {
                return None;
            }
            st.commands.push_back(make(tx));
        }
        self.shared.wake.notify_all();
        rx.recv().ok()
    }
}

impl Drop for ToxTransport {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Transport for ToxTransport {
    fn id(&self) -> ToxId {
        self.id
    }

    fn max_packet_size(&self) -> usize {
        self.max_packet
    }

    fn add_friend(&mut self, id: &ToxId, message: &[u8]) -> Result<FriendAdded, FriendError> {
        let msg = message.to_vec();
        let id = *id;
        self.call(|tx| Command::AddFriend(id, msg, tx))
            .unwrap_or_else(|| Err(FriendError::Failed("transport stopped".into())))
    }

    fn accept_friend(&mut self, peer: PeerId) -> Result<FriendAdded, FriendError> {
        self.call(|tx| Command::AcceptFriend(peer, tx))
            .unwrap_or_else(|| Err(FriendError::Failed("transport stopped".into())))
    }

    fn remove_friend(&mut self, peer: PeerId) -> Result<(), FriendError> {
        self.call(|tx| Command::RemoveFriend(peer, tx))
            .unwrap_or_else(|| Err(FriendError::Failed("transport stopped".into())))
    }

    fn send(&mut self, peer: PeerId, packet: Bytes) -> Result<(), SendError> {
        if packet.is_empty() || packet.len() > self.max_packet {
            return Err(SendError::Failed("packet size outside 1..=1373"));
        }
        let Some(kind) = PacketKind::of(&packet) else {
            return Err(SendError::Failed("first byte outside 160..=254"));
        };
        let lossy = kind == PacketKind::Lossy;
        let mut st = self.shared.lock();
        if st.closed {
            return Err(SendError::Failed("transport stopped"));
        }
        match st.friends.get(&peer) {
            None => return Err(SendError::NotFriend),
            Some(f) if !f.online => return Err(SendError::Offline),
            Some(_) => {}
        }
        let cap = self.shared.capacity;
        let q = st.outq.entry(peer).or_default();
        if lossy {
            if q.lossy.len() + q.lossy_taken >= LOSSY_QUEUE {
                q.lossy_blocked = true;
                st.stats.queue_full += 1;
                return Err(SendError::QueueFull(packet));
            }
            q.lossy.push_back(packet);
        } else {
            if q.queue.len() + q.taken >= cap {
                q.blocked = true;
                st.stats.queue_full += 1;
                return Err(SendError::QueueFull(packet));
            }
            q.queue.push_back(packet);
        }
        // Wake the Tox thread only if it sleeps: a condvar notify is a system call, and a
        // bulk sender makes tens of thousands of sends a second while the thread is busy
        // (it flushes the queues before it sleeps again).
        let sleeping = st.sleeping;
        drop(st);
        if sleeping {
            self.shared.wake.notify_all();
        }
        Ok(())
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        let mut st = self.shared.lock();
        if let Some(e) = st.events.pop_front() {
            return Poll::Ready(Some(e));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn stats(&self) -> TransportStats {
        self.stats().into()
    }
}
