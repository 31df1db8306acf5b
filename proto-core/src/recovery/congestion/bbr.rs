//! A model-based controller in the spirit of BBR: it estimates the path's bottleneck
//! bandwidth (the windowed maximum of delivery-rate samples over about ten round trips)
//! and its propagation delay (the minimum round trip over ten seconds), paces at the
//! bandwidth with a gain that probes for more now and then and drains the queue it made,
//! and bounds what is in flight near twice the bandwidth-delay product.
//!
//! Random loss is not congestion: a round that loses under [`LOSS_THRESHOLD`] of what it
//! sent changes nothing. A round that loses more caps what may be in flight below what was
//! in flight when it happened, as BBRv2/v3's `inflight_hi` does, and the cap lifts again,
//! growing each round, while losses stay low. Learned from the BBR drafts, Linux's
//! `tcp_bbr.c` and quinn-proto's `congestion/bbr`; none of their code is here.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Controller, INITIAL_WINDOW, MAX_WINDOW, MIN_WINDOW};
use crate::recovery::rate::RateSample;
use crate::recovery::rtt::RttEstimator;
use crate::recovery::SEGMENT;

/// Startup's gain on pace and window: 2/ln 2, doubling the rate each round.
const STARTUP_GAIN: f64 = 2.885;
/// Drain's gain on pace: the inverse of startup's, emptying the queue startup built.
const DRAIN_GAIN: f64 = 1.0 / 2.885;
/// The most rounds drain lasts.
const DRAIN_ROUNDS: u64 = 3;
/// The window is this many bandwidth-delay products (room for delayed acknowledgements).
const CWND_GAIN: f64 = 2.0;
/// Probe-bandwidth's pacing gains, one phase per minimum round trip: probe up, drain
/// what the probe queued, then cruise.
const PROBE_GAINS: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// Rounds over which the bandwidth filter keeps its maximum.
const BW_WINDOW_ROUNDS: u64 = 10;
/// How long a minimum round trip stands before probe-RTT refreshes it.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// How long probe-RTT holds the window at [`PROBE_RTT_WINDOW`].
const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
/// Probe-RTT's window: four packets.
const PROBE_RTT_WINDOW: usize = 4 * SEGMENT;
/// Startup ends after this many rounds without the bandwidth growing by a quarter.
const FULL_BW_ROUNDS: u32 = 3;
/// A round losing more than this fraction of its bytes is congestion (BBRv3's 2%).
const LOSS_THRESHOLD: f64 = 0.02;
/// ... and at least this many packets' worth (BBRv2 counts 8 loss events in startup).
const LOSS_MIN_PACKETS: u64 = 8;
/// What in flight is capped at after a lossy round, of what was in flight then.
const LOSS_BETA: f64 = 0.7;
/// A round whose largest round trip exceeds the minimum by this factor and
/// [`QUEUE_MARGIN`] built a queue at the bottleneck: the pipe is full, whatever held the
/// sender back.
const QUEUE_RTT_GAIN: f64 = 1.25;
const QUEUE_MARGIN: Duration = Duration::from_millis(5);
/// Rounds over which the aggregation estimate keeps its maximum.
const EXTRA_ACKED_ROUNDS: u64 = 10;
/// The aggregation allowance never exceeds this long at the estimated bandwidth.
const EXTRA_ACKED_MAX_TIME: Duration = Duration::from_millis(100);
/// An aggregation epoch restarts after this many bytes, so one long epoch cannot let its
/// small rate error grow without bound.
const EXTRA_ACKED_EPOCH_BYTES: u64 = 1 << 20;

/// How far acknowledgements run ahead of the bandwidth estimate when they come in bursts
/// (BBR's `extra_acked`). The receiver acknowledges every 32 packets or after 2 ms, and
/// the Tox threads hand packets over in batches, so on a short path most of a small
/// window is acknowledged at once, a few milliseconds late. A window of two
/// bandwidth-delay products, with the delay the path's minimum, then cannot cover the
/// wait: each round delivers less than the estimate, the estimate falls, the window with
/// it. One 200 MB download over real Tox on loopback went at 2 MB/s that way. The window
/// gets the largest recent excess on top, so the sender keeps sending through the wait.
#[derive(Debug, Default)]
struct AckAggregation {
    /// When this epoch began, and what it acknowledged since.
    epoch_start: Option<Instant>,
    epoch_acked: u64,
    /// The largest excess of each recent round, newest last.
    rounds: VecDeque<(u64, u64)>,
}

