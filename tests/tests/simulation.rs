//! Random scenarios on the mock network, checked step by step (see `toxtun_tests::sim`).
//!
//! * `TOXTUN_SIM_CASES=N` runs N scenarios (CI runs the default; use 100000 for a soak).
//! * `TOXTUN_SIM_SEED=<seed>:<ops>` replays one scenario exactly, as a failure prints it.

use proptest::prelude::*;
use toxtun_tests::sim::run_scenario;

fn cases() -> u32 {
    std::env::var("TOXTUN_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

fn check(seed: u64, ops: usize) -> Result<(), TestCaseError> {
    run_scenario(seed, ops).map(|_| ()).map_err(|e| {
        TestCaseError::fail(format!(
            "{e}\nreplay with: TOXTUN_SIM_SEED={seed}:{ops} cargo test -p toxtun-tests --test simulation"
        ))
    })
}

#[test]
fn replay_one_scenario_from_the_environment() {
    let Ok(spec) = std::env::var("TOXTUN_SIM_SEED") else {
        return;
    };
    let (seed, ops) = spec
        .split_once(':')
        .map(|(s, o)| (s.parse().expect("seed"), o.parse().expect("ops")))
        .unwrap_or_else(|| (spec.parse().expect("seed"), 40));
    match run_scenario(seed, ops) {
        Ok(stats) => println!("scenario {seed}:{ops} passed: {stats:?}"),
        Err(e) => panic!("scenario {seed}:{ops} failed: {e}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    /// Scenarios shrink toward fewer operations and smaller seeds when they fail.
    #[test]
    fn random_scenarios_keep_every_invariant(seed in any::<u64>(), ops in 1usize..40) {
        if std::env::var("TOXTUN_SIM_SEED").is_ok() {
            return Ok(());
        }
        check(seed, ops)?;
    }
}
