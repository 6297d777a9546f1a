//! `fanout floor`: the machine's own floor for `api-calls`, the same requests with no executor.
//!
//! This module owns the raw clients and the row they print. Each repetition starts a fresh
//! mock API process (as `fanout bench` does, [`MockServerProcess`]) or talks to `--url`, asks
//! `GET /health` for the latency the server applies, then fetches items `1..=jobs` with
//! nothing but the HTTP layer the scenarios use:
//!
//! - [`Client::Threads`]: `workers` std threads started beforehand, each with its blocking
//!   [`Api`] connection (its thread's `ureq` agent, [`crate::http`]) warmed by one untimed
//!   `GET /health`; they wait at a gate, then pull item ids from one shared atomic counter.
//! - [`Client::Async`]: a bare tokio current-thread runtime (the flavor the async executor
//!   uses) with `workers` tasks over one [`AsyncApi`] (hyper-util's pool), whose pool holds
//!   `workers` connections opened beforehand by `workers` concurrent untimed item requests;
//!   the tasks pull ids from the same kind of counter.
//!
//! With `cold` (`--cold`) the warm-up is skipped: the connections open inside the timed window,
//! as the scenarios open theirs (a thread worker on its first job, the async scenario's client
//! on its first 200 requests), which shows what connecting costs apart from the executor.
//!
//! The wall runs from the gate's release to the last response. Every item is verified against
//! the dataset the server serves, as `api-calls` verifies it. The ideal is `api-calls`' at the
//! same workers ([`ideal::api_calls`]).
//!
//! **The server's CPU.** When the server is a process of this run, its user + system time (all
//! its threads, those that exited included) is read right before and right after each timed
//! window: from its CPU-time clock ([`process_cpu_clock`], nanoseconds), or where that is not
//! available from `utime + stime` in `/proc/<pid>/stat` ([`process_cpu`], clock ticks of
//! usually 10 ms, 50 µs a request over 200 requests: use `--repeat 5` or more); the sum over the repetitions divided by the requests
//! timed is `server_cpu_seconds_per_request`. With `--url` the server is someone else's
//! process (possibly on another machine): the field is `null`. The server never runs inside
//! this process.
//!
//! ```no_run
//! use fanout_bench::floor::{self, Client, FloorOptions};
//! use fanout_bench::Secret;
//!
//! let exe = std::env::current_exe()?;
//! let options = FloorOptions { client: Client::Threads, workers: 4, jobs: 20, time_scale: 0.01, ..FloorOptions::default() };
//! let row = floor::run(&exe, &options, &Secret::new("dev-token"))?;
//! assert!(row.verified);
//! println!("{}", row.to_json());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fanout_mock_api::config::DEFAULT_SEED;
use fanout_mock_api::{Dataset, Item};
use serde::Serialize;

use crate::http::{Api, HttpError, Secret};
use crate::http_async::AsyncApi;
use crate::ideal::{self, Applied, Health, MissingRoute};
use crate::retry::RetryPolicy;
use crate::run::{MockServerProcess, RunError};
use crate::scenario::{Queue, Scenario};

/// The raw client of `fanout floor --client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Client {
    /// Pre-started std threads, one blocking connection each.
    Threads,
    /// Tasks on a bare current-thread tokio runtime over one async client.
    Async,
}

impl Client {
    /// The name on the command line and in the row.
    pub fn name(self) -> &'static str {
        match self {
            Self::Threads => "threads",
            Self::Async => "async",
        }
    }
}

/// What `fanout floor` measures.
#[derive(Debug, Clone, PartialEq)]
pub struct FloorOptions {
    /// The raw client.
    pub client: Client,
    /// Threads or tasks, each with its own connection.
    pub workers: usize,
    /// Items fetched, ids `1..=jobs`.
    pub jobs: usize,
    /// The server's time scale (for the server this run starts).
    pub time_scale: f64,
    /// Timed repetitions; the median wall is reported.
    pub repeat: usize,
    /// The server's data seed.
    pub seed: u64,
    /// A server of the user's instead of a fresh one per repetition.
    pub url: Option<String>,
    /// Open the connections inside the timed window instead of beforehand.
    pub cold: bool,
}

impl Default for FloorOptions {
    fn default() -> Self {
        Self {
            client: Client::Threads,
            workers: 32,
            jobs: 200,
            time_scale: 0.01,
            repeat: 1,
            seed: DEFAULT_SEED,
            url: None,
            cold: false,
        }
    }
}