impl AckAggregation {
    /// `acked` bytes were acknowledged at `now` in round `round`; `bw` is the bandwidth
    /// estimate and `window` the current window (an excess never counts beyond it).
    fn on_ack(&mut self, now: Instant, acked: u64, bw: u64, round: u64, window: usize) {
        let expected = |start: Instant| {
            (bw as f64 * now.saturating_duration_since(start).as_secs_f64()) as u64
        };
        let behind = self
            .epoch_start
            .is_none_or(|t| self.epoch_acked <= expected(t));
        if behind || self.epoch_acked + acked >= EXTRA_ACKED_EPOCH_BYTES {
            // Acknowledgements fell back to the estimated rate (or the epoch grew long):
            // a new epoch starts here.
            self.epoch_start = Some(now);
            self.epoch_acked = 0;
        }
        self.epoch_acked += acked;
        let start = self.epoch_start.unwrap_or(now);
        let extra = self
            .epoch_acked
            .saturating_sub(expected(start))
            .min(window as u64);
        match self.rounds.back_mut() {
            Some((r, best)) if *r == round => *best = (*best).max(extra),
            _ => self.rounds.push_back((round, extra)),
        }
        while self
            .rounds
            .front()
            .is_some_and(|&(r, _)| r + EXTRA_ACKED_ROUNDS <= round)
        {
            self.rounds.pop_front();
        }
    }

    /// The allowance: the recent maximum excess, at most [`EXTRA_ACKED_MAX_TIME`] at `bw`.
    fn allowance(&self, bw: u64) -> usize {
        let most = self.rounds.iter().map(|&(_, e)| e).max().unwrap_or(0);
        let cap = (bw as f64 * EXTRA_ACKED_MAX_TIME.as_secs_f64()) as u64;
        most.min(cap) as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Startup,
    /// Since which round.
    Drain {
        since_round: u64,
    },
    ProbeBw {
        phase: usize,
        since: Instant,
    },
    ProbeRtt {
        until: Option<Instant>,
    },
}

/// The controller's state for one path.
#[derive(Debug)]
pub(crate) struct Bbr {
    mode: Mode,
    /// The best bandwidth sample of each recent round (bytes per second), newest last.
    bw_rounds: VecDeque<(u64, u64)>,
    /// Rounds counted: a round ends when a packet sent after it began is acknowledged.
    round: u64,
    next_round_delivered: u64,
    /// Startup: the bandwidth when it last grew by a quarter, and rounds since.
    full_bw: u64,
    full_bw_rounds: u32,
    filled_pipe: bool,
    min_rtt: Option<Duration>,
    min_rtt_at: Option<Instant>,
    /// The minimum round trip is older than [`MIN_RTT_WINDOW`]: the next sample replaces
    /// it whatever it is (the path's delay may have grown for good).
    min_rtt_expired: bool,
    window: usize,
    /// The window before probe-RTT or persistent congestion shrank it.
    prior_window: usize,
    in_flight: usize,
    /// Loss-bounded ceiling on what may be in flight, if a round lost too much.
    inflight_hi: Option<usize>,
    /// This round's delivered and lost bytes, for its loss rate.
    round_delivered: u64,
    round_lost: u64,
    /// The most in flight in this round (what a lossy round's cap is taken from).
    round_max_in_flight: usize,
    /// The largest round trip sampled in this round.
    round_max_rtt: Duration,
    /// When the latest loss episode began.
    episode_start: Option<Instant>,
    aggregation: AckAggregation,
}

impl Default for Bbr {
    fn default() -> Self {
        Bbr {
            mode: Mode::Startup,
            bw_rounds: VecDeque::new(),
            round: 0,
            next_round_delivered: 0,
            full_bw: 0,
            full_bw_rounds: 0,
            filled_pipe: false,
            min_rtt: None,
            min_rtt_at: None,
            min_rtt_expired: false,
            window: INITIAL_WINDOW,
            prior_window: INITIAL_WINDOW,
            in_flight: 0,
            inflight_hi: None,
            round_delivered: 0,
            round_lost: 0,
            round_max_in_flight: 0,
            round_max_rtt: Duration::ZERO,
            episode_start: None,
            aggregation: AckAggregation::default(),
        }
    }
}

impl Bbr {
    /// The bottleneck bandwidth estimate, bytes per second.
    fn max_bw(&self) -> u64 {
        self.bw_rounds.iter().map(|&(_, bw)| bw).max().unwrap_or(0)
    }

