//! Finds c-toxcore with pkg-config (Debian: `libtoxcore-dev`).

fn main() {
    if let Err(e) = pkg_config::Config::new()
        .atleast_version("0.2.12")
        .probe("toxcore")
    {
        panic!(
            "c-toxcore not found by pkg-config ({e}).\n\
             Install it with `make deps` (or `apt-get install libtoxcore-dev pkg-config`)."
        );
    }
    // This crate's tests and benches export the replacements of `sodium_mlock` and
    // `sodium_munlock` (src/crypto_buffers.rs, Linux only), as toxtun's binaries do: the
    // build scripts of crates that depend on this one find the flag in
    // DEP_TOXCORE_EXPORT_LINK_ARG.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-tests={LINK_ARG}");
        println!("cargo:rustc-link-arg-benches={LINK_ARG}");
        println!("cargo:export_link_arg={LINK_ARG}");
    }
}

/// The linker flag that exports `sodium_mlock` and `sodium_munlock` from an executable
/// (GNU ld 2.35 or later, or lld): see src/crypto_buffers.rs.
const LINK_ARG: &str =
    "-Wl,--export-dynamic-symbol=sodium_mlock,--export-dynamic-symbol=sodium_munlock";
