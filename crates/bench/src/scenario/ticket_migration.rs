//! `ticket-migration` (article 2): move a queue's tickets from the old system to the new one,
//! nested as in the article: an outer executor over the tickets, and inside each ticket's job
//! an inner executor **of the same kind** over that ticket's attachments.
//!
//! Per ticket ([`MigrateTicket`]): `GET /old/tickets/{id}`, `GET /old/tickets/{id}/attachments`,
//! `POST /new/tickets` with the ticket's JSON exactly as fetched and `Idempotency-Key: <old id>`;
//! then per attachment ([`CopyAttachment`], on the inner executor): `GET /old/attachments/{id}`
//! and `POST /new/tickets/{new_id}/attachments` with `X-Attachment-Name`. The job carries the
//! executor kind and the inner worker count as fields and builds its inner executor with
//! [`dispatch`] as an [`AnyExecutor`] (a serial run nests a serial executor).
//!
//! **The async version** (`run_async`, `--executor async`) sends the same requests in the
//! same order per ticket, as futures on the async executor over one shared client
//! ([`AsyncApi`]): the outer executor keeps `--workers` tickets in flight, and each ticket's
//! future copies its attachments `--inner-workers` at a time *inside itself*
//! ([`map_concurrent`]), the async form of the nested pool: no executor is built per ticket,
//! and `nested` in the output means this inner concurrency.
//!
//! The timed window covers the queue listing and the migration. Verification compares
//! `GET /new/tickets/summary` with the summary a correct migration of exactly these tickets
//! produces ([`expected_summary`]), and counts what the jobs themselves reported: a ticket or
//! attachment that was already there (`200` instead of `201`) is a duplicate, one that was
//! never stored is lost.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use fanout_async::map_concurrent;
use fanout_core::{Executor, JobError, Stateful, StatefulJob};
use fanout_mock_api::{Attachment, Dataset, QueueEntry, Summary, Ticket};
use serde::{Deserialize, Serialize};

use fanout::bar::indicatif::ProgressBar;
use fanout::limit::RateLimit;

use super::{
    Reruns, RunOutcome, RunSpec, ScenarioError, Tally, Timing, flatten, progress_bar, rerun_expired, ticker,
    timed_async, timed_resilient,
};
use crate::executor::{AnyExecutor, ExecutorKind, dispatch};
use crate::http::{Answer, Api, HttpError, RequestStats, measured};
use crate::http_async::AsyncApi;
use crate::ideal::{self, Applied};
use crate::retry::Deadline;

/// The outer job: migrates one ticket, its attachments on a nested executor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrateTicket {
    /// The server.
    pub api: Api,
    /// The kind of the nested executor: the same as the outer one.
    pub executor: ExecutorKind,
    /// Workers of the nested executor.
    pub inner_workers: usize,
    /// How long one ticket may take, retries included; past it, its requests give up.
    pub deadline: Duration,
}

/// The inner job: copies one attachment to the new ticket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyAttachment {
    /// The server.
    pub api: Api,
    /// The ticket's id in the new system.
    pub new_ticket_id: u64,
    /// What is left of the ticket's deadline when the attachment jobs start.
    pub deadline: Duration,
}

/// What migrating one ticket did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migrated {
    /// The ticket's id in the new system.
    pub new_id: u64,
    /// `true` when the POST created the ticket (`201`), `false` when it already existed.
    pub created: bool,
    /// Attachments the old system listed.
    pub listed: usize,
    /// Attachments created (`201`).
    pub copied: usize,
    /// Attachments that were already there (`200`).
    pub already_there: usize,
    /// Attachments that failed, with the reason.
    pub failures: Vec<String>,
    /// Requests retried for this ticket, its attachments included (blocking clients; the
    /// async client counts for the whole run).
    #[serde(default)]
    pub retries: u64,
}

impl Migrated {
    /// A ticket the new system answered `answer` to (`201` created, `200` already there),
    /// with `listed` attachments still to copy.
    fn posted(answer: &Answer, listed: usize) -> Result<Self, HttpError> {
        let Created { id: new_id } = answer.json(|| "POST /new/tickets".to_owned())?;
        Ok(Self {
            new_id,
            created: answer.status == 201,
            listed,
            copied: 0,
            already_there: 0,
            failures: Vec::new(),
            retries: 0,
        })
    }
}