    /// The bandwidth-delay product at `gain`, if both are known.
    fn bdp(&self, gain: f64) -> Option<usize> {
        let (bw, rtt) = (self.max_bw(), self.min_rtt?);
        (bw > 0).then_some((bw as f64 * rtt.as_secs_f64() * gain) as usize)
    }

    fn pacing_gain(&self) -> f64 {
        match self.mode {
            Mode::Startup => STARTUP_GAIN,
            Mode::Drain { .. } => DRAIN_GAIN,
            Mode::ProbeBw { phase, .. } => PROBE_GAINS[phase],
            Mode::ProbeRtt { .. } => 1.0,
        }
    }

    fn record_bw(&mut self, sample: &RateSample) {
        let Some(bw) = sample.bandwidth() else {
            return;
        };
        // An application-limited sample says only "at least this much".
        if sample.app_limited && bw <= self.max_bw() {
            return;
        }
        match self.bw_rounds.back_mut() {
            Some((r, best)) if *r == self.round => *best = (*best).max(bw),
            _ => self.bw_rounds.push_back((self.round, bw)),
        }
        while self
            .bw_rounds
            .front()
            .is_some_and(|&(r, _)| r + BW_WINDOW_ROUNDS <= self.round)
        {
            self.bw_rounds.pop_front();
        }
    }

    /// A round ended: its loss rate, startup's progress. `app_limited`: the sample that
    /// ended it was application-limited (or limited by the peer's credit), so it says
    /// nothing of whether the path is full.
    fn on_round_end(&mut self, now: Instant, app_limited: bool) {
        // Congestion is a round losing both a share and a count of packets: random loss of
        // 1% still puts 2% into some short rounds, never 8 packets.
        let sent = self.round_delivered + self.round_lost;
        let lossy = self.round_lost >= LOSS_MIN_PACKETS * SEGMENT as u64
            && self.round_lost as f64 > LOSS_THRESHOLD * sent as f64;
        if lossy {
            let cap = (self.round_max_in_flight as f64 * LOSS_BETA) as usize;
            let floor = self.bdp(1.0).unwrap_or(MIN_WINDOW).max(MIN_WINDOW);
            self.inflight_hi = Some(cap.max(floor).min(self.inflight_hi.unwrap_or(usize::MAX)));
            if self.mode == Mode::Startup {
                self.filled_pipe = true;
                self.mode = Mode::Drain {
                    since_round: self.round,
                };
            }
        } else if let Some(hi) = self.inflight_hi {
            // Losses stayed low: lift the cap a quarter per round, gone past 2 BDP.
            let grown = hi + hi / 4 + SEGMENT;
            let bound = self.bdp(CWND_GAIN).unwrap_or(MAX_WINDOW);
            self.inflight_hi = (grown < bound).then_some(grown);
        }
        // A round held back by the application or the peer's credit says nothing of
        // whether the pipe is full, unless its round trips show a queue of its own
        // making: then it is (on a lossy path the receiver's credit waits on each resend,
        // and start-up, skipping those rounds, went on pacing at 2.9× the link with its
        // buffer full for a second). Its own: the round had at least a model's BDP and an
        // initial window in flight. An interactive spell's few bytes on a jittery path
        // once passed for a queue, and start-up ended at the echo's rate.
        let own = self.round_max_in_flight >= self.bdp(1.0).unwrap_or(0).max(INITIAL_WINDOW);
        let queue = own
            && self.min_rtt.is_some_and(|m| {
                self.round_max_rtt > m.mul_f64(QUEUE_RTT_GAIN).max(m + QUEUE_MARGIN)
            });
        self.round_delivered = 0;
        self.round_lost = 0;
        self.round_max_in_flight = self.in_flight;
        self.round_max_rtt = Duration::ZERO;
        if self.mode == Mode::Startup && !lossy && (!app_limited || queue) {
            let bw = self.max_bw();
            if bw >= self.full_bw + self.full_bw / 4 {
                self.full_bw = bw;
                self.full_bw_rounds = 0;
            } else {
                self.full_bw_rounds += 1;
                if self.full_bw_rounds >= FULL_BW_ROUNDS {
                    self.filled_pipe = true;
                    self.mode = Mode::Drain {
                        since_round: self.round,
                    };
                }
            }
        }
        if let Mode::ProbeRtt { until: Some(t) } = self.mode {
            if now >= t {
                self.min_rtt_at = Some(now);
                self.window = self.window.max(self.prior_window);
                self.mode = if self.filled_pipe {
                    Mode::ProbeBw {
                        phase: 2,
                        since: now,
                    }
                } else {
                    Mode::Startup
                };
            }
        }
    }

