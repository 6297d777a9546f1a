//! The process pool against its floor.
//!
//! - `round-trip`: per-job cost of an empty `u64 -> u64` job on `ProcessPool` (1 and 2 workers,
//!   chunk size 1 and 64), beside a bare ipc-channel ping-pong between this process and a
//!   forked child (one value per message, and 64 per message).
//! - `start-up`: a 32-worker pool built, made to start all 32 workers (a `map` of 32 empty
//!   jobs: workers start on demand) and dropped, beside its floor, 32 bare forks plus
//!   `waitpid` done by a small helper process (as small as the fork server); with the
//!   program's fork server running (`server-up`, interleaved with the floor) and without
//!   (`cold`: the exec of a new server per pool); then beside bare forks from this bench
//!   process, with 512 MiB touched in it, which makes every bare fork copy a larger page table
//!   but not the pool's, whose workers the small server forks. `server-up/reuse` is the same
//!   pool with `reuse_workers(true)`: its workers are the previous pool's, kept by the server
//!   as spares, so it costs messages, not forks and exits.
//! - `nested`: an inner pool's build and drop inside a worker, timed there (its workers are the
//!   previous inner pool's spares, or forks by the program's server: never an exec).
//! - Last, outside criterion, `paired`: the floor and the server-up pool alternated one by one,
//!   their medians and ratio printed, for a machine whose load changes between benchmarks.
//!
//! Run with `cargo bench --bench process`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
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

/// Set in the environment of the bench's small helper process ([`SmallForker`]).
const FORKER: &str = "FANOUT_BENCH_SMALL_FORKER";

/// The floor of a pool's start-up: 32 bare forks plus `waitpid`, done by a *small* process, as
/// the fork server is one. This bench binary, started again with [`FORKER`] set, goes to
/// [`small_forker`] first thing in `main` (before criterion allocates anything): a process of
/// about the fork server's size, whose forks copy as small a page table.
struct SmallForker {
    child: std::process::Child,
    to_child: std::process::ChildStdin,
    from_child: std::io::BufReader<std::process::ChildStdout>,
}

impl SmallForker {
    fn start() -> Self {
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe().expect("the bench binary"))
            .env(FORKER, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the small forker");
        let to_child = child.stdin.take().expect("stdin");
        let from_child = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        Self { child, to_child, from_child }
    }

    /// Runs `rounds` of 32 forks plus `waitpid` in the helper; the time they took there.
    fn forks(&mut self, rounds: u64) -> Duration {
        self.ask("plain", rounds)
    }

    /// Runs `rounds` of [`held_forks`]`(32)` in the helper; the time they took there.
    fn held_forks(&mut self, rounds: u64) -> Duration {
        self.ask("held", rounds)
    }

    fn ask(&mut self, what: &str, rounds: u64) -> Duration {
        use std::io::{BufRead, Write};
        writeln!(self.to_child, "{what} {rounds}").expect("ask the forker");
        let mut line = String::new();
        self.from_child.read_line(&mut line).expect("the forker answers");
        Duration::from_nanos(line.trim().parse().expect("nanoseconds"))
    }
}

impl Drop for SmallForker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lifecycle of a pool's workers with nothing else: `count` forks, each child answering
/// one byte over a socket of its own and then waiting until its socket closes, as a worker
/// runs its job and waits for the next; then every socket closes at once (the pool's drop)
/// and every child is reaped. Each child closes the sockets it inherited from the children
/// forked before it, as a worker closes what it inherits from its fork server.
fn held_forks(count: usize) {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let mut children: Vec<(Pid, UnixStream)> = Vec::with_capacity(count);
    for _ in 0..count {
        let (mut ours, mut theirs) = UnixStream::pair().expect("socketpair");
        // SAFETY: the helper is single-threaded; the child uses its socket and leaves with
        // `_exit`.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                drop(children);
                drop(ours);
                let mut byte = [0_u8; 1];
                if theirs.read_exact(&mut byte).is_ok() && theirs.write_all(&byte).is_ok() {
                    // Blocks until the parent closes its end.
                    let _ = theirs.read(&mut byte);
                }
                // SAFETY: the child must not run the parent's exit handlers or destructors.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                ours.write_all(b"x").expect("a job");
                children.push((child, ours));
            }
        }
    }
    for (_, socket) in &mut children {
        let mut byte = [0_u8; 1];
        socket.read_exact(&mut byte).expect("its answer");
    }
    let pids: Vec<Pid> = children.into_iter().map(|(pid, _)| pid).collect();
    for pid in pids {
        let _ = waitpid(pid, None);
    }
}

/// The helper's life: for each line `plain n` or `held n` on stdin, `n` rounds of
/// [`bare_forks`]`(32)` or [`held_forks`]`(32)`, timed here, answered in nanoseconds.
fn small_forker() {
    use std::io::{BufRead, Write};
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines().map_while(Result::ok) {
        let (what, rounds) = line.split_once(' ').unwrap_or(("plain", "0"));
        let rounds: u64 = rounds.trim().parse().unwrap_or(0);
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            match what {
                "held" => held_forks(32),
                _ => bare_forks(32),
            }
        }
        let _ = writeln!(stdout, "{}", start.elapsed().as_nanos());
        let _ = stdout.flush();
    }
}

/// What the target compares: a 32-worker pool that really starts its 32 workers (a `map` of
/// 32 empty jobs, one per worker, since workers start on demand), then drops.
fn pool_of_32() {
    let pool = ProcessPool::new(32).expect("pool");
    black_box(pool.map(empty_job, 0..32));
    drop(pool);
}

/// [`pool_of_32`] with `reuse_workers(true)`: its workers are the previous pool's, if any.
fn pool_of_32_reused() {
    let pool = ProcessPool::builder().workers(32).reuse_workers(true).build().expect("pool");
    black_box(pool.map(empty_job, 0..32));
    drop(pool);
}

