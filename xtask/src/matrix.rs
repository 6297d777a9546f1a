//! What the report measures: [`Point`]s (one `fanout bench` invocation each), grouped into
//! [`Section`]s (one table each, and one plot each but the faults section), for the three [`Mode`]s.

use std::fmt;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Workers of the migration's nested, per-ticket executor (of each outer worker's own).
pub(crate) const INNER_WORKERS: usize = 4;

/// Workers of the pooled executors in the faults section.
const FAULT_WORKERS: usize = 10;

/// The hang row's share of requests never answered (`--hang-rate`).
pub(crate) const HANG_RATE: f64 = 0.02;

/// The hang row's job time limit in seconds (`--job-timeout`): at time scale 0.001 a ticket
/// takes ~10-50 ms (its nested pool included), so this is 10 to 50 tickets' time. The
/// clients' own timeouts are 120 s a phase: the limit, not a client timeout, stops the hangs.
pub(crate) const HANG_JOB_TIMEOUT: f64 = 0.5;

/// The hang row's worker-killing drill (process only), every 0.5 s rather than the bad
/// network's 50 ms: at 20 kills a second the drill would kill most stuck workers before the
/// job limit does.
const HANG_KILL_EVERY: f64 = 0.5;

/// The rate-limits section's time scale: the api-calls section's, where a call waits 10.465 ms.
pub(crate) const RATE_SCALE: f64 = 0.01;

/// The server's rate limit (and the client's throttle) for api-calls, in requests per second at
/// time scale 1 (`--rate-limit`, `--throttle`): 500 a real second at [`RATE_SCALE`], well below
/// what 32 workers ask unthrottled (~2,000 a second).
pub(crate) const API_RATE: f64 = 5.0;

/// The same for the migration: 1,000 a real second at [`RATE_SCALE`], below the ~2,500 a second
/// that 20 × 4 workers ask unthrottled, so that the 1,297 requests of the `support` queue take
/// about 1.3 s.
pub(crate) const MIGRATION_RATE: f64 = 10.0;

/// Outer workers of the rate-limits section: the article's `Pool(32)` for api-calls, its
/// `Pool(20)` (× [`INNER_WORKERS`]) for the migration.
const RATE_API_WORKERS: usize = 32;
const RATE_MIGRATION_WORKERS: usize = 20;

/// Runs of each point of several rounds at time scale 1 ([`Axis::RealTime`]): a run of 200
/// calls on 32 workers takes 7.4 s there, and the serial sample 21 s, so one run each keeps
/// the report within its budget; at that scale a run's fixed costs are a small share of it,
/// and runs vary little. A point of one round (async 200, a run of 1.1 s) takes the mode's
/// runs instead: there a scheduling hiccup of 40 ms is 4% of the wall (single runs read
/// 93–98% of the ideal on this 2-core machine), and two more runs cost 2 s.
pub(crate) const REAL_TIME_REPEAT: usize = 1;

/// Serial calls measured at time scale 1, from which the serial wall of article 1's 200 calls
/// is derived (× 200 / this): the whole serial run would take 209 s.
pub(crate) const REAL_TIME_SERIAL_SAMPLE: usize = 20;

/// The report's size: `--quick`, the default, or `--full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// A smoke run for CI: a few small points, one run each.
    Quick,
    /// The default matrix.
    Default,
    /// The default matrix plus the 2000-ticket `archive` migration.
    Full,
}

impl Mode {
    /// Runs per point (`fanout bench --repeat`).
    pub(crate) fn repeat(self) -> usize {
        match self {
            Self::Quick => 1,
            Self::Default | Self::Full => 3,
        }
    }

    /// How the report names the mode.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Quick => "`--quick` (a smoke run: small points, one run each; not for conclusions)",
            Self::Default => "default",
            Self::Full => "`--full` (the default matrix plus the 2000-ticket archive)",
        }
    }
}

/// `fanout bench --scenario`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Scenario {
    /// Article 1: independent API calls.
    ApiCalls,
    /// Article 2: the nested ticket migration.
    TicketMigration,
    /// CPU-bound hashing.
    Cpu,
}

impl Scenario {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ApiCalls => "api-calls",
            Self::TicketMigration => "ticket-migration",
            Self::Cpu => "cpu",
        }
    }
}

/// `fanout bench --queue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Queue {
    /// 80 tickets.
    Support,
    /// 2000 tickets.
    Archive,
}

impl Queue {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Support => "support",
            Self::Archive => "archive",
        }
    }

    /// Tickets in the queue (the mock API's contract).
    pub(crate) fn tickets(self) -> usize {
        match self {
            Self::Support => 80,
            Self::Archive => 2000,
        }
    }
}

/// `fanout bench --executor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Executor {
    /// The baseline.
    Serial,
    /// `ProcessPool`.
    Process,
    /// `ThreadPool`.
    Thread,
    /// `AsyncExecutor`.
    Async,
    /// `RedisPool` (not in [`ALL`](Self::ALL): only the redis section runs it, where
    /// redis-server is installed).
    Redis,
}

impl Executor {
    pub(crate) const ALL: [Self; 4] = [Self::Serial, Self::Process, Self::Thread, Self::Async];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Serial => "serial",
            Self::Process => "process",
            Self::Thread => "thread",
            Self::Async => "async",
            Self::Redis => "redis",
        }
    }
}

