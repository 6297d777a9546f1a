//! What an executor did so far: [`Progress`], the snapshot a caller reads, and
//! [`ProgressCounters`], the counters an executor keeps for it.
//!
//! Everything is counted in the calling process, where jobs are handed out and their results
//! come back, never inside worker processes: counters kept there diverge from the truth as
//! soon as a worker dies or a job runs twice (tqdm's issue 484 is that bug for Python's pools).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::JobError;

/// A snapshot of an executor's counts, from [`Executor::progress`](crate::Executor::progress).
///
/// Every input handed to the executor is counted once in `submitted`, and once more, when its
/// result is known, in exactly one of `succeeded`, `failed` or `cancelled`; so at any moment
///
/// `submitted == succeeded + failed + cancelled + pending()`
///
/// and once every result is in, `pending()` is 0. `expired` and `killed` count the failures
/// of those kinds (they are part of `failed`); `retried` counts runs again of inputs whose
/// worker died or was stopped (an input can be retried and still succeed).
///
/// ```
/// use fanout_core::{Executor, JobError, Serial};
///
/// let executor = Serial::new();
/// let results = executor.map(|x: u64| if x == 3 { panic!("three") } else { x }, 0..10);
/// assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
/// let progress = executor.progress();
/// assert_eq!((progress.submitted, progress.succeeded, progress.failed), (10, 9, 1));
/// assert_eq!(progress.pending(), 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Progress {
    /// Inputs handed to the executor (by `map`, `imap`, `map_unordered` or `submit`).
    pub submitted: u64,
    /// Inputs that started on a worker (counted once, even when retried).
    pub started: u64,
    /// Inputs that ended with an output.
    pub succeeded: u64,
    /// Inputs that ended with an error other than [`JobError::Cancelled`].
    pub failed: u64,
    /// Inputs that ended [`JobError::Cancelled`], never run.
    pub cancelled: u64,
    /// Inputs sent to a worker again because their worker died or was stopped (a process
    /// pool's `retry_lost`, and the inputs of a chunk that had not finished when its worker
    /// was killed at a time limit).
    pub retried: u64,
    /// Failures that were [`JobError::Expired`]: the job ran past its time limit.
    pub expired: u64,
    /// Failures that were [`JobError::Killed`]: the executor was killed while the job ran.
    pub killed: u64,
    /// Threads given up on (a thread cannot be killed): a thread pool's or an async
    /// executor's blocking-pool thread whose job ran past its time limit or was running when
    /// the executor was killed. Such a thread runs its job to the end, drops the result and
    /// exits; a fresh thread took its place.
    pub abandoned_threads: u64,
}

impl Progress {
    /// Inputs with a result: `succeeded + failed + cancelled`.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }

    /// Inputs handed out whose result is not known yet (queued or running).
    pub fn pending(&self) -> u64 {
        self.submitted.saturating_sub(self.finished())
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} done ({} ok, {} failed, {} cancelled; {} expired, {} retried)",
            self.finished(),
            self.submitted,
            self.succeeded,
            self.failed,
            self.cancelled,
            self.expired,
            self.retried
        )
    }
}

/// A live view of an executor's counts that outlives the borrow of the executor: cheap to
/// clone, `Send` and `'static`, for a progress bar or a monitor thread that reads
/// [`snapshot`](Self::snapshot) while the executor works.
///
/// ```
/// use fanout_core::{Executor, Serial};
///
/// let executor = Serial::new();
/// let watch = executor.progress_watch();
/// let monitor = std::thread::spawn(move || watch.snapshot().submitted);
/// executor.map(|x: u64| x, 0..3);
/// assert!(monitor.join().unwrap() <= 3);
/// assert_eq!(executor.progress_watch().snapshot().succeeded, 3);
/// ```
#[derive(Clone)]
pub struct ProgressWatch(std::sync::Arc<ProgressCounters>);

impl ProgressWatch {
    /// A watch over `counters` (for executors: the counters they keep).
    pub fn new(counters: &std::sync::Arc<ProgressCounters>) -> Self {
        Self(std::sync::Arc::clone(counters))
    }