/// Why a ticket could not be migrated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MigrationError {
    /// A request of the ticket itself failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The nested executor could not be built.
    #[error("nested executor: {0}")]
    Inner(String),
    /// The ticket took longer than its deadline (async; the blocking jobs' requests give up
    /// with an `HttpError` instead).
    #[error(
        "the ticket's deadline of {0:?} passed; migrate it again later, its idempotency keys prevent duplicates"
    )]
    Deadline(Duration),
}

#[derive(Deserialize)]
struct Created {
    id: u64,
}

impl StatefulJob<u64> for MigrateTicket {
    /// The ticket's migration, and what its requests did (its attachments' included), for a
    /// ticket that failed too.
    type Output = (Result<Migrated, MigrationError>, RequestStats);

    fn call(&self, id: u64) -> Self::Output {
        // The attachments' requests run on the inner executor's workers, which report their
        // own (a serial inner executor runs them on this thread, counted apart).
        let mut attachments = RequestStats::ZERO;
        let (mut result, own) = measured(|| self.migrate(id, &mut attachments));
        let stats = own.and(attachments);
        if let Ok(migrated) = &mut result {
            migrated.retries = stats.retries;
        }
        (result, stats)
    }
}

impl MigrateTicket {
    /// The ticket's requests, then its attachments on a nested executor, whose requests'
    /// counts are added to `attachments`.
    fn migrate(&self, id: u64, attachments_stats: &mut RequestStats) -> Result<Migrated, MigrationError> {
        let deadline = Deadline::after(Instant::now(), self.deadline);
        let api = &self.api.clone().with_deadline(deadline);
        let details = api.get_bytes(&format!("/old/tickets/{id}"))?;
        let attachments: Vec<Attachment> = api.get_json(&format!("/old/tickets/{id}/attachments"))?;
        let key = id.to_string();
        let headers = [("Idempotency-Key", key.as_str()), ("Content-Type", "application/json")];
        let answer = api.post("/new/tickets", &headers, &details)?;
        let mut migrated = Migrated::posted(&answer, attachments.len())?;
        let new_id = migrated.new_id;
        let copy = Stateful(CopyAttachment {
            api: api.clone(),
            new_ticket_id: new_id,
            deadline: deadline.remaining(Instant::now()),
        });
        // The inner executor is built without a limit: inside a limited job it draws from the
        // root executor's (a process worker asks its parent), so the limit holds for them too.
        let results = dispatch(self.executor, self.inner_workers, |inner| inner.map(copy, attachments))
            .map_err(|e| MigrationError::Inner(e.to_string()))?;
        for result in results {
            let result = result.map(|(copied, stats)| {
                *attachments_stats = attachments_stats.and(stats);
                copied
            });
            match flatten(result) {
                Ok(true) => migrated.copied += 1,
                Ok(false) => migrated.already_there += 1,
                Err(error) => migrated.failures.push(error),
            }
        }
        Ok(migrated)
    }
}

impl StatefulJob<Attachment> for CopyAttachment {
    type Output = (Result<bool, HttpError>, RequestStats);

    /// Copies the attachment: whether the new system created it (`false`: it was there
    /// already), and what its requests did.
    fn call(&self, attachment: Attachment) -> Self::Output {
        measured(|| {
            // The deadline travels as a duration: an `Instant` means nothing in a worker process.
            let api = self.api.clone().with_deadline(Deadline::after(Instant::now(), self.deadline));
            let bytes = api.get_bytes(&format!("/old/attachments/{}", attachment.id))?;
            let path = format!("/new/tickets/{}/attachments", self.new_ticket_id);
            let headers = [
                ("X-Attachment-Name", attachment.name.as_str()),
                ("Content-Type", "application/octet-stream"),
            ];
            Ok(api.post(&path, &headers, &bytes)?.status == 201)
        })
    }
}

