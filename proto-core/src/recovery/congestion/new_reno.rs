//! NewReno with HyStart++: the fast path's first controller.
//!
//! A window with β = 0.7 (as CUBIC uses) whose slow start grows per round trip, not per
//! second; it stops growing while the round trip shows a queue (as HyStart and Vegas do:
//! on loopback the queue is c-toxcore's own, and filling it only adds delay and drops); it
//! grows only while it is what limits the sender; and its pace is 2× the window's rate in
//! slow start, 1.25× after, as Linux paces.

use std::time::{Duration, Instant};

use super::{Controller, INITIAL_WINDOW, MAX_WINDOW, MIN_WINDOW};
use crate::recovery::rate::RateSample;
use crate::recovery::rtt::RttEstimator;
use crate::recovery::SEGMENT;

/// Multiplicative decrease on loss.
const BETA_NUM: usize = 7;
const BETA_DEN: usize = 10;
/// Queueing delay tolerated before the window stops growing: the larger of this and half
/// the path's minimum round trip. Over real Tox on loopback (0.5 ms idle) the two Tox
/// threads' batching alone adds 2–3 ms once bulk flows; 2 ms held the window near 0.5 MB,
/// too little to keep them busy (BENCHMARKS.md, issue 8).
const QUEUE_ALLOWANCE: Duration = Duration::from_millis(4);
/// Round-trip samples (one per LACK) a round needs before its minimum may end slow start
/// (HyStart++ takes 8 per round; LACK comes every 32 packets, so 4 here).
const ROUND_SAMPLES: u32 = 4;
/// Rounds of conservative slow start before congestion avoidance (RFC 9406's CSS_ROUNDS).
const CSS_ROUNDS: u32 = 5;
/// How much slower conservative slow start grows than slow start (RFC 9406's).
const CSS_GROWTH_DIVISOR: usize = 4;

/// Conservative slow start: a round of slow start showed a queue, which may be a standing
/// one (the window reached the path's) or a passing stall.
#[derive(Debug, Clone, Copy)]
struct ConservativeStart {
    /// The smallest round trip of the round that showed the queue: a later round below it
    /// means the queue went away, and slow start resumes.
    baseline: Duration,
    /// Rounds left before congestion avoidance takes over.
    rounds_left: u32,
}

/// NewReno's state for one path.
#[derive(Debug)]
pub(crate) struct NewReno {
    window: usize,
    ssthresh: usize,
    /// Losses of packets sent before this instant belong to the reduction already made.
    recovery_start: Option<Instant>,
    /// The window and threshold before the latest reduction, while it may be undone.
    undo: Option<(usize, usize)>,
    /// Bytes acknowledged in congestion avoidance since the window last grew.
    avoidance_acked: usize,
    /// The number the next packet sent will have.
    next_number: u64,
    /// The round trip in progress ends when a packet numbered this or later is
    /// acknowledged; slow start ends only if the whole round showed a queue.
    round_end: u64,
    /// The smallest round-trip sample of the round in progress, and how many it had.
    round_min_rtt: Option<Duration>,
    round_samples: u32,
    /// Slow start saw a queue and now grows carefully (HyStart++'s conservative slow
    /// start, RFC 9406 §4.2).
    css: Option<ConservativeStart>,
    /// The most bytes in flight after a send, in this round and in the one before: the
    /// window grows only while it is what limits the sender (RFC 9002 §7.8).
    round_max_in_flight: usize,
    prev_round_max_in_flight: usize,
}

impl Default for NewReno {
    fn default() -> Self {
        NewReno {
            window: INITIAL_WINDOW,
            ssthresh: usize::MAX,
            recovery_start: None,
            undo: None,
            avoidance_acked: 0,
            next_number: 0,
            round_end: 0,
            round_min_rtt: None,
            round_samples: 0,
            css: None,
            round_max_in_flight: 0,
            prev_round_max_in_flight: 0,
        }
    }
}

impl NewReno {
    /// A controller with this window and slow-start threshold (for tests that start
    /// mid-flow).
    #[cfg(test)]
    pub(crate) fn with_window(window: usize, ssthresh: usize) -> Self {
        NewReno {
            window,
            ssthresh,
            ..NewReno::default()
        }
    }

