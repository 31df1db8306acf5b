//! One direction of the emulated path, as a pure model: each packet that enters at an
//! instant either is dropped (and why) or is delivered at a later instant. No clock, no
//! socket: the forwarder feeds it the time, and unit tests feed it made-up times.
//!
//! A packet meets, in order: an outage (everything is lost), a UDP block (UDP is lost, so
//! Tox must use a TCP relay), random loss, burst loss (Gilbert-Elliott), the bottleneck (a
//! rate limit with a drop-tail queue bounded in time or packets), then the one-way delay
//! with jitter — order kept, as a real path keeps it — except for the packets picked for
//! reordering, which arrive late and are overtaken.

use std::time::{Duration, Instant};

/// Burst loss as the two-state Gilbert-Elliott model draws it: before each packet the
/// direction may switch between a good and a bad state; in the bad one a packet is lost
/// with `loss_in_burst`. The mean burst lasts `1 / leave` packets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BurstLoss {
    /// Chance per packet, in the good state, of entering the bad one.
    pub enter: f64,
    /// Chance per packet, in the bad state, of leaving it.
    pub leave: f64,
    /// Chance that a packet is lost while the state is bad.
    pub loss_in_burst: f64,
}

/// Some packets arrive late, overtaken by the ones behind them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reorder {
    /// The share of packets held back.
    pub fraction: f64,
    /// How much later than their turn they arrive.
    pub extra: Duration,
}

/// How much the bottleneck queues before it drops (drop-tail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueLimit {
    /// Packets waiting at most this long to be sent: 100 ms at 100 Mbit/s is 1.25 MB.
    Time(Duration),
    /// At most this many packets waiting.
    Packets(usize),
}

/// What one direction of the path does to packets.
#[derive(Clone, Debug, PartialEq)]
pub struct PathConfig {
    /// One-way delay of every packet.
    pub delay: Duration,
    /// Extra random delay up to this much; order is kept.
    pub jitter: Duration,
    /// Chance that a packet is lost at random.
    pub loss: f64,
    /// Losses in bursts, beside `loss`.
    pub burst: Option<BurstLoss>,
    /// Packets held back and overtaken.
    pub reorder: Option<Reorder>,
    /// The bottleneck's rate, bits per second (`None`: no limit).
    pub rate_bps: Option<u64>,
    /// The bottleneck's queue.
    pub queue: QueueLimit,
    /// UDP packets are lost (TCP and ICMP pass): Tox falls back to a TCP relay.
    pub block_udp: bool,
}

impl PathConfig {
    /// A path with `delay` one way and nothing else in the way.
    pub fn delay(delay: Duration) -> Self {
        PathConfig {
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: None,
            reorder: None,
            rate_bps: None,
            queue: QueueLimit::Packets(10_000),
            block_udp: false,
        }
    }

    /// Adds a bottleneck of `rate_bps` with a drop-tail queue of `queue` of sending time.
    pub fn with_bottleneck(mut self, rate_bps: u64, queue: Duration) -> Self {
        self.rate_bps = Some(rate_bps);
        self.queue = QueueLimit::Time(queue);
        self
    }

    /// Sets the chance of random loss.
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }
}

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The path was out.
    Outage,
    /// UDP is blocked.
    UdpBlocked,
    /// Random loss.
    Random,
    /// A burst of losses.
    Burst,
    /// The bottleneck's queue was full.
    QueueFull,
}

/// What became of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It arrives at this instant.
    Deliver(Instant),
    /// It is lost.
    Drop(DropReason),
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathStats {
    /// Packets that entered.
    pub packets: u64,
    /// Bytes that entered.
    pub bytes: u64,
    /// Packets delivered.
    pub delivered: u64,
    /// Packets lost in an outage.
    pub outage: u64,
    /// UDP packets blocked.
    pub udp_blocked: u64,
    /// Packets lost at random or in bursts.
    pub lost: u64,
    /// Packets dropped by the full bottleneck queue.
    pub queue_full: u64,
    /// Packets held back for reordering.
    pub reordered: u64,
}

/// A small, seeded generator (xorshift64*): the path's randomness replays for a seed.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// One direction of the path: its configuration and what the packets before left behind
/// (the bottleneck's backlog, the last delivery, the burst state).
#[derive(Debug)]
pub struct Direction {
    config: PathConfig,
    rng: Rng,
    /// When the bottleneck finishes sending what it holds.
    busy_until: Option<Instant>,
    /// When each packet now in the bottleneck's queue leaves it (for a packet limit).
    queued: std::collections::VecDeque<Instant>,
    /// The latest in-order delivery: jitter never reorders.
    last_delivery: Option<Instant>,
    in_burst: bool,
    stats: PathStats,
}

