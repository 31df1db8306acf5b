//! The endpoint driven by an arbitrary sequence of inputs: transport events, packets from
//! hostile or confused peers (structured frames aimed at live streams and sessions, and raw
//! bytes), application commands and time steps. After every step it checks what a user
//! relies on: no panic, no endless output, every packet it sends is a valid frame that
//! fits Tox, no buffer past its bound, and no timer that is due but never acted on.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use toxtun_proto::wire::{self as frame, Frame, Hello, HelloAck};
use toxtun_proto::{
    ClientRule, Endpoint, EndpointConfig, Input, Limits, ListenRules, Output, PeerId, ServerPolicy,
    SessionCode, SessionId, SharedSecret, StreamCode, StreamId, Target, TargetRules,
    MAX_PACKET_SIZE,
};

const ME: PeerId = PeerId([0x5E; 32]);
/// Peers: allowlisted, a secret holder, a stranger, and a server this endpoint connects to.
const PEERS: [PeerId; 4] = [
    PeerId([0xA1; 32]),
    PeerId([0xB2; 32]),
    PeerId([0xC3; 32]),
    PeerId([0xD4; 32]),
];
const SECRET: &str = "the fuzzing secret";
const TARGETS: [&str; 5] = [
    "127.0.0.1:22",
    "127.0.0.1:80",
    "10.1.2.3:22",
    "db.lan:5432",
    "[::1]:8080",
];
/// The most outputs one step may produce: past it the endpoint is looping.
const MAX_OUTPUTS_PER_STEP: usize = 100_000;

