//! `toxtun-transport-mock` will hold an in-memory, seeded, virtual-time network of Tox-like
//! nodes (latency, bandwidth, send-queue capacity, link flaps, partitions, friend requests)
//! for the simulation harness. It is filled in by the simulation issue; until then the
//! protocol core's own two-endpoint harness (`toxtun_proto::pair`, feature `testing`)
//! covers deterministic testing. This crate exports nothing yet.
