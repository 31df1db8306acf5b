//! Operations applied to the running scenario, and what a restart or an expired session excuses.

use std::time::Duration;

use toxtun_proto::{Endpoint, StreamCode, StreamId};
use toxtun_transport_mock::NodeId;

use super::{node_seed, End, Flow, Op, Sim, SimFailure, StreamRec};

impl Sim {
    /// Applies one operation, then lets the network settle for a moment.
    pub fn apply(&mut self, op: &Op) -> Result<(), SimFailure> {
        match op {
            Op::Open {
                client,
                server,
                allowed,
                up,
                down,
                fin_up,
                fin_down,
            } => self.open(
                *client,
                *server,
                *allowed,
                (*up, *fin_up),
                (*down, *fin_down),
            )?,
            Op::Write { stream, end, bytes } => {
                if let Some((node, flow, id)) = self.locate(*stream, *end) {
                    let f = &mut self.streams[*stream].flows[flow];
                    if !f.fin_wanted {
                        f.pending += bytes;
                        self.nodes[node].try_write.insert(id);
                    }
                }
            }
            Op::Finish { stream, end } => {
                if let Some((node, flow, id)) = self.locate(*stream, *end) {
                    self.streams[*stream].flows[flow].fin_wanted = true;
                    self.nodes[node].try_write.insert(id);
                }
            }
            Op::Reset { stream, end } => {
                if let Some((node, _, id)) = self.locate(*stream, *end) {
                    if self.nodes[node]
                        .endpoint
                        .reset(id, StreamCode::Cancelled)
                        .is_ok()
                    {
                        let side = self.streams[*stream].side_of(node).expect("side");
                        self.end_side(*stream, side, "reset locally (2000)".into())?;
                    }
                }
            }
            Op::Stall { stream, end, on } => {
                if let Some((node, _, id)) = self.locate(*stream, *end) {
                    let side = usize::from(*end == End::Acceptor);
                    self.streams[*stream].stalled[side] = *on;
                    if !on {
                        self.nodes[node].try_read.insert(id);
                    }
                }
            }
            Op::Flap {
                client,
                server,
                outage,
            } => self.outage(*client, *server, *outage, false)?,
            Op::Restart { node } => self.restart(*node)?,
            Op::RefuseNext { server } => self.nodes[self.clients + server].refuse_next = true,
            Op::Advance(d) => self.run_for(*d)?,
            Op::Reverse { .. } => self.reverse(op)?,
            Op::Udp { .. } => self.udp(op),
            Op::Blackout {
                client,
                server,
                outage,
            } => self.outage(*client, *server, *outage, true)?,
            Op::Path {
                client,
                server,
                direct,
            } => {
                let (c, s) = (NodeId(*client), NodeId(self.clients + server));
                self.net.set_direct(c, s, *direct);
            }
        }
        self.run_for(Duration::from_millis(20))
    }

    /// A client opens a stream to a server, inside its rules or not, and plans the bytes
    /// each way (with FIN after them or not).
    fn open(
        &mut self,
        client: usize,
        server: usize,
        allowed: bool,
        (up, fin_up): (u64, bool),
        down_plan: (u64, bool),
    ) -> Result<(), SimFailure> {
        let (c, s) = (client, self.clients + server);
        let port = if allowed {
            1 + self.streams.len() % 30000
        } else {
            40000
        };
        let target = format!("127.0.0.1:{port}").parse().expect("target");
        let spk = self.net.peer_id(NodeId(s));
        let id = self.nodes[c]
            .endpoint
            .open(self.now, spk, target)
            .map_err(|e| SimFailure(format!("open failed: {e}")))?;
        self.record_stream(id, (c, s), (up, fin_up), down_plan, self.excuses(c, s));
        Ok(())
    }

    /// Reverse forwarding: the client's listener on the server (asked for once), and a
    /// stream the server opens toward the client for it once it listens.
    fn reverse(&mut self, op: &Op) -> Result<(), SimFailure> {
        let &Op::Reverse {
            client,
            server,
            up,
            down,
            fin_up,
            fin_down,
        } = op
        else {
            return Ok(());
        };
        let (up_plan, down_plan) = ((up, fin_up), (down, fin_down));
        let s = self.clients + server;
        let (spk, cpk) = (
            self.net.peer_id(NodeId(s)),
            self.net.peer_id(NodeId(client)),
        );
        if self.listeners_asked.insert((client, s)) {
            let bind = format!("127.0.0.1:{}", 9000 + client)
                .parse()
                .expect("bind");
            let to = "127.0.0.1:1".parse().expect("target");
            let _ = self.nodes[client].endpoint.listen(self.now, spk, bind, to);
            // Time for LISTEN and its answer, when the session is up.
            self.run_for(Duration::from_millis(500))?;
        }
        let Some(&listener) = self.listening.get(&(s, cpk)) else {
            return Ok(()); // not listening (yet): the next one may be
        };
        if let Ok(id) = self.nodes[s].endpoint.open_reverse(self.now, cpk, listener) {
            self.record_stream(id, (s, client), up_plan, down_plan, self.excuses(client, s));
            self.stats.reverse_streams += 1;
        }
        Ok(())
    }