    /// Whether a round-trip sample shows packets waiting in a queue on the way.
    fn queued(rtt: &RttEstimator, sample: Duration) -> bool {
        sample.saturating_sub(rtt.min()) > (rtt.min() / 2).max(QUEUE_ALLOWANCE)
    }

    /// A round trip ended (with enough samples to judge). In slow start, a round whose
    /// smallest sample shows a queue starts conservative slow start; a later round below
    /// that one's minimum resumes slow start, and five that are not end it (HyStart++, RFC
    /// 9406, judged on the queueing the `on_ack` hold uses). A late sample or round — a
    /// thread of either side descheduled for a few milliseconds, a burst of streams
    /// opening — thus only pauses the growth: ending slow start on it, as toxtun first
    /// did, left NewReno to climb from a window a tenth of the path's, one packet per
    /// round trip.
    fn end_round(&mut self, rtt: &RttEstimator) {
        self.round_end = self.next_number;
        self.prev_round_max_in_flight = std::mem::take(&mut self.round_max_in_flight);
        if self.round_samples < ROUND_SAMPLES {
            return; // too few samples to judge: the round goes on
        }
        let Some(round_min) = self.round_min_rtt.take() else {
            return;
        };
        self.round_samples = 0;
        if self.window >= self.ssthresh {
            return; // congestion avoidance: only losses and the per-sample hold act
        }
        let queued = Self::queued(rtt, round_min);
        match &mut self.css {
            None if queued => {
                self.css = Some(ConservativeStart {
                    baseline: round_min,
                    rounds_left: CSS_ROUNDS,
                });
            }
            None => {}
            // The queue went away (it was a stall, or other traffic that left): back to
            // slow start.
            Some(css) if round_min < css.baseline => self.css = None,
            Some(css) => {
                css.rounds_left -= 1;
                if css.rounds_left == 0 {
                    self.css = None;
                    self.ssthresh = self.window;
                }
            }
        }
    }

    /// Whether the window is what held the sender back lately: in slow start, whether it
    /// used more than half of it (the next round may use it all), after it whether it
    /// used all but a few packets of it (as Linux's `tcp_is_cwnd_limited` judges).
    fn window_limited(&self) -> bool {
        let used = self.round_max_in_flight.max(self.prev_round_max_in_flight);
        if self.window < self.ssthresh {
            used * 2 > self.window
        } else {
            used + 3 * SEGMENT >= self.window
        }
    }
}

impl Controller for NewReno {
    fn on_sent(&mut self, _now: Instant, number: u64, _bytes: usize, in_flight: usize) {
        self.next_number = self.next_number.max(number + 1);
        self.round_max_in_flight = self.round_max_in_flight.max(in_flight);
    }

    fn on_newest_acked(&mut self, number: u64, rtt: &RttEstimator) {
        if number >= self.round_end {
            self.end_round(rtt);
        }
    }

    fn on_rtt_sample(&mut self, rtt: &RttEstimator) {
        let sample = rtt.latest_adjusted();
        self.round_min_rtt = Some(self.round_min_rtt.map_or(sample, |m| m.min(sample)));
        self.round_samples += 1;
    }

    fn on_ack(
        &mut self,
        _now: Instant,
        sent: Instant,
        bytes: usize,
        rtt: &RttEstimator,
        _sample: &RateSample,
    ) {
        if self.recovery_start.is_some_and(|r| sent <= r) {
            return; // acknowledged from before the reduction: no growth yet
        }
        if rtt.smoothed().is_some() && Self::queued(rtt, rtt.latest_adjusted()) {
            // Packets wait in a queue on the way (c-toxcore's, the kernel's, a router's):
            // a larger window would only lengthen it until it overflows. Hold the window
            // (as Vegas does) and let losses, if any, reduce it.
            return;
        }
        if !self.window_limited() {
            // The sender used a fraction of the window (the streams had nothing more, or
            // no credit): acknowledgements say nothing about a larger one. Growing anyway
            // lets a tunnel that carried keystrokes for an hour meet its first bulk copy
            // with a window no path has shown it can take, all of it sent at once.
            // (Credit-limited bulk transfers still reach large windows: their in-flight
            // peaks, when credit arrives in bulk, pass the slow-start test; BENCHMARKS.md,
            // issue 8.)
            return;
        }
        if self.window < self.ssthresh {
            // Slow start doubles per round trip; conservative slow start grows a quarter
            // as fast while it finds out whether the queue it saw stays.
            self.window += if self.css.is_some() {
                bytes / CSS_GROWTH_DIVISOR
            } else {
                bytes
            };
        } else {
            self.avoidance_acked += bytes;
            if self.avoidance_acked >= self.window {
                self.avoidance_acked -= self.window;
                self.window += SEGMENT;
            }
        }
        self.window = self.window.min(MAX_WINDOW);
    }