impl Direction {
    /// A direction with `config`, its randomness drawn from `seed`.
    pub fn new(config: PathConfig, seed: u64) -> Self {
        Direction {
            config,
            rng: Rng::new(seed),
            busy_until: None,
            queued: std::collections::VecDeque::new(),
            last_delivery: None,
            in_burst: false,
            stats: PathStats::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &PathConfig {
        &self.config
    }

    /// Changes the configuration from now on; packets already on their way keep theirs.
    pub fn set_config(&mut self, config: PathConfig) {
        self.config = config;
    }

    /// What the direction did so far.
    pub fn stats(&self) -> PathStats {
        self.stats
    }

    /// A packet of `len` bytes enters at `now` (`udp`: it is a UDP datagram); `outage`:
    /// the path is out now.
    pub fn on_packet(&mut self, now: Instant, len: usize, udp: bool, outage: bool) -> Verdict {
        self.stats.packets += 1;
        self.stats.bytes += len as u64;
        let verdict = self.judge(now, len, udp, outage);
        match verdict {
            Verdict::Deliver(_) => self.stats.delivered += 1,
            Verdict::Drop(DropReason::Outage) => self.stats.outage += 1,
            Verdict::Drop(DropReason::UdpBlocked) => self.stats.udp_blocked += 1,
            Verdict::Drop(DropReason::Random | DropReason::Burst) => self.stats.lost += 1,
            Verdict::Drop(DropReason::QueueFull) => self.stats.queue_full += 1,
        }
        verdict
    }

    fn judge(&mut self, now: Instant, len: usize, udp: bool, outage: bool) -> Verdict {
        if outage {
            return Verdict::Drop(DropReason::Outage);
        }
        if udp && self.config.block_udp {
            return Verdict::Drop(DropReason::UdpBlocked);
        }
        if self.rng.chance(self.config.loss) {
            return Verdict::Drop(DropReason::Random);
        }
        if let Some(b) = self.config.burst {
            self.in_burst = if self.in_burst {
                !self.rng.chance(b.leave)
            } else {
                self.rng.chance(b.enter)
            };
            if self.in_burst && self.rng.chance(b.loss_in_burst) {
                return Verdict::Drop(DropReason::Burst);
            }
        }
        let sent = match self.config.rate_bps {
            None => now,
            Some(rate) => {
                let start = self.busy_until.map_or(now, |b| b.max(now));
                while self.queued.front().is_some_and(|&t| t <= now) {
                    self.queued.pop_front();
                }
                let full = match self.config.queue {
                    QueueLimit::Time(limit) => start - now > limit,
                    QueueLimit::Packets(limit) => self.queued.len() >= limit,
                };
                if full {
                    return Verdict::Drop(DropReason::QueueFull);
                }
                let wire = Duration::from_nanos(len as u64 * 8 * 1_000_000_000 / rate.max(1));
                let done = start + wire;
                self.busy_until = Some(done);
                self.queued.push_back(done);
                done
            }
        };
        let jitter = match self.config.jitter.as_nanos() as u64 {
            0 => Duration::ZERO,
            j => Duration::from_nanos(self.rng.next_u64() % (j + 1)),
        };
        let mut at = sent + self.config.delay + jitter;
        if let Some(r) = self.config.reorder {
            if self.rng.chance(r.fraction) {
                // Late, and overtaken: it does not hold back the packets behind it.
                self.stats.reordered += 1;
                return Verdict::Deliver(at + r.extra);
            }
        }
        if let Some(last) = self.last_delivery {
            at = at.max(last);
        }
        self.last_delivery = Some(at);
        Verdict::Deliver(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    fn deliveries(path: &mut Direction, start: Instant, n: usize, gap: Duration) -> Vec<Verdict> {
        (0..n)
            .map(|i| path.on_packet(start + gap * i as u32, 1500, true, false))
            .collect()
    }

    #[test]
    fn delay_and_jitter_keep_order() {
        let t = t0();
        let mut cfg = PathConfig::delay(Duration::from_millis(25));
        cfg.jitter = Duration::from_millis(10);
        let mut p = Direction::new(cfg, 1);
        let mut last = t;
        for (i, v) in deliveries(&mut p, t, 1000, Duration::from_micros(100))
            .into_iter()
            .enumerate()
        {
            let Verdict::Deliver(at) = v else {
                panic!("dropped")
            };
            let sent = t + Duration::from_micros(100) * i as u32;
            assert!(at >= sent + Duration::from_millis(25));
            assert!(at <= sent + Duration::from_millis(35) || at == last);
            assert!(at >= last, "order kept");
            last = at;
        }
    }

    #[test]
    fn the_bottleneck_paces_and_drops_its_tail() {
        // 12 Mbit/s: a 1500-byte packet takes 1 ms. A queue of 10 ms holds about 10.
        let t = t0();
        let cfg = PathConfig::delay(Duration::from_millis(5))
            .with_bottleneck(12_000_000, Duration::from_millis(10));
        let mut p = Direction::new(cfg, 2);
        // A burst of 100 packets at once: 11 fit (the one being sent and ten waiting).
        let v = deliveries(&mut p, t, 100, Duration::ZERO);
        let delivered: Vec<Instant> = v
            .iter()
            .filter_map(|v| match v {
                Verdict::Deliver(at) => Some(*at),
                Verdict::Drop(_) => None,
            })
            .collect();
        assert_eq!(delivered.len(), 11, "{:?}", p.stats());
        assert_eq!(p.stats().queue_full, 89);
        for (i, at) in delivered.iter().enumerate() {
            let expect = t + Duration::from_millis(5) + Duration::from_millis(i as u64 + 1);
            assert_eq!(*at, expect, "packet {i} leaves at the bottleneck's rate");
        }
        // Once the queue drained, packets pass again.
        let later = t + Duration::from_millis(20);
        assert!(matches!(
            p.on_packet(later, 1500, false, false),
            Verdict::Deliver(_)
        ));
    }

    #[test]
    fn a_packet_queue_limit_counts_packets() {
        let t = t0();
        let mut cfg = PathConfig::delay(Duration::ZERO);
        cfg.rate_bps = Some(12_000_000);
        cfg.queue = QueueLimit::Packets(3);
        let mut p = Direction::new(cfg, 3);
        let v = deliveries(&mut p, t, 10, Duration::ZERO);
        let n = v
            .iter()
            .filter(|v| matches!(v, Verdict::Deliver(_)))
            .count();
        assert_eq!(n, 3);
    }

    #[test]
    fn random_and_burst_loss_come_near_their_rates() {
        let t = t0();
        let mut p = Direction::new(PathConfig::delay(Duration::ZERO).with_loss(0.01), 4);
        deliveries(&mut p, t, 100_000, Duration::from_micros(10));
        let lost = p.stats().lost as f64 / 100_000.0;
        assert!((0.008..0.012).contains(&lost), "{lost}");

        let mut cfg = PathConfig::delay(Duration::ZERO);
        cfg.burst = Some(BurstLoss {
            enter: 0.001,
            leave: 0.1,
            loss_in_burst: 1.0,
        });
        let mut p = Direction::new(cfg, 5);
        let v = deliveries(&mut p, t, 100_000, Duration::from_micros(10));
        // Stationary bad share: enter / (enter + leave) ≈ 1%; losses come in runs.
        let lost = p.stats().lost as f64 / 100_000.0;
        assert!((0.005..0.02).contains(&lost), "{lost}");
        let runs = v
            .windows(2)
            .filter(|w| matches!(w[0], Verdict::Deliver(_)) && matches!(w[1], Verdict::Drop(_)))
            .count();
        assert!(
            (p.stats().lost as usize) > 4 * runs,
            "bursts, not scattered losses"
        );
    }

    #[test]
    fn reordered_packets_are_overtaken() {
        let t = t0();
        let mut cfg = PathConfig::delay(Duration::from_millis(15));
        cfg.reorder = Some(Reorder {
            fraction: 0.01,
            extra: Duration::from_millis(10),
        });
        let mut p = Direction::new(cfg, 6);
        let v = deliveries(&mut p, t, 10_000, Duration::from_micros(100));
        let ats: Vec<Instant> = v
            .iter()
            .map(|v| match v {
                Verdict::Deliver(at) => *at,
                Verdict::Drop(d) => panic!("{d:?}"),
            })
            .collect();
        // A held-back packet arrives after the one sent next (two held back in a row count
        // once).
        let overtaken = ats.windows(2).filter(|w| w[1] < w[0]).count();
        let held = p.stats().reordered as usize;
        assert!((50..=150).contains(&held), "{held}");
        assert!(
            overtaken <= held && overtaken >= held * 9 / 10,
            "{overtaken} of {held}"
        );
    }

    #[test]
    fn outages_and_udp_blocks_drop_what_they_should() {
        let t = t0();
        let mut cfg = PathConfig::delay(Duration::ZERO);
        cfg.block_udp = true;
        let mut p = Direction::new(cfg, 7);
        assert_eq!(
            p.on_packet(t, 100, true, false),
            Verdict::Drop(DropReason::UdpBlocked)
        );
        assert!(matches!(
            p.on_packet(t, 100, false, false),
            Verdict::Deliver(_)
        ));
        assert_eq!(
            p.on_packet(t, 100, false, true),
            Verdict::Drop(DropReason::Outage)
        );
    }
}
