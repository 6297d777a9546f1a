//! The process pool against its floor.
//!
//! - `round-trip`: per-job cost of an empty `u64 -> u64` job on `ProcessPool` (1 and 2 workers,
//!   chunk size 1 and 64), beside a bare ipc-channel ping-pong between this process and a
//!   forked child (one value per message, and 64 per message).
//! - `start-up`: building and dropping a 32-worker pool, beside 32 bare forks; then again with
//!   512 MiB touched in this process, which makes every bare fork copy a larger page table.
//!
//! Run with `cargo bench --bench process`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanout::{Executor, ProcessPool};
use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork};

const JOBS: u64 = 10_000;

fn empty_job(x: u64) -> u64 {
    black_box(x)
}

/// A forked child that echoes every message until its channel closes.
struct Echo<T> {
    child: Pid,
    to_child: Option<IpcSender<T>>,
    from_child: IpcReceiver<T>,
}

impl<T: serde::Serialize + serde::de::DeserializeOwned> Echo<T> {
    fn start() -> Self {
        let (to_child, child_inbox) = ipc::channel::<T>().expect("channel");
        let (child_outbox, from_child) = ipc::channel::<T>().expect("channel");
        // SAFETY: the bench's main thread forks before it starts any other thread of its own;
        // the child only echoes on its channels and leaves with `_exit`.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                drop(to_child);
                while let Ok(message) = child_inbox.recv() {
                    if child_outbox.send(message).is_err() {
                        break;
                    }
                }
                // SAFETY: the child must not run the parent's exit handlers or destructors.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => Self { child, to_child: Some(to_child), from_child },
        }
    }

    fn round_trip(&self, message: T) -> T {
        self.to_child.as_ref().expect("open").send(message).expect("send");
        self.from_child.recv().expect("recv")
    }
}

impl<T> Drop for Echo<T> {
    fn drop(&mut self) {
        self.to_child = None;
        let _ = waitpid(self.child, None);
    }
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("round-trip");
    group.throughput(Throughput::Elements(JOBS));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));

    let echo = Echo::<u64>::start();
    group.bench_function("bare-ipc-ping-pong/1-per-message", |b| {
        b.iter(|| (0..JOBS).map(|x| echo.round_trip(x)).sum::<u64>())
    });
    drop(echo);
    let echo = Echo::<Vec<u64>>::start();
    group.bench_function("bare-ipc-ping-pong/64-per-message", |b| {
        b.iter(|| {
            let batch: Vec<u64> = (0..64).collect();
            (0..JOBS / 64).map(|_| echo.round_trip(batch.clone()).len()).sum::<usize>()
        })
    });
    drop(echo);

    for workers in [1, 2] {
        for chunk_size in [1, 64] {
            let pool = ProcessPool::builder().workers(workers).chunk_size(chunk_size).build().expect("pool");
            let id = BenchmarkId::new(format!("fanout-process/chunk-{chunk_size}"), workers);
            group.bench_function(id, |b| b.iter(|| pool.map(empty_job, 0..JOBS)));
        }
    }
    group.finish();
}

fn bare_forks(count: usize) {
    let mut children = Vec::with_capacity(count);
    for _ in 0..count {
        // SAFETY: the child does nothing but `_exit`.
        match unsafe { fork() }.expect("fork") {
            // SAFETY: the child must not run the parent's exit handlers or destructors.
            ForkResult::Child => unsafe { libc::_exit(0) },
            ForkResult::Parent { child } => children.push(child),
        }
    }
    for child in children {
        let _ = waitpid(child, None);
    }
}

fn start_up(c: &mut Criterion) {
    let mut group = c.benchmark_group("start-up");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    let mut ballast: Vec<u8> = Vec::new();
    for touched_mib in [0_usize, 512] {
        // Touch every page so that it is really mapped in this process.
        ballast = vec![1_u8; touched_mib << 20];
        black_box(&ballast);
        group.bench_function(BenchmarkId::new("bare-forks-32", format!("{touched_mib}MiB")), |b| {
            b.iter(|| bare_forks(32))
        });
        group.bench_function(BenchmarkId::new("fanout-process-32", format!("{touched_mib}MiB")), |b| {
            b.iter(|| drop(ProcessPool::new(32).expect("pool")))
        });
    }
    drop(ballast);
    group.finish();
}

criterion_group!(benches, round_trip, start_up);
criterion_main!(benches);