    /// Keeps a stream opened by `opener` toward `acceptor`, with the bytes planned each way.
    fn record_stream(
        &mut self,
        id: StreamId,
        (opener, acceptor): (usize, usize),
        (up, fin_up): (u64, bool),
        down_plan: (u64, bool),
        excuses_at_open: (u64, u64, u64),
    ) {
        let n = self.streams.len() as u64;
        let mut rec = StreamRec {
            id,
            opener,
            acceptor,
            flows: [Flow::default(), Flow::default()],
            ended: [None, None],
            seen_by_acceptor: false,
            down_plan,
            stalled: [false, false],
            excuses_at_open,
        };
        rec.flows[0].seed = self.seed ^ (n << 1);
        rec.flows[1].seed = self.seed ^ (n << 1 | 1);
        rec.flows[0].pending = up;
        rec.flows[0].fin_wanted = fin_up;
        self.by_id.insert(id, self.streams.len());
        self.streams.push(rec);
        self.nodes[opener].try_write.insert(id);
        self.stats.streams += 1;
    }

    /// The path between a client and a server goes out for `outage`: the friend link
    /// drops (a flap), or stays up while nothing gets through (a `blackout`).
    fn outage(
        &mut self,
        client: usize,
        server: usize,
        outage: Duration,
        blackout: bool,
    ) -> Result<(), SimFailure> {
        let (c, s) = (NodeId(client), NodeId(self.clients + server));
        if blackout {
            self.net.set_blackout(c, s, true);
        } else {
            self.net.link_down(c, s);
        }
        self.run_for(outage)?;
        if blackout {
            self.net.set_blackout(c, s, false);
        } else {
            self.net.link_up(c, s);
        }
        Ok(())
    }

    pub(super) fn excuses(&self, client: usize, server: usize) -> (u64, u64, u64) {
        (
            self.nodes[client].restarts,
            self.nodes[server].restarts,
            self.expiries.get(&(client, server)).copied().unwrap_or(0),
        )
    }

    /// Whether stream `ix` may have lost its session at node `i` now: one of its nodes
    /// restarted since it opened, a session between them expired after the grace, or the
    /// node's session with the other end has been suspended for at least the grace.
    pub(super) fn session_end_excused(&self, i: usize, ix: usize) -> bool {
        let rec = &self.streams[ix];
        let restarted = self.excuses(rec.opener, rec.acceptor) != rec.excuses_at_open;
        let other = if i == rec.opener {
            rec.acceptor
        } else {
            rec.opener
        };
        let grace = self.nodes[i].config.resume_grace;
        let outlasted = self
            .suspended_since
            .get(&(i, self.net.peer_id(NodeId(other))))
            .is_some_and(|since| self.now - *since >= grace);
        restarted || outlasted
    }

    /// The node and flow index for one end of stream `i`, if that end is still live.
    pub(super) fn locate(&self, i: usize, end: End) -> Option<(usize, usize, StreamId)> {
        let rec = self.streams.get(i)?;
        let (node, side) = match end {
            End::Opener => (rec.opener, 0),
            End::Acceptor => (rec.acceptor, 1),
        };
        if rec.ended[side].is_some() || (side == 1 && !rec.seen_by_acceptor) {
            return None;
        }
        Some((node, side, rec.id))
    }

    pub(super) fn restart(&mut self, node: usize) -> Result<(), SimFailure> {
        self.net.restart(NodeId(node));
        self.stats.restarts += 1;
        let n = &mut self.nodes[node];
        n.restarts += 1;
        n.endpoint = Endpoint::new(n.config.clone(), node_seed(self.seed, node, n.restarts))
            .expect("config");
        self.suspended_since.retain(|(n, _), _| *n != node);
        // A restarted client asks for its listeners again; a restarted server has none; and
        // the servers' listeners for the client's old session die with it, though they do
        // not know yet (a stream opened on one would end with that session, and rightly).
        let pk = self.net.peer_id(NodeId(node));
        self.listeners_asked.retain(|(c, _)| *c != node);
        self.listening.retain(|(s, p), _| *s != node && *p != pk);
        n.held.clear();
        n.timeout = None;
        n.try_read.clear();
        n.try_write.clear();
        n.incoming.clear();
        for i in 0..self.streams.len() {
            if let Some(side) = self.streams[i].side_of(node) {
                if self.streams[i].ended[side].is_none()
                    && (side == 0 || self.streams[i].seen_by_acceptor)
                {
                    self.end_side(i, side, "lost with its node (restart)".into())?;
                }
            }
        }
        if !self.nodes[node].is_server {
            self.connect_client(node);
        }
        Ok(())
    }
}
