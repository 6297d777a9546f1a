//! The measured run: what the run child (`fanout __run`) does for one repetition.
//!
//! [`RunSpec`] says what to run; [`execute`] asks the server for the latencies it applies,
//! prepares the inputs, then times [`dispatch_on`] (building the executor, the
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
//!
//! **Stuck jobs.** With `--job-timeout` the (outer) executor stops every job that runs past
//! the limit ([`Resilience::job_timeout`]); its result is `JobError::Expired`. Every scenario is
//! idempotent (GETs, POSTs with their idempotency keys, pure hashing), so [`rerun_expired`] runs
//! the expired inputs again, at most [`RunSpec::rerun_rounds`] rounds, and the outcome counts
//! the expired results (`jobs_expired`) and the inputs run again (`job_reruns`). The serial
//! executor cannot stop a job and refuses the flag.
//!
//! **Rate limits.** With `--throttle R` ([`RunSpec::throttle`]) the (outer) executor gets the
//! client's own limit, [`client_limit`]: `R / time_scale` requests a real second, like the
//! server's `--rate-limit R`; one permit per job for `api-calls`, one per request for the
//! migration, whose clients take them (and pause the limit on a `429`) in [`crate::http`]. The
//! nested per-ticket executors are built without one and draw from the root's. The outcome
//! counts what the clients' requests did ([`crate::http::RequestStats`]: `responses_429`,
//! `requests`, `request_rate`), what the server counted (`server_responses_429`, from
//! `/health` before and after), and the ideals of a rate-limited run ([`ideal::throttled_api_calls`],
//! [`ideal::throttled_migration`]).
//!
//! **Progress bar.** When the orchestrator draws on a terminal it sets
//! [`RunSpec::progress_bar`], and the run child draws a bar (`fanout::bar`) that counts the
//! executor's completions; piped, nothing is drawn.

pub mod api_calls;
pub mod cpu;
pub mod progress;
pub mod ticket_migration;

use std::fmt;
use std::time::{Duration, Instant};

use fanout::bar::indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use fanout::{Executor, Job, Payload};
use fanout_core::JobError;
use fanout_mock_api::Dataset;
use serde::{Deserialize, Serialize};

use fanout_async::AsyncExecutor;

use crate::executor::{
    AnyExecutor, ExecError, ExecutorKind, Resilience, Workers, dispatch_async, dispatch_on,
};
use crate::http::{Api, HttpError, RequestStats, Secret};
use crate::ideal::{self, Applied, Health, MissingRoute};
use crate::retry::RetryPolicy;
use crate::usage;
use fanout::limit::RateLimit;

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
    /// How the outer executor copes with dying workers (process pools only) and stuck jobs.
    #[serde(default)]
    pub resilience: Resilience,
    /// At most this many rounds of re-runs of the inputs whose jobs expired (with a job
    /// time limit, [`Resilience::job_timeout`]).
    #[serde(default = "default_rerun_rounds")]
    pub rerun_rounds: u32,
    /// Draw a progress bar on standard error, with this label (the orchestrator's `run 1/3`);
    /// `None`: draw nothing.
    #[serde(default)]
    pub progress_bar: Option<String>,
    /// The client's own rate limit (`--throttle`), in requests per second at time scale 1,
    /// scaled by the server's time scale like its `--rate-limit` (see [`client_limit`]).
    #[serde(default)]
    pub throttle: Option<f64>,
    /// The burst of the client's limit (`--throttle-burst`; [`DEFAULT_THROTTLE_BURST`] when
    /// `None`).
    #[serde(default)]
    pub throttle_burst: Option<u32>,
    /// `--hosts K` (Redis only): the outer pool's workers are on K worker-host processes
    /// that the orchestrator starts, and the pool starts none; `None`: its own workers.
    #[serde(default)]
    pub hosts: Option<Hosts>,
}

/// The worker hosts of a run (`--hosts`): `fanout worker` processes serving one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hosts {
    /// How many host processes share the outer workers (`--workers` spread over them).
    pub count: usize,
    /// The queue they serve (empty until the orchestrator starts them).
    pub queue: String,
}

