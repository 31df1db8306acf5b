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
}
