//! Delivery-rate samples: how fast the path delivered the bytes acknowledged, measured
//! over the interval between a packet's sending and its acknowledgement, as Linux's
//! `tcp_rate.c` and the BBR drafts' "delivery rate estimation" do. A model-based
//! controller ([`super::congestion`]'s BBR) builds its bandwidth estimate from them; a
//! loss-based one ignores them.

use std::time::{Duration, Instant};

/// The sender's running delivery state.
#[derive(Debug, Default)]
pub(crate) struct DeliveryRate {
    /// Bytes acknowledged so far on this path.
    delivered: u64,
    /// When `delivered` last grew (or the flight restarted from idle).
    delivered_time: Option<Instant>,
    /// The send time of the packet most recently acknowledged (or of the first packet
    /// after idle): where the next sample's send interval starts.
    first_sent_time: Option<Instant>,
    /// While set, packets sent are application-limited (the sender had less to send than
    /// the window allowed, so their samples understate the path), until `delivered`
    /// passes this: what was in flight when it ran dry has been acknowledged.
    app_limited_until: Option<u64>,
}

/// What the sender knew when it sent a packet, kept with the packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PacketRate {
    delivered: u64,
    delivered_time: Instant,
    first_sent_time: Instant,
    app_limited: bool,
}

/// One delivery-rate sample, from one acknowledged packet.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RateSample {
    /// Bytes delivered over `interval`.
    pub delivered: u64,
    /// The longer of the send and the acknowledgement intervals (the rate is never
    /// overestimated by acknowledgements that came in a burst).
    pub interval: Duration,
    /// Bytes delivered when the packet was sent: a round ends when a packet sent after the
    /// round began is acknowledged.
    pub prior_delivered: u64,
    /// Bytes delivered now, this packet included.
    pub total_delivered: u64,
    /// The packet went while the sender was application-limited.
    pub app_limited: bool,
    /// Bytes in flight once this packet left the flight (the sender's own count).
    pub in_flight: usize,
}

impl RateSample {
    /// The delivery rate in bytes per second, if the interval is long enough to tell.
    pub fn bandwidth(&self) -> Option<u64> {
        let us = self.interval.as_micros();
        (us >= 100).then(|| (u128::from(self.delivered) * 1_000_000 / us) as u64)
    }
}

impl DeliveryRate {
    /// A packet is sent with `in_flight_before` bytes in flight before it.
    pub fn on_sent(&mut self, now: Instant, in_flight_before: usize) -> PacketRate {
        if in_flight_before == 0 {
            // Restarting from idle: the interval starts now, not at the last ack.
            self.first_sent_time = Some(now);
            self.delivered_time = Some(now);
        }
        PacketRate {
            delivered: self.delivered,
            delivered_time: self.delivered_time.unwrap_or(now),
            first_sent_time: self.first_sent_time.unwrap_or(now),
            app_limited: self.app_limited_until.is_some(),
        }
    }

    /// Packet `p`, sent at `sent` with `bytes`, was acknowledged, leaving `in_flight` bytes
    /// in flight: its sample.
    pub fn on_acked(
        &mut self,
        now: Instant,
        (p, sent, bytes): (&PacketRate, Instant, usize),
        in_flight: usize,
    ) -> RateSample {
        self.delivered += bytes as u64;
        if self.app_limited_until.is_some_and(|u| self.delivered > u) {
            self.app_limited_until = None;
        }
        self.delivered_time = Some(now);
        self.first_sent_time = Some(sent);
        let send_elapsed = sent.saturating_duration_since(p.first_sent_time);
        let ack_elapsed = now.saturating_duration_since(p.delivered_time);
        RateSample {
            delivered: self.delivered - p.delivered,
            interval: send_elapsed.max(ack_elapsed),
            prior_delivered: p.delivered,
            total_delivered: self.delivered,
            app_limited: p.app_limited,
            in_flight,
        }
    }

    /// The sender has nothing more to send though the window has room: samples of what is
    /// in flight now (`in_flight` bytes) understate the path.
    pub fn on_app_limited(&mut self, in_flight: usize) {
        self.app_limited_until = Some(self.delivered + in_flight as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_flight_samples_its_own_rate() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut r = DeliveryRate::default();
        // 10 packets of 1000 bytes, one per ms, each acknowledged 50 ms later.
        let sent: Vec<PacketRate> = (0..10)
            .map(|i| r.on_sent(ms(i), if i == 0 { 0 } else { 1000 * i as usize }))
            .collect();
        let mut last = RateSample::default();
        for (i, p) in sent.iter().enumerate() {
            last = r.on_acked(ms(50 + i as u64), (p, ms(i as u64), 1000), 0);
        }
        // The last packet: 10,000 bytes over 59 ms (its ack interval from the start).
        let bw = last.bandwidth().unwrap();
        assert!((160_000..=180_000).contains(&bw), "{bw}");
        assert_eq!(last.prior_delivered, 0);
        assert!(!last.app_limited);
        r.on_app_limited(0);
        let p = r.on_sent(ms(100), 0);
        assert!(r.on_acked(ms(150), (&p, ms(100), 1000), 0).app_limited);
        let p = r.on_sent(ms(151), 0);
        assert!(
            !r.on_acked(ms(201), (&p, ms(151), 1000), 0).app_limited,
            "passed: cleared"
        );
    }
}