/// A frame from a peer, aimed at things the endpoint has (its streams, its sessions).
#[derive(Arbitrary, Debug)]
enum PeerFrame {
    Hello {
        session: u8,
        min: u8,
        max: u8,
        proof: Proof,
    },
    Resume {
        session: u8,
        proof: Proof,
    },
    /// Answers our last HELLO/RESUME to that peer (or a made-up session).
    HelloAck {
        ours: bool,
        session: u8,
        resumed: bool,
        version: u8,
    },
    HelloReject(u16),
    Close(u16),
    Ping(u64),
    Pong(u64),
    Ack(u32),
    SessionWindow(u32),
    Open {
        stream: u8,
        target: u8,
    },
    OpenOk(u8),
    OpenErr(u8, u16),
    Data {
        stream: u8,
        offset: u32,
        ack: u32,
        len: u16,
    },
    Fin {
        stream: u8,
        offset: u32,
        ack: u32,
    },
    Rst(u8, u16),
    Window {
        stream: u8,
        max_offset: u32,
        ack: u32,
    },
    /// RST with settlement counts (final size, highest offset received).
    RstCounts(u8, u16, u32, u32),
    /// Fast-path bytes.
    LossyData {
        packet: u16,
        stream: u8,
        offset: u32,
        len: u16,
    },
    /// Fast-path acknowledgement: range starts and lengths, made descending and disjoint.
    LossyAck(u16, Vec<(u8, u8)>),
    /// A lossy twin of WINDOW.
    LossyWindow {
        stream: u8,
        max_offset: u32,
        ack: u32,
    },
    /// A lossy twin of SESSION_WINDOW.
    LossySessionWindow(u32),
    /// Several frames in one packet (any of them, so also those a BATCH may not carry).
    Batch(Vec<PeerFrame>),
    /// Reverse forwarding: a client asks us to listen (on one of `TARGETS`).
    Listen(u8, u8),
    /// A server says it listens, or refuses or ends a listener.
    ListenOk(u8),
    ListenErr(u8, u16),
    /// UDP forwarding: a client opens a flow (to one of `TARGETS`); a server opens or
    /// closes one.
    FlowOpen(u8, u8),
    FlowOpenOk(u8),
    FlowClose(u8, u16),
    /// A datagram fragment, lossless or lossy: flow, number, index, count, length.
    Datagram(bool, u8, u8, u8, u8, u16),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Proof {
    None,
    Valid,
    Wrong,
}

/// One step.
#[derive(Arbitrary, Debug)]
enum Op {
    Online(u8),
    Offline(u8),
    FriendRequest(u8, Vec<u8>),
    Frame(u8, PeerFrame),
    Raw(u8, Vec<u8>),
    Blocked(u8),
    Ready(u8),
    Connect(u8),
    Disconnect(u8),
    Open(u8, u8),
    Write(u8, u16),
    Read(u8, u16),
    Finish(u8),
    Reset(u8, u16),
    Accept(u8),
    Refuse(u8, u16),
    AdvanceMs(u16),
    AdvanceSecs(u8),
    Shutdown,
    /// The transport reports the link direct (or relayed).
    Path(u8, bool),
    /// Reverse forwarding as a client: listen on a server, give a listener up.
    Listen(u8, u8, u8),
    Unlisten(u8, u8),
    /// As a server: answer a listener request (`0`: listening), open a stream for one.
    AnswerListen(u8, u8, u16),
    OpenReverse(u8, u8),
    /// UDP forwarding: open a flow to a server, send a datagram on one (any size, up to
    /// past the limit), close one; as a server, answer a request (`0`: open).
    OpenFlow(u8, u8),
    SendDatagram(u8, u8, u16),
    CloseFlow(u8, u8),
    AnswerFlow(u8, u8, u16),
}

/// One of `TARGETS`.
fn target(i: u8) -> Target {
    TARGETS[usize::from(i) % TARGETS.len()]
        .parse()
        .expect("target")
}

fn origin() -> Instant {
    static T: OnceLock<Instant> = OnceLock::new();
    *T.get_or_init(Instant::now)
}

fn config() -> EndpointConfig {
    let mut c = EndpointConfig::new(ME);
    // Small windows and short timers, so a short input reaches the edges.
    c.stream_window = 4096;
    c.session_window = 16384;
    c.keepalive_interval = Duration::from_secs(1);
    c.idle_timeout = Duration::from_secs(3);
    c.handshake_timeout = Duration::from_secs(2);
    c.open_timeout = Duration::from_secs(3);
    c.resume_grace = Duration::from_secs(5);
    c.client_secret = Some(SharedSecret::new(SECRET).expect("valid secret"));
    c.server = Some(ServerPolicy {
        clients: vec![ClientRule {
            peer: PEERS[0],
            targets: TargetRules::new(vec![
                "127.0.0.1:1-100".parse().expect("rule"),
                "*.lan:*".parse().expect("rule"),
            ])
            .with_udp(vec!["127.0.0.1:1-50".parse().expect("rule")]),
        }],
        secret: Some((
            SharedSecret::new(SECRET).expect("valid secret"),
            TargetRules::new(vec!["10.0.0.0/8:22".parse().expect("rule")]),
        )),
        limits: Limits {
            max_peers: 2,
            max_streams_per_peer: 8,
            max_flows_per_peer: 4,
        },
        listen: ListenRules {
            clients: vec![(
                PEERS[0],
                TargetRules::new(vec!["127.0.0.1:1-100".parse().expect("rule")]),
            )],
            secret: TargetRules::new(vec!["*:*".parse().expect("rule")]),
        },
    });
    c
}

mod side_ops;
use side_ops::flow_frame;

struct Harness {
    ep: Endpoint,
    now: Instant,
    /// The last session id we offered each peer (HELLO or RESUME), to answer it.
    offered: [Option<SessionId>; 4],
    /// Streams seen (ours and the peers'), to aim commands and frames at.
    streams: Vec<StreamId>,
}

impl Harness {
    fn stream(&self, i: u8) -> StreamId {
        if self.streams.is_empty() || i >= 200 {
            // Now and then a stream nobody has.
            return StreamId::from_bytes([i; 16]);
        }
        self.streams[usize::from(i) % self.streams.len()]
    }

    fn note_stream(&mut self, s: StreamId) {
        if !self.streams.contains(&s) && self.streams.len() < 64 {
            self.streams.push(s);
        }
    }

    /// HELLO's or RESUME's fields, from a session byte whose low bits pick the
    /// capabilities (odd: the fast path, bit 1 its credit twins, bit 2 BATCH, bit 3 reverse
    /// forwarding, bit 4 UDP forwarding).
    fn hello(peer: usize, session: u8, min: u8, max: u8, proof: Proof) -> Hello {
        Hello {
            min_version: u16::from(min % 3),
            max_version: u16::from(max % 3).max(u16::from(min % 3)),
            capabilities: u64::from(session & 31),
            session: SessionId([session; 16]),
            stream_window: 4096,
            session_window: 16384,
            proof: match proof {
                Proof::None => None,
                Proof::Valid => Some(
                    SharedSecret::new(SECRET)
                        .expect("valid secret")
                        .hello_proof(&PEERS[peer], &ME),
                ),
                Proof::Wrong => Some([7; 32]),
            },
        }
    }