fn start_up(c: &mut Criterion) {
    let mut group = c.benchmark_group("start-up");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(6));

    // Cold: the program's first pool, which starts the fork server (an exec and a handshake);
    // no other pool is alive, so each drop ends the server too.
    group.bench_function("fanout-process-32/cold", |b| b.iter(pool_of_32));

    // The floor and the pool one after the other, in the same run (`paired` below alternates
    // them one by one, for a ratio that a changing load does not skew).
    let mut forker = SmallForker::start();
    // The program's fork server runs (another pool holds it), as it does for every pool but
    // the first of a program that keeps one, and for every pool nested in a worker.
    let server_up = ProcessPool::new(1).expect("pool");
    group.bench_function("bare-forks-32/small-process", |b| b.iter_custom(|rounds| forker.forks(rounds)));
    group.bench_function("bare-forks-32/small-process/held", |b| {
        b.iter_custom(|rounds| forker.held_forks(rounds))
    });
    group.bench_function("fanout-process-32/server-up", |b| b.iter(pool_of_32));
    group.bench_function("fanout-process-32/new-drop", |b| {
        b.iter(|| drop(ProcessPool::new(32).expect("pool")))
    });
    // The same pool with `reuse_workers(true)`: after the first round its 32 workers come back
    // as spares of the server, so a pool costs messages instead of forks and exits (what a
    // nested pool does by default, and what a program that builds pool after pool can ask for).
    group.bench_function("fanout-process-32/server-up/reuse", |b| b.iter(pool_of_32_reused));

    drop(server_up);
    drop(forker);
    group.finish();

    // Forking from a large process is slower (its page table is copied); the pool's workers are
    // forked by the small server, whatever the size of the caller.
    let mut group = c.benchmark_group("start-up-ballast");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    let server_up = ProcessPool::new(1).expect("pool");
    let mut ballast: Vec<u8> = Vec::new();
    for touched_mib in [0_usize, 512] {
        // Touch every page so that it is really mapped in this process.
        ballast = vec![1_u8; touched_mib << 20];
        black_box(&ballast);
        group.bench_function(
            BenchmarkId::new("bare-forks-32/bench-process", format!("{touched_mib}MiB")),
            |b| b.iter(|| bare_forks(32)),
        );
        group.bench_function(
            BenchmarkId::new("fanout-process-32/server-up", format!("{touched_mib}MiB")),
            |b| b.iter(pool_of_32),
        );
    }
    drop(ballast);
    drop(server_up);
    group.finish();
}

/// In a worker: `rounds` times build a pool of `workers`, `map` one empty job per worker
/// (none with `workers == 0`: one worker, started at build) and drop it; the time it took.
fn inner_pools((rounds, workers): (u64, u64)) -> u64 {
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        let inner = ProcessPool::new(workers.max(1) as usize).expect("an inner pool");
        if workers > 0 {
            black_box(inner.map(empty_job, 0..workers));
        }
        drop(inner);
    }
    start.elapsed().as_nanos() as u64
}

fn nested(c: &mut Criterion) {
    let mut group = c.benchmark_group("nested");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));
    let outer = ProcessPool::new(1).expect("pool");
    // An inner pool's build plus drop, timed inside the worker (target: at most 1 ms).
    for (name, workers) in [("build-drop", 0), ("build-map-4-drop", 4)] {
        group.bench_function(BenchmarkId::new("inner-pool-in-a-worker", name), |b| {
            b.iter_custom(|rounds| {
                let nanos = outer.submit(inner_pools, (rounds, workers)).wait().expect("inner pools");
                Duration::from_nanos(nanos)
            })
        });
    }
    group.finish();
}

fn main() {
    if std::env::var_os(FORKER).is_some() {
        small_forker();
        return;
    }
    round_trip(&mut criterion_config());
    start_up(&mut criterion_config());
    nested(&mut criterion_config());
    Criterion::default().configure_from_args().final_summary();
    if !std::env::args().any(|arg| arg == "--list" || arg == "--test") {
        paired(101);
    }
}

/// The start-up target's two sides alternated `rounds` times; prints both medians and the
/// ratio of the pool to its floor.
fn paired(rounds: usize) {
    let mut forker = SmallForker::start();
    let server_up = ProcessPool::new(1).expect("pool");
    let [mut floor, mut held, mut pool, mut reused] = std::array::from_fn(|_| Vec::with_capacity(rounds));
    let timed = |run: fn()| {
        let start = std::time::Instant::now();
        run();
        start.elapsed()
    };
    // The first reusing pool forks; every later one takes the previous one's spares.
    pool_of_32_reused();
    for _ in 0..rounds {
        floor.push(forker.forks(1));
        held.push(forker.held_forks(1));
        pool.push(timed(pool_of_32));
        reused.push(timed(pool_of_32_reused));
    }
    drop(server_up);
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let (floor, held, pool, reused) =
        (median(&mut floor), median(&mut held), median(&mut pool), median(&mut reused));
    eprintln!(
        "start-up/paired ({rounds} alternations, medians): bare-forks-32/small-process {floor:?}, \
         bare-forks-32/small-process/held {held:?}, fanout-process-32/server-up {pool:?}, \
         fanout-process-32/server-up/reuse {reused:?}; pool/bare {:.2}, pool/held {:.2}, reuse/bare {:.2}",
        pool.as_secs_f64() / floor.as_secs_f64(),
        pool.as_secs_f64() / held.as_secs_f64(),
        reused.as_secs_f64() / floor.as_secs_f64()
    );
}

fn criterion_config() -> Criterion {
    Criterion::default().configure_from_args()
}
