//! `toxtun-transport-tox` puts toxtun on the real Tox network through c-toxcore (Debian's
//! `libtoxcore-dev`, found with pkg-config). [`ToxTransport`] runs one Tox node on its own
//! thread and implements [`toxtun_proto::Transport`]: identity (saved atomically, mode
//! 0600), bootstrap, friend requests, friend status, and lossless custom packets where
//! c-toxcore's full congestion window (`SENDQ`) is backpressure, never a dropped packet.
//!
//! The same node type serves as a bootstrap node (`toxtun bootstrap`): any Tox node with
//! UDP on is a DHT node, and with a TCP port set it is a TCP relay too.
//!
//! This crate links c-toxcore (GPL-3.0) and is therefore GPL-3.0-or-later.

mod bootstrap;
pub mod crypto_buffers;
mod ffi;
pub mod identity;
mod tox;
mod transport;

pub use bootstrap::{public_nodes, BootstrapNode, BootstrapParseError};
pub use crypto_buffers::skips_toxcore_mlock;
pub use tox::{Proxy, ToxError, ToxOptions};
pub use transport::{StartError, ToxConfig, ToxStats, ToxTransport};

/// The c-toxcore version linked, as `major.minor.patch`.
pub fn toxcore_version() -> String {
    // SAFETY: plain getters of constants.
    unsafe {
        format!(
            "{}.{}.{}",
            ffi::tox_version_major(),
            ffi::tox_version_minor(),
            ffi::tox_version_patch()
        )
    }
}
