//! fanout: the same jobs on four execution models behind one [`Executor`] trait.
//!
//! Switching the execution model is one line, the type that is constructed, and the compiler
//! checks that the jobs can run on it (a job that Python would fail to pickle does not build):
//!
//! ```
//! use fanout::{Executor, ProcessPool, ThreadPool};
//!
//! fn fetch(id: u64) -> String {
//!     format!("item {id}") // an HTTP call, in the articles
//! }
//!
//! let pool = ThreadPool::new(8)?; // or: ProcessPool::new(8)?, AsyncExecutor::new(8)?, Serial::new()
//! let items = pool.map(fetch, 1..=3);
//! assert_eq!(items[2].as_deref(), Ok("item 3"));
//! # let _ = ProcessPool::new;
//! # Ok::<(), fanout::BuildError>(())
//! ```
//!
//! To choose the model at run time (from a command-line flag, say), build an [`AnyExecutor`]
//! from an [`ExecutorKind`]; it implements the same trait:
//!
//! ```
//! use fanout::{AnyExecutor, Executor, ExecutorKind};
//!
//! let kind: ExecutorKind = "thread".parse()?; // "serial", "thread", "process" or "async"
//! let executor = AnyExecutor::new(kind, 4)?;
//! assert_eq!(executor.map(|x: u64| x + 1, [1, 2]), [Ok(2), Ok(3)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Users see executors, jobs, payload rules, errors, handles and shutdown modes here;
//! implementers of a new execution model find the engine in [`plumbing`]. With the `indicatif`
//! feature, `bar` draws progress bars over `map`, `imap` and `map_unordered` that count the
//! executor's completions.

use std::fmt;
use std::str::FromStr;

#[cfg(feature = "indicatif")]
pub mod bar;

pub use fanout_async::{AsyncExecutor, AsyncExecutorBuilder, Flavor, map_concurrent};
pub use fanout_core::{
    AsCompleted, BuildError, Direction, Executor, ForkServerError, Job, JobError, JobHandle, Payload,
    PayloadPart, Progress, ProgressWatch, Serial, SerialBuilder, Shutdown, Stateful, StatefulJob, Violation,
    WorkerExit, as_completed, deadline, limit, plumbing, wait_any, wait_any_timeout,
};
pub use fanout_process::{ProcessPool, ProcessPoolBuilder};
pub use fanout_redis::{RedisError, RedisPool, RedisPoolBuilder};
pub use fanout_thread::{ThreadPool, ThreadPoolBuilder};
use serde::{Deserialize, Serialize};

/// The execution models, by name: what a program reads from a flag to build an [`AnyExecutor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ExecutorKind {
    /// Jobs run inline, one after another: the baseline ([`Serial`]).
    Serial,
    /// Forked worker processes ([`ProcessPool`]).
    Process,
    /// Worker threads ([`ThreadPool`]).
    Thread,
    /// A tokio runtime ([`AsyncExecutor`]).
    Async,
    /// Worker processes on any host, through Redis Streams ([`RedisPool`]); not in
    /// [`ALL`](Self::ALL), which lists the executors that need nothing but this machine.
    Redis,
}

impl ExecutorKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [Self; 4] = [Self::Serial, Self::Process, Self::Thread, Self::Async];

    /// The kind's name: `serial`, `process`, `thread` or `async`, as [`Executor::name`] says.
    pub fn name(self) -> &'static str {
        match self {
            Self::Serial => "serial",
            Self::Process => "process",
            Self::Thread => "thread",
            Self::Async => "async",
            Self::Redis => "redis",
        }
    }

    /// How many jobs an executor of this kind built for `workers` runs at once.
    pub fn effective_workers(self, workers: usize) -> usize {
        match self {
            Self::Serial => 1,
            Self::Process | Self::Thread | Self::Async | Self::Redis => workers,
        }
    }
}

