//! Random scenarios on the mock network, checked step by step (see `toxtun_tests::sim`).
//!
//! * `TOXTUN_SIM_CASES=N` runs N scenarios (CI runs the default; use 100000 for a soak).
//! * `TOXTUN_SIM_SEED=<seed>:<ops>` replays one scenario exactly, as a failure prints it
//!   (`TOXTUN_SIM_FLAPPY=1` for a scenario of the flapping-links test; `TOXTUN_SIM_TRACE=1`
//!   prints its every packet and event).

use proptest::prelude::*;
use toxtun_tests::sim::{run_flappy_scenario, run_scenario};

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
    let flappy = std::env::var_os("TOXTUN_SIM_FLAPPY").is_some_and(|v| v == "1");
    let run = if flappy {
        run_flappy_scenario
    } else {
        run_scenario
    };
    match run(seed, ops) {
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

/// Issue 4's evidence: bulk transfers both ways while every link flaps at random (outages
/// from 50 ms to 60 s) — every byte arrives once and in order, and no stream ends unless a
/// node restarted or an outage outlasted the grace. At least 1,000 flaps in all.
#[test]
fn streams_survive_links_that_flap_all_the_time() {
    if std::env::var("TOXTUN_SIM_SEED").is_ok() {
        return;
    }
    let scenarios = (cases() / 5).max(20);
    let (mut flaps, mut bytes, mut streams, mut lossy, mut reverse) = (0, 0, 0, 0, 0);
    let (mut dgrams, mut echoed) = (0, 0);
    for k in 0..scenarios {
        let seed = 0xF1A9_0000 + u64::from(k);
        let ops = 12 + (k as usize % 25);
        match run_flappy_scenario(seed, ops) {
            Ok(stats) => {
                flaps += stats.flaps;
                bytes += stats.bytes_checked;
                streams += stats.streams;
                lossy += stats.lossy_packets;
                reverse += stats.reverse_streams;
                dgrams += stats.datagrams_sent;
                echoed += stats.datagrams_echoed;
            }
            Err(e) => panic!(
                "{e}\nreplay with: TOXTUN_SIM_FLAPPY=1 TOXTUN_SIM_SEED={seed}:{ops} cargo test -p toxtun-tests --test simulation"
            ),
        }
    }
    println!(
        "{scenarios} flapping scenarios: {flaps} link flaps, {streams} streams, {bytes} bytes \
         checked, {lossy} fast-path packets, {reverse} reverse streams, {dgrams} datagrams \
         sent ({echoed} echoed back)"
    );
    assert!(
        echoed >= 50,
        "UDP flows carried datagrams both ways in these scenarios too: only {echoed} echoed"
    );
    assert!(
        reverse >= 20,
        "servers opened streams toward their clients (-R) in these scenarios too: only {reverse}"
    );
    assert!(
        flaps >= 1000,
        "only {flaps} flaps across {scenarios} scenarios"
    );
    assert!(
        lossy >= 10_000,
        "the fast path ran in these scenarios too: only {lossy} lossy packets"
    );
}
