//! The mock network in real time, for runtimes: each node is a [`MockTransport`] that
//! implements [`Transport`], and a small driver thread moves the network's clock along the
//! wall clock. It uses no async runtime, so it works under tokio, smol or any executor.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use toxtun_proto::{
    FriendAdded, FriendError, PeerId, SendError, ToxId, Transport, TransportEvent, MAX_PACKET_SIZE,
};

use crate::network::{Network, NodeId};

struct State {
    network: Network,
    wakers: Vec<Option<Waker>>,
    closed: bool,
    /// When the driver thread will wake by itself (`None`: it is not waiting).
    driver_wakes_at: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    tick: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a network we can still read; carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the network caught up with the wall clock, then catches up again (a
    /// packet on a link without latency is delivered here and now, its receiver woken from
    /// this thread), and tells the driver only if it must wake sooner than it planned.
    fn with<R>(&self, f: impl FnOnce(&mut Network) -> R) -> R {
        let mut st = self.lock();
        st.catch_up();
        let r = f(&mut st.network);
        st.catch_up();
        let sooner = match (st.network.next_deadline(), st.driver_wakes_at) {
            (Some(due), Some(planned)) => due < planned,
            _ => true,
        };
        drop(st);
        if sooner {
            self.tick.notify_all();
        }
        r
    }
}

impl State {
    /// Catches the network up with the wall clock and wakes nodes that have events.
    fn catch_up(&mut self) {
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        self.network.advance_to(now);
        self.wake();
    }

    fn wake(&mut self) {
        for (i, w) in self.wakers.iter_mut().enumerate() {
            if self.network.has_events(NodeId(i)) {
                if let Some(w) = w.take() {
                    w.wake();
                }
            }
        }
    }
}

/// A [`Network`] running in real time. Dropping it stops the driver thread; transports
/// made from it then report `Ready(None)`.
pub struct RealtimeNetwork {
    shared: Arc<Shared>,
    driver: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RealtimeNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeNetwork").finish_non_exhaustive()
    }
}

impl RealtimeNetwork {
    /// Starts driving `network`; its clock should have started at about `Instant::now()`.
    pub fn start(network: Network) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                network,
                wakers: Vec::new(),
                closed: false,
                driver_wakes_at: None,
            }),
            tick: Condvar::new(),
        });
        let s = shared.clone();
        let driver = std::thread::Builder::new()
            .name("toxtun-mock-net".into())
            .spawn(move || drive(&s))
            .expect("spawn the mock network's driver thread");
        RealtimeNetwork {
            shared,
            driver: Some(driver),
        }
    }

    /// Runs `f` on the network (to add nodes, break links, restart nodes, read stats).
    pub fn with<R>(&self, f: impl FnOnce(&mut Network) -> R) -> R {
        self.shared.with(f)
    }

    /// The transport of one node.
    pub fn transport(&self, node: NodeId) -> MockTransport {
        let mut st = self.shared.lock();
        if st.wakers.len() <= node.0 {
            st.wakers.resize(node.0 + 1, None);
        }
        let id = st.network.tox_id(node);
        MockTransport {
            shared: self.shared.clone(),
            node,
            id,
        }
    }
}

impl Drop for RealtimeNetwork {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.closed = true;
        for w in st.wakers.iter_mut().filter_map(Option::take) {
            w.wake();
        }
        drop(st);
        self.shared.tick.notify_all();
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
    }
}

fn drive(shared: &Shared) {
    let mut st = shared.lock();
    loop {
        if st.closed {
            return;
        }
        st.catch_up();
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        let wait = st
            .network
            .next_deadline()
            .map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(now)
            });
        st.driver_wakes_at = Some(now + wait);
        st = shared
            .tick
            .wait_timeout(st, wait)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

/// One node of a [`RealtimeNetwork`], as a [`Transport`].
pub struct MockTransport {
    shared: Arc<Shared>,
    node: NodeId,
    id: ToxId,
}

impl std::fmt::Debug for MockTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockTransport")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl MockTransport {
    fn with<R>(&self, f: impl FnOnce(&mut Network) -> R) -> R {
        self.shared.with(f)
    }

    /// The node behind this transport.
    pub fn node(&self) -> NodeId {
        self.node
    }
}

impl Transport for MockTransport {
    fn id(&self) -> ToxId {
        self.id
    }

    fn max_packet_size(&self) -> usize {
        MAX_PACKET_SIZE
    }

    fn add_friend(&mut self, id: &ToxId, message: &[u8]) -> Result<FriendAdded, FriendError> {
        let node = self.node;
        self.with(|n| n.add_friend(node, id, message))
    }

    fn accept_friend(&mut self, peer: PeerId) -> Result<FriendAdded, FriendError> {
        let node = self.node;
        self.with(|n| n.accept_friend(node, peer))
    }

    fn remove_friend(&mut self, peer: PeerId) -> Result<(), FriendError> {
        let node = self.node;
        self.with(|n| n.remove_friend(node, peer))
    }

    fn send(&mut self, peer: PeerId, packet: Bytes) -> Result<(), SendError> {
        let node = self.node;
        self.with(|n| n.send(node, peer, packet))
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        let mut st = self.shared.lock();
        if st.closed {
            return Poll::Ready(None);
        }
        if let Some(e) = st.network.poll_event(self.node) {
            return Poll::Ready(Some(e));
        }
        st.wakers[self.node.0] = Some(cx.waker().clone());
        Poll::Pending
    }
}
