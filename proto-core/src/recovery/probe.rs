//! The probe timer (RFC 9002's PTO, with a capped back-off) and what it learns about the
//! path: probe timeouts in a row unanswered while the peer's lossless frames keep
//! arriving mean the fast path is broken on this link; a path silent both ways is an
//! outage, and the probes go on until it returns.

use std::time::{Duration, Instant};

use super::LossySender;

/// Consecutive probe timeouts after which the fast path is declared broken for this link
/// (lossy packets do not get through) and bytes go lossless — counting only those whose
/// previous probe went unanswered although the peer's lossless frames kept arriving after
/// it. A path that carries nothing at all is an outage, not a broken fast path: falling
/// back then only moves the bytes to c-toxcore's lossless packets, which after the outage
/// crawl (0.02 MB/s on a 50 ms path), while the fast path's probes find the path again
/// the moment it returns.
pub(super) const PTOS_BEFORE_FALLBACK: u32 = 3;
/// The longest wait between probe timeouts while nothing is acknowledged (unless the
/// path's own probe timeout is longer): a probe timeout doubles each time, as RFC 9002's
/// does, but uncapped it reaches minutes within a few outages' worth of them, and bytes
/// would wait that long after the path returned. Each probe is two packets.
pub(super) const MAX_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How long a fast path declared broken stays off before it is tried again: the link
/// c-toxcore still reports as direct may carry lossy packets again (a NAT that dropped them
/// for a while), and a retry costs a few packets sent twice.
pub(super) const BROKEN_RETRY: Duration = Duration::from_secs(10);
/// Packets a probe timeout sends again, outside the window and the pacer (RFC 9002 sends
/// one or two).
pub(super) const PROBE_PACKETS: usize = 2;

/// The probe timer's state: timeouts in a row, and what they showed about the path.
#[derive(Debug, Default)]
pub(super) struct Probing {
    /// Probe timeouts in a row without an acknowledgement.
    pub(super) count: u32,
    /// Packets that may still go outside the window and the pacer: a probe timeout's.
    pub(super) packets: usize,
    /// When the latest probe timeout fired.
    pub(super) at: Option<Instant>,
    /// When the peer's latest lossless frame arrived: proof that the path carries
    /// something, which tells a broken fast path from an outage.
    pub(super) heard_at: Option<Instant>,
    /// Probe timeouts in a row whose previous probe went unanswered while the peer was
    /// heard after it.
    pub(super) unanswered_while_heard: u32,
    /// A probe timeout fired: the session sends a lossless PING (unless one is still
    /// unanswered), whose PONG tells whether the whole path or only the fast path is down.
    pub(super) wants_liveness_ping: bool,
    /// When the fast path was declared broken: lossy packets do not get through this link
    /// (several probe timeouts unanswered while lossless frames kept coming), and the
    /// session stops using them until the path changes or [`BROKEN_RETRY`] passes.
    pub(super) broken_at: Option<Instant>,
}

impl Probing {
    /// An acknowledgement came, or the fast path's packets went elsewhere: the probing
    /// ends (a broken verdict stays).
    pub(super) fn reset(&mut self) {
        self.count = 0;
        self.packets = 0;
        self.at = None;
        self.unanswered_while_heard = 0;
        self.wants_liveness_ping = false;
    }
}

impl LossySender {
    /// Whether the fast path is declared broken on this link (see [`BROKEN_RETRY`]).
    pub fn is_broken(&self) -> bool {
        self.probing.broken_at.is_some()
    }

    /// Whether a probe timeout asked for a lossless PING since the last call.
    pub fn take_liveness_ping_request(&mut self) -> bool {
        std::mem::take(&mut self.probing.wants_liveness_ping)
    }

    /// When the loss or probe timer fires, if armed.
    pub fn deadline(&self) -> Option<Instant> {
        if let Some(t) = self.loss_time {
            return Some(t);
        }
        if self.in_flight.is_empty() {
            return None;
        }
        // From the latest send or probe timeout, whichever is later: a probe that could not
        // go yet (the transport's lossy queue is full) must not leave the timer due.
        let last_sent = self.last_sent?;
        let since = last_sent.max(self.probing.at.unwrap_or(last_sent));
        Some(since + self.probe_interval())
    }

    /// The wait before the next probe timeout: the probe timeout, doubled for each one in a
    /// row, but no more than [`MAX_PROBE_INTERVAL`] (or the probe timeout itself, on a path
    /// slower than that).
    fn probe_interval(&self) -> Duration {
        let pto = self.rtt.pto();
        let backed_off = pto * (1u32 << self.probing.count.min(6));
        backed_off.min(pto.max(MAX_PROBE_INTERVAL))
    }

    /// The peer's lossless frame arrived: the path carries something.
    pub fn on_lossless_heard(&mut self, now: Instant) {
        self.probing.heard_at = Some(now);
    }

    /// Fires the loss or probe timer if due. A probe timeout sends the oldest bytes in
    /// flight again, first and outside the window, so that whatever the path did a LACK
    /// follows; it reduces nothing (the next LACK tells whether anything was lost). Several
    /// in a row unanswered while the peer's lossless frames keep arriving mark the fast
    /// path broken; while the peer is silent too, the path is out, and the probes go on.
    pub fn on_timeout(&mut self, now: Instant) {
        if self.loss_time.is_some_and(|t| now >= t) {
            self.detect_lost(now, false);
            return;
        }
        if self.deadline().is_none_or(|t| now < t) {
            return;
        }
        let p = &mut self.probing;
        // Was the previous probe unanswered though the peer was heard after it went?
        let heard_after_probe =
            matches!((p.at, p.heard_at), (Some(probe), Some(heard)) if heard > probe);
        if heard_after_probe {
            p.unanswered_while_heard += 1;
        } else {
            p.unanswered_while_heard = 0;
        }
        p.wants_liveness_ping = true;
        p.at = Some(now);
        p.count += 1;
        self.counters.probe_timeouts += 1;
        // The oldest bytes, whatever their packet numbers: after a long outage every probe
        // carries the bytes the receiver waits for, so they are delivered the moment the
        // path returns. A copy still on its way is acknowledged in vain (it left
        // `in_flight`); its bytes are counted once, by the copy that replaces it.
        let mut oldest: Vec<(u64, u64)> = self
            .in_flight
            .iter()
            .map(|(&k, p)| (p.chunk.order, k))
            .collect();
        oldest.sort_unstable();
        oldest.truncate(PROBE_PACKETS);
        for &(_, k) in oldest.iter().rev() {
            if let Some(p) = self.in_flight.remove(&k) {
                self.bytes_in_flight -= p.chunk.payload.len();
                self.lost.push_front(p.chunk);
            }
        }
        self.probing.packets = oldest.len();
        if self.probing.unanswered_while_heard >= PTOS_BEFORE_FALLBACK {
            self.probing.broken_at = Some(now);
        }
    }

    /// When a fast path declared broken is to be tried again.
    pub fn retry_at(&self) -> Option<Instant> {
        self.probing.broken_at.map(|t| t + BROKEN_RETRY)
    }
}
