//! One job's life on the runtime: waiting for an in-flight permit, then running as a blocking
//! job on the blocking pool ([`blocking`]) or as a future on the runtime ([`future`]), and
//! delivering exactly one result ([`Deliver`]) whatever happens.
//!
//! Every task holds a [`Tracker`]: the executor's shutdown waits until the last one is gone,
//! so dropping the executor waits for queued and running jobs.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Sender;
use fanout_core::{Completer, Job, JobError, run_caught};
use tokio::sync::{Semaphore, mpsc};

use crate::catch::CatchPanic;

/// What every job of one executor shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Permits for blocking jobs: at most `workers` run on the blocking pool at once.
    pub(crate) blocking: Arc<Semaphore>,
    /// Permits for futures: at most `workers` are in flight at once.
    pub(crate) futures: Arc<Semaphore>,
    /// Set by `shutdown(Shutdown::CancelQueued)`: jobs that have not started report
    /// [`JobError::Cancelled`].
    pub(crate) cancelled: AtomicBool,
}

impl Shared {
    pub(crate) fn new(workers: usize) -> Self {
        // Tokio's semaphore holds at most `Semaphore::MAX_PERMITS` (2^61 - 1) permits.
        let permits = workers.min(Semaphore::MAX_PERMITS);
        Self {
            blocking: Arc::new(Semaphore::new(permits)),
            futures: Arc::new(Semaphore::new(permits)),
            cancelled: AtomicBool::new(false),
        }
    }

    /// Cancels every job that has not started yet.
    pub(crate) fn cancel_queued(&self) {
        self.cancelled.store(true, Ordering::Release);
        // Waiters for a permit wake up with an error and report `Cancelled`.
        self.blocking.close();
        self.futures.close();
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

/// Kept alive by every task of an executor; the executor's shutdown waits until all are gone.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    _sender: mpsc::Sender<Infallible>,
}

impl Tracker {
    /// A tracker and the receiver whose `recv` returns `None` once every clone is dropped.
    pub(crate) fn new() -> (Self, mpsc::Receiver<Infallible>) {
        let (sender, receiver) = mpsc::channel(1);
        (Self { _sender: sender }, receiver)
    }
}

/// Where a job's result goes. Implementations must answer [`JobError::Cancelled`] when they are
/// dropped without a result, so that every job yields exactly one answer on every path.
pub(crate) trait Deliver<O>: Send + 'static {
    /// Hands over the job's result.
    fn deliver(self, result: Result<O, JobError>);
}

impl<O: Send + 'static> Deliver<O> for Completer<O> {
    fn deliver(self, result: Result<O, JobError>) {
        self.complete(result);
    }
}

/// The answer of input `index` of one `map` call, sent to the caller's window.
#[derive(Debug)]
pub(crate) struct Reply<O> {
    index: usize,
    sender: Option<Sender<(usize, Result<O, JobError>)>>,
}

impl<O> Reply<O> {
    pub(crate) fn new(index: usize, sender: Sender<(usize, Result<O, JobError>)>) -> Self {
        Self { index, sender: Some(sender) }
    }

    fn send(&mut self, result: Result<O, JobError>) {
        if let Some(sender) = self.sender.take() {
            // The caller may have stopped listening (a dropped iterator): that is fine.
            let _ = sender.send((self.index, result));
        }
    }
}

impl<O: Send + 'static> Deliver<O> for Reply<O> {
    fn deliver(mut self, result: Result<O, JobError>) {
        self.send(result);
    }
}

impl<O> Drop for Reply<O> {
    fn drop(&mut self) {
        self.send(Err(JobError::Cancelled));
    }
}

/// Whether a job that has not started yet should be skipped: the executor cancelled its
/// queue, or the `map` call that launched it was abandoned (its iterator dropped).
#[derive(Debug, Clone)]
pub(crate) struct Skip {
    shared: Arc<Shared>,
    abandoned: Option<Arc<AtomicBool>>,
}

impl Skip {
    pub(crate) fn new(shared: Arc<Shared>, abandoned: Option<Arc<AtomicBool>>) -> Self {
        Self { shared, abandoned }
    }

    fn now(&self) -> bool {
        self.shared.is_cancelled() || self.abandoned.as_ref().is_some_and(|flag| flag.load(Ordering::Acquire))
    }
}

/// The task of one blocking job: it waits for a blocking permit on the runtime, then hands the
/// job to the runtime's blocking pool (asyncio's `run_in_executor`).
pub(crate) async fn blocking<J, I, D>(tracker: Tracker, skip: Skip, job: Arc<J>, input: I, done: D)
where
    J: Job<I>,
    I: Send + 'static,
    J::Output: Send + 'static,
    D: Deliver<J::Output>,
{
    let Ok(permit) = Arc::clone(&skip.shared.blocking).acquire_owned().await else {
        return done.deliver(Err(JobError::Cancelled));
    };
    if skip.now() {
        return done.deliver(Err(JobError::Cancelled));
    }
    // The task ends here; the blocking closure carries the permit and the tracker, so the
    // next job starts as soon as this one returns and shutdown waits for it.
    tokio::task::spawn_blocking(move || {
        let result = if skip.now() { Err(JobError::Cancelled) } else { run_caught(&*job, input) };
        drop(permit);
        done.deliver(result);
        drop(tracker);
    });
}

/// The task of one future: it waits for a future permit, then drives the future, turning a
/// panic into [`JobError::Panicked`].
pub(crate) async fn future<F, D>(tracker: Tracker, skip: Skip, future: F, done: D)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
    D: Deliver<F::Output>,
{
    let _tracker = tracker;
    let Ok(permit) = Arc::clone(&skip.shared.futures).acquire_owned().await else {
        return done.deliver(Err(JobError::Cancelled));
    };
    if skip.now() {
        return done.deliver(Err(JobError::Cancelled));
    }
    let result = CatchPanic::new(future).await;
    drop(permit);
    done.deliver(result);
}
