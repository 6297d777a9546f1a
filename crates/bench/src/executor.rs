//! Which executor a run uses: the facade's [`ExecutorKind`] and [`AnyExecutor`], and the
//! harness's timed wrappers around them.
//!
//! [`dispatch`] builds the executor of a kind, runs a task on it and shuts it down, so that
//! timing a call times what a user program pays. The ticket migration builds its nested,
//! per-ticket executor the same way, so inner and outer are always the same kind.
//!
//! `Redis` here is a [`fanout::RedisPool`] on the Redis of `FANOUT_REDIS_URL`: with workers of
//! its own, on a queue of its own (see `private_queue`), or, with `fanout bench --hosts K`
//! ([`Workers::Hosts`], [`dispatch_on`]), with none, its jobs served by the worker hosts that
//! the orchestrator started ([`crate::run::WorkerHosts`]).
//!
//! `Async` here is an [`AsyncExecutor`] running the blocking jobs on its blocking pool (how
//! the `cpu` scenario runs on it). The HTTP scenarios' native-async versions use
//! [`dispatch_async`] instead, which hands the task the `AsyncExecutor` itself, for its
//! futures.

use std::time::Duration;

use fanout::limit::RateLimit;
pub use fanout::{AnyExecutor, ExecutorKind};
use fanout::{AsyncExecutor, BuildError, Executor, ProcessPool, Serial, Shutdown, ThreadPool};
use serde::{Deserialize, Serialize};

/// Why [`dispatch`] could not run a task.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The executor refused to start.
    #[error("could not build the {kind} executor: {source}")]
    Build {
        /// The kind that was asked for.
        kind: ExecutorKind,
        /// What the executor said.
        #[source]
        source: BuildError,
    },
    /// Only a Redis pool has workers on other hosts (`--hosts`).
    #[error("--hosts starts worker hosts of a Redis queue: use it with --executor redis, not {kind}")]
    HostsUnsupported {
        /// The kind that was asked for.
        kind: ExecutorKind,
    },
    /// The executor has no rate limit of its own to set (`--throttle`).
    #[error("{}", unsupported_message(.kind))]
    RateLimitUnsupported {
        /// The kind that was asked for.
        kind: ExecutorKind,
    },
}

fn unsupported_message(kind: &ExecutorKind) -> &'static str {
    rate_limit_unsupported(*kind).unwrap_or("--throttle: this executor takes no rate limit")
}

/// Why `kind` takes no client rate limit (`--throttle`), or `None` when it takes one.
pub fn rate_limit_unsupported(kind: ExecutorKind) -> Option<&'static str> {
    match kind {
        ExecutorKind::Serial | ExecutorKind::Thread | ExecutorKind::Process | ExecutorKind::Async => None,
        _ => Some("--throttle: this executor has no rate limit the harness knows how to set"),
    }
}

/// Builds an executor of `kind` with `workers` workers, runs `task` on it and shuts it down
/// (waiting for its jobs), so that timing a call to this function times what a user program
/// pays: start-up, the work and the shutdown.
pub fn dispatch<T>(
    kind: ExecutorKind,
    workers: usize,
    task: impl FnOnce(&AnyExecutor) -> T,
) -> Result<T, ExecError> {
    let executor = build(kind, workers, None, None)?;
    let output = task(&executor);
    executor.shutdown(Shutdown::Finish);
    Ok(output)
}