/// Why a floor could not be measured (failed requests are counted, not errors).
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    /// The options are out of range.
    #[error("{0}")]
    InvalidOptions(String),
    /// The mock API process could not be started.
    #[error(transparent)]
    Server(#[from] RunError),
    /// A request outside the timed window failed (health, warm-up).
    #[error("the mock API did not answer as expected: {0}")]
    Http(#[from] HttpError),
    /// `/health` lacks a route.
    #[error(transparent)]
    Health(#[from] MissingRoute),
    /// The server serves other data than the run verifies against.
    #[error(
        "the mock API serves seed {server}, but the floor verifies against seed {expected}: pass --seed {server}"
    )]
    SeedMismatch {
        /// The server's seed.
        server: u64,
        /// The run's seed.
        expected: u64,
    },
    /// A thread or the runtime could not be started.
    #[error("could not {action}: {source}")]
    Os {
        /// What was being started.
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// One timed repetition.
#[derive(Debug, Clone, PartialEq)]
pub struct FloorRun {
    /// From the gate's release to the last response.
    pub wall: Duration,
    /// Items answered and equal to the dataset's.
    pub ok: usize,
    /// Items that failed or differed.
    pub errors: usize,
    /// Every item answered once and correct.
    pub verified: bool,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// The server's CPU time during the timed window, when it is a process of this run.
    pub server_cpu: Option<Duration>,
}

/// The row `fanout floor` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FloorRow {
    /// Always `"floor"`: what kind of row this is.
    pub kind: &'static str,
    /// `threads` or `async`.
    pub client: Client,
    /// Threads or tasks.
    pub workers: usize,
    /// Items per repetition.
    pub jobs: usize,
    /// The server's time scale.
    pub time_scale: f64,
    /// Repetitions.
    pub repeat: usize,
    /// `warm` (opened before the timed window) or `cold` (opened inside it).
    pub connections: &'static str,
    /// Median of [`wall_seconds_runs`](Self::wall_seconds_runs).
    pub wall_seconds: f64,
    /// The wall of every repetition, in order.
    pub wall_seconds_runs: Vec<f64>,
    /// `api-calls`' ideal at these workers.
    pub ideal_seconds: f64,
    /// `ideal_seconds / wall_seconds`.
    pub efficiency: f64,
    /// The fewest correct items of any repetition.
    pub ok: usize,
    /// The most failed items of any repetition.
    pub errors: usize,
    /// Every repetition verified.
    pub verified: bool,
    /// The first failure of any repetition.
    pub first_error: Option<String>,
    /// Requests timed over all repetitions.
    pub requests: u64,
    /// The server's CPU time over the timed windows (`null` with `--url`).
    pub server_cpu_seconds: Option<f64>,
    /// [`server_cpu_seconds`](Self::server_cpu_seconds) over [`requests`](Self::requests).
    pub server_cpu_seconds_per_request: Option<f64>,
}

impl FloorRow {
    /// One JSON line (without the newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A one-row markdown table.
    pub fn to_markdown(&self) -> String {
        let cpu = self
            .server_cpu_seconds_per_request
            .map_or_else(|| "n/a".to_owned(), |s| format!("{:.1} µs", s * 1e6));
        format!(
            "| floor | workers | jobs | wall | ideal | efficiency | verified | server CPU/request |\n\
             |---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} | {:.1} ms | {:.1} ms | {:.1}% | {} | {} |\n",
            self.client.name(),
            self.workers,
            self.jobs,
            self.wall_seconds * 1e3,
            self.ideal_seconds * 1e3,
            self.efficiency * 100.0,
            self.verified,
            cpu
        )
    }
}

/// Measures the floor: `options.repeat` timed repetitions, each against a fresh mock API
/// process started from `exe` (this executable, `exe mock-api`) or against `options.url`.
pub fn run(exe: &Path, options: &FloorOptions, token: &Secret) -> Result<FloorRow, FloorError> {
    validate(options)?;
    let data = Dataset::new(options.seed);
    let mut runs = Vec::with_capacity(options.repeat);
    let mut ideal_seconds = 0.0;
    for _ in 0..options.repeat {
        let server = match &options.url {
            Some(_) => None,
            None => Some(MockServerProcess::start(exe, options.time_scale, options.seed, token, &[])?),
        };
        let url =
            server.as_ref().map_or_else(|| options.url.clone().unwrap_or_default(), |s| s.url().to_owned());
        let pid = server.as_ref().map(MockServerProcess::pid);
        let api = Api::new(url, token.clone());
        let health: Health = api.get_json("/health")?;
        if health.seed != options.seed {
            return Err(FloorError::SeedMismatch { server: health.seed, expected: options.seed });
        }
        let latency = Applied::from_health(&health)?;
        ideal_seconds = ideal::api_calls(&latency, options.jobs, options.workers).as_secs_f64();
        // The same retry policy as the scenarios' requests.
        let api = api.with_retry(RetryPolicy::default().scaled(health.time_scale));
        let run = match options.client {
            Client::Threads => run_threads(&api, options, &data, pid)?,
            Client::Async => run_async(&api, options, &data, pid)?,
        };
        drop(server);
        runs.push(run);
    }
    Ok(row(options, ideal_seconds, &runs))
}

fn validate(options: &FloorOptions) -> Result<(), FloorError> {
    let max = Scenario::ApiCalls.max_jobs(Queue::Support);
    if options.workers == 0 || options.jobs == 0 || options.repeat == 0 {
        return Err(FloorError::InvalidOptions(
            "--workers, --jobs and --repeat must be at least 1".to_owned(),
        ));
    }
    if options.jobs > max {
        return Err(FloorError::InvalidOptions(format!(
            "--jobs {} is more than the {max} items the server serves",
            options.jobs
        )));
    }
    if !(options.time_scale.is_finite() && options.time_scale > 0.0) {
        return Err(FloorError::InvalidOptions(format!(
            "--time-scale {} must be above 0",
            options.time_scale
        )));
    }
    Ok(())
}

fn row(options: &FloorOptions, ideal_seconds: f64, runs: &[FloorRun]) -> FloorRow {
    let walls: Vec<f64> = runs.iter().map(|run| run.wall.as_secs_f64()).collect();
    let wall_seconds = median(&walls);
    let requests = (options.jobs * runs.len()) as u64;
    let server_cpu: Option<Duration> = runs.iter().map(|run| run.server_cpu).sum();
    let server_cpu_seconds = server_cpu.map(|cpu| cpu.as_secs_f64());
    FloorRow {
        kind: "floor",
        client: options.client,
        workers: options.workers,
        jobs: options.jobs,
        time_scale: options.time_scale,
        repeat: runs.len(),
        connections: if options.cold { "cold" } else { "warm" },
        wall_seconds,
        wall_seconds_runs: walls,
        ideal_seconds,
        efficiency: if wall_seconds > 0.0 { ideal_seconds / wall_seconds } else { 0.0 },
        ok: runs.iter().map(|run| run.ok).min().unwrap_or(0),
        errors: runs.iter().map(|run| run.errors).max().unwrap_or(0),
        verified: !runs.is_empty() && runs.iter().all(|run| run.verified),
        first_error: runs.iter().find_map(|run| run.first_error.clone()),
        requests,
        server_cpu_seconds,
        server_cpu_seconds_per_request: server_cpu_seconds
            .and_then(|cpu| (requests > 0).then(|| cpu / requests as f64)),
    }
}

/// The median (the mean of the two middle values for an even count); 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The CPU time (user + system, all threads, those that exited included) of process `pid`,
/// from `/proc/<pid>/stat`; `None` if it cannot be read.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: `sysconf` takes an integer and reads no memory of this process.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|&t| t > 0)?;
    let total = utime.checked_add(stime)?;
    Some(Duration::from_nanos(total.saturating_mul(1_000_000_000) / ticks))
}

