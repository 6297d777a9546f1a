//! `cargo xtask report`: fanout's main job (the cargo-xtask pattern; the alias lives in
//! `.cargo/config.toml`).
//!
//! It builds the harness in release, runs every point of the matrix through `fanout bench`
//! (each run in its own process, the mock server in its own), and writes `REPORT.md`, one SVG
//! plot per section (the faults section has none) and `results.json` (every number, to
//! re-render from) to `report/`.
//!
//! - `--quick`: a smoke run for CI (well under 30 s), written to `<target>/report-quick` unless
//!   `--out` says otherwise; exits non-zero if a point fails or returns a wrong result (an
//!   executor that is "not built yet" excepted).
//! - `--full`: the default matrix plus the 2000-ticket `archive` migration.
//! - `--from-results FILE`: re-renders the markdown and the plots from a `results.json`.

mod floors;
mod machine;
mod matrix;
mod plot;
mod python;
mod render;
mod results;
mod runner;
mod stats;

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use fanout::Serial;
use fanout::bar::indicatif::{ProgressBar, ProgressStyle};

use crate::machine::Machine;
use crate::matrix::{Axis, Mode, Section};
use crate::plot::Plot;
use crate::results::{Outcome, PointResult, Results};

/// fanout's project tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run the benchmark matrix and write REPORT.md with its SVG plots.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// A smoke run for CI (under 30 s): a few small points, one run each.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// The default matrix plus the 2000-ticket archive migration.
    #[arg(long)]
    full: bool,
    /// Where to write the report [default: report/, or <target>/report-quick with --quick].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Re-render the report from a results.json instead of measuring.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["quick", "full"])]
    from_results: Option<PathBuf>,
    /// Give up on a point after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    point_timeout: u64,
}

fn main() -> ExitCode {
    let Task::Report(args) = Cli::parse().command;
    match report(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's directory.
fn workspace() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Writes `contents` to `path` through a temporary file, so a reader never sees half a file.
pub(crate) fn write_file(path: &Path, contents: &str) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, path)
}

