//! One friend link of the mock network: how it behaves ([`LinkConfig`]), and what is in
//! flight on it each way ([`Dir`]): the lossless lane (ordered, bounded, backpressured)
//! and the lossy lane (random and burst loss, duplication, reordering, a bottleneck with a
//! drop-tail queue).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How a friend link behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// One-way delay of every packet.
    pub latency: Duration,
    /// Extra random delay, up to this much (order is kept, as Tox keeps it).
    pub jitter: Duration,
    /// Bytes per second each way; `None` for no limit.
    pub bandwidth: Option<u64>,
    /// Packets in flight per direction before `send` answers `QueueFull`.
    pub queue_capacity: usize,
    /// How long after both sides are friends and reachable the link comes up.
    pub connect_delay: Duration,
    /// The link is direct UDP (else it goes through a TCP relay), and the nodes are told so
    /// when it comes up.
    pub direct: bool,
    /// A relayed link drops every lossy packet (c-toxcore carries them through its TCP
    /// relays, but a test of the fast path's fallback needs a link that does not).
    pub relay_drops_lossy: bool,
    /// Lossy packets lost at random, per thousand.
    pub lossy_loss_per_mille: u32,
    /// Lossy packets delivered twice, per thousand.
    pub lossy_duplicate_per_mille: u32,
    /// Extra random delay of lossy packets, up to this much (they overtake each other).
    pub lossy_reorder: Duration,
    /// Lossy packets that arrive `lossy_late` late, overtaken by those behind them, per
    /// thousand (a path that reorders now and then, as the WAN bench's "reordering").
    pub lossy_late_per_mille: u32,
    /// How late those packets arrive.
    pub lossy_late: Duration,
    /// How much transmission time a bandwidth-limited link queues before it drops lossy
    /// packets: the bottleneck's drop-tail buffer, in time (100 ms of a 100 Mbit/s link
    /// holds 1.25 MB). Lossless packets are never dropped (c-toxcore resends them); they
    /// wait in the same queue.
    pub bottleneck_queue: Duration,
    /// Lossy packets lost in bursts, beside `lossy_loss_per_mille` (Gilbert-Elliott).
    pub burst_loss: Option<BurstLoss>,
    /// Bytes per second each way that lossless packets get, whatever the path could carry:
    /// c-toxcore's congestion control for them, which on a real path with delay and loss
    /// moves a fraction of the path's rate and climbs back slowly after an outage.
    /// `None`: as fast as the path.
    pub lossless_bandwidth: Option<u64>,
}

/// Burst loss as the two-state Gilbert-Elliott model draws it: each lossy packet first moves
/// the direction between a good and a bad state, then is lost with the bad state's
/// probability if the state is bad. The mean burst is `1000 / leave_per_mille` packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BurstLoss {
    /// Chance per packet, in the good state, of entering the bad one (per thousand).
    pub enter_per_mille: u32,
    /// Chance per packet, in the bad state, of leaving it (per thousand).
    pub leave_per_mille: u32,
    /// Chance that a packet is lost while the state is bad (per thousand).
    pub loss_per_mille: u32,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            bandwidth: None,
            queue_capacity: 256,
            connect_delay: Duration::from_millis(100),
            direct: false,
            relay_drops_lossy: false,
            lossy_loss_per_mille: 0,
            lossy_duplicate_per_mille: 0,
            lossy_reorder: Duration::ZERO,
            lossy_late_per_mille: 0,
            lossy_late: Duration::ZERO,
            bottleneck_queue: Duration::from_millis(20),
            burst_loss: None,
            lossless_bandwidth: None,
        }
    }
}

/// Random link flaps: the link stays up for an exponential-ish random time around
/// `mean_up`, then goes down for a uniform time in `down`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlapPlan {
    /// Mean time between outages.
    pub mean_up: Duration,
    /// Shortest outage.
    pub min_down: Duration,
    /// Longest outage.
    pub max_down: Duration,
}

