//! The cooperative side of a job time limit: a job asks [`time_left`] or [`expired`] and stops
//! itself early, instead of waiting to be stopped.
//!
//! An executor with a `job_timeout` stops a job that runs past it whatever the job does, but
//! how it stops it differs: a process pool kills the worker, an async executor drops the
//! future, and a thread pool can only *abandon* the thread (Rust cannot kill a thread), which
//! keeps running the job until the job returns. A job that checks [`expired`] between steps
//! (between two requests, in a retry loop) returns soon after its limit instead, so its thread
//! comes back to the pool.
//!
//! ```
//! use std::time::Duration;
//! use fanout_core::deadline;
//!
//! fn crawl(pages: u64) -> u64 {
//!     let mut fetched = 0;
//!     for _ in 0..pages {
//!         if deadline::expired() {
//!             break; // out of time: the executor reports `Expired` anyway
//!         }
//!         fetched += 1; // fetch one page
//!     }
//!     fetched
//! }
//!
//! // Outside an executor with a time limit there is no deadline.
//! assert_eq!(deadline::time_left(), None);
//! assert_eq!(crawl(3), 3);
//! ```

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

thread_local! {
    /// When the job running on this thread must be done, if its executor has a time limit.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Set when the executor of this thread's job was killed or gave the job up.
    static STOP: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// How long the job running on this thread has left before its executor's time limit, or
/// `None` when it has no limit (or runs outside an executor). `Some(Duration::ZERO)` once the
/// limit has passed, or once the executor was killed or gave up on the job.
pub fn time_left() -> Option<Duration> {
    if stop_requested() {
        return Some(Duration::ZERO);
    }
    DEADLINE.get().map(|deadline| deadline.saturating_duration_since(Instant::now()))
}

/// Whether the job running on this thread should stop: its time limit has passed, or its
/// executor was killed ([`Shutdown::Kill`](crate::Shutdown::Kill)) or gave up on it. Cheap
/// enough to call between any two steps of a job.
pub fn expired() -> bool {
    stop_requested() || DEADLINE.get().is_some_and(|deadline| Instant::now() >= deadline)
}

fn stop_requested() -> bool {
    STOP.with_borrow(|stop| stop.as_ref().is_some_and(|flag| flag.load(Ordering::Relaxed)))
}

/// Sets the deadline of the job about to run on this thread, for [`time_left`] and
/// [`expired`]; the job's deadline is cleared again when the guard is dropped.
///
/// For executors (see [`plumbing`](crate::plumbing)): set it around each job that runs under a
/// time limit.
#[derive(Debug)]
pub struct DeadlineGuard {
    previous: Option<Instant>,
}

impl DeadlineGuard {
    /// The job about to run has until `limit` from now; `None` sets no deadline (and costs
    /// nothing but this call).
    #[inline]
    pub fn start(limit: Option<Duration>) -> Self {
        let previous = DEADLINE.get();
        if let Some(limit) = limit {
            DEADLINE.set(Instant::now().checked_add(limit));
        }
        Self { previous }
    }
}

impl Drop for DeadlineGuard {
    #[inline]
    fn drop(&mut self) {
        DEADLINE.set(self.previous);
    }
}

/// Makes [`expired`] true on this thread once `flag` is set: an executor installs its stop
/// flag on each of its worker threads, and sets it when it is killed or abandons the thread.
#[derive(Debug)]
pub struct StopGuard {
    flag: Arc<AtomicBool>,
    previous: Option<Arc<AtomicBool>>,
    /// Installed on this thread: the guard must be dropped here.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl StopGuard {
    /// Watches `flag` on this thread until the guard is dropped.
    pub fn install(flag: Arc<AtomicBool>) -> Self {
        let previous = STOP.replace(Some(Arc::clone(&flag)));
        Self { flag, previous, _not_send: std::marker::PhantomData }
    }

    /// The flag this guard watches.
    pub fn flag(&self) -> &Arc<AtomicBool> {
        &self.flag
    }
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        STOP.set(self.previous.take());
    }
}