impl Hosts {
    /// Workers of host `index` (from 0) of `count` sharing `workers`: `workers / count`, the
    /// first `workers % count` hosts one more.
    pub fn workers_of(workers: usize, count: usize, index: usize) -> usize {
        workers / count.max(1) + usize::from(index < workers % count.max(1))
    }
}

/// The burst of the client's limit when `--throttle-burst` is not given: 2. With a burst of 1
/// GCRA spaces the permits evenly, but a permit granted late (a thread that overslept, a
/// worker process's request crossing the pool's channel) is lost for good, and the rate falls
/// below R: 472/s for a 500/s limit on 32 threads, 435/s on 32 worker processes, measured. A
/// burst of 2 lets the next permit make up for a late one, so the rate holds at R; the
/// server's bucket (one second's worth at time scale 1 by default) absorbs the pair.
pub const DEFAULT_THROTTLE_BURST: u32 = 2;

/// Rounds of re-runs of expired jobs when `--rerun-rounds` is not given. With a 2% hang rate
/// (and the proof test's other faults) a quarter of the `support` tickets meet a hang in the
/// first round, and each round re-runs about a third as many as the one before (the default
/// seed's drill: 33 re-runs in 4 rounds); 8 rounds leave room for other seeds.
pub const DEFAULT_RERUN_ROUNDS: u32 = 8;

fn default_rerun_rounds() -> u32 {
    DEFAULT_RERUN_ROUNDS
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
        if resilience.job_timeout.is_some() && self.executor == ExecutorKind::Serial {
            return invalid(
                "--job-timeout: the serial executor runs each job on the calling thread, where nothing can \
                 stop it, so it cannot enforce a job time limit (fanout refuses one rather than ignore it); \
                 use --executor thread, process or async for a job time limit, or run serial without \
                 --job-timeout"
                    .to_owned(),
            );
        }
        if resilience.job_timeout.is_some_and(|limit| limit.is_zero()) {
            return invalid("--job-timeout must be longer than 0 seconds".to_owned());
        }
        if resilience.kill_worker_every.is_some_and(|every| every.is_zero()) {
            return invalid("--kill-worker-every must be longer than 0 seconds".to_owned());
        }
        if let Some(rate) = self.throttle {
            if !(rate.is_finite() && rate > 0.0) {
                return invalid(format!(
                    "--throttle must be a finite number of requests per second above 0, not {rate}"
                ));
            }
            if !matches!(self.scenario, Scenario::ApiCalls | Scenario::TicketMigration) {
                return invalid(format!(
                    "--throttle limits the HTTP requests of api-calls and ticket-migration; {} makes none \
                     through the executor's limit",
                    self.scenario
                ));
            }
            if let Some(why) = crate::executor::rate_limit_unsupported(self.executor) {
                return invalid(why.to_owned());
            }
        }
        if let Some(hosts) = &self.hosts {
            if self.executor != ExecutorKind::Redis {
                return invalid(format!(
                    "--hosts starts worker hosts of a Redis queue: use it with --executor redis, not {}",
                    self.executor
                ));
            }
            if hosts.count == 0 || hosts.count > self.workers {
                return invalid(format!(
                    "--hosts must be between 1 and --workers ({}): every host runs at least one worker",
                    self.workers
                ));
            }
            if self.throttle.is_some() {
                return invalid(
                    "--throttle: worker hosts take no client rate limit; drop --throttle or --hosts"
                        .to_owned(),
                );
            }
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
    /// Results `JobError::Expired` seen, re-runs included: jobs the executor stopped at the
    /// job time limit.
    #[serde(default)]
    pub jobs_expired: u64,
    /// Inputs run again because their job expired.
    #[serde(default)]
    pub job_reruns: u64,
    /// Inputs run again in each round of re-runs (at most [`RunSpec::rerun_rounds`] rounds).
    #[serde(default)]
    pub job_reruns_by_round: Vec<u64>,
    /// The outer executor's own counts at the end of the run (`Executor::progress`).
    #[serde(default)]
    pub progress: Option<ProgressCounts>,
    /// `429` answers the clients saw (their own count, failed jobs' requests included).
    #[serde(default)]
    pub responses_429: Option<u64>,
    /// `429` answers the server sent over the run (its `/health` counts, before and after).
    #[serde(default)]
    pub server_responses_429: Option<u64>,
    /// Requests the clients sent, retries included.
    #[serde(default)]
    pub requests: Option<u64>,
    /// Requests a fault-free run makes, without retries (api-calls: one per job; the
    /// migration: the listing, and per ticket 3 plus 2 per attachment).
    #[serde(default)]
    pub required_requests: Option<u64>,
    /// The rate at which the clients' requests left, per real second, from the first to the
    /// last (what the server saw arrive, on loopback).
    #[serde(default)]
    pub request_rate: Option<f64>,
    /// The client's limit (`--throttle`) in requests per real second.
    #[serde(default)]
    pub throttle_per_second: Option<f64>,
    /// The server's rate limit (`--rate-limit`) in requests per real second.
    #[serde(default)]
    pub server_rate_limit_per_second: Option<f64>,
    /// `required_requests / R`, R the lower of the two limits: the ideal of a rate-limited run.
    #[serde(default)]
    pub rate_ideal_seconds: Option<f64>,
    /// The ideal of the rate-limited run: the limit and the latencies together, simulated
    /// ([`ideal::throttled_api_calls`], [`ideal::throttled_migration`]): `requests / R` plus
    /// what no permit can overlap (the last call's latency; the migration's listing, which
    /// every ticket waits for, and the tail of its last tickets' requests, one after another).
    #[serde(default)]
    pub rate_bound_seconds: Option<f64>,
}

/// [`fanout::Progress`] as the JSON line shows it: what the outer executor counted, in the
/// run child (the parent of any worker process). The executor's own type, serde and all.
pub type ProgressCounts = fanout::Progress;

/// What re-running expired jobs did (see [`rerun_expired`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reruns {
    /// `JobError::Expired` results seen, those of the re-runs included.
    pub expired: u64,
    /// Inputs run again, per round.
    pub by_round: Vec<u64>,
}

