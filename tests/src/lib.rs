//! `toxtun-tests` holds cross-crate tests: the simulation harness and end-to-end tunnels over
//! the mock transport and over real Tox on loopback. Those arrive with the simulation,
//! transport and runtime issues; the protocol core's own tests live in `proto-core`.
