//! [`Serial`]: runs every job inline, in order; the baseline of every speed-up.
//!
//! It is the one executor that does not use the engine: with no worker and nothing in flight
//! there is no window, no chunk and nothing to reorder, and the baseline must cost nothing
//! but the job itself.

use crate::plumbing::{job_handle, run_caught};
use crate::{Executor, Job, JobError, JobHandle, Payload, Shutdown};

/// Runs jobs one after another on the calling thread.
///
/// It keeps the executor contract (panics become [`JobError::Panicked`], one result per
/// input) and is what every speed-up is measured against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Serial;

impl Serial {
    /// A serial executor.
    pub fn new() -> Self {
        Self
    }
}

impl Executor for Serial {
    fn name(&self) -> &'static str {
        "serial"
    }

    fn workers(&self) -> usize {
        1
    }

    fn map_unordered<'a, J, I>(
        &'a self,
        job: J,
        inputs: impl IntoIterator<Item = I, IntoIter: 'a>,
    ) -> impl Iterator<Item = (usize, Result<J::Output, JobError>)> + 'a
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        inputs.into_iter().enumerate().map(move |(index, input)| (index, run_caught(&job, input)))
    }

    fn imap<'a, J, I>(
        &'a self,
        job: J,
        inputs: impl IntoIterator<Item = I, IntoIter: 'a>,
    ) -> impl Iterator<Item = Result<J::Output, JobError>> + 'a
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        inputs.into_iter().map(move |input| run_caught(&job, input))
    }

    /// Runs the job at once; the handle is ready when this returns.
    fn submit<J, I>(&self, job: J, input: I) -> JobHandle<J::Output>
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        let (reply, handle) = job_handle();
        if reply.start() {
            reply.send_one(run_caught(&job, input));
        }
        handle
    }

    fn shutdown(self, _mode: Shutdown) {}
}