impl fmt::Display for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Faults injected into a run: the mock server's (`--error-rate`, `--drop-rate`, `--slow-rate`)
/// and, for the process pool, the worker-killing drill (`--retry-lost`, `--kill-worker-every`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Faults {
    /// Share of requests answered with a 5xx.
    pub(crate) error_rate: f64,
    /// Share of connections dropped without an answer.
    pub(crate) drop_rate: f64,
    /// Share of requests in the slow tail.
    pub(crate) slow_rate: f64,
    /// How often a task whose worker died runs again (process only).
    #[serde(default)]
    pub(crate) retry_lost: Option<u32>,
    /// Seconds between two worker kills (process only).
    #[serde(default)]
    pub(crate) kill_worker_every: Option<f64>,
    /// Share of requests never answered (the hang row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hang_rate: Option<f64>,
    /// The job time limit in seconds (`--job-timeout`; the hang row, never serial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) job_timeout: Option<f64>,
}

impl Faults {
    /// The issue's bad network: 10% errors, 2% dropped connections, a 1% slow tail, and for the
    /// process pool a worker killed every 50 ms, its task retried up to 8 times.
    pub(crate) fn bad_network(executor: Executor) -> Self {
        let process = executor == Executor::Process;
        Self {
            error_rate: 0.1,
            drop_rate: 0.02,
            slow_rate: 0.01,
            retry_lost: process.then_some(8),
            kill_worker_every: process.then_some(0.05),
            hang_rate: None,
            job_timeout: None,
        }
    }

    /// The bad network with stuck requests as well (issue 12): [`HANG_RATE`] of the requests
    /// never answered, and a job time limit of [`HANG_JOB_TIMEOUT`] that stops the stuck
    /// tickets' jobs so that they run again; the process pool's drill kills a worker every
    /// [`HANG_KILL_EVERY`] s. `None` for serial, which cannot stop a job (it refuses the limit).
    pub(crate) fn stuck_network(executor: Executor) -> Option<Self> {
        let network = Self::bad_network(executor);
        (executor != Executor::Serial).then(|| Self {
            hang_rate: Some(HANG_RATE),
            job_timeout: Some(HANG_JOB_TIMEOUT),
            kill_worker_every: network.kill_worker_every.map(|_| HANG_KILL_EVERY),
            ..network
        })
    }

    /// The `fanout bench` flags.
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--error-rate".to_owned(),
            self.error_rate.to_string(),
            "--drop-rate".to_owned(),
            self.drop_rate.to_string(),
            "--slow-rate".to_owned(),
            self.slow_rate.to_string(),
        ];
        if let Some(retry_lost) = self.retry_lost {
            args.extend(["--retry-lost".to_owned(), retry_lost.to_string()]);
        }
        if let Some(every) = self.kill_worker_every {
            args.extend(["--kill-worker-every".to_owned(), every.to_string()]);
        }
        if let Some(rate) = self.hang_rate {
            args.extend(["--hang-rate".to_owned(), rate.to_string()]);
        }
        if let Some(limit) = self.job_timeout {
            args.extend(["--job-timeout".to_owned(), limit.to_string()]);
        }
        args
    }

    /// `10% errors, 2% drops, 1% slow[, 2% hangs; job limit 0.5 s]; a worker killed every
    /// 0.05 s, retry-lost 8`.
    pub(crate) fn describe(&self) -> String {
        let pct = |rate: f64| format!("{}%", (rate * 1000.0).round() / 10.0);
        let mut text = format!(
            "{} errors, {} drops, {} slow",
            pct(self.error_rate),
            pct(self.drop_rate),
            pct(self.slow_rate)
        );
        if let Some(rate) = self.hang_rate {
            let _ = write!(text, ", {} hangs", pct(rate));
        }
        if let Some(limit) = self.job_timeout {
            let _ = write!(text, "; job limit {limit} s");
        }
        if let Some(every) = self.kill_worker_every {
            let _ = write!(text, "; a worker killed every {every} s");
        }
        if let Some(retry_lost) = self.retry_lost {
            let _ = write!(text, ", retry-lost {retry_lost}");
        }
        text
    }
}

/// A run against a rate-limited server (`--rate-limit`), with or without the client's own limit
/// at the same rate (`--throttle`). Rates in requests per second at time scale 1, as the flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Rates {
    /// The server's limit.
    pub(crate) server: f64,
    /// The client's limit, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) throttle: Option<f64>,
}

/// One configuration: one `fanout bench` invocation, its runs' median one row of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Point {
    pub(crate) scenario: Scenario,
    pub(crate) executor: Executor,
    /// Workers of the (outer) executor; 1 for serial.
    pub(crate) workers: usize,
    /// Jobs (tickets for the migration).
    pub(crate) jobs: usize,
    pub(crate) time_scale: f64,
    /// The migration's queue.
    pub(crate) queue: Option<Queue>,
    /// Faults injected into the run; none for a fault-free point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) faults: Option<Faults>,
    /// The server's rate limit and the client's throttle; none for an unlimited run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rates: Option<Rates>,
    /// `--hosts K` (Redis only): the workers on K worker-host processes; none: the pool's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hosts: Option<usize>,
}

impl Point {
    /// Runs of this point: [`REAL_TIME_REPEAT`] at time scale 1 when it has several rounds of
    /// calls, `repeat` (the mode's) otherwise.
    pub(crate) fn runs(&self, repeat: usize) -> usize {
        if self.time_scale >= 1.0 && self.jobs > self.workers { REAL_TIME_REPEAT.min(repeat) } else { repeat }
    }

