//! Endpoint configuration: identity, windows, timeouts, and the roles the endpoint plays.

use core::time::Duration;

use crate::frame::MAX_PACKET_SIZE;
use crate::ids::PeerId;
use crate::policy::{ServerPolicy, SharedSecret};
use crate::recovery::congestion::CongestionControl;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// The oldest protocol version this crate speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Capability bits exchanged in HELLO / HELLO_ACK; the session uses their intersection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// No optional capability.
    pub const NONE: Capabilities = Capabilities(0);
    /// The fast path: stream bytes in lossy packets (LDATA, LACK) with toxtun's own
    /// reliability and congestion control, used while the link is direct UDP.
    pub const LOSSY_DATA: Capabilities = Capabilities(1);
    /// Credit on the lossy lane too: each WINDOW and SESSION_WINDOW of a session on the
    /// fast path also goes as a lossy twin (LWINDOW, LSESSION_WINDOW), so that credit for
    /// bytes that came as lossy packets returns as fast as they came, not behind
    /// c-toxcore's congestion control for lossless packets.
    pub const LOSSY_CREDIT: Capabilities = Capabilities(2);
    /// Several small lossless frames in one packet (BATCH): the OPENs of a hundred streams
    /// opened at once take a few packets, not a hundred, of c-toxcore's lossless lane,
    /// whose congestion control meters packets, not bytes.
    pub const BATCH: Capabilities = Capabilities(4);
    /// Reverse forwarding: LISTEN, LISTEN_OK, LISTEN_ERR, and streams the server opens
    /// toward the client for a listener it asked for.
    pub const REVERSE: Capabilities = Capabilities(8);
    /// UDP forwarding: flows (UOPEN, UOPEN_OK, UCLOSE) and their datagrams (DGRAM on the
    /// lossless lane, LDGRAM on the lossy one).
    pub const DATAGRAM: Capabilities = Capabilities(16);

    /// Whether every bit of `other` is set here.
    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }
}

/// How an endpoint behaves. Build one with [`EndpointConfig::new`] and adjust its fields.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// This endpoint's Tox public key (the server's key is bound into secret proofs).
    pub local_id: PeerId,
    /// The largest packet the transport carries; frames never exceed it.
    /// Tox lossless custom packets carry at most 1373 bytes.
    pub max_packet_size: usize,
    /// Credit first granted to each stream the peer sends on: the most bytes one stream may
    /// have buffered here, unread, until its window grows.
    pub stream_window: u32,
    /// The most a stream's window grows to. A stream's window doubles each time the credit,
    /// not the reader, held the peer back (the reader read every byte that came, and they
    /// ended exactly at a limit granted): the window is smaller than the path's
    /// bandwidth-delay product. A slow reader
    /// never triggers it, so its stream keeps `stream_window`. No window grows past
    /// `session_window`, and what all of a peer's streams grew together stays within it.
    pub max_stream_window: u32,
    /// Credit granted to the peer across all its streams: the most bytes one peer may have
    /// buffered here, unread (the per-peer budget).
    pub session_window: u64,
    /// Send a PING when nothing was heard from the peer for this long.
    pub keepalive_interval: Duration,
    /// Declare the peer gone when nothing was heard from it for this long.
    pub idle_timeout: Duration,
    /// Give up on a HELLO that got no answer after this long (and try again).
    pub handshake_timeout: Duration,
    /// Give up on an OPEN that got neither OPEN_OK nor OPEN_ERR after this long.
    pub open_timeout: Duration,
    /// Wait this long before a client re-sends HELLO after its session ended while the
    /// Tox link stayed up (the server restarted, say). Doubles up to 32× on failures.
    pub reconnect_delay: Duration,
    /// How long a session and its streams outlive a lost Tox link. When the link returns
    /// within it, the client resumes the session and both sides resend what the other
    /// missed; nothing is lost. Past it, every stream ends (`LinkLost`). Zero: a lost link
    /// ends the session at once.
    pub resume_grace: Duration,
    /// Offer the fast path (lossy packets with toxtun's own congestion control) in the
    /// handshake. It is used when both sides offer it, over a direct UDP link or a TCP
    /// relay, until its packets stop getting through; otherwise every byte goes in
    /// c-toxcore's lossless packets.
    pub fast_path: bool,
    /// Offer reverse forwarding (LISTEN and the server's streams toward its client).
    /// Default on; off, a client's listeners are refused at once with
    /// `ReverseUnsupported`, as by a server that predates them.
    pub reverse: bool,
    /// Offer UDP forwarding (flows and datagrams). Default on; off, a client's flows are
    /// refused at once with `DatagramUnsupported`, as by a server that predates them.
    pub datagrams: bool,
    /// A UDP flow that carried no datagram either way for this long ends (`FlowIdle`)
    /// on the side that notices first. UDP has no end of its own: this is how a flow's
    /// socket on the server is given back.
    pub flow_idle_timeout: Duration,
    /// The congestion controller the fast path runs (on this side's sending direction).
    pub congestion: CongestionControl,
    /// As a client: the shared secret to prove to servers, if any.
    pub client_secret: Option<SharedSecret>,
    /// As a server: who is admitted and what they may reach. `None`: accept no sessions.
    pub server: Option<ServerPolicy>,
}

