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
