//! A SOCKS server's side of the handshake (RFC 1928 version 5 with no authentication,
//! and version 4a), for `toxtun forward -D`: what a client asks to reach becomes a
//! stream's target, resolved by name on the server's side as `curl --socks5-hostname`
//! expects, and the stream's outcome becomes the SOCKS reply.
//!
//! The parsers are sans-IO (bytes in, a request or "need more" out), so that they are
//! tested on any input; [`accept`] drives them over a socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use toxtun_proto::{Host, StreamCode, Target, TargetError};

/// The longest handshake a client may send (greeting and request together).
const MAX_HANDSHAKE: usize = 1024;

/// The SOCKS version a client spoke, which its reply must use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// SOCKS 4 or 4a.
    V4,
    /// SOCKS 5.
    V5,
}

/// Why a SOCKS handshake failed. The client has been told, where SOCKS has a word for it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocksError {
    /// Not SOCKS 4 or 5.
    #[error("not a SOCKS 4 or 5 client (first byte {0:#04x})")]
    BadVersion(u8),
    /// A SOCKS 5 client that offered no method we take (we take only "no authentication").
    #[error("the SOCKS client offers no method without authentication")]
    NoAcceptableMethod,
    /// Not CONNECT (BIND, UDP ASSOCIATE).
    #[error("SOCKS command {0} is not supported (only CONNECT)")]
    UnsupportedCommand(u8),
    /// An address type other than IPv4, IPv6 or a name.
    #[error("SOCKS address type {0} is not supported")]
    UnsupportedAddressType(u8),
    /// A name or port that is no target.
    #[error("SOCKS target: {0}")]
    BadTarget(#[from] TargetError),
    /// A malformed request (a name that is not UTF-8, a SOCKS 4 user ID without its end).
    #[error("malformed SOCKS request: {0}")]
    Malformed(&'static str),
    /// The client sent more than a handshake can hold.
    #[error("SOCKS handshake longer than {MAX_HANDSHAKE} bytes")]
    TooLong,
    /// The socket failed or closed.
    #[error("SOCKS client: {0}")]
    Io(#[from] std::io::Error),
}

/// What a parser made of the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// More bytes are needed.
    Incomplete,
    /// Done: the value, and how many bytes it took.
    Done(T, usize),
}

/// A SOCKS 5 greeting: `VER NMETHODS METHODS…`. Done(true) if "no authentication" (0)
/// is among the methods.
pub fn parse_greeting(buf: &[u8]) -> Result<Parsed<bool>, SocksError> {
    let [_, n, ..] = buf else {
        return Ok(Parsed::Incomplete);
    };
    let end = 2 + usize::from(*n);
    match buf.get(2..end) {
        None => Ok(Parsed::Incomplete),
        Some(methods) => Ok(Parsed::Done(methods.contains(&0), end)),
    }
}

/// A SOCKS 5 request: `VER CMD RSV ATYP ADDR PORT`.
pub fn parse_request5(buf: &[u8]) -> Result<Parsed<Target>, SocksError> {
    let [_, cmd, _, atyp, rest @ ..] = buf else {
        return Ok(Parsed::Incomplete);
    };
    let (host, len) = match *atyp {
        1 => match rest.get(..4) {
            None => return Ok(Parsed::Incomplete),
            Some(a) => (
                Host::Ip(IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))),
                4,
            ),
        },
        4 => match rest.get(..16) {
            None => return Ok(Parsed::Incomplete),
            Some(a) => {
                let mut b = [0u8; 16];
                b.copy_from_slice(a);
                (Host::Ip(IpAddr::V6(Ipv6Addr::from(b)).to_canonical()), 16)
            }
        },
        3 => {
            let Some(&n) = rest.first() else {
                return Ok(Parsed::Incomplete);
            };
            match rest.get(1..1 + usize::from(n)) {
                None => return Ok(Parsed::Incomplete),
                Some(name) => {
                    let name =
                        std::str::from_utf8(name).map_err(|_| SocksError::Malformed("name"))?;
                    (Host::parse(name)?, 1 + usize::from(n))
                }
            }
        }
        other => return Err(SocksError::UnsupportedAddressType(other)),
    };
    let Some(p) = rest.get(len..len + 2) else {
        return Ok(Parsed::Incomplete);
    };
    if *cmd != 1 {
        return Err(SocksError::UnsupportedCommand(*cmd));
    }
    let port = u16::from_be_bytes([p[0], p[1]]);
    Ok(Parsed::Done(Target::new(host, port)?, 4 + len + 2))
}

