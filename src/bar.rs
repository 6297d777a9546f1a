//! Progress bars over `map`, `imap` and `map_unordered` (the `indicatif` feature).
//!
//! The bar counts **completions**: results the executor has, read from its
//! [`progress_watch`](crate::Executor::progress_watch), not items the caller has pulled from an
//! iterator. So the bar of an ordered `imap` keeps moving while the caller waits for one slow
//! input that holds the results behind it, and the bar of a `map` (which returns only at the
//! end) moves at all. (An executor may count in batches: [`Serial`](crate::Serial) adds its
//! counts every 64 inputs. The iterators of [`imap`] and [`map_unordered`] also count what they
//! yield, each a completion, and the bar shows whichever count is ahead.) A thread of the bar's own (a *ticker*) reads the counts every
//! [`TICK`] and sets the bar's position; it stops when the call returns, or when the iterator
//! is finished or dropped, after a last exact update.
//!
//! - [`map`], [`imap`] and [`map_unordered`]: the executor's methods of the same names, with a
//!   bar. The bar's length becomes its position at the call plus the number of inputs, when
//!   the input iterator knows it exactly (its `size_hint`); otherwise the length is left as
//!   it was. Each completion moves the bar one step, so successive calls on one bar add up.
//! - [`track`]: the same ticker over any [`ProgressWatch`], for calls that are not the trait's
//!   (an [`AsyncExecutor`](crate::AsyncExecutor)'s `map_async`, a series of `submit`s).
//!
//! The bar is the caller's: these functions never finish or clear it, and its style, message
//! and draw target are the caller's choice ([`ProgressBar::hidden`] draws nothing, and
//! indicatif's default target, standard error, draws only on a terminal).
//!
//! The counts are the executor's, so completions of other calls running on the same executor
//! at the same time move the bar too (it never goes past its length).
//!
//! ```
//! use fanout::bar::{self, indicatif::ProgressBar};
//! use fanout::ThreadPool;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let pool = ThreadPool::new(4)?;
//! let progress = ProgressBar::hidden(); // ProgressBar::new(0) draws on a terminal
//! let squares = bar::map(&pool, square, 0..100, &progress);
//! assert_eq!(squares[9], Ok(81));
//! assert_eq!((progress.position(), progress.length()), (100, Some(100)));
//! progress.finish_and_clear();
//! # Ok::<(), fanout::BuildError>(())
//! ```
//!
//! An ordered `imap` through a bar; the bar is at its end when the iterator is:
//!
//! ```
//! use fanout::bar::{self, indicatif::ProgressBar};
//! use fanout::ProcessPool;
//!
//! fn double(x: u64) -> u64 {
//!     x * 2
//! }
//!
//! let pool = ProcessPool::new(2)?;
//! let progress = ProgressBar::hidden();
//! let total: u64 = bar::imap(&pool, double, 1..=10, &progress).map(|r| r.unwrap_or(0)).sum();
//! assert_eq!((total, progress.position()), (110, 10));
//! # Ok::<(), fanout::BuildError>(())
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use indicatif;
use indicatif::ProgressBar;

use crate::{Executor, Job, JobError, Payload, Progress, ProgressWatch};

/// How often a ticker reads the executor's counts.
pub const TICK: Duration = Duration::from_millis(50);

/// [`Executor::map`] with `bar` counting its completions (see the [module docs](self)).
pub fn map<E, J, I>(
    executor: &E,
    job: J,
    inputs: impl IntoIterator<Item = I>,
    bar: &ProgressBar,
) -> Vec<Result<J::Output, JobError>>
where
    E: Executor,
    J: Job<I>,
    I: Payload,
    J::Output: Payload,
{
    let inputs = inputs.into_iter();
    let ticker = track(executor.progress_watch(), bar, exact_len(&inputs));
    let results = executor.map(job, inputs);
    ticker.stop();
    results
}

/// [`Executor::imap`] with `bar` counting its completions, in whatever order they come, not
/// in the order the iterator yields them (see the [module docs](self)).
pub fn imap<'a, E, J, I>(
    executor: &'a E,
    job: J,
    inputs: impl IntoIterator<Item = I, IntoIter: 'a>,
    bar: &ProgressBar,
) -> Tracked<impl Iterator<Item = Result<J::Output, JobError>> + 'a>
where
    E: Executor,
    J: Job<I>,
    I: Payload,
    J::Output: Payload,
{
    let inputs = inputs.into_iter();
    let ticker = track(executor.progress_watch(), bar, exact_len(&inputs));
    Tracked { inner: executor.imap(job, inputs), ticker: Some(ticker) }
}

