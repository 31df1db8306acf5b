//! The pacer: spreads a congestion window over the round trip instead of sending it in one
//! burst, which a drop-tail bottleneck answers with losses. The controller says the rate;
//! this token bucket says when the next packet may go.

use std::time::{Duration, Instant};

use super::SEGMENT;

/// How many segments the pacer lets out back to back at least.
const PACER_BURST: usize = 10;

/// A token bucket filled at the controller's pacing rate.
#[derive(Debug)]
pub(crate) struct Pacer {
    tokens: usize,
    last: Option<Instant>,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer {
            tokens: PACER_BURST * SEGMENT,
            last: None,
        }
    }
}

impl Pacer {
    /// When `bytes` may go at `rate` bytes per second; `None`: now. The bucket holds the
    /// larger of [`PACER_BURST`] segments and 2 ms at the rate.
    pub fn delay(&mut self, now: Instant, bytes: usize, rate: u64) -> Option<Instant> {
        let capacity = (PACER_BURST * SEGMENT).max((rate / 500) as usize);
        if let Some(last) = self.last {
            let gained = (now.saturating_duration_since(last).as_nanos() as u64)
                .saturating_mul(rate)
                / 1_000_000_000;
            self.tokens = (self.tokens as u64 + gained).min(capacity as u64) as usize;
        }
        self.last = Some(now);
        if self.tokens >= bytes {
            return None;
        }
        let missing = (bytes - self.tokens) as u64;
        let wait = Duration::from_nanos(missing.saturating_mul(1_000_000_000) / rate.max(1));
        Some(now + wait.max(Duration::from_micros(50)))
    }

    /// `bytes` left: they use up tokens.
    pub fn on_sent(&mut self, bytes: usize) {
        self.tokens = self.tokens.saturating_sub(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_lets_that_many_bytes_out_per_second_after_the_burst() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut p = Pacer::default();
        let rate = 1000 * SEGMENT as u64; // 1000 segments a second
        let mut t = t0;
        let mut sent = 0;
        while t < t0 + Duration::from_millis(100) {
            match p.delay(t, SEGMENT, rate) {
                None => {
                    p.on_sent(SEGMENT);
                    sent += 1;
                }
                Some(next) => t = next,
            }
        }
        assert!((105..=115).contains(&sent), "{sent} segments in 100 ms");
    }
}