fn report(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let workspace = workspace();
    if let Some(file) = &args.from_results {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("could not read {}", file.display()))?;
        let mut results: Results = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a results.json", file.display()))?;
        // The words come from this version of the matrix, the numbers from the file.
        let current = matrix::sections(results.mode);
        for section in &mut results.sections {
            if let Some(now) = current.iter().find(|now| now.id == section.id && now.points == section.points)
            {
                section.title.clone_from(&now.title);
                section.intro.clone_from(&now.intro);
            }
        }
        let out = match &args.out {
            Some(out) => out.clone(),
            None => file.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        };
        write_report(&out, &results, false)?;
        eprintln!("wrote {}", out.join("REPORT.md").display());
        return Ok(ExitCode::SUCCESS);
    }

    let mode = match (args.quick, args.full) {
        (true, _) => Mode::Quick,
        (false, true) => Mode::Full,
        (false, false) => Mode::Default,
    };
    let build_start = Instant::now();
    let fanout = runner::build(&workspace)?;
    eprintln!("built {} in {:.0} s", fanout.display(), build_start.elapsed().as_secs_f64());
    let out = match (&args.out, mode) {
        (Some(out), _) => out.clone(),
        (None, Mode::Quick) => runner::target_dir(&workspace)?.join("report-quick"),
        (None, _) => workspace.join("report"),
    };

    let sections = matrix::sections(mode);
    let points = matrix::distinct_points(&sections);
    let machine = Machine::collect(&workspace);
    let repeat = mode.repeat();
    let timeout = Duration::from_secs(args.point_timeout);
    let start = Instant::now();
    let measured = measure_points(&fanout, &points, repeat, timeout);
    // The articles' Python, against the same kind of server, after fanout's points (skipped,
    // with the reason, where Python or its package index is missing).
    let python = python::measure(&python::Options {
        workspace: workspace.clone(),
        target_dir: runner::target_dir(&workspace)?,
        fanout: fanout.clone(),
        quick: mode == Mode::Quick,
        repeat,
    });
    let floors = floors::measure(&fanout, mode == Mode::Quick, repeat, timeout);
    let results = Results {
        mode,
        repeat,
        machine,
        elapsed_seconds: start.elapsed().as_secs_f64(),
        sections,
        points: measured,
        python: Some(python),
        floors: Some(floors),
    };
    write_report(&out, &results, true)?;
    eprintln!(
        "wrote {} ({} points in {})",
        out.join("REPORT.md").display(),
        results.points.len(),
        render::minutes(results.elapsed_seconds)
    );

    let mut failed: Vec<String> = results
        .points
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::NotBuilt(_)))
        .filter_map(|r| Some(format!("{}: {}", r.point.label(), r.outcome.problem_of(&r.point)?)))
        .collect();
    failed.extend(results.python.iter().flat_map(|python| python.problems(python::ci())));
    failed.extend(results.floors.iter().flatten().filter_map(floors::FloorResult::problem));
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{} point(s) failed or returned wrong results:", failed.len());
    for failure in &failed {
        eprintln!("  {failure}");
    }
    Ok(if mode == Mode::Quick { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// One point to measure, as the input of [`measure_point`].
#[derive(serde::Serialize, serde::Deserialize)]
struct PointTask {
    fanout: PathBuf,
    point: matrix::Point,
    repeat: usize,
    timeout: Duration,
}

/// The job that measures a point: one `fanout bench` invocation.
fn measure_point(task: PointTask) -> PointResult {
    runner::run_point(&task.fanout, &task.point, task.repeat, task.timeout)
}

/// Measures the points one after another (on a `Serial` executor: each point's runs must have
/// the machine to themselves), each outcome on a line of its own on standard error; on a
/// terminal under a progress bar of the points (`fanout::bar`), piped without one.
fn measure_points(
    binary: &Path,
    points: &[matrix::Point],
    repeat: usize,
    timeout: Duration,
) -> Vec<PointResult> {
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        let bar = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template("[{bar:30}] {pos}/{len} points {elapsed} {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    } else {
        ProgressBar::hidden()
    };
    let labels: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(index, point)| format!("[{:>2}/{}] {}", index + 1, points.len(), point.label()))
        .collect();
    // `Serial` runs each input when it is pulled: the label shows the point running now.
    let tasks = points.iter().zip(&labels).map(|(point, label)| {
        if terminal {
            bar.set_message(label.clone());
        } else {
            eprint!("{label} ... ");
            let _ = std::io::stderr().flush();
        }
        PointTask { fanout: binary.to_path_buf(), point: point.clone(), repeat: point.runs(repeat), timeout }
    });
    let serial = Serial::new();
    let mut measured = Vec::with_capacity(points.len());
    for ((result, point), label) in
        fanout::bar::imap(&serial, measure_point, tasks, &bar).zip(points).zip(&labels)
    {
        let result = result.unwrap_or_else(|error| PointResult {
            point: point.clone(),
            outcome: Outcome::Failed(format!("measuring the point failed: {error}")),
            elapsed_seconds: 0.0,
        });
        let line = match (&result.outcome, result.outcome.problem_of(&result.point)) {
            (Outcome::Measured(m), None) => stats::seconds(m.wall_seconds),
            (_, problem) => problem.unwrap_or_default(),
        };
        if terminal {
            bar.println(format!("{label} ... {line}"));
        } else {
            eprintln!("{line}");
        }
        measured.push(result);
    }
    bar.finish_and_clear();
    measured
}

/// Writes `REPORT.md`, the plots and (after a measurement) `results.json` to `out`.
fn write_report(out: &Path, results: &Results, with_results: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("could not create {}", out.display()))?;
    for section in &results.sections {
        write_plot(out, results, section)?;
    }
    if with_results {
        let json = serde_json::to_string_pretty(results).context("could not encode the results")?;
        write_file(&out.join("results.json"), &(json + "\n")).context("could not write results.json")?;
    }
    let path = out.join("REPORT.md");
    write_file(&path, &render::report(results)).with_context(|| format!("could not write {}", path.display()))
}

fn write_plot(out: &Path, results: &Results, section: &Section) -> anyhow::Result<()> {
    let path = out.join(render::plot_file(section));
    if matches!(section.axis, Axis::Faults | Axis::RateLimits | Axis::RealTime | Axis::Redis) {
        return Ok(());
    }
    if stats::is_workers(section) {
        let (series, ideal) = stats::speed_up_series(results, section);
        let title = format!("{}: speed-up against workers", section.id);
        let plot = Plot {
            title: &title,
            x_label: "workers",
            y_label: "speed-up against serial",
            series: &series,
            ideal: &ideal,
            log: true,
        };
        plot.write(&path)
    } else {
        let series = stats::wall_series(results, section);
        let title = format!("{}: wall time against jobs", section.id);
        let plot = Plot {
            title: &title,
            x_label: "jobs",
            y_label: "wall time (s)",
            series: &series,
            ideal: &[],
            log: false,
        };
        plot.write(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn a_report_renders_to_files_and_back() {
        let results = stats::tests::sample();
        let dir = std::env::temp_dir().join(format!("xtask-report-test-{}", std::process::id()));
        let written = write_report(&dir, &results, true);
        let report = std::fs::read_to_string(dir.join("REPORT.md")).unwrap_or_default();
        let svg = std::fs::read_to_string(dir.join("api-calls.svg")).unwrap_or_default();
        let json = std::fs::read_to_string(dir.join("results.json")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(written.is_ok(), "{written:?}");
        assert!(report.contains("](api-calls.svg)"));
        assert!(svg.starts_with("<svg"));
        assert_eq!(serde_json::from_str::<Results>(&json).ok(), Some(results));
    }
}
