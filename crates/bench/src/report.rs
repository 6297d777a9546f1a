//! The result of one run configuration: a [`Row`], printed as one JSON object per line
//! ([`Row::to_json`]) or as a markdown table ([`markdown`]).
//!
//! With `--repeat N` the row reports the run with the **median** wall time (the lower median
//! for an even N, so that the row is one real run): its wall, ideal and CPU time and its peak
//! RSS. `wall_seconds_runs` lists every run's wall time. The correctness counts are the worst
//! over all runs (`ok` the fewest, `errors`, `lost` and `duplicated` the most, `verified` only
//! if every run verified), so a repetition that went wrong is never hidden by the median.

use serde::Serialize;

use crate::executor::ExecutorKind;
use crate::run::Measured;
use crate::scenario::{ProgressCounts, Queue, RunSpec, Scenario};

/// The keys every JSON line must have: the CLI contract of `shared/DESIGN.md`, which other
/// tools read. [`Row`] has more.
pub const CONTRACT_KEYS: [&str; 14] = [
    "scenario",
    "executor",
    "workers",
    "jobs",
    "time_scale",
    "wall_seconds",
    "ideal_seconds",
    "efficiency",
    "ok",
    "errors",
    "lost",
    "duplicated",
    "cpu_seconds",
    "peak_rss_bytes",
];

/// One run configuration's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The scenario.
    pub scenario: Scenario,
    /// The executor kind.
    pub executor: ExecutorKind,
    /// Workers of the (outer) executor: 1 for serial.
    pub workers: usize,
    /// Jobs (tickets for the migration).
    pub jobs: usize,
    /// The server's time scale.
    pub time_scale: f64,
    /// Median wall time, from building the executor to its shutdown.
    pub wall_seconds: f64,
    /// The ideal time of the median run.
    pub ideal_seconds: f64,
    /// `ideal_seconds / wall_seconds`.
    pub efficiency: f64,
    /// Correct results (fewest over the runs).
    pub ok: usize,
    /// Failed or wrong results (most over the runs).
    pub errors: usize,
    /// Missing results (most over the runs).
    pub lost: usize,
    /// Repeated results (most over the runs).
    pub duplicated: usize,
    /// CPU time of the median run's client (run child and descendants) over the timed window.
    pub cpu_seconds: f64,
    /// Peak of the summed RSS of the run child and descendants, sampled over the first run
    /// (the others run unsampled, so that the sampler's CPU does not slow the timed ones).
    pub peak_rss_bytes: u64,
    /// Peak of the summed PSS (proportional set size: a page shared by several processes
    /// counted once, in shares) of the run child and descendants, sampled over the first run.
    pub peak_pss_bytes: u64,
    /// Number of runs.
    pub repeat: usize,
    /// Whether jobs run a nested executor (the migration).
    pub nested: bool,
    /// Workers of the nested executor, for the migration (1 for serial).
    pub inner_workers: Option<usize>,
    /// The migration's queue.
    pub queue: Option<Queue>,
    /// Whether every run's end state matched the expected one exactly.
    pub verified: bool,
    /// Every run's wall time, in run order.
    pub wall_seconds_runs: Vec<f64>,
    /// CPU time of the whole median run child, setup and verification included.
    pub process_cpu_seconds: f64,
    /// The first error of any run, if any.
    pub first_error: Option<String>,
    /// HTTP requests retried by the median run (the migration; `null` where not counted).
    pub http_retries: Option<u64>,
    /// Tasks of the median run that ran again because their worker process died.
    pub worker_retries: Option<u64>,
    /// The job time limit (`--job-timeout`), in seconds; `null` without one.
    pub job_timeout_seconds: Option<f64>,
    /// `JobError::Expired` results the median run saw (its re-runs' included).
    pub jobs_expired: u64,
    /// Inputs the median run ran again because their job expired.
    pub job_reruns: u64,
    /// Inputs the median run ran again in each round of re-runs.
    pub job_reruns_by_round: Vec<u64>,
    /// The bound on rounds of re-runs (`--rerun-rounds`).
    pub rerun_rounds: u32,
    /// The median run's outer executor's own counts (`Executor::progress`): submitted,
    /// started, succeeded, failed, cancelled, retried, expired, killed, abandoned threads.
    pub progress: Option<ProgressCounts>,
    /// `429` answers the clients saw (failed jobs' requests included), the most over the runs.
    pub responses_429: Option<u64>,
    /// `429` answers the server sent during a run (its `/health` counts), the most over the runs.
    pub server_responses_429: Option<u64>,
    /// Requests the median run's clients sent, retries included.
    pub requests: Option<u64>,
    /// Requests a fault-free run makes, without retries.
    pub required_requests: Option<u64>,
    /// The rate at which the median run's requests left, per real second, first to last.
    pub request_rate: Option<f64>,
    /// The client's limit (`--throttle`), in requests per real second.
    pub throttle_per_second: Option<f64>,
    /// The burst of the client's limit (`--throttle-burst`), with `--throttle`.
    pub throttle_burst: Option<u32>,
    /// The server's rate limit (`--rate-limit`), in requests per real second.
    pub server_rate_limit_per_second: Option<f64>,
    /// `required_requests / R`, R the lower of the two limits.
    pub rate_ideal_seconds: Option<f64>,
    /// `rate_ideal_seconds` plus the waits no permit can overlap.
    pub rate_bound_seconds: Option<f64>,
    /// CPU time the mock server spent on the median run (`null` with `--url`): what the
    /// shared cores gave the server rather than the client.
    pub server_cpu_seconds: Option<f64>,
    /// [`server_cpu_seconds`](Self::server_cpu_seconds) over the median run's
    /// [`requests`](Self::requests).
    pub server_cpu_seconds_per_request: Option<f64>,
    /// `--hosts K`: worker-host processes of the (Redis) outer pool; `null` for its own workers
    /// and other executors.
    pub hosts: Option<usize>,
    /// With `--hosts`: workers of the hosts that were given entries of the run's queue
    /// (fewest over the runs; at most `--workers`).
    pub host_workers: Option<usize>,
    /// With `--hosts`: hosts whose workers were given entries (fewest over the runs).
    pub hosts_used: Option<usize>,
    /// With `--hosts`: workers elsewhere that read the run's queue (most over the runs; 0,
    /// the pool having none of its own).
    pub other_workers: Option<usize>,
    /// With `--hosts`: CPU time of the worker hosts over the median run, which `cpu_seconds`
    /// (the run child's) does not hold.
    pub host_cpu_seconds: Option<f64>,
}

