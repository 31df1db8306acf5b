//! What `toxtun status` shows of a running node: each peer's link and session counters
//! and its open streams. Serialisable, so that the control socket carries it as JSON and
//! `toxtun status --json` prints it unchanged.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toxtun_proto::{Event, SessionStats, StreamCode};

/// A running node, as `toxtun status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This node's Tox ID.
    pub id: String,
    /// Whether the node's own Tox connection is up (to the DHT or a TCP relay).
    pub tox_connected: bool,
    /// Every friend the node has heard of or keeps a session with.
    pub peers: Vec<PeerStatus>,
    /// What the node has done since it started.
    #[serde(default)]
    pub counters: Counters,
}

/// Counts since the node started, by outcome: what metrics and alerts are built on.
/// Codes are the protocol's (PROTOCOL.md, "Codes").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Sessions that completed their handshake.
    pub sessions_established: u64,
    /// Sessions ended, by session code.
    #[serde(default, with = "by_code")]
    pub sessions_ended: BTreeMap<u16, u64>,
    /// Streams opened: the peer accepted ours, or we connected the peer's to its target.
    pub streams_opened: u64,
    /// Streams refused, by stream code: by our rules or limits, by our target, or by the
    /// peer (OPEN_ERR).
    #[serde(default, with = "by_code")]
    pub streams_refused: BTreeMap<u16, u64>,
    /// Open streams reset, by stream code.
    #[serde(default, with = "by_code")]
    pub streams_reset: BTreeMap<u16, u64>,
    /// Friend requests the policy accepted.
    pub friend_requests_accepted: u64,
    /// Friend requests the policy refused, by session code.
    #[serde(default, with = "by_code")]
    pub friend_requests_refused: BTreeMap<u16, u64>,
    /// UDP flows opened (the server opened ours, or we opened a client's).
    #[serde(default)]
    pub flows_opened: u64,
    /// UDP flows refused, by stream code: by our rules or limits, or by the peer.
    #[serde(default, with = "by_code")]
    pub flows_refused: BTreeMap<u16, u64>,
    /// Datagrams this node dropped outside its sessions: its UDP input queue or a
    /// socket's send buffer was full. (Each session counts its own drops.)
    #[serde(default)]
    pub udp_dropped: u64,
}

/// Counts by code as JSON objects keyed by the code's digits. Written by hand because
/// the control socket's replies are internally tagged, and serde reads those through a
/// buffer that no longer turns the key `"2001"` back into a number (`toxtun status`
/// failed with "expected u16" once any stream had been refused).
mod by_code {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        m: &BTreeMap<u16, u64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let named: BTreeMap<String, u64> = m.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        named.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u16, u64>, D::Error> {
        let named = BTreeMap::<String, u64>::deserialize(d)?;
        named
            .into_iter()
            .map(|(k, v)| {
                k.parse::<u16>()
                    .map(|k| (k, v))
                    .map_err(|_| serde::de::Error::custom(format!("code {k:?} is not a number")))
            })
            .collect()
    }
}

impl Counters {
    /// Counts what an endpoint event says.
    pub(super) fn count(&mut self, e: &Event) {
        match e {
            Event::SessionEstablished { .. } => self.sessions_established += 1,
            Event::SessionClosed { code, .. } => {
                *self.sessions_ended.entry(code.code()).or_default() += 1
            }
            Event::StreamOpened { .. } => self.streams_opened += 1,
            Event::StreamRefused { code, .. } | Event::StreamDenied { code, .. } => {
                self.refused(*code)
            }
            Event::StreamReset { code, .. } => {
                *self.streams_reset.entry(code.code()).or_default() += 1
            }
            Event::FlowOpened { .. } => self.flows_opened += 1,
            Event::FlowRefused { code, .. } | Event::FlowDenied { code, .. } => {
                self.flow_refused(*code)
            }
            Event::FriendRequest { decision, .. } => match decision {
                Ok(_) => self.friend_requests_accepted += 1,
                Err(c) => *self.friend_requests_refused.entry(c.code()).or_default() += 1,
            },
            _ => {}
        }
    }

    /// A UDP flow refused here without an endpoint event saying so (its target failed),
    /// or with one.
    pub(super) fn flow_refused(&mut self, code: StreamCode) {
        *self.flows_refused.entry(code.code()).or_default() += 1;
    }

    /// A stream refused here without an endpoint event saying so (its target failed).
    pub(super) fn refused(&mut self, code: StreamCode) {
        *self.streams_refused.entry(code.code()).or_default() += 1;
    }
}