/// A SOCKS 4 or 4a request: `VER CMD PORT IP USERID\0 [NAME\0]` (4a when IP is 0.0.0.x,
/// x ≠ 0).
pub fn parse_request4(buf: &[u8]) -> Result<Parsed<Target>, SocksError> {
    let [_, cmd, p0, p1, a, b, c, d, rest @ ..] = buf else {
        return Ok(Parsed::Incomplete);
    };
    let Some(user_end) = rest.iter().position(|&x| x == 0) else {
        return if rest.len() > 255 {
            Err(SocksError::Malformed("SOCKS 4 user ID"))
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let mut used = 8 + user_end + 1;
    let host = if [*a, *b, *c] == [0, 0, 0] && *d != 0 {
        let names = &rest[user_end + 1..];
        let Some(name_end) = names.iter().position(|&x| x == 0) else {
            return if names.len() > 255 {
                Err(SocksError::Malformed("SOCKS 4a name"))
            } else {
                Ok(Parsed::Incomplete)
            };
        };
        used += name_end + 1;
        let name =
            std::str::from_utf8(&names[..name_end]).map_err(|_| SocksError::Malformed("name"))?;
        Host::parse(name)?
    } else {
        Host::Ip(IpAddr::V4(Ipv4Addr::new(*a, *b, *c, *d)))
    };
    if *cmd != 1 {
        return Err(SocksError::UnsupportedCommand(*cmd));
    }
    Ok(Parsed::Done(
        Target::new(host, u16::from_be_bytes([*p0, *p1]))?,
        used,
    ))
}

/// The SOCKS 5 reply code for a stream's refusal (RFC 1928 §6).
pub fn reply_code(code: StreamCode) -> u8 {
    match code {
        StreamCode::TargetNotAllowed => 0x02,
        StreamCode::TargetUnreachable | StreamCode::InvalidTarget => 0x04,
        StreamCode::TargetRefused => 0x05,
        StreamCode::TargetTimeout | StreamCode::OpenTimeout => 0x06,
        _ => 0x01,
    }
}

/// Reads a client's handshake from `sock` and returns the target it asks for. A client
/// we cannot serve is told so in its own version's words before the error returns.
pub async fn accept<S>(sock: &mut S) -> Result<(Version, Target), SocksError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(64);
    let version = match read_more(sock, &mut buf).await? {
        4 => Version::V4,
        5 => Version::V5,
        v => return Err(SocksError::BadVersion(v)),
    };
    if version == Version::V5 {
        let used = loop {
            match parse_greeting(&buf)? {
                Parsed::Done(true, used) => break used,
                Parsed::Done(false, _) => {
                    sock.write_all(&[5, 0xff]).await?;
                    return Err(SocksError::NoAcceptableMethod);
                }
                Parsed::Incomplete => read_more(sock, &mut buf).await?,
            };
        };
        buf.drain(..used);
        sock.write_all(&[5, 0]).await?;
    }
    let parse = match version {
        Version::V4 => parse_request4,
        Version::V5 => parse_request5,
    };
    loop {
        match parse(&buf) {
            Ok(Parsed::Done(target, _)) => return Ok((version, target)),
            Ok(Parsed::Incomplete) => {
                read_more(sock, &mut buf).await?;
            }
            Err(e) => {
                let code = match &e {
                    SocksError::UnsupportedCommand(_) => 0x07,
                    SocksError::UnsupportedAddressType(_) => 0x08,
                    _ => 0x01,
                };
                let _ = reply(sock, version, Err(code)).await;
                return Err(e);
            }
        }
    }
}

/// Sends the reply: success, or a SOCKS 5 reply code (SOCKS 4 has one word for failure).
pub async fn reply<S>(sock: &mut S, version: Version, result: Result<(), u8>) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    match version {
        // The bound address is not ours to tell (it is on the server's side): zeros, as
        // OpenSSH's -D answers.
        Version::V5 => {
            let rep = result.err().unwrap_or(0);
            sock.write_all(&[5, rep, 0, 1, 0, 0, 0, 0, 0, 0]).await
        }
        Version::V4 => {
            let rep = if result.is_ok() { 0x5a } else { 0x5b };
            sock.write_all(&[0, rep, 0, 0, 0, 0, 0, 0]).await
        }
    }
}

