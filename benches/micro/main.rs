//! criterion micro-benchmarks of pgporter's hot paths (`cargo bench --bench micro`):
//! frame scanning on the relay path, the SCRAM server exchange, config parsing.
//! Each group is small and quick; `cargo test --benches` runs every function once as a smoke test.

use criterion::{criterion_group, criterion_main};

mod config;
mod scan;
mod scram;

criterion_group!(
    name = micro;
    config = criterion::Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(30);
    targets = scan::bench, scram::bench, config::bench
);
criterion_main!(micro);
