//! Exports the replacements of libsodium's `sodium_mlock` and `sodium_munlock` from every
//! executable of this crate (the `toxtun` binary, tests, benches), so that c-toxcore's
//! per-packet calls reach them: see `toxtun_transport_tox::crypto_buffers`. The flag comes
//! from `toxtun-transport-tox`'s build script (set on Linux only).

fn main() {
    if let Ok(arg) = std::env::var("DEP_TOXCORE_EXPORT_LINK_ARG") {
        println!("cargo:rustc-link-arg={arg}");
    }
}
