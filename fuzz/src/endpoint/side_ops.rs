//! The endpoint target's commands for reverse and UDP forwarding, and the flow frames a
//! peer sends (split from `endpoint.rs` to keep it within the size rules).

use bytes::Bytes;
use toxtun_proto::wire::{Fragment, Frame};
use toxtun_proto::StreamCode;

use super::{target, Harness, Op, PeerFrame, PEERS};

/// UOPEN, UOPEN_OK, UCLOSE, DGRAM and LDGRAM from a peer.
pub(super) fn flow_frame(f: PeerFrame) -> Frame {
    match f {
        PeerFrame::FlowOpen(flow, t) => Frame::FlowOpen {
            flow: u32::from(flow % 8),
            target: target(t),
        },
        PeerFrame::FlowOpenOk(flow) => Frame::FlowOpenOk {
            flow: u32::from(flow % 8),
        },
        PeerFrame::FlowClose(flow, code) => Frame::FlowClose {
            flow: u32::from(flow % 8),
            code: StreamCode::from_code(code),
        },
        PeerFrame::Datagram(lossy, flow, seq, index, count, len) => {
            let count = count.max(1);
            let f = Fragment {
                flow: u32::from(flow % 8),
                seq: u32::from(seq),
                index: index % count,
                count,
                payload: Bytes::from(vec![0x3C; usize::from(len) % 1363]),
            };
            if lossy {
                Frame::LossyDatagram(f)
            } else {
                Frame::Datagram(f)
            }
        }
        _ => unreachable!("only flow frames come here"),
    }
}

impl Harness {
    /// The reverse-forwarding commands, as client and as server.
    pub(super) fn apply_reverse(&mut self, op: Op) {
        let peer = |p: u8| usize::from(p) % PEERS.len();
        let now = self.now;
        match op {
            Op::Listen(p, bind, to) => {
                let _ = self
                    .ep
                    .listen(now, PEERS[peer(p)], target(bind), target(to));
            }
            Op::Unlisten(p, id) => {
                self.ep.unlisten(PEERS[peer(p)], u32::from(id % 8));
            }
            Op::AnswerListen(p, id, code) => {
                let answer = if code == 0 {
                    Ok(())
                } else {
                    Err(StreamCode::from_code(code))
                };
                let _ = self
                    .ep
                    .answer_listen(PEERS[peer(p)], u32::from(id % 8), answer);
            }
            Op::OpenReverse(p, id) => {
                if let Ok(s) = self.ep.open_reverse(now, PEERS[peer(p)], u32::from(id % 8)) {
                    self.note_stream(s);
                }
            }
            _ => {}
        }
    }

    /// The UDP-forwarding commands, as client and as server.
    pub(super) fn apply_flow(&mut self, op: Op) {
        let peer = |p: u8| PEERS[usize::from(p) % PEERS.len()];
        let now = self.now;
        match op {
            Op::OpenFlow(p, t) => {
                let _ = self.ep.open_flow(now, peer(p), target(t));
            }
            Op::SendDatagram(p, flow, len) => {
                // Up to twice the largest datagram: the edge is in range.
                let len = usize::from(len) * 2 + usize::from(len % 7);
                let _ = self.ep.send_datagram(
                    now,
                    peer(p),
                    u32::from(flow % 8),
                    Bytes::from(vec![0xD6; len]),
                );
            }
            Op::CloseFlow(p, flow) => {
                self.ep.close_flow(peer(p), u32::from(flow % 8));
            }
            Op::AnswerFlow(p, flow, code) => {
                let answer = if code == 0 {
                    Ok(())
                } else {
                    Err(StreamCode::from_code(code))
                };
                let _ = self.ep.answer_flow(peer(p), u32::from(flow % 8), answer);
            }
            _ => {}
        }
    }
}