/// One peer: its link, its session, its streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's public key (64 hex digits).
    pub key: String,
    /// The Tox link to the peer is up.
    pub online: bool,
    /// The link is direct UDP (else a TCP relay, or not known yet).
    pub direct: bool,
    /// The session's counters, if there is a session.
    pub session: Option<SessionReport>,
    /// The open streams with this peer.
    pub streams: Vec<StreamStatus>,
    /// `-R` listeners: a client's on this server, or a server's for this client.
    #[serde(default)]
    pub listeners: Vec<ListenerStatus>,
}

/// One `-R` listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// Where the server listens (`host:port`).
    pub bind: String,
    /// `listening`, or `refused: …` with the code.
    pub state: String,
}

/// The counters of one session that a person looks at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionReport {
    /// The handshake is done.
    pub established: bool,
    /// The link is lost and the session waits for it within the resume grace.
    pub suspended: bool,
    /// Stream bytes go on the fast path now.
    pub fast_path: bool,
    /// Both sides offered the fast path.
    pub fast_path_negotiated: bool,
    /// Smoothed round trip in ms, once measured (fast path).
    pub rtt_ms: Option<f64>,
    /// Smallest round trip measured in ms: the path with no queue.
    pub min_rtt_ms: Option<f64>,
    /// Congestion window, bytes.
    pub congestion_window: usize,
    /// Bytes in flight on the fast path.
    pub bytes_in_flight: usize,
    /// The fast path's pacing rate, bytes per second, once the round trip is measured.
    #[serde(default)]
    pub pacing_rate: Option<u64>,
    /// Stream bytes sent in this session.
    pub bytes_sent: u64,
    /// Stream bytes received in this session.
    pub bytes_received: u64,
    /// Fast-path packets declared lost.
    pub packets_lost: u64,
    /// Stream bytes sent again after a loss.
    pub bytes_resent: u64,
    /// Frames resent after link outages.
    pub frames_resent: u64,
    /// UDP flows open.
    #[serde(default)]
    pub flows: usize,
    /// Datagrams sent, delivered, dropped before sending (a full queue: a local flood),
    /// and discarded on arrival (repeats, incomplete, for closed flows).
    #[serde(default)]
    pub datagrams_sent: u64,
    /// See `datagrams_sent`.
    #[serde(default)]
    pub datagrams_received: u64,
    /// See `datagrams_sent`.
    #[serde(default)]
    pub datagrams_dropped: u64,
    /// See `datagrams_sent`.
    #[serde(default)]
    pub datagrams_discarded: u64,
}

impl From<&SessionStats> for SessionReport {
    fn from(s: &SessionStats) -> Self {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        SessionReport {
            established: s.established,
            suspended: s.suspended,
            fast_path: s.fast_path,
            fast_path_negotiated: s.fast_path_negotiated,
            rtt_ms: ms(s.rtt),
            min_rtt_ms: ms(s.min_rtt),
            congestion_window: s.congestion_window,
            bytes_in_flight: s.bytes_in_flight,
            pacing_rate: s.pacing_rate,
            bytes_sent: s.sent,
            bytes_received: s.received,
            packets_lost: s.lossy_packets_lost,
            bytes_resent: s.lossy_bytes_resent,
            frames_resent: s.frames_resent,
            flows: s.flows,
            datagrams_sent: s.datagrams_sent,
            datagrams_received: s.datagrams_received,
            datagrams_dropped: s.datagrams_dropped,
            datagrams_discarded: s.datagrams_discarded,
        }
    }
}

/// One open stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamStatus {
    /// The stream's ID.
    pub id: String,
    /// Where it goes (`host:port`).
    pub target: String,
    /// Opened by the peer.
    pub incoming: bool,
    /// Seconds since it opened.
    pub age_secs: f64,
    /// Bytes sent on it so far.
    pub bytes_sent: u64,
    /// Bytes received on it so far.
    pub bytes_received: u64,
    /// Bytes the local side wrote that toxtun holds, not yet sent (on the fast path at
    /// most about one bandwidth-delay product).
    #[serde(default)]
    pub bytes_unsent: u64,
}