fn micros(seconds: f64) -> f64 {
    (seconds * 1e6).round() / 1e6
}

impl Row {
    /// Summarizes the runs of `spec` (see the module docs); `None` without runs.
    pub fn from_runs(spec: &RunSpec, time_scale: f64, runs: &[Measured]) -> Option<Self> {
        let mut by_wall: Vec<&Measured> = runs.iter().collect();
        by_wall.sort_by(|a, b| a.outcome.wall_seconds.total_cmp(&b.outcome.wall_seconds));
        let median = *by_wall.get(runs.len().checked_sub(1)? / 2)?;
        let outcomes = || runs.iter().map(|run| &run.outcome);
        let wall = median.outcome.wall_seconds;
        let migration = spec.scenario == Scenario::TicketMigration;
        Some(Self {
            scenario: spec.scenario,
            executor: spec.executor,
            workers: spec.effective_workers(),
            jobs: spec.jobs,
            time_scale,
            wall_seconds: micros(wall),
            ideal_seconds: micros(median.outcome.ideal_seconds),
            efficiency: if wall > 0.0 {
                (median.outcome.ideal_seconds / wall * 1e4).round() / 1e4
            } else {
                0.0
            },
            ok: outcomes().map(|o| o.ok).min().unwrap_or(0),
            errors: outcomes().map(|o| o.errors).max().unwrap_or(0),
            lost: outcomes().map(|o| o.lost).max().unwrap_or(0),
            duplicated: outcomes().map(|o| o.duplicated).max().unwrap_or(0),
            cpu_seconds: micros(median.outcome.cpu_seconds),
            // Sampled on the first run only (`fanout bench`): the others hold `ru_maxrss`
            // and 0, below any sampled sum.
            peak_rss_bytes: runs.iter().map(|run| run.peak_rss_bytes).max().unwrap_or(0),
            peak_pss_bytes: runs.iter().map(|run| run.peak_pss_bytes).max().unwrap_or(0),
            repeat: runs.len(),
            nested: migration,
            inner_workers: migration.then(|| spec.effective_inner_workers()),
            queue: migration.then_some(spec.queue),
            verified: outcomes().all(|o| o.verified),
            wall_seconds_runs: outcomes().map(|o| micros(o.wall_seconds)).collect(),
            process_cpu_seconds: micros(median.process_cpu_seconds),
            first_error: outcomes().find_map(|o| o.first_error.clone()),
            http_retries: median.outcome.http_retries,
            worker_retries: median.outcome.worker_retries,
            job_timeout_seconds: spec.resilience.job_timeout.map(|limit| micros(limit.as_secs_f64())),
            jobs_expired: median.outcome.jobs_expired,
            job_reruns: median.outcome.job_reruns,
            job_reruns_by_round: median.outcome.job_reruns_by_round.clone(),
            rerun_rounds: spec.rerun_rounds,
            progress: median.outcome.progress,
            // Like the error counts, the worst run's: a target of 0 holds only if every run met it.
            responses_429: outcomes().filter_map(|o| o.responses_429).max(),
            server_responses_429: outcomes().filter_map(|o| o.server_responses_429).max(),
            requests: median.outcome.requests,
            required_requests: median.outcome.required_requests,
            request_rate: median.outcome.request_rate.map(|rate| (rate * 100.0).round() / 100.0),
            throttle_per_second: median.outcome.throttle_per_second,
            throttle_burst: spec
                .throttle
                .map(|_| spec.throttle_burst.unwrap_or(crate::scenario::DEFAULT_THROTTLE_BURST)),
            server_rate_limit_per_second: median.outcome.server_rate_limit_per_second,
            rate_ideal_seconds: median.outcome.rate_ideal_seconds.map(micros),
            rate_bound_seconds: median.outcome.rate_bound_seconds.map(micros),
            server_cpu_seconds: median.server_cpu_seconds.map(micros),
            server_cpu_seconds_per_request: median
                .server_cpu_seconds
                .zip(median.outcome.requests.filter(|&requests| requests > 0))
                .map(|(cpu, requests)| (cpu / requests as f64 * 1e9).round() / 1e9),
            hosts: spec.hosts.as_ref().map(|hosts| hosts.count),
            host_workers: spec
                .hosts
                .as_ref()
                .and_then(|_| runs.iter().map(|run| run.hosts.map_or(0, |seen| seen.consumers.host)).min()),
            hosts_used: spec.hosts.as_ref().and_then(|_| {
                runs.iter().map(|run| run.hosts.map_or(0, |seen| seen.consumers.hosts_used)).min()
            }),
            other_workers: spec
                .hosts
                .as_ref()
                .and_then(|_| runs.iter().map(|run| run.hosts.map_or(0, |seen| seen.consumers.other)).max()),
            host_cpu_seconds: median.hosts.map(|seen| micros(seen.cpu_seconds)),
        })
    }

