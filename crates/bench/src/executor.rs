//! Which executor a run uses: the facade's [`ExecutorKind`] and [`AnyExecutor`], and the
//! harness's timed wrappers around them.
//!
//! [`dispatch`] builds the executor of a kind, runs a task on it and shuts it down, so that
//! timing a call times what a user program pays. The ticket migration builds its nested,
//! per-ticket executor the same way, so inner and outer are always the same kind.
//!
//! `Async` here is an [`AsyncExecutor`] running the blocking jobs on its blocking pool (how
//! the `cpu` scenario runs on it). The HTTP scenarios' native-async versions use
//! [`dispatch_async`] instead, which hands the task the `AsyncExecutor` itself, for its
//! futures.

use std::time::Duration;

pub use fanout::{AnyExecutor, ExecutorKind};
use fanout::{AsyncExecutor, BuildError, Executor, ProcessPool, Shutdown};
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
}

/// Builds an executor of `kind` with `workers` workers, runs `task` on it and shuts it down
/// (waiting for its jobs), so that timing a call to this function times what a user program
/// pays: start-up, the work and the shutdown.
pub fn dispatch<T>(
    kind: ExecutorKind,
    workers: usize,
    task: impl FnOnce(&AnyExecutor) -> T,
) -> Result<T, ExecError> {
    let executor = AnyExecutor::new(kind, workers).map_err(|source| ExecError::Build { kind, source })?;
    let output = task(&executor);
    executor.shutdown(Shutdown::Finish);
    Ok(output)
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
pub fn dispatch_resilient<T>(
    kind: ExecutorKind,
    workers: usize,
    resilience: Resilience,
    task: impl FnOnce(&AnyExecutor) -> T,
) -> Result<(T, Option<u64>), ExecError> {
    if kind != ExecutorKind::Process {
        return dispatch(kind, workers, task).map(|output| (output, None));
    }
    let pool = ProcessPool::builder()
        .workers(workers)
        .retry_lost(resilience.retry_lost)
        .build()
        .map_err(|source| ExecError::Build { kind, source })?;
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
        let out = dispatch_async(2, |executor| executor.map_async(|x: u64| async move { x * 2 }, [1, 2]));
        assert_eq!(out.ok(), Some(vec![Ok(2), Ok(4)]));
        assert!(matches!(dispatch_async(0, |_| ()), Err(ExecError::Build { .. })));
    }

    #[test]
    fn zero_workers_is_a_build_error() {
        let error = dispatch(ExecutorKind::Thread, 0, |executor| executor.map(double, [1])).err();
        assert!(matches!(error, Some(ExecError::Build { .. })));
    }
}
