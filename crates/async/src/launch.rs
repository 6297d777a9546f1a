//! One chunk's life on the runtime: waiting for an in-flight permit, then running as a blocking
//! job on the blocking pool ([`blocking`]) or as futures on the runtime ([`futures`]), and
//! answering its [`Reply`] (fanout-core's exactly-once answer) whatever happens.
//!
//! Every task holds a [`Tracker`]: the executor's shutdown waits until the last one is gone,
//! so dropping the executor waits for queued and running jobs.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fanout_core::plumbing::{Batch, Reply, run_chunk};
use fanout_core::Job;
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

    pub(crate) fn is_cancelled(&self) -> bool {
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

/// The task of one chunk of blocking jobs: it waits for a blocking permit on the runtime, then
/// hands the chunk to the runtime's blocking pool (asyncio's `run_in_executor`).
pub(crate) async fn blocking<J, I>(
    tracker: Tracker,
    shared: Arc<Shared>,
    job: Arc<J>,
    chunk: Batch<I>,
    reply: Reply<J::Output>,
) where
    J: Job<I>,
    I: Send + 'static,
    J::Output: Send + 'static,
{
    // A closed semaphore (a cancelled queue) or a cancelled call: the reply, dropped, answers
    // `Cancelled`.
    let Ok(permit) = Arc::clone(&shared.blocking).acquire_owned().await else { return };
    if shared.is_cancelled() {
        return;
    }
    // The task ends here; the blocking closure carries the permit and the tracker, so the
    // next job starts as soon as this one returns and shutdown waits for it.
    tokio::task::spawn_blocking(move || {
        if !shared.is_cancelled() && reply.start() {
            let results = run_chunk(chunk, |input| job.call(input));
            drop(permit);
            reply.send(results);
        }
        drop(tracker);
    });
}

/// The task of one chunk of futures: it waits for a future permit, then drives them in order,
/// turning a panic into [`JobError::Panicked`](fanout_core::JobError::Panicked).
pub(crate) async fn futures<F>(tracker: Tracker, shared: Arc<Shared>, chunk: Batch<F>, reply: Reply<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let _tracker = tracker;
    let Ok(permit) = Arc::clone(&shared.futures).acquire_owned().await else { return };
    if shared.is_cancelled() || !reply.start() {
        return;
    }
    let results = match chunk {
        Batch::One(future) => Batch::One(CatchPanic::new(future).await),
        Batch::Many(futures) => {
            let mut results = Vec::with_capacity(futures.len());
            for future in futures {
                results.push(CatchPanic::new(future).await);
            }
            Batch::Many(results)
        }
    };
    drop(permit);
    reply.send(results);
}