#[derive(Debug)]
pub(super) struct Dir {
    pub(super) inflight: VecDeque<(Instant, Bytes)>,
    /// Lossy packets in flight, in any order.
    pub(super) lossy: Vec<(Instant, Bytes)>,
    pub(super) busy_until: Instant,
    pub(super) last_arrival: Instant,
    /// The sender was told `QueueFull` and waits for `SendReady`.
    pub(super) blocked: bool,
    /// The Gilbert-Elliott state of this direction: in a burst of losses.
    pub(super) in_burst: bool,
    /// When the lossless lane's own rate (`lossless_bandwidth`) lets the next packet go.
    pub(super) lossless_busy_until: Instant,
}

impl Dir {
    pub(super) fn new(now: Instant) -> Self {
        Dir {
            inflight: VecDeque::new(),
            lossy: Vec::new(),
            busy_until: now,
            last_arrival: now,
            blocked: false,
            in_burst: false,
            lossless_busy_until: now,
        }
    }
}

#[derive(Debug)]
pub(super) struct Link {
    pub(super) config: LinkConfig,
    pub(super) forced_down: bool,
    pub(super) online: bool,
    pub(super) up_at: Option<Instant>,
    /// [0]: lower node → higher node; [1]: the other way.
    pub(super) dirs: [Dir; 2],
    pub(super) flaps: Option<FlapPlan>,
    /// Next flap transition: when to go down (if up) or come back (if flapped down).
    pub(super) flap_at: Option<Instant>,
    pub(super) flapped_down: bool,
    /// The path carries nothing, yet the friend link stays up (as c-toxcore's did through
    /// an 8 s outage of the path): lossy packets are lost, lossless ones wait and arrive
    /// when the path returns (c-toxcore resends them).
    pub(super) blackout: bool,
}

impl Dir {
    /// The time `bytes` take through the bottleneck, if it has a rate.
    fn serialize(cfg: &LinkConfig, bytes: usize) -> Duration {
        cfg.bandwidth.map_or(Duration::ZERO, |bw| {
            Duration::from_nanos(bytes as u64 * 1_000_000_000 / bw.max(1))
        })
    }

    /// A lossy packet enters the path at `now`: lost (on a relay that drops them, in a
    /// blackout, at random or in a burst, or by the bottleneck's full queue), or on its
    /// way, perhaps twice and perhaps late. `draw` is this packet's randomness. Returns
    /// whether it was dropped.
    pub(super) fn send_lossy(
        &mut self,
        cfg: &LinkConfig,
        blackout: bool,
        now: Instant,
        draw: u64,
        packet: Bytes,
    ) -> bool {
        let start = self.busy_until.max(now);
        let burst_draw = draw.rotate_left(41);
        let burst_lost = cfg.burst_loss.is_some_and(|b| {
            let flip = (burst_draw % 1000) as u32;
            self.in_burst = if self.in_burst {
                flip >= b.leave_per_mille
            } else {
                flip < b.enter_per_mille
            };
            self.in_burst && ((burst_draw >> 20) % 1000) < u64::from(b.loss_per_mille)
        });
        let dropped = (!cfg.direct && cfg.relay_drops_lossy)
            || blackout
            || burst_lost
            || (draw % 1000) < u64::from(cfg.lossy_loss_per_mille)
            || (cfg.bandwidth.is_some() && start > now + cfg.bottleneck_queue);
        if dropped {
            return true;
        }
        self.busy_until = start + Self::serialize(cfg, packet.len());
        let reorder = cfg.lossy_reorder.as_nanos() as u64;
        let late = if ((draw >> 52) % 1000) < u64::from(cfg.lossy_late_per_mille) {
            cfg.lossy_late
        } else {
            Duration::ZERO
        };
        let delay = |d: u64| {
            cfg.latency + late + Duration::from_nanos(if reorder == 0 { 0 } else { d % reorder })
        };
        let d = draw.rotate_left(17);
        if ((d >> 40) % 1000) < u64::from(cfg.lossy_duplicate_per_mille) {
            self.lossy
                .push((self.busy_until + delay(d.rotate_left(29)), packet.clone()));
        }
        self.lossy.push((self.busy_until + delay(d), packet));
        false
    }