    fn frame(&self, peer: usize, f: PeerFrame) -> Frame {
        match f {
            PeerFrame::Hello {
                session,
                min,
                max,
                proof,
            } => Frame::Hello(Self::hello(peer, session, min, max, proof)),
            PeerFrame::Resume { session, proof } => {
                Frame::Resume(Self::hello(peer, session, 1, 1, proof))
            }
            PeerFrame::HelloAck {
                ours,
                session,
                resumed,
                version,
            } => Frame::HelloAck(HelloAck {
                version: u16::from(version % 3),
                capabilities: u64::from(session & 31),
                session: match (ours, self.offered[peer]) {
                    (true, Some(s)) => s,
                    _ => SessionId([session; 16]),
                },
                resumed,
                stream_window: 4096,
                session_window: 16384,
            }),
            PeerFrame::HelloReject(code) => Frame::HelloReject {
                code: SessionCode::from_code(code),
                min_version: 1,
                max_version: 1,
            },
            PeerFrame::Close(code) => Frame::Close {
                code: SessionCode::from_code(code),
            },
            PeerFrame::Ping(token) => Frame::Ping { token },
            PeerFrame::Pong(token) => Frame::Pong { token },
            PeerFrame::Ack(n) => Frame::Ack {
                received: u64::from(n % 1024),
            },
            PeerFrame::SessionWindow(max) => Frame::SessionWindow {
                max: u64::from(max),
            },
            PeerFrame::LossyAck(top, pairs) => lossy_ack(top, pairs),
            PeerFrame::LossySessionWindow(max) => Frame::LossySessionWindow {
                max: u64::from(max),
            },
            PeerFrame::Listen(listener, bind) => Frame::Listen {
                listener: u32::from(listener % 8),
                bind: target(bind),
            },
            PeerFrame::ListenOk(listener) => Frame::ListenOk {
                listener: u32::from(listener % 8),
            },
            PeerFrame::ListenErr(listener, code) => Frame::ListenErr {
                listener: u32::from(listener % 8),
                code: StreamCode::from_code(code),
            },
            f @ (PeerFrame::FlowOpen(..)
            | PeerFrame::FlowOpenOk(_)
            | PeerFrame::FlowClose(..)
            | PeerFrame::Datagram(..)) => flow_frame(f),
            PeerFrame::Batch(frames) => Frame::Batch(
                frames
                    .into_iter()
                    .take(16)
                    .map(|f| self.frame(peer, f))
                    .collect(),
            ),
            other => self.stream_frame(other),
        }
    }

    /// The frames about one stream, aimed at the streams the endpoint knows.
    fn stream_frame(&self, f: PeerFrame) -> Frame {
        match f {
            PeerFrame::Open { stream, target: t } => Frame::Open {
                stream: self.fresh_or_known(stream),
                target: target(t),
            },
            PeerFrame::OpenOk(s) => Frame::OpenOk {
                stream: self.stream(s),
            },
            PeerFrame::OpenErr(s, code) => Frame::OpenErr {
                stream: self.stream(s),
                code: StreamCode::from_code(code),
            },
            PeerFrame::Data {
                stream,
                offset,
                ack,
                len,
            } => Frame::Data {
                stream: self.stream(stream),
                offset: u64::from(offset % 65536),
                ack: u64::from(ack % 65536),
                payload: Bytes::from(vec![0x5A; usize::from(len) % 1341]),
            },
            PeerFrame::Fin {
                stream,
                offset,
                ack,
            } => Frame::Fin {
                stream: self.stream(stream),
                offset: u64::from(offset % 65536),
                ack: u64::from(ack % 65536),
            },
            PeerFrame::Rst(s, code) => Frame::Rst {
                stream: self.stream(s),
                code: StreamCode::from_code(code),
                offset: 0,
                received: 0,
            },
            PeerFrame::RstCounts(s, code, offset, received) => Frame::Rst {
                stream: self.stream(s),
                code: StreamCode::from_code(code),
                offset: u64::from(offset % 65536),
                received: u64::from(received % 65536),
            },
            PeerFrame::LossyData {
                packet,
                stream,
                offset,
                len,
            } => Frame::LossyData {
                packet: u64::from(packet),
                stream: self.stream(stream),
                offset: u64::from(offset % 65536),
                payload: Bytes::from(vec![0x3C; usize::from(len) % 1341]),
            },
            PeerFrame::Window {
                stream,
                max_offset,
                ack,
            } => Frame::Window {
                stream: self.stream(stream),
                max_offset: u64::from(max_offset),
                ack: u64::from(ack % 65536),
            },
            PeerFrame::LossyWindow {
                stream,
                max_offset,
                ack,
            } => Frame::LossyWindow {
                stream: self.stream(stream),
                max_offset: u64::from(max_offset),
                ack: u64::from(ack % 65536),
            },
            _ => unreachable!("`frame` builds the frames of no stream"),
        }
    }

