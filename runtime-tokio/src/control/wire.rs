//! What crosses the control socket. A client writes one request, a JSON line of at most
//! [`MAX_REQUEST`] bytes, and reads one reply line. After an `opened` reply the socket
//! carries the stream: raw bytes from the client (its half-close is the stream's FIN), and
//! [`DownFrame`]s to it — data, then one `End` with the stream's code — so that the
//! attached `pipe` exits with the same code a pipe of its own would.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use crate::node::{NodeStatus, ReloadReport};

/// The longest request line, newline included.
pub const MAX_REQUEST: usize = 8 * 1024;
/// The longest reply line (a status with many peers and streams).
pub const MAX_REPLY: usize = 4 * 1024 * 1024;
/// The most data bytes in one [`DownFrame::Data`].
pub const MAX_DATA_FRAME: usize = 64 * 1024;

/// A (`bind`, `to`) pair of a held forward (`-R` or `-U`), each `host:port` as text.
pub type ForwardPair = (String, String);

/// A request to the process that holds an identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The node's peers, links, sessions and streams.
    Status,
    /// Close every session and stop.
    Stop,
    /// Reread the configuration file and apply it (a server).
    Reload,
    /// Keep a session with `server` and the process itself for as long as this
    /// connection stays open (an attached `forward`, between its connections).
    Hold {
        /// The server's Tox ID.
        server: String,
        /// As in `Open`.
        credential: Option<String>,
        /// Reverse forwards (`forward -R`), as (`bind`, `to`) `host:port` pairs: the server
        /// listens on each `bind` while this connection stays open, and the holder of the
        /// identity connects the streams to `to`.
        #[serde(default)]
        reverse: Vec<(String, String)>,
        /// UDP forwards (`forward -U`), as (`bind`, `target`) pairs: the holder of the
        /// identity binds each `bind` (an address and port on this machine) and forwards
        /// its datagrams to `target` while this connection stays open.
        #[serde(default)]
        udp: Vec<(String, String)>,
    },
    /// Open a stream to `target` through `server` and carry it on this socket.
    Open {
        /// The server's Tox ID.
        server: String,
        /// `host:port`.
        target: String,
        /// A digest of the secret the requester would use ([`super::credential`]), so
        /// that a process using another secret says so instead of failing at the server.
        credential: Option<String>,
        /// Reply only once the server accepted the stream (`opened`) or refused it
        /// (`refused`, with its code): for a SOCKS client, which must be told which.
        #[serde(default)]
        wait_accepted: bool,
    },
}

/// A reply to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// The status.
    Status {
        /// The process's pid.
        pid: u32,
        /// The node.
        status: NodeStatus,
    },
    /// Stopping (the `Stop` request).
    Stopping {
        /// The process's pid.
        pid: u32,
    },
    /// The configuration was reloaded (the `Reload` request): what changed.
    Reloaded {
        /// The process's pid.
        pid: u32,
        /// What the reload changed.
        report: ReloadReport,
    },
    /// Held (the `Hold` request): the process stays while this connection is open.
    Holding {
        /// The process's pid.
        pid: u32,
    },
    /// The stream is open: what follows on the socket is the stream.
    Opened {
        /// The stream's ID.
        stream: String,
    },
    /// The server refused the stream (an `open` with `wait_accepted`).
    Refused {
        /// The stream code.
        code: u16,
    },
    /// The request failed.
    Error {
        /// [`ControlError::code`].
        code: u16,
        /// For people.
        message: String,
    },
}

/// Why a control request failed. Each has a stable code (3000s), in the reply and in
/// the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The request was not a JSON request line.
    #[error("malformed control request: {0} (3001)")]
    Malformed(String),
    /// The request line was longer than [`MAX_REQUEST`].
    #[error("control request longer than {MAX_REQUEST} bytes (3002)")]
    TooLong,
    /// The connecting process belongs to another user.
    #[error("control socket: uid {0} is not this process's owner (3003)")]
    NotOwner(u32),
    /// This process cannot do that (a server asked to open a stream): its pid, and what.
    #[error("toxtun process {0}, which runs this identity, cannot {1} (3004)")]
    Unsupported(u32, &'static str),
    /// The requester would use another secret than this process does.
    #[error("toxtun process {0}, which holds this identity, uses another secret: stop it with `toxtun stop`, or use another --data-dir (3005)")]
    OtherSecret(u32),
    /// The request's server or target is not valid.
    #[error("{0} (3006)")]
    BadArgument(String),
    /// The node could not do it (stopped, or refused the open).
    #[error("{0} (3007)")]
    Node(String),
    /// Too many control connections at once.
    #[error("too many control connections (3008)")]
    Busy,
    /// No request came in time.
    #[error("no control request within the time allowed (3009)")]
    Timeout,
    /// A frame or reply from the other end made no sense.
    #[error("broken control stream: {0} (3010)")]
    Broken(String),
    /// A reload found the configuration file wrong: the old configuration stays in force.
    #[error("{0}; the running configuration is unchanged (3011)")]
    Config(String),
}