/// The async version of [`MigrateTicket`]: the same requests in the same order, the
/// attachments `inner_workers` at a time inside this ticket's future.
async fn migrate_ticket(api: AsyncApi, id: u64, inner_workers: usize) -> Result<Migrated, MigrationError> {
    let details = api.get_bytes(&format!("/old/tickets/{id}")).await?;
    let attachments: Vec<Attachment> = api.get_json(&format!("/old/tickets/{id}/attachments")).await?;
    let key = id.to_string();
    let headers = [("Idempotency-Key", key.as_str()), ("Content-Type", "application/json")];
    let answer = api.post("/new/tickets", &headers, details).await?;
    let mut migrated = Migrated::posted(&answer, attachments.len())?;
    let new_id = migrated.new_id;
    let results =
        map_concurrent(inner_workers, attachments, |attachment| copy_attachment(&api, new_id, attachment))
            .await;
    for result in results {
        match flatten(result) {
            Ok(true) => migrated.copied += 1,
            Ok(false) => migrated.already_there += 1,
            Err(error) => migrated.failures.push(error),
        }
    }
    Ok(migrated)
}

/// The async version of [`CopyAttachment`]; `true` when the new system created it.
async fn copy_attachment(
    api: &AsyncApi,
    new_ticket_id: u64,
    attachment: Attachment,
) -> Result<bool, HttpError> {
    let bytes = api.get_bytes(&format!("/old/attachments/{}", attachment.id)).await?;
    let path = format!("/new/tickets/{new_ticket_id}/attachments");
    let headers =
        [("X-Attachment-Name", attachment.name.as_str()), ("Content-Type", "application/octet-stream")];
    Ok(api.post(&path, &headers, bytes).await?.status == 201)
}

type TicketResult = Result<Result<Migrated, MigrationError>, JobError>;

/// A ticket job's result with what its requests did.
type CountedTicket = Result<(Result<Migrated, MigrationError>, RequestStats), JobError>;

/// How long one ticket may take, retries included: 20 times the policy's per-request timeout
/// (20 minutes at the article's time scale, where a ticket costs ~22.5 s without faults).
fn ticket_deadline(api: &Api) -> Duration {
    api.retry().request_timeout.saturating_mul(20)
}

/// The job that lists a queue: its first `limit` ticket ids. A job like the tickets', so that
/// the executor's job time limit covers it too (the listing can hang like any request).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListQueue {
    /// The server.
    pub api: Api,
    /// How many of the queue's tickets to migrate.
    pub limit: usize,
}

impl StatefulJob<String> for ListQueue {
    type Output = (Result<Vec<u64>, HttpError>, RequestStats);

    fn call(&self, queue: String) -> Self::Output {
        measured(|| {
            let listing: Vec<QueueEntry> = self.api.get_json(&format!("/old/queues/{queue}/tickets"))?;
            Ok(listing.into_iter().take(self.limit).map(|entry| entry.id).collect())
        })
    }
}

/// The listing's result, its executor error folded into an `HttpError` (the run then fails).
fn listed(
    queue: &str,
    result: Option<Result<Result<Vec<u64>, HttpError>, JobError>>,
) -> Result<Vec<u64>, HttpError> {
    let request = || format!("GET /old/queues/{queue}/tickets");
    match result {
        Some(Ok(ids)) => ids,
        Some(Err(error)) => Err(HttpError::Transport { request: request(), message: error.to_string() }),
        None => Err(HttpError::Transport { request: request(), message: "no result".to_owned() }),
    }
}

/// The timed part: list the queue, migrate its first `limit` tickets, and run again the jobs
/// that expired (at most `rounds` rounds of re-runs).
struct Migration<'a> {
    job: MigrateTicket,
    queue: &'static str,
    limit: usize,
    rounds: u32,
    bar: Option<&'a ProgressBar>,
}

/// What the timed part returns: the tickets' results in queue order, what the re-runs did,
/// the executor's counts and what the requests did.
type MigrationRun = (Vec<(u64, TicketResult)>, Reruns, fanout::Progress, RequestStats);