    /// The arguments of `fanout bench` for this point.
    pub(crate) fn args(&self, repeat: usize) -> Vec<String> {
        let mut args = vec![
            "bench".to_owned(),
            "--scenario".to_owned(),
            self.scenario.name().to_owned(),
            "--executor".to_owned(),
            self.executor.name().to_owned(),
            "--workers".to_owned(),
            self.workers.to_string(),
        ];
        if let Some(hosts) = self.hosts {
            args.extend(["--hosts".to_owned(), hosts.to_string()]);
        }
        args.extend([
            "--jobs".to_owned(),
            self.jobs.to_string(),
            "--time-scale".to_owned(),
            self.time_scale.to_string(),
        ]);
        if let Some(queue) = self.queue {
            args.extend(["--queue".to_owned(), queue.name().to_owned()]);
            args.extend(["--inner-workers".to_owned(), INNER_WORKERS.to_string()]);
        }
        if let Some(faults) = &self.faults {
            args.extend(faults.args());
        }
        if let Some(rates) = &self.rates {
            args.extend(["--rate-limit".to_owned(), rates.server.to_string()]);
            if let Some(throttle) = rates.throttle {
                args.extend(["--throttle".to_owned(), throttle.to_string()]);
            }
        }
        args.extend(["--repeat".to_owned(), repeat.to_string(), "--format".to_owned(), "json".to_owned()]);
        args
    }

    /// A short label for progress lines.
    pub(crate) fn label(&self) -> String {
        let queue = self.queue.map(|q| format!(" {}", q.name())).unwrap_or_default();
        let faults =
            self.faults.as_ref().map(|f| format!(" with faults ({})", f.describe())).unwrap_or_default();
        let rates = self.rates.as_ref().map_or_else(String::new, |rates| {
            let real = |rate: f64| rate / self.time_scale;
            match rates.throttle {
                Some(throttle) => format!(
                    " against a server limit of {}/s, throttled at {}/s",
                    real(rates.server),
                    real(throttle)
                ),
                None => format!(" against a server limit of {}/s, unthrottled", real(rates.server)),
            }
        });
        let hosts = self.hosts.map(|hosts| format!(" on {hosts} hosts")).unwrap_or_default();
        format!(
            "{}{queue} {} x{}{hosts} ({} jobs, scale {}){faults}{rates}",
            self.scenario.name(),
            self.executor,
            self.workers,
            self.jobs,
            self.time_scale
        )
    }

    /// The same point without its faults: the fault-free run it is compared with.
    pub(crate) fn without_faults(&self) -> Self {
        Self { faults: None, ..self.clone() }
    }

    /// The same point with the client's throttle set to `throttle` (`None`: unthrottled).
    pub(crate) fn throttled(&self, throttle: Option<f64>) -> Self {
        let rates = self.rates.as_ref().map(|rates| Rates { throttle, ..rates.clone() });
        Self { rates, ..self.clone() }
    }

    /// Whether failed jobs are this point's measurement rather than a problem: an unthrottled
    /// client against a rate-limited server, whose requests give up after their attempts.
    pub(crate) fn errors_expected(&self) -> bool {
        self.rates.as_ref().is_some_and(|rates| rates.throttle.is_none())
    }

    /// The same configuration (a point shared by two sections runs once).
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.args(1) == other.args(1)
    }
}

/// What a section's plot puts on its x axis, or that it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Axis {
    /// Speed-up against workers, one line per executor, with the ideal line.
    Workers,
    /// Wall time against jobs, one line per executor.
    Jobs,
    /// No plot: a table of each executor's run through faults beside its fault-free run.
    Faults,
    /// No plot: a table of each executor's unthrottled run against a rate-limited server beside
    /// its throttled one.
    RateLimits,
    /// No plot: article 1 at its own timings (time scale 1), in real seconds beside the
    /// article's, the serial wall derived from a sample of serial calls.
    RealTime,
    /// No plot: the Redis pool, with its own workers and on worker hosts, beside the process
    /// and thread pools, with each one's CPU per job against the process pool's.
    Redis,
}

/// Which article a section compares itself with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Article {
    /// Article 1: 200 calls, Pool(32).
    ApiCalls,
    /// Article 2: the ticket migration (80 or 2000 tickets).
    Migration,
}

/// One table and one plot of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Section {
    /// File stem of the plot, and the section's anchor.
    pub(crate) id: String,
    pub(crate) title: String,
    /// One paragraph under the title.
    pub(crate) intro: String,
    pub(crate) axis: Axis,
    pub(crate) article: Option<Article>,
    /// The points, serial baseline(s) included.
    pub(crate) points: Vec<Point>,
}

/// `executors x workers` at one jobs count, after a serial baseline.
fn sweep(
    scenario: Scenario,
    jobs: usize,
    time_scale: f64,
    queue: Option<Queue>,
    groups: &[(&[Executor], &[usize])],
) -> Vec<Point> {
    let point = |executor, workers| Point {
        scenario,
        executor,
        workers,
        jobs,
        time_scale,
        queue,
        faults: None,
        rates: None,
        hosts: None,
    };
    let mut points = vec![point(Executor::Serial, 1)];
    for executor in Executor::ALL {
        let mut workers: Vec<usize> = groups
            .iter()
            .filter(|(executors, _)| executors.contains(&executor))
            .flat_map(|(_, workers)| workers.iter().copied())
            .collect();
        workers.sort_unstable();
        workers.dedup();
        points.extend(workers.into_iter().map(|w| point(executor, w)));
    }
    points
}

