//! What the report measures: [`Point`]s (one `fanout bench` invocation each), grouped into
//! [`Section`]s (one table and one plot each), for the three [`Mode`]s.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Workers of the migration's nested, per-ticket executor (of each outer worker's own).
pub(crate) const INNER_WORKERS: usize = 4;

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
}

impl Executor {
    pub(crate) const ALL: [Self; 4] = [Self::Serial, Self::Process, Self::Thread, Self::Async];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Serial => "serial",
            Self::Process => "process",
            Self::Thread => "thread",
            Self::Async => "async",
        }
    }
}

impl fmt::Display for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
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
}

impl Point {
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
            "--jobs".to_owned(),
            self.jobs.to_string(),
            "--time-scale".to_owned(),
            self.time_scale.to_string(),
        ];
        if let Some(queue) = self.queue {
            args.extend(["--queue".to_owned(), queue.name().to_owned()]);
            args.extend(["--inner-workers".to_owned(), INNER_WORKERS.to_string()]);
        }
        args.extend(["--repeat".to_owned(), repeat.to_string(), "--format".to_owned(), "json".to_owned()]);
        args
    }

    /// A short label for progress lines.
    pub(crate) fn label(&self) -> String {
        let queue = self.queue.map(|q| format!(" {}", q.name())).unwrap_or_default();
        format!(
            "{}{queue} {} x{} ({} jobs, scale {})",
            self.scenario.name(),
            self.executor,
            self.workers,
            self.jobs,
            self.time_scale
        )
    }

    /// The same configuration (a point shared by two sections runs once).
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.args(1) == other.args(1)
    }
}

/// What a section's plot puts on its x axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Axis {
    /// Speed-up against workers, one line per executor, with the ideal line.
    Workers,
    /// Wall time against jobs, one line per executor.
    Jobs,
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
    let point = |executor, workers| Point { scenario, executor, workers, jobs, time_scale, queue };
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
    let mut sections = vec![Section {
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
    }];

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
    sections
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
        let api = &default[0].points;
        assert_eq!(count(api, Scenario::ApiCalls, Executor::Serial), 1);
        assert_eq!(count(api, Scenario::ApiCalls, Executor::Process), 7);
        assert_eq!(count(api, Scenario::ApiCalls, Executor::Thread), 8);
        assert_eq!(count(api, Scenario::ApiCalls, Executor::Async), 1);
        assert!(api.iter().all(|p| p.jobs == 200 && p.time_scale == 0.01));
        let migration = &default[1].points;
        assert!(migration.iter().all(|p| p.queue == Some(Queue::Support) && p.time_scale == 0.001));
        assert_eq!(count(migration, Scenario::TicketMigration, Executor::Thread), 4);
        assert_eq!(count(&default[2].points, Scenario::Cpu, Executor::Process), 3);
        assert!(!default.iter().any(|s| s.points.iter().any(|p| p.queue == Some(Queue::Archive))));
        assert!(
            sections(Mode::Full).iter().any(|s| s.points.iter().any(|p| p.queue == Some(Queue::Archive)))
        );
    }

    #[test]
    fn shared_points_run_once() {
        let default = sections(Mode::Default);
        let all: usize = default.iter().map(|s| s.points.len()).sum();
        let distinct = distinct_points(&default);
        // The jobs sweep's 200-call serial, process x32 and thread x32 points are the api-calls
        // section's.
        assert_eq!(distinct.len(), all - 3);
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
        };
        assert_eq!(
            point.args(3).join(" "),
            "bench --scenario ticket-migration --executor thread --workers 20 --jobs 80 \
             --time-scale 0.001 --queue support --inner-workers 4 --repeat 3 --format json"
        );
    }
}
