//! The harness's scenarios under criterion, per executor: the comparison `cargo xtask report`
//! makes, with criterion's statistics instead of a median of three.
//!
//! - `api-calls`: 100 `GET /api/items/{id}` at time scale 0.001 (1.0465 ms each) against the
//!   embedded mock API started in this process, serial and with 32 workers.
//! - `cpu`: 8 hashing jobs (~20 ms each), serial and with as many workers as cores.
//!
//! Each iteration builds the executor, runs the jobs and shuts it down, as `fanout bench`
//! times it: start-up is part of what a program pays. The jobs are the harness's own
//! (`fanout_bench::scenario`), and the executor comes from `fanout_bench::dispatch`, so an
//! executor joins this bench as soon as the harness can build it (one that cannot is skipped
//! with a note). The server's tokio threads do not matter to the process pool: its workers are
//! forked from a fresh fork server, not from this process. Run with
//! `cargo bench --bench scenarios`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanout::Executor;
use fanout::Stateful;
use fanout_bench::scenario::api_calls::FetchItem;
use fanout_bench::scenario::cpu::hash_job;
use fanout_bench::{Api, ExecutorKind, Secret, dispatch};
use fanout_mock_api::{Config, MockServer};

const KINDS: [ExecutorKind; 4] = ExecutorKind::ALL;
const TOKEN: &str = "bench-token";
const API_JOBS: u64 = 100;
const API_WORKERS: usize = 32;
const CPU_JOBS: u64 = 8;

fn identity(x: u64) -> u64 {
    x
}

/// Whether the harness can build this executor; prints why not otherwise.
fn available(kind: ExecutorKind) -> bool {
    match dispatch(kind, 1, |executor| executor.map(identity, [1])) {
        Ok(_) => true,
        Err(error) => {
            eprintln!("skipping {kind}: {error}");
            false
        }
    }
}

fn api_calls(c: &mut Criterion) {
    let server = MockServer::start(Config::default().with_time_scale(0.001).with_token(TOKEN))
        .expect("the mock API starts");
    let api = Api::new(server.url(), Secret::new(TOKEN));
    let mut group = c.benchmark_group("api-calls");
    group.throughput(Throughput::Elements(API_JOBS));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for kind in KINDS.into_iter().filter(|&kind| available(kind)) {
        let workers = kind.effective_workers(API_WORKERS);
        group.bench_function(BenchmarkId::new(kind.name(), workers), |b| {
            b.iter(|| {
                let job = Stateful(FetchItem { api: api.clone() });
                let results = dispatch(kind, workers, |executor| executor.map(job, 1..=API_JOBS))
                    .expect("the executor runs");
                assert!(results.iter().all(|result| matches!(result, Ok(Ok(_)))), "every call succeeds");
            })
        });
    }
    group.finish();
    drop(server);
}

fn cpu(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut group = c.benchmark_group("cpu");
    group.throughput(Throughput::Elements(CPU_JOBS));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    for kind in KINDS.into_iter().filter(|&kind| available(kind)) {
        let workers = kind.effective_workers(cores);
        group.bench_function(BenchmarkId::new(kind.name(), workers), |b| {
            b.iter(|| {
                let results = dispatch(kind, workers, |executor| executor.map(hash_job, 0..CPU_JOBS))
                    .expect("the executor runs");
                assert!(results.iter().all(Result::is_ok), "every job succeeds");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, api_calls, cpu);
criterion_main!(benches);
