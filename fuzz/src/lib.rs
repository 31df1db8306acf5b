//! `toxtun-fuzz` holds the bodies of toxtun's fuzz targets as plain functions, so that the
//! same code runs under a coverage-guided fuzzer (libFuzzer through cargo-fuzz, in
//! `cargo-fuzz/`, nightly) and, on the stable toolchain, in tests that replay the
//! checked-in corpus (`corpus/<target>/`, crashes fixed included) and feed random inputs.
//!
//! Targets: [`decode_frame`], [`endpoint_ops`], [`tox_id`], [`target_rule`],
//! [`server_config`]. [`TARGETS`] lists them by name.

mod endpoint;
mod parsers;

pub use endpoint::endpoint_ops;
pub use parsers::{server_config, target_rule, tox_id};

use bytes::Bytes;
use toxtun_proto::wire::Frame;
use toxtun_proto::MAX_PACKET_SIZE;

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

/// A fuzz target's body: any bytes in, a panic only for a bug.
pub type Target = fn(&[u8]);

/// Every target by the name its corpus directory and libFuzzer binary carry.
pub const TARGETS: &[(&str, Target)] = &[
    ("decode", decode_frame),
    ("endpoint", endpoint_ops),
    ("tox_id", tox_id),
    ("target_rule", target_rule),
    ("server_config", server_config),
];

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
        use toxtun_proto::wire::{Frame, Hello, HelloAck};
        use toxtun_proto::{SessionCode, SessionId, StreamCode, StreamId};
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
                received: 3,
            },
            Frame::LossyData {
                packet: 9,
                stream: s,
                offset: 5,
                payload: Bytes::from_static(b"fast"),
            },
            Frame::LossyAck {
                delay_us: 250,
                ranges: vec![(12, 20), (3, 10)],
            },
            Frame::Window {
                stream: s,
                max_offset: 1 << 20,
                ack: 5,
            },
            Frame::LossyWindow {
                stream: s,
                max_offset: 1 << 21,
                ack: 5,
            },
            Frame::LossySessionWindow { max: 1 << 25 },
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

    /// Seeds for the text targets: `cargo test -p toxtun-fuzz -- --ignored write_text_seeds`.
    #[test]
    #[ignore = "writes files; run by hand to refresh the seeds"]
    fn write_text_seeds() {
        let k = "AB".repeat(32);
        let id = toxtun_proto::ToxId::new(toxtun_proto::PeerId([0xAB; 32]), [1, 2, 3, 4]);
        let seeds: &[(&str, &[(&str, String)])] = &[
            (
                "tox_id",
                &[
                    ("valid", id.to_string()),
                    ("lower", id.to_string().to_lowercase()),
                    ("bad-checksum", format!("{}0000", &id.to_string()[..72])),
                    ("short", k.clone()),
                ],
            ),
            (
                "target_rule",
                &[
                    ("ipv4", "127.0.0.1:22\n127.0.0.1:22".into()),
                    ("range", "127.0.0.1:8000-8100\n127.0.0.1:8080".into()),
                    ("cidr", "10.0.0.0/8:443\n10.1.2.3:443".into()),
                    ("wildcard", "*.lan:*\ndb.lan:5432".into()),
                    ("ipv6", "[::1]:22\n[::ffff:127.0.0.1]:22".into()),
                    ("trick", "127.0.0.1:22\n127.1:22".into()),
                    ("hex", "127.0.0.1:22\n0x7f000001:22".into()),
                ],
            ),
            (
                "server_config",
                &[
                    (
                        "full",
                        format!(
                            "[[client]]\nkey = \"{k}\"\nallow = [\"127.0.0.1:22\", \"*.lan:*\"]\n\
                             [secret]\nvalue = \"a long enough secret\"\nallow = [\"127.0.0.1:80\"]\n\
                             [limits]\nmax_peers = 3\n[session]\nresume_grace_secs = 30\n\
                             [network]\nbootstrap = [\"127.0.0.1:33445:{k}\"]\nudp = false\n"
                        ),
                    ),
                    ("empty", String::new()),
                    ("unknown-field", "[limits]\nmax_peer = 3\n".into()),
                    ("bad-rule", format!("[[client]]\nkey = \"{k}\"\nallow = [\"127.0.0.1\"]\n")),
                ],
            ),
        ];
        for (target, files) in seeds {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("corpus")
                .join(target);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in *files {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
    }

    /// Seeds for the endpoint target: random operation lists (fixed seeds).
    #[test]
    #[ignore = "writes files; run by hand to refresh the seeds"]
    fn write_endpoint_seeds() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/endpoint");
        std::fs::create_dir_all(&dir).unwrap();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..16 {
            let bytes: Vec<u8> = (0..256 + i * 128)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            std::fs::write(dir.join(format!("seed-{i:02}")), bytes).unwrap();
        }
    }

    /// `TOXTUN_FUZZ_INPUT=<target>:<file> cargo test -p toxtun-fuzz replay_one_input` runs one
    /// input (a crash libFuzzer saved, say), with `TOXTUN_FUZZ_TRACE=1` to see its steps.
    #[test]
    fn replay_one_input() {
        let Ok(spec) = std::env::var("TOXTUN_FUZZ_INPUT") else {
            return;
        };
        let (target, file) = spec.split_once(':').expect("<target>:<file>");
        let (_, f) = super::TARGETS
            .iter()
            .find(|(t, _)| *t == target)
            .expect("a known target");
        f(&std::fs::read(file).expect("the input file"));
    }

    /// Every target over its checked-in corpus: seeds, what the fuzzer kept, and the inputs
    /// of crashes that were fixed.
    #[test]
    fn every_corpus_replays() {
        for (target, f) in super::TARGETS {
            let n = replay(target, *f);
            assert!(n >= 4, "the {target} corpus should not be empty, found {n}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 256,
            failure_persistence: None,
            .. Default::default()
        })]

        /// A little fuzzing on stable, every CI run: random operation lists.
        #[test]
        fn random_endpoint_operations_keep_every_invariant(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)
        ) {
            super::endpoint_ops(&data);
        }

        /// And random text for the parsers.
        #[test]
        fn random_text_never_breaks_a_parser(text in "\\PC{0,200}") {
            super::tox_id(text.as_bytes());
            super::target_rule(text.as_bytes());
            super::server_config(text.as_bytes());
        }
    }
}
