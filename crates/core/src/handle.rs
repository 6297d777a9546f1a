//! One job's future result: [`JobHandle`], and the [`Completer`] an executor fulfils it with.

use std::fmt;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::JobError;

/// Creates a connected pair: the executor keeps the [`Completer`], the caller gets the
/// [`JobHandle`].
pub fn job_handle<O>() -> (Completer<O>, JobHandle<O>) {
    let (sender, receiver) = crossbeam_channel::bounded(1);
    (Completer { sender }, JobHandle { receiver, taken: false })
}

/// The executor's side of a [`JobHandle`].
///
/// Dropping it without calling [`complete`](Completer::complete) reports
/// [`JobError::Cancelled`] to the handle.
pub struct Completer<O> {
    sender: Sender<Result<O, JobError>>,
}

impl<O> Completer<O> {
    /// Delivers the job's result. A handle that was already dropped is not an error.
    pub fn complete(self, result: Result<O, JobError>) {
        let _ = self.sender.send(result);
    }
}

impl<O> fmt::Debug for Completer<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completer").finish_non_exhaustive()
    }
}

/// The result of one submitted job, to be waited for.
///
/// ```
/// use std::time::Duration;
/// use fanout_core::{Executor, Serial};
///
/// let mut handle = Serial::new().submit(|x: u64| x + 1, 41);
/// assert_eq!(handle.wait_timeout(Duration::from_secs(1)), Ok(42));
/// ```
pub struct JobHandle<O> {
    receiver: Receiver<Result<O, JobError>>,
    taken: bool,
}

impl<O> JobHandle<O> {
    /// Blocks until the job has a result.
    pub fn wait(mut self) -> Result<O, JobError> {
        self.take(self.receiver.recv().map_err(|_| ()))
    }

    /// Blocks for at most `timeout`.
    ///
    /// Returns [`JobError::TimedOut`] when no result came in time; the job goes on, and a later
    /// call can still collect its result. Once a result has been returned, the handle is spent
    /// and further calls report [`JobError::Cancelled`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<O, JobError> {
        match self.receiver.recv_timeout(timeout) {
            Err(RecvTimeoutError::Timeout) if !self.taken => Err(JobError::TimedOut { timeout }),
            received => self.take(received.map_err(|_| ())),
        }
    }

    fn take(&mut self, received: Result<Result<O, JobError>, ()>) -> Result<O, JobError> {
        self.taken = true;
        // The completer was dropped unfulfilled: the executor gave up on the job.
        received.unwrap_or(Err(JobError::Cancelled))
    }
}

impl<O> fmt::Debug for JobHandle<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle").field("spent", &self.taken).finish_non_exhaustive()
    }
}
