//! Bootstrap nodes: where a Tox node joins the DHT (and finds a TCP relay).

use std::fmt;
use std::str::FromStr;

use toxtun_proto::PeerId;

/// A DHT node to join through: host, UDP (and TCP relay) port, and its DHT public key.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapNode {
    /// Host name or IP address.
    pub host: String,
    /// Port (UDP for the DHT; the same TCP port is tried as a relay).
    pub port: u16,
    /// The node's DHT public key.
    pub key: [u8; 32],
}

impl fmt::Debug for BootstrapNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapNode({self})")
    }
}

impl fmt::Display for BootstrapNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}:{}", self.host, self.port, PeerId(self.key))
        } else {
            write!(f, "{}:{}:{}", self.host, self.port, PeerId(self.key))
        }
    }
}

/// Why a bootstrap node did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bootstrap node {input:?}: {reason} (write host:port:KEY with a 64-digit hex key)")]
pub struct BootstrapParseError {
    input: String,
    reason: String,
}

impl FromStr for BootstrapNode {
    type Err = BootstrapParseError;

    /// Parses `host:port:KEY` (an IPv6 host in brackets: `[::1]:33445:KEY`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| BootstrapParseError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let mut parts = s.trim().rsplitn(3, ':');
        let key = parts.next().ok_or_else(|| err("missing key"))?;
        let port = parts.next().ok_or_else(|| err("missing port"))?;
        let host = parts.next().ok_or_else(|| err("missing host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err("empty host"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| err("port must be 1-65535"))?;
        let key = PeerId::from_hex(key).map_err(|e| err(&e.to_string()))?;
        Ok(BootstrapNode {
            host: host.to_string(),
            port,
            key: key.0,
        })
    }
}

/// The public nodes shipped with toxtun (`bootstrap-nodes.txt`), for real use.
pub fn public_nodes() -> Vec<BootstrapNode> {
    include_str!("../bootstrap-nodes.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nodes_and_the_shipped_list() {
        let k = "F404ABAA1C99A9D37D61AB54898F56793E1DEF8BD46B1038B9D822E8460FAB67";
        let n: BootstrapNode = format!("127.0.0.1:33445:{k}").parse().unwrap();
        assert_eq!((n.host.as_str(), n.port), ("127.0.0.1", 33445));
        assert_eq!(n.to_string().parse::<BootstrapNode>().unwrap(), n);
        let v6: BootstrapNode = format!("[::1]:1:{k}").parse().unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string().parse::<BootstrapNode>().unwrap(), v6);
        assert!("127.0.0.1:0:00".parse::<BootstrapNode>().is_err());
        assert!(format!("127.0.0.1:x:{k}").parse::<BootstrapNode>().is_err());
        let e = "h:1:zz".parse::<BootstrapNode>().unwrap_err().to_string();
        assert!(e.contains("hexadecimal"), "{e}");
        let shipped = public_nodes();
        assert!(shipped.len() >= 5, "every shipped line parses");
        assert!(shipped.iter().all(|n| !n.host.starts_with("127.")));
    }
}