/// The sections of a mode, in report order.
pub(crate) fn sections(mode: Mode) -> Vec<Section> {
    use Executor::{Async, Process, Thread};
    let quick = mode == Mode::Quick;
    let pools: &[Executor] = &[Process, Thread, Async];

    let (api_jobs, api_scale) = (if quick { 40 } else { 200 }, 0.01);
    let api_points = if quick {
        sweep(Scenario::ApiCalls, api_jobs, api_scale, None, &[(pools, &[4, 16])])
    } else {
        sweep(
            Scenario::ApiCalls,
            api_jobs,
            api_scale,
            None,
            &[(&[Process, Thread], &[1, 2, 4, 8, 16, 32, 64]), (&[Thread, Async], &[200])],
        )
    };
    let mut sections = vec![
        real_time(quick),
        Section {
            id: "api-calls".to_owned(),
            title: "api-calls: many independent API calls (article 1)".to_owned(),
            intro: format!(
                "{api_jobs} `GET /api/items/{{id}}` calls at time scale {api_scale} (each waits 10.465 ms, the \
             article's 1.0465 s): pure waiting, the textbook case for any pool. The ideal is \
             `ceil(jobs / workers)` rounds of one call."
            ),
            axis: Axis::Workers,
            article: Some(Article::ApiCalls),
            points: api_points,
        },
    ];

    let (support_jobs, migration_scale) = (if quick { 5 } else { Queue::Support.tickets() }, 0.001);
    let migration_workers: &[usize] = if quick { &[5] } else { &[1, 5, 10, 20] };
    sections.push(Section {
        id: "ticket-migration".to_owned(),
        title: "ticket-migration: the nested migration of the `support` queue (article 2)".to_owned(),
        intro: format!(
            "{support_jobs} tickets of the `support` queue at time scale {migration_scale}, nested: an \
             outer executor over the tickets, and in each ticket's job an inner executor of the same \
             kind over its attachments ({INNER_WORKERS} workers, or {INNER_WORKERS} futures in flight \
             for async; serial inside serial). Python refuses exactly this with process pools \
             (`daemonic processes are not allowed to have children`). The ideal is the critical path \
             of the outer workers taking tickets in queue order."
        ),
        axis: Axis::Workers,
        article: Some(Article::Migration),
        points: sweep(
            Scenario::TicketMigration,
            support_jobs,
            migration_scale,
            Some(Queue::Support),
            &[(pools, migration_workers)],
        ),
    });

    let mut fault_points = Vec::new();
    for executor in Executor::ALL {
        let workers = if executor == Executor::Serial { 1 } else { FAULT_WORKERS };
        let fault_free = Point {
            scenario: Scenario::TicketMigration,
            executor,
            workers,
            jobs: support_jobs,
            time_scale: migration_scale,
            queue: Some(Queue::Support),
            faults: None,
            rates: None,
            hosts: None,
        };
        let faulty = Point { faults: Some(Faults::bad_network(executor)), ..fault_free.clone() };
        let stuck = Faults::stuck_network(executor)
            .map(|faults| Point { faults: Some(faults), ..fault_free.clone() });
        fault_points.extend([fault_free, faulty]);
        fault_points.extend(stuck);
    }
    let network = Faults::bad_network(Executor::Thread).describe();
    let drill = Faults::bad_network(Executor::Process);
    sections.push(Section {
        id: "faults".to_owned(),
        title: "faults: the `support` migration through a bad network".to_owned(),
        intro: format!(
            "The {support_jobs}-ticket migration above ({FAULT_WORKERS} workers × {INNER_WORKERS} inner, \
             time scale {migration_scale}), run once fault-free and once with the mock server injecting \
             faults: {network}. For the process pool, a worker process is also killed every {every} s \
             (`--kill-worker-every`). The clients retry only idempotent requests — a `GET`, or a `POST` \
             carrying its `Idempotency-Key` or `X-Attachment-Name` — with backoff and jitter; a killed \
             worker's ticket job runs again on its replacement (`retry_lost`, up to {retry} times). \
             Errors, lost and duplicated must be 0 / 0 / 0, and **verified** means the migrated \
             tickets' summary (tickets, attachments, checksum) equals a fault-free run's. \
             The **hang** rows add stuck requests: {hangs}% of them are never answered (the connection \
             stays open, like a stuck upstream's), and the clients wait up to 120 s a phase, so only \
             the executor's job time limit (`--job-timeout {limit}`) gets past them: it stops each \
             stuck ticket job (the process pool SIGKILLs and replaces its worker, the async executor \
             drops its future, the thread pool abandons its thread and starts another), and the \
             harness runs the ticket again — the migration is idempotent — for at most 8 rounds \
             (`fanout bench`'s default `--rerun-rounds`); \
             **expired / re-runs** counts them, the re-runs per round in brackets. The process \
             pool's drill kills a worker every {hang_every} s there, so that the limit, not the drill, \
             meets the stuck workers. Serial has no hang row: it runs jobs on the caller's thread, \
             cannot stop one, and refuses a job time limit.",
            every = drill.kill_worker_every.unwrap_or_default(),
            retry = drill.retry_lost.unwrap_or_default(),
            hangs = HANG_RATE * 100.0,
            limit = HANG_JOB_TIMEOUT,
            hang_every = HANG_KILL_EVERY,
        ),
        axis: Axis::Faults,
        article: None,
        points: fault_points,
    });

    sections.push(rate_limits(quick));

    let cpu_jobs = if quick { 4 } else { 32 };
    let cpu_workers: &[usize] = if quick { &[2] } else { &[1, 2, 4] };
    sections.push(Section {
        id: "cpu".to_owned(),
        title: "cpu: CPU-bound jobs".to_owned(),
        intro: format!(
            "{cpu_jobs} jobs that each hash 16 MiB (about 20 ms of one core): no waiting, so only cores \
             help. Rust has no GIL, so threads scale like processes here, up to the machine's cores. \
             The ideal is the per-job time measured serially times `ceil(jobs / min(workers, cores))`."
        ),
        axis: Axis::Workers,
        article: None,
        points: sweep(Scenario::Cpu, cpu_jobs, 1.0, None, &[(pools, cpu_workers)]),
    });

    if mode == Mode::Full {
        let archive = Queue::Archive.tickets();
        sections.push(Section {
            id: "ticket-migration-archive".to_owned(),
            title: "ticket-migration: the `archive` queue, 2000 tickets (article 2)".to_owned(),
            intro: format!(
                "The article's 10-hour migration: {archive} tickets of the `archive` queue at time scale \
                 {migration_scale}, nested as above ({INNER_WORKERS} inner workers)."
            ),
            axis: Axis::Workers,
            article: Some(Article::Migration),
            points: sweep(
                Scenario::TicketMigration,
                archive,
                migration_scale,
                Some(Queue::Archive),
                &[(pools, &[5, 10, 20, 50])],
            ),
        });
    }

    let (jobs_counts, jobs_workers): (&[usize], usize) =
        if quick { (&[20, 40], 16) } else { (&[25, 50, 100, 200], 32) };
    let mut jobs_points = Vec::new();
    for &jobs in jobs_counts {
        for executor in Executor::ALL {
            let workers = if executor == Executor::Serial { 1 } else { jobs_workers };
            jobs_points.push(Point {
                scenario: Scenario::ApiCalls,
                executor,
                workers,
                jobs,
                time_scale: api_scale,
                queue: None,
                faults: None,
                rates: None,
                hosts: None,
            });
        }
    }
    sections.push(Section {
        id: "api-calls-jobs".to_owned(),
        title: format!("api-calls: wall time against jobs ({jobs_workers} workers)"),
        intro: format!(
            "The same calls at time scale {api_scale}, more or fewer of them: serial time grows with \
             every call, a pool of {jobs_workers} only every {jobs_workers} calls (one more round \
             of 10.465 ms)."
        ),
        axis: Axis::Jobs,
        article: None,
        points: jobs_points,
    });
    sections.push(redis(quick));
    sections
}