    /// The counts now.
    pub fn snapshot(&self) -> Progress {
        self.0.snapshot()
    }
}

impl fmt::Debug for ProgressWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProgressWatch").field(&self.snapshot()).finish()
    }
}

/// One counter on a cache line of its own: the caller counts submissions while workers count
/// starts and results, and they should not slow each other down by sharing a line.
#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

impl Padded {
    #[inline]
    fn add(&self, n: u64) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters behind [`Progress`], kept by an executor and updated by the engine (through
/// [`Launch::progress`](crate::plumbing::Launch::progress)) and by the [`Reply`]s of its
/// chunks, which count starts and results wherever they are answered.
///
/// Counts are relaxed atomics: a snapshot taken while jobs run may see a result before the
/// submission of the same input, which [`Progress::pending`] absorbs; a snapshot taken after
/// the results were received is exact.
///
/// [`Reply`]: crate::plumbing::Reply
#[derive(Default)]
pub struct ProgressCounters {
    submitted: Padded,
    started: Padded,
    succeeded: Padded,
    failed: Padded,
    cancelled: Padded,
    retried: Padded,
    expired: Padded,
    killed: Padded,
    abandoned_threads: Padded,
}

impl ProgressCounters {
    /// Counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `n` inputs handed to the executor.
    #[inline]
    pub fn submitted(&self, n: usize) {
        self.submitted.add(n as u64);
    }

    /// Counts `n` inputs started on a worker.
    #[inline]
    pub fn started(&self, n: usize) {
        self.started.add(n as u64);
    }

    /// Counts `n` inputs run again after their worker died or was stopped.
    pub fn retried(&self, n: usize) {
        self.retried.add(n as u64);
    }

    /// Counts `n` threads abandoned (see [`Progress::abandoned_threads`]).
    pub fn abandoned_threads(&self, n: usize) {
        self.abandoned_threads.add(n as u64);
    }

    /// Counts one result.
    #[inline]
    pub fn finished<O>(&self, result: &Result<O, JobError>) {
        self.finished_all(std::slice::from_ref(result));
    }

    /// Counts a run of results with one atomic operation per kind present.
    #[inline]
    pub fn finished_all<O>(&self, results: &[Result<O, JobError>]) {
        let mut tally = Tally::default();
        results.iter().for_each(|result| tally.add(result));
        self.add(&tally);
    }

    pub(crate) fn add(&self, tally: &Tally) {
        self.succeeded.add(tally.succeeded);
        self.failed.add(tally.failed);
        self.cancelled.add(tally.cancelled);
        self.expired.add(tally.expired);
        self.killed.add(tally.killed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> Progress {
        // Results are read before submissions, so that a snapshot never shows more results
        // than submissions for the inputs it saw.
        let succeeded = self.succeeded.get();
        let failed = self.failed.get();
        let cancelled = self.cancelled.get();
        Progress {
            started: self.started.get(),
            succeeded,
            failed,
            cancelled,
            retried: self.retried.get(),
            expired: self.expired.get(),
            killed: self.killed.get(),
            abandoned_threads: self.abandoned_threads.get(),
            submitted: self.submitted.get().max(succeeded + failed + cancelled),
        }
    }
}

impl fmt::Debug for ProgressCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.snapshot(), f)
    }
}

/// Results counted locally before they are added to the shared counters.
#[derive(Default)]
pub(crate) struct Tally {
    succeeded: u64,
    failed: u64,
    cancelled: u64,
    expired: u64,
    killed: u64,
}

impl Tally {
    #[inline]
    pub(crate) fn add<O>(&mut self, result: &Result<O, JobError>) {
        match result {
            Ok(_) => self.succeeded += 1,
            Err(JobError::Cancelled) => self.cancelled += 1,
            Err(error) => {
                self.failed += 1;
                self.expired += u64::from(matches!(error, JobError::Expired { .. }));
                self.killed += u64::from(matches!(error, JobError::Killed));
            }
        }
    }
}