    /// A stream id for an OPEN: mostly new ones, sometimes one in use.
    fn fresh_or_known(&self, i: u8) -> StreamId {
        if i < 64 && !self.streams.is_empty() {
            self.stream(i)
        } else {
            StreamId::from_bytes([i ^ 0x80; 16])
        }
    }

    fn apply(&mut self, op: Op) {
        let peer = |p: u8| usize::from(p) % PEERS.len();
        let now = self.now;
        match op {
            Op::Online(p) => self.ep.handle_input(now, Input::PeerOnline(PEERS[peer(p)])),
            Op::Offline(p) => self
                .ep
                .handle_input(now, Input::PeerOffline(PEERS[peer(p)])),
            Op::FriendRequest(p, message) => self.ep.handle_input(
                now,
                Input::FriendRequest {
                    peer: PEERS[peer(p)],
                    message: Bytes::from(message),
                },
            ),
            Op::Frame(p, f) => self.send_frame(peer(p), f),
            Op::Raw(p, bytes) => self.ep.handle_input(
                now,
                Input::Packet {
                    peer: PEERS[peer(p)],
                    packet: Bytes::from(bytes),
                },
            ),
            Op::Blocked(p) => self
                .ep
                .handle_input(now, Input::SendBlocked(PEERS[peer(p)])),
            Op::Ready(p) => self.ep.handle_input(now, Input::SendReady(PEERS[peer(p)])),
            Op::Connect(p) => self.ep.connect(now, PEERS[peer(p)]),
            Op::Disconnect(p) => self.ep.disconnect(PEERS[peer(p)]),
            Op::Open(p, t) => {
                if let Ok(s) = self.ep.open(now, PEERS[peer(p)], target(t)) {
                    self.note_stream(s);
                }
            }
            Op::Listen(..) | Op::Unlisten(..) | Op::AnswerListen(..) | Op::OpenReverse(..) => {
                self.apply_reverse(op)
            }
            Op::OpenFlow(..) | Op::SendDatagram(..) | Op::CloseFlow(..) | Op::AnswerFlow(..) => {
                self.apply_flow(op)
            }
            Op::Write(s, len) => {
                let _ = self
                    .ep
                    .write(self.stream(s), Bytes::from(vec![0xA5; usize::from(len)]));
            }
            Op::Read(s, max) => {
                let _ = self.ep.read(self.stream(s), usize::from(max));
            }
            Op::Finish(s) => {
                let _ = self.ep.finish(self.stream(s));
            }
            Op::Reset(s, code) => {
                let _ = self.ep.reset(self.stream(s), StreamCode::from_code(code));
            }
            Op::Accept(s) => {
                let _ = self.ep.accept(self.stream(s));
            }
            Op::Refuse(s, code) => {
                let _ = self.ep.refuse(self.stream(s), StreamCode::from_code(code));
            }
            Op::AdvanceMs(ms) => self.advance(Duration::from_millis(u64::from(ms))),
            Op::AdvanceSecs(s) => self.advance(Duration::from_secs(u64::from(s % 200))),
            Op::Shutdown => self.ep.shutdown(),
            Op::Path(p, direct) => self.ep.handle_input(
                now,
                Input::PathChanged {
                    peer: PEERS[peer(p)],
                    direct,
                },
            ),
        }
        self.drain();
    }

