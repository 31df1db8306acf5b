//! UDP forwarding (`forward -U`) in the session: the client opens a flow (UOPEN), the
//! server checks its `udp:` rules and the application opens it (UOPEN_OK) or refuses it
//! (UCLOSE); datagrams then go both ways, cut into fragments that fit a packet. On a
//! direct link they go as lossy packets (LDGRAM), never behind the frame log's resends;
//! over a TCP relay, where c-toxcore carries no lossy packets, as unsequenced lossless
//! ones (DGRAM), which are never resent either. A datagram is delivered whole and once,
//! or not at all.
//!
//! Every queue is bounded: datagrams past [`MAX_QUEUED_BYTES`] are dropped and counted,
//! and datagrams take every other packet at most while streams have bytes waiting, so a
//! flood on a flow slows the streams of its session but never stops them.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{Ctx, Role, Session};
use crate::codes::{SessionCode, StreamCode};
use crate::event::{DatagramError, Event};
use crate::flow::{fragments, Assembled, Flow, FlowState, Reassembly, MAX_DATAGRAM, MAX_HELD};
use crate::frame::{Fragment, Frame, DATAGRAM_HEADER_LEN};
use crate::ids::PeerId;
use crate::policy::ServerPolicy;
use crate::target::Target;

/// Bytes of datagrams a session queues for sending; past it new ones are dropped, as a
/// router's full queue drops them (UDP senders expect that, and slow down or not).
pub const MAX_QUEUED_BYTES: usize = 256 * 1024;

/// A session's flows and its datagram queue.
#[derive(Debug, Default)]
pub(crate) struct Flows {
    pub map: BTreeMap<u32, Flow>,
    /// Fragments waiting for a packet, oldest first.
    queue: VecDeque<Fragment>,
    queued_bytes: usize,
    reassembly: Reassembly,
    /// The last packet out was a datagram: streams with bytes waiting go next.
    yielded: bool,
    /// When idle flows are looked for next (while there are flows).
    next_sweep: Option<Instant>,
    pub sent: u64,
    pub received: u64,
    pub dropped: u64,
    pub discarded: u64,
}

impl Session {
    /// Client: adds a flow toward `target`; UOPEN goes out now if the session is up.
    pub(crate) fn add_flow(&mut self, id: u32, target: Target, now: Instant, ctx: &mut Ctx<'_>) {
        self.flows
            .map
            .insert(id, Flow::new(target, FlowState::Waiting, now));
        self.arm_sweep(now, ctx);
        if self.is_established() {
            self.ask_flows(ctx);
        }
    }

    /// Whether flow `id` exists (in any state).
    pub(crate) fn has_flow(&self, id: u32) -> bool {
        self.flows.map.contains_key(&id)
    }

    fn arm_sweep(&mut self, now: Instant, ctx: &Ctx<'_>) {
        if self.flows.next_sweep.is_none() {
            self.flows.next_sweep = Some(now + ctx.config.flow_idle_timeout / 4);
        }
    }