impl fmt::Display for ExecutorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an [`ExecutorKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown executor `{0}`: expected one of serial, process, thread, async, redis")]
pub struct UnknownExecutor(pub String);

impl FromStr for ExecutorKind {
    type Err = UnknownExecutor;

    fn from_str(name: &str) -> Result<Self, UnknownExecutor> {
        Self::ALL
            .into_iter()
            .chain([Self::Redis])
            .find(|kind| kind.name() == name)
            .ok_or_else(|| UnknownExecutor(name.to_owned()))
    }
}

/// One of the executors, chosen at run time; it implements [`Executor`] by passing every call
/// to the executor it holds.
///
/// The trait has generic methods, so it cannot be a trait object; this enum is how a program
/// keeps the trait while the model comes from its configuration (tokio's scheduler `Handle`
/// and crossbeam's channel flavors are built the same way).
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyExecutor {
    /// A [`Serial`] executor.
    Serial(Serial),
    /// A [`ProcessPool`].
    Process(ProcessPool),
    /// A [`ThreadPool`].
    Thread(ThreadPool),
    /// An [`AsyncExecutor`], running the trait's jobs on its blocking pool.
    Async(AsyncExecutor),
    /// A [`RedisPool`].
    Redis(RedisPool),
}

impl AnyExecutor {
    /// An executor of `kind` with `workers` workers and default settings (`Serial` ignores the
    /// count). Executors with other settings convert with `From`:
    /// `AnyExecutor::from(ProcessPool::builder().workers(8).retry_lost(2).build()?)`.
    pub fn new(kind: ExecutorKind, workers: usize) -> Result<Self, BuildError> {
        Ok(match kind {
            ExecutorKind::Serial => Self::Serial(Serial::new()),
            ExecutorKind::Process => Self::Process(ProcessPool::new(workers)?),
            ExecutorKind::Thread => Self::Thread(ThreadPool::new(workers)?),
            ExecutorKind::Async => Self::Async(AsyncExecutor::new(workers)?),
            // The URL (and its password) from `FANOUT_REDIS_URL`; `workers` local workers.
            ExecutorKind::Redis if workers == 0 => return Err(BuildError::ZeroWorkers),
            ExecutorKind::Redis => {
                Self::Redis(RedisPool::builder_from_env("FANOUT_REDIS_URL").local_workers(workers).build()?)
            }
        })
    }

    /// Which kind of executor this is.
    pub fn kind(&self) -> ExecutorKind {
        match self {
            Self::Serial(_) => ExecutorKind::Serial,
            Self::Process(_) => ExecutorKind::Process,
            Self::Thread(_) => ExecutorKind::Thread,
            Self::Async(_) => ExecutorKind::Async,
            Self::Redis(_) => ExecutorKind::Redis,
        }
    }
}

macro_rules! from_executor {
    ($($variant:ident($executor:ty)),*) => {$(
        impl From<$executor> for AnyExecutor {
            fn from(executor: $executor) -> Self {
                Self::$variant(executor)
            }
        }
    )*};
}

from_executor!(
    Serial(Serial),
    Process(ProcessPool),
    Thread(ThreadPool),
    Async(AsyncExecutor),
    Redis(RedisPool)
);

/// Calls `$call` on whichever executor `$any` holds.
macro_rules! each {
    ($any:expr, $executor:ident => $call:expr) => {
        match $any {
            AnyExecutor::Serial($executor) => $call,
            AnyExecutor::Process($executor) => $call,
            AnyExecutor::Thread($executor) => $call,
            AnyExecutor::Async($executor) => $call,
            AnyExecutor::Redis($executor) => $call,
        }
    };
}

/// The iterators of [`AnyExecutor`]'s streaming methods: the one of the executor it holds.
#[derive(Debug)]
pub enum AnyIter<S, P, T, A, R = S> {
    /// [`Serial`]'s.
    Serial(S),
    /// [`ProcessPool`]'s.
    Process(P),
    /// [`ThreadPool`]'s.
    Thread(T),
    /// [`AsyncExecutor`]'s.
    Async(A),
    /// [`RedisPool`]'s.
    Redis(R),
}

impl<S, P, T, A, R> Iterator for AnyIter<S, P, T, A, R>
where
    S: Iterator,
    P: Iterator<Item = S::Item>,
    T: Iterator<Item = S::Item>,
    A: Iterator<Item = S::Item>,
    R: Iterator<Item = S::Item>,
{
    type Item = S::Item;

    fn next(&mut self) -> Option<S::Item> {
        match self {
            Self::Serial(inner) => inner.next(),
            Self::Process(inner) => inner.next(),
            Self::Thread(inner) => inner.next(),
            Self::Async(inner) => inner.next(),
            Self::Redis(inner) => inner.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Self::Serial(inner) => inner.size_hint(),
            Self::Process(inner) => inner.size_hint(),
            Self::Thread(inner) => inner.size_hint(),
            Self::Async(inner) => inner.size_hint(),
            Self::Redis(inner) => inner.size_hint(),
        }
    }
}

impl Executor for AnyExecutor {
    fn name(&self) -> &'static str {
        each!(self, executor => executor.name())
    }

    fn workers(&self) -> usize {
        each!(self, executor => executor.workers())
    }

    fn progress_watch(&self) -> ProgressWatch {
        each!(self, executor => executor.progress_watch())
    }

    fn map_unordered<'a, J, I>(
        &'a self,
        job: J,
        inputs: impl IntoIterator<Item = I, IntoIter: 'a>,
    ) -> impl Iterator<Item = (usize, Result<J::Output, JobError>)> + 'a
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        match self {
            Self::Serial(executor) => AnyIter::Serial(executor.map_unordered(job, inputs)),
            Self::Process(executor) => AnyIter::Process(executor.map_unordered(job, inputs)),
            Self::Thread(executor) => AnyIter::Thread(executor.map_unordered(job, inputs)),
            Self::Async(executor) => AnyIter::Async(executor.map_unordered(job, inputs)),
            Self::Redis(executor) => AnyIter::Redis(executor.map_unordered(job, inputs)),
        }
    }

    fn imap<'a, J, I>(
        &'a self,
        job: J,
        inputs: impl IntoIterator<Item = I, IntoIter: 'a>,
    ) -> impl Iterator<Item = Result<J::Output, JobError>> + 'a
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        match self {
            Self::Serial(executor) => AnyIter::Serial(executor.imap(job, inputs)),
            Self::Process(executor) => AnyIter::Process(executor.imap(job, inputs)),
            Self::Thread(executor) => AnyIter::Thread(executor.imap(job, inputs)),
            Self::Async(executor) => AnyIter::Async(executor.imap(job, inputs)),
            Self::Redis(executor) => AnyIter::Redis(executor.imap(job, inputs)),
        }
    }

    fn map<J, I>(&self, job: J, inputs: impl IntoIterator<Item = I>) -> Vec<Result<J::Output, JobError>>
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        // Each executor's own `map`: the thread pool's writes results in place.
        each!(self, executor => executor.map(job, inputs))
    }

    fn submit<J, I>(&self, job: J, input: I) -> JobHandle<J::Output>
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        each!(self, executor => executor.submit(job, input))
    }

    fn shutdown(self, mode: Shutdown) {
        each!(self, executor => executor.shutdown(mode))
    }
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
