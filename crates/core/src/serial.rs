//! [`Serial`]: runs every job inline, in order; the baseline of every speed-up.
//!
//! It is the one executor that does not use the engine: with no worker and nothing in flight
//! there is no window, no chunk and nothing to reorder, and the baseline must cost nothing
//! but the job itself.

use std::sync::Arc;
use std::time::Duration;

use crate::plumbing::{ProgressCounters, job_handle, run_caught};
use crate::progress::Tally;
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

/// How many inputs a serial call counts locally before it adds them to the shared counters:
/// three atomic additions per input cost more than the empty jobs of the overhead benchmark.
const COUNT_BATCH: usize = 64;

/// A serial call's iterator: runs each input when it is pulled, and counts in batches (a
/// snapshot lags by less than [`COUNT_BATCH`] inputs while it runs, and is exact once the
/// iterator is done or dropped).
struct SerialIter<'a, J, It> {
    job: J,
    inputs: It,
    index: usize,
    progress: &'a ProgressCounters,
    /// Inputs run and not yet counted.
    ran: usize,
    tally: Tally,
}

impl<J, It> SerialIter<'_, J, It> {
    fn flush(&mut self) {
        self.progress.submitted(self.ran);
        self.progress.started(self.ran);
        self.progress.add(&std::mem::take(&mut self.tally));
        self.ran = 0;
    }
}

impl<J, I, It> Iterator for SerialIter<'_, J, It>
where
    J: Job<I>,
    It: Iterator<Item = I>,
{
    type Item = (usize, Result<J::Output, JobError>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let Some(input) = self.inputs.next() else {
            self.flush();
            return None;
        };
        let result = run_caught(&self.job, input);
        self.tally.add(&result);
        self.ran += 1;
        if self.ran == COUNT_BATCH {
            self.flush();
        }
        self.index += 1;
        Some((self.index - 1, result))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inputs.size_hint()
    }
}

impl<J, It> Drop for SerialIter<'_, J, It> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Serial {
    fn run<'a, J, I>(
        &'a self,
        job: J,
        inputs: impl IntoIterator<Item = I, IntoIter: 'a>,
    ) -> impl Iterator<Item = (usize, Result<J::Output, JobError>)> + 'a
    where
        J: Job<I>,
        I: Payload,
    {
        let inputs = inputs.into_iter();
        SerialIter { job, inputs, index: 0, progress: &self.progress, ran: 0, tally: Tally::default() }
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
        self.run(job, inputs)
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
        self.run(job, inputs).map(|(_, result)| result)
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
