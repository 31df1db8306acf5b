//! The scripted application on each side of a [`super::pair::Pair`]: it accepts incoming
//! streams, writes what the test gave it, reads and records everything, and notes how
//! each stream ended.

use std::collections::{HashMap, HashSet, VecDeque};

use std::time::Instant;

use bytes::Bytes;

use crate::codes::StreamCode;
use crate::endpoint::Endpoint;
use crate::event::{Event, ReadError, WriteError};
use crate::ids::{PeerId, StreamId};
use crate::target::Target;

/// How a stream ended, as its application saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both directions finished.
    Closed,
    /// Reset, locally or by the peer.
    Reset(StreamCode),
    /// Refused before opening.
    Refused(StreamCode),
}

/// The scripted application on one side.
#[derive(Debug, Default)]
pub struct App {
    /// Every event, in order (unless `record_events` is off).
    pub events: Vec<Event>,
    /// Keep events in `events`.
    pub record_events: bool,
    /// Keep received bytes in `received` (off: only count them).
    pub keep_bytes: bool,
    /// Accept incoming streams (else refuse them with `refuse_code`).
    pub accept: bool,
    /// The code incoming streams are refused with when `accept` is off.
    pub refuse_code: Option<StreamCode>,
    /// Leave incoming streams undecided (an application that never connects its target).
    pub undecided: bool,
    /// Streams whose bytes the application does not read (a stalled reader).
    pub stalled: HashSet<StreamId>,
    /// Bytes read per stream (when `keep_bytes`).
    pub received: HashMap<StreamId, Vec<u8>>,
    /// Bytes read per stream, counted.
    pub received_len: HashMap<StreamId, u64>,
    /// Streams whose end (peer's FIN) was read.
    pub eof: HashSet<StreamId>,
    /// How each stream ended.
    pub ended: HashMap<StreamId, End>,
    /// Incoming streams and their targets.
    pub incoming: Vec<(StreamId, Target)>,
    /// Streams confirmed open (OPEN_OK).
    pub opened: HashSet<StreamId>,
    /// Reply to each incoming stream with these bytes, then finish.
    pub reply: Option<(Bytes, bool)>,
    /// Listeners a client asked this (server) side for, as `ListenRequested` said.
    pub listen_requests: Vec<(PeerId, u32, Target)>,
    /// How to answer them: listen (`None`), or refuse with this code.
    pub listen_refusal: Option<StreamCode>,
    pending_listens: VecDeque<(PeerId, u32)>,
    /// UDP flows a client asked this (server) side for, as `FlowRequested` said.
    pub flow_requests: Vec<(PeerId, u32, Target)>,
    /// How to answer them: open (`None`), or refuse with this code.
    pub flow_refusal: Option<StreamCode>,
    /// Datagrams received, in order, with their peer and flow (when `keep_bytes`).
    pub datagrams: Vec<(PeerId, u32, Bytes)>,
    /// Datagrams received, counted.
    pub datagram_count: u64,
    /// Send each datagram received back on its flow (a UDP echo server).
    pub echo_datagrams: bool,
    pending_flows: VecDeque<(PeerId, u32)>,
    echoes: VecDeque<(PeerId, u32, Bytes)>,
    outgoing: HashMap<StreamId, (Bytes, bool)>,
    try_write: VecDeque<StreamId>,
    try_read: VecDeque<StreamId>,
    pending_accept: VecDeque<StreamId>,
}

impl App {
    pub(super) fn new() -> Self {
        App {
            record_events: true,
            keep_bytes: true,
            accept: true,
            ..Default::default()
        }
    }

    /// Queues `data` to be written on `stream`, then FIN if `fin`.
    pub fn send(&mut self, stream: StreamId, data: Bytes, fin: bool) {
        let e = self.outgoing.entry(stream).or_insert((Bytes::new(), false));
        if e.0.is_empty() {
            e.0 = data;
        } else {
            let mut v = e.0.to_vec();
            v.extend_from_slice(&data);
            e.0 = Bytes::from(v);
        }
        e.1 |= fin;
        self.try_write.push_back(stream);
    }

    /// Resumes reading a stalled stream.
    pub fn unstall(&mut self, stream: StreamId) {
        self.stalled.remove(&stream);
        self.try_read.push_back(stream);
    }

    /// Bytes still waiting to be written on `stream`.
    pub fn unwritten(&self, stream: StreamId) -> usize {
        self.outgoing.get(&stream).map_or(0, |(d, _)| d.len())
    }

