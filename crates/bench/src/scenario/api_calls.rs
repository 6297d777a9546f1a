//! `api-calls` (article 1): `GET /api/items/{id}` for ids `1..=jobs`, results in input order,
//! every item checked against the dataset the server serves.
//!
//! Three versions of the same requests, verified by the same code:
//! - `run`: a blocking job ([`FetchItem`], `ureq`) on any executor, through the trait;
//! - `run_async` (`--executor async`): one future per item over one shared async client
//!   ([`AsyncApi`]), at most `--workers` in flight on one thread;
//! - `run_blocking_on_loop` (`--scenario blocking-on-loop`): the async version done wrong,
//!   the blocking client called inside each future, so the event loop waits for every
//!   request in turn and `--workers` futures in flight make no difference.

use fanout::Executor;
use fanout_core::{JobError, Stateful, StatefulJob};
use fanout_mock_api::{Dataset, Item};
use serde::{Deserialize, Serialize};

use fanout::limit::RateLimit;

use super::{
    RunOutcome, RunSpec, ScenarioError, Tally, flatten, map_with, progress_bar, rerun_expired, ticker,
    timed_async, timed_resilient,
};
use crate::http::{Api, HttpError, RequestStats, measured};
use crate::http_async::AsyncApi;
use crate::ideal::{self, Applied};

/// Jobs when `--jobs` is not given: the article's 200 calls.
pub const DEFAULT_JOBS: usize = 200;

/// The job: fetch one item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchItem {
    /// The server.
    pub api: Api,
}

impl StatefulJob<u64> for FetchItem {
    type Output = Result<Item, HttpError>;

    fn call(&self, id: u64) -> Self::Output {
        self.api.get_json(&format!("/api/items/{id}"))
    }
}

/// [`FetchItem`] with what its requests did (attempts, retries, `429`s, when they left),
/// for a failed fetch too: the job of the measured run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchItemCounted {
    /// The server.
    pub api: Api,
}

impl StatefulJob<u64> for FetchItemCounted {
    type Output = (Result<Item, HttpError>, RequestStats);

    fn call(&self, id: u64) -> Self::Output {
        measured(|| self.api.get_json(&format!("/api/items/{id}")))
    }
}