impl Reruns {
    /// Inputs run again.
    pub fn reruns(&self) -> u64 {
        self.by_round.iter().sum()
    }

    /// Rounds of re-runs.
    pub fn rounds(&self) -> u32 {
        u32::try_from(self.by_round.len()).unwrap_or(u32::MAX)
    }

    /// Both counts together (the listing's and the tickets', say), round by round.
    pub fn and(self, other: Self) -> Self {
        let (mut by_round, shorter) = if self.by_round.len() >= other.by_round.len() {
            (self.by_round, other.by_round)
        } else {
            (other.by_round, self.by_round)
        };
        by_round.iter_mut().zip(shorter).for_each(|(round, more)| *round += more);
        Self { expired: self.expired + other.expired, by_round }
    }
}

fn expired<O>(result: &Result<O, JobError>) -> bool {
    matches!(result, Err(JobError::Expired { .. }))
}

/// Runs the inputs whose results in `results` are `JobError::Expired` again, through `again`
/// (given their indices in `results`, it returns their new results in the same order), until
/// none expires or `rounds` rounds were run, and puts the new results in their places. Only
/// for idempotent jobs: an expired job may have done part of its work.
pub fn rerun_expired<O>(
    results: &mut [Result<O, JobError>],
    rounds: u32,
    mut again: impl FnMut(&[usize]) -> Vec<Result<O, JobError>>,
) -> Reruns {
    let mut counts =
        Reruns { expired: results.iter().filter(|r| expired(r)).count() as u64, ..Reruns::default() };
    while counts.rounds() < rounds {
        let indices: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, result)| expired(result))
            .map(|(index, _)| index)
            .collect();
        if indices.is_empty() {
            break;
        }
        counts.by_round.push(indices.len() as u64);
        let fresh = again(&indices);
        for (index, result) in indices.into_iter().zip(fresh) {
            counts.expired += u64::from(expired(&result));
            if let Some(slot) = results.get_mut(index) {
                *slot = result;
            }
        }
    }
    counts
}

