//! The Tox thread: the one place c-toxcore runs. Each round it iterates the instance,
//! hands what its callbacks reported to the runtime, carries out the runtime's commands,
//! sends the queued packets with the lock released, puts back what c-toxcore would not
//! take, and sleeps until woken or its interval passes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use toxtun_proto::{FriendAdded, FriendError, PacketKind, PeerId, TransportEvent};

use super::{
    Batch, Command, Friend, Shared, State, ToxConfig, ToxStats, ACTIVE_SPELL, ACTIVE_WAIT,
    LOSSY_QUEUE, WARM_SPELL, WARM_WAIT,
};
use crate::ffi;
use crate::identity;
use crate::tox::{RawEvent, RawTox, Sink};

/// What the Tox thread keeps between rounds.
pub(super) struct ToxThread<'a> {
    tox: RawTox,
    shared: &'a Shared,
    config: ToxConfig,
    /// c-toxcore's friend numbers, by which its callbacks name peers.
    numbers: HashMap<u32, PeerId>,
    sink: Sink,
    last_bootstrap: Instant,
    /// Packets moved recently: c-toxcore reads its socket only inside `tox_iterate`, and
    /// its own interval (up to 50 ms) would hold every arriving packet that long — fatal
    /// to a fast path that measures the round trip. While traffic flows, iterate every
    /// ACTIVE_WAIT, then every WARM_WAIT for a while; when it stops, fall back to
    /// c-toxcore's interval (idle CPU stays low).
    active_until: Instant,
    /// ... and until this instant, every WARM_WAIT: a reply may still be on its way.
    warm_until: Instant,
}

fn now() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

impl<'a> ToxThread<'a> {
    pub(super) fn new(tox: RawTox, shared: &'a Shared, config: ToxConfig) -> Self {
        let numbers = tox.friends().into_iter().collect();
        ToxThread {
            tox,
            shared,
            config,
            numbers,
            sink: Sink::default(),
            last_bootstrap: now(),
            active_until: now(),
            warm_until: now(),
        }
    }

    /// Runs rounds until the transport is closed, then saves the identity.
    pub(super) fn run(mut self) {
        let shared = self.shared;
        loop {
            self.tox.iterate(&mut self.sink);
            let now = now();
            if self
                .sink
                .events
                .iter()
                .any(|e| matches!(e, RawEvent::Packet { .. }))
            {
                self.active(now);
            }
            let mut st = shared.lock();
            self.publish_events(&mut st);
            self.run_commands(&mut st);
            let mut batches = self.take_batches(&mut st, now);
            drop(st);
            let (sent, sendq) = self.send_batches(&mut batches);
            let mut st = shared.lock();
            self.put_back(&mut st, batches, &sent);
            if !st.events.is_empty() || st.closed {
                if let Some(w) = st.waker.take() {
                    w.wake();
                }
            }
            if st.closed {
                break;
            }
            self.bootstrap_again(&st);
            self.sleep(st, now, sendq);
        }
        self.save();
    }

    fn save(&self) {
        if let Some(p) = &self.config.identity {
            // A failed save keeps the old file; the friendship still holds in memory.
            let _ = identity::save_atomic(p, &self.tox.savedata());
        }
    }

    /// Turns what c-toxcore's callbacks reported into transport events.
    fn publish_events(&mut self, st: &mut State) {
        for ev in self.sink.events.drain(..) {
            match ev {
                RawEvent::SelfConnection(c) => {
                    if st.connected != c {
                        st.connected = c;
                        st.events
                            .push_back(TransportEvent::SelfConnection { connected: c });
                    }
                }
                RawEvent::FriendRequest { peer, message } => {
                    st.events
                        .push_back(TransportEvent::FriendRequest { peer, message });
                }
                RawEvent::FriendConnection {
                    friend,
                    connected,
                    direct,
                } => {
                    if let Some(&pk) = self.numbers.get(&friend) {
                        friend_connection(st, pk, connected, direct);
                    }
                }
                RawEvent::Packet { friend, data } => {
                    if let Some(&peer) = self.numbers.get(&friend) {
                        st.stats.packets_received += 1;
                        if PacketKind::is_lossy(&data) {
                            st.stats.lossy_received += 1;
                        }
                        st.events
                            .push_back(TransportEvent::Packet { peer, packet: data });
                    }
                }
            }
        }
    }

