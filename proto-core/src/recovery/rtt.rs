//! Round-trip estimation (RFC 9002 §5): what loss detection, the probe timer and the
//! congestion controller all read.

use std::time::Duration;

use super::MAX_ACK_DELAY;

/// The round trip assumed before the first sample.
pub(crate) const INITIAL_RTT: Duration = Duration::from_millis(100);
/// Timer granularity (RFC 9002's kGranularity).
pub(crate) const GRANULARITY: Duration = Duration::from_millis(1);

/// The fast path's round-trip estimate for one session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RttEstimator {
    latest: Duration,
    /// The latest sample less the receiver's acknowledgement delay.
    latest_adjusted: Duration,
    smoothed: Option<Duration>,
    var: Duration,
    min: Duration,
}

impl Default for RttEstimator {
    fn default() -> Self {
        RttEstimator {
            latest: INITIAL_RTT,
            latest_adjusted: INITIAL_RTT,
            smoothed: None,
            var: INITIAL_RTT / 2,
            min: Duration::MAX,
        }
    }
}

impl RttEstimator {
    /// Takes a sample: `sample` from sending to acknowledgement, of which the receiver
    /// says it waited `ack_delay`.
    pub fn update(&mut self, sample: Duration, ack_delay: Duration) {
        self.latest = sample;
        self.min = self.min.min(sample);
        // The receiver's delay is taken off, but never below the path's minimum.
        let adjusted = if sample >= self.min + ack_delay {
            sample - ack_delay.min(MAX_ACK_DELAY)
        } else {
            sample
        };
        self.latest_adjusted = adjusted;
        match self.smoothed {
            None => {
                self.smoothed = Some(adjusted);
                self.var = adjusted / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(adjusted);
                self.var = (self.var * 3 + diff) / 4;
                self.smoothed = Some((srtt * 7 + adjusted) / 8);
            }
        }
    }

    /// The smoothed round trip (the initial guess before a sample).
    pub fn get(&self) -> Duration {
        self.smoothed.unwrap_or(INITIAL_RTT)
    }

    /// The smoothed round trip, once there is a sample.
    pub fn smoothed(&self) -> Option<Duration> {
        self.smoothed
    }

    /// The smallest sample yet (`Duration::MAX` before the first).
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The latest sample, as measured.
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// The latest sample less the receiver's acknowledgement delay.
    pub fn latest_adjusted(&self) -> Duration {
        self.latest_adjusted
    }

    /// The probe timeout (RFC 9002 §6.2.1).
    pub fn pto(&self) -> Duration {
        self.get() + (self.var * 4).max(GRANULARITY) + MAX_ACK_DELAY
    }

    /// How long after a later packet's acknowledgement a packet counts as lost (RFC 9002's
    /// time threshold, 9/8 of the round trip).
    pub fn loss_delay(&self) -> Duration {
        (self.latest.max(self.get()) * 9 / 8).max(GRANULARITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sample_sets_the_estimate_and_later_ones_smooth_it() {
        let mut r = RttEstimator::default();
        assert_eq!(r.get(), INITIAL_RTT);
        assert_eq!(r.smoothed(), None);
        r.update(Duration::from_millis(10), Duration::ZERO);
        assert_eq!(r.get(), Duration::from_millis(10));
        r.update(Duration::from_millis(18), Duration::ZERO);
        assert_eq!(r.get(), Duration::from_millis(11));
        assert_eq!(r.min(), Duration::from_millis(10));
        // An acknowledgement delay is taken off, but not below the minimum.
        r.update(Duration::from_millis(11), Duration::from_millis(2));
        assert_eq!(r.latest_adjusted(), Duration::from_millis(11));
        r.update(Duration::from_millis(14), Duration::from_millis(2));
        assert_eq!(r.latest_adjusted(), Duration::from_millis(12));
    }
}
