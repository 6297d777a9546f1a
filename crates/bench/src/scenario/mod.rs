//! The measured run: what the run child (`fanout __run`) does for one repetition.
//!
//! [`RunSpec`] says what to run; [`execute`] asks the server for the latencies it applies,
//! prepares the inputs, then times [`dispatch`] (building the executor, the
//! jobs, the shutdown: what a user program pays) and verifies every result, outside the timed
//! window. One module per scenario:
//!
//! - [`api_calls`]: `GET /api/items/{id}` for ids `1..=jobs` (article 1).
//! - [`ticket_migration`]: a queue migrated from the old system to the new one, with a nested
//!   executor over each ticket's attachments (article 2).
//! - [`cpu`]: a fixed amount of hashing per job, where threads and processes differ.
//! - `blocking-on-loop` (in [`api_calls`]): `api-calls` done wrong on `--executor async`, the
//!   blocking client called inside futures on the event loop: where async loses.
//!
//! With `--executor async` the HTTP scenarios run their native-async versions
//! ([`dispatch_async`]: futures on a current-thread runtime over one async client, `--workers`
//! futures in flight); `cpu` runs its blocking jobs through the `Executor` trait, on the async
//! executor's blocking pool.

pub mod api_calls;
pub mod cpu;
pub mod progress;
pub mod ticket_migration;

use std::fmt;
use std::time::{Duration, Instant};

use fanout_core::JobError;
use fanout_mock_api::Dataset;
use serde::{Deserialize, Serialize};

use fanout_async::AsyncExecutor;

use crate::executor::{
    AnyExecutor, ExecError, ExecutorKind, Resilience, dispatch, dispatch_async, dispatch_resilient,
};
use crate::http::{Api, HttpError, Secret};
use crate::ideal::{Applied, Health, MissingRoute};
use crate::retry::RetryPolicy;
use crate::usage;

/// The scenarios of `--scenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Many independent API calls (article 1).
    ApiCalls,
    /// The nested ticket migration (article 2).
    TicketMigration,
    /// CPU-bound jobs.
    Cpu,
    /// `api-calls` with the blocking client called inside futures on the async executor's
    /// event loop: each request stalls every other future (`--executor async` only).
    BlockingOnLoop,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::ApiCalls => "api-calls",
            Self::TicketMigration => "ticket-migration",
            Self::Cpu => "cpu",
            Self::BlockingOnLoop => "blocking-on-loop",
        }
    }

    /// The number of jobs when `--jobs` is not given.
    pub fn default_jobs(self, queue: Queue) -> usize {
        match self {
            Self::ApiCalls | Self::BlockingOnLoop => api_calls::DEFAULT_JOBS,
            Self::TicketMigration => queue.tickets(),
            Self::Cpu => cpu::DEFAULT_JOBS,
        }
    }

    /// The most jobs the scenario can run.
    pub fn max_jobs(self, queue: Queue) -> usize {
        match self {
            Self::ApiCalls | Self::BlockingOnLoop => {
                usize::try_from(fanout_mock_api::data::ITEM_ID_MAX).unwrap_or(usize::MAX)
            }
            Self::TicketMigration => queue.tickets(),
            Self::Cpu => 1 << 20,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The old system's queues (`--queue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Queue {
    /// 80 tickets, ~22.5 s a ticket serially at time scale 1.
    Support,
    /// 2000 tickets, ~18 s a ticket serially at time scale 1.
    Archive,
}

impl Queue {
    /// The queue's name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Support => "support",
            Self::Archive => "archive",
        }
    }

    /// How many tickets the queue holds (fixed by the mock API's contract).
    pub fn tickets(self) -> usize {
        match self {
            Self::Support => 80,
            Self::Archive => 2000,
        }
    }
}

/// What one measured run does: the orchestrator sends it to the run child as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The scenario.
    pub scenario: Scenario,
    /// The executor kind (of the outer and the inner executor).
    pub executor: ExecutorKind,
    /// Workers of the (outer) executor.
    pub workers: usize,
    /// Number of jobs (tickets for the migration).
    pub jobs: usize,
    /// The migration's queue.
    pub queue: Queue,
    /// Workers of the migration's inner executor.
    pub inner_workers: usize,
    /// The data seed of the server.
    pub seed: u64,
    /// The server's base URL (empty until the server runs).
    pub url: String,
    /// How the outer executor copes with dying workers (process pools only).
    #[serde(default)]
    pub resilience: Resilience,
}

