//! Targets (`host:port` that a stream asks the server to connect to) and the patterns of the
//! server's rules that allow them.
//!
//! Parsing is strict on purpose: a rule can only be trusted if every spelling of an address
//! lands on one canonical form. IP literals are parsed with the standard (strict) parsers and
//! IPv4-mapped IPv6 addresses become IPv4; host names are lower-cased, lose a trailing dot,
//! and may not look like numbers (`127.1`, `0x7f000001` and `2130706433` are what the C
//! resolver would turn into addresses, so they are refused rather than matched as names).
//! Port 0 is never a valid target.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

/// The longest host name accepted (DNS's limit).
pub const MAX_HOST_LEN: usize = 253;

/// The host part of a target: an IP address or a host name in canonical form.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Host {
    /// An IP literal (IPv4-mapped IPv6 addresses are stored as IPv4).
    Ip(IpAddr),
    /// A DNS name: lower case, no trailing dot, never number-like.
    Name(String),
}

impl Host {
    /// Parses a host: an IPv4 literal, an IPv6 literal (with or without brackets) or a name.
    pub fn parse(s: &str) -> Result<Host, TargetError> {
        let inner = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(v6) = Ipv6Addr::from_str(inner) {
            return Ok(Host::Ip(canonical_ip(IpAddr::V6(v6))));
        }
        if inner.len() != s.len() {
            return Err(TargetError::InvalidHost);
        }
        if let Ok(v4) = Ipv4Addr::from_str(s) {
            return Ok(Host::Ip(IpAddr::V4(v4)));
        }
        parse_name(s).map(Host::Name)
    }

    /// The host as it goes on the wire (IPv6 without brackets).
    pub fn to_wire(&self) -> String {
        match self {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(n) => n.clone(),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn parse_name(s: &str) -> Result<String, TargetError> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > MAX_HOST_LEN {
        return Err(TargetError::InvalidHost);
    }
    let mut last_label = "";
    for label in s.split('.') {
        if label.is_empty()
            || label.len() > 63
            || label.starts_with('-')
            || label.ends_with('-')
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(TargetError::InvalidHost);
        }
        last_label = label;
    }
    // No top-level domain starts with a digit; a name whose last label does is something the
    // C resolver may read as a number (127.1, 0x7f000001, 2130706433), i.e. an address in
    // disguise. Refuse it so that rules about names cannot be bypassed with it.
    if last_label.as_bytes()[0].is_ascii_digit() {
        return Err(TargetError::NumericName);
    }
    Ok(s.to_ascii_lowercase())
}

/// A place a stream asks to reach: host and non-zero port.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Target {
    /// The host, canonical.
    pub host: Host,
    /// The TCP port, never 0.
    pub port: u16,
}

impl Target {
    /// Builds a target from a host and port.
    pub fn new(host: Host, port: u16) -> Result<Self, TargetError> {
        if port == 0 {
            return Err(TargetError::PortZero);
        }
        Ok(Target { host, port })
    }

    /// Builds a target from the host text and port of an OPEN frame.
    pub fn from_wire(host: &str, port: u16) -> Result<Self, TargetError> {
        Target::new(Host::parse(host)?, port)
    }
}

impl FromStr for Target {
    type Err = TargetError;

    /// Parses `host:port`, `[v6]:port`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = split_host_port(s)?;
        let port = parse_port(port)?;
        Target::new(Host::parse(host)?, port)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

fn split_host_port(s: &str) -> Result<(&str, &str), TargetError> {
    let idx = if s.starts_with('[') {
        let close = s.find(']').ok_or(TargetError::InvalidHost)?;
        if s.as_bytes().get(close + 1) != Some(&b':') {
            return Err(TargetError::MissingPort);
        }
        close + 1
    } else {
        let idx = s.rfind(':').ok_or(TargetError::MissingPort)?;
        if s[..idx].contains(':') {
            // An IPv6 address must be bracketed, or its last group would be read as a port.
            return Err(TargetError::InvalidHost);
        }
        idx
    };
    Ok((&s[..idx], &s[idx + 1..]))
}

fn parse_port(s: &str) -> Result<u16, TargetError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::InvalidPort);
    }
    let n: u32 = s.parse().map_err(|_| TargetError::InvalidPort)?;
    match n {
        0 => Err(TargetError::PortZero),
        1..=65535 => Ok(n as u16),
        _ => Err(TargetError::InvalidPort),
    }
}

