//! `toxtun-tokio` will drive a protocol [`toxtun_proto::Endpoint`] with tokio: local TCP
//! listeners, target connectors, stdio, timers and a transport, plus the `toxtun` binary.
//! It is filled in by the runtime issue and exports nothing yet.