impl ControlError {
    /// The stable code.
    pub fn code(&self) -> u16 {
        match self {
            ControlError::Malformed(_) => 3001,
            ControlError::TooLong => 3002,
            ControlError::NotOwner(_) => 3003,
            ControlError::Unsupported(..) => 3004,
            ControlError::OtherSecret(_) => 3005,
            ControlError::BadArgument(_) => 3006,
            ControlError::Node(_) => 3007,
            ControlError::Busy => 3008,
            ControlError::Timeout => 3009,
            ControlError::Broken(_) => 3010,
            ControlError::Config(_) => 3011,
        }
    }

    /// The reply that carries it.
    pub fn reply(&self) -> Reply {
        Reply::Error {
            code: self.code(),
            message: self.to_string(),
        }
    }
}

/// Decodes one request line.
pub fn decode_request(line: &[u8]) -> Result<Request, ControlError> {
    if line.len() > MAX_REQUEST {
        return Err(ControlError::TooLong);
    }
    serde_json::from_slice(line).map_err(|e| ControlError::Malformed(e.to_string()))
}

/// One JSON line (with its newline).
pub fn encode_line<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these types cannot fail: maps have string keys (counts by code are
    // written with theirs as strings).
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Reads one line of at most `max` bytes (newline included); the newline is not returned.
/// Bytes after the newline stay in `reader`'s buffer.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Vec<u8>, ControlError> {
    let mut line = Vec::new();
    let mut limited = reader.take(max as u64);
    let n = limited
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| ControlError::Broken(e.to_string()))?;
    if line.last() != Some(&b'\n') {
        return Err(if n >= max {
            ControlError::TooLong
        } else {
            ControlError::Broken("the other end closed before a whole line".into())
        });
    }
    line.pop();
    Ok(line)
}

/// What the holder of an identity sends an attached client after `opened`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownFrame {
    /// Stream bytes, 1 to [`MAX_DATA_FRAME`] of them.
    Data(Bytes),
    /// The stream ended: 0 for a clean close, else its stream code.
    End(u16),
}

const TAG_DATA: u8 = 0;
const TAG_END: u8 = 1;
/// A frame's header: a tag byte and a 4-byte big-endian length.
pub const FRAME_HEADER: usize = 5;