/// The run child's one line of output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildMessage {
    /// The run went through (its jobs may still have failed: see the counts).
    Done(Box<RunOutcome>),
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
    let burst = spec.throttle_burst.unwrap_or(DEFAULT_THROTTLE_BURST);
    let limit =
        spec.throttle.map(|rate| client_limit(rate, burst, health.time_scale, spec.scenario)).transpose()?;
    // Retries back off on the server's clock: a run at time scale 0.01 waits 100 times less.
    let api = api.with_retry(RetryPolicy::default().scaled(health.time_scale));
    let data = Dataset::new(spec.seed);
    let native_async = spec.executor == ExecutorKind::Async;
    let mut outcome = match spec.scenario {
        Scenario::ApiCalls if native_async => api_calls::run_async(spec, api.clone(), &latency, &data, limit),
        Scenario::ApiCalls => api_calls::run(spec, api.clone(), &latency, &data, limit),
        Scenario::TicketMigration if native_async => {
            ticket_migration::run_async(spec, api.clone(), &latency, &data, limit)
        }
        Scenario::TicketMigration => ticket_migration::run(spec, api.clone(), &latency, &data, limit),
        Scenario::Cpu => cpu::run(spec),
        Scenario::BlockingOnLoop => api_calls::run_blocking_on_loop(spec, api.clone(), &latency, &data),
    }?;
    if spec.scenario != Scenario::Cpu {
        let after: Health = api.get_json("/health")?;
        outcome.server_responses_429 =
            Some(after.injected.rate_limited.saturating_sub(health.injected.rate_limited));
        outcome.throttle_per_second = limit.map(|limit| limit.rate());
        outcome.server_rate_limit_per_second = health.server_rate_limit();
        let required = required_requests(spec, &data);
        outcome.required_requests = Some(required);
        let rate = [outcome.throttle_per_second, outcome.server_rate_limit_per_second]
            .into_iter()
            .flatten()
            .min_by(f64::total_cmp);
        if let Some(rate) = rate {
            outcome.rate_ideal_seconds = Some(required as f64 / rate);
            // The client's burst when it has the lower limit, the server's bucket otherwise.
            let burst = match (outcome.throttle_per_second, health.faults.rate_limit) {
                (Some(throttle), _) if throttle <= rate => burst,
                (_, Some(server)) => server.burst,
                _ => burst,
            };
            let throttle = ideal::Throttle { rate, burst };
            let bound = match spec.scenario {
                Scenario::TicketMigration => {
                    let ids = data.queue(spec.queue.name()).unwrap_or_default();
                    let ids = ids.get(..spec.jobs).unwrap_or(ids);
                    let counts: Vec<usize> =
                        ids.iter().map(|&id| data.attachments(id).map_or(0, <[_]>::len)).collect();
                    let (outer, inner) = (spec.effective_workers(), spec.effective_inner_workers());
                    ideal::throttled_migration(&latency, &counts, outer, inner, throttle)
                }
                _ => ideal::throttled_api_calls(&latency, spec.jobs, spec.effective_workers(), throttle),
            };
            outcome.rate_bound_seconds = Some(bound.as_secs_f64());
        }
    }
    Ok(outcome)
}