impl Migration<'_> {
    fn run(self, executor: &AnyExecutor) -> Result<MigrationRun, HttpError> {
        let stats = Cell::new(RequestStats::ZERO);
        let count = |result: Result<(Result<Vec<u64>, HttpError>, RequestStats), JobError>| {
            result.map(|(ids, counted)| {
                stats.set(stats.get().and(counted));
                ids
            })
        };
        let list = Stateful(ListQueue { api: self.job.api.clone(), limit: self.limit });
        let list_once =
            || executor.map(list.clone(), [self.queue.to_owned()]).into_iter().map(count).collect();
        let mut listing: Vec<_> = list_once();
        let listing_reruns = rerun_expired(&mut listing, self.rounds, |_| list_once());
        let ids = listed(self.queue, listing.pop())?;
        let job = Stateful(self.job);
        let migrate = |ids: &[u64]| {
            let done = unordered_with(self.bar, executor, job.clone(), ids).map(|(index, result)| {
                let result = result.map(|(migrated, counted)| {
                    stats.set(stats.get().and(counted));
                    migrated
                });
                (index, result)
            });
            in_queue_order(ids, done)
        };
        let mut results = migrate(&ids);
        // The migration is idempotent (the `Idempotency-Key` and `X-Attachment-Name` rules):
        // a ticket whose job was stopped midway is migrated again, meeting its own work as `200`s.
        let reruns = rerun_expired(&mut results, self.rounds, |expired| {
            migrate(&expired.iter().filter_map(|&i| ids.get(i).copied()).collect::<Vec<_>>())
        });
        let results = ids.iter().copied().zip(results).collect();
        Ok((results, listing_reruns.and(reruns), executor.progress(), stats.get()))
    }
}

/// `executor.map_unordered`, through `bar` when there is one.
fn unordered_with<'a>(
    bar: Option<&ProgressBar>,
    executor: &'a AnyExecutor,
    job: Stateful<MigrateTicket>,
    ids: &[u64],
) -> Box<dyn Iterator<Item = (usize, CountedTicket)> + 'a> {
    let ids = ids.to_vec();
    match bar {
        Some(bar) => Box::new(fanout::bar::map_unordered(executor, job, ids, bar)),
        None => Box::new(executor.map_unordered(job, ids)),
    }
}

/// Tells the orchestrator about each ticket as it finishes (see [`super::progress`]), and
/// puts the results back in the order of `ids`.
fn in_queue_order(ids: &[u64], done: impl Iterator<Item = (usize, TicketResult)>) -> Vec<TicketResult> {
    let mut results: Vec<Option<TicketResult>> = ids.iter().map(|_| None).collect();
    for (index, result) in done {
        if let (Some(&id), Some(slot)) = (ids.get(index), results.get_mut(index)) {
            super::progress::ticket_done(
                id,
                matches!(&result, Ok(Ok(migrated)) if migrated.failures.is_empty()),
            );
            *slot = Some(result);
        }
    }
    // Every executor yields each index once; a missing one would be a lost ticket.
    results.into_iter().map(|result| result.unwrap_or(Err(JobError::Cancelled))).collect()
}

/// Migrates the first `spec.jobs` tickets of `spec.queue` and verifies the new system; with
/// `limit` (`--throttle`, per request), every request of every ticket and attachment takes a
/// permit of the outer executor's limit.
pub(super) fn run(
    spec: &RunSpec,
    api: Api,
    latency: &Applied,
    data: &Dataset,
    limit: Option<RateLimit>,
) -> Result<RunOutcome, ScenarioError> {
    let queue = spec.queue.name();
    let ids = data.queue(queue).unwrap_or_default().get(..spec.jobs).unwrap_or_default();
    let job = MigrateTicket {
        api: api.clone(),
        executor: spec.executor,
        inner_workers: spec.inner_workers,
        deadline: ticket_deadline(&api),
    };
    let bar = progress_bar(spec);
    let task = Migration { job, queue, limit: spec.jobs, rounds: spec.rerun_rounds, bar: bar.as_ref() };
    let ((migrated, worker_retries), timing) = timed_resilient(spec, limit, |executor| task.run(executor))?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let (results, reruns, progress, stats) = migrated?;
    let checked = Checked { spec, api: &api, latency, data, ids };
    let runs = Runs { http_retries: Some(stats.retries), worker_retries, reruns, progress, stats };
    checked.outcome(results, timing, runs)
}