/// Worker hosts of the redis section's `--hosts` rows.
pub(crate) const REDIS_HOSTS: usize = 2;

/// The redis section: api-calls at time scale 0.1 on 32 workers (the issue's target, 90% of
/// the ideal over 2 hosts) and the `support` migration on 20 × [`INNER_WORKERS`], each on the
/// process pool, the thread pool, a Redis pool with its own workers, and one on
/// [`REDIS_HOSTS`] worker hosts. `--quick`: 40 calls on 8 workers, 5 tickets on 5.
fn redis(quick: bool) -> Section {
    use Executor::{Process, Redis, Thread};
    let (api_jobs, api_workers, api_scale) = if quick { (40, 8, 0.1) } else { (200, 32, 0.1) };
    let (tickets, migration_workers, migration_scale) = if quick { (5, 5, 0.001) } else { (80, 20, 0.01) };
    let mut points = Vec::new();
    for (scenario, jobs, workers, time_scale, queue) in [
        (Scenario::ApiCalls, api_jobs, api_workers, api_scale, None),
        (Scenario::TicketMigration, tickets, migration_workers, migration_scale, Some(Queue::Support)),
    ] {
        for (executor, hosts) in [(Process, None), (Thread, None), (Redis, None), (Redis, Some(REDIS_HOSTS))]
        {
            points.push(Point {
                scenario,
                executor,
                workers,
                jobs,
                time_scale,
                queue,
                faults: None,
                rates: None,
                hosts,
            });
        }
    }
    Section {
        id: "redis".to_owned(),
        title: "redis: the same jobs through Redis Streams, on worker hosts".to_owned(),
        intro: format!(
            "The Redis pool (`--executor redis`, a redis-server of the run's own on loopback) beside \
             the process and thread pools: with workers of its own (started inside the timed window, \
             like the process pool's), and on {REDIS_HOSTS} worker hosts (`--hosts {REDIS_HOSTS}`: \
             `fanout worker` processes started before the run, the pool starting none; the \
             migration's inner pools start their own workers inside the hosts' jobs). **CPU per job** \
             is the client's CPU over the timed window plus, with hosts, the hosts' own, over the \
             jobs (tickets for the migration); **vs process** divides it by the process pool's. \
             api-calls runs at time scale {api_scale} ({api_jobs} calls, {api_workers} workers), the \
             migration at {migration_scale} ({tickets} tickets, {migration_workers} × {INNER_WORKERS} \
             workers). Without redis-server these rows fail with the bench's message."
        ),
        axis: Axis::Redis,
        article: None,
        points,
    }
}

