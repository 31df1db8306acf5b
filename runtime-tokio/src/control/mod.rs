//! One process per identity, and the socket through which others use it.
//!
//! Two c-toxcore instances with one key fight over one friend link, so the process that
//! runs an identity (a `serve`, a `forward`, a `pipe`, or the background client `toxtun
//! agent` that `pipe` starts) holds an advisory [`IdentityLock`] on a file beside it, and
//! listens on a Unix socket there ([`ControlServer`], mode 0600, peers' uid checked).
//! Through it, `toxtun status` and `toxtun stop` ask the process, and a later `toxtun
//! pipe` with the same identity *attaches*: the running node opens the stream on its
//! established session and the bytes cross the socket, so the pipe starts in milliseconds
//! instead of paying Tox's start-up again (OpenSSH's ControlMaster, for Tox).
//!
//! `wire.rs` is what crosses the socket, `server.rs` the holder's side, `client.rs` the
//! side of those who ask.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toxtun_proto::{PeerId, SharedSecret};

mod client;
mod lock;
mod server;
mod wire;

pub use client::{ask, attach, hold, open, Attached, AttachedStream, Hold, Opening};
pub use lock::{create_private_dir, IdentityLock, LockError};
pub use server::{Attach, ControlHandle, ControlServer, FriendRequest, ReloadAsk};
pub use wire::{
    decode_request, encode_line, read_line, ControlError, DownFrame, Reply, Request, FRAME_HEADER,
    MAX_DATA_FRAME, MAX_REPLY, MAX_REQUEST,
};

/// Which identity of a data directory: a client's (`client.tox`) or a server's
/// (`server.tox`). Each has its own lock and socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `forward`, `pipe`, `agent`.
    Client,
    /// `serve`.
    Server,
}

impl Role {
    fn file_stem(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }

    /// The control socket of this identity in `dir`.
    pub fn socket_path(self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.sock", self.file_stem()))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.file_stem())
    }
}

/// A digest of a shared secret (or of none), so that a pipe can tell whether the running
/// client uses the secret it was given without the secret crossing the socket: a hash of
/// the secret's HMAC over two keys no peer has.
pub fn credential(secret: Option<&SharedSecret>) -> Option<String> {
    secret.map(|s| {
        let nobody = PeerId([0xff; 32]);
        let mut h = Sha256::new();
        h.update(b"toxtun control credential v1\0");
        h.update(s.hello_proof(&nobody, &nobody));
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_tell_secrets_apart_and_do_not_show_them() {
        let a = SharedSecret::new("a shared test secret").unwrap();
        let b = SharedSecret::new("another test secret").unwrap();
        let ca = credential(Some(&a)).unwrap();
        assert_eq!(ca.len(), 64);
        assert_eq!(credential(Some(&a)), Some(ca.clone()));
        assert_ne!(credential(Some(&b)), Some(ca.clone()));
        assert!(!ca.contains("736563726574"), "not the secret in hex");
        assert_eq!(credential(None), None);
    }
}