/// The client's limit of `--throttle rate`, with `burst`: `rate` requests per second at time scale 1, so
/// `rate / time_scale` per real second, the server's own scaling of `--rate-limit` (at time
/// scale 0.01, `--throttle 5` is 500 requests a real second, as `--rate-limit 5` is). One permit
/// per job for api-calls (a job is one request), one per request for the migration (about eight
/// a ticket), which its clients take with `fanout::limit::acquire` ([`crate::http`]).
pub fn client_limit(
    rate: f64,
    burst: u32,
    time_scale: f64,
    scenario: Scenario,
) -> Result<RateLimit, ScenarioError> {
    if !(time_scale.is_finite() && time_scale > 0.0) {
        return Err(ScenarioError::InvalidSpec(format!(
            "--throttle is scaled by the server's time scale, and this server's is {time_scale}: \
             start it with a time scale above 0"
        )));
    }
    let limit = RateLimit::per_second(rate / time_scale).burst(burst);
    let limit = match scenario {
        Scenario::TicketMigration => limit.per_request(),
        _ => limit,
    };
    limit.validate().map_err(|error| ScenarioError::InvalidSpec(format!("--throttle {rate}: {error}")))?;
    Ok(limit)
}

/// Requests a fault-free run of `spec` makes (see [`RunOutcome::required_requests`]).
fn required_requests(spec: &RunSpec, data: &Dataset) -> u64 {
    match spec.scenario {
        Scenario::TicketMigration => {
            let ids = data.queue(spec.queue.name()).unwrap_or_default();
            let ids = ids.get(..spec.jobs).unwrap_or(ids);
            let per_ticket = |id: &u64| 3 + 2 * data.attachments(*id).map_or(0, <[_]>::len) as u64;
            1 + ids.iter().map(per_ticket).sum::<u64>()
        }
        _ => spec.jobs as u64,
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

/// A task's output and how many of its tasks ran again after their worker died.
type Resilient<O> = (O, Option<u64>);

/// Times [`dispatch_on`]: building the executor with the spec's [`Resilience`] (its
/// job time limit, and for process pools `retry_lost` and the worker-killing drill) and the
/// client's rate limit, the task and the shutdown; also returns how many tasks ran again after
/// their worker died.
fn timed_resilient<T>(
    spec: &RunSpec,
    limit: Option<RateLimit>,
    task: impl FnOnce(&AnyExecutor) -> T,
) -> Result<(Resilient<T>, Timing), ExecError> {
    let workers = match &spec.hosts {
        Some(hosts) => Workers::Hosts { workers: spec.workers, queue: &hosts.queue },
        None => Workers::Own(spec.workers),
    };
    measure(|| dispatch_on(spec.executor, workers, spec.resilience, limit, task))
}

/// Times [`dispatch_async`]: building the async executor (with the spec's job time limit and
/// the client's rate limit), the task, the shutdown.
fn timed_async<T>(
    spec: &RunSpec,
    limit: Option<RateLimit>,
    task: impl FnOnce(&AsyncExecutor) -> T,
) -> Result<(T, Timing), ExecError> {
    measure(|| dispatch_async(spec.workers, spec.resilience.job_timeout, limit, task))
}

fn measure<T>(run: impl FnOnce() -> Result<T, ExecError>) -> Result<(T, Timing), ExecError> {
    let cpu = usage::cpu_time();
    let start = Instant::now();
    let output = run()?;
    let wall = start.elapsed();
    Ok((output, Timing { wall, cpu: usage::cpu_time().saturating_sub(cpu) }))
}

/// The run child's progress bar on standard error, when the orchestrator asked for one
/// ([`RunSpec::progress_bar`]); it counts the outer executor's completions.
fn progress_bar(spec: &RunSpec) -> Option<ProgressBar> {
    let label = spec.progress_bar.as_deref()?;
    // The length grows by the inputs of each call: the jobs, then any re-runs.
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:20}] {pos}/{len} jobs {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("{label}: {} {} x{}", spec.scenario, spec.executor, spec.effective_workers()));
    Some(bar)
}

/// `executor.map`, through `bar` when there is one.
fn map_with<J, I>(
    bar: Option<&ProgressBar>,
    executor: &AnyExecutor,
    job: J,
    inputs: Vec<I>,
) -> Vec<Result<J::Output, JobError>>
where
    J: Job<I>,
    I: Payload,
    J::Output: Payload,
{
    match bar {
        Some(bar) => fanout::bar::map(executor, job, inputs, bar),
        None => executor.map(job, inputs),
    }
}

