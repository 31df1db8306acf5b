//! The codec against PROTOCOL.md, and round trips of arbitrary frames.

use super::*;
use bytes::BufMut;
use proptest::prelude::*;

fn arb_stream() -> impl Strategy<Value = StreamId> {
    any::<[u8; 16]>().prop_map(StreamId::from_bytes)
}

fn arb_target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, port)| format!(
            "{}.{}.{}.{}:{port}",
            ip[0], ip[1], ip[2], ip[3]
        )
        .parse()
        .unwrap()),
        (any::<[u16; 8]>(), 1u16..).prop_map(|(g, port)| {
            let ip = core::net::Ipv6Addr::new(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]);
            Target::new(crate::target::Host::parse(&ip.to_string()).unwrap(), port).unwrap()
        }),
        (
            "[a-z]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z][a-z0-9]{0,10}){0,3}",
            1u16..
        )
            .prop_map(|(h, port)| Target::from_wire(&h, port).unwrap()),
    ]
}

fn arb_code() -> impl Strategy<Value = u16> {
    any::<u16>()
}

pub(crate) fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (
            any::<(u16, u16, u64, [u8; 16], u32, u64)>(),
            proptest::option::of(any::<[u8; 32]>())
        )
            .prop_map(|((a, b, caps, s, sw, ssw), proof)| {
                let h = Hello {
                    min_version: a.min(b),
                    max_version: a.max(b),
                    capabilities: caps,
                    session: SessionId(s),
                    stream_window: sw,
                    session_window: ssw,
                    proof,
                };
                if caps % 2 == 0 {
                    Frame::Hello(h)
                } else {
                    Frame::Resume(h)
                }
            }),
        any::<(u16, u64, [u8; 16], bool, u32, u64)>().prop_map(|(v, c, s, r, sw, ssw)| {
            Frame::HelloAck(HelloAck {
                version: v,
                capabilities: c,
                session: SessionId(s),
                resumed: r,
                stream_window: sw,
                session_window: ssw,
            })
        }),
        (arb_code(), any::<u16>(), any::<u16>()).prop_map(|(c, a, b)| Frame::HelloReject {
            code: SessionCode::from_code(c),
            min_version: a,
            max_version: b
        }),
        arb_code().prop_map(|c| Frame::Close {
            code: SessionCode::from_code(c)
        }),
        any::<u64>().prop_map(|token| Frame::Ping { token }),
        any::<u64>().prop_map(|token| Frame::Pong { token }),
        any::<u64>().prop_map(|max| Frame::SessionWindow { max }),
        any::<u64>().prop_map(|received| Frame::Ack { received }),
        (arb_stream(), arb_target()).prop_map(|(stream, target)| Frame::Open { stream, target }),
        arb_stream().prop_map(|stream| Frame::OpenOk { stream }),
        (any::<u32>(), arb_target()).prop_map(|(listener, bind)| Frame::Listen { listener, bind }),
        any::<u32>().prop_map(|listener| Frame::ListenOk { listener }),
        (any::<u32>(), arb_code()).prop_map(|(listener, c)| Frame::ListenErr {
            listener,
            code: StreamCode::from_code(c)
        }),
        (any::<u32>(), arb_target()).prop_map(|(flow, target)| Frame::FlowOpen { flow, target }),
        any::<u32>().prop_map(|flow| Frame::FlowOpenOk { flow }),
        (any::<u32>(), arb_code()).prop_map(|(flow, c)| Frame::FlowClose {
            flow,
            code: StreamCode::from_code(c)
        }),
        (
            any::<(u32, u32, bool)>(),
            (1u8..=255).prop_flat_map(|count| (0..count, Just(count))),
            proptest::collection::vec(any::<u8>(), 0..=MAX_PACKET_SIZE - DATAGRAM_HEADER_LEN)
        )
            .prop_map(|((flow, seq, lossy), (index, count), p)| {
                let f = Fragment {
                    flow,
                    seq,
                    index,
                    count,
                    payload: Bytes::from(p),
                };
                if lossy {
                    Frame::LossyDatagram(f)
                } else {
                    Frame::Datagram(f)
                }
            }),
        (arb_stream(), arb_code()).prop_map(|(stream, c)| Frame::OpenErr {
            stream,
            code: StreamCode::from_code(c)
        }),
        (
            arb_stream(),
            0u64..u64::MAX / 2,
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..=MAX_DATA_PAYLOAD)
        )
            .prop_map(|(stream, offset, ack, p)| Frame::Data {
                stream,
                offset,
                ack,
                payload: Bytes::from(p)
            }),
        (arb_stream(), any::<u64>(), any::<u64>()).prop_map(|(stream, offset, ack)| {
            Frame::Fin {
                stream,
                offset,
                ack,
            }
        }),
        (arb_stream(), arb_code(), any::<u64>(), any::<u64>()).prop_map(
            |(stream, c, offset, received)| Frame::Rst {
                stream,
                code: StreamCode::from_code(c),
                offset,
                received,
            }
        ),
        (
            any::<u64>(),
            arb_stream(),
            0u64..u64::MAX / 2,
            proptest::collection::vec(any::<u8>(), 0..=MAX_DATA_PAYLOAD)
        )
            .prop_map(|(packet, stream, offset, p)| Frame::LossyData {
                packet,
                stream,
                offset,
                payload: Bytes::from(p)
            }),
        (
            any::<u32>(),
            proptest::collection::btree_set(any::<u64>(), 2..=2 * MAX_ACK_RANGES)
        )
            .prop_map(|(delay_us, points)| {
                // Pair sorted points into disjoint, non-touching ranges, newest first.
                let mut v: Vec<u64> = points.into_iter().collect();
                v.truncate(v.len() / 2 * 2);
                let mut ranges: Vec<(u64, u64)> = v
                    .chunks(2)
                    .map(|c| (c[0], c[1]))
                    .filter(|&(a, b)| a < b && b < u64::MAX)
                    .collect();
                ranges.dedup_by(|later, earlier| later.0 <= earlier.1);
                ranges.reverse();
                if ranges.is_empty() {
                    ranges.push((0, 1));
                }
                Frame::LossyAck { delay_us, ranges }
            }),
        (arb_stream(), any::<u64>(), any::<u64>()).prop_map(|(stream, max_offset, ack)| {
            Frame::Window {
                stream,
                max_offset,
                ack,
            }
        }),
        (arb_stream(), any::<u64>(), any::<u64>()).prop_map(|(stream, max_offset, ack)| {
            Frame::LossyWindow {
                stream,
                max_offset,
                ack,
            }
        }),
        any::<u64>().prop_map(|max| Frame::LossySessionWindow { max }),
    ]
}

