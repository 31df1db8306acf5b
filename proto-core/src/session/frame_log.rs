//! The frame log: sequenced frames kept until the peer acknowledges them (ACK), and the
//! count of the peer's that we acknowledge.

use std::time::Instant;

use bytes::Bytes;

use super::{Session, ACK_DELAY};
use crate::codes::SessionCode;

impl Session {
    /// A sequenced frame arrived: count it and arrange its acknowledgement.
    pub(crate) fn count_received(&mut self, now: Instant) {
        self.rx_seq += 1;
        if self.ack_due.is_none() {
            self.ack_due = Some(now + ACK_DELAY);
        }
    }

    /// The peer's ACK: forget the frames it has. The first ACK after a resume is the
    /// peer's count, and the resend starts there.
    pub(super) fn on_ack_frame(&mut self, received: u64) -> Result<(), SessionCode> {
        let log_start = self.tx_seq - self.log.len() as u64;
        if received > self.tx_seq || (self.awaiting_peer_count && received < log_start) {
            // Frames never sent, or frames it already acknowledged and now lacks.
            return Err(SessionCode::ProtocolViolation);
        }
        let n = received.saturating_sub(log_start) as usize;
        for p in self.log.drain(..n) {
            self.log_bytes -= p.len();
        }
        self.resend_from = self.resend_from.saturating_sub(n);
        if self.awaiting_peer_count {
            self.awaiting_peer_count = false;
            self.resend_from = 0;
        }
        Ok(())
    }

    /// Keeps a sequenced frame in the log until acknowledged.
    pub(super) fn log_frame(&mut self, p: Bytes) -> Bytes {
        self.tx_seq += 1;
        self.log_bytes += p.len();
        self.log.push_back(p.clone());
        self.resend_from = self.log.len();
        p
    }
}