/// The headline section: article 1 at its own timings (time scale 1, a call waits 1.0465 s),
/// for what is cheap there: thread 32, process 32 and async 200 over the 200 calls, and a
/// sample of [`REAL_TIME_SERIAL_SAMPLE`] serial calls from which the serial wall is derived.
/// `--quick`: one point, 16 calls on 16 threads (about 1 s).
fn real_time(quick: bool) -> Section {
    use Executor::{Async, Process, Serial, Thread};
    let point = |executor, workers, jobs| Point {
        scenario: Scenario::ApiCalls,
        executor,
        workers,
        jobs,
        time_scale: 1.0,
        queue: None,
        faults: None,
        rates: None,
        hosts: None,
    };
    let points = if quick {
        vec![point(Thread, 16, 16)]
    } else {
        vec![
            point(Serial, 1, REAL_TIME_SERIAL_SAMPLE),
            point(Process, 32, 200),
            point(Thread, 32, 200),
            point(Async, 200, 200),
        ]
    };
    let quick_note = if quick { " `--quick` runs one point only: 16 calls on 16 threads." } else { "" };
    Section {
        id: "real-time".to_owned(),
        title: "article 1 at its own timings: 200 calls of 1.0465 s, in real seconds".to_owned(),
        intro: format!(
            "Measured at time scale 1, where each call waits 1.0465 s as in the article, so that \
             fixed costs weigh what they would there: every wall here is a measurement, of \
             {REAL_TIME_REPEAT} run a point (a run takes seconds here), except async 200, whose \
             single round of calls is the median of the report's runs. The serial wall is **derived**: \
             {REAL_TIME_SERIAL_SAMPLE} serial calls measured, times 200 / {REAL_TIME_SERIAL_SAMPLE} \
             (the whole run would take 3.5 minutes). The article's own figures are Python's in \
             2015 against a real API.{quick_note}"
        ),
        axis: Axis::RealTime,
        article: None,
        points,
    }
}

/// The rate-limits section (issue 13): per scenario and executor, an unthrottled client against
/// a rate-limited server beside a client throttled at the server's rate. `--quick` runs one
/// small throttled point.
fn rate_limits(quick: bool) -> Section {
    use Executor::{Async, Process, Thread};
    let scale = RATE_SCALE;
    let api = |executor, jobs, workers, throttle: Option<f64>| Point {
        scenario: Scenario::ApiCalls,
        executor,
        workers,
        jobs,
        time_scale: scale,
        queue: None,
        faults: None,
        rates: Some(Rates { server: API_RATE, throttle }),
        hosts: None,
    };
    let migration = |executor, throttle: Option<f64>| Point {
        scenario: Scenario::TicketMigration,
        executor,
        workers: RATE_MIGRATION_WORKERS,
        jobs: Queue::Support.tickets(),
        time_scale: scale,
        queue: Some(Queue::Support),
        faults: None,
        rates: Some(Rates { server: MIGRATION_RATE, throttle }),
        hosts: None,
    };
    let points = if quick {
        vec![api(Thread, 40, 16, Some(API_RATE))]
    } else {
        let mut points = Vec::new();
        for executor in [Process, Thread, Async] {
            points.extend([
                api(executor, 200, RATE_API_WORKERS, None),
                api(executor, 200, RATE_API_WORKERS, Some(API_RATE)),
            ]);
        }
        for executor in [Process, Thread, Async] {
            points.extend([migration(executor, None), migration(executor, Some(MIGRATION_RATE))]);
        }
        points
    };
    let real = |rate: f64| rate / scale;
    let quick_note =
        if quick { " `--quick` runs one small point only: 40 calls at 16 workers, throttled." } else { "" };
    Section {
        id: "rate-limits".to_owned(),
        title: "rate limits: a rate-limited server, unthrottled and throttled at its rate".to_owned(),
        intro: format!(
            "The mock server answers `429` with `Retry-After` above its rate (`--rate-limit`): \
             {api_real}/s for api-calls' 200 calls at {RATE_API_WORKERS} workers, {migration_real}/s for \
             the `support` migration's 1,297 requests at {RATE_MIGRATION_WORKERS} × {INNER_WORKERS} \
             workers, both at time scale {scale}. **Unthrottled**, every worker finds the limit on its \
             own: a storm of `429`s, retries with backoff, and requests that give up after their 6 \
             attempts (their errors are the measurement here, not a failure). **Throttled**, the \
             client's own limit at the server's rate (`--throttle`) is one limit shared by every \
             worker, enforced in the parent for worker processes: a permit per call for api-calls, a \
             permit per request for the migration (`fanout::limit::acquire` before each one; the nested \
             pools draw from the root's limit), and a `429`'s `Retry-After` pauses every worker \
             (`limit::pause`). The ideal of a throttled run is `requests / R`; the **bound** is that \
             run simulated with the limit and the server's latencies and nothing else, so it adds \
             what no permit can overlap: the last call's latency for api-calls; for the migration \
             the queue listing, which every ticket waits for, and the tail, where the last \
             tickets' requests follow one another and ask for fewer permits than the limit \
             allows. **rate seen** is the throttled run's \
             requests over the time from the first to the last (on loopback, the rate the server \
             sees), against R. Serial is left out: one request at a time (96/s for api-calls, about \
             72/s for the migration at this scale) never reaches either limit.{quick_note}",
            api_real = real(API_RATE),
            migration_real = real(MIGRATION_RATE),
        ),
        axis: Axis::RateLimits,
        article: None,
        points,
    }
}