    pub(super) fn on_event(&mut self, e: &Event) {
        match e {
            Event::StreamIncoming { stream, target, .. } => {
                self.incoming.push((*stream, target.clone()));
                self.pending_accept.push_back(*stream);
            }
            Event::StreamOpened { stream } => {
                self.opened.insert(*stream);
            }
            Event::ListenRequested {
                peer,
                listener,
                bind,
            } => {
                self.listen_requests.push((*peer, *listener, bind.clone()));
                self.pending_listens.push_back((*peer, *listener));
            }
            Event::FlowRequested { peer, flow, target } => {
                self.flow_requests.push((*peer, *flow, target.clone()));
                self.pending_flows.push_back((*peer, *flow));
            }
            Event::Datagram {
                peer,
                flow,
                payload,
            } => {
                self.datagram_count += 1;
                if self.keep_bytes {
                    self.datagrams.push((*peer, *flow, payload.clone()));
                }
                if self.echo_datagrams {
                    self.echoes.push_back((*peer, *flow, payload.clone()));
                }
            }
            Event::StreamReadable { stream } => self.try_read.push_back(*stream),
            Event::StreamWritable { stream } => self.try_write.push_back(*stream),
            Event::StreamRefused { stream, code } => {
                self.ended.insert(*stream, End::Refused(*code));
                self.outgoing.remove(stream);
            }
            Event::StreamReset { stream, code, .. } => {
                self.ended.insert(*stream, End::Reset(*code));
                self.outgoing.remove(stream);
            }
            Event::StreamClosed { stream } => {
                self.ended.insert(*stream, End::Closed);
            }
            _ => {}
        }
        if self.record_events {
            self.events.push(e.clone());
        }
    }

    /// Answers the listener requests that came (reverse forwarding), as `listen_refusal`
    /// says; returns whether there were any.
    fn answer_listens(&mut self, ep: &mut Endpoint) -> bool {
        let any = !self.pending_listens.is_empty();
        while let Some((peer, listener)) = self.pending_listens.pop_front() {
            let answer = self.listen_refusal.map_or(Ok(()), Err);
            let _ = ep.answer_listen(peer, listener, answer);
        }
        any
    }

    /// Answers the flow requests that came, as `flow_refusal` says, and echoes the
    /// datagrams to echo; returns whether there were any.
    fn answer_flows(&mut self, ep: &mut Endpoint, now: Instant) -> bool {
        let any = !self.pending_flows.is_empty() || !self.echoes.is_empty();
        while let Some((peer, flow)) = self.pending_flows.pop_front() {
            let answer = self.flow_refusal.map_or(Ok(()), Err);
            let _ = ep.answer_flow(peer, flow, answer);
        }
        while let Some((peer, flow, d)) = self.echoes.pop_front() {
            let _ = ep.send_datagram(now, peer, flow, d);
        }
        any
    }

    /// Does whatever the application can do now; returns whether it did anything.
    pub(super) fn pump(&mut self, ep: &mut Endpoint, now: Instant) -> bool {
        let mut progress = false;
        progress |= self.answer_listens(ep);
        progress |= self.answer_flows(ep, now);
        while let Some(stream) = self.pending_accept.pop_front() {
            if self.undecided {
                continue;
            }
            progress = true;
            if self.accept {
                let _ = ep.accept(stream);
                if let Some((data, fin)) = self.reply.clone() {
                    self.send(stream, data, fin);
                }
            } else {
                let _ = ep.refuse(
                    stream,
                    self.refuse_code.unwrap_or(StreamCode::TargetRefused),
                );
                self.ended.insert(
                    stream,
                    End::Refused(self.refuse_code.unwrap_or(StreamCode::TargetRefused)),
                );
            }
        }
        while let Some(stream) = self.try_write.pop_front() {
            let Some((data, fin)) = self.outgoing.get_mut(&stream) else {
                continue;
            };
            while !data.is_empty() {
                match ep.write(stream, data.clone()) {
                    Ok(n) => {
                        progress = true;
                        let _ = data.split_to(n);
                    }
                    Err(WriteError::Blocked) => break,
                    Err(_) => {
                        data.clear();
                        break;
                    }
                }
            }
            if data.is_empty() {
                if *fin {
                    let _ = ep.finish(stream);
                    progress = true;
                }
                self.outgoing.remove(&stream);
            }
        }
        while let Some(stream) = self.try_read.pop_front() {
            if self.stalled.contains(&stream) {
                continue; // `unstall` wakes it again
            }
            loop {
                match ep.read(stream, usize::MAX) {
                    Ok(Some(chunk)) => {
                        progress = true;
                        *self.received_len.entry(stream).or_default() += chunk.len() as u64;
                        if self.keep_bytes {
                            self.received
                                .entry(stream)
                                .or_default()
                                .extend_from_slice(&chunk);
                        }
                    }
                    Ok(None) => {
                        if self.eof.insert(stream) {
                            progress = true;
                        }
                        break;
                    }
                    Err(ReadError::Blocked) | Err(_) => break,
                }
            }
        }
        progress
    }
}