    /// Client, the session is up: every flow not asked for yet is asked for, or refused
    /// at once if the server lacks the capability (no hang).
    pub(super) fn ask_flows(&mut self, ctx: &mut Ctx<'_>) {
        let waiting: Vec<u32> = self
            .flows
            .map
            .iter()
            .filter(|(_, f)| f.state == FlowState::Waiting)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            if self.datagram_negotiated {
                let f = self.flows.map.get_mut(&id).expect("listed");
                f.state = FlowState::Asked;
                let target = f.target.clone();
                self.control.push_back(Frame::FlowOpen { flow: id, target });
            } else {
                self.flows.map.remove(&id);
                ctx.events.push_back(Event::FlowRefused {
                    peer: self.peer,
                    flow: id,
                    code: StreamCode::DatagramUnsupported,
                });
            }
        }
    }

    /// Ends flow `id` here, telling the peer (UCLOSE with `code`) if it knows of it.
    pub(crate) fn close_flow(&mut self, id: u32, code: StreamCode) -> bool {
        let Some(f) = self.flows.map.remove(&id) else {
            return false;
        };
        self.flows.reassembly.forget(id);
        if self.is_established() && f.state != FlowState::Waiting {
            self.control.push_back(Frame::FlowClose { flow: id, code });
        }
        true
    }

    /// Sends a datagram on flow `id`: queued now if the flow is open, held (a few) until
    /// it opens if it is opening.
    pub(crate) fn send_datagram(
        &mut self,
        now: Instant,
        id: u32,
        payload: Bytes,
        ctx: &Ctx<'_>,
    ) -> Result<(), DatagramError> {
        if payload.len() > MAX_DATAGRAM {
            return Err(DatagramError::TooLarge(payload.len()));
        }
        let flows = &mut self.flows;
        let f = flows.map.get_mut(&id).ok_or(DatagramError::UnknownFlow)?;
        match f.state {
            FlowState::Requested => return Err(DatagramError::NotOpen),
            FlowState::Waiting | FlowState::Asked => {
                if f.held.len() >= MAX_HELD {
                    flows.dropped += 1;
                    return Err(DatagramError::QueueFull);
                }
                f.last_active = now;
                f.held.push_back(payload);
                return Ok(());
            }
            FlowState::Open => {}
        }
        if flows.queued_bytes + payload.len() > MAX_QUEUED_BYTES {
            flows.dropped += 1;
            return Err(DatagramError::QueueFull);
        }
        f.last_active = now;
        let seq = f.tx_seq;
        f.tx_seq = f.tx_seq.wrapping_add(1);
        let max_fragment = ctx.config.max_packet_size - DATAGRAM_HEADER_LEN;
        let frags = fragments(id, seq, &payload, max_fragment).expect("MAX_DATAGRAM fits");
        flows.queued_bytes += payload.len();
        flows.queue.extend(frags);
        flows.sent += 1;
        Ok(())
    }

    /// UOPEN, UOPEN_OK, UCLOSE, DGRAM and LDGRAM from the peer. `Err`: the peer broke the
    /// protocol (datagram frames in a session that did not negotiate them).
    pub(super) fn on_flow_frame(
        &mut self,
        now: Instant,
        frame: Frame,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), SessionCode> {
        if !self.datagram_negotiated {
            return Err(SessionCode::ProtocolViolation);
        }
        match frame {
            Frame::FlowOpen { flow, target } => self.on_flow_open(now, flow, target, ctx),
            Frame::FlowOpenOk { flow } => self.on_flow_open_ok(now, flow, ctx),
            Frame::FlowClose { flow, code } => self.on_flow_close(flow, code, ctx),
            Frame::Datagram(f) | Frame::LossyDatagram(f) => self.on_fragment(now, f, ctx),
            _ => {}
        }
        Ok(())
    }

    /// Server: the client opens a flow. Refused at once if the rules or limits say no;
    /// else the application opens it.
    fn on_flow_open(&mut self, now: Instant, flow: u32, target: Target, ctx: &mut Ctx<'_>) {
        let code = match (self.role, ctx.config.server.as_ref()) {
            (Role::Responder(admission), Some(policy)) => {
                if self.flows.map.contains_key(&flow) {
                    Some(StreamCode::DuplicateStream)
                } else if self.flows.map.len() >= policy.limits.max_flows_per_peer {
                    Some(StreamCode::TooManyFlows)
                } else if policy.rules(admission).allowing_udp(&target).is_none() {
                    Some(StreamCode::TargetNotAllowed)
                } else {
                    None
                }
            }
            _ => Some(StreamCode::NotAccepting),
        };
        if let Some(code) = code {
            self.control.push_back(Frame::FlowClose { flow, code });
            ctx.events.push_back(Event::FlowDenied {
                peer: self.peer,
                target,
                code,
            });
            return;
        }
        self.flows
            .map
            .insert(flow, Flow::new(target.clone(), FlowState::Requested, now));
        self.arm_sweep(now, ctx);
        ctx.events.push_back(Event::FlowRequested {
            peer: self.peer,
            flow,
            target,
        });
    }

    /// Server: the application's answer to `FlowRequested`. `false` if there is no such
    /// request (the client closed it, or the session ended).
    pub(crate) fn answer_flow(&mut self, id: u32, result: Result<(), StreamCode>) -> bool {
        let Some(f) = self.flows.map.get_mut(&id) else {
            return false;
        };
        if f.state != FlowState::Requested {
            return false;
        }
        match result {
            Ok(()) => {
                f.state = FlowState::Open;
                self.control.push_back(Frame::FlowOpenOk { flow: id });
            }
            Err(code) => {
                self.flows.map.remove(&id);
                self.control.push_back(Frame::FlowClose { flow: id, code });
            }
        }
        true
    }

    /// Client: the server opened the flow; what was held goes out.
    fn on_flow_open_ok(&mut self, now: Instant, id: u32, ctx: &mut Ctx<'_>) {
        let Some(f) = self.flows.map.get_mut(&id) else {
            return; // closed meanwhile: our UCLOSE follows
        };
        if f.state != FlowState::Asked {
            return;
        }
        f.state = FlowState::Open;
        let held = std::mem::take(&mut f.held);
        ctx.events.push_back(Event::FlowOpened {
            peer: self.peer,
            flow: id,
        });
        for d in held {
            let _ = self.send_datagram(now, id, d, ctx);
        }
    }

    fn on_flow_close(&mut self, id: u32, code: StreamCode, ctx: &mut Ctx<'_>) {
        let Some(f) = self.flows.map.remove(&id) else {
            return;
        };
        self.flows.reassembly.forget(id);
        ctx.events
            .push_back(flow_ended(self.peer, id, f.state, code, true));
    }

    fn on_fragment(&mut self, now: Instant, frag: Fragment, ctx: &mut Ctx<'_>) {
        let id = frag.flow;
        let flows = &mut self.flows;
        let Some(f) = flows
            .map
            .get_mut(&id)
            .filter(|f| f.state == FlowState::Open)
        else {
            flows.discarded += 1; // closed meanwhile, or not open yet: UDP loses it
            return;
        };
        match flows.reassembly.on_fragment(&mut f.rx, frag, MAX_DATAGRAM) {
            Assembled::Datagram(payload) => {
                f.last_active = now;
                flows.received += 1;
                ctx.events.push_back(Event::Datagram {
                    peer: self.peer,
                    flow: id,
                    payload,
                });
            }
            Assembled::Kept => {}
            Assembled::Dropped | Assembled::GaveUp => flows.discarded += 1,
        }
    }

    /// Whether a datagram should take the next packet: there is one, and it did not take
    /// the last while streams have bytes waiting.
    pub(super) fn datagram_turn(&self) -> bool {
        !self.flows.queue.is_empty() && (!self.flows.yielded || self.sched.is_empty())
    }

    /// A packet other than a datagram went out.
    pub(super) fn datagram_yielded(&mut self) {
        self.flows.yielded = false;
    }

    /// The next datagram fragment as a packet: LDGRAM on a direct link whose lossy packets
    /// get through, DGRAM otherwise; `None` if its lane is blocked.
    pub(super) fn poll_datagram(&mut self) -> Option<Bytes> {
        if !self.is_established() {
            return None;
        }
        let lossy = self.path_direct && !self.lossy_tx.is_broken();
        if (lossy && self.lossy_blocked) || (!lossy && self.lossless_blocked) {
            return None;
        }
        while let Some(f) = self.flows.queue.pop_front() {
            self.flows.queued_bytes = self.flows.queued_bytes.saturating_sub(f.payload.len());
            if !self.flows.map.contains_key(&f.flow) {
                continue; // the flow ended while it waited
            }
            self.flows.yielded = true;
            let frame = if lossy {
                Frame::LossyDatagram(f)
            } else {
                Frame::Datagram(f)
            };
            let mut buf = BytesMut::with_capacity(frame.encoded_len());
            frame.encode(&mut buf);
            return Some(buf.freeze());
        }
        None
    }

    /// Ends flows that carried nothing for the idle timeout (`FlowIdle`, both sides told).
    pub(super) fn sweep_flows(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        if self.flows.next_sweep.is_none_or(|t| now < t) {
            return;
        }
        let timeout = ctx.config.flow_idle_timeout;
        let idle: Vec<u32> = self
            .flows
            .map
            .iter()
            .filter(|(_, f)| now >= f.last_active + timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.close_flow(id, StreamCode::FlowIdle);
            ctx.events.push_back(Event::FlowClosed {
                peer: self.peer,
                flow: id,
                code: StreamCode::FlowIdle,
                remote: false,
            });
        }
        self.flows.next_sweep = (!self.flows.map.is_empty()).then(|| now + timeout / 4);
    }

    /// When idle flows are looked for next.
    pub(super) fn flow_deadline(&self) -> Option<Instant> {
        self.flows.next_sweep
    }

    /// The session ended: its flows end too (`SessionClosed`), but for a client's flows
    /// not asked for yet if `keep_waiting`, which wait for the next session.
    pub(super) fn end_flows(&mut self, keep_waiting: bool, ctx: &mut Ctx<'_>) {
        let ended: Vec<u32> = self
            .flows
            .map
            .iter()
            .filter(|(_, f)| !(keep_waiting && f.state == FlowState::Waiting))
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            let f = self.flows.map.remove(&id).expect("listed");
            let code = StreamCode::SessionClosed;
            ctx.events
                .push_back(flow_ended(self.peer, id, f.state, code, false));
        }
        self.flows.queue.clear();
        self.flows.queued_bytes = 0;
        self.flows.reassembly.clear();
        self.flows.yielded = false;
    }

    /// Server, after a reload: flows the new `udp:` rules no longer allow end with
    /// `TargetNotAllowed`. Returns them with their targets.
    pub(crate) fn recheck_flows(
        &mut self,
        policy: &ServerPolicy,
        ctx: &mut Ctx<'_>,
    ) -> Vec<(u32, Target)> {
        let Role::Responder(admission) = self.role else {
            return Vec::new();
        };
        let rules = policy.rules(admission);
        let gone: Vec<(u32, Target)> = self
            .flows
            .map
            .iter()
            .filter(|(_, f)| rules.allowing_udp(&f.target).is_none())
            .map(|(id, f)| (*id, f.target.clone()))
            .collect();
        for (id, _) in &gone {
            self.close_flow(*id, StreamCode::TargetNotAllowed);
            ctx.events.push_back(Event::FlowClosed {
                peer: self.peer,
                flow: *id,
                code: StreamCode::TargetNotAllowed,
                remote: false,
            });
        }
        gone
    }

    /// The flows' counters, for the stats.
    pub(super) fn flow_counters(&self) -> (usize, [u64; 4]) {
        let f = &self.flows;
        (f.map.len(), [f.sent, f.received, f.dropped, f.discarded])
    }
}

/// How a flow that ended in `state` is reported: refused if the client was still waiting
/// for UOPEN_OK, closed otherwise.
fn flow_ended(peer: PeerId, flow: u32, state: FlowState, code: StreamCode, remote: bool) -> Event {
    match state {
        FlowState::Asked => Event::FlowRefused { peer, flow, code },
        _ => Event::FlowClosed {
            peer,
            flow,
            code,
            remote,
        },
    }
}
