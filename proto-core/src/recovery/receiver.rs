//! The receiving side of the fast path: which LDATA packet numbers arrived, and when to
//! acknowledge them in a LACK.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::frame::MAX_ACK_RANGES;

/// The receiver sends LACK after this many LDATA packets at the latest...
pub(crate) const ACK_EVERY_PACKETS: u32 = 32;
/// ... or this long after the first unacknowledged one arrived.
pub(crate) const MAX_ACK_DELAY: Duration = Duration::from_millis(2);

/// The receiving side of the fast path: which packet numbers arrived, and when to say so.
#[derive(Debug, Default)]
pub(crate) struct LossyReceiver {
    /// Received numbers as disjoint ranges `[start, end)`, newest first, at most
    /// `MAX_ACK_RANGES` (older ones were acknowledged before, or are resent).
    ranges: VecDeque<(u64, u64)>,
    /// When the newest packet arrived.
    newest_at: Option<Instant>,
    unacked: u32,
    ack_due: Option<Instant>,
    ack_now: bool,
    counters: ReceiverCounters,
}

/// What the receiving side counted, for the session's stats.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReceiverCounters {
    /// LDATA packets received, duplicates included.
    pub packets_received: u64,
    /// Duplicates among them (their bytes were ignored).
    pub duplicates: u64,
    /// LACKs sent.
    pub acks_sent: u64,
}

impl LossyReceiver {
    /// What this side counted.
    pub fn counters(&self) -> ReceiverCounters {
        self.counters
    }

    /// Records a packet number. Returns `false` for a duplicate (its bytes are ignored).
    pub fn on_packet(&mut self, now: Instant, number: u64) -> bool {
        self.counters.packets_received += 1;
        let newest_before = self.ranges.front().map(|r| r.1);
        if !self.insert(number) {
            self.counters.duplicates += 1;
            return false;
        }
        if newest_before.is_none_or(|end| number + 1 >= end) {
            self.newest_at = Some(now);
        }
        if newest_before.is_some_and(|end| number != end) {
            // A gap opened or a hole filled: say so at once, so the sender learns fast.
            self.ack_now = true;
        }
        self.unacked += 1;
        if self.unacked >= ACK_EVERY_PACKETS {
            self.ack_now = true;
        }
        if self.ack_due.is_none() {
            self.ack_due = Some(now + MAX_ACK_DELAY);
        }
        true
    }

    fn insert(&mut self, n: u64) -> bool {
        // Find the first range (newest first) that starts at or below n.
        let i = self.ranges.iter().position(|&(s, _)| s <= n);
        match i {
            Some(i) if n < self.ranges[i].1 => return false,
            _ => {}
        }
        if i.is_none()
            && self.ranges.len() == MAX_ACK_RANGES
            && self.ranges.back().is_some_and(|r| n < r.0)
        {
            // Older than anything we still track: it may be a duplicate; take it (the
            // stream dedups by offset) and do not acknowledge it again.
            return true;
        }
        let at = i.unwrap_or(self.ranges.len());
        // Extend the range below (at `at`) or the one above (at `at - 1`), or insert.
        let joins_below = at < self.ranges.len() && self.ranges[at].1 == n;
        let joins_above = at > 0 && self.ranges[at - 1].0 == n + 1;
        match (joins_below, joins_above) {
            (true, true) => {
                let above = self.ranges.remove(at - 1).expect("present");
                self.ranges[at - 1].1 = above.1;
            }
            (true, false) => self.ranges[at].1 = n + 1,
            (false, true) => self.ranges[at - 1].0 = n,
            (false, false) => {
                self.ranges.insert(at, (n, n + 1));
                if self.ranges.len() > MAX_ACK_RANGES {
                    self.ranges.pop_back();
                }
            }
        }
        true
    }

    /// When a LACK falls due, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.ack_due
    }

    /// The acknowledgement delay ran out: a LACK goes out at the next chance.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.ack_due.is_some_and(|t| now >= t) {
            self.ack_due = None;
            self.ack_now = true;
        }
    }

    /// Whether a LACK should go out now.
    pub fn wants_ack(&self) -> bool {
        self.unacked > 0 && self.ack_now
    }

    /// The LACK to send: ranges newest first, and how long the newest packet waited.
    pub fn take_ack(&mut self, now: Instant) -> (u32, Vec<(u64, u64)>) {
        self.unacked = 0;
        self.ack_now = false;
        self.ack_due = None;
        self.counters.acks_sent += 1;
        let delay = self
            .newest_at
            .map_or(0, |t| now.saturating_duration_since(t).as_micros())
            .min(u128::from(u32::MAX)) as u32;
        (delay, self.ranges.iter().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests' origin of virtual time (the one clock read, as the pair harness does).
    fn origin() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    #[test]
    fn receiver_tracks_ranges_newest_first_and_spots_duplicates() {
        let t = origin();
        let mut r = LossyReceiver::default();
        for n in [0, 1, 2, 5, 6, 4, 9] {
            assert!(r.on_packet(t, n));
        }
        assert!(!r.on_packet(t, 5), "a duplicate");
        assert!(r.wants_ack(), "gaps are acknowledged at once");
        let (_, ranges) = r.take_ack(t);
        assert_eq!(ranges, vec![(9, 10), (4, 7), (0, 3)]);
        assert!(r.on_packet(t, 3));
        assert!(r.on_packet(t, 7));
        assert!(r.on_packet(t, 8));
        assert_eq!(r.take_ack(t).1, vec![(0, 10)]);
        assert!(!r.wants_ack());
        assert!(r.on_packet(t, 10));
        assert!(!r.wants_ack(), "in order: wait for more, or the delay");
        r.on_timeout(r.deadline().unwrap());
        assert!(r.wants_ack());
    }

    #[test]
    fn receiver_keeps_a_bounded_number_of_ranges() {
        let t = origin();
        let mut r = LossyReceiver::default();
        for n in 0..1000u64 {
            r.on_packet(t, n * 2);
        }
        let (_, ranges) = r.take_ack(t);
        assert_eq!(ranges.len(), MAX_ACK_RANGES);
        assert_eq!(ranges[0], (1998, 1999));
    }
}