/// A bar's ticker over whatever `watch` counts (for the async executor's own futures).
fn ticker(
    bar: Option<&ProgressBar>,
    watch: fanout::ProgressWatch,
    inputs: usize,
) -> Option<fanout::bar::Ticker> {
    bar.map(|bar| fanout::bar::track(watch, bar, u64::try_from(inputs).ok()))
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
    reruns: Reruns,
    progress: Option<ProgressCounts>,
    /// What the clients' requests did, when the scenario counted them.
    stats: Option<RequestStats>,
}

impl Tally {
    /// Counts a failed job.
    fn error(&mut self, error: impl fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    /// The same counts with what re-running expired jobs did and the executor's progress.
    fn with_runs(mut self, reruns: Reruns, progress: Option<fanout::Progress>) -> Self {
        self.reruns = reruns;
        self.progress = progress;
        self
    }

    /// The same counts with what the clients' requests did.
    fn with_stats(mut self, stats: RequestStats) -> Self {
        self.http_retries = self.http_retries.or(Some(stats.retries));
        self.stats = Some(stats);
        self
    }

    fn outcome(self, timing: Timing, ideal: Duration) -> RunOutcome {
        let stats = self.stats;
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
            jobs_expired: self.reruns.expired,
            job_reruns: self.reruns.reruns(),
            job_reruns_by_round: self.reruns.by_round,
            progress: self.progress,
            responses_429: stats.map(|stats| stats.responses_429),
            server_responses_429: None,
            requests: stats.map(|stats| stats.attempts),
            required_requests: None,
            request_rate: stats.and_then(|stats| stats.rate()),
            throttle_per_second: None,
            server_rate_limit_per_second: None,
            rate_ideal_seconds: None,
            rate_bound_seconds: None,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMIT: Duration = Duration::from_millis(100);

    #[test]
    fn expired_inputs_run_again_until_none_expires() {
        let mut results: Vec<Result<u64, JobError>> = vec![
            Ok(0),
            Err(JobError::Expired { limit: LIMIT }),
            Ok(2),
            Err(JobError::Expired { limit: LIMIT }),
        ];
        let mut calls = Vec::new();
        let reruns = rerun_expired(&mut results, 8, |indices| {
            calls.push(indices.to_vec());
            // Input 3 expires once more, then succeeds.
            indices
                .iter()
                .map(|&i| match (i, calls.len()) {
                    (3, 1) => Err(JobError::Expired { limit: LIMIT }),
                    _ => Ok(i as u64),
                })
                .collect()
        });
        assert_eq!(results, [Ok(0), Ok(1), Ok(2), Ok(3)]);
        assert_eq!(calls, [vec![1, 3], vec![3]]);
        assert_eq!(reruns, Reruns { expired: 3, by_round: vec![2, 1] });
        assert_eq!((reruns.reruns(), reruns.rounds()), (3, 2));
    }

    #[test]
    fn reruns_are_bounded_and_other_errors_are_not_rerun() {
        let mut results: Vec<Result<u64, JobError>> =
            vec![Err(JobError::Expired { limit: LIMIT }), Err(JobError::Cancelled)];
        let reruns = rerun_expired(&mut results, 3, |indices| {
            indices.iter().map(|_| Err(JobError::Expired { limit: LIMIT })).collect()
        });
        assert_eq!(reruns.by_round, [1, 1, 1]);
        assert_eq!(reruns.expired, 4);
        assert!(matches!(results[0], Err(JobError::Expired { .. })));
        assert_eq!(results[1], Err(JobError::Cancelled));
        let none = rerun_expired(&mut results, 0, |_| unreachable!("no rounds"));
        assert_eq!(none.by_round, Vec::<u64>::new());
    }

    #[test]
    fn counts_add_up_round_by_round() {
        let listing = Reruns { expired: 1, by_round: vec![1] };
        let tickets = Reruns { expired: 5, by_round: vec![3, 1] };
        assert_eq!(listing.and(tickets), Reruns { expired: 6, by_round: vec![4, 1] });
    }

    /// A valid spec of api-calls on `executor`: 10 jobs on 4 workers, no limit, no hosts.
    fn spec(executor: ExecutorKind) -> RunSpec {
        RunSpec {
            scenario: Scenario::ApiCalls,
            executor,
            workers: 4,
            jobs: 10,
            queue: Queue::Support,
            inner_workers: 4,
            seed: 42,
            url: String::new(),
            resilience: Resilience::default(),
            rerun_rounds: DEFAULT_RERUN_ROUNDS,
            progress_bar: None,
            throttle: None,
            throttle_burst: None,
            hosts: None,
        }
    }

    #[test]
    fn serial_refuses_a_job_timeout_with_a_clear_message() {
        let spec = RunSpec {
            scenario: Scenario::TicketMigration,
            workers: 1,
            jobs: 80,
            resilience: Resilience { job_timeout: Some(LIMIT), ..Resilience::default() },
            ..spec(ExecutorKind::Serial)
        };
        let message = spec.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("cannot enforce a job time limit"), "{message}");
        let thread = RunSpec { executor: ExecutorKind::Thread, workers: 4, ..spec };
        assert!(thread.validate().is_ok());
    }

    #[test]
    fn worker_hosts_share_the_workers_and_only_redis_takes_them() {
        let shares =
            |workers, count| (0..count).map(|i| Hosts::workers_of(workers, count, i)).collect::<Vec<_>>();
        assert_eq!(shares(32, 2), [16, 16]);
        assert_eq!(shares(5, 3), [2, 2, 1]);
        let spec =
            RunSpec { hosts: Some(Hosts { count: 2, queue: String::new() }), ..spec(ExecutorKind::Redis) };
        assert!(spec.validate().is_ok());
        let message = |spec: RunSpec| spec.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message(RunSpec { executor: ExecutorKind::Thread, ..spec.clone() }).contains("--executor redis")
        );
        let too_many = RunSpec { hosts: Some(Hosts { count: 5, queue: String::new() }), ..spec.clone() };
        assert!(message(too_many).contains("between 1 and --workers"));
        // A spec of before `--hosts` still reads, with its own workers.
        let mut old = serde_json::to_value(&spec).unwrap_or_default();
        old.as_object_mut().map(|fields| fields.remove("hosts"));
        let old: RunSpec = serde_json::from_value(old).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(old.hosts, None);
    }

