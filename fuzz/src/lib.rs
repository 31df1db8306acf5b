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

    #[test]
    fn decode_corpus_replays() {
        let n = replay("decode", super::decode_frame);
        assert!(n >= 10, "the decode corpus should not be empty, found {n}");
    }
}
