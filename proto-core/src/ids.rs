//! Identifiers: peers (Tox public keys), full Tox IDs, streams (UUIDs) and sessions.

use core::fmt;
use core::str::FromStr;

/// A peer on the Tox network, named by its long-term public key (32 bytes).
///
/// Tox authenticates every packet by this key, so a `PeerId` attached to an input by the
/// transport is trustworthy: it is the basis of the server's allowlist.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub [u8; 32]);

impl PeerId {
    /// Length of a public key in bytes.
    pub const LEN: usize = 32;

    /// The key as bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hexadecimal digits (either case).
    pub fn from_hex(s: &str) -> Result<Self, ToxIdError> {
        let mut out = [0u8; 32];
        decode_hex_exact(s.trim(), &mut out)?;
        Ok(PeerId(out))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight digits are enough to tell peers apart in logs.
        f.write_str("PeerId(")?;
        write_hex(f, &self.0[..4])?;
        f.write_str("…)")
    }
}

impl FromStr for PeerId {
    type Err = ToxIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

/// A full Tox ID as people share it: public key, nospam and checksum (38 bytes, 76 hex digits).
///
/// The checksum is the XOR of the 2-byte words of key and nospam; a typo is caught here,
/// before a friend request goes to a stranger.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ToxId {
    /// The peer's long-term public key.
    pub public_key: PeerId,
    /// The anti-spam value that a friend request must quote.
    pub nospam: [u8; 4],
}

impl ToxId {
    /// Length of a Tox ID in bytes.
    pub const LEN: usize = 38;
    /// Length of a Tox ID in hexadecimal digits.
    pub const HEX_LEN: usize = 76;

    /// Builds an ID from a key and nospam value.
    pub fn new(public_key: PeerId, nospam: [u8; 4]) -> Self {
        ToxId { public_key, nospam }
    }

    /// The 2-byte checksum over key and nospam.
    pub fn checksum(&self) -> [u8; 2] {
        let mut sum = [0u8; 2];
        for (i, b) in self
            .public_key
            .0
            .iter()
            .chain(self.nospam.iter())
            .enumerate()
        {
            sum[i % 2] ^= b;
        }
        sum
    }

    /// The 38 bytes of the ID, as c-toxcore's `tox_self_get_address` writes them.
    pub fn to_bytes(&self) -> [u8; 38] {
        let mut out = [0u8; 38];
        out[..32].copy_from_slice(&self.public_key.0);
        out[32..36].copy_from_slice(&self.nospam);
        out[36..].copy_from_slice(&self.checksum());
        out
    }

    /// Parses 38 bytes, checking the checksum.
    pub fn from_bytes(bytes: &[u8; 38]) -> Result<Self, ToxIdError> {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&bytes[..32]);
        let mut nospam = [0u8; 4];
        nospam.copy_from_slice(&bytes[32..36]);
        let id = ToxId::new(PeerId(pk), nospam);
        let expected = id.checksum();
        let found = [bytes[36], bytes[37]];
        if expected != found {
            return Err(ToxIdError::Checksum {
                expected: u16::from_be_bytes(expected),
                found: u16::from_be_bytes(found),
            });
        }
        Ok(id)
    }
}

impl FromStr for ToxId {
    type Err = ToxIdError;

    /// Parses 76 hexadecimal digits; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 38];
        decode_hex_exact(s.trim(), &mut bytes)?;
        ToxId::from_bytes(&bytes)
    }
}

impl fmt::Display for ToxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.to_bytes())
    }
}

impl fmt::Debug for ToxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ToxId({self})")
    }
}

/// Why a Tox ID or public key did not parse. The messages are meant for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToxIdError {
    /// The text has the wrong number of digits.
    #[error(
        "expected {expected} hexadecimal digits, found {found} (a Tox ID has 76, a public key 64)"
    )]
    Length {
        /// Digits expected.
        expected: usize,
        /// Characters found.
        found: usize,
    },
    /// A character is not a hexadecimal digit.
    #[error("character {position} ({found:?}) is not a hexadecimal digit (0-9, A-F)")]
    NotHex {
        /// 1-based position of the offending character.
        position: usize,
        /// The character.
        found: char,
    },
    /// The checksum does not match: the ID was mistyped or truncated.
    #[error("checksum mismatch: the last 4 digits should be {expected:04X}, found {found:04X}; the ID was probably mistyped")]
    Checksum {
        /// Checksum computed from key and nospam.
        expected: u16,
        /// Checksum in the text.
        found: u16,
    },
}

fn decode_hex_exact(s: &str, out: &mut [u8]) -> Result<(), ToxIdError> {
    let found = s.chars().count();
    for (i, c) in s.chars().enumerate() {
        if !c.is_ascii_hexdigit() {
            return Err(ToxIdError::NotHex {
                position: i + 1,
                found: c,
            });
        }
    }
    if found != out.len() * 2 {
        return Err(ToxIdError::Length {
            expected: out.len() * 2,
            found,
        });
    }
    let digits = s.as_bytes();
    for (i, o) in out.iter_mut().enumerate() {
        *o = (hex_val(digits[2 * i]) << 4) | hex_val(digits[2 * i + 1]);
    }
    Ok(())
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02X}")?;
    }
    Ok(())
}

/// A stream: one tunnelled TCP connection, named by a random UUID that the opener draws from
/// its endpoint's seeded generator.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub uuid::Uuid);

impl StreamId {
    /// The 16 bytes of the UUID.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Builds an ID from 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        StreamId(uuid::Uuid::from_bytes(bytes))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

/// A session: one handshake between two endpoints, named by 16 random bytes the initiator
/// draws. It lets the peer tell a resumed session from a new one after a link flap.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; 16]);

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(")?;
        write_hex(f, &self.0[..4])?;
        f.write_str("…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tox_id_round_trip_and_checksum() {
        let id = ToxId::new(PeerId([7u8; 32]), [1, 2, 3, 4]);
        let text = id.to_string();
        assert_eq!(text.len(), ToxId::HEX_LEN);
        assert_eq!(text.parse::<ToxId>().unwrap(), id);
        assert_eq!(text.to_lowercase().parse::<ToxId>().unwrap(), id);
    }

    #[test]
    fn tox_id_errors_name_the_problem() {
        let id = ToxId::new(PeerId([7u8; 32]), [1, 2, 3, 4]).to_string();
        let mut typo = id.clone().into_bytes();
        typo[10] = if typo[10] == b'0' { b'1' } else { b'0' };
        let typo = String::from_utf8(typo).unwrap();
        assert!(matches!(
            typo.parse::<ToxId>(),
            Err(ToxIdError::Checksum { .. })
        ));
        let short = &id[..75];
        assert_eq!(
            short.parse::<ToxId>(),
            Err(ToxIdError::Length {
                expected: 76,
                found: 75
            })
        );
        let mut bad = id.clone();
        bad.replace_range(5..6, "g");
        assert_eq!(
            bad.parse::<ToxId>(),
            Err(ToxIdError::NotHex {
                position: 6,
                found: 'g'
            })
        );
        let msg = ToxIdError::NotHex {
            position: 6,
            found: 'g',
        }
        .to_string();
        assert!(msg.contains("character 6"), "{msg}");
    }

    #[test]
    fn peer_id_hex() {
        let pk = PeerId([0xAB; 32]);
        assert_eq!(pk.to_string().parse::<PeerId>().unwrap(), pk);
        assert!("zz".parse::<PeerId>().is_err());
    }
}