/// Fetches items `1..=spec.jobs` and verifies them; with `limit` (`--throttle`, one permit per
/// job), the executor spaces the jobs at its rate.
pub(super) fn run(
    spec: &RunSpec,
    api: Api,
    latency: &Applied,
    data: &Dataset,
    limit: Option<RateLimit>,
) -> Result<RunOutcome, ScenarioError> {
    let ids: Vec<u64> = (1..=spec.jobs as u64).collect();
    let job = Stateful(FetchItemCounted { api });
    let bar = progress_bar(spec);
    let (((results, reruns, progress), worker_retries), timing) = timed_resilient(spec, limit, |executor| {
        let bar = bar.as_ref();
        let mut results = map_with(bar, executor, job.clone(), ids.clone());
        // GETs: an item whose job expired is fetched again.
        let reruns = rerun_expired(&mut results, spec.rerun_rounds, |expired| {
            map_with(
                bar,
                executor,
                job.clone(),
                expired.iter().filter_map(|&i| ids.get(i).copied()).collect(),
            )
        });
        (results, reruns, executor.progress())
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let ideal = ideal::api_calls(latency, spec.jobs, spec.effective_workers());
    let mut stats = RequestStats::ZERO;
    let results = results
        .into_iter()
        .map(|result| {
            result.map(|(item, counted)| {
                stats = stats.and(counted);
                item
            })
        })
        .collect();
    let mut tally = verify(results, data).with_runs(reruns, Some(progress)).with_stats(stats);
    tally.worker_retries = worker_retries;
    Ok(tally.outcome(timing, ideal))
}

/// The native-async version: the same requests as futures on the async executor, sharing one
/// client built inside the timed window (a user's program pays for it too).
pub(super) fn run_async(
    spec: &RunSpec,
    api: Api,
    latency: &Applied,
    data: &Dataset,
    limit: Option<RateLimit>,
) -> Result<RunOutcome, ScenarioError> {
    let ids: Vec<u64> = (1..=spec.jobs as u64).collect();
    let bar = progress_bar(spec);
    let (results, timing) = timed_async(spec, limit, |executor| {
        let client = AsyncApi::new(&api)?;
        let counted = client.clone();
        let fetch = move |id: u64| {
            let client = client.clone();
            async move { client.get_json::<Item>(&format!("/api/items/{id}")).await }
        };
        let _ticker = ticker(bar.as_ref(), executor.progress_watch(), ids.len());
        let mut results = executor.map_async(fetch.clone(), ids.iter().copied());
        let reruns = rerun_expired(&mut results, spec.rerun_rounds, |expired| {
            executor.map_async(fetch.clone(), expired.iter().filter_map(|&i| ids.get(i).copied()))
        });
        Ok::<_, HttpError>((results, reruns, executor.progress(), counted.stats()))
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let (results, reruns, progress, stats) = results?;
    let ideal = ideal::api_calls(latency, spec.jobs, spec.effective_workers());
    Ok(verify(results, data).with_runs(reruns, Some(progress)).with_stats(stats).outcome(timing, ideal))
}

/// The mistake of bolting async onto blocking code: the futures call the blocking client, so
/// each one holds the event loop for a whole request and the others wait. The ideal is still
/// `api-calls`' (all `--workers` in flight), which is what the efficiency is measured against.
pub(super) fn run_blocking_on_loop(
    spec: &RunSpec,
    api: Api,
    latency: &Applied,
    data: &Dataset,
) -> Result<RunOutcome, ScenarioError> {
    let ids: Vec<u64> = (1..=spec.jobs as u64).collect();
    let bar = progress_bar(spec);
    let ((results, reruns, progress), timing) = timed_async(spec, None, |executor| {
        let fetch = move |id: u64| {
            let api = api.clone();
            // No `.await` inside: the request blocks the loop thread until it is answered (and
            // a job time limit cannot fire while it does: the loop runs the timers too).
            async move { api.get_json::<Item>(&format!("/api/items/{id}")) }
        };
        let _ticker = ticker(bar.as_ref(), executor.progress_watch(), ids.len());
        let mut results = executor.map_async(fetch.clone(), ids.iter().copied());
        let reruns = rerun_expired(&mut results, spec.rerun_rounds, |expired| {
            executor.map_async(fetch.clone(), expired.iter().filter_map(|&i| ids.get(i).copied()))
        });
        (results, reruns, executor.progress())
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let ideal = ideal::api_calls(latency, spec.jobs, spec.effective_workers());
    Ok(verify(results, data).with_runs(reruns, Some(progress)).outcome(timing, ideal))
}

/// Checks that result `i` is item `i + 1`, and that every item arrived exactly once.
fn verify(results: Vec<Result<Result<Item, HttpError>, JobError>>, data: &Dataset) -> Tally {
    let mut tally = Tally::default();
    let mut arrivals = vec![0_usize; results.len()];
    for (id, result) in (1_u64..).zip(results) {
        match flatten(result) {
            Ok(item) => {
                let slot = usize::try_from(item.id).ok().and_then(|id| arrivals.get_mut(id.checked_sub(1)?));
                if let Some(count) = slot {
                    *count += 1;
                }
                if data.item(id).as_ref() == Some(&item) {
                    tally.ok += 1;
                } else {
                    tally.error(format!("item {id}: the server's answer differs from the dataset: {item:?}"));
                }
            }
            Err(error) => tally.error(format!("item {id}: {error}")),
        }
    }
    tally.lost = arrivals.iter().filter(|&&count| count == 0).count();
    tally.duplicated = arrivals.iter().map(|&count| count.saturating_sub(1)).sum();
    tally.verified = tally.ok == arrivals.len() && tally.lost == 0 && tally.duplicated == 0;
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(data: &Dataset, id: u64) -> Result<Result<Item, HttpError>, JobError> {
        data.item(id).ok_or(JobError::Cancelled).map(Ok)
    }

    #[test]
    fn correct_results_verify() {
        let data = Dataset::new(3);
        let tally = verify((1..=5).map(|id| fetched(&data, id)).collect(), &data);
        assert_eq!((tally.ok, tally.errors, tally.lost, tally.duplicated), (5, 0, 0, 0));
        assert!(tally.verified);
    }

    #[test]
    fn a_repeated_item_is_a_duplicate_and_a_loss() {
        let data = Dataset::new(3);
        let results = vec![fetched(&data, 1), fetched(&data, 1), Err(JobError::Cancelled)];
        let tally = verify(results, &data);
        assert_eq!((tally.ok, tally.errors, tally.lost, tally.duplicated), (1, 2, 2, 1));
        assert!(!tally.verified);
        assert!(tally.first_error.is_some_and(|e| e.starts_with("item 2:")));
    }
}
