//! One chunk of futures' life on the runtime ([`futures`]): waiting for an in-flight permit,
//! then running on the runtime under the job time limit, if any, and answering its [`Reply`]
//! (fanout-core's exactly-once answer) whatever happens, a kill included. What every job of an
//! executor shares ([`Shared`], [`Tracker`]).
//!
//! Every task holds a [`Tracker`]: the executor's shutdown waits until the last one is gone,
//! so dropping the executor waits for queued and running jobs. `Shutdown::Kill` does not wait:
//! it wakes the event loop ([`Shared::kill`]), which shuts the runtime down at once; the
//! runtime drops every task, and a task dropped while its futures ran answers
//! [`JobError::Killed`] ([`Answer`]'s `Drop`), one still waiting for its permit `Cancelled`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use fanout_core::JobError;
use fanout_core::limit::{Gate, PermitHandle, Poll};
use fanout_core::plumbing::{Batch, ProgressCounters, Reply};
use tokio::sync::{Notify, Semaphore, mpsc};

use crate::catch::CatchPanic;

/// What every job of one executor shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Permits for futures: at most `workers` are in flight at once.
    pub(crate) futures: Arc<Semaphore>,
    /// Set by `shutdown(Shutdown::CancelQueued)` (and `Kill`): jobs that have not started
    /// report [`JobError::Cancelled`].
    cancelled: AtomicBool,
    /// Set by `shutdown(Shutdown::Kill)`: jobs running when the runtime drops them report
    /// [`JobError::Killed`].
    killed: AtomicBool,
    /// Wakes the event loop when the executor is killed, so that it stops waiting for tasks.
    kill: Notify,
    /// The job time limit ([`AsyncExecutorBuilder::job_timeout`](crate::AsyncExecutorBuilder::job_timeout)).
    pub(crate) job_timeout: Option<Duration>,
    /// Blocking-pool threads given up on so far (their job expired, or the executor was
    /// killed while they ran it).
    abandoned: AtomicUsize,
    /// The executor's counters, where abandoned threads are counted too.
    progress: Arc<ProgressCounters>,
    /// The executor's rate limit (and the permit source its jobs draw from).
    pub(crate) gate: Gate,
}

impl Shared {
    pub(crate) fn new(
        workers: usize,
        job_timeout: Option<Duration>,
        progress: Arc<ProgressCounters>,
        gate: Gate,
    ) -> Self {
        // Tokio's semaphore holds at most `Semaphore::MAX_PERMITS` (2^61 - 1) permits.
        let permits = workers.min(Semaphore::MAX_PERMITS);
        Self {
            futures: Arc::new(Semaphore::new(permits)),
            cancelled: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
            job_timeout,
            abandoned: AtomicUsize::new(0),
            progress,
            gate,
        }
    }

    /// Cancels every job that has not started yet.
    pub(crate) fn cancel_queued(&self) {
        self.cancelled.store(true, Ordering::Release);
        // Waiters for a permit wake up with an error and report `Cancelled`.
        self.futures.close();
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Cancels what has not started and tells the event loop to shut the runtime down now.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.cancel_queued();
        // `notify_one` keeps the wake-up for a loop that is not waiting yet.
        self.kill.notify_one();
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Resolves once [`kill`](Self::kill) was called.
    pub(crate) async fn killed(&self) {
        self.kill.notified().await;
    }

    /// Counts one abandoned blocking-pool thread (also in `Progress::abandoned_threads`).
    pub(crate) fn abandoned_one(&self) {
        self.abandoned.fetch_add(1, Ordering::Release);
        self.progress.abandoned_threads(1);
    }

    pub(crate) fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::Acquire)
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

/// The reply of a chunk whose futures run: answered with their results, or with
/// [`JobError::Killed`] once the executor was killed (the runtime, shut down, drops the task;
/// results that come in after the kill are dropped, as a killed blocking job's are).
struct Answer<'a, O> {
    reply: Option<Reply<O>>,
    shared: &'a Shared,
}

impl<O> Answer<'_, O> {
    fn send(mut self, results: Batch<Result<O, JobError>>) {
        if let Some(reply) = self.reply.take() {
            if self.shared.is_killed() { reply.fail(JobError::Killed) } else { reply.send(results) }
        }
    }
}

impl<O> Drop for Answer<'_, O> {
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take()
            && self.shared.is_killed()
        {
            reply.fail(JobError::Killed);
        }
        // Otherwise the reply, dropped, answers `Cancelled` (a runtime that went away).
    }
}

/// The task of one chunk of futures: it waits for a future permit, then drives them in order.
/// Each future comes wrapped by [`caught`] (a panic is [`JobError::Panicked`]) or, under a
/// job time limit, by [`limited`] (also [`JobError::Expired`] at the limit: the future is
/// dropped, and the permit goes to the next one); the wrapper is chosen once per chunk, so
/// that a future without a limit carries no timer.
pub(crate) async fn futures<F, T>(tracker: Tracker, shared: Arc<Shared>, chunk: Batch<F>, reply: Reply<T>)
where
    F: Future<Output = Result<T, JobError>> + Send + 'static,
    T: Send + 'static,
{
    let _tracker = tracker;
    let Ok(permit) = Arc::clone(&shared.futures).acquire_owned().await else { return };
    if let Some(permits) = shared.gate.per_job() {
        for _ in 0..chunk.len() {
            wait_for_permit(permits).await;
        }
    }
    if shared.is_cancelled() || !reply.start() {
        return;
    }
    let answer = Answer { reply: Some(reply), shared: &shared };
    let results = match chunk {
        Batch::One(future) => Batch::One(future.await),
        Batch::Many(futures) => {
            let mut results = Vec::with_capacity(futures.len());
            for future in futures {
                results.push(future.await);
            }
            Batch::Many(results)
        }
    };
    drop(permit);
    answer.send(results);
}

/// A future without a time limit: its panic caught.
pub(crate) fn caught<F: Future>(future: F) -> CatchPanic<F> {
    CatchPanic::new(future)
}

/// A future under a time limit. The clock starts when it is first polled, which [`futures`]
/// does only once the future has its permit: not while it waits for one.
pub(crate) async fn limited<F: Future>(limit: Duration, future: F) -> Result<F::Output, JobError> {
    tokio::time::timeout(limit, CatchPanic::new(future)).await.unwrap_or(Err(JobError::Expired { limit }))
}

/// Waits for one permit of `source` without blocking the runtime: sleeps on the runtime's
/// timer while the limit says wait, and asks on the blocking pool a source that can only block
/// (a worker process's parent).
pub(crate) async fn wait_for_permit(source: &PermitHandle) {
    loop {
        match source.poll_acquire() {
            Poll::Granted => return,
            Poll::WaitFor(wait) => tokio::time::sleep(wait).await,
            Poll::MustBlock => {
                let source = Arc::clone(source);
                // A runtime shutting down drops the task: the job goes on without the permit
                // only to be dropped itself.
                let _ = tokio::task::spawn_blocking(move || source.acquire()).await;
                return;
            }
        }
    }
}
