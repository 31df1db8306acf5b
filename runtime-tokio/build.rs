//! Exports the replacements of libsodium's `sodium_mlock` and `sodium_munlock` from every
//! executable of this crate (the `toxtun` binary, tests, benches), so that c-toxcore's
//! per-packet calls reach them: see `toxtun_transport_tox::crypto_buffers`.

fn main() {
    println!(
        "cargo:rustc-link-arg=-Wl,--export-dynamic-symbol=sodium_mlock,\
         --export-dynamic-symbol=sodium_munlock"
    );
}