/// The native-async migration: list the queue, then `spec.workers` ticket futures in flight,
/// each with its attachments `spec.inner_workers` at a time; verified like [`run`].
///
/// Without a job time limit each ticket's future has the blocking job's deadline
/// ([`ticket_deadline`]) and fails past it; with one (`--job-timeout`), the executor's limit
/// replaces it: a stuck ticket's future is dropped, and the ticket is migrated again.
pub(super) fn run_async(
    spec: &RunSpec,
    api: Api,
    latency: &Applied,
    data: &Dataset,
    rate_limit: Option<RateLimit>,
) -> Result<RunOutcome, ScenarioError> {
    let queue = spec.queue.name();
    let ids = data.queue(queue).unwrap_or_default().get(..spec.jobs).unwrap_or_default();
    let (limit, inner_workers, rounds) = (spec.jobs, spec.inner_workers, spec.rerun_rounds);
    let deadline = spec.resilience.job_timeout.is_none().then(|| ticket_deadline(&api));
    let bar = progress_bar(spec);
    let (results, timing) = timed_async(spec, rate_limit, |executor| {
        let client = AsyncApi::new(&api)?;
        let list = || {
            let lister = client.clone();
            executor.block_on(async move {
                let listing =
                    lister.get_json::<Vec<QueueEntry>>(&format!("/old/queues/{queue}/tickets")).await?;
                Ok::<Vec<u64>, HttpError>(listing.into_iter().take(limit).map(|entry| entry.id).collect())
            })
        };
        let mut listing = vec![list()];
        let listing_reruns = rerun_expired(&mut listing, rounds, |_| vec![list()]);
        let listed_ids = listed(queue, listing.pop())?;
        let migrate = |ids: &[u64]| {
            let client = client.clone();
            let _ticker = ticker(bar.as_ref(), executor.progress_watch(), ids.len());
            let done = executor.map_async_unordered(
                move |id| {
                    let ticket = migrate_ticket(client.clone(), id, inner_workers);
                    async move {
                        match deadline {
                            Some(deadline) => tokio::time::timeout(deadline, ticket)
                                .await
                                .unwrap_or(Err(MigrationError::Deadline(deadline))),
                            None => ticket.await,
                        }
                    }
                },
                ids.to_vec(),
            );
            in_queue_order(ids, done)
        };
        let mut results = migrate(&listed_ids);
        let reruns = rerun_expired(&mut results, rounds, |expired| {
            migrate(&expired.iter().filter_map(|&i| listed_ids.get(i).copied()).collect::<Vec<_>>())
        });
        let results: Vec<(u64, TicketResult)> = listed_ids.iter().copied().zip(results).collect();
        Ok::<_, HttpError>((results, client.stats(), listing_reruns.and(reruns), executor.progress()))
    })?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let (results, stats, reruns, progress) = results?;
    let checked = Checked { spec, api: &api, latency, data, ids };
    let runs = Runs { http_retries: Some(stats.retries), worker_retries: None, reruns, progress, stats };
    checked.outcome(results, timing, runs)
}

/// What a migration counted besides its results.
struct Runs {
    http_retries: Option<u64>,
    worker_retries: Option<u64>,
    reruns: Reruns,
    progress: fanout::Progress,
    stats: RequestStats,
}

/// What both migrations (blocking and async) check their results against, outside the timed
/// window: the new system's summary, the dataset and the ideal time.
struct Checked<'a> {
    spec: &'a RunSpec,
    api: &'a Api,
    latency: &'a Applied,
    data: &'a Dataset,
    ids: &'a [u64],
}

