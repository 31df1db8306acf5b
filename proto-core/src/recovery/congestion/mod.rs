//! Congestion control for the fast path: how much may be in flight, and how fast it may go.
//!
//! Loss detection ([`super::LossySender`]) decides *what* was lost and tells a
//! [`Controller`] what happened (packets sent and acknowledged, round-trip samples, losses
//! and losses that turned out to be reordering); the controller answers with a window and
//! a pacing rate. To add a controller, implement [`Controller`] in a module beside
//! [`new_reno`] and give it a variant of [`CongestionControl`].

use std::fmt;
use std::time::Instant;

use super::rate::RateSample;
use super::rtt::RttEstimator;
use super::SEGMENT;

mod bbr;
mod new_reno;

pub(crate) use bbr::Bbr;
pub(crate) use new_reno::NewReno;

/// The first window: 10 segments, as QUIC and TCP start.
pub(crate) const INITIAL_WINDOW: usize = 10 * SEGMENT;
/// The smallest window after losses.
pub(crate) const MIN_WINDOW: usize = 2 * SEGMENT;
/// The largest window: 4 MiB in flight, far past any path's needs at Tox's packet rate, so
/// that memory stays bounded whatever the acknowledgements say.
pub(crate) const MAX_WINDOW: usize = 4 << 20;

/// Which congestion controller a session's fast path runs (`EndpointConfig::congestion`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CongestionControl {
    /// NewReno with β = 0.7 and HyStart++ (RFC 9406), holding the window while the round
    /// trip shows a queue: loss-based, so every random loss cuts its pace.
    NewReno,
    /// Model-based, in the spirit of BBR, and the default: paces at the estimated
    /// bottleneck bandwidth, keeps about two bandwidth-delay products in flight (plus what
    /// bursts of acknowledgements need), and takes random loss under 2% of a round for
    /// what it is, not for congestion.
    #[default]
    Bbr,
}

impl std::str::FromStr for CongestionControl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "newreno" | "new_reno" | "reno" => Ok(CongestionControl::NewReno),
            "bbr" => Ok(CongestionControl::Bbr),
            other => Err(format!(
                "unknown congestion controller {other:?} (newreno or bbr)"
            )),
        }
    }
}

impl fmt::Display for CongestionControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CongestionControl::NewReno => "newreno",
            CongestionControl::Bbr => "bbr",
        })
    }
}

impl CongestionControl {
    /// A fresh controller of this kind, for a new path.
    pub(crate) fn build(self) -> Box<dyn Controller> {
        match self {
            CongestionControl::NewReno => Box::new(NewReno::default()),
            CongestionControl::Bbr => Box::new(Bbr::default()),
        }
    }
}

/// A congestion controller, driven by loss detection. Every call takes `now` or the
/// relevant send time from the caller; none reads a clock.
pub(crate) trait Controller: fmt::Debug + Send {
    /// Packet `number` carrying `bytes` left; `in_flight` is what is in flight with it.
    fn on_sent(&mut self, now: Instant, number: u64, bytes: usize, in_flight: usize);

    /// An acknowledgement arrived whose newest newly acknowledged packet is `number`,
    /// before its round trip is sampled (a round of the controller may end here).
    fn on_newest_acked(&mut self, number: u64, rtt: &RttEstimator);

    /// The estimator took a new round-trip sample (`rtt.latest_adjusted()`).
    fn on_rtt_sample(&mut self, rtt: &RttEstimator);

    /// A packet sent at `sent` with `bytes` of payload was acknowledged; `sample` is the
    /// delivery rate it measured.
    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: usize,
        rtt: &RttEstimator,
        sample: &RateSample,
    );

    /// Packets carrying `lost_bytes` were declared lost, the newest of them sent at
    /// `newest_sent`. Returns whether this starts a new congestion episode (a reduction),
    /// rather than belonging to the one in progress.
    fn on_congestion_event(
        &mut self,
        now: Instant,
        newest_sent: Instant,
        lost_bytes: usize,
    ) -> bool;

    /// Losses after two probe timeouts without an acknowledgement: the path collapsed or
    /// went out (RFC 9002 §7.6).
    fn on_persistent_congestion(&mut self);

    /// Every loss of the latest episode turned out to be reordering: undo its reduction.
    fn on_spurious_congestion_event(&mut self);

    /// Bytes that may be in flight.
    fn window(&self) -> usize;

    /// Bytes per second the pacer lets out, given the round trip.
    fn pacing_rate(&self, rtt: &RttEstimator) -> u64;
}