    /// Peer `peer` sends the endpoint a frame built from `f`.
    fn send_frame(&mut self, peer: usize, f: PeerFrame) {
        let frame = self.frame(peer, f);
        if let Some(s) = frame.stream() {
            self.note_stream(s);
        }
        self.ep.handle_input(
            self.now,
            Input::Packet {
                peer: PEERS[peer],
                packet: frame.to_bytes(),
            },
        );
    }

    /// Moves time on, firing every timer due on the way, as a driver would.
    fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            self.drain();
            match self.ep.next_deadline() {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    if trace() {
                        eprintln!("{:?} timeout", self.now - origin());
                    }
                    self.ep.handle_timeout(self.now);
                    self.drain();
                    // A timer that is due must be acted on, not reported again and again
                    // (a driver would spin on it).
                    if let Some(next) = self.ep.next_deadline() {
                        assert!(
                            next > self.now,
                            "a deadline at or before now survived handle_timeout: {:?}",
                            if trace() {
                                format!("{:#?}", self.ep)
                            } else {
                                String::new()
                            }
                        );
                    }
                }
                _ => break,
            }
        }
        self.now = until;
    }

    /// The drain rule, checking every output.
    fn drain(&mut self) {
        for _ in 0..MAX_OUTPUTS_PER_STEP {
            match self.ep.poll_output(self.now) {
                None | Some(Output::Timeout(_)) => return self.check_bounds(),
                Some(Output::Transmit { peer, packet }) => {
                    assert!(packet.len() <= MAX_PACKET_SIZE, "a packet too big for Tox");
                    let frame = Frame::decode(&packet).expect("our own packets decode");
                    if let Frame::Hello(h) | Frame::Resume(h) = &frame {
                        if let Some(i) = PEERS.iter().position(|p| *p == peer) {
                            self.offered[i] = Some(h.session);
                        }
                    }
                    if let Some(s) = frame.stream() {
                        self.note_stream(s);
                    }
                }
                Some(Output::Event(e)) => {
                    if let Some(s) = e.stream() {
                        self.note_stream(s);
                    }
                }
            }
        }
        panic!("the endpoint produced {MAX_OUTPUTS_PER_STEP} outputs in one step");
    }

    fn check_bounds(&self) {
        let c = self.ep.config();
        for (stream, peer) in self.ep.streams() {
            let st = self
                .ep
                .stream_stats(stream)
                .expect("indexed stream has state");
            assert!(st.recv_buffered as u64 <= u64::from(c.stream_window));
            let ss = self.ep.session_stats(peer).expect("stream's session");
            assert!(ss.recv_buffered <= c.session_window);
        }
        for peer in self.ep.peers() {
            let ss = self.ep.session_stats(peer).expect("listed session");
            assert!(ss.retransmit_buffered <= c.session_window as usize + c.max_packet_size);
        }
    }
}

/// Runs the endpoint through the operations `data` describes.
pub fn endpoint_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut h = Harness {
        ep: Endpoint::new(config(), [0x42; 32]).expect("valid config"),
        now: origin(),
        offered: [None; 4],
        streams: Vec::new(),
    };
    for _ in 0..512 {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        if trace() {
            eprintln!("{:?} {op:?}", h.now - origin());
        }
        h.apply(op);
        if u.is_empty() {
            break;
        }
    }
    // Every timer runs out: nothing may be left holding on.
    h.advance(Duration::from_secs(300));
}

/// `TOXTUN_FUZZ_TRACE=1` prints every operation (to read a crash's input).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("TOXTUN_FUZZ_TRACE").is_some_and(|v| v == "1"))
}

/// LACK: descending, disjoint ranges below `top` (one at least), from gap and length pairs.
fn lossy_ack(top: u16, pairs: Vec<(u8, u8)>) -> Frame {
    // Build descending, disjoint ranges below `top` (one at least).
    let mut ranges = Vec::new();
    let mut end = u64::from(top) + 1;
    for (gap, len) in pairs.into_iter().take(frame::MAX_ACK_RANGES) {
        let len = u64::from(len).max(1);
        if end < len + u64::from(gap) {
            break;
        }
        let e = end - u64::from(gap);
        ranges.push((e - len, e));
        match (e - len).checked_sub(1) {
            Some(next) if next > 0 => end = next,
            _ => break,
        }
    }
    if ranges.is_empty() {
        ranges.push((u64::from(top), u64::from(top) + 1));
    }
    Frame::LossyAck {
        delay_us: u32::from(top),
        ranges,
    }
}
