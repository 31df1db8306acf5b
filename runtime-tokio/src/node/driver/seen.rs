//! What `toxtun status` shows of a running node beyond the endpoint's counters: what the
//! driver learnt from the events it emitted, and the status built from both.

use std::collections::HashMap;
use std::time::Instant;

use toxtun_proto::{PeerId, StreamId, Target, Transport};

use super::super::status::{
    Counters, ListenerStatus, NodeStatus, PeerStatus, SessionReport, StreamStatus,
};
use super::super::NodeEvent;
use super::{now, Driver};

/// What the driver learnt from the events it emitted, for [`NodeStatus`].
#[derive(Default)]
pub(super) struct Seen {
    pub(super) tox_connected: bool,
    /// Each friend's link: online, direct.
    pub(super) links: HashMap<PeerId, (bool, bool)>,
    /// Each open stream: its target, whether the peer opened it, and when.
    pub(super) streams: HashMap<StreamId, (Target, bool, Instant)>,
    /// `-R` listeners, by peer and bind address: how each stands.
    pub(super) listeners: std::collections::BTreeMap<(PeerId, String), String>,
}

impl Seen {
    pub(super) fn note(&mut self, e: &NodeEvent) {
        match e {
            NodeEvent::Tox { connected } => self.tox_connected = *connected,
            NodeEvent::Peer { peer, online } => {
                let link = self.links.entry(*peer).or_default();
                *link = (*online, *online && link.1);
            }
            NodeEvent::PeerPath { peer, direct } => {
                self.links.entry(*peer).or_default().1 = *direct;
            }
            NodeEvent::StreamOpen {
                stream,
                target,
                incoming,
            } => {
                self.streams
                    .insert(*stream, (target.clone(), *incoming, now()));
            }
            NodeEvent::StreamEnd { stream, .. } => {
                self.streams.remove(stream);
            }
            NodeEvent::ListenReady { peer, bind } | NodeEvent::Listening { peer, bind } => {
                self.listeners
                    .insert((*peer, bind.to_string()), "listening".into());
            }
            NodeEvent::ListenRefused { peer, bind, code } => {
                self.listeners
                    .insert((*peer, bind.to_string()), format!("refused: {code}"));
            }
            NodeEvent::ListenStopped { peer, bind, .. } => {
                self.listeners.remove(&(*peer, bind.to_string()));
            }
            _ => {}
        }
    }
}

impl<T: Transport> Driver<T> {
    /// Every peer the node knows (a friend it heard of, or a session), with its streams.
    pub(super) fn status(&self) -> NodeStatus {
        let mut keys: Vec<PeerId> = self.seen.links.keys().copied().collect();
        keys.extend(self.endpoint.peers());
        keys.sort();
        keys.dedup();
        let at = now();
        let peers = keys
            .into_iter()
            .map(|peer| {
                let (online, direct) = self.seen.links.get(&peer).copied().unwrap_or_default();
                let mut streams: Vec<StreamStatus> = self
                    .endpoint
                    .streams()
                    .filter(|(_, p)| *p == peer)
                    .filter_map(|(id, _)| {
                        let (target, incoming, since) = self.seen.streams.get(&id)?;
                        let st = self.endpoint.stream_stats(id)?;
                        Some(StreamStatus {
                            id: id.to_string(),
                            target: target.to_string(),
                            incoming: *incoming,
                            age_secs: at.saturating_duration_since(*since).as_secs_f64(),
                            bytes_sent: st.sent,
                            bytes_received: st.received,
                            bytes_unsent: st.send_unsent as u64,
                        })
                    })
                    .collect();
                streams.sort_by(|a, b| b.age_secs.total_cmp(&a.age_secs));
                let listeners = self
                    .seen
                    .listeners
                    .range((peer, String::new())..)
                    .take_while(|((p, _), _)| *p == peer)
                    .map(|((_, bind), state)| ListenerStatus {
                        bind: bind.clone(),
                        state: state.clone(),
                    })
                    .collect();
                PeerStatus {
                    listeners,
                    key: peer.to_string(),
                    online,
                    direct,
                    session: self
                        .endpoint
                        .session_stats(peer)
                        .as_ref()
                        .map(SessionReport::from),
                    streams,
                }
            })
            .collect();
        NodeStatus {
            id: self.transport.id().to_string(),
            tox_connected: self.seen.tox_connected,
            peers,
            counters: Counters {
                udp_dropped: self.udp_dropped(),
                ..self.counters.clone()
            },
        }
    }
}
