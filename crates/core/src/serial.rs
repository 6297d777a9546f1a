//! [`Serial`]: runs every job inline, in order; the baseline of every speed-up.
//!
//! It is the one executor that does not use the engine: with no worker and nothing in flight
//! there is no window, no chunk and nothing to reorder, and the baseline must cost nothing
//! but the job itself.

use std::sync::Arc;
use std::time::Duration;

use crate::limit::{AmbientGuard, Gate, RateLimit};
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
///
/// A rate limit it keeps like every executor: a job waits for its permit before it runs (or,
/// with [`RateLimit::per_request`], takes one per request with [`limit::acquire`]), so that the
/// article's serial loop is as polite as the pools:
///
/// ```
/// use fanout_core::{Executor, Serial, limit::RateLimit};
///
/// let serial = Serial::builder().rate_limit(RateLimit::per_second(1000.0)).build()?;
/// let started = std::time::Instant::now();
/// assert_eq!(serial.map(|x: u64| x + 1, 0..21).len(), 21);
/// // The first permit is at once, the other 20 one a millisecond.
/// assert!(started.elapsed() >= std::time::Duration::from_millis(19));
/// # Ok::<(), fanout_core::BuildError>(())
/// ```
///
/// Built inside a job of a rate-limited executor, it draws from that executor's limit, as a
/// nested pool does.
///
/// [`limit::acquire`]: crate::limit::acquire
#[derive(Debug, Clone)]
pub struct Serial {
    progress: Arc<ProgressCounters>,
    /// Its rate limit (or the one of the job it was built in); open, the fast path.
    gate: Gate,
}

impl Default for Serial {
    fn default() -> Self {
        Self::new()
    }
}

impl Serial {
    /// A serial executor (without a limit of its own: inside a rate-limited job, it draws from
    /// that job's limit).
    pub fn new() -> Self {
        // `Gate::new` fails only on a limit or a `max_in_flight` of its own, and this has neither.
        let gate = Gate::new(None, None).unwrap_or_default();
        Self { progress: Arc::default(), gate }
    }

    /// A builder, for the same settings as the other executors' builders.
    pub fn builder() -> SerialBuilder {
        SerialBuilder { job_timeout: None, rate_limit: None, max_in_flight: None }
    }
}

/// Configures a [`Serial`] executor: the settings of the other executors' builders that one
/// job at a time on the caller's thread can honour, and a clear refusal of the one it cannot.
#[derive(Debug, Clone)]
pub struct SerialBuilder {
    job_timeout: Option<Duration>,
    rate_limit: Option<RateLimit>,
    max_in_flight: Option<usize>,
}

impl SerialBuilder {
    /// A job time limit, which `Serial` cannot enforce: [`build`](Self::build) then fails with
    /// [`BuildError::JobTimeoutUnsupported`].
    pub fn job_timeout(mut self, limit: Duration) -> Self {
        self.job_timeout = Some(limit);
        self
    }

    /// A rate limit on its jobs (or, with [`RateLimit::per_request`], on the requests its jobs
    /// announce with [`limit::acquire`](crate::limit::acquire)): each job waits for its permit
    /// on the caller's thread before it runs. A limit that is not positive is refused by
    /// [`build`](Self::build) with [`BuildError::InvalidRateLimit`].
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// At most `jobs` jobs in flight: `Serial` never has more than one, so any `jobs` of at
    /// least 1 holds already; 0 is refused by [`build`](Self::build) with
    /// [`BuildError::ZeroInFlight`], as on every executor.
    pub fn max_in_flight(mut self, jobs: usize) -> Self {
        self.max_in_flight = Some(jobs);
        self
    }

    /// The executor, or why it cannot honour the settings.
    pub fn build(self) -> Result<Serial, BuildError> {
        if self.job_timeout.is_some() {
            return Err(BuildError::JobTimeoutUnsupported { executor: "serial" });
        }
        if self.max_in_flight == Some(0) {
            return Err(BuildError::ZeroInFlight);
        }
        // One job at a time on one thread: a slot per job would limit nothing.
        let gate = Gate::new(self.rate_limit, None)?;
        Ok(Serial { progress: Arc::default(), gate })
    }
}