proptest! {
    #[test]
    fn every_frame_round_trips_and_fits(frame in arb_frame()) {
        let bytes = frame.to_bytes();
        prop_assert_eq!(bytes.len(), frame.encoded_len());
        prop_assert!(bytes.len() <= MAX_PACKET_SIZE);
        let ids = if frame.is_lossy() {
            FIRST_LOSSY_ID..=LAST_LOSSY_ID
        } else {
            FIRST_FRAME_ID..=LAST_FRAME_ID
        };
        prop_assert!(ids.contains(&bytes[0]));
        prop_assert_eq!(Frame::decode(&bytes).unwrap(), frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let _ = Frame::decode(&Bytes::from(bytes));
    }

    #[test]
    fn frame_prefixes_are_truncated_not_panics(frame in arb_frame(), cut in 0usize..64) {
        let bytes = frame.to_bytes();
        let cut = cut.min(bytes.len());
        let prefix = bytes.slice(..bytes.len() - cut);
        match Frame::decode(&prefix) {
            Ok(f) => {
                let is_data = matches!(
                    f,
                    Frame::Data { .. }
                        | Frame::LossyData { .. }
                        | Frame::Datagram(_)
                        | Frame::LossyDatagram(_)
                );
                prop_assert!(cut == 0 || is_data);
            }
            Err(_) => prop_assert!(cut > 0),
        }
    }

    #[test]
    fn lossless_ids_with_garbage_never_panic(
        kind in FIRST_FRAME_ID..=LAST_LOSSY_ID,
        rest in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut v = vec![kind];
        v.extend(rest);
        let _ = Frame::decode(&Bytes::from(v));
    }
}

/// The sizes PROTOCOL.md states.
#[test]
fn frame_sizes_match_the_protocol_document() {
    let s = StreamId::from_bytes([0; 16]);
    let hello = Hello {
        min_version: 1,
        max_version: 1,
        capabilities: 0,
        session: SessionId([0; 16]),
        stream_window: 0,
        session_window: 0,
        proof: None,
    };
    let sizes = [
        (Frame::Hello(hello.clone()), 42),
        (Frame::Resume(hello.clone()), 42),
        (
            Frame::Hello(Hello {
                proof: Some([0; 32]),
                ..hello
            }),
            74,
        ),
        (
            Frame::HelloAck(HelloAck {
                version: 1,
                capabilities: 0,
                session: SessionId([0; 16]),
                resumed: false,
                stream_window: 0,
                session_window: 0,
            }),
            40,
        ),
        (
            Frame::HelloReject {
                code: SessionCode::Normal,
                min_version: 1,
                max_version: 1,
            },
            7,
        ),
        (
            Frame::Close {
                code: SessionCode::Normal,
            },
            3,
        ),
        (Frame::Ping { token: 0 }, 9),
        (Frame::SessionWindow { max: 0 }, 9),
        (Frame::Ack { received: 0 }, 9),
        (
            Frame::Open {
                stream: s,
                target: "a.bc:1".parse().unwrap(),
            },
            24,
        ),
        (Frame::OpenOk { stream: s }, 17),
        (
            Frame::OpenErr {
                stream: s,
                code: StreamCode::Cancelled,
            },
            19,
        ),
        (
            Frame::Data {
                stream: s,
                offset: 0,
                ack: 0,
                payload: Bytes::new(),
            },
            33,
        ),
        (
            Frame::Fin {
                stream: s,
                offset: 0,
                ack: 0,
            },
            33,
        ),
        (
            Frame::Window {
                stream: s,
                max_offset: 0,
                ack: 0,
            },
            33,
        ),
        (
            Frame::Rst {
                stream: s,
                code: StreamCode::Cancelled,
                offset: 0,
                received: 0,
            },
            35,
        ),
        (
            Frame::LossyData {
                packet: 0,
                stream: s,
                offset: 0,
                payload: Bytes::new(),
            },
            LOSSY_DATA_HEADER_LEN,
        ),
        (
            Frame::LossyAck {
                delay_us: 0,
                ranges: vec![(5, 9), (0, 3)],
            },
            38,
        ),
    ];
    for (f, n) in sizes {
        assert_eq!(f.to_bytes().len(), n, "{}", f.name());
    }
    assert_eq!(MAX_DATA_PAYLOAD, 1340);
    assert_eq!(
        LOSSY_DATA_HEADER_LEN, DATA_HEADER_LEN,
        "the same payload fits both"
    );
}

#[test]
fn lossy_frames_use_lossy_ids_and_check_their_ranges() {
    let ack = |ranges: Vec<(u64, u64)>| Frame::LossyAck {
        delay_us: 7,
        ranges,
    };
    let f = ack(vec![(10, 12), (4, 8)]);
    assert!(f.is_lossy() && !f.is_sequenced());
    assert!((FIRST_LOSSY_ID..=LAST_LOSSY_ID).contains(&f.to_bytes()[0]));
    assert_eq!(Frame::decode(&f.to_bytes()), Ok(f));
    for bad in [
        vec![],
        vec![(4, 4)],
        vec![(4, 8), (10, 12)],
        vec![(8, 12), (4, 8)],
        vec![(0, 1); MAX_ACK_RANGES + 1],
    ] {
        let mut b = BytesMut::new();
        b.put_u8(kind::LOSSY_ACK);
        b.put_u32(0);
        b.put_u8(bad.len() as u8);
        for (x, y) in &bad {
            b.put_u64(*x);
            b.put_u64(*y);
        }
        assert!(
            matches!(
                Frame::decode(&b.freeze()),
                Err(DecodeError::InvalidField {
                    field: "ranges" | "range count",
                    ..
                })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn data_payload_is_zero_copy() {
    let frame = Frame::Data {
        stream: StreamId::from_bytes([1; 16]),
        offset: 5,
        ack: 6,
        payload: Bytes::from(vec![9u8; MAX_DATA_PAYLOAD]),
    };
    let bytes = frame.to_bytes();
    assert_eq!(bytes.len(), MAX_PACKET_SIZE);
    let Frame::Data { payload, .. } = Frame::decode(&bytes).unwrap() else {
        panic!("not data")
    };
    assert_eq!(
        payload.as_ptr(),
        bytes[DATA_HEADER_LEN..].as_ptr(),
        "payload must share the packet's memory"
    );
}

#[test]
fn specific_errors() {
    assert_eq!(Frame::decode(&Bytes::new()), Err(DecodeError::Empty));
    assert_eq!(
        Frame::decode(&Bytes::from_static(&[0x10])),
        Err(DecodeError::NotCustomPacket(0x10))
    );
    assert_eq!(
        Frame::decode(&Bytes::from_static(&[0xBF])),
        Err(DecodeError::UnknownType(0xBF))
    );
    assert_eq!(
        Frame::decode(&Bytes::from_static(&[0xFF])),
        Err(DecodeError::NotCustomPacket(0xFF))
    );
    assert_eq!(
        Frame::decode(&Bytes::from_static(&[0xC0])),
        Err(DecodeError::UnknownType(0xC0))
    );
    assert_eq!(
        Frame::decode(&Bytes::from_static(&[kind::PING, 1, 2])),
        Err(DecodeError::Truncated("PING"))
    );
    assert_eq!(
        Frame::decode(&Bytes::from_static(&[kind::CLOSE, 0, 0, 9])),
        Err(DecodeError::TrailingBytes("CLOSE"))
    );
    assert_eq!(
        Frame::decode(&Bytes::from(vec![kind::DATA; MAX_PACKET_SIZE + 1])),
        Err(DecodeError::TooLarge(MAX_PACKET_SIZE + 1))
    );
    let mut open = vec![kind::OPEN];
    open.extend([3u8; 16]);
    open.push(7);
    open.extend(b"127.0.1");
    open.extend(22u16.to_be_bytes());
    assert_eq!(
        Frame::decode(&Bytes::from(open)),
        Err(DecodeError::InvalidTarget {
            stream: StreamId::from_bytes([3; 16]),
            error: TargetError::NumericName
        })
    );
}
