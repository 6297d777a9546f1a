//! One submitted job's future result: [`JobHandle`], and waiting on many at once
//! ([`as_completed`], [`wait_any`]), as `concurrent.futures` offers them.

use std::fmt;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, TryRecvError};

use crate::JobError;
use crate::plumbing::reply::Ticket;
use crate::sync::Arc;

/// The result of one submitted job, to be waited for.
///
/// ```
/// use std::time::Duration;
/// use fanout_core::{Executor, Serial};
///
/// let mut handle = Serial::new().submit(|x: u64| x + 1, 41);
/// assert!(handle.is_finished()); // `Serial` runs it at once
/// assert_eq!(handle.wait_timeout(Duration::from_secs(1)), Ok(42));
/// ```
pub struct JobHandle<O> {
    receiver: Receiver<Result<O, JobError>>,
    ticket: Arc<Ticket>,
    taken: bool,
}

impl<O> JobHandle<O> {
    pub(crate) fn new(receiver: Receiver<Result<O, JobError>>, ticket: Arc<Ticket>) -> Self {
        Self { receiver, ticket, taken: false }
    }

    /// Blocks until the job has a result.
    pub fn wait(mut self) -> Result<O, JobError> {
        if self.taken {
            return Err(JobError::ResultTaken);
        }
        if self.ticket.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let received = self.receiver.recv().map_err(|_| ());
        self.take(received)
    }

    /// Blocks for at most `timeout`.
    ///
    /// Returns [`JobError::WaitTimedOut`] when no result came in time; the job goes on, and a later
    /// call can still collect its result. Once a result has been returned, the handle is spent
    /// and further calls report [`JobError::ResultTaken`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<O, JobError> {
        if self.taken {
            return Err(JobError::ResultTaken);
        }
        if self.ticket.is_cancelled() {
            return self.take(Ok(Err(JobError::Cancelled)));
        }
        match self.receiver.recv_timeout(timeout) {
            Err(RecvTimeoutError::Timeout) => Err(JobError::WaitTimedOut { waited: timeout }),
            received => self.take(received.map_err(|_| ())),
        }
    }

    /// The result if the job has finished, without blocking; `None` while it is queued or
    /// running. After a result was returned, `Some(Err(JobError::ResultTaken))`.
    pub fn try_wait(&mut self) -> Option<Result<O, JobError>> {
        if self.taken {
            return Some(Err(JobError::ResultTaken));
        }
        if self.ticket.is_cancelled() {
            return Some(self.take(Ok(Err(JobError::Cancelled))));
        }
        match self.receiver.try_recv() {
            Err(TryRecvError::Empty) => None,
            received => Some(self.take(received.map_err(|_| ()))),
        }
    }

    /// Whether a result is there to take (or was taken already): a later `wait` returns at once.
    pub fn is_finished(&self) -> bool {
        self.taken || self.ticket.is_cancelled() || !self.receiver.is_empty()
    }

    /// Cancels the job if it has not started: it will never run, and the handle reports
    /// [`JobError::Cancelled`]. Returns `false` when the job already started (or finished);
    /// it then runs to its end and the handle reports its result.
    ///
    /// ```
    /// use fanout_core::{Executor, Serial};
    ///
    /// let handle = Serial::new().submit(|x: u64| x * 2, 21);
    /// assert!(!handle.cancel()); // `Serial` already ran it
    /// assert_eq!(handle.wait(), Ok(42));
    /// ```
    pub fn cancel(&self) -> bool {
        !self.taken && self.ticket.cancel()
    }

    fn take(&mut self, received: Result<Result<O, JobError>, ()>) -> Result<O, JobError> {
        self.taken = true;
        // Every reply answers before it goes away; a closed channel without an answer can only
        // mean the executor itself gave up on the job.
        received.unwrap_or(Err(JobError::Cancelled))
    }
}

impl<O> fmt::Debug for JobHandle<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("finished", &self.is_finished())
            .field("taken", &self.taken)
            .finish_non_exhaustive()
    }
}

/// Waits until one of `handles` has finished and returns its index, or `None` when `handles`
/// is empty (`concurrent.futures.wait(..., return_when=FIRST_COMPLETED)`). A handle whose
/// result was taken already counts as finished. Take the result with
/// [`JobHandle::try_wait`] or [`JobHandle::wait`].
pub fn wait_any<O>(handles: &[JobHandle<O>]) -> Option<usize> {
    wait_any_until(handles, None)
}

/// [`wait_any`] for at most `timeout`: `None` also when no handle finished in time.
pub fn wait_any_timeout<O>(handles: &[JobHandle<O>], timeout: Duration) -> Option<usize> {
    wait_any_until(handles, Some(Instant::now() + timeout))
}

fn wait_any_until<O>(handles: &[JobHandle<O>], deadline: Option<Instant>) -> Option<usize> {
    if let Some(index) = handles.iter().position(JobHandle::is_finished) {
        return Some(index);
    }
    if handles.is_empty() {
        return None;
    }
    let mut select = Select::new();
    for handle in handles {
        select.recv(&handle.receiver);
    }
    loop {
        let ready = match deadline {
            None => Some(select.ready()),
            Some(deadline) => select.ready_deadline(deadline).ok(),
        };
        // `ready` may wake spuriously, and a cancellation shows in the ticket, which the
        // select cannot see: the handle itself says whether it finished.
        match ready {
            Some(index) if handles[index].is_finished() => return Some(index),
            Some(_) => continue,
            None => return handles.iter().position(JobHandle::is_finished),
        }
    }
}

/// Yields `(position, result)` for each handle as its job finishes, in completion order
/// (`concurrent.futures.as_completed`). `position` is the handle's place in `handles`.
///
/// ```
/// use fanout_core::{Executor, Serial, as_completed};
///
/// let executor = Serial::new();
/// let handles = (1..=3).map(|x: u64| executor.submit(|x: u64| x * 10, x));
/// let mut results: Vec<(usize, u64)> =
///     as_completed(handles).map(|(position, result)| (position, result.unwrap())).collect();
/// results.sort();
/// assert_eq!(results, [(0, 10), (1, 20), (2, 30)]);
/// ```
pub fn as_completed<O>(handles: impl IntoIterator<Item = JobHandle<O>>) -> AsCompleted<O> {
    AsCompleted { pending: handles.into_iter().enumerate().collect() }
}

/// The iterator of [`as_completed`].
pub struct AsCompleted<O> {
    pending: Vec<(usize, JobHandle<O>)>,
}

impl<O> Iterator for AsCompleted<O> {
    type Item = (usize, Result<O, JobError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pending.is_empty() {
            return None;
        }
        let index = loop {
            if let Some(index) = self.pending.iter().position(|(_, handle)| handle.is_finished()) {
                break index;
            }
            let mut select = Select::new();
            for (_, handle) in &self.pending {
                select.recv(&handle.receiver);
            }
            // Spurious wake-ups are possible: the loop checks the handles again.
            select.ready();
        };
        let (position, mut handle) = self.pending.swap_remove(index);
        let result = handle.try_wait().unwrap_or(Err(JobError::ResultTaken));
        Some((position, result))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.pending.len(), Some(self.pending.len()))
    }
}

impl<O> fmt::Debug for AsCompleted<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted").field("pending", &self.pending.len()).finish()
    }
}