impl Checked<'_> {
    fn outcome(
        &self,
        results: Vec<(u64, TicketResult)>,
        timing: Timing,
        runs: Runs,
    ) -> Result<RunOutcome, ScenarioError> {
        let Self { spec, api, latency, data, ids } = *self;
        let summary: Summary = api.get_json("/new/tickets/summary")?;
        let attachments: Vec<usize> =
            ids.iter().map(|&id| data.attachments(id).map_or(0, <[_]>::len)).collect();
        let ideal =
            ideal::migration(latency, &attachments, spec.effective_workers(), spec.effective_inner_workers());
        let mut tally = verify(results, ids, data, &summary)
            .with_runs(runs.reruns, Some(runs.progress))
            .with_stats(runs.stats);
        tally.http_retries = runs.http_retries;
        tally.worker_retries = runs.worker_retries;
        Ok(tally.outcome(timing, ideal))
    }
}

/// Counts correct, failed, lost and duplicated tickets and attachments.
///
/// A ticket or attachment the new system answered `200` ("already there") is not a duplicate:
/// a retried POST whose first attempt was applied before its answer was lost, or a run that
/// resumes an interrupted migration, meets its own earlier work, and the idempotency keys
/// are what make that safe. Duplicates are what the new system holds beyond a correct
/// migration (its summary), plus tickets reported more than once.
fn verify(results: Vec<(u64, TicketResult)>, ids: &[u64], data: &Dataset, summary: &Summary) -> Tally {
    let mut tally = Tally::default();
    let listed = |id: u64| data.attachments(id).map_or(0, <[_]>::len);
    let (mut lost, mut duplicated) = (0, 0);
    let mut reported: HashMap<u64, usize> = HashMap::new();
    for (id, result) in results {
        *reported.entry(id).or_default() += 1;
        match flatten(result) {
            Ok(migrated) => {
                let present = migrated.copied + migrated.already_there;
                lost += listed(id).saturating_sub(present);
                if let Some(failure) = migrated.failures.first() {
                    tally.error(format!("ticket {id}: attachment: {failure}"));
                } else if present != listed(id) {
                    tally.error(format!("ticket {id}: migrated incompletely: {migrated:?}"));
                } else {
                    tally.ok += 1;
                }
            }
            Err(error) => {
                lost += 1 + listed(id);
                tally.error(format!("ticket {id}: {error}"));
            }
        }
    }
    for &id in ids {
        match reported.get(&id).copied().unwrap_or(0) {
            0 => lost += 1 + listed(id),
            n => duplicated += n - 1,
        }
    }
    let expected = expected_summary(data, ids);
    let difference = |got: u64, want: u64| usize::try_from(got.saturating_sub(want)).unwrap_or(usize::MAX);
    let missing =
        difference(expected.tickets, summary.tickets) + difference(expected.attachments, summary.attachments);
    let extra =
        difference(summary.tickets, expected.tickets) + difference(summary.attachments, expected.attachments);
    tally.lost = lost.max(missing);
    tally.duplicated = duplicated.max(extra);
    tally.verified = *summary == expected;
    if !tally.verified && tally.first_error.is_none() {
        tally.first_error =
            Some(format!("the new system holds {summary:?}, a correct migration gives {expected:?}"));
    }
    tally
}

/// The summary a fresh server reports after a correct migration of exactly the tickets `ids`.
///
/// [`Dataset::expected_summary`] covers whole queues only, so this recomputes the checksum the
/// way the mock API documents it (`fanout_mock_api::checksum`): the wrapping sum of a 64-bit
/// FNV-1a digest per ticket and per attachment over framed fields. A test pins it to
/// `Dataset::expected_summary` on a whole queue.
pub fn expected_summary(data: &Dataset, ids: &[u64]) -> Summary {
    let (mut tickets, mut attachments, mut sum) = (0_u64, 0_u64, 0_u64);
    for &id in ids {
        let Some(ticket) = data.ticket(id) else { continue };
        tickets += 1;
        sum = sum.wrapping_add(ticket_digest(ticket));
        for attachment in data.attachments(id).unwrap_or_default() {
            let bytes = data.attachment_bytes(attachment.id).unwrap_or_default();
            attachments += 1;
            sum = sum.wrapping_add(attachment_digest(id, &attachment.name, &bytes));
        }
    }
    Summary { tickets, attachments, checksum: format!("{sum:016x}") }
}