impl NodeStatus {
    /// The human form `toxtun status` prints, one block per peer, as `wg show` does.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "id: {}\ntox: {}",
            self.id,
            if self.tox_connected {
                "connected"
            } else {
                "offline"
            }
        );
        let c = &self.counters;
        let sum = |m: &BTreeMap<u16, u64>| m.values().sum::<u64>();
        let _ = writeln!(
            out,
            "since start: {} sessions, {} streams opened, {} refused, {} reset",
            c.sessions_established,
            c.streams_opened,
            sum(&c.streams_refused),
            sum(&c.streams_reset),
        );
        if c.flows_opened > 0 || !c.flows_refused.is_empty() || c.udp_dropped > 0 {
            let _ = writeln!(
                out,
                "UDP since start: {} flows opened, {} refused, {} datagrams dropped here",
                c.flows_opened,
                sum(&c.flows_refused),
                c.udp_dropped,
            );
        }
        if self.peers.is_empty() {
            out.push_str("no peers\n");
        }
        for p in &self.peers {
            let path = match (p.online, p.direct) {
                (false, _) => "offline",
                (true, true) => "direct UDP",
                (true, false) => "TCP relay",
            };
            let _ = writeln!(out, "\npeer: {}\n  link: {path}", p.key);
            match &p.session {
                None => out.push_str("  session: none\n"),
                Some(s) => render_session(&mut out, s),
            }
            for l in &p.listeners {
                let _ = writeln!(out, "  listener {}: {}", l.bind, l.state);
            }
            for st in &p.streams {
                let unsent = if st.bytes_unsent > 0 {
                    format!(", {} waiting to be sent", bytes(st.bytes_unsent))
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "  stream {} {} {}: {:.0} s, {} sent, {} received{unsent}",
                    st.id,
                    if st.incoming { "from peer to" } else { "to" },
                    st.target,
                    st.age_secs,
                    bytes(st.bytes_sent),
                    bytes(st.bytes_received),
                );
            }
        }
        out
    }
}

fn render_session(out: &mut String, s: &SessionReport) {
    use std::fmt::Write;
    let state = match (s.established, s.suspended) {
        (_, true) => "suspended (waiting for the link)",
        (true, false) => "established",
        (false, false) => "handshaking",
    };
    let fast = match (s.fast_path, s.fast_path_negotiated) {
        (true, _) => "on",
        (false, true) => "off (link not direct, or lossy packets not getting through)",
        (false, false) => "off (not negotiated)",
    };
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    let _ = writeln!(
        out,
        "  session: {state}\n  fast path: {fast}\n  round trip: {} (min {})\n  \
         congestion window: {}, in flight {}\n  transfer: {} sent, {} received\n  \
         losses: {} packets lost, {} resent, {} frames resent after outages",
        ms(s.rtt_ms),
        ms(s.min_rtt_ms),
        bytes(s.congestion_window as u64),
        bytes(s.bytes_in_flight as u64),
        bytes(s.bytes_sent),
        bytes(s.bytes_received),
        s.packets_lost,
        bytes(s.bytes_resent),
        s.frames_resent,
    );
    if s.flows > 0 || s.datagrams_sent > 0 || s.datagrams_received > 0 {
        let _ = writeln!(
            out,
            "  UDP: {} flows, {} datagrams sent, {} received, {} dropped (queue full), \
             {} discarded (repeats, incomplete)",
            s.flows,
            s.datagrams_sent,
            s.datagrams_received,
            s.datagrams_dropped,
            s.datagrams_discarded,
        );
    }
}

/// Bytes as a person reads them (`1.5 MiB`).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_people_read_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn render_names_the_path_and_each_stream() {
        let st = NodeStatus {
            id: "ab".into(),
            tox_connected: true,
            counters: Counters::default(),
            peers: vec![PeerStatus {
                key: "cd".into(),
                online: true,
                direct: false,
                session: None,
                streams: vec![StreamStatus {
                    id: "7".into(),
                    target: "127.0.0.1:22".into(),
                    incoming: false,
                    age_secs: 3.0,
                    bytes_sent: 10,
                    bytes_received: 2048,
                    bytes_unsent: 0,
                }],
                listeners: vec![ListenerStatus {
                    bind: "127.0.0.1:8080".into(),
                    state: "listening".into(),
                }],
            }],
        };
        let text = st.render();
        assert!(text.contains("link: TCP relay"), "{text}");
        assert!(text.contains("session: none"), "{text}");
        assert!(
            text.contains("listener 127.0.0.1:8080: listening"),
            "{text}"
        );
        assert!(
            text.contains("stream 7 to 127.0.0.1:22: 3 s, 10 B sent, 2.0 KiB received"),
            "{text}"
        );
    }
}