    /// Moves between modes as the model says.
    fn update_mode(&mut self, now: Instant) {
        // Drain ends when the queue startup built is gone, or after a few rounds at most.
        let drained = |b: &Self, since: u64| {
            b.bdp(1.0).is_some_and(|bdp| b.in_flight <= bdp) || b.round >= since + DRAIN_ROUNDS
        };
        if matches!(self.mode, Mode::Drain { since_round } if drained(self, since_round)) {
            self.mode = Mode::ProbeBw {
                phase: 2,
                since: now,
            };
        }
        if let Mode::ProbeBw { phase, since } = self.mode {
            let rtt = self.min_rtt.unwrap_or(Duration::from_millis(100));
            let bdp = self.bdp(1.0).unwrap_or(0);
            let done = now.saturating_duration_since(since) >= rtt
                && match phase {
                    // Probing up lasts until the flight reached 1.25 BDP (or a round).
                    0 => self.in_flight >= self.bdp(1.25).unwrap_or(0) || self.round_lost > 0,
                    // Draining lasts until the queue it left is gone.
                    1 => self.in_flight <= bdp,
                    _ => true,
                };
            let overdue = now.saturating_duration_since(since) >= rtt * 4;
            if done || overdue {
                self.mode = Mode::ProbeBw {
                    phase: (phase + 1) % PROBE_GAINS.len(),
                    since: now,
                };
            }
        }
        let stale = self
            .min_rtt_at
            .is_some_and(|t| now.saturating_duration_since(t) >= MIN_RTT_WINDOW);
        if stale && !matches!(self.mode, Mode::ProbeRtt { .. }) {
            self.min_rtt_expired = true;
            self.prior_window = self.window;
            self.mode = Mode::ProbeRtt { until: None };
        }
        if let Mode::ProbeRtt { until: None } = self.mode {
            if self.in_flight <= PROBE_RTT_WINDOW {
                self.mode = Mode::ProbeRtt {
                    until: Some(now + PROBE_RTT_TIME),
                };
            }
        }
    }

    fn update_window(&mut self, acked: usize) {
        let extra = self.aggregation.allowance(self.max_bw());
        let target = match self.mode {
            Mode::ProbeRtt { .. } => PROBE_RTT_WINDOW,
            Mode::Startup => self.bdp(STARTUP_GAIN).unwrap_or(usize::MAX),
            _ => self
                .bdp(CWND_GAIN)
                .map_or(usize::MAX, |b| b + extra + 3 * SEGMENT),
        };
        self.window = if self.filled_pipe || matches!(self.mode, Mode::ProbeRtt { .. }) {
            (self.window + acked).min(target)
        } else if self.window < target {
            // Startup doubles the window each round, up to its gain times the model's
            // bandwidth-delay product: no further, or a deep buffer fills and overflows.
            self.window + acked
        } else {
            self.window
        };
        if let Some(hi) = self.inflight_hi {
            self.window = self.window.min(hi);
        }
        self.window = self.window.clamp(MIN_WINDOW, MAX_WINDOW);
        if matches!(self.mode, Mode::ProbeRtt { .. }) {
            self.window = self.window.min(PROBE_RTT_WINDOW.max(MIN_WINDOW));
        }
    }
}

impl Controller for Bbr {
    fn on_sent(&mut self, _now: Instant, _number: u64, _bytes: usize, in_flight: usize) {
        self.in_flight = in_flight;
        self.round_max_in_flight = self.round_max_in_flight.max(in_flight);
    }

