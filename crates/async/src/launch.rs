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
use crate::fine_timer;

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

/// Waits for one permit of `source` without blocking the runtime: sleeps while the limit says
/// wait, and asks on the blocking pool a source that can only block (a worker process's
/// parent).
///
/// Futures that must wait line up behind one another, one line per source, and only the
/// first of the line sleeps until the limit's next permit, on [`fine_timer`], as precisely
/// as a thread sleeps. Woken together, a herd of them lost permits: one took the permit and
/// the others slept again, and a permit taken late is lost once the burst has absorbed the
/// lateness. 32 futures under a 1,000/s limit (burst 2) took 975–981 permits a second as a
/// herd on tokio's millisecond timer, 875–930 as a herd on [`fine_timer`], and 1,002 in line.
pub(crate) async fn wait_for_permit(source: &PermitHandle) {
    match source.poll_acquire() {
        Poll::Granted => return,
        Poll::MustBlock => return acquire_blocking(source).await,
        Poll::WaitFor(_) => {}
    }
    let line = waiting_line(source);
    let _first = line.lock().await;
    loop {
        match source.poll_acquire() {
            Poll::Granted => return,
            Poll::WaitFor(wait) => fine_timer::sleep(wait).await,
            Poll::MustBlock => return acquire_blocking(source).await,
        }
    }
}

/// Asks a source that can only block, on the blocking pool.
async fn acquire_blocking(source: &PermitHandle) {
    let source = Arc::clone(source);
    // A runtime shutting down drops the task: the job goes on without the permit only to be
    // dropped itself.
    let _ = tokio::task::spawn_blocking(move || source.acquire()).await;
}

/// The line of futures waiting for `source`'s permits (tokio's `Mutex` is fair: first come,
/// first served). Kept by the source's address while a future waits in it.
fn waiting_line(source: &PermitHandle) -> Arc<tokio::sync::Mutex<()>> {
    type Lines = std::collections::HashMap<usize, std::sync::Weak<tokio::sync::Mutex<()>>>;
    static LINES: std::sync::Mutex<Option<Lines>> = std::sync::Mutex::new(None);
    let key = Arc::as_ptr(source).cast::<()>() as usize;
    // The map is consistent at every unlock: a panic cannot leave it half-changed.
    let mut lines = LINES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let lines = lines.get_or_insert_with(Lines::new);
    if let Some(line) = lines.get(&key).and_then(std::sync::Weak::upgrade) {
        return line;
    }
    // A line nobody waits in is gone; forget those before adding one, so that the map holds
    // only the sources futures wait for now (a new source at a freed one's address gets a
    // fresh line here too).
    lines.retain(|_, line| line.strong_count() > 0);
    let line = Arc::new(tokio::sync::Mutex::new(()));
    lines.insert(key, Arc::downgrade(&line));
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_core::limit::{Limiter, RateLimit};
    use std::time::Instant;

    fn limiter(per_second: f64) -> Arc<Limiter> {
        Arc::new(Limiter::new(RateLimit::per_second(per_second)).unwrap())
    }

    #[test]
    fn futures_of_one_source_share_a_line_and_other_sources_have_their_own() {
        let (first, second): (PermitHandle, PermitHandle) = (limiter(1000.0), limiter(1000.0));
        let line = waiting_line(&first);
        assert!(Arc::ptr_eq(&line, &waiting_line(&first)));
        assert!(!Arc::ptr_eq(&line, &waiting_line(&second)));
    }

    #[test]
    fn a_line_nobody_waits_in_is_not_kept() {
        let source: PermitHandle = limiter(1000.0);
        let line = Arc::downgrade(&waiting_line(&source));
        assert!(line.upgrade().is_none(), "only waiting futures keep a line");
        let _again = waiting_line(&source);
        assert!(line.upgrade().is_none(), "a new waiter starts a new line");
    }

    #[test]
    fn waiters_in_line_each_take_one_permit_a_wait_and_all_get_theirs() {
        let limiter = limiter(2000.0);
        let source: PermitHandle = Arc::clone(&limiter) as PermitHandle;
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
        let started = Instant::now();
        runtime.block_on(async {
            let waiters: Vec<_> = (0..16)
                .map(|_| {
                    let source = Arc::clone(&source);
                    tokio::spawn(async move {
                        for _ in 0..5 {
                            wait_for_permit(&source).await;
                        }
                    })
                })
                .collect();
            let all = async {
                for waiter in waiters {
                    waiter.await.unwrap();
                }
            };
            // A guard against a waiter left in line forever, not a speed target.
            tokio::time::timeout(Duration::from_secs(30), all).await.expect("a waiter never got its permits");
        });
        assert_eq!(limiter.granted(), 80);
        // The first permit is at once, the other 79 one every half millisecond.
        assert!(started.elapsed() >= Duration::from_micros(79 * 500), "{:?}", started.elapsed());
    }
}
