//! The flow-control bounds, checked after every step.

use std::collections::BTreeMap;

use toxtun_proto::PeerId;

use super::{Sim, SimFailure};

impl Sim {
    /// The flow-control bounds on every endpoint.
    pub(super) fn check_bounds(&self) -> Result<(), SimFailure> {
        for (i, n) in self.nodes.iter().enumerate() {
            let ep = &n.endpoint;
            for peer in ep.peers() {
                let Some(ss) = ep.session_stats(peer) else {
                    fail!("node {i}: listed peer {peer} has no session");
                };
                let bound = ep.config().session_window as usize + ep.config().max_packet_size;
                if ss.retransmit_buffered > bound {
                    fail!(
                        "node {i}: frame log holds {} bytes > bound {bound}",
                        ss.retransmit_buffered
                    );
                }
            }
            // Windows start at stream_window and grow, when readers keep up, to at most
            // max_stream_window; what a peer's streams grew together stays within the
            // session window.
            let first = u64::from(ep.config().stream_window);
            let max = u64::from(ep.config().max_stream_window);
            let mut grown: BTreeMap<PeerId, u64> = BTreeMap::new();
            for (stream, peer) in ep.streams() {
                let Some(st) = ep.stream_stats(stream) else {
                    fail!("node {i}: indexed stream {stream} has no state");
                };
                if st.recv_buffered as u64 > st.recv_window || st.recv_window > max {
                    fail!(
                        "node {i}: stream {stream} buffers {} > window {} (at most {max})",
                        st.recv_buffered,
                        st.recv_window
                    );
                }
                let g = grown.entry(peer).or_default();
                *g += st.recv_window - first;
                if *g > ep.config().session_window {
                    fail!("node {i}: peer {peer}'s stream windows grew {g} > session window");
                }
                // All endpoints share one configuration, so the peer's bound is ours.
                if st.send_buffered as u64 > max {
                    fail!(
                        "node {i}: stream {stream} holds {} unacknowledged > peer window {max}",
                        st.send_buffered
                    );
                }
                if let Some(ss) = ep.session_stats(peer) {
                    if ss.recv_buffered > ep.config().session_window {
                        fail!("node {i}: peer buffers {} > budget", ss.recv_buffered);
                    }
                }
            }
        }
        Ok(())
    }
}