    fn on_newest_acked(&mut self, _number: u64, _rtt: &RttEstimator) {}

    fn on_rtt_sample(&mut self, rtt: &RttEstimator) {
        let sample = rtt.latest();
        self.round_max_rtt = self.round_max_rtt.max(sample);
        if self.min_rtt_expired || self.min_rtt.is_none_or(|m| sample <= m) {
            self.min_rtt_expired = false;
            self.min_rtt = Some(sample);
            // The stamp is set by the ack that follows (it has `now`).
            self.min_rtt_at = None;
        }
    }

    fn on_ack(
        &mut self,
        now: Instant,
        _sent: Instant,
        bytes: usize,
        _rtt: &RttEstimator,
        sample: &RateSample,
    ) {
        // The sender's count: packets also leave the flight without an ack (a new path, a
        // reset stream), and an estimate of our own would drift and hold drain forever.
        self.in_flight = sample.in_flight;
        if self.min_rtt_at.is_none() {
            self.min_rtt_at = Some(now);
        }
        self.round_delivered += bytes as u64;
        if sample.prior_delivered >= self.next_round_delivered {
            self.next_round_delivered = sample.total_delivered;
            self.round += 1;
            self.on_round_end(now, sample.app_limited);
        }
        self.record_bw(sample);
        let bw = self.max_bw();
        self.aggregation
            .on_ack(now, bytes as u64, bw, self.round, self.window);
        self.update_mode(now);
        self.update_window(bytes);
    }

    fn on_congestion_event(&mut self, now: Instant, newest_sent: Instant, lost: usize) -> bool {
        self.round_lost += lost as u64;
        // No reduction here (the model sets the rate), but losses of packets sent after
        // the last episode began start a new one: loss detection counts its reordering
        // by episode.
        let new = self.episode_start.is_none_or(|t| newest_sent > t);
        if new {
            self.episode_start = Some(now);
        }
        new
    }

    fn on_persistent_congestion(&mut self) {
        // The path went out for a while: restart from a small window on the same model.
        self.prior_window = self.window;
        self.window = MIN_WINDOW;
        self.inflight_hi = None;
    }

    fn on_spurious_congestion_event(&mut self) {}

    fn window(&self) -> usize {
        self.window
    }

    fn pacing_rate(&self, rtt: &RttEstimator) -> u64 {
        // The floor: the initial window per round trip. Samples taken across an outage
        // (one packet delivered over thirty seconds) once set the model to a few bytes a
        // second, and the pacer then let a packet out every few seconds: the path came
        // back and the stream did not. At the floor the samples find the path again.
        let srtt = rtt
            .smoothed()
            .unwrap_or(Duration::from_millis(100))
            .max(Duration::from_micros(100));
        let floor = INITIAL_WINDOW as f64 / srtt.as_secs_f64();
        let bw = (self.max_bw() as f64).max(floor);
        (bw * self.pacing_gain()).max(SEGMENT as f64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An interactive spell (an ssh session before an scp): 64-byte echoes, their round
    /// trips jittery by 30 ms. Its rounds are application-limited and its flight is no
    /// queue of ours, so start-up must not end on them: it once did, with the model at the
    /// echo's rate, and the bulk transfer after took 20 s to reach the link.
    #[test]
    fn an_interactive_spell_does_not_end_start_up() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut b = Bbr::default();
        let mut rtt = RttEstimator::default();
        let mut delivered = 0u64;
        for i in 0..20u64 {
            let sent = t0 + Duration::from_millis(100 * i);
            let late = Duration::from_millis(50 + 30 * (i % 2));
            b.on_sent(sent, i, 64, 64);
            rtt.update(late, Duration::ZERO);
            b.on_rtt_sample(&rtt);
            let sample = RateSample {
                delivered: 64,
                interval: late,
                prior_delivered: delivered,
                total_delivered: delivered + 64,
                app_limited: true,
                in_flight: 0,
            };
            delivered += 64;
            b.on_ack(sent + late, sent, 64, &rtt, &sample);
        }
        assert!(b.round >= 10, "{} rounds", b.round);
        assert_eq!(b.mode, Mode::Startup);
        assert!(!b.filled_pipe);
    }
}
