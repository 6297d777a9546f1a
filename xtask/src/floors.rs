//! The machine's own floors in the report's run (issue 15): `fanout floor`, the api-calls
//! requests made with nothing but the HTTP layer (pre-started threads on warm connections, a
//! bare async client), beside the executors' rows, and the mock server's CPU time per request.
//! This module owns running the floors and the markdown of their table; `fanout floor`
//! (crates/bench/src/floor.rs) owns what a floor is.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::matrix::{Executor, Scenario};
use crate::python::FanoutWall;
use crate::runner::run_captured;
use crate::stats::{seconds, times};

/// Time scale of the floors: the api-calls section's.
const SCALE: f64 = 0.01;

/// `fanout floor --client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Client {
    /// Pre-started threads on their own connections.
    Threads,
    /// A bare current-thread tokio runtime.
    Async,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Self::Threads => "threads",
            Self::Async => "async",
        }
    }
}

/// One floor to run: `fanout floor --client CLIENT --workers N --jobs N [--cold]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct FloorPoint {
    pub(crate) client: Client,
    pub(crate) workers: usize,
    pub(crate) jobs: usize,
    /// Connections opened inside the timed window, as the executors' scenarios open theirs.
    pub(crate) cold: bool,
}

impl FloorPoint {
    fn args(&self, repeat: usize) -> Vec<String> {
        let mut args: Vec<String> =
            ["floor", "--client", self.client.name(), "--format", "json"].map(str::to_owned).into();
        args.extend([
            "--workers".to_owned(),
            self.workers.to_string(),
            "--jobs".to_owned(),
            self.jobs.to_string(),
        ]);
        args.extend([
            "--time-scale".to_owned(),
            SCALE.to_string(),
            "--repeat".to_owned(),
            repeat.to_string(),
        ]);
        if self.cold {
            args.push("--cold".to_owned());
        }
        args
    }

    /// The executor whose rows this floor is under.
    fn executor(&self) -> Executor {
        match self.client {
            Client::Async => Executor::Async,
            Client::Threads => Executor::Thread,
        }
    }
}

/// What `fanout floor` printed (its JSON line; fields this report does not use are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FloorLine {
    pub(crate) wall_seconds: f64,
    pub(crate) ideal_seconds: f64,
    pub(crate) efficiency: f64,
    pub(crate) ok: usize,
    pub(crate) errors: usize,
    pub(crate) verified: bool,
    #[serde(default)]
    pub(crate) server_cpu_seconds_per_request: Option<f64>,
}

/// A floor's outcome in the report's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FloorResult {
    pub(crate) point: FloorPoint,
    /// The line, or why there is none.
    pub(crate) outcome: Result<FloorLine, String>,
}

impl FloorResult {
    /// What should fail a run: a floor that did not run, or whose answers were wrong.
    pub(crate) fn problem(&self) -> Option<String> {
        let label =
            format!("floor {} {} ({} jobs)", self.point.client.name(), self.point.workers, self.point.jobs);
        match &self.outcome {
            Err(why) => Some(format!("{label}: {why}")),
            Ok(line) if !line.verified || line.errors > 0 || line.ok != self.point.jobs => Some(format!(
                "{label}: ok {} of {}, {} errors, verified {}",
                line.ok, self.point.jobs, line.errors, line.verified
            )),
            Ok(_) => None,
        }
    }
}

/// The floors of a run: the raw thread client at 32 and the bare async client at 200, warm (the
/// floor) and cold (the same connection set-up as the executors'); `--quick`: one small one.
pub(crate) fn points(quick: bool) -> Vec<FloorPoint> {
    let floor = |client, workers, jobs, cold| FloorPoint { client, workers, jobs, cold };
    if quick {
        vec![floor(Client::Threads, 16, 40, false)]
    } else {
        vec![
            floor(Client::Threads, 32, 200, false),
            floor(Client::Async, 200, 200, false),
            floor(Client::Async, 200, 200, true),
        ]
    }
}

/// Runs each floor `repeat` times (one `fanout floor` process per floor, each with a fresh
/// server per run), giving up on one after `timeout`.
pub(crate) fn measure(fanout: &Path, quick: bool, repeat: usize, timeout: Duration) -> Vec<FloorResult> {
    points(quick)
        .into_iter()
        .map(|point| {
            eprint!(
                "floor {} x{} ({} jobs{}) ... ",
                point.client.name(),
                point.workers,
                point.jobs,
                if point.cold { ", cold" } else { "" }
            );
            let outcome = run(fanout, &point, repeat, timeout);
            match &outcome {
                Ok(line) => eprintln!("{}", seconds(line.wall_seconds)),
                Err(why) => eprintln!("{why}"),
            }
            FloorResult { point, outcome }
        })
        .collect()
}