impl RunSpec {
    /// Checks the spec against the scenario's limits.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let invalid = |message: String| Err(ScenarioError::InvalidSpec(message));
        let max = self.scenario.max_jobs(self.queue);
        if self.jobs == 0 || self.jobs > max {
            let what = match self.scenario {
                Scenario::TicketMigration => {
                    format!(" (the {} queue holds {max} tickets)", self.queue.name())
                }
                _ => String::new(),
            };
            return invalid(format!("--jobs must be between 1 and {max} for {}{what}", self.scenario));
        }
        if self.workers == 0 || self.inner_workers == 0 {
            return invalid("--workers and --inner-workers must be at least 1".to_owned());
        }
        let resilience = self.resilience;
        if (resilience.retry_lost > 0 || resilience.kill_worker_every.is_some())
            && self.executor != ExecutorKind::Process
        {
            return invalid(
                "--retry-lost and --kill-worker-every concern worker processes: use them with --executor process"
                    .to_owned(),
            );
        }
        if resilience.kill_worker_every.is_some_and(|every| every.is_zero()) {
            return invalid("--kill-worker-every must be longer than 0 seconds".to_owned());
        }
        if self.scenario == Scenario::BlockingOnLoop && self.executor != ExecutorKind::Async {
            return invalid(
                "--scenario blocking-on-loop shows a mistake of async code (blocking calls inside \
                 futures); run it with --executor async, and --scenario api-calls for the others"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// Workers the outer executor really has (1 for serial).
    pub fn effective_workers(&self) -> usize {
        self.executor.effective_workers(self.workers)
    }

    /// Workers the inner executor really has (1 for serial).
    pub fn effective_inner_workers(&self) -> usize {
        self.executor.effective_workers(self.inner_workers)
    }
}

/// What a run measured and verified: the run child's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// From building the executor to its shutdown.
    pub wall_seconds: f64,
    /// The ideal time of the run ([`crate::ideal`]).
    pub ideal_seconds: f64,
    /// CPU time of the run child and its reaped descendants over the same window.
    pub cpu_seconds: f64,
    /// Jobs whose result was correct.
    pub ok: usize,
    /// Jobs that failed or returned a wrong result.
    pub errors: usize,
    /// Expected results that are missing.
    pub lost: usize,
    /// Results that arrived more than once.
    pub duplicated: usize,
    /// Whether the end state matched the expected one exactly (the migration's summary).
    pub verified: bool,
    /// The first error, to explain `errors`.
    pub first_error: Option<String>,
    /// HTTP requests retried (counted by the migration).
    #[serde(default)]
    pub http_retries: Option<u64>,
    /// Tasks that ran again because their worker process died.
    #[serde(default)]
    pub worker_retries: Option<u64>,
}

/// The run child's one line of output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildMessage {
    /// The run went through (its jobs may still have failed: see the counts).
    Done(RunOutcome),
    /// The run could not be carried out.
    Failed(String),
}