/// Every distinct point of `sections`, in order of first appearance.
pub(crate) fn distinct_points(sections: &[Section]) -> Vec<Point> {
    let mut points: Vec<Point> = Vec::new();
    for point in sections.iter().flat_map(|section| &section.points) {
        if !points.iter().any(|seen| seen.same_as(point)) {
            points.push(point.clone());
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(points: &[Point], scenario: Scenario, executor: Executor) -> usize {
        points.iter().filter(|p| p.scenario == scenario && p.executor == executor).count()
    }

    #[test]
    fn the_default_matrix_is_the_issues() {
        let default = sections(Mode::Default);
        let real = &default[0];
        assert_eq!((real.id.as_str(), real.axis), ("real-time", Axis::RealTime));
        assert!(real.points.iter().all(|p| p.time_scale == 1.0));
        // One run of a point of several rounds; the median of the mode's runs for one round.
        let runs: Vec<_> = real.points.iter().map(|p| (p.executor, p.runs(3))).collect();
        assert_eq!(
            runs,
            [
                (Executor::Serial, REAL_TIME_REPEAT),
                (Executor::Process, REAL_TIME_REPEAT),
                (Executor::Thread, REAL_TIME_REPEAT),
                (Executor::Async, 3)
            ]
        );
        assert_eq!(
            real.points.iter().map(|p| (p.executor, p.workers, p.jobs)).collect::<Vec<_>>(),
            [
                (Executor::Serial, 1, REAL_TIME_SERIAL_SAMPLE),
                (Executor::Process, 32, 200),
                (Executor::Thread, 32, 200),
                (Executor::Async, 200, 200)
            ]
        );
        let api = &default[1].points;
        assert_eq!(count(api, Scenario::ApiCalls, Executor::Serial), 1);
        assert_eq!(count(api, Scenario::ApiCalls, Executor::Process), 7);
        assert_eq!(count(api, Scenario::ApiCalls, Executor::Thread), 8);
        assert_eq!(count(api, Scenario::ApiCalls, Executor::Async), 1);
        assert!(api.iter().all(|p| p.jobs == 200 && p.time_scale == 0.01));
        let migration = &default[2].points;
        assert!(migration.iter().all(|p| p.queue == Some(Queue::Support) && p.time_scale == 0.001));
        assert_eq!(count(migration, Scenario::TicketMigration, Executor::Thread), 4);
        let faults = &default[3].points;
        assert_eq!(default[3].axis, Axis::Faults);
        assert_eq!(faults.len(), 11, "a fault-free and a faulty point per executor, a hang point but serial");
        let hangs: Vec<&Point> =
            faults.iter().filter(|p| p.faults.as_ref().is_some_and(|f| f.hang_rate.is_some())).collect();
        assert_eq!(
            hangs.iter().map(|p| p.executor).collect::<Vec<_>>(),
            [Executor::Process, Executor::Thread, Executor::Async]
        );
        assert!(
            hangs.iter().all(|p| p.faults.as_ref().and_then(|f| f.job_timeout) == Some(HANG_JOB_TIMEOUT))
        );
        assert!(faults.iter().all(|p| p.jobs == 80 && p.queue == Some(Queue::Support)));
        assert!(faults.iter().all(|p| p.workers == if p.executor == Executor::Serial { 1 } else { 10 }));
        let rates = &default[4];
        assert_eq!((rates.id.as_str(), rates.axis), ("rate-limits", Axis::RateLimits));
        assert_eq!(
            rates.points.len(),
            12,
            "api-calls and the migration, unthrottled and throttled, per pool"
        );
        assert!(rates.points.iter().all(|p| p.executor != Executor::Serial && p.rates.is_some()));
        assert_eq!(rates.points.iter().filter(|p| p.errors_expected()).count(), 6);
        assert_eq!(count(&default[5].points, Scenario::Cpu, Executor::Process), 3);
        assert!(!default.iter().any(|s| s.points.iter().any(|p| p.queue == Some(Queue::Archive))));
        assert!(
            sections(Mode::Full).iter().any(|s| s.points.iter().any(|p| p.queue == Some(Queue::Archive)))
        );
    }

    #[test]
    fn the_redis_section_sets_redis_beside_process_and_thread() {
        for mode in [Mode::Quick, Mode::Default] {
            let all = sections(mode);
            let redis = all.iter().find(|s| s.id == "redis").expect("a redis section");
            assert_eq!(redis.axis, Axis::Redis);
            assert_eq!(redis.points.len(), 8, "api-calls and the migration on 4 configurations");
            assert_eq!(redis.points.iter().filter(|p| p.hosts == Some(REDIS_HOSTS)).count(), 2);
            assert!(redis.points.iter().all(|p| p.hosts.is_none() || p.executor == Executor::Redis));
        }
        let default = sections(Mode::Default);
        let hosts = default
            .iter()
            .flat_map(|s| &s.points)
            .find(|p| p.hosts.is_some() && p.scenario == Scenario::ApiCalls)
            .map(|p| p.args(3).join(" "));
        assert_eq!(
            hosts.as_deref(),
            Some(
                "bench --scenario api-calls --executor redis --workers 32 --hosts 2 --jobs 200 \
                 --time-scale 0.1 --repeat 3 --format json"
            )
        );
    }

    #[test]
    fn rate_limited_points_pass_both_limits_and_quick_runs_one_small_one() {
        let default = sections(Mode::Default);
        let rates = &default[4].points;
        let throttled = rates
            .iter()
            .find(|p| p.scenario == Scenario::TicketMigration && p.executor == Executor::Process)
            .map(|p| p.throttled(Some(MIGRATION_RATE)));
        assert_eq!(
            throttled.as_ref().map(|p| p.args(3).join(" ")),
            Some(
                "bench --scenario ticket-migration --executor process --workers 20 --jobs 80 \
                 --time-scale 0.01 --queue support --inner-workers 4 --rate-limit 10 --throttle 10 \
                 --repeat 3 --format json"
                    .to_owned()
            )
        );
        assert!(throttled.as_ref().is_some_and(|p| !p.errors_expected()));
        assert_eq!(
            throttled.map(|p| p.label()),
            Some(
                "ticket-migration support process x20 (80 jobs, scale 0.01) against a server limit of \
                 1000/s, throttled at 1000/s"
                    .to_owned()
            )
        );
        let unthrottled = rates.iter().find(|p| p.errors_expected()).map(Point::label);
        assert!(
            unthrottled.is_some_and(|label| label.ends_with("against a server limit of 500/s, unthrottled"))
        );
        let quick = sections(Mode::Quick);
        let quick_rates: Vec<&Point> =
            quick.iter().flat_map(|s| &s.points).filter(|p| p.rates.is_some()).collect();
        assert_eq!(quick_rates.len(), 1);
        assert!(quick_rates.iter().all(|p| p.jobs == 40 && !p.errors_expected()));
        // A results.json written before rate limits existed still reads, as unlimited points.
        let json = serde_json::to_string(&quick_rates[0].throttled(None)).unwrap_or_default();
        assert!(!json.contains("throttle"));
        let mut unlimited: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
        if let Some(point) = unlimited.as_object_mut() {
            point.remove("rates");
        }
        assert_eq!(serde_json::from_value::<Point>(unlimited).ok().map(|p| p.rates), Some(None));
    }

    #[test]
    fn shared_points_run_once() {
        let default = sections(Mode::Default);
        let all: usize = default.iter().map(|s| s.points.len()).sum();
        let distinct = distinct_points(&default);
        // The jobs sweep's 200-call serial, process x32 and thread x32 points are the api-calls
        // section's; the faults section's fault-free points are the migration section's.
        assert_eq!(distinct.len(), all - 3 - 4);
        // In quick mode (the 40-call jobs points are the api-calls section's) the migration runs 5
        // workers: only the serial fault-free point is shared, and the redis section's process
        // and thread migrations (5 tickets on 5) are the migration section's.
        let quick = sections(Mode::Quick);
        let all: usize = quick.iter().map(|s| s.points.len()).sum();
        assert_eq!(distinct_points(&quick).len(), all - 4 - 1 - 2);
    }

    #[test]
    fn args_follow_the_cli_contract() {
        let point = Point {
            scenario: Scenario::TicketMigration,
            executor: Executor::Thread,
            workers: 20,
            jobs: 80,
            time_scale: 0.001,
            queue: Some(Queue::Support),
            faults: None,
            rates: None,
            hosts: None,
        };
        assert_eq!(
            point.args(3).join(" "),
            "bench --scenario ticket-migration --executor thread --workers 20 --jobs 80 \
             --time-scale 0.001 --queue support --inner-workers 4 --repeat 3 --format json"
        );
    }

    #[test]
    fn faults_add_their_flags_and_make_a_different_point() {
        let free = Point {
            scenario: Scenario::TicketMigration,
            executor: Executor::Process,
            workers: 10,
            jobs: 80,
            time_scale: 0.001,
            queue: Some(Queue::Support),
            faults: None,
            rates: None,
            hosts: None,
        };
        let faulty = Point { faults: Some(Faults::bad_network(Executor::Process)), ..free.clone() };
        assert_eq!(
            faulty.args(1).join(" "),
            "bench --scenario ticket-migration --executor process --workers 10 --jobs 80 \
             --time-scale 0.001 --queue support --inner-workers 4 --error-rate 0.1 --drop-rate 0.02 \
             --slow-rate 0.01 --retry-lost 8 --kill-worker-every 0.05 --repeat 1 --format json"
        );
        assert!(!faulty.same_as(&free));
        assert!(faulty.without_faults().same_as(&free));
        assert_eq!(
            faulty.label(),
            "ticket-migration support process x10 (80 jobs, scale 0.001) with faults (10% errors, \
             2% drops, 1% slow; a worker killed every 0.05 s, retry-lost 8)"
        );
        // The drill's flags are the process pool's only: the other executors refuse them.
        let thread = Point {
            executor: Executor::Thread,
            faults: Some(Faults::bad_network(Executor::Thread)),
            ..free.clone()
        };
        let args = thread.args(1).join(" ");
        assert!(args.contains("--error-rate 0.1 --drop-rate 0.02 --slow-rate 0.01 --repeat 1"), "{args}");
        assert!(thread.label().ends_with("with faults (10% errors, 2% drops, 1% slow)"));
        // The hang point: the bad network plus hangs and the job limit, a slower drill.
        let stuck = Point { faults: Faults::stuck_network(Executor::Process), ..free.clone() };
        assert_eq!(
            stuck.args(1).join(" "),
            "bench --scenario ticket-migration --executor process --workers 10 --jobs 80 \
             --time-scale 0.001 --queue support --inner-workers 4 --error-rate 0.1 --drop-rate 0.02 \
             --slow-rate 0.01 --retry-lost 8 --kill-worker-every 0.5 --hang-rate 0.02 --job-timeout 0.5 \
             --repeat 1 --format json"
        );
        assert!(stuck.label().ends_with(
            "with faults (10% errors, 2% drops, 1% slow, 2% hangs; job limit 0.5 s; a worker killed \
             every 0.5 s, retry-lost 8)"
        ));
        assert!(!stuck.same_as(&faulty));
        assert_eq!(Faults::stuck_network(Executor::Serial), None);
        // A results.json written before hangs existed still reads: its faults have none.
        let json = serde_json::to_string(&faulty).unwrap_or_default();
        assert!(!json.contains("hang_rate") && !json.contains("job_timeout"));
        // A results.json written before faults existed still reads, as fault-free points.
        let json = serde_json::to_string(&free).unwrap_or_default();
        assert!(!json.contains("faults"));
        assert_eq!(serde_json::from_str::<Point>(&json).ok(), Some(free));
    }
}