/// The executor of `kind` with `workers` workers and, with `job_timeout`, that time limit on
/// each job (see [`Resilience::job_timeout`]); with `rate_limit`, that limit shared by all its
/// workers (serial's jobs wait for their permits on the caller's thread). `Serial` refuses a
/// time limit ([`BuildError::JobTimeoutUnsupported`]): it runs jobs on the caller's thread,
/// where nothing can stop them.
pub fn build(
    kind: ExecutorKind,
    workers: usize,
    job_timeout: Option<Duration>,
    rate_limit: Option<RateLimit>,
) -> Result<AnyExecutor, ExecError> {
    if rate_limit.is_some() && rate_limit_unsupported(kind).is_some() {
        return Err(ExecError::RateLimitUnsupported { kind });
    }
    if kind == ExecutorKind::Redis {
        return redis_pool(Some(workers), &private_queue(), workers, job_timeout);
    }
    if job_timeout.is_none() && rate_limit.is_none() {
        return AnyExecutor::new(kind, workers).map_err(|source| ExecError::Build { kind, source });
    }
    let built = match kind {
        ExecutorKind::Serial => {
            let mut builder = Serial::builder();
            if let Some(limit) = job_timeout {
                builder = builder.job_timeout(limit);
            }
            if let Some(limit) = rate_limit {
                builder = builder.rate_limit(limit);
            }
            builder.build().map(AnyExecutor::from)
        }
        ExecutorKind::Thread => {
            let mut builder = ThreadPool::builder().workers(workers);
            if let Some(limit) = job_timeout {
                builder = builder.job_timeout(limit);
            }
            if let Some(limit) = rate_limit {
                builder = builder.rate_limit(limit);
            }
            builder.build().map(AnyExecutor::from)
        }
        ExecutorKind::Process => {
            process_builder(workers, job_timeout, rate_limit).build().map(AnyExecutor::from)
        }
        ExecutorKind::Async => async_builder(workers, job_timeout, rate_limit).build().map(AnyExecutor::from),
        // A kind this harness does not know how to limit: refused, never silently unlimited.
        _ => Err(BuildError::JobTimeoutUnsupported { executor: kind.name() }),
    };
    built.map_err(|source| ExecError::Build { kind, source })
}

/// The environment variable with the Redis URL of every Redis pool and worker host of a run
/// (`fanout bench` sets it to a redis-server of its own when it is unset).
pub const REDIS_URL_ENV: &str = "FANOUT_REDIS_URL";

/// A queue name no other pool uses: `fanout-bench-PID-N`.
///
/// Why: a pool's local workers serve every entry of their queue, and the pool kills them when
/// it shuts down. On a queue shared by nested pools (the migration's inner pool per ticket),
/// one ticket's inner pool would take another's attachments, or a waiting ticket, and be
/// killed under it; the entry then waits out the visibility timeout (6 tickets: 60 s instead of
/// 0.3 s, measured). A pool whose workers are all its own has a queue of its own.
fn private_queue() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("fanout-bench-{}-{n}", std::process::id())
}

/// A [`fanout::RedisPool`] on `queue` with `local` worker processes of its own, sized for
/// `workers` in flight (`None`: its local workers).
fn redis_pool(
    workers: Option<usize>,
    queue: &str,
    local: usize,
    job_timeout: Option<Duration>,
) -> Result<AnyExecutor, ExecError> {
    let kind = ExecutorKind::Redis;
    if workers == Some(0) {
        return Err(ExecError::Build { kind, source: BuildError::ZeroWorkers });
    }
    let mut builder = fanout::RedisPool::builder_from_env(REDIS_URL_ENV)
        .queue(queue)
        .local_workers(local)
        .visibility_timeout(HOST_VISIBILITY);
    if let Some(workers) = workers {
        builder = builder.workers(workers);
    }
    if let Some(limit) = job_timeout {
        builder = builder.job_timeout(limit);
    }
    builder.build().map(AnyExecutor::from).map_err(|source| ExecError::Build { kind, source: source.into() })
}

/// The visibility timeout of the harness's Redis pools and of its worker hosts
/// (`fanout worker --visibility-ms`): the library's default.
pub const HOST_VISIBILITY: Duration = Duration::from_secs(30);

/// Where the outer executor's workers are: its own, or worker hosts serving a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers<'q> {
    /// The executor starts them (every kind).
    Own(usize),
    /// `fanout bench --hosts K`: this many serve `queue` from worker-host processes that
    /// `fanout bench` started; the [`fanout::RedisPool`] starts none.
    Hosts {
        /// Workers over all hosts (the pool's window of entries in flight).
        workers: usize,
        /// The queue the hosts serve.
        queue: &'q str,
    },
}

/// An async executor's builder with the run's limits.
fn async_builder(
    workers: usize,
    job_timeout: Option<Duration>,
    rate_limit: Option<RateLimit>,
) -> fanout::AsyncExecutorBuilder {
    let mut builder = AsyncExecutor::builder().workers(workers);
    if let Some(limit) = job_timeout {
        builder = builder.job_timeout(limit);
    }
    if let Some(limit) = rate_limit {
        builder = builder.rate_limit(limit);
    }
    builder
}