    #[test]
    fn a_throttle_is_refused_where_nothing_can_take_it() {
        let spec = RunSpec { throttle: Some(5.0), ..spec(ExecutorKind::Thread) };
        assert!(spec.validate().is_ok());
        assert!(RunSpec { executor: ExecutorKind::Process, ..spec.clone() }.validate().is_ok());
        let message = |spec: RunSpec| spec.validate().err().map(|e| e.to_string()).unwrap_or_default();
        // Serial's jobs wait for their permits on the caller's thread.
        assert!(RunSpec { executor: ExecutorKind::Serial, workers: 1, ..spec.clone() }.validate().is_ok());
        let cpu = message(RunSpec { scenario: Scenario::Cpu, ..spec.clone() });
        assert!(cpu.contains("makes none"), "{cpu}");
        let zero = message(RunSpec { throttle: Some(0.0), ..spec });
        assert!(zero.contains("above 0"), "{zero}");
    }

    #[test]
    fn the_throttle_is_scaled_like_the_servers_rate_limit() {
        let limit = client_limit(5.0, 2, 0.01, Scenario::ApiCalls).ok();
        assert_eq!(limit.map(|l| (l.rate().round(), l.scope())), Some((500.0, fanout::limit::Scope::PerJob)));
        let migration = client_limit(5.0, 2, 0.01, Scenario::TicketMigration).ok();
        assert_eq!(migration.map(|l| l.scope()), Some(fanout::limit::Scope::PerRequest));
        assert!(client_limit(5.0, 2, 0.0, Scenario::ApiCalls).is_err());
    }
}
