//! Test harnesses (the `testing` feature): the two-endpoint [`pair::Pair`] over in-memory
//! queues with a virtual clock, and the scripted application on each side. Used by this
//! crate's tests and benchmarks and by the simulation in `tests/`.

mod app;
pub mod pair;