    fn on_congestion_event(&mut self, now: Instant, newest_sent: Instant, _lost: usize) -> bool {
        if self.recovery_start.is_some_and(|r| newest_sent <= r) {
            return false; // one reduction per round of losses
        }
        self.recovery_start = Some(now);
        self.undo = Some((self.window, self.ssthresh));
        self.window = (self.window * BETA_NUM / BETA_DEN).max(MIN_WINDOW);
        self.ssthresh = self.window;
        self.css = None;
        self.avoidance_acked = 0;
        true
    }

    fn on_persistent_congestion(&mut self) {
        self.window = MIN_WINDOW;
        self.undo = None; // an outage or a collapse, not reordering
    }

    fn on_spurious_congestion_event(&mut self) {
        if let Some((window, ssthresh)) = self.undo.take() {
            self.window = self.window.max(window);
            self.ssthresh = ssthresh;
        }
    }

    fn window(&self) -> usize {
        self.window
    }

    fn pacing_rate(&self, rtt: &RttEstimator) -> u64 {
        let (num, den) = if self.window < self.ssthresh {
            (2, 1)
        } else {
            (5, 4)
        };
        let per_rtt = self.window as u64 * num / den;
        per_rtt.saturating_mul(1_000_000) / (rtt.get().as_micros() as u64).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::pacing::Pacer;

    /// What loss detection does around the controller, on a path that loses nothing.
    struct Flow {
        cc: NewReno,
        rtt: RttEstimator,
        next: u64,
        in_flight: usize,
        t: Instant,
    }

    impl Flow {
        fn new() -> Self {
            Flow {
                cc: NewReno::default(),
                rtt: RttEstimator::default(),
                next: 0,
                in_flight: 0,
                #[allow(clippy::disallowed_methods)]
                t: Instant::now(),
            }
        }

        fn send(&mut self) {
            self.in_flight += SEGMENT;
            self.cc.on_sent(self.t, self.next, SEGMENT, self.in_flight);
            self.next += 1;
        }

        /// Acknowledges packets `first..end`, sent at `sent`, in one LACK.
        fn ack(&mut self, first: u64, end: u64, sent: Instant) {
            self.cc.on_newest_acked(end - 1, &self.rtt);
            self.rtt.update(self.t - sent, Duration::ZERO);
            self.cc.on_rtt_sample(&self.rtt);
            for _ in first..end {
                self.in_flight -= SEGMENT;
                self.cc
                    .on_ack(self.t, sent, SEGMENT, &self.rtt, &RateSample::default());
            }
        }

        /// Sends a full window, then acknowledges it one packet at a time `rtt` later (as
        /// LACKs trickle in); returns the window after the round.
        fn round(&mut self, rtt: Duration) -> usize {
            let first = self.next;
            let sent = self.t;
            while self.in_flight + SEGMENT <= self.cc.window() {
                self.send();
            }
            self.t += rtt;
            for n in first..self.next {
                self.ack(n, n + 1, sent);
            }
            self.cc.window()
        }
    }

    #[test]
    fn slow_start_doubles_per_round_trip() {
        let mut f = Flow::new();
        let rtt = Duration::from_millis(2);
        for _ in 0..8 {
            let w = f.cc.window();
            let first = f.next;
            let sent = f.t;
            while f.in_flight + SEGMENT <= f.cc.window() {
                f.send();
            }
            f.t += rtt;
            let end = f.next;
            f.ack(first, end, sent);
            assert!(f.cc.window() >= 2 * w - SEGMENT, "{w} -> {}", f.cc.window());
        }
        assert!(
            f.cc.window() >= 1 << 20,
            "16 ms of slow start reach a MiB window"
        );
    }

    #[test]
    fn a_growing_queue_stops_slow_start_without_a_loss() {
        let mut f = Flow::new();
        // Round trips of 1 ms, then the queue builds: 1, 1, 4, 8, 8 ms.
        let windows: Vec<usize> = [1u64, 1, 4, 8, 8]
            .iter()
            .map(|&ms| f.round(Duration::from_millis(ms)))
            .collect();
        assert!(
            windows[1] > windows[0],
            "slow start while the path is empty"
        );
        assert!(
            windows[2] > windows[1],
            "3 ms of queueing is within the allowance"
        );
        assert_eq!(
            windows[3], windows[2],
            "a queue of 7 ms on a 1 ms path holds the window: {windows:?}"
        );
        assert_eq!(windows[4], windows[3], "and keeps holding it: {windows:?}");
        assert!(
            f.cc.css.is_some(),
            "the queued round started conservative slow start"
        );
        for _ in 0..CSS_ROUNDS {
            f.round(Duration::from_millis(8));
        }
        assert!(
            f.cc.ssthresh <= f.cc.window,
            "five queued rounds ended slow start"
        );
    }

    #[test]
    fn a_stalled_round_pauses_slow_start_without_ending_it() {
        let mut f = Flow::new();
        let ms = Duration::from_millis(1);
        for _ in 0..3 {
            f.round(ms);
        }
        // A whole round's LACKs come 9 ms late (a thread of the receiver descheduled),
        // then the path is as fast as before.
        // A round is judged when the next one's first LACK comes.
        let w = f.round(9 * ms);
        f.round(ms);
        assert!(f.cc.css.is_some(), "the late round looked like a queue");
        f.round(ms);
        assert!(f.cc.css.is_none(), "the queue went away: slow start again");
        assert_eq!(f.cc.ssthresh, usize::MAX);
        assert!(f.round(ms) >= 2 * w, "and it goes on doubling");
    }

    #[test]
    fn a_window_the_sender_does_not_fill_does_not_grow() {
        let mut f = Flow::new();
        let rtt = Duration::from_millis(1);
        // Slow start fills the window a few rounds, then the streams have only 8 packets
        // per round trip (credit or the application limits them) for a long time.
        for _ in 0..3 {
            f.round(rtt);
        }
        let w = f.cc.window();
        for _ in 0..200 {
            let first = f.next;
            let sent = f.t;
            for _ in 0..8 {
                f.send();
            }
            f.t += rtt;
            let end = f.next;
            f.ack(first, end, sent);
        }
        assert_eq!(
            f.cc.window(),
            w,
            "200 app-limited rounds left the window as it was"
        );
        // Once the sender fills it again, it grows again.
        assert!(f.round(rtt) > w);
        assert!(f.round(rtt) > w * 3 / 2);
    }

    #[test]
    fn one_reduction_per_round_of_losses_and_an_undo_restores_it() {
        let mut f = Flow::new();
        for _ in 0..3 {
            f.round(Duration::from_millis(1));
        }
        let w = f.cc.window();
        let sent = f.t;
        f.t += Duration::from_millis(1);
        assert!(f.cc.on_congestion_event(f.t, sent, SEGMENT));
        assert_eq!(f.cc.window(), w * BETA_NUM / BETA_DEN);
        assert!(
            !f.cc.on_congestion_event(f.t, sent, SEGMENT),
            "a loss sent before the reduction belongs to it"
        );
        f.cc.on_spurious_congestion_event();
        assert_eq!(f.cc.window(), w);
        assert_eq!(f.cc.ssthresh, usize::MAX, "slow start again");
        f.cc.on_persistent_congestion();
        assert_eq!(f.cc.window(), MIN_WINDOW);
    }

    #[test]
    fn the_pace_spreads_a_window_over_the_round_trip() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut rtt = RttEstimator::default();
        rtt.update(Duration::from_millis(10), Duration::ZERO);
        let cc = NewReno::with_window(100 * SEGMENT, 0); // avoidance: 1.25 windows per RTT
        let mut pacer = Pacer::default();
        let mut t = t0;
        let mut sent = 0;
        while t < t0 + Duration::from_millis(10) {
            match pacer.delay(t, SEGMENT, cc.pacing_rate(&rtt)) {
                None => {
                    pacer.on_sent(SEGMENT);
                    sent += 1;
                }
                Some(next) => t = next,
            }
        }
        assert!(
            (120..=140).contains(&sent),
            "{sent} segments in one round trip"
        );
    }
}