/// Why a target or target pattern did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// No `:port` after the host.
    #[error("missing ':port' (write host:port, or [ipv6]:port)")]
    MissingPort,
    /// The port is not a number from 1 to 65535.
    #[error("port must be a number from 1 to 65535")]
    InvalidPort,
    /// Port 0 is not a place one can connect to.
    #[error("port 0 is not a valid target")]
    PortZero,
    /// The host is neither an IP address nor a valid host name.
    #[error(
        "host must be an IPv4 address, [IPv6] address or DNS name (letters, digits, '-', '.')"
    )]
    InvalidHost,
    /// The host name reads as a number, which resolvers turn into an address.
    #[error("host name looks like a number (e.g. 127.1 or 0x7f000001); write the address in full")]
    NumericName,
    /// A pattern is malformed.
    #[error("invalid pattern: {0}")]
    InvalidPattern(&'static str),
}

/// Which hosts a rule allows.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum HostPattern {
    /// Any host (`*`).
    Any,
    /// One IP address.
    Ip(IpAddr),
    /// A network in CIDR form (`10.0.0.0/8`, `[fd00::/8]`).
    Net {
        /// The network address.
        addr: IpAddr,
        /// The prefix length.
        prefix: u8,
    },
    /// One host name, exactly (case-insensitive).
    Name(String),
    /// Every name under a domain (`*.example.com`, not `example.com` itself).
    Suffix(String),
}

impl HostPattern {
    /// Whether the pattern allows this host.
    pub fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Ip(p), Host::Ip(ip)) => p == ip,
            (HostPattern::Net { addr, prefix }, Host::Ip(ip)) => in_net(*addr, *prefix, *ip),
            (HostPattern::Name(n), Host::Name(h)) => n == h,
            (HostPattern::Suffix(s), Host::Name(h)) => {
                h.len() > s.len() + 1 && h.ends_with(s.as_str()) && {
                    let dot = h.len() - s.len() - 1;
                    h.as_bytes()[dot] == b'.'
                }
            }
            _ => false,
        }
    }
}

fn in_net(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Which ports a rule allows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PortPattern {
    /// Any port (`*`).
    Any,
    /// An inclusive range (`8000-8100`); a single port is a range of one.
    Range(u16, u16),
}

impl PortPattern {
    /// Whether the pattern allows this port.
    pub fn matches(&self, port: u16) -> bool {
        match *self {
            PortPattern::Any => true,
            PortPattern::Range(lo, hi) => (lo..=hi).contains(&port),
        }
    }
}

/// One entry of a client's target rules: `host:port` where either part may be a pattern.
///
/// Examples: `127.0.0.1:22`, `localhost:8000-8100`, `*.lan:*`, `10.0.0.0/8:443`,
/// `[::1]:22`, `[fd00::/8]:*`, `*:*`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TargetPattern {
    /// The hosts allowed.
    pub host: HostPattern,
    /// The ports allowed.
    pub port: PortPattern,
}

impl TargetPattern {
    /// Whether this pattern allows the target.
    pub fn matches(&self, target: &Target) -> bool {
        self.port.matches(target.port) && self.host.matches(&target.host)
    }
}

impl FromStr for TargetPattern {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = split_host_port(s.trim())?;
        let port = if port == "*" {
            PortPattern::Any
        } else if let Some((lo, hi)) = port.split_once('-') {
            let (lo, hi) = (parse_port(lo)?, parse_port(hi)?);
            if lo > hi {
                return Err(TargetError::InvalidPattern("port range runs backwards"));
            }
            PortPattern::Range(lo, hi)
        } else {
            let p = parse_port(port)?;
            PortPattern::Range(p, p)
        };
        let host = parse_host_pattern(host)?;
        Ok(TargetPattern { host, port })
    }
}

fn parse_host_pattern(s: &str) -> Result<HostPattern, TargetError> {
    if s == "*" {
        return Ok(HostPattern::Any);
    }
    if let Some(domain) = s.strip_prefix("*.") {
        return Ok(HostPattern::Suffix(parse_name(domain)?));
    }
    let inner = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    if let Some((addr, prefix)) = inner.split_once('/') {
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| TargetError::InvalidPattern("network address is not an IP address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| TargetError::InvalidPattern("prefix length is not a number"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(TargetError::InvalidPattern("prefix length too long"));
        }
        return Ok(HostPattern::Net { addr, prefix });
    }
    match Host::parse(s)? {
        Host::Ip(ip) => Ok(HostPattern::Ip(ip)),
        Host::Name(n) => Ok(HostPattern::Name(n)),
    }
}