impl DownFrame {
    /// Appends the frame's header and payload to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            DownFrame::Data(b) => {
                out.put_u8(TAG_DATA);
                out.put_u32(b.len() as u32);
                out.extend_from_slice(b);
            }
            DownFrame::End(code) => {
                out.put_u8(TAG_END);
                out.put_u32(2);
                out.put_u16(*code);
            }
        }
    }

    /// The header of a data frame of `len` bytes (the payload follows, not copied).
    pub fn data_header(len: usize) -> [u8; FRAME_HEADER] {
        let l = (len as u32).to_be_bytes();
        [TAG_DATA, l[0], l[1], l[2], l[3]]
    }

    /// Takes one whole frame off the front of `buf`; `Ok(None)` if more bytes are needed.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<DownFrame>, ControlError> {
        if buf.len() < FRAME_HEADER {
            return Ok(None);
        }
        let tag = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        match (tag, len) {
            (TAG_DATA, 1..=MAX_DATA_FRAME) | (TAG_END, 2) => {}
            (TAG_DATA, _) => {
                return Err(ControlError::Broken(format!("data frame of {len} bytes")))
            }
            (TAG_END, _) => return Err(ControlError::Broken(format!("end frame of {len} bytes"))),
            _ => return Err(ControlError::Broken(format!("unknown frame tag {tag}"))),
        }
        if buf.len() < FRAME_HEADER + len {
            return Ok(None);
        }
        buf.advance(FRAME_HEADER);
        let payload = buf.split_to(len).freeze();
        Ok(Some(if tag == TAG_DATA {
            DownFrame::Data(payload)
        } else {
            DownFrame::End(u16::from_be_bytes([payload[0], payload[1]]))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_status_with_counts_by_code_round_trips() {
        let mut status = crate::NodeStatus {
            id: "ab".into(),
            tox_connected: true,
            peers: vec![],
            counters: Default::default(),
        };
        status.counters.streams_refused.insert(2001, 2);
        status.counters.flows_refused.insert(2020, 1);
        let reply = Reply::Status { pid: 7, status };
        let line = encode_line(&reply);
        let back: Reply = serde_json::from_slice(&line[..line.len() - 1]).unwrap();
        assert_eq!(back, reply);
    }

    #[test]
    fn requests_round_trip_and_bad_ones_have_codes() {
        let r = Request::Open {
            server: "ab".into(),
            target: "127.0.0.1:22".into(),
            credential: None,
            wait_accepted: false,
        };
        let line = encode_line(&r);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(decode_request(&line[..line.len() - 1]).unwrap(), r);
        assert_eq!(
            decode_request(br#"{"op":"status"}"#).unwrap(),
            Request::Status
        );
        let e = decode_request(br#"{"op":"format_disk"}"#).unwrap_err();
        assert_eq!(e.code(), 3001, "{e}");
        let e = decode_request(
            br#"{"op":"open","server":"x","target":"y","credential":null,"extra":1}"#,
        )
        .unwrap_err();
        assert_eq!(e.code(), 3001, "unknown fields are refused: {e}");
        assert_eq!(
            decode_request(&vec![b' '; MAX_REQUEST + 1]).unwrap_err(),
            ControlError::TooLong
        );
    }

    #[tokio::test]
    async fn a_line_is_bounded_and_what_follows_it_stays_buffered() {
        let mut r = tokio::io::BufReader::new(&b"{\"op\":\"stop\"}\nrest"[..]);
        assert_eq!(read_line(&mut r, 64).await.unwrap(), b"{\"op\":\"stop\"}");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"rest");
        let long = [b'x'; 100];
        let mut r = tokio::io::BufReader::new(&long[..]);
        assert_eq!(read_line(&mut r, 64).await, Err(ControlError::TooLong));
        let mut r = tokio::io::BufReader::new(&b"no newline"[..]);
        assert_eq!(read_line(&mut r, 64).await.unwrap_err().code(), 3010);
    }

    #[test]
    fn frames_round_trip_split_anywhere() {
        let frames = [
            DownFrame::Data(Bytes::from_static(b"hello")),
            DownFrame::Data(Bytes::from(vec![7u8; MAX_DATA_FRAME])),
            DownFrame::End(2001),
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        let header = DownFrame::data_header(5);
        assert_eq!(&wire[..FRAME_HEADER], &header);
        for cut in [0, 1, 4, 5, 9, 10, 11, wire.len() - 1, wire.len()] {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(f) = DownFrame::decode(&mut buf).unwrap() {
                got.push(f);
            }
            buf.extend_from_slice(&wire[cut..]);
            while let Some(f) = DownFrame::decode(&mut buf).unwrap() {
                got.push(f);
            }
            assert_eq!(got, frames, "cut at {cut}");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn frames_out_of_bounds_are_refused() {
        for bad in [
            &[0u8, 0, 0, 0, 0][..],           // empty data
            &[0, 0, 1, 0, 1],                 // 65537 bytes
            &[1, 0, 0, 0, 3],                 // end of 3 bytes
            &[9, 0, 0, 0, 1],                 // unknown tag
            &[0, 0xff, 0xff, 0xff, 0xff][..], // 4 GiB
        ] {
            let mut b = BytesMut::from(bad);
            assert_eq!(DownFrame::decode(&mut b).unwrap_err().code(), 3010);
        }
    }

    proptest! {
        #[test]
        fn any_request_bytes_decode_or_fail_with_a_code(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Err(e) = decode_request(&bytes) {
                prop_assert!(matches!(e.code(), 3001 | 3002));
            }
        }

        #[test]
        fn any_json_shaped_request_decodes_or_fails_with_a_code(
            op in "[a-z_]{0,12}",
            server in ".{0,80}",
            target in ".{0,40}",
            extra in proptest::option::of(".{0,20}"),
        ) {
            let mut v = serde_json::json!({"op": op, "server": server, "target": target});
            if let Some(x) = extra {
                v["credential"] = serde_json::Value::String(x);
            }
            let line = serde_json::to_vec(&v).unwrap();
            if let Err(e) = decode_request(&line) {
                prop_assert_eq!(e.code(), 3001);
            }
        }

        #[test]
        fn any_frame_bytes_decode_or_fail_with_a_code(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                match DownFrame::decode(&mut buf) {
                    Ok(Some(DownFrame::Data(d))) => prop_assert!(!d.is_empty() && d.len() <= MAX_DATA_FRAME),
                    Ok(Some(DownFrame::End(_))) => {}
                    Ok(None) => break,
                    Err(e) => { prop_assert_eq!(e.code(), 3010); break; }
                }
            }
        }
    }
}
