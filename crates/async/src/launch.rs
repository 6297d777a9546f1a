//! One chunk of futures' life on the runtime ([`futures`]): waiting for an in-flight permit,
//! then running on the runtime, and answering its [`Reply`] (fanout-core's exactly-once answer)
//! whatever happens. What every job of an executor shares ([`Shared`], [`Tracker`]).
//!
//! Every task holds a [`Tracker`]: the executor's shutdown waits until the last one is gone,
//! so dropping the executor waits for queued and running jobs.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fanout_core::plumbing::{Batch, Reply};
use tokio::sync::{Semaphore, mpsc};

use crate::catch::CatchPanic;

/// What every job of one executor shares.
#[derive(Debug)]
pub(crate) struct Shared {
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
        Self { futures: Arc::new(Semaphore::new(permits)), cancelled: AtomicBool::new(false) }
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

/// The task of one chunk of futures: it waits for a future permit, then drives them in order,
/// turning a panic into [`JobError::Panicked`](fanout_core::JobError::Panicked).
pub(crate) async fn futures<F>(
    tracker: Tracker,
    shared: Arc<Shared>,
    chunk: Batch<F>,
    reply: Reply<F::Output>,
) where
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
