//! Which executor a run uses: [`ExecutorKind`], and [`dispatch`], the one place where a kind
//! becomes a concrete executor.
//!
//! The [`Executor`] trait has generic methods, so it cannot be a trait object: code that runs
//! "some executor chosen at run time" is written once as a [`WithExecutor`] task, generic over
//! `E: Executor`, and [`dispatch`] builds the executor, runs the task on it and shuts it down.
//! Adding an execution model is one match arm there. The ticket migration uses the same
//! function to build its nested, per-ticket executor, so inner and outer are always the same
//! kind.
//!
//! `Async` through [`dispatch`] is an [`AsyncExecutor`] running the blocking jobs on its
//! blocking pool (how the `cpu` scenario runs on it). The HTTP scenarios' native-async versions
//! use [`dispatch_async`] instead, which hands the task the `AsyncExecutor` itself, for its
//! futures.

use std::fmt;
use std::time::Duration;

use fanout_async::AsyncExecutor;
use fanout_core::{BuildError, Executor, Job, JobError, Payload, Serial, Shutdown};
use fanout_process::ProcessPool;
use fanout_thread::ThreadPool;
use serde::{Deserialize, Serialize};

/// The execution models of the CLI's `--executor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// Jobs run inline, one after another: the baseline (`Serial`).
    Serial,
    /// Forked worker processes (`ProcessPool`).
    Process,
    /// Worker threads (`ThreadPool`).
    Thread,
    /// A tokio runtime (`AsyncExecutor`).
    Async,
}

impl ExecutorKind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Serial => "serial",
            Self::Process => "process",
            Self::Thread => "thread",
            Self::Async => "async",
        }
    }

    /// How many jobs an executor of this kind built for `workers` runs at once.
    pub fn effective_workers(self, workers: usize) -> usize {
        match self {
            Self::Serial => 1,
            Self::Process | Self::Thread | Self::Async => workers,
        }
    }
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
    /// This execution model is not part of this build.
    #[error("the {0} executor is not part of this build; pick another --executor")]
    NotBuilt(ExecutorKind),
}

/// Work written once for every executor: [`dispatch`] hands it the executor it built.
pub trait WithExecutor {
    /// What the work produces.
    type Output;

    /// Does the work on `executor`. The executor is shut down after this returns.
    fn run<E: Executor>(self, executor: &E) -> Self::Output;
}

/// Builds an executor of `kind` with `workers` workers, runs `task` on it and shuts it down
/// (waiting for its jobs), so that timing a call to this function times what a user program
/// pays: start-up, the work and the shutdown.
pub fn dispatch<T: WithExecutor>(
    kind: ExecutorKind,
    workers: usize,
    task: T,
) -> Result<T::Output, ExecError> {
    let build = |source| ExecError::Build { kind, source };
    match kind {
        ExecutorKind::Serial => Ok(run_then_shutdown(Serial::new(), task)),
        ExecutorKind::Thread => Ok(run_then_shutdown(ThreadPool::new(workers).map_err(build)?, task)),
        ExecutorKind::Process => Ok(run_then_shutdown(ProcessPool::new(workers).map_err(build)?, task)),
        ExecutorKind::Async => Ok(run_then_shutdown(AsyncExecutor::new(workers).map_err(build)?, task)),
    }
}

/// How a run's (outer) executor copes with dying workers: `--retry-lost` and the fault drill
/// `--kill-worker-every`. Both concern worker processes, so only [`ExecutorKind::Process`]
/// uses them; the nested, per-ticket executors run without.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Resilience {
    /// How many times a task whose worker process died runs again.
    pub retry_lost: u32,
    /// Kill (`SIGKILL`) one of the pool's worker processes, picked at random, this often.
    pub kill_worker_every: Option<Duration>,
}

/// [`dispatch`] with [`Resilience`]; also returns how many tasks ran again after their
/// worker died (`None` for executors without worker processes).
pub fn dispatch_resilient<T: WithExecutor>(
    kind: ExecutorKind,
    workers: usize,
    resilience: Resilience,
    task: T,
) -> Result<(T::Output, Option<u64>), ExecError> {
    if kind != ExecutorKind::Process {
        return dispatch(kind, workers, task).map(|output| (output, None));
    }
    let pool = ProcessPool::builder()
        .workers(workers)
        .retry_lost(resilience.retry_lost)
        .build()
        .map_err(|source| ExecError::Build { kind, source })?;
    let output = std::thread::scope(|scope| {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        if let Some(every) = resilience.kill_worker_every {
            let pool = &pool;
            scope.spawn(move || kill_workers(pool, every, &stopped));
        }
        let output = task.run(&pool);
        drop(stop);
        output
    });
    let retried = pool.retried_tasks();
    pool.shutdown(Shutdown::Finish);
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

/// Builds a current-thread [`AsyncExecutor`] with at most `workers` futures in flight, runs
/// `task` on it and shuts it down (waiting for its futures): the native-async counterpart of
/// [`dispatch`], timed the same way.
pub fn dispatch_async<T>(workers: usize, task: impl FnOnce(&AsyncExecutor) -> T) -> Result<T, ExecError> {
    let executor = AsyncExecutor::new(workers)
        .map_err(|source| ExecError::Build { kind: ExecutorKind::Async, source })?;
    let output = task(&executor);
    executor.shutdown(Shutdown::Finish);
    Ok(output)
}

fn run_then_shutdown<E: Executor, T: WithExecutor>(executor: E, task: T) -> T::Output {
    let output = task.run(&executor);
    executor.shutdown(Shutdown::Finish);
    output
}

/// The most common task: `map` one job over inputs, results in input order.
#[derive(Debug)]
pub struct MapAll<J, I> {
    /// The job.
    pub job: J,
    /// Its inputs.
    pub inputs: Vec<I>,
}

impl<J, I> WithExecutor for MapAll<J, I>
where
    J: Job<I>,
    I: Payload,
    J::Output: Payload,
{
    type Output = Vec<Result<J::Output, JobError>>;

    fn run<E: Executor>(self, executor: &E) -> Self::Output {
        executor.map(self.job, self.inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u64) -> u64 {
        x * 2
    }

    #[test]
    fn dispatch_runs_every_kind() {
        for kind in [ExecutorKind::Serial, ExecutorKind::Thread, ExecutorKind::Process, ExecutorKind::Async] {
            let out = dispatch(kind, 3, MapAll { job: double, inputs: vec![1, 2, 3] });
            assert_eq!(out.ok(), Some(vec![Ok(2), Ok(4), Ok(6)]), "{kind}");
        }
    }

    #[test]
    fn dispatch_async_hands_over_the_async_executor() {
        let out = dispatch_async(2, |executor| executor.map_async(|x: u64| async move { x * 2 }, [1, 2]));
        assert_eq!(out.ok(), Some(vec![Ok(2), Ok(4)]));
        assert!(matches!(dispatch_async(0, |_| ()), Err(ExecError::Build { .. })));
    }

    #[test]
    fn zero_workers_is_a_build_error() {
        let error = dispatch(ExecutorKind::Thread, 0, MapAll { job: double, inputs: vec![1] }).err();
        assert!(matches!(error, Some(ExecError::Build { .. })));
    }
}
