//! Per-job dispatch overhead: an empty `u64 -> u64` job over 100,000 inputs.
//!
//! fanout's executors side by side with what a user would pick instead: rayon's
//! `ThreadPool::spawn` and the `threadpool` crate's `execute`, each with a channel back, and
//! rayon's `par_iter().map().collect()`, the chunked floor; and with the floor of a thread pool
//! fed one job at a time, a bare crossbeam channel to long-lived threads and one back.
//! The async executor is here too, both ways it runs a job: through the trait (a blocking job
//! on tokio's blocking pool, asyncio's `run_in_executor`) and natively (`map_async`, a future
//! on one event-loop thread), beside its floor, tokio's own `spawn_blocking` joined with a
//! `JoinSet`. The process pool's floor, a bare ipc-channel ping-pong, is in
//! `benches/process.rs`. Criterion reports time per job (throughput in elements). Run with
//! `cargo bench --bench overhead`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanout::{Executor, Serial, ThreadPool};
use rayon::prelude::*;

const JOBS: u64 = 100_000;

fn empty_job(x: u64) -> u64 {
    black_box(x)
}

/// Collects `(index, value)` pairs into input order, as `map` does.
fn in_order(pairs: impl Iterator<Item = (usize, u64)>) -> Vec<u64> {
    let mut out = vec![0; JOBS as usize];
    for (index, value) in pairs {
        out[index] = value;
    }
    out
}

fn overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("overhead");
    group.throughput(Throughput::Elements(JOBS));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));

    group.bench_function("serial", |b| b.iter(|| Serial::new().map(empty_job, 0..JOBS)));

    for workers in [2, 8] {
        for chunk_size in [1, 64] {
            let pool = ThreadPool::builder().workers(workers).chunk_size(chunk_size).build().expect("pool");
            let id = BenchmarkId::new(format!("fanout-thread/chunk-{chunk_size}"), workers);
            group.bench_function(id, |b| b.iter(|| pool.map(empty_job, 0..JOBS)));
        }
    }

    for workers in [2, 8] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build().expect("rayon pool");
        group.bench_function(BenchmarkId::new("rayon-spawn+channel", workers), |b| {
            b.iter(|| {
                let (sender, receiver) = crossbeam_channel::unbounded();
                for x in 0..JOBS {
                    let sender = sender.clone();
                    pool.spawn(move || {
                        let _ = sender.send((x as usize, empty_job(x)));
                    });
                }
                drop(sender);
                in_order(receiver.iter())
            })
        });

        let pool = threadpool::ThreadPool::new(workers);
        group.bench_function(BenchmarkId::new("threadpool-execute+channel", workers), |b| {
            b.iter(|| {
                let (sender, receiver) = std::sync::mpsc::channel();
                for x in 0..JOBS {
                    let sender = sender.clone();
                    pool.execute(move || {
                        let _ = sender.send((x as usize, empty_job(x)));
                    });
                }
                drop(sender);
                in_order(receiver.iter())
            })
        });

        let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build().expect("rayon pool");
        group.bench_function(BenchmarkId::new("rayon-par_iter", workers), |b| {
            b.iter(|| pool.install(|| (0..JOBS).into_par_iter().map(empty_job).collect::<Vec<u64>>()))
        });

        // The floor of fanout-thread's chunk-1 path: `workers` threads alive for the whole
        // bench, one crossbeam message per job each way.
        let (jobs, inbox) = crossbeam_channel::unbounded::<(usize, u64)>();
        let (outbox, results) = crossbeam_channel::unbounded::<(usize, u64)>();
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                let (inbox, outbox) = (inbox.clone(), outbox.clone());
                std::thread::spawn(move || {
                    for (index, x) in inbox {
                        let _ = outbox.send((index, empty_job(x)));
                    }
                })
            })
            .collect();
        group.bench_function(BenchmarkId::new("bare-crossbeam-channel", workers), |b| {
            b.iter(|| {
                for x in 0..JOBS {
                    jobs.send((x as usize, x)).expect("the threads are alive");
                }
                in_order(results.iter().take(JOBS as usize))
            })
        });
        drop(jobs);
        for thread in threads {
            thread.join().expect("a bare worker thread");
        }
    }
    group.finish();
}

/// The async executor costs microseconds a job (a hop to the event-loop thread and back per
/// job), so it gets fewer jobs than the others to keep the bench short; criterion still
/// reports time per job.
fn overhead_async(c: &mut Criterion) {
    const ASYNC_JOBS: u64 = 10_000;
    let mut group = c.benchmark_group("overhead-async");
    group.throughput(Throughput::Elements(ASYNC_JOBS));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    for workers in [2, 8] {
        // The floor of the trait path: tokio's own `spawn_blocking` on a blocking pool of
        // `workers` threads, every job spawned at once and joined with a `JoinSet`.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(workers)
            .build()
            .expect("a tokio runtime");
        group.bench_function(BenchmarkId::new("tokio-spawn_blocking+JoinSet", workers), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut set = tokio::task::JoinSet::new();
                    for x in 0..ASYNC_JOBS {
                        set.spawn_blocking(move || (x as usize, empty_job(x)));
                    }
                    let mut out = vec![0; ASYNC_JOBS as usize];
                    while let Some(Ok((index, value))) = set.join_next().await {
                        out[index] = value;
                    }
                    out
                })
            })
        });
        let executor = fanout::AsyncExecutor::new(workers).expect("async executor");
        group.bench_function(BenchmarkId::new("fanout-async/blocking-pool", workers), |b| {
            b.iter(|| executor.map(empty_job, 0..ASYNC_JOBS));
        });
        group.bench_function(BenchmarkId::new("fanout-async/map_async", workers), |b| {
            b.iter(|| executor.map_async(|x: u64| async move { empty_job(x) }, 0..ASYNC_JOBS));
        });
    }
    group.finish();
}

criterion_group!(benches, overhead, overhead_async);
criterion_main!(benches);
