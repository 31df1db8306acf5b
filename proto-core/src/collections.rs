//! Hash maps keyed from the endpoint's seed.
//!
//! std's `RandomState` draws keys from the operating system, so iteration order (and with
//! it the order of events) would change from run to run, and a seed would not replay a
//! run exactly. These maps take their keys from the endpoint's seeded generator instead:
//! deterministic for a given seed, and as hard to attack with colliding IDs as the seed is
//! secret (the runtime seeds from the OS).

use std::collections::{HashMap, HashSet};

use rand_chacha::rand_core::RngCore;

/// The hasher builder of every map in the core.
pub(crate) type Hasher = ahash::RandomState;
/// A map with seeded keys.
pub(crate) type Map<K, V> = HashMap<K, V, Hasher>;
/// A set with seeded keys.
pub(crate) type Set<K> = HashSet<K, Hasher>;

/// A hasher builder keyed from `rng`.
pub(crate) fn hasher(rng: &mut impl RngCore) -> Hasher {
    Hasher::with_seeds(
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
    )
}