/// The same user + system time of process `pid` to the nanosecond, from its CPU-time clock
/// (`clock_getcpuclockid`, `clock_gettime`); `None` if the system does not give it.
pub fn process_cpu_clock(pid: u32) -> Option<Duration> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid, writable `clockid_t` for the duration of the call.
    if unsafe { libc::clock_getcpuclockid(pid, &raw mut clock) } != 0 {
        return None;
    }
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable `timespec` for the duration of the call.
    if unsafe { libc::clock_gettime(clock, &raw mut now) } != 0 {
        return None;
    }
    Some(Duration::new(u64::try_from(now.tv_sec).ok()?, u32::try_from(now.tv_nsec).ok()?))
}

/// The CPU time of `pid` and whether it came from the nanosecond clock (the clock when it
/// answers, `/proc/<pid>/stat`'s ticks otherwise).
fn server_cpu(pid: u32) -> Option<(Duration, bool)> {
    process_cpu_clock(pid).map(|cpu| (cpu, true)).or_else(|| process_cpu(pid).map(|cpu| (cpu, false)))
}

/// The CPU time `pid` spent between two readings of [`server_cpu`] from the same source.
fn spent(before: Option<(Duration, bool)>, after: Option<(Duration, bool)>) -> Option<Duration> {
    match (before, after) {
        (Some((before, a)), Some((after, b))) if a == b => Some(after.saturating_sub(before)),
        _ => None,
    }
}