    /// The row as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The rows as a markdown table, header included.
pub fn markdown(rows: &[Row]) -> String {
    let mut table = String::from(
        "| scenario | executor | workers | jobs | time scale | wall s | ideal s | efficiency | ok | errors | lost | duplicated | cpu s | peak RSS MiB | peak PSS MiB |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let executor = match row.inner_workers {
            Some(inner) => format!("{} (nested, {inner} inner)", row.executor),
            None => row.executor.to_string(),
        };
        table.push_str(&format!(
            "| {} | {executor} | {} | {} | {} | {:.3} | {:.3} | {:.2} | {} | {} | {} | {} | {:.3} | {:.1} | {:.1} |\n",
            row.scenario,
            row.workers,
            row.jobs,
            row.time_scale,
            row.wall_seconds,
            row.ideal_seconds,
            row.efficiency,
            row.ok,
            row.errors,
            row.lost,
            row.duplicated,
            row.cpu_seconds,
            row.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            row.peak_pss_bytes as f64 / (1024.0 * 1024.0),
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::RunOutcome;

    fn spec() -> RunSpec {
        RunSpec {
            scenario: Scenario::ApiCalls,
            executor: ExecutorKind::Thread,
            workers: 8,
            jobs: 10,
            queue: Queue::Support,
            inner_workers: 4,
            seed: 42,
            url: String::new(),
            resilience: Default::default(),
            rerun_rounds: 5,
            progress_bar: None,
            throttle: None,
            throttle_burst: None,
            hosts: None,
        }
    }

    fn run(wall: f64, ok: usize, rss: u64) -> Measured {
        Measured {
            outcome: RunOutcome {
                wall_seconds: wall,
                ideal_seconds: 0.5,
                cpu_seconds: 0.1,
                ok,
                errors: 10 - ok,
                lost: 0,
                duplicated: 0,
                verified: ok == 10,
                first_error: None,
                http_retries: None,
                worker_retries: None,
                jobs_expired: 0,
                job_reruns: 0,
                job_reruns_by_round: Vec::new(),
                progress: None,
                responses_429: None,
                server_responses_429: None,
                requests: None,
                required_requests: None,
                request_rate: None,
                throttle_per_second: None,
                server_rate_limit_per_second: None,
                rate_ideal_seconds: None,
                rate_bound_seconds: None,
            },
            peak_rss_bytes: rss,
            peak_pss_bytes: rss / 2,
            process_cpu_seconds: 0.2,
            server_cpu_seconds: Some(0.02),
            hosts: None,
        }
    }

    #[test]
    fn the_median_run_is_reported_the_worst_counts_and_memory_is_the_sampled_runs() {
        let runs = [run(3.0, 10, 3), run(1.0, 10, 1), run(2.0, 9, 2)];
        let row = Row::from_runs(&spec(), 0.01, &runs);
        assert_eq!(row.as_ref().map(|r| (r.wall_seconds, r.efficiency)), Some((2.0, 0.25)));
        // Memory is the sampled run's: the largest peaks, whichever run is the median.
        assert_eq!(row.as_ref().map(|r| (r.peak_rss_bytes, r.peak_pss_bytes)), Some((3, 1)));
        assert_eq!(row.as_ref().map(|r| (r.ok, r.errors, r.verified)), Some((9, 1, false)));
        assert_eq!(row.as_ref().map(|r| r.wall_seconds_runs.clone()), Some(vec![3.0, 1.0, 2.0]));
        let even = Row::from_runs(&spec(), 0.01, &runs[..2]);
        assert_eq!(even.map(|r| r.wall_seconds), Some(1.0));
        assert_eq!(Row::from_runs(&spec(), 0.01, &[]), None);
    }

    #[test]
    fn json_has_the_contract_keys() {
        let row = Row::from_runs(&spec(), 0.01, &[run(1.0, 10, 1)]);
        let json: serde_json::Value =
            serde_json::from_str(&row.map(|r| r.to_json()).unwrap_or_default()).unwrap_or_default();
        for key in CONTRACT_KEYS {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert_eq!(json["scenario"], "api-calls");
        assert_eq!(json["queue"], serde_json::Value::Null);
    }

    #[test]
    fn the_server_cpu_is_divided_by_the_median_runs_requests() {
        let mut counted = run(1.0, 10, 1);
        counted.outcome.requests = Some(400);
        let row = Row::from_runs(&spec(), 0.01, &[counted.clone()]);
        assert_eq!(
            row.map(|r| (r.server_cpu_seconds, r.server_cpu_seconds_per_request)),
            Some((Some(0.02), Some(0.00005)))
        );
        // No requests counted, or no server of ours: no per-request figure, never a division by 0.
        counted.outcome.requests = Some(0);
        let row = Row::from_runs(&spec(), 0.01, &[counted.clone()]);
        assert_eq!(row.and_then(|r| r.server_cpu_seconds_per_request), None);
        counted.outcome.requests = Some(400);
        counted.server_cpu_seconds = None;
        let row = Row::from_runs(&spec(), 0.01, &[counted]);
        assert_eq!(row.map(|r| (r.server_cpu_seconds, r.server_cpu_seconds_per_request)), Some((None, None)));
    }

    #[test]
    fn markdown_has_a_header_and_a_row() {
        let rows: Vec<Row> = Row::from_runs(&spec(), 0.01, &[run(1.0, 10, 1 << 20)]).into_iter().collect();
        let table = markdown(&rows);
        assert_eq!(table.lines().count(), 3);
        assert!(table.contains("| api-calls | thread | 8 | 10 |"));
    }
}
