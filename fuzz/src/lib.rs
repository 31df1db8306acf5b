//! `toxtun-fuzz` holds the bodies of toxtun's fuzz targets as plain functions, so that the
//! same code runs under a coverage-guided fuzzer and, on the stable toolchain, in a test
//! that replays the checked-in corpus (`corpus/<target>/`). The libFuzzer entry points and
//! the endpoint-sequence targets arrive with the fuzzing issue.

use bytes::Bytes;
use toxtun_proto::{Frame, MAX_PACKET_SIZE};

/// Decodes arbitrary bytes as a frame. It must never panic; a frame that decodes must
/// re-encode to exactly the same bytes and fit a Tox lossless packet.
pub fn decode_frame(data: &[u8]) {
    let packet = Bytes::copy_from_slice(data);
    if let Ok(frame) = Frame::decode(&packet) {
        let again = frame.to_bytes();
        assert!(again.len() <= MAX_PACKET_SIZE);
        assert_eq!(
            Frame::decode(&again).as_ref(),
            Ok(&frame),
            "re-encoding must decode to the same frame"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn replay(target: &str, f: fn(&[u8])) -> usize {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("corpus directory") {
            let path = entry.expect("entry").path();
            f(&std::fs::read(&path).expect("corpus file"));
            n += 1;
        }
        n
    }

    /// Regenerates the seed corpus: `cargo test -p toxtun-fuzz -- --ignored write_seed_corpus`.
    #[test]
    #[ignore = "writes files; run by hand to refresh the seeds"]
    fn write_seed_corpus() {
        use bytes::Bytes;
        use toxtun_proto::frame::{Hello, HelloAck};
        use toxtun_proto::{Frame, SessionCode, SessionId, StreamCode, StreamId};
        let s = StreamId::from_bytes([0x11; 16]);
        let frames = [
            Frame::Hello(Hello {
                min_version: 1,
                max_version: 1,
                capabilities: 0,
                session: SessionId([3; 16]),
                stream_window: 262_144,
                session_window: 16 << 20,
                proof: Some([9; 32]),
            }),
            Frame::HelloAck(HelloAck {
                version: 1,
                capabilities: 0,
                session: SessionId([3; 16]),
                resumed: false,
                stream_window: 262_144,
                session_window: 16 << 20,
            }),
            Frame::HelloReject {
                code: SessionCode::Unauthorized,
                min_version: 1,
                max_version: 1,
            },
            Frame::Close {
                code: SessionCode::Normal,
            },
            Frame::Ping { token: 1 },
            Frame::Pong { token: 1 },
            Frame::SessionWindow { max: 1 << 24 },
            Frame::Open {
                stream: s,
                target: "127.0.0.1:22".parse().unwrap(),
            },
            Frame::Open {
                stream: s,
                target: "[::1]:8080".parse().unwrap(),
            },
            Frame::Open {
                stream: s,
                target: "host.example.org:443".parse().unwrap(),
            },
            Frame::OpenOk { stream: s },
            Frame::OpenErr {
                stream: s,
                code: StreamCode::TargetNotAllowed,
            },
            Frame::Data {
                stream: s,
                offset: 0,
                ack: 0,
                payload: Bytes::from_static(b"hello"),
            },
            Frame::Fin {
                stream: s,
                offset: 5,
                ack: 0,
            },
            Frame::Rst {
                stream: s,
                code: StreamCode::Cancelled,
                offset: 5,
            },
            Frame::Window {
                stream: s,
                max_offset: 1 << 20,
                ack: 5,
            },
        ];
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/decode");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, f) in frames.iter().enumerate() {
            std::fs::write(dir.join(format!("{i:02}-{}", f.name())), f.to_bytes()).unwrap();
        }
        std::fs::write(dir.join("90-empty"), b"").unwrap();
        std::fs::write(dir.join("91-not-lossless"), [0x10, 1, 2]).unwrap();
        std::fs::write(dir.join("92-truncated-data"), [0xAB, 1, 2, 3]).unwrap();
    }

    #[test]
    fn decode_corpus_replays() {
        let n = replay("decode", super::decode_frame);
        assert!(n >= 10, "the decode corpus should not be empty, found {n}");
    }
}