    /// Carries out the runtime's friend commands and savedata requests.
    fn run_commands(&mut self, st: &mut State) {
        let commands: Vec<Command> = st.commands.drain(..).collect();
        for cmd in commands {
            match cmd {
                Command::AddFriend(id, msg, reply) => {
                    let r = self.tox.friend_add(&id, &msg).map(|n| {
                        self.add_friend(st, n, id.public_key, (false, false));
                        FriendAdded::RequestSent
                    });
                    let _ = reply.send(r);
                }
                Command::AcceptFriend(pk, reply) => {
                    let r = self.tox.friend_add_norequest(&pk).map(|n| {
                        let link = self.tox.friend_connection(n);
                        self.add_friend(st, n, pk, link);
                        FriendAdded::Added
                    });
                    let _ = reply.send(r);
                }
                Command::RemoveFriend(pk, reply) => {
                    let r = match st.friends.remove(&pk) {
                        Some(f) => {
                            self.tox.friend_delete(f.number);
                            self.numbers.remove(&f.number);
                            st.outq.remove(&pk);
                            self.save();
                            Ok(())
                        }
                        None => Err(FriendError::Failed("not a friend".into())),
                    };
                    let _ = reply.send(r);
                }
                Command::Savedata(reply) => {
                    let _ = reply.send(self.tox.savedata());
                }
            }
        }
    }

    /// Records friend number `n` as `pk`, with its link (online, direct), and saves.
    fn add_friend(&mut self, st: &mut State, n: u32, pk: PeerId, (online, direct): (bool, bool)) {
        self.numbers.insert(n, pk);
        st.friends.insert(
            pk,
            Friend {
                number: n,
                online,
                direct,
            },
        );
        self.save();
    }

    /// Takes the queued packets, to hand them to c-toxcore with the lock released:
    /// encrypting and sending them is most of this thread's work while bulk flows, and the
    /// runtime's `send` (and `poll_event`) must not wait for it.
    fn take_batches(&mut self, st: &mut State, now: Instant) -> Vec<Batch> {
        let mut batches = Vec::new();
        let State { outq, friends, .. } = st;
        for (pk, q) in outq.iter_mut() {
            let Some(f) = friends.get(pk) else {
                q.queue.clear();
                q.lossy.clear();
                continue;
            };
            if q.lossy.is_empty() && q.queue.is_empty() {
                continue;
            }
            self.active(now);
            q.taken = q.queue.len();
            q.lossy_taken = q.lossy.len();
            batches.push(Batch {
                peer: *pk,
                friend: f.number,
                lossy: std::mem::take(&mut q.lossy),
                lossless: std::mem::take(&mut q.queue),
            });
        }
        batches
    }

    /// Sends the batches: lossy packets first, lossless ones until c-toxcore says SENDQ.
    /// Returns the counts, and whether SENDQ was hit.
    fn send_batches(&mut self, batches: &mut [Batch]) -> (ToxStats, bool) {
        let mut sendq = false;
        let mut sent = ToxStats::default();
        for b in batches {
            // Lossy first: the fast path paced them, and they never wait on SENDQ.
            for p in b.lossy.drain(..) {
                match self.tox.send_lossy(b.friend, &p) {
                    Ok(()) => sent.lossy_sent += 1,
                    Err(_) => sent.lossy_dropped += 1,
                }
            }
            // Lossless until c-toxcore says SENDQ; the rest goes back to the queue's front.
            while let Some(front) = b.lossless.front() {
                match self.tox.send_lossless(b.friend, front) {
                    Ok(()) => {
                        sent.packets_sent += 1;
                        b.lossless.pop_front();
                    }
                    Err(ffi::TOX_ERR_FRIEND_CUSTOM_PACKET_SENDQ) => {
                        sent.sendq += 1;
                        sendq = true;
                        break;
                    }
                    Err(_) => {
                        // Not connected any more: the offline event follows, and the
                        // endpoint ends its session; these packets are lost with the link.
                        sent.dropped_offline += b.lossless.len() as u64;
                        b.lossless.clear();
                    }
                }
            }
        }
        (sent, sendq)
    }