/// [`Executor::map_unordered`] with `bar` counting its completions (see the
/// [module docs](self)).
pub fn map_unordered<'a, E, J, I>(
    executor: &'a E,
    job: J,
    inputs: impl IntoIterator<Item = I, IntoIter: 'a>,
    bar: &ProgressBar,
) -> Tracked<impl Iterator<Item = (usize, Result<J::Output, JobError>)> + 'a>
where
    E: Executor,
    J: Job<I>,
    I: Payload,
    J::Output: Payload,
{
    let inputs = inputs.into_iter();
    let ticker = track(executor.progress_watch(), bar, exact_len(&inputs));
    Tracked { inner: executor.map_unordered(job, inputs), ticker: Some(ticker) }
}

/// Starts a ticker that moves `bar` one step per completion counted by `watch` from now on,
/// and, with `len`, sets the bar's length to its position now plus `len`. It runs until the
/// returned [`Ticker`] is stopped or dropped.
///
/// For work that is not a call of the trait, such as an async executor's futures:
///
/// ```
/// use fanout::bar::{self, indicatif::ProgressBar};
/// use fanout::{AsyncExecutor, Executor};
///
/// let executor = AsyncExecutor::new(8)?;
/// let progress = ProgressBar::hidden();
/// let ticker = bar::track(executor.progress_watch(), &progress, Some(20));
/// let results = executor.map_async(|x: u64| async move { x + 1 }, 0..20);
/// ticker.stop();
/// assert_eq!((results.len(), progress.position()), (20, 20));
/// # Ok::<(), fanout::BuildError>(())
/// ```
pub fn track(watch: ProgressWatch, bar: &ProgressBar, len: Option<u64>) -> Ticker {
    let start = bar.position();
    let count = Count {
        base: watch.snapshot(),
        watch,
        bar: bar.clone(),
        start,
        end: len.map(|len| start.saturating_add(len)),
        yielded: Arc::new(AtomicU64::new(0)),
    };
    if let Some(end) = count.end {
        count.bar.set_length(end);
    }
    let (stop, stopped) = mpsc::channel::<()>();
    let ticking = count.clone();
    let thread = std::thread::Builder::new()
        .name("fanout-bar".to_owned())
        .spawn(move || {
            // Until the sender is dropped (or sends): then the owner does the last update.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                ticking.update();
            }
        })
        .ok();
    // Without a thread (the system refused one) the bar still ends right, at the stop.
    Ticker { count, stop: Some(stop), thread }
}

/// The exact number of inputs, when the iterator knows it.
fn exact_len(inputs: &impl Iterator) -> Option<u64> {
    match inputs.size_hint() {
        (lower, Some(upper)) if lower == upper => u64::try_from(lower).ok(),
        _ => None,
    }
}

/// What a ticker counts: completions since `base`, shown from position `start`.
#[derive(Clone)]
struct Count {
    watch: ProgressWatch,
    base: Progress,
    bar: ProgressBar,
    start: u64,
    end: Option<u64>,
    /// Results a [`Tracked`] iterator yielded: each is a completion, and an executor may count
    /// its own in batches (`Serial` does, every 64 inputs), so the bar shows whichever is ahead.
    yielded: Arc<AtomicU64>,
}

impl Count {
    fn update(&self) {
        let counted = self.watch.snapshot().finished().saturating_sub(self.base.finished());
        let done = counted.max(self.yielded.load(Ordering::Relaxed));
        let position = self.start.saturating_add(done);
        self.bar.set_position(self.end.map_or(position, |end| position.min(end)));
    }
}

/// The thread that moves a bar (see [`track`]); stopping or dropping it stops the thread and
/// sets the bar's position one last time, exactly.
pub struct Ticker {
    count: Count,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Stops the ticker after a last update of the bar (the same as dropping it).
    pub fn stop(self) {}

    fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            drop(stop);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
            // After the results the caller received: the counts include them all.
            self.count.update();
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.finish();
    }
}

impl std::fmt::Debug for Ticker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticker")
            .field("start", &self.count.start)
            .field("end", &self.count.end)
            .field("running", &self.stop.is_some())
            .finish_non_exhaustive()
    }
}

/// An iterator of [`imap`] or [`map_unordered`] with its bar's [`Ticker`]: it yields what the
/// executor's iterator yields, and stops the ticker once that iterator is exhausted (or when
/// it is dropped).
#[derive(Debug)]
pub struct Tracked<It> {
    inner: It,
    ticker: Option<Ticker>,
}

impl<It: Iterator> Iterator for Tracked<It> {
    type Item = It::Item;

    fn next(&mut self) -> Option<It::Item> {
        let next = self.inner.next();
        match (&next, &self.ticker) {
            (Some(_), Some(ticker)) => {
                ticker.count.yielded.fetch_add(1, Ordering::Relaxed);
            }
            // The last update, exact now that every result is in.
            (None, _) => drop(self.ticker.take()),
            (Some(_), None) => {}
        }
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}
