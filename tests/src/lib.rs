//! `toxtun-tests` holds cross-crate tests and the machinery they share: the simulation
//! harness ([`sim`]), which runs scenarios of several clients and servers on the mock Tox
//! network under virtual time and checks invariants after every step. End-to-end tunnels
//! over real sockets and real Tox arrive with the runtime and transport issues.

pub mod echo;
pub mod sim;
