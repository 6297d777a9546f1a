//! The [`Executor`] trait: the one interface of every execution model, and how it shuts down.

use crate::{Job, JobError, JobHandle, Payload, Progress, ProgressWatch};

/// What happens to jobs that are queued but not yet started when an executor shuts down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shutdown {
    /// Run every queued job, then stop. `Drop` does this.
    #[default]
    Finish,
    /// Drop queued jobs (their handles report [`JobError::Cancelled`]), let running jobs
    /// finish, then stop. Python's `shutdown(cancel_futures=True)`.
    CancelQueued,
    /// Stop at once, whatever the jobs do (Python's `Pool.terminate()`): queued jobs report
    /// [`JobError::Cancelled`], running ones [`JobError::Killed`]. Process workers are
    /// SIGKILLed and reaped; async futures are dropped; a thread cannot be killed, so a thread
    /// still running a job is abandoned (detached and counted, see the thread pool's docs) and
    /// its job's result, when it comes, is dropped. Returns within a second.
    Kill,
}

/// An execution model: something that runs one [`Job`] over many inputs.
///
/// Every method gives each input its own `Result`, so one failure never loses the other
/// results; `collect::<Result<Vec<_>, _>>()` turns that into Python's all-or-nothing `map`.
/// Switching the execution model is a change of the constructor alone:
///
/// ```
/// use fanout_core::{Executor, Serial};
///
/// fn double(x: u64) -> u64 {
///     x * 2
/// }
///
/// fn run(executor: &impl Executor) -> Vec<u64> {
///     executor.map(double, 0..5).into_iter().collect::<Result<_, _>>().unwrap()
/// }
///
/// assert_eq!(run(&Serial::new()), [0, 2, 4, 6, 8]);
/// ```
///
/// Dropping an executor waits for its queued and running jobs; [`Executor::shutdown`] with
/// [`Shutdown::CancelQueued`] drops the queue instead.
pub trait Executor {
    /// The execution model's short name: `serial`, `thread`, `process` or `async`.
    fn name(&self) -> &'static str;

    /// How many jobs run at once at most.
    fn workers(&self) -> usize;

    /// A snapshot of what this executor did so far, counted in the calling process (see
    /// [`Progress`] for what each count means and how they add up).
    fn progress(&self) -> Progress {
        self.progress_watch().snapshot()
    }

    /// A live view of the same counts that can leave the borrow of the executor (for a
    /// progress bar drawn by another thread).
    fn progress_watch(&self) -> ProgressWatch;

    /// Runs `job` on every input and yields `(input index, result)` as jobs complete.
    ///
    /// The iterator is lazy and bounded: it pulls inputs only as workers free up, so it runs
    /// over an endless input without collecting it (Python's `imap_unordered` with a
    /// `buffersize`). Dropping it early abandons the jobs in flight.
    fn map_unordered<'a, J, I>(
        &'a self,
        job: J,
        inputs: impl IntoIterator<Item = I, IntoIter: 'a>,
    ) -> impl Iterator<Item = (usize, Result<J::Output, JobError>)> + 'a
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload;

    /// Runs `job` on every input and yields the results in input order, each as soon as every
    /// input before it has its result (Python's `imap`).
    ///
    /// Lazy and bounded like [`map_unordered`](Self::map_unordered): results that finish
    /// ahead of a slow input wait in a buffer no larger than the executor's window, and no
    /// more inputs are pulled while it is full, so it runs over an endless input.
    ///
    /// ```
    /// use fanout_core::{Executor, Serial};
    ///
    /// let executor = Serial::new();
    /// let mut squares = executor.imap(|x: u64| x * x, 1..); // an endless input
    /// assert_eq!(squares.next(), Some(Ok(1)));
    /// assert_eq!(squares.nth(2), Some(Ok(16)));
    /// ```
    fn imap<'a, J, I>(
        &'a self,
        job: J,
        inputs: impl IntoIterator<Item = I, IntoIter: 'a>,
    ) -> impl Iterator<Item = Result<J::Output, JobError>> + 'a
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload;

    /// Runs `job` on every input and returns the results in input order (Python's `Pool.map`):
    /// the collect of [`imap`](Self::imap).
    fn map<J, I>(&self, job: J, inputs: impl IntoIterator<Item = I>) -> Vec<Result<J::Output, JobError>>
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        self.imap(job, inputs).collect()
    }

    /// Queues one job and returns a handle to its result (Python's `apply_async`).
    fn submit<J, I>(&self, job: J, input: I) -> JobHandle<J::Output>
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload;

    /// Stops the executor: waits for running jobs and, depending on `mode`, for queued ones;
    /// with [`Shutdown::Kill`], for nothing.
    fn shutdown(self, mode: Shutdown)
    where
        Self: Sized;
}
