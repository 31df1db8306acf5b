//! UDP flows in the simulation: clients send numbered datagrams, servers echo them, and
//! every datagram must arrive intact, at the right node, and at most once each way
//! (lossy packets may be lost or come twice; a datagram may be lost, never repeated).

use bytes::{BufMut, Bytes, BytesMut};
use toxtun_proto::{PeerId, StreamCode};
use toxtun_transport_mock::NodeId;

use super::{bytes_at, Op, Sim, SimFailure};

impl Sim {
    /// `Op::Udp`: the client opens a flow to the server and sends its datagrams on it at
    /// once (the endpoint holds them until the flow opens), the largest `size` bytes.
    pub(super) fn udp(&mut self, op: &Op) {
        let &Op::Udp {
            client,
            server,
            allowed,
            datagrams: n,
            size,
        } = op
        else {
            return;
        };
        let s = self.clients + server;
        let port = if allowed { 53 } else { 40053 };
        let target = format!("127.0.0.1:{port}").parse().expect("target");
        let spk = self.net.peer_id(NodeId(s));
        let Ok(flow) = self.nodes[client].endpoint.open_flow(self.now, spk, target) else {
            return;
        };
        for k in 0..n {
            let id = self.datagrams.len() as u64;
            let len = 8 + (size * (k + 1) / n.max(1)).saturating_sub(8);
            let mut d = BytesMut::with_capacity(len);
            d.put_u64(id);
            d.extend_from_slice(&bytes_at(self.seed ^ id, 8, len - 8));
            let sent = self.nodes[client]
                .endpoint
                .send_datagram(self.now, spk, flow, d.freeze());
            if sent.is_ok() {
                self.datagrams.insert(id, (client, s));
                self.stats.datagrams_sent += 1;
            }
        }
    }

    /// A datagram arrived at node `i` from `peer`: a client's at its server (echoed), or
    /// an echo back at its client.
    pub(super) fn on_datagram(
        &mut self,
        i: usize,
        peer: PeerId,
        flow: u32,
        payload: Bytes,
    ) -> Result<(), SimFailure> {
        if payload.len() < 8 {
            fail!(
                "node {i}: a datagram of {} bytes, shorter than any sent",
                payload.len()
            );
        }
        let id = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
        let Some(&(client, server)) = self.datagrams.get(&id) else {
            fail!("node {i}: datagram {id} that nobody sent");
        };
        if payload[8..] != bytes_at(self.seed ^ id, 8, payload.len() - 8) {
            fail!("node {i}: datagram {id} corrupted");
        }
        let from = |n: usize| self.net.peer_id(NodeId(n));
        if i == server && peer == from(client) {
            if !self.delivered.insert(id) {
                fail!("node {i}: datagram {id} delivered twice");
            }
            let _ = self.nodes[i]
                .endpoint
                .send_datagram(self.now, peer, flow, payload);
        } else if i == client && peer == from(server) {
            if !self.echoed.insert(id) {
                fail!("node {i}: the echo of datagram {id} delivered twice");
            }
        } else {
            fail!("node {i}: datagram {id} from {peer:?} reached the wrong node");
        }
        Ok(())
    }

    /// A flow refused or ended at node `i`: never for a reason only a broken peer causes.
    pub(super) fn on_flow_end(&mut self, i: usize, code: StreamCode) -> Result<(), SimFailure> {
        match code {
            StreamCode::TargetNotAllowed
            | StreamCode::SessionClosed
            | StreamCode::FlowIdle
            | StreamCode::Cancelled => Ok(()),
            other => fail!("node {i}: a UDP flow ended with {other}"),
        }
    }
}
