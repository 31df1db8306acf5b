//! BATCH: several lossless frames in one packet, each behind a two-byte length.

use bytes::Bytes;

use super::{kind, DecodeError, FIRST_FRAME_ID, FIRST_LOSSY_ID, MAX_PACKET_SIZE};

/// Whether a packet may travel inside a BATCH: a lossless frame of an established session
/// (not HELLO, RESUME, HELLO_ACK, HELLO_REJECT, nor a BATCH).
pub fn batchable(packet: &[u8]) -> bool {
    match packet.first() {
        Some(&k) => {
            (FIRST_FRAME_ID..FIRST_LOSSY_ID).contains(&k)
                && !matches!(
                    k,
                    kind::HELLO | kind::HELLO_ACK | kind::HELLO_REJECT | kind::RESUME | kind::BATCH
                )
        }
        None => false,
    }
}

/// The bytes a frame of `len` bytes takes inside a BATCH (its length prefix and itself).
pub const fn batched_len(len: usize) -> usize {
    2 + len
}

/// Splits a BATCH packet into the packets it carries (zero-copy), checking only its
/// structure: every length fits, none is empty, each is [`batchable`]. Each one is then
/// decoded on its own.
pub fn split_batch(packet: &Bytes) -> Result<Vec<Bytes>, DecodeError> {
    if packet.first() != Some(&kind::BATCH) {
        return Err(DecodeError::InvalidField {
            frame: "BATCH",
            field: "type",
        });
    }
    if packet.len() > MAX_PACKET_SIZE {
        return Err(DecodeError::TooLarge(packet.len()));
    }
    let mut inner = Vec::new();
    let mut pos = 1;
    while pos < packet.len() {
        let len_end = pos + 2;
        if len_end > packet.len() {
            return Err(DecodeError::Truncated("BATCH"));
        }
        let len = usize::from(u16::from_be_bytes([packet[pos], packet[pos + 1]]));
        let end = len_end + len;
        if end > packet.len() {
            return Err(DecodeError::Truncated("BATCH"));
        }
        let p = packet.slice(len_end..end);
        if !batchable(&p) {
            return Err(DecodeError::InvalidField {
                frame: "BATCH",
                field: "frame type",
            });
        }
        inner.push(p);
        pos = end;
    }
    if inner.is_empty() {
        return Err(DecodeError::InvalidField {
            frame: "BATCH",
            field: "frame count",
        });
    }
    Ok(inner)
}