fn run(fanout: &Path, point: &FloorPoint, repeat: usize, timeout: Duration) -> Result<FloorLine, String> {
    let run = run_captured(fanout, &point.args(repeat), timeout)?;
    if !run.success {
        return Err(format!("fanout floor failed: {}", run.stderr.lines().last().unwrap_or("no message")));
    }
    parse(&run.stdout)
}

fn parse(stdout: &str) -> Result<FloorLine, String> {
    let line = stdout.lines().rev().find(|line| line.trim_start().starts_with('{')).ok_or("no JSON line")?;
    serde_json::from_str(line).map_err(|error| format!("not a floor line ({error}): {line}"))
}

/// The floors' table: each floor beside the executor row of the same client, size and time
/// scale, the executor's wall over the floor's, and the server's CPU time per request.
pub(crate) fn render_markdown(floors: &[FloorResult], fanout: &[FanoutWall]) -> String {
    let mut out = String::from(
        "<a id=\"floors\"></a>\n\n## Floors: the same calls with nothing but the HTTP layer\n\n\
         `fanout floor` makes api-calls' requests (time scale 0.01) without an executor: pre-started \
         threads that take item ids from one counter, or a bare current-thread tokio runtime with one \
         task per slot, each run against a fresh mock server like the executors' runs. **warm**: \
         every connection opened before the clock starts (the machine's floor); **cold**: opened \
         inside the timed window, as the executors' scenarios open theirs. **server CPU a request**: \
         the mock server's own CPU time over the timed runs, divided by their requests: what the \
         two shared cores spend serving, beside what the client spends.\n\n\
         | floor | workers | jobs | floor wall | efficiency vs ideal | server CPU a request | executor wall | executor / floor |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for floor in floors {
        let point = floor.point;
        let name = format!("{} ({})", point.client.name(), if point.cold { "cold" } else { "warm" });
        let Ok(line) = &floor.outcome else {
            let why = floor.outcome.as_ref().err().cloned().unwrap_or_default();
            let _ = writeln!(
                out,
                "| {name} | {} | {} | failed: {} | — | — | — | — |",
                point.workers,
                point.jobs,
                why.replace('|', "\\|")
            );
            continue;
        };
        let executor = fanout.iter().find(|row| {
            row.scenario == Scenario::ApiCalls
                && row.executor == point.executor()
                && row.workers == point.workers
                && row.jobs == point.jobs
                && (row.time_scale - SCALE).abs() < 1e-12
        });
        let (wall, ratio) = executor.map_or_else(
            || ("—".to_owned(), "—".to_owned()),
            |row| {
                (
                    format!("{} ({})", seconds(row.wall_seconds), row.executor),
                    times(row.wall_seconds / line.wall_seconds),
                )
            },
        );
        let cpu =
            line.server_cpu_seconds_per_request.map_or_else(|| "—".to_owned(), crate::stats::microseconds);
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {:.0}% | {cpu} | {wall} | {ratio} |",
            point.workers,
            point.jobs,
            seconds(line.wall_seconds),
            line.efficiency * 100.0,
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_line_parses_and_renders_beside_its_executor() {
        let stdout = r#"{"kind":"floor","client":"threads","workers":32,"jobs":200,"wall_seconds":0.08,"ideal_seconds":0.073,"efficiency":0.91,"ok":200,"errors":0,"verified":true,"server_cpu_seconds_per_request":0.00009}"#;
        let line = parse(stdout).expect("parses");
        let point = points(false)[0];
        assert_eq!(
            point.args(3).join(" "),
            "floor --client threads --format json --workers 32 --jobs 200 --time-scale 0.01 --repeat 3"
        );
        let floor = FloorResult { point, outcome: Ok(line) };
        assert_eq!(floor.problem(), None);
        let thread = FanoutWall {
            scenario: Scenario::ApiCalls,
            executor: Executor::Thread,
            workers: 32,
            jobs: 200,
            time_scale: 0.01,
            inner_workers: None,
            wall_seconds: 0.088,
        };
        let table = render_markdown(&[floor], &[thread]);
        assert!(
            table.contains("| threads (warm) | 32 | 200 | 80.0 ms | 91% | 90 µs | 88.0 ms (thread) | 1.1x |"),
            "{table}"
        );
        let wrong =
            FloorResult { point, outcome: Ok(FloorLine { ok: 199, ..parse(stdout).expect("parses") }) };
        assert!(wrong.problem().is_some_and(|p| p.contains("ok 199 of 200")));
        assert!(parse("no json").is_err());
    }
}