    /// Counts what was sent, puts what c-toxcore would not take back at the front of its
    /// queue, and announces `SendReady` once every lane that refused a packet has room.
    fn put_back(&self, st: &mut State, batches: Vec<Batch>, sent: &ToxStats) {
        let State {
            outq,
            events,
            stats,
            ..
        } = st;
        stats.packets_sent += sent.packets_sent;
        stats.sendq += sent.sendq;
        stats.dropped_offline += sent.dropped_offline;
        stats.lossy_sent += sent.lossy_sent;
        stats.lossy_dropped += sent.lossy_dropped;
        for b in batches {
            // Only this thread removes queues, so the friend's is still there.
            let Some(q) = outq.get_mut(&b.peer) else {
                continue;
            };
            q.taken = 0;
            q.lossy_taken = 0;
            for p in b.lossless.into_iter().rev() {
                q.queue.push_front(p);
            }
            let lossless_ok = !q.blocked || q.queue.len() < self.shared.capacity;
            let lossy_ok = !q.lossy_blocked || q.lossy.len() < LOSSY_QUEUE;
            if (q.blocked || q.lossy_blocked) && lossless_ok && lossy_ok {
                q.blocked = false;
                q.lossy_blocked = false;
                events.push_back(TransportEvent::SendReady(b.peer));
            }
        }
    }

    /// Offline from the Tox network for 10 s: bootstrap again.
    fn bootstrap_again(&mut self, st: &State) {
        if !st.connected && self.last_bootstrap.elapsed() > Duration::from_secs(10) {
            self.last_bootstrap = now();
            for node in &self.config.bootstrap {
                let _ = self.tox.bootstrap(&node.host, node.port, &node.key);
            }
        }
    }

    /// Packets moved now: iterate often for a while.
    fn active(&mut self, now: Instant) {
        self.active_until = now + ACTIVE_SPELL;
        self.warm_until = now + WARM_SPELL;
    }

    /// Waits for a command or a packet to send, or the round's interval: 1 ms after SENDQ,
    /// ACTIVE_WAIT while packets flow, else c-toxcore's own. Packets queued while the lock
    /// was released go out in the next round at once.
    fn sleep(&self, mut st: std::sync::MutexGuard<'_, State>, now: Instant, sendq: bool) {
        let wait = if sendq {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(u64::from(self.tox.iteration_interval().clamp(1, 50)))
        };
        let wait = if now < self.active_until {
            wait.min(ACTIVE_WAIT)
        } else if now < self.warm_until {
            // An answer may still be on its way: read it within a millisecond.
            wait.min(WARM_WAIT)
        } else {
            wait
        };
        let pending = st
            .outq
            .values()
            .any(|q| !q.lossy.is_empty() || (!sendq && !q.queue.is_empty()));
        if st.commands.is_empty() && !pending {
            st.sleeping = true;
            let (mut st, _) = self
                .shared
                .wake
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner());
            st.sleeping = false;
        }
    }
}

/// c-toxcore reports a friend's link: online or not, direct UDP or relayed.
fn friend_connection(st: &mut State, pk: PeerId, connected: bool, direct: bool) {
    let Some(f) = st.friends.get_mut(&pk) else {
        return;
    };
    let (was_online, was_direct) = (f.online, f.direct);
    f.online = connected;
    f.direct = direct;
    if connected != was_online {
        if connected {
            st.events.push_back(TransportEvent::FriendOnline(pk));
        } else {
            if let Some(q) = st.outq.remove(&pk) {
                st.stats.dropped_offline += q.queue.len() as u64;
            }
            st.events.push_back(TransportEvent::FriendOffline(pk));
        }
    }
    if connected && (direct != was_direct || !was_online) {
        st.events
            .push_back(TransportEvent::FriendPath { peer: pk, direct });
    }
}