/// Runs `input` through `job` behind `gate`: after its permit, with the gate's permit source
/// as the job's own (for `limit::acquire` and the pools it builds).
#[inline]
fn run_gated<J: Job<I>, I>(gate: &Gate, job: &J, input: I) -> Result<J::Output, JobError> {
    if !gate.is_rate_limited() {
        return run_caught(job, input);
    }
    run_limited(gate, job, input)
}

#[inline(never)]
fn run_limited<J: Job<I>, I>(gate: &Gate, job: &J, input: I) -> Result<J::Output, JobError> {
    let _ambient = AmbientGuard::install(gate.source());
    let _pass = gate.enter();
    run_caught(job, input)
}

/// How many inputs a serial call counts locally before it adds them to the shared counters:
/// three atomic additions per input cost more than the empty jobs of the overhead benchmark.
const COUNT_BATCH: usize = 64;

/// A serial call's iterator: runs each input when it is pulled, and counts in batches (a
/// snapshot lags by less than [`COUNT_BATCH`] inputs while it runs, and is exact once the
/// iterator is done or dropped).
///
/// `LIMITED` is whether the gate has a rate limit, decided once per call rather than per
/// input: the open loop is then `run_caught` alone, with nothing out of line whose result it
/// would have to merge through memory (that merge cost an unlimited empty job 55
/// instructions instead of 37).
struct SerialIter<'a, J, It, const LIMITED: bool> {
    job: J,
    inputs: It,
    index: usize,
    progress: &'a ProgressCounters,
    gate: &'a Gate,
    /// Inputs run and not yet counted.
    ran: usize,
    tally: Tally,
}

impl<J, It, const LIMITED: bool> SerialIter<'_, J, It, LIMITED> {
    #[cold]
    #[inline(never)]
    fn flush(&mut self) {
        self.progress.submitted(self.ran);
        self.progress.started(self.ran);
        self.progress.add(&std::mem::take(&mut self.tally));
        self.ran = 0;
    }
}

impl<J, I, It, const LIMITED: bool> Iterator for SerialIter<'_, J, It, LIMITED>
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
        let result =
            if LIMITED { run_limited(self.gate, &self.job, input) } else { run_caught(&self.job, input) };
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

impl<J, It, const LIMITED: bool> Drop for SerialIter<'_, J, It, LIMITED> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A serial call's iterator, open or limited (see [`SerialIter`]).
enum SerialRun<'a, J, It> {
    Open(SerialIter<'a, J, It, false>),
    Limited(SerialIter<'a, J, It, true>),
}

impl<J, I, It> Iterator for SerialRun<'_, J, It>
where
    J: Job<I>,
    It: Iterator<Item = I>,
{
    type Item = (usize, Result<J::Output, JobError>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            SerialRun::Open(run) => run.next(),
            SerialRun::Limited(run) => run.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            SerialRun::Open(run) => run.size_hint(),
            SerialRun::Limited(run) => run.size_hint(),
        }
    }
}

impl Serial {
    fn iter<'a, J, It, const LIMITED: bool>(&'a self, job: J, inputs: It) -> SerialIter<'a, J, It, LIMITED> {
        SerialIter {
            job,
            inputs,
            index: 0,
            progress: &self.progress,
            gate: &self.gate,
            ran: 0,
            tally: Tally::default(),
        }
    }

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
        if self.gate.is_rate_limited() {
            SerialRun::Limited(self.iter(job, inputs))
        } else {
            SerialRun::Open(self.iter(job, inputs))
        }
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

    /// One loop for the whole call, open or limited, with no per-input branch on the limit.
    fn map<J, I>(&self, job: J, inputs: impl IntoIterator<Item = I>) -> Vec<Result<J::Output, JobError>>
    where
        J: Job<I>,
        I: Payload,
        J::Output: Payload,
    {
        let inputs = inputs.into_iter();
        if self.gate.is_rate_limited() {
            self.iter::<_, _, true>(job, inputs).map(|(_, result)| result).collect()
        } else {
            self.iter::<_, _, false>(job, inputs).map(|(_, result)| result).collect()
        }
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
            reply.send_one(run_gated(&self.gate, &job, input));
        }
        handle
    }

    fn shutdown(self, _mode: Shutdown) {}
}
