//! The parsers of text a person types or a file holds: Tox IDs, target rules and targets,
//! and the server's TOML configuration. Any input gives a value or an error; values that
//! print must parse back to themselves.

use std::path::Path;

use toxtun_proto::{Target, TargetPattern, ToxId};
use toxtun_tokio::config::ServerConfig;

/// A Tox ID as typed (76 hex digits with nospam and checksum).
pub fn tox_id(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = text.parse::<ToxId>() {
        let printed = id.to_string();
        assert_eq!(printed.parse::<ToxId>().ok(), Some(id), "{printed}");
    }
}

/// A target rule (`host:port` pattern) and a target, and whether one allows the other.
pub fn target_rule(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (rule, target) = text.split_once('\n').unwrap_or((text, text));
    let pattern = rule.parse::<TargetPattern>();
    if let Ok(p) = &pattern {
        let printed = p.to_string();
        assert_eq!(
            printed.parse::<TargetPattern>().as_ref().ok(),
            Some(p),
            "{printed}"
        );
    }
    if let Ok(t) = target.parse::<Target>() {
        let printed = t.to_string();
        assert_eq!(
            printed.parse::<Target>().as_ref().ok(),
            Some(&t),
            "{printed}"
        );
        if let Ok(p) = &pattern {
            let _ = p.matches(&t);
        }
    }
}

/// The server's configuration file.
pub fn server_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A refusal names the file, so a person knows where to look.
    if let Err(e) = ServerConfig::parse(Path::new("fuzz.toml"), text) {
        assert!(e.to_string().contains("fuzz.toml"), "{e}");
    }
}
