//! `toxtun-netsim` is the emulated WAN that toxtun's tests and benchmarks run real
//! tunnels over: two network namespaces that it makes itself, joined by TUN devices
//! through a userspace forwarder that gives each direction a one-way delay with jitter,
//! random and burst loss, reordering, a bottleneck (rate limit and drop-tail queue), UDP
//! blocking and outages. This machine's kernel has no netem, so the path lives here, in
//! plain threads.
//!
//! * [`path`]: one direction of the path as a pure model (time in, verdict out).
//! * [`netns`]: the namespaces and TUN devices, and the check that a namespace holds only
//!   `lo` and our device and has no default route: nothing a test sends can leave it.
//! * [`wan`]: both together, forwarding.
//! * [`probe`]: the traffic: a server and clients for downloads, uploads (SHA-256
//!   checked, kernel congestion control chosen per socket) and echo round trips.
//! * [`profiles`]: the named paths of the WAN bench (broadband, lossy Wi-Fi, …).
//! * [`tunnel`]: a real toxtun tunnel across it (bootstrap node and server on one side,
//!   client on the other, processes of the `toxtun` binary the caller names).
//! * [`bench`]: the WAN bench's measurements, toxtun beside kernel TCP; [`goals`] the
//!   issue's goals, checked against them; [`trace`] and [`plot`] what it draws.

pub mod bench;
pub mod goals;
pub mod netns;
pub mod path;
pub mod plot;
pub mod probe;
pub mod profiles;
pub mod trace;
pub mod tunnel;
pub mod wan;

pub use netns::{available, Namespace, NetsimError};
pub use path::{BurstLoss, PathConfig, PathStats, QueueLimit, Reorder};
pub use wan::{Side, Wan, Way};