impl fmt::Display for TargetPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            HostPattern::Any => f.write_str("*")?,
            HostPattern::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]")?,
            HostPattern::Ip(ip) => write!(f, "{ip}")?,
            HostPattern::Net {
                addr: IpAddr::V6(a),
                prefix,
            } => write!(f, "[{a}/{prefix}]")?,
            HostPattern::Net { addr, prefix } => write!(f, "{addr}/{prefix}")?,
            HostPattern::Name(n) => f.write_str(n)?,
            HostPattern::Suffix(s) => write!(f, "*.{s}")?,
        }
        match self.port {
            PortPattern::Any => f.write_str(":*"),
            PortPattern::Range(lo, hi) if lo == hi => write!(f, ":{lo}"),
            PortPattern::Range(lo, hi) => write!(f, ":{lo}-{hi}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        s.parse().unwrap()
    }
    fn p(s: &str) -> TargetPattern {
        s.parse().unwrap()
    }

    #[test]
    fn parses_canonical_forms() {
        assert_eq!(t("127.0.0.1:22").to_string(), "127.0.0.1:22");
        assert_eq!(t("[::1]:22").to_string(), "[::1]:22");
        assert_eq!(t("[::ffff:127.0.0.1]:22"), t("127.0.0.1:22"));
        assert_eq!(t("LocalHost.:80"), t("localhost:80"));
        assert_eq!(t("[0:0:0:0:0:0:0:1]:22"), t("[::1]:22"));
    }

    #[test]
    fn refuses_disguised_and_bad_targets() {
        for bad in [
            "127.1:22",
            "0x7f000001:22",
            "2130706433:22",
            "017700000001:22",
            "127.0.0.1:0",
            "127.0.0.1",
            "127.0.0.1:65536",
            "127.0.0.1:+22",
            "[::1%eth0]:22",
            "::1:22",
            "exa mple.com:22",
            ":22",
            "a..b:22",
            "-a.com:22",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn patterns_match_exactly_what_they_say() {
        assert!(p("127.0.0.1:22").matches(&t("127.0.0.1:22")));
        assert!(p("127.0.0.1:22").matches(&t("[::ffff:127.0.0.1]:22")));
        assert!(!p("127.0.0.1:22").matches(&t("127.0.0.1:23")));
        assert!(!p("127.0.0.1:22").matches(&t("localhost:22")));
        assert!(!p("localhost:22").matches(&t("127.0.0.1:22")));
        assert!(p("localhost:8000-8100").matches(&t("LOCALHOST:8050")));
        assert!(!p("localhost:8000-8100").matches(&t("localhost:8101")));
        assert!(p("*.lan:*").matches(&t("nas.lan:445")));
        assert!(!p("*.lan:*").matches(&t("lan:445")));
        assert!(!p("*.lan:*").matches(&t("evillan:445")));
        assert!(p("10.0.0.0/8:443").matches(&t("10.2.3.4:443")));
        assert!(!p("10.0.0.0/8:443").matches(&t("11.2.3.4:443")));
        assert!(p("[fd00::/8]:*").matches(&t("[fd12::1]:1")));
        assert!(p("*:*").matches(&t("example.com:1")));
        assert!(p("0.0.0.0/0:*").matches(&t("1.2.3.4:5")));
        assert!(!p("0.0.0.0/0:*").matches(&t("[::1]:5")));
    }

    #[test]
    fn pattern_display_round_trips() {
        for s in [
            "127.0.0.1:22",
            "[::1]:22",
            "*:*",
            "*.lan:1-2",
            "10.0.0.0/8:443",
            "[fd00::/8]:*",
            "host:9",
        ] {
            assert_eq!(p(s).to_string(), s);
            assert_eq!(p(&p(s).to_string()), p(s));
        }
        assert!("x:5-4".parse::<TargetPattern>().is_err());
        assert!("10.0.0.0/33:1".parse::<TargetPattern>().is_err());
    }
}