impl EndpointConfig {
    /// A client-only configuration with the default windows and timeouts.
    pub fn new(local_id: PeerId) -> Self {
        EndpointConfig {
            local_id,
            max_packet_size: MAX_PACKET_SIZE,
            stream_window: 256 * 1024,
            max_stream_window: 4 * 1024 * 1024,
            session_window: 16 * 1024 * 1024,
            keepalive_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            open_timeout: Duration::from_secs(30),
            reconnect_delay: Duration::from_secs(1),
            resume_grace: Duration::from_secs(120),
            fast_path: true,
            reverse: true,
            datagrams: true,
            flow_idle_timeout: Duration::from_secs(60),
            congestion: CongestionControl::default(),
            client_secret: None,
            server: None,
        }
    }

    /// The capability bits this endpoint offers.
    pub fn capabilities(&self) -> Capabilities {
        let mut always = Capabilities::BATCH.0;
        if self.reverse {
            always |= Capabilities::REVERSE.0;
        }
        if self.datagrams {
            always |= Capabilities::DATAGRAM.0;
        }
        if self.fast_path {
            Capabilities(always | Capabilities::LOSSY_DATA.0 | Capabilities::LOSSY_CREDIT.0)
        } else {
            Capabilities(always)
        }
    }

    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_packet_size < crate::frame::DATA_HEADER_LEN + 1
            || self.max_packet_size > MAX_PACKET_SIZE
        {
            return Err(ConfigError::PacketSize(self.max_packet_size));
        }
        // Open frames must fit: 1 + 16 + 1 + 253 + 2 bytes.
        if self.max_packet_size < 273 {
            return Err(ConfigError::PacketSize(self.max_packet_size));
        }
        if self.stream_window < 2 * self.max_packet_size as u32 {
            return Err(ConfigError::Window(
                "stream_window must hold at least two packets",
            ));
        }
        if self.max_stream_window < self.stream_window {
            return Err(ConfigError::Window(
                "max_stream_window must be at least stream_window",
            ));
        }
        if self.session_window < u64::from(self.stream_window) {
            return Err(ConfigError::Window(
                "session_window must be at least stream_window",
            ));
        }
        if self.idle_timeout <= self.keepalive_interval {
            return Err(ConfigError::Timeouts(
                "idle_timeout must be longer than keepalive_interval",
            ));
        }
        Ok(())
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The packet size cannot carry the protocol's frames.
    #[error("max_packet_size {0} is outside 273..=1373")]
    PacketSize(usize),
    /// Windows are inconsistent.
    #[error("{0}")]
    Window(&'static str),
    /// Timeouts are inconsistent.
    #[error("{0}")]
    Timeouts(&'static str),
}