    /// A lossless packet enters the path at `now`, in order behind the others, or is
    /// refused (`Err`, the packet back) when the direction's queue is full.
    pub(super) fn send_lossless(
        &mut self,
        cfg: &LinkConfig,
        now: Instant,
        draw: u64,
        packet: Bytes,
    ) -> Result<(), Bytes> {
        if self.inflight.len() >= cfg.queue_capacity {
            self.blocked = true;
            return Err(packet);
        }
        let serialize = Self::serialize(cfg, packet.len());
        let paced = match cfg.lossless_bandwidth {
            // Lossless packets at their own (slow) rate: c-toxcore holds them, and they
            // take a share of the bottleneck too small to model.
            Some(bw) => {
                let start = self.lossless_busy_until.max(now);
                self.lossless_busy_until =
                    start + Duration::from_nanos(packet.len() as u64 * 1_000_000_000 / bw.max(1));
                self.lossless_busy_until + serialize
            }
            None => {
                let start = self.busy_until.max(now);
                self.busy_until = start + serialize;
                self.busy_until
            }
        };
        let jitter = if cfg.jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(draw % (cfg.jitter.as_nanos() as u64 + 1))
        };
        let arrival = (paced + cfg.latency + jitter).max(self.last_arrival);
        self.last_arrival = arrival;
        self.inflight.push_back((arrival, packet));
        Ok(())
    }

    /// The lossy packets due by `due`, in arrival order.
    pub(super) fn take_lossy_due(&mut self, due: Instant) -> Vec<Bytes> {
        if !self.lossy.iter().any(|(t, _)| *t <= due) {
            return Vec::new();
        }
        let mut arrived: Vec<(Instant, Bytes)> = Vec::new();
        self.lossy.retain(|(t, p)| {
            let now = *t <= due;
            if now {
                arrived.push((*t, p.clone()));
            }
            !now
        });
        arrived.sort_by_key(|(t, _)| *t);
        arrived.into_iter().map(|(_, p)| p).collect()
    }

    /// The next lossless packet due by `due`, and whether its sender, told `QueueFull`
    /// before, now has room (`SendReady`).
    pub(super) fn pop_lossless_due(&mut self, due: Instant, cap: usize) -> Option<(Bytes, bool)> {
        if self.inflight.front().is_none_or(|(t, _)| *t > due) {
            return None;
        }
        let (_, packet) = self.inflight.pop_front()?;
        let ready = self.blocked && self.inflight.len() < cap;
        if ready {
            self.blocked = false;
        }
        Some((packet, ready))
    }
}

impl Link {
    /// Runs the flap plan's transition if it is due; returns whether one ran.
    pub(super) fn flap_if_due(&mut self, due: Instant, draw: u64) -> bool {
        if self.flap_at.is_none_or(|t| t > due) {
            return false;
        }
        let Some(plan) = self.flaps else {
            return false;
        };
        if self.flapped_down {
            self.flapped_down = false;
            self.forced_down = false;
            self.flap_at = Some(due + random_up(plan, draw));
        } else {
            self.flapped_down = true;
            self.forced_down = true;
            let span = plan.max_down.saturating_sub(plan.min_down).as_nanos() as u64;
            let down = plan.min_down + Duration::from_nanos(draw % (span + 1));
            self.flap_at = Some(due + down);
        }
        true
    }

    /// Brings the link up if its connect delay ran out; returns whether it came up.
    pub(super) fn come_up_if_due(&mut self, due: Instant) -> bool {
        if self.up_at.is_none_or(|t| t > due) {
            return false;
        }
        self.up_at = None;
        self.online = true;
        for d in &mut self.dirs {
            d.busy_until = due;
            d.lossless_busy_until = due;
            d.last_arrival = due;
        }
        true
    }
}

pub(super) fn random_up(plan: FlapPlan, draw: u64) -> Duration {
    // Uniform in [mean/2, 3·mean/2]: simple, bounded, mean as asked.
    let mean = plan.mean_up.as_nanos() as u64;
    Duration::from_nanos(mean / 2 + draw % (mean.max(1)))
}