/// A process pool's builder with the run's limits.
fn process_builder(
    workers: usize,
    job_timeout: Option<Duration>,
    rate_limit: Option<RateLimit>,
) -> fanout::ProcessPoolBuilder {
    let mut builder = ProcessPool::builder().workers(workers);
    if let Some(limit) = job_timeout {
        builder = builder.job_timeout(limit);
    }
    if let Some(limit) = rate_limit {
        builder = builder.rate_limit(limit);
    }
    builder
}

/// How a run's (outer) executor copes with dying workers and stuck jobs: `--retry-lost` and
/// the fault drill `--kill-worker-every`, which concern worker processes, so only
/// [`ExecutorKind::Process`] uses them; and `--job-timeout`, for every executor but serial.
/// The nested, per-ticket executors run without: the ticket's own limit covers them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Resilience {
    /// How many times a task whose worker process died runs again.
    pub retry_lost: u32,
    /// Kill (`SIGKILL`) one of the pool's worker processes, picked at random, this often.
    pub kill_worker_every: Option<Duration>,
    /// The executor's time limit on each job (`job_timeout` on its builder): a job still
    /// running at it ends [`fanout::JobError::Expired`], its worker process killed and
    /// replaced, its future dropped or its thread abandoned and replaced.
    #[serde(default)]
    pub job_timeout: Option<Duration>,
}

/// [`dispatch`] with [`Resilience`] and, with `rate_limit`, the client's own rate limit shared
/// by every worker (`--throttle`); also returns how many tasks ran again after their worker
/// died (`None` for executors without worker processes).
pub fn dispatch_resilient<T>(
    kind: ExecutorKind,
    workers: usize,
    resilience: Resilience,
    rate_limit: Option<RateLimit>,
    task: impl FnOnce(&AnyExecutor) -> T,
) -> Result<(T, Option<u64>), ExecError> {
    dispatch_on(kind, Workers::Own(workers), resilience, rate_limit, task)
}

/// [`dispatch_resilient`] with the workers where `workers` says: with [`Workers::Hosts`]
/// (Redis only) the pool starts no worker of its own and its jobs run on the worker hosts.
pub fn dispatch_on<T>(
    kind: ExecutorKind,
    workers: Workers<'_>,
    resilience: Resilience,
    rate_limit: Option<RateLimit>,
    task: impl FnOnce(&AnyExecutor) -> T,
) -> Result<(T, Option<u64>), ExecError> {
    let workers = match workers {
        Workers::Own(workers) => workers,
        Workers::Hosts { workers, queue } => {
            if kind != ExecutorKind::Redis {
                return Err(ExecError::HostsUnsupported { kind });
            }
            if rate_limit.is_some() {
                return Err(ExecError::RateLimitUnsupported { kind });
            }
            let executor = redis_pool(Some(workers), queue, 0, resilience.job_timeout)?;
            let output = task(&executor);
            executor.shutdown(Shutdown::Finish);
            return Ok((output, None));
        }
    };
    if kind != ExecutorKind::Process {
        let executor = build(kind, workers, resilience.job_timeout, rate_limit)?;
        let output = task(&executor);
        executor.shutdown(Shutdown::Finish);
        return Ok((output, None));
    }
    let builder =
        process_builder(workers, resilience.job_timeout, rate_limit).retry_lost(resilience.retry_lost);
    let pool = builder.build().map_err(|source| ExecError::Build { kind, source })?;
    let executor = AnyExecutor::from(pool);
    let AnyExecutor::Process(pool) = &executor else { unreachable!("built from a process pool") };
    let output = std::thread::scope(|scope| {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        if let Some(every) = resilience.kill_worker_every {
            scope.spawn(move || kill_workers(pool, every, &stopped));
        }
        let output = task(&executor);
        drop(stop);
        output
    });
    let retried = pool.retried_tasks();
    executor.shutdown(Shutdown::Finish);
    Ok((output, Some(retried)))
}

