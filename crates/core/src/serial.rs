//! [`Serial`]: runs every job inline, in order; the baseline of every speed-up.
//!
//! It is the one executor that does not use the engine: with no worker and nothing in flight
//! there is no window, no chunk and nothing to reorder, and the baseline must cost nothing
//! but the job itself.

use std::sync::Arc;
use std::time::Duration;

use crate::plumbing::{ProgressCounters, job_handle, run_caught};
use crate::{BuildError, Executor, Job, JobError, JobHandle, Payload, ProgressWatch, Shutdown};

/// Runs jobs one after another on the calling thread.
///
/// It keeps the executor contract (panics become [`JobError::Panicked`], one result per
/// input) and is what every speed-up is measured against. Its clones share their
/// [`progress`](Executor::progress) counts.
///
/// It cannot stop a job (the job runs on the caller's own thread), so a job time limit is
/// refused when it is built, rather than ignored:
///
/// ```
/// use std::time::Duration;
/// use fanout_core::{BuildError, Serial};
///
/// let refused = Serial::builder().job_timeout(Duration::from_secs(5)).build();
/// assert!(matches!(refused, Err(BuildError::JobTimeoutUnsupported { executor: "serial" })));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Serial {
    progress: Arc<ProgressCounters>,
}

impl Serial {
    /// A serial executor.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder, for the same settings as the other executors' builders.
    pub fn builder() -> SerialBuilder {
        SerialBuilder { job_timeout: None }
    }
}

/// Configures a [`Serial`] executor: it has no setting of its own, and refuses what it cannot
/// honour.
#[derive(Debug, Clone)]
pub struct SerialBuilder {
    job_timeout: Option<Duration>,
}

impl SerialBuilder {
    /// A job time limit, which `Serial` cannot enforce: [`build`](Self::build) then fails with
    /// [`BuildError::JobTimeoutUnsupported`].
    pub fn job_timeout(mut self, limit: Duration) -> Self {
        self.job_timeout = Some(limit);
        self
    }

    /// The executor, or why it cannot honour the settings.
    pub fn build(self) -> Result<Serial, BuildError> {
        match self.job_timeout {
            Some(_) => Err(BuildError::JobTimeoutUnsupported { executor: "serial" }),
            None => Ok(Serial::new()),
        }
    }
}

impl Serial {
    fn run<J: Job<I>, I>(&self, job: &J, input: I) -> Result<J::Output, JobError> {
        self.progress.started(1);
        let result = run_caught(job, input);
        self.progress.finished(&result);
        result
    }
}

impl Executor for Serial {
    fn name(&self) -> &'static str {
        "serial"
    }

    fn workers(&self) -> usize {
        1
    }

    fn progress_watch(&self) -> ProgressWatch {
        ProgressWatch::new(&self.progress)
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
        inputs.into_iter().enumerate().map(move |(index, input)| {
            self.progress.submitted(1);
            (index, self.run(&job, input))
        })
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
        inputs.into_iter().map(move |input| {
            self.progress.submitted(1);
            self.run(&job, input)
        })
    }

    /// Runs the job at once; the handle is ready when this returns.
    fn submit<J, I>(&self, job: J, input: I) -> JobHandle<J::Output>
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        let (mut reply, handle) = job_handle();
        reply.count_in(&self.progress);
        if reply.start() {
            reply.send_one(run_caught(&job, input));
        }
        handle
    }

    fn shutdown(self, _mode: Shutdown) {}
}