/// 64-bit FNV-1a over framed values: a `u64` is 8 little-endian bytes, a blob its length as a
/// `u64` and then its bytes.
struct Fnv1a(u64);

impl Fnv1a {
    fn new(tag: &[u8]) -> Self {
        let mut hash = Self(0xcbf2_9ce4_8422_2325);
        hash.write(tag);
        hash
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.write(&value.to_le_bytes());
    }

    fn write_blob(&mut self, bytes: &[u8]) {
        self.write_u64(bytes.len() as u64);
        self.write(bytes);
    }
}

fn ticket_digest(ticket: &Ticket) -> u64 {
    let mut hash = Fnv1a::new(b"ticket\0");
    hash.write_u64(ticket.id); // the Idempotency-Key
    hash.write_u64(ticket.id);
    for field in [&ticket.subject, &ticket.body, &ticket.requester, &ticket.created_at, &ticket.status] {
        hash.write_blob(field.as_bytes());
    }
    hash.0
}

fn attachment_digest(ticket_id: u64, name: &str, bytes: &[u8]) -> u64 {
    let mut hash = Fnv1a::new(b"attachment\0");
    hash.write_u64(ticket_id);
    hash.write_blob(name.as_bytes());
    hash.write_blob(bytes);
    hash.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn support(data: &Dataset) -> &[u64] {
        data.queue("support").unwrap_or_default()
    }

    fn perfect(data: &Dataset, ids: &[u64]) -> Vec<(u64, TicketResult)> {
        ids.iter()
            .enumerate()
            .map(|(i, &id)| {
                let listed = data.attachments(id).map_or(0, <[_]>::len);
                let migrated = Migrated {
                    new_id: 5_000_001 + i as u64,
                    created: true,
                    listed,
                    copied: listed,
                    already_there: 0,
                    failures: Vec::new(),
                    retries: 0,
                };
                (id, Ok(Ok(migrated)))
            })
            .collect()
    }

    #[test]
    fn the_client_side_summary_matches_the_datasets_for_whole_queues() {
        let data = Dataset::new(42);
        for queue in ["support", "archive"] {
            let ids = data.queue(queue).unwrap_or_default();
            assert_eq!(Some(expected_summary(&data, ids)), data.expected_summary(queue), "{queue}");
        }
    }

    #[test]
    fn a_perfect_migration_verifies() {
        let data = Dataset::new(42);
        let ids = &support(&data)[..10];
        let tally = verify(perfect(&data, ids), ids, &data, &expected_summary(&data, ids));
        assert_eq!((tally.ok, tally.errors, tally.lost, tally.duplicated), (10, 0, 0, 0));
        assert!(tally.verified);
    }

    #[test]
    fn failed_and_repeated_tickets_are_lost_and_duplicated() {
        let data = Dataset::new(42);
        let ids = &support(&data)[..3];
        let mut results = perfect(&data, ids);
        results[1].1 = Err(JobError::Cancelled);
        // Ticket 2 is reported twice.
        results.push(results[2].clone());
        let summary = expected_summary(&data, &ids[..1]);
        let tally = verify(results, ids, &data, &summary);
        let lost_expected = 1 + data.attachments(ids[1]).map_or(0, <[_]>::len);
        assert_eq!((tally.ok, tally.errors, tally.duplicated), (3, 1, 1));
        assert!(tally.lost >= lost_expected);
        assert!(!tally.verified);
    }

    #[test]
    fn work_found_already_done_is_no_duplicate() {
        // A retried POST whose first attempt was applied, or a resumed migration: the new
        // system answers 200 and holds each ticket and attachment once.
        let data = Dataset::new(42);
        let ids = &support(&data)[..3];
        let mut results = perfect(&data, ids);
        if let Ok(Ok(migrated)) = &mut results[2].1 {
            migrated.created = false;
            migrated.already_there = migrated.copied;
            migrated.copied = 0;
        }
        let tally = verify(results, ids, &data, &expected_summary(&data, ids));
        assert_eq!((tally.ok, tally.errors, tally.lost, tally.duplicated), (3, 0, 0, 0));
        assert!(tally.verified);
    }
}