/// Reads at least one more byte into `buf`; returns the first byte of `buf`.
async fn read_more<S: AsyncRead + Unpin>(
    sock: &mut S,
    buf: &mut Vec<u8>,
) -> Result<u8, SocksError> {
    if buf.len() >= MAX_HANDSHAKE {
        return Err(SocksError::TooLong);
    }
    let mut chunk = [0u8; 256];
    let n = sock.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(buf[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn socks5_requests_of_each_address_type() {
        let t = |b: &[u8]| match parse_request5(b).unwrap() {
            Parsed::Done(t, n) => (t.to_string(), n),
            Parsed::Incomplete => panic!("incomplete"),
        };
        assert_eq!(
            t(&[5, 1, 0, 1, 127, 0, 0, 1, 0, 80]),
            ("127.0.0.1:80".into(), 10)
        );
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0x1f, 0x90]);
        assert_eq!(t(&v6), ("[::1]:8080".into(), 22));
        let mut name = vec![5, 1, 0, 3, 7];
        name.extend_from_slice(b"nas.lan");
        name.extend_from_slice(&[0, 22]);
        assert_eq!(t(&name), ("nas.lan:22".into(), 14));
        for cut in 0..name.len() {
            assert_eq!(parse_request5(&name[..cut]).unwrap(), Parsed::Incomplete);
        }
        assert!(matches!(
            parse_request5(&[5, 2, 0, 1, 1, 2, 3, 4, 0, 80]),
            Err(SocksError::UnsupportedCommand(2))
        ));
        assert!(matches!(
            parse_request5(&[5, 1, 0, 9, 1]),
            Err(SocksError::UnsupportedAddressType(9))
        ));
        assert!(matches!(
            parse_request5(&[5, 1, 0, 1, 1, 2, 3, 4, 0, 0]),
            Err(SocksError::BadTarget(_))
        ));
    }

    #[test]
    fn socks4_and_4a_requests() {
        let r = parse_request4(&[4, 1, 0, 80, 10, 0, 0, 1, b'u', 0]).unwrap();
        assert_eq!(r, Parsed::Done("10.0.0.1:80".parse().unwrap(), 10));
        let mut a = vec![4, 1, 0, 22, 0, 0, 0, 1, 0];
        a.extend_from_slice(b"nas.lan\0");
        assert_eq!(
            parse_request4(&a).unwrap(),
            Parsed::Done("nas.lan:22".parse().unwrap(), a.len())
        );
        assert_eq!(
            parse_request4(&a[..a.len() - 1]).unwrap(),
            Parsed::Incomplete
        );
    }

    #[test]
    fn greetings_and_reply_codes() {
        assert_eq!(
            parse_greeting(&[5, 2, 2, 0]).unwrap(),
            Parsed::Done(true, 4)
        );
        assert_eq!(parse_greeting(&[5, 1, 2]).unwrap(), Parsed::Done(false, 3));
        assert_eq!(parse_greeting(&[5, 2, 0]).unwrap(), Parsed::Incomplete);
        assert_eq!(reply_code(StreamCode::TargetNotAllowed), 0x02);
        assert_eq!(reply_code(StreamCode::TargetRefused), 0x05);
        assert_eq!(reply_code(StreamCode::TargetUnreachable), 0x04);
        assert_eq!(reply_code(StreamCode::TargetTimeout), 0x06);
        assert_eq!(reply_code(StreamCode::TooManyStreams), 0x01);
    }

    #[tokio::test]
    async fn a_client_asking_for_a_password_is_told_no_method() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&[5, 1, 2]).await.unwrap();
        let e = accept(&mut server).await.unwrap_err();
        assert!(matches!(e, SocksError::NoAcceptableMethod), "{e}");
        let mut answer = [0u8; 2];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer, [5, 0xff]);
    }

    #[tokio::test]
    async fn a_bind_request_is_told_command_not_supported() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client
            .write_all(&[5, 1, 0, 5, 2, 0, 1, 127, 0, 0, 1, 0, 80])
            .await
            .unwrap();
        assert!(matches!(
            accept(&mut server).await,
            Err(SocksError::UnsupportedCommand(2))
        ));
        let mut answer = [0u8; 12];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer[..4], &[5, 0, 5, 0x07]);
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for parse in [parse_request5, parse_request4] {
                if let Ok(Parsed::Done(_, used)) = parse(&bytes) {
                    prop_assert!(used <= bytes.len());
                }
            }
            if let Ok(Parsed::Done(_, used)) = parse_greeting(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }
    }
}
