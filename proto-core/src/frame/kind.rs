//! Frame type bytes: the first byte of every packet, and what each one is called.

/// HELLO: the initiator's handshake.
pub const HELLO: u8 = 0xA0;
/// HELLO_ACK: the handshake accepted.
pub const HELLO_ACK: u8 = 0xA1;
/// HELLO_REJECT: the handshake refused, with a code.
pub const HELLO_REJECT: u8 = 0xA2;
/// CLOSE: the session ends, with a code.
pub const CLOSE: u8 = 0xA3;
/// PING: keepalive request.
pub const PING: u8 = 0xA4;
/// PONG: keepalive answer.
pub const PONG: u8 = 0xA5;
/// SESSION_WINDOW: per-peer credit.
pub const SESSION_WINDOW: u8 = 0xA6;
/// ACK: how many sequenced frames of this session the sender has received.
pub const ACK: u8 = 0xA7;
/// OPEN: open a stream to a target.
pub const OPEN: u8 = 0xA8;
/// OPEN_OK: the stream's target is connected.
pub const OPEN_OK: u8 = 0xA9;
/// OPEN_ERR: the stream was refused, with a code.
pub const OPEN_ERR: u8 = 0xAA;
/// DATA: stream bytes at an offset.
pub const DATA: u8 = 0xAB;
/// FIN: the sender's direction of the stream is finished.
pub const FIN: u8 = 0xAC;
/// RST: the stream is aborted, with a code.
pub const RST: u8 = 0xAD;
/// WINDOW: per-stream credit.
pub const WINDOW: u8 = 0xAE;
/// RESUME: the initiator resumes a session after a link outage (HELLO's layout).
pub const RESUME: u8 = 0xAF;
/// BATCH: several frames of an established session in one lossless packet.
pub const BATCH: u8 = 0xB0;
/// LISTEN: the client asks the server to listen for it (reverse forwarding).
pub const LISTEN: u8 = 0xB1;
/// LISTEN_OK: the server listens.
pub const LISTEN_OK: u8 = 0xB2;
/// LISTEN_ERR: the server refused to listen, or stopped listening, with a code.
pub const LISTEN_ERR: u8 = 0xB3;
/// UOPEN: the client opens a UDP flow to a target (`forward -U`).
pub const FLOW_OPEN: u8 = 0xB4;
/// UOPEN_OK: the server opened the flow.
pub const FLOW_OPEN_OK: u8 = 0xB5;
/// UCLOSE: a flow refused or ended, with a code.
pub const FLOW_CLOSE: u8 = 0xB6;
/// DGRAM: a UDP datagram (or a fragment of one) of a flow, in a lossless packet: over a
/// TCP relay, where lossy packets do not go. Not sequenced: never resent.
pub const DATAGRAM: u8 = 0xB7;
/// LDATA: stream bytes on the fast path, in a lossy packet with a packet number.
/// (c-toxcore hands lossy ids 192..=199 to toxav's RTP handlers, never to the custom
/// packet callback, so the fast path's ids start at 200.)
pub const LOSSY_DATA: u8 = 0xC8;
/// LACK: which LDATA packet numbers arrived, in a lossy packet.
pub const LOSSY_ACK: u8 = 0xC9;
/// LWINDOW: a lossy twin of a WINDOW frame (the same credit, on the lossy lane).
pub const LOSSY_WINDOW: u8 = 0xCA;
/// LSESSION_WINDOW: a lossy twin of a SESSION_WINDOW frame.
pub const LOSSY_SESSION_WINDOW: u8 = 0xCB;

/// LDGRAM: a UDP datagram (or a fragment of one) of a flow, in a lossy packet: on a
/// direct link, where it is never queued behind retransmissions.
pub const LOSSY_DATAGRAM: u8 = 0xCC;

/// Whether frames of type `k` are sequenced (see [`super::Frame::is_sequenced`]).
pub fn is_sequenced(k: u8) -> bool {
    matches!(k, SESSION_WINDOW | OPEN..=WINDOW | LISTEN..=FLOW_CLOSE)
}

/// The name PROTOCOL.md gives frames of type `k`, if `k` is one.
pub fn name(k: u8) -> Option<&'static str> {
    Some(match k {
        HELLO => "HELLO",
        RESUME => "RESUME",
        HELLO_ACK => "HELLO_ACK",
        HELLO_REJECT => "HELLO_REJECT",
        CLOSE => "CLOSE",
        PING => "PING",
        PONG => "PONG",
        SESSION_WINDOW => "SESSION_WINDOW",
        ACK => "ACK",
        OPEN => "OPEN",
        OPEN_OK => "OPEN_OK",
        OPEN_ERR => "OPEN_ERR",
        DATA => "DATA",
        FIN => "FIN",
        RST => "RST",
        WINDOW => "WINDOW",
        LOSSY_DATA => "LDATA",
        LOSSY_ACK => "LACK",
        LOSSY_WINDOW => "LWINDOW",
        LOSSY_SESSION_WINDOW => "LSESSION_WINDOW",
        BATCH => "BATCH",
        LISTEN => "LISTEN",
        LISTEN_OK => "LISTEN_OK",
        LISTEN_ERR => "LISTEN_ERR",
        FLOW_OPEN => "UOPEN",
        FLOW_OPEN_OK => "UOPEN_OK",
        FLOW_CLOSE => "UCLOSE",
        DATAGRAM => "DGRAM",
        LOSSY_DATAGRAM => "LDGRAM",
        _ => return None,
    })
}