/// The fault drill: every `every`, `SIGKILL` one live worker of `pool`, until `stopped`
/// disconnects.
fn kill_workers(pool: &ProcessPool, every: Duration, stopped: &std::sync::mpsc::Receiver<()>) {
    use std::hash::{BuildHasher, Hasher};
    let mut pick = std::collections::hash_map::RandomState::new().build_hasher();
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
        let pids = pool.worker_pids();
        pick.write_usize(pids.len());
        let Some(len) = u64::try_from(pids.len()).ok().filter(|&len| len > 0) else { continue };
        let index = usize::try_from(pick.finish() % len).unwrap_or(0);
        if let Some(pid) = pids.get(index).and_then(|&pid| libc::pid_t::try_from(pid).ok()) {
            // SAFETY: `kill` takes no pointers and touches no memory of this process. `pid` is
            // a worker the pool listed as live a moment ago; until the fork server reaps it
            // (after the pool hears of its death), the pid cannot be reused, so the signal
            // reaches that worker or, if it already exited, its zombie (a no-op).
            let _ = unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Builds a current-thread [`AsyncExecutor`] with at most `workers` futures in flight (and,
/// with `job_timeout`, that time limit on each future; with `rate_limit`, that limit shared by
/// its futures), runs `task` on it and shuts it down (waiting for its futures): the
/// native-async counterpart of [`dispatch`], timed the same way.
pub fn dispatch_async<T>(
    workers: usize,
    job_timeout: Option<Duration>,
    rate_limit: Option<RateLimit>,
    task: impl FnOnce(&AsyncExecutor) -> T,
) -> Result<T, ExecError> {
    let executor = async_builder(workers, job_timeout, rate_limit)
        .build()
        .map_err(|source| ExecError::Build { kind: ExecutorKind::Async, source })?;
    let output = task(&executor);
    executor.shutdown(Shutdown::Finish);
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u64) -> u64 {
        x * 2
    }

    #[test]
    fn dispatch_runs_every_kind() {
        for kind in ExecutorKind::ALL {
            let out = dispatch(kind, 3, |executor| executor.map(double, [1, 2, 3]));
            assert_eq!(out.ok(), Some(vec![Ok(2), Ok(4), Ok(6)]), "{kind}");
        }
    }

    #[test]
    fn dispatch_async_hands_over_the_async_executor() {
        let out = dispatch_async(2, None, None, |executor| {
            executor.map_async(|x: u64| async move { x * 2 }, [1, 2])
        });
        assert_eq!(out.ok(), Some(vec![Ok(2), Ok(4)]));
        assert!(matches!(dispatch_async(0, None, None, |_| ()), Err(ExecError::Build { .. })));
    }

    #[test]
    fn a_job_timeout_is_set_on_every_executor_but_serial() {
        let limit = Some(Duration::from_secs(30));
        for kind in [ExecutorKind::Thread, ExecutorKind::Process, ExecutorKind::Async] {
            let executor = build(kind, 2, limit, None);
            let executor = executor.unwrap_or_else(|error| panic!("{kind}: {error}"));
            assert_eq!(executor.map(double, [1, 2]), [Ok(2), Ok(4)], "{kind}");
            executor.shutdown(Shutdown::Finish);
        }
        let serial =
            build(ExecutorKind::Serial, 1, limit, None).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(serial.contains("cannot enforce a job time limit"), "{serial}");
        let resilience = Resilience { job_timeout: limit, ..Resilience::default() };
        let out = dispatch_resilient(ExecutorKind::Process, 2, resilience, None, |executor| {
            executor.map(double, [3])
        });
        assert_eq!(out.ok(), Some((vec![Ok(6)], Some(0))));
    }

    #[test]
    fn a_rate_limit_is_set_on_every_executor() {
        let limit = Some(RateLimit::per_second(1000.0));
        for kind in ExecutorKind::ALL {
            let out = dispatch_resilient(kind, 2, Resilience::default(), limit, |executor| {
                executor.map(double, [1, 2, 3])
            });
            assert_eq!(out.ok().map(|(results, _)| results), Some(vec![Ok(2), Ok(4), Ok(6)]), "{kind}");
        }
        let invalid = Some(RateLimit::per_second(0.0));
        let error =
            build(ExecutorKind::Serial, 1, None, invalid).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("above 0"), "{error}");
        let futures =
            dispatch_async(2, None, limit, |executor| executor.map_async(|x: u64| async move { x + 1 }, [1]));
        assert_eq!(futures.ok(), Some(vec![Ok(2)]));
    }

    #[test]
    fn zero_workers_is_a_build_error() {
        let error = dispatch(ExecutorKind::Thread, 0, |executor| executor.map(double, [1])).err();
        assert!(matches!(error, Some(ExecError::Build { .. })));
    }
}