/// The CPU time server `pid` spent during `timed`, when `pid` is known and its clock (or
/// `/proc/<pid>/stat`) can be read before and after; `fanout bench` reads it around each run.
pub fn server_cpu_during<T>(pid: Option<u32>, timed: impl FnOnce() -> T) -> (T, Option<Duration>) {
    let before = pid.and_then(server_cpu);
    let output = timed();
    let after = pid.and_then(server_cpu);
    (output, spent(before, after))
}

/// What the clients fetched: one slot per item, `None` if it was never asked for.
type Slots = Vec<Option<Result<Item, HttpError>>>;

/// Checks that slot `i` holds item `i + 1` as the dataset has it.
fn verify(slots: Slots, data: &Dataset, wall: Duration, server_cpu: Option<Duration>) -> FloorRun {
    let mut run = FloorRun { wall, ok: 0, errors: 0, verified: false, first_error: None, server_cpu };
    let fail = |run: &mut FloorRun, message: String| {
        run.errors += 1;
        run.first_error.get_or_insert(message);
    };
    let count = slots.len();
    for (id, slot) in (1_u64..).zip(slots) {
        match slot {
            Some(Ok(item)) if data.item(id).as_ref() == Some(&item) => run.ok += 1,
            Some(Ok(item)) => {
                fail(&mut run, format!("item {id}: the server's answer differs from the dataset: {item:?}"));
            }
            Some(Err(error)) => fail(&mut run, format!("item {id}: {error}")),
            None => fail(&mut run, format!("item {id}: never fetched")),
        }
    }
    run.verified = run.ok == count;
    run
}

/// Fills `slots` from a worker's `(id, result)` pairs.
fn store(slots: &mut Slots, fetched: Vec<(u64, Result<Item, HttpError>)>) {
    for (id, result) in fetched {
        let slot = usize::try_from(id).ok().and_then(|id| slots.get_mut(id.checked_sub(1)?));
        if let Some(slot) = slot {
            *slot = Some(result);
        }
    }
}

/// The next id of the shared counter, if any is left.
fn next_id(counter: &AtomicU64, jobs: u64) -> Option<u64> {
    let id = counter.fetch_add(1, Ordering::Relaxed) + 1;
    (id <= jobs).then_some(id)
}

/// Where the pre-started threads wait: the count of warmed threads, and once decided,
/// whether to go (`Some(true)`) or to give up (`Some(false)`).
struct Gate {
    state: Mutex<(usize, Option<bool>)>,
    changed: Condvar,
}

