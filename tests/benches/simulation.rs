//! How fast the simulation harness checks scenarios: scenarios per second and checked bytes
//! per second, over a fixed set of seeds (so runs compare). Run with
//! `cargo bench -p toxtun-tests --bench simulation`.

use std::time::Instant;

use criterion::{criterion_group, Criterion};
use toxtun_tests::sim::run_scenario;

const SEEDS: std::ops::Range<u64> = 1..21;
const OPS: usize = 40;

fn scenarios(c: &mut Criterion) {
    let mut g = c.benchmark_group("simulation");
    g.sample_size(10);
    g.bench_function("20_scenarios_of_40_ops", |b| {
        b.iter(|| {
            for seed in SEEDS {
                run_scenario(seed, OPS).expect("scenario passes");
            }
        })
    });
    g.finish();
}

criterion_group!(benches, scenarios);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // The same scenarios once more, to report what they cover per second.
    #[allow(clippy::disallowed_methods)]
    let t = Instant::now();
    let mut bytes = 0;
    let mut streams = 0;
    let mut flaps = 0;
    for seed in SEEDS {
        let s = run_scenario(seed, OPS).expect("scenario passes");
        bytes += s.bytes_checked;
        streams += s.streams;
        flaps += s.flaps;
    }
    let secs = t.elapsed().as_secs_f64();
    let n = SEEDS.end - SEEDS.start;
    println!(
        "\nsimulation: {n} scenarios in {secs:.2} s = {:.1} scenarios/s; {:.1} MB checked byte by byte ({:.1} MB/s); {streams} streams, {flaps} flaps",
        n as f64 / secs,
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs
    );
}
