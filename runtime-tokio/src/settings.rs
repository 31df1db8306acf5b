//! The one place where the command line and the server's config file meet, and where the
//! protocol's [`EndpointConfig`] and the transport's [`ToxConfig`] are built from them.
//! To add a setting: a flag in the binary's `cli.rs`, a key in [`crate::config`] if the
//! file has it too, a field here, and its use in [`NetSettings::endpoint_config`] or
//! [`NetSettings::tox_config`].

use std::path::PathBuf;
use std::time::Duration;

use toxtun_proto::{CongestionControl, EndpointConfig, PeerId, SharedSecret};
use toxtun_transport_tox::{public_nodes, BootstrapNode, ToxConfig, ToxOptions};

use crate::config::ServerConfig;

/// How a node reaches the Tox network and keeps its sessions.
#[derive(Debug, Clone)]
pub struct NetSettings {
    /// Bootstrap nodes; empty: the public list (real use only, never in a test).
    pub bootstrap: Vec<BootstrapNode>,
    /// Find peers on the local network by broadcast.
    pub lan_discovery: bool,
    /// Use UDP (else TCP relays only).
    pub udp: bool,
    /// How long streams outlive a lost Tox link.
    pub resume_grace: Duration,
    /// Offer the fast path in the handshake.
    pub fast_path: bool,
    /// The fast path's congestion controller (for what this side sends).
    pub congestion: CongestionControl,
}

impl Default for NetSettings {
    fn default() -> Self {
        let e = EndpointConfig::new(PeerId([0; 32]));
        NetSettings {
            bootstrap: Vec::new(),
            lan_discovery: true,
            udp: true,
            resume_grace: e.resume_grace,
            fast_path: e.fast_path,
            congestion: e.congestion,
        }
    }
}

impl NetSettings {
    /// Applies a server config file over settings from the command line. The file's
    /// bootstrap nodes are added to the flags'; a switch the file sets wins over the flag's
    /// default, but neither can turn back on what the other turned off (`udp = false` or
    /// `--tcp-only`, `fast_path = false` or `--no-fast-path`).
    pub fn apply_server_file(&mut self, conf: &ServerConfig) {
        self.bootstrap.extend(conf.bootstrap.iter().cloned());
        if let Some(lan) = conf.network.lan_discovery {
            self.lan_discovery = lan;
        }
        if conf.network.udp == Some(false) {
            self.udp = false;
        }
        if let Some(secs) = conf.resume_grace_secs {
            self.resume_grace = Duration::from_secs(secs);
        }
        if conf.fast_path == Some(false) {
            self.fast_path = false;
        }
        if let Some(cc) = conf.congestion {
            self.congestion = cc;
        }
    }

    /// The transport's configuration, with its identity kept in `identity`.
    pub fn tox_config(&self, identity: PathBuf) -> ToxConfig {
        let bootstrap = if self.bootstrap.is_empty() {
            public_nodes()
        } else {
            self.bootstrap.clone()
        };
        let options = ToxOptions {
            local_discovery: self.lan_discovery,
            udp: self.udp,
            ..ToxOptions::default()
        };
        let mut c = ToxConfig::new(options, bootstrap);
        c.identity = Some(identity);
        c
    }

    /// The protocol's configuration for the node whose key is `me`, as a client proving
    /// `secret` (if any).
    pub fn endpoint_config(&self, me: PeerId, secret: Option<SharedSecret>) -> EndpointConfig {
        let mut cfg = EndpointConfig::new(me);
        cfg.client_secret = secret;
        cfg.resume_grace = self.resume_grace;
        cfg.fast_path = self.fast_path;
        cfg.congestion = self.congestion;
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_server_file_adds_nodes_and_can_only_turn_things_off() {
        let key = "A".repeat(64);
        let text = format!(
            "[session]\nresume_grace_secs = 30\nfast_path = false\n[network]\n\
             bootstrap = [\"127.0.0.1:33445:{key}\"]\nudp = false\nlan_discovery = false\n"
        );
        let conf = ServerConfig::parse(Path::new("t.toml"), &text).unwrap();
        let mut s = NetSettings::default();
        s.apply_server_file(&conf);
        assert_eq!(s.bootstrap.len(), 1);
        assert!(!s.udp && !s.fast_path && !s.lan_discovery);
        assert_eq!(s.resume_grace, Duration::from_secs(30));
        let e = s.endpoint_config(PeerId([1; 32]), None);
        assert!(!e.fast_path);
        assert_eq!(e.resume_grace, Duration::from_secs(30));
        let t = s.tox_config(PathBuf::from("x.tox"));
        assert!(!t.options.udp && !t.options.local_discovery);

        // A file that says nothing leaves the flags as they are.
        let conf = ServerConfig::parse(Path::new("t.toml"), "").unwrap();
        let mut s = NetSettings {
            udp: false,
            ..NetSettings::default()
        };
        s.apply_server_file(&conf);
        assert!(!s.udp && s.fast_path && s.lan_discovery);
    }
}