impl Gate {
    /// A worker is warmed; waits for the decision.
    fn ready_and_wait(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 += 1;
        self.changed.notify_all();
        loop {
            if let Some(go) = state.1 {
                return go;
            }
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits for `workers` warmed threads.
    fn wait_ready(&self, workers: usize) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while state.0 < workers {
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Releases the threads; the start of the timed window when `go`.
    fn release(&self, go: bool) -> Instant {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.1 = Some(go);
        let start = Instant::now();
        self.changed.notify_all();
        start
    }
}

/// What a thread fetched, when it got its last answer, and its warm-up's failure.
type ThreadOutput = (Vec<(u64, Result<Item, HttpError>)>, Option<Instant>, Option<HttpError>);

/// `workers` pre-started threads with warmed connections, pulling ids from one counter.
fn run_threads(
    api: &Api,
    options: &FloorOptions,
    data: &Dataset,
    pid: Option<u32>,
) -> Result<FloorRun, FloorError> {
    let (workers, jobs, cold) = (options.workers, options.jobs, options.cold);
    let gate = Arc::new(Gate { state: Mutex::new((0, None)), changed: Condvar::new() });
    let counter = Arc::new(AtomicU64::new(0));
    let total = jobs as u64;
    let mut handles = Vec::with_capacity(workers);
    let mut spawn_error = None;
    for index in 0..workers {
        let (api, gate, counter) = (api.clone(), Arc::clone(&gate), Arc::clone(&counter));
        let spawned =
            std::thread::Builder::new().name(format!("floor-{index}")).spawn(move || -> ThreadOutput {
                // One untimed request opens this thread's keep-alive connection.
                let warm = if cold { None } else { api.get_json::<serde_json::Value>("/health").err() };
                let mut fetched = Vec::new();
                let mut last = None;
                if gate.ready_and_wait() && warm.is_none() {
                    while let Some(id) = next_id(&counter, total) {
                        fetched.push((id, api.get_json::<Item>(&format!("/api/items/{id}"))));
                        last = Some(Instant::now());
                    }
                }
                (fetched, last, warm)
            });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(source) => {
                spawn_error = Some(source);
                break;
            }
        }
    }
    gate.wait_ready(handles.len());
    let ((start, outputs), server_cpu) = server_cpu_during(pid, || {
        let start = gate.release(spawn_error.is_none());
        let outputs: Vec<_> = handles.into_iter().map(std::thread::JoinHandle::join).collect();
        (start, outputs)
    });
    if let Some(source) = spawn_error {
        return Err(FloorError::Os { action: "start the floor's threads", source });
    }
    let mut slots: Slots = (0..jobs).map(|_| None).collect();
    let mut end = start;
    for output in outputs {
        // A panicked thread leaves its items unfetched, counted as errors.
        let Ok((fetched, last, warm)) = output else { continue };
        if let Some(error) = warm {
            return Err(FloorError::Http(error));
        }
        end = end.max(last.unwrap_or(start));
        store(&mut slots, fetched);
    }
    Ok(verify(slots, data, end.duration_since(start), server_cpu))
}

/// `workers` tasks on a bare current-thread runtime over one async client whose pool holds
/// `workers` connections opened beforehand.
fn run_async(
    api: &Api,
    options: &FloorOptions,
    data: &Dataset,
    pid: Option<u32>,
) -> Result<FloorRun, FloorError> {
    let (workers, jobs, cold) = (options.workers, options.jobs, options.cold);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| FloorError::Os { action: "build the tokio runtime", source })?;
    let client = AsyncApi::new(api)?;
    let total = jobs as u64;
    runtime.block_on(async move {
        // Untimed: `workers` requests at once, each on a connection of its own (the items
        // route waits, so none is answered before the last one has connected); the pool
        // keeps them all idle for the timed window.
        let warm_ups = if cold { 0 } else { workers as u64 };
        let warm: Vec<_> = (0..warm_ups)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move {
                    client.get_json::<Item>(&format!("/api/items/{}", i % total + 1)).await
                })
            })
            .collect();
        for handle in warm {
            if let Ok(Err(error)) = handle.await {
                return Err(FloorError::Http(error));
            }
        }
        let before = pid.and_then(server_cpu);
        let counter = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let (client, counter) = (client.clone(), Arc::clone(&counter));
                tokio::spawn(async move {
                    let mut fetched = Vec::new();
                    let mut last = None;
                    while let Some(id) = next_id(&counter, total) {
                        fetched.push((id, client.get_json::<Item>(&format!("/api/items/{id}")).await));
                        last = Some(Instant::now());
                    }
                    (fetched, last)
                })
            })
            .collect();
        let mut slots: Slots = (0..jobs).map(|_| None).collect();
        let mut end = start;
        for task in tasks {
            // A panicked task leaves its items unfetched, counted as errors.
            if let Ok((fetched, last)) = task.await {
                end = end.max(last.unwrap_or(start));
                store(&mut slots, fetched);
            }
        }
        let server_cpu = spent(before, pid.and_then(server_cpu));
        Ok(verify(slots, data, end.duration_since(start), server_cpu))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(process_cpu(std::process::id()).is_some());
        assert!(process_cpu(u32::MAX).is_none());
        let clock = process_cpu_clock(std::process::id());
        assert!(clock.is_some_and(|cpu| cpu > Duration::ZERO), "{clock:?}");
    }

    #[test]
    fn a_missing_or_wrong_item_fails_verification() {
        let data = Dataset::new(3);
        let good: Slots = (1..=3).map(|id| data.item(id).map(Ok)).collect();
        let run = verify(good, &data, Duration::from_millis(1), None);
        assert!(run.verified && run.ok == 3 && run.errors == 0);
        let bad: Slots = vec![data.item(2).map(Ok), None];
        let run = verify(bad, &data, Duration::ZERO, None);
        assert!(!run.verified);
        assert_eq!((run.ok, run.errors), (0, 2));
        assert!(run.first_error.is_some_and(|e| e.starts_with("item 1:")));
    }

    #[test]
    fn bad_options_are_refused() {
        let zero = FloorOptions { workers: 0, ..FloorOptions::default() };
        assert!(matches!(validate(&zero), Err(FloorError::InvalidOptions(_))));
        let slow = FloorOptions { time_scale: 0.0, ..FloorOptions::default() };
        assert!(matches!(validate(&slow), Err(FloorError::InvalidOptions(_))));
        assert!(validate(&FloorOptions::default()).is_ok());
    }
}