/// Why a run could not be carried out (failed jobs are counted, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The spec is out of range.
    #[error("{0}")]
    InvalidSpec(String),
    /// A request outside the jobs failed (health, queue listing, summary).
    #[error("the mock API did not answer as expected: {0}")]
    Http(#[from] HttpError),
    /// The executor could not run.
    #[error(transparent)]
    Executor(#[from] ExecError),
    /// `/health` lacks a route.
    #[error(transparent)]
    Health(#[from] MissingRoute),
    /// The server serves other data than the run expects.
    #[error("the mock API serves seed {server}, but the run verifies against seed {expected}")]
    SeedMismatch {
        /// The server's seed.
        server: u64,
        /// The run's seed.
        expected: u64,
    },
}

/// Runs `spec` against the server at `spec.url`.
pub fn execute(spec: &RunSpec, token: Secret) -> Result<RunOutcome, ScenarioError> {
    spec.validate()?;
    let api = Api::new(spec.url.clone(), token);
    let health: Health = api.get_json("/health")?;
    if health.seed != spec.seed {
        return Err(ScenarioError::SeedMismatch { server: health.seed, expected: spec.seed });
    }
    let latency = Applied::from_health(&health)?;
    // Retries back off on the server's clock: a run at time scale 0.01 waits 100 times less.
    let api = api.with_retry(RetryPolicy::default().scaled(health.time_scale));
    let data = Dataset::new(spec.seed);
    let native_async = spec.executor == ExecutorKind::Async;
    match spec.scenario {
        Scenario::ApiCalls if native_async => api_calls::run_async(spec, api, &latency, &data),
        Scenario::ApiCalls => api_calls::run(spec, api, &latency, &data),
        Scenario::TicketMigration if native_async => ticket_migration::run_async(spec, api, &latency, &data),
        Scenario::TicketMigration => ticket_migration::run(spec, api, &latency, &data),
        Scenario::Cpu => cpu::run(spec),
        Scenario::BlockingOnLoop => api_calls::run_blocking_on_loop(spec, api, &latency, &data),
    }
}

/// Wall and CPU time of a timed section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Elapsed time.
    pub wall: Duration,
    /// CPU time of this process and its reaped descendants.
    pub cpu: Duration,
}

/// Times [`dispatch`]: building the executor, the task, the shutdown.
fn timed<T>(
    kind: ExecutorKind,
    workers: usize,
    task: impl FnOnce(&AnyExecutor) -> T,
) -> Result<(T, Timing), ExecError> {
    measure(|| dispatch(kind, workers, task))
}

/// A task's output and how many of its tasks ran again after their worker died.
type Resilient<O> = (O, Option<u64>);

/// Times [`dispatch_resilient`]: as [`timed`], with the spec's [`Resilience`]; also returns
/// how many tasks ran again after their worker died.
fn timed_resilient<T>(
    spec: &RunSpec,
    task: impl FnOnce(&AnyExecutor) -> T,
) -> Result<(Resilient<T>, Timing), ExecError> {
    measure(|| dispatch_resilient(spec.executor, spec.workers, spec.resilience, task))
}

/// Times [`dispatch_async`]: building the async executor, the task, the shutdown.
fn timed_async<T>(workers: usize, task: impl FnOnce(&AsyncExecutor) -> T) -> Result<(T, Timing), ExecError> {
    measure(|| dispatch_async(workers, task))
}

fn measure<T>(run: impl FnOnce() -> Result<T, ExecError>) -> Result<(T, Timing), ExecError> {
    let cpu = usage::cpu_time();
    let start = Instant::now();
    let output = run()?;
    let wall = start.elapsed();
    Ok((output, Timing { wall, cpu: usage::cpu_time().saturating_sub(cpu) }))
}

/// Counts of a run's results, turned into a [`RunOutcome`].
#[derive(Debug, Default)]
struct Tally {
    http_retries: Option<u64>,
    worker_retries: Option<u64>,
    ok: usize,
    errors: usize,
    lost: usize,
    duplicated: usize,
    verified: bool,
    first_error: Option<String>,
}

impl Tally {
    /// Counts a failed job.
    fn error(&mut self, error: impl fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    fn outcome(self, timing: Timing, ideal: Duration) -> RunOutcome {
        RunOutcome {
            wall_seconds: timing.wall.as_secs_f64(),
            ideal_seconds: ideal.as_secs_f64(),
            cpu_seconds: timing.cpu.as_secs_f64(),
            ok: self.ok,
            errors: self.errors,
            lost: self.lost,
            duplicated: self.duplicated,
            verified: self.verified,
            first_error: self.first_error,
            http_retries: self.http_retries,
            worker_retries: self.worker_retries,
        }
    }
}

/// A job's result with the executor's error and the job's own error folded into one message.
fn flatten<T, E: fmt::Display>(result: Result<Result<T, E>, JobError>) -> Result<T, String> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.to_string()),
    }
}
