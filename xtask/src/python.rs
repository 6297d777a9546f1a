//! The articles' Python beside fanout (issue 15): this module owns running `python/` — the
//! articles' own approaches, written against the mock API — in the report's run, and the
//! markdown of its section.
//!
//! - [`measure`] makes a virtual environment under `<target>/python-venv` once (`python3 -m
//!   venv`, `pip install -r python/requirements.txt`; made again only when the requirements or
//!   the interpreter change), then runs each script against a fresh `fanout mock-api` of the
//!   kind fanout's rows use (the same binary, seed and time scale), the median of at least 3
//!   runs per row. Without `python3`, or when pip cannot install from the package index, it
//!   returns [`PythonSection::Skipped`] with the reason, never an error: the report goes on.
//!   [`PythonSection::problems`] lists what should fail a run: a row not verified, and with
//!   `CI` set a skip too (CI makes Python mandatory).
//! - [`render_markdown`] draws the table: each Python row beside the matching fanout row
//!   (passed in, see [`fanout_walls`]), fanout's speed-up over it and the issue's target, and
//!   the line of article 2's daemonic error.
//!
//! Every script prints one JSON line ([`RunLine`]): its own wall time (its pool's or session's
//! start-up included, the interpreter's start-up and imports not), the items correct, the
//! errors, whether everything was verified and, for the nested process pool, the error text.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use fanout_mock_api::{Dataset, Summary};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::matrix::{Executor, INNER_WORKERS, Queue, Scenario};
use crate::results::Results;
use crate::stats;

/// Time scale of the article-1 rows: fanout's api-calls section's.
pub(crate) const API_SCALE: f64 = 0.01;

/// Time scale of the article-2 rows: fanout's ticket-migration section's.
pub(crate) const MIGRATION_SCALE: f64 = 0.001;

/// The mock API's seed (its default, as `fanout bench` uses it).
const SEED: u64 = fanout_mock_api::config::DEFAULT_SEED;

/// The error a process pool's worker meets when it starts a pool of its own.
pub(crate) const DAEMONIC: &str = "daemonic processes are not allowed to have children";

/// Runs per row at least (the issue's "median of at least 3 runs"), `--quick` excepted.
const MIN_RUNS: usize = 3;

/// A guard against a hung script (the slowest row, serial, takes about 2.5 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// A guard against a hung `pip install`.
const PIP_TIMEOUT: Duration = Duration::from_secs(600);

/// The file in the virtual environment that records what it was made from.
const STAMP: &str = "fanout-requirements.stamp";

/// One of the articles' approaches: a script of `python/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Approach {
    /// Article 1, one `requests.get` after another.
    Serial,
    /// Article 1, `multiprocessing.Pool(N).map` over tuples through a helper.
    Pool,
    /// Article 1, `multiprocessing.pool.ThreadPool(N).map`.
    ThreadPool,
    /// Article 1, asyncio and aiohttp, N in flight.
    Asyncio,
    /// Article 2, `Pool(N)` over tickets, a nested `Pool(M)` in each: the daemonic error.
    NestedPool,
    /// Article 2 with `from multiprocessing.pool import ThreadPool as Pool`.
    NestedThreadPool,
}

impl Approach {
    /// The script in `python/`.
    pub(crate) fn script(self) -> &'static str {
        match self {
            Self::Serial => "article1_serial.py",
            Self::Pool => "article1_pool.py",
            Self::ThreadPool => "article1_threadpool.py",
            Self::Asyncio => "article1_asyncio.py",
            Self::NestedPool => "article2_pool.py",
            Self::NestedThreadPool => "article2_threadpool.py",
        }
    }

    pub(crate) fn scenario(self) -> Scenario {
        match self {
            Self::Serial | Self::Pool | Self::ThreadPool | Self::Asyncio => Scenario::ApiCalls,
            Self::NestedPool | Self::NestedThreadPool => Scenario::TicketMigration,
        }
    }

    /// The executor of the fanout row it is compared with.
    pub(crate) fn fanout_executor(self) -> Executor {
        match self {
            Self::Serial => Executor::Serial,
            Self::Pool | Self::NestedPool => Executor::Process,
            Self::ThreadPool | Self::NestedThreadPool => Executor::Thread,
            Self::Asyncio => Executor::Async,
        }
    }

    /// Whether the approach fails by design (article 2's nested process pools).
    pub(crate) fn fails_by_design(self) -> bool {
        self == Self::NestedPool
    }

    /// The issue's target: fanout at least this many times faster.
    pub(crate) fn target(self) -> Option<f64> {
        match self {
            Self::Pool => Some(3.5),
            Self::ThreadPool => Some(2.5),
            Self::Asyncio => Some(1.8),
            Self::Serial | Self::NestedPool | Self::NestedThreadPool => None,
        }
    }
}

/// One row of Python: a script, its sizes and time scale, and how many runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PythonPoint {
    pub(crate) approach: Approach,
    /// Calls (article 1) or tickets (article 2).
    pub(crate) jobs: usize,
    /// Pool size, or calls in flight for asyncio; 1 for serial.
    pub(crate) workers: usize,
    /// Workers of each ticket's nested pool (article 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) inner_workers: Option<usize>,
    pub(crate) time_scale: f64,
    pub(crate) runs: usize,
}

impl PythonPoint {
    /// What the table calls the approach.
    pub(crate) fn describe(&self) -> String {
        let (w, inner) = (self.workers, self.inner_workers.unwrap_or_default());
        match self.approach {
            Approach::Serial => "serial: `requests.get` one after another".to_owned(),
            Approach::Pool => format!("`multiprocessing.Pool({w}).map` over tuples (the starmap helper)"),
            Approach::ThreadPool => format!("`multiprocessing.pool.ThreadPool({w}).map`"),
            Approach::Asyncio => format!("asyncio + aiohttp, {w} in flight"),
            Approach::NestedPool => format!("`Pool({w})` over tickets, nested `Pool({inner})` per ticket"),
            Approach::NestedThreadPool => {
                format!(
                    "the same after `from multiprocessing.pool import ThreadPool as Pool` ({w} × {inner})"
                )
            }
        }
    }

    /// The script's arguments after the script (the token goes through the environment).
    fn args(&self, url: &str, expected: Option<&Summary>) -> Vec<String> {
        let mut args = vec!["--url".to_owned(), url.to_owned(), "--jobs".to_owned(), self.jobs.to_string()];
        if self.approach != Approach::Serial {
            args.extend(["--workers".to_owned(), self.workers.to_string()]);
        }
        args.extend(["--seed".to_owned(), SEED.to_string()]);
        if let Some(inner) = self.inner_workers {
            args.extend(["--inner-workers".to_owned(), inner.to_string()]);
        }
        if let Some(summary) = expected {
            args.extend([
                "--expect-tickets".to_owned(),
                summary.tickets.to_string(),
                "--expect-attachments".to_owned(),
                summary.attachments.to_string(),
                "--expect-checksum".to_owned(),
                summary.checksum.clone(),
            ]);
        }
        args
    }

    /// Whether `fanout` is the fanout row this one sits beside.
    fn matches(&self, fanout: &FanoutWall) -> bool {
        fanout.scenario == self.approach.scenario()
            && fanout.executor == self.approach.fanout_executor()
            && fanout.workers == self.workers.max(1)
            && fanout.jobs == self.jobs
            && (fanout.time_scale - self.time_scale).abs() < 1e-12
    }
}

/// The rows of a run: article 1 at [`API_SCALE`] (200 calls: serial, `Pool(32)`,
/// `ThreadPool(32)`, asyncio at 200) and article 2 at [`MIGRATION_SCALE`] (the 80 tickets of
/// `support`, 20 × 20 as in the article; the failing nested process pools once). `--quick`:
/// one point, `ThreadPool(16)` over 40 calls, one run (fanout's quick thread x16 row).
pub(crate) fn points(quick: bool, repeat: usize) -> Vec<PythonPoint> {
    let api = |approach, jobs, workers, runs| PythonPoint {
        approach,
        jobs,
        workers,
        inner_workers: None,
        time_scale: API_SCALE,
        runs,
    };
    if quick {
        return vec![api(Approach::ThreadPool, 40, 16, 1)];
    }
    let runs = repeat.max(MIN_RUNS);
    let migration = |approach, runs| PythonPoint {
        approach,
        jobs: Queue::Support.tickets(),
        workers: 20,
        inner_workers: Some(20),
        time_scale: MIGRATION_SCALE,
        runs,
    };
    vec![
        api(Approach::Serial, 200, 1, runs),
        api(Approach::Pool, 200, 32, runs),
        api(Approach::ThreadPool, 200, 32, runs),
        api(Approach::Asyncio, 200, 200, runs),
        migration(Approach::NestedPool, 1),
        migration(Approach::NestedThreadPool, runs),
    ]
}

/// The one JSON line a script prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunLine {
    pub(crate) approach: String,
    pub(crate) jobs: usize,
    pub(crate) wall_seconds: f64,
    /// Items correct (article 1), tickets migrated with all their attachments (article 2).
    pub(crate) ok: usize,
    pub(crate) errors: usize,
    /// Every item correct; for article 2, the server's summary equal to the expected one.
    pub(crate) verified: bool,
    /// What stopped the approach, as `Type: message`.
    #[serde(default)]
    pub(crate) error: Option<String>,
    /// CPU seconds of the timed part: the script's process and its reaped children (a process
    /// pool's workers).
    #[serde(default)]
    pub(crate) cpu_seconds: Option<f64>,
    /// The interpreter's version.
    #[serde(default)]
    pub(crate) python: Option<String>,
    /// Tickets the server holds after the run (article 2).
    #[serde(default)]
    pub(crate) tickets_posted: Option<u64>,
    /// The server's summary after the run (article 2).
    #[serde(default)]
    pub(crate) summary: Option<Summary>,
}

impl RunLine {
    /// The last non-empty line of a script's standard output, parsed.
    pub(crate) fn parse(stdout: &str) -> Result<Self, String> {
        let line = stdout.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or_default();
        serde_json::from_str(line).map_err(|error| format!("unreadable output {line:?}: {error}"))
    }
}

/// A row measured: its runs' lines, and the runs that gave none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PythonRow {
    pub(crate) point: PythonPoint,
    pub(crate) runs: Vec<RunLine>,
    /// Why a run gave no line (could not start, timed out, unreadable output).
    #[serde(default)]
    pub(crate) failures: Vec<String>,
}

impl PythonRow {
    /// The median wall of the verified runs.
    pub(crate) fn median_wall(&self) -> Option<f64> {
        let walls: Vec<f64> = self.runs.iter().filter(|r| r.verified).map(|r| r.wall_seconds).collect();
        stats::median(&walls)
    }

    /// The median CPU seconds of the verified runs.
    pub(crate) fn median_cpu(&self) -> Option<f64> {
        let cpu: Vec<f64> = self.runs.iter().filter(|r| r.verified).filter_map(|r| r.cpu_seconds).collect();
        stats::median(&cpu)
    }

    /// Every run verified, none failed.
    pub(crate) fn verified(&self) -> bool {
        !self.runs.is_empty() && self.failures.is_empty() && self.runs.iter().all(|r| r.verified)
    }

    /// The first error text of the runs (the daemonic error for the nested process pools).
    pub(crate) fn error(&self) -> Option<&str> {
        self.runs.iter().find_map(|r| r.error.as_deref())
    }

    /// Why this row is not what it should be: a row not verified, or the nested process pools
    /// not failing with the daemonic error.
    pub(crate) fn problem(&self) -> Option<String> {
        let label = format!("python {}", self.point.approach.script());
        if let Some(failure) = self.failures.first() {
            return Some(format!("{label}: {failure}"));
        }
        if self.point.approach.fails_by_design() {
            return match self.error() {
                Some(error) if error.contains(DAEMONIC) => None,
                Some(error) => Some(format!("{label}: expected the daemonic error, got {error}")),
                None => Some(format!("{label}: expected the daemonic error, the run succeeded")),
            };
        }
        match self.runs.iter().find(|r| !r.verified) {
            None if self.runs.is_empty() => Some(format!("{label}: no run")),
            None => None,
            Some(run) => Some(format!(
                "{label}: not verified ({} ok, {} errors{})",
                run.ok,
                run.errors,
                run.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            )),
        }
    }
}

/// What the Python side of a report run became.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub(crate) enum PythonSection {
    /// Not measured, and why (no `python3`, no package index...).
    Skipped { reason: String },
    /// Measured.
    Measured {
        /// `Python 3.11.7`.
        python: String,
        /// `requests==2.34.2, aiohttp==3.14.5`.
        packages: String,
        /// The 1-minute load average before and after the Python runs.
        load_before: String,
        load_after: String,
        /// Seconds the Python runs took, the environment's set-up included.
        elapsed_seconds: f64,
        rows: Vec<PythonRow>,
    },
}

impl PythonSection {
    /// What should fail the run: rows not verified, and a skip when `ci` (CI sets `CI`).
    pub(crate) fn problems(&self, ci: bool) -> Vec<String> {
        match self {
            Self::Skipped { reason } if ci => {
                vec![format!("python skipped with CI set (CI makes Python mandatory): {reason}")]
            }
            Self::Skipped { .. } => Vec::new(),
            Self::Measured { rows, .. } => rows.iter().filter_map(PythonRow::problem).collect(),
        }
    }
}

/// Whether the environment variable `CI` is set (non-empty): then Python is mandatory.
pub(crate) fn ci() -> bool {
    std::env::var_os("CI").is_some_and(|value| !value.is_empty())
}

/// What [`measure`] needs.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The workspace root (`python/` is there).
    pub(crate) workspace: PathBuf,
    /// The target directory (the virtual environment goes there).
    pub(crate) target_dir: PathBuf,
    /// The release `fanout` binary (its `mock-api` serves every run).
    pub(crate) fanout: PathBuf,
    /// One point only (`--quick`).
    pub(crate) quick: bool,
    /// Runs per row (at least 3 are made but with `quick`).
    pub(crate) repeat: usize,
}

/// Sets up the environment and measures the rows; never fails: what goes wrong is a skip or a
/// row's failure. Prints a line per row on standard error.
pub(crate) fn measure(options: &Options) -> PythonSection {
    let start = Instant::now();
    let load_before = load_average();
    let venv = match Venv::prepare(&options.workspace, &options.target_dir) {
        Ok(venv) => venv,
        Err(reason) => {
            eprintln!("python: skipped: {reason}");
            return PythonSection::Skipped { reason };
        }
    };
    let expected = Dataset::new(SEED).expected_summary(Queue::Support.name());
    let points = points(options.quick, options.repeat);
    let mut rows: Vec<PythonRow> = points
        .iter()
        .map(|point| PythonRow { point: point.clone(), runs: Vec::new(), failures: Vec::new() })
        .collect();
    // Round after round, so that a slow spell of the machine hits every row alike.
    let rounds = points.iter().map(|p| p.runs).max().unwrap_or(0);
    for round in 0..rounds {
        for row in rows.iter_mut().filter(|row| round < row.point.runs) {
            let expected = (row.point.approach.scenario() == Scenario::TicketMigration)
                .then_some(expected.as_ref())
                .flatten();
            match run_once(&venv, options, &row.point, expected) {
                Ok(line) => {
                    eprintln!(
                        "python {} [{}/{}] ... {}{}",
                        row.point.approach.script(),
                        round + 1,
                        row.point.runs,
                        stats::seconds(line.wall_seconds),
                        match (&line.error, line.verified) {
                            (Some(error), _) => format!(" ({error})"),
                            (None, true) => String::new(),
                            (None, false) => " (not verified)".to_owned(),
                        }
                    );
                    row.runs.push(line);
                }
                Err(failure) => {
                    eprintln!(
                        "python {} [{}/{}] ... {failure}",
                        row.point.approach.script(),
                        round + 1,
                        row.point.runs
                    );
                    row.failures.push(failure);
                }
            }
        }
    }
    PythonSection::Measured {
        python: venv.version,
        packages: venv.packages,
        load_before,
        load_after: load_average(),
        elapsed_seconds: start.elapsed().as_secs_f64(),
        rows,
    }
}

/// The 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The virtual environment under the target directory.
struct Venv {
    python: PathBuf,
    version: String,
    packages: String,
}

impl Venv {
    /// Makes `<target>/python-venv` from `python/requirements.txt` unless it was made from the
    /// same requirements by the same interpreter; `Err` is the reason to skip.
    fn prepare(workspace: &Path, target_dir: &Path) -> Result<Self, String> {
        let requirements = workspace.join("python").join("requirements.txt");
        let pinned = std::fs::read_to_string(&requirements)
            .map_err(|error| format!("could not read {}: {error}", requirements.display()))?;
        let version = interpreter_version("python3")?;
        let dir = target_dir.join("python-venv");
        let python = dir.join("bin").join("python");
        let packages = packages(&pinned);
        let stamp = stamp(&pinned, &version);
        let stamp_file = dir.join(STAMP);
        if python.is_file() && std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
            return Ok(Self { python, version, packages });
        }
        eprintln!("python: making {} ({version}; pip install -r python/requirements.txt)", dir.display());
        match std::fs::remove_dir_all(&dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("could not remove the old {}: {error}", dir.display()));
            }
            _ => {}
        }
        let mut venv = Command::new("python3");
        venv.arg("-m").arg("venv").arg(&dir);
        run_quietly(venv, Duration::from_secs(120)).map_err(|error| {
            format!("`python3 -m venv` failed (on Debian, apt-get install python3-venv): {error}")
        })?;
        let mut pip = Command::new(&python);
        pip.args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input"])
            .args(["--retries", "2", "--timeout", "20", "-r"])
            .arg(&requirements);
        run_quietly(pip, PIP_TIMEOUT).map_err(|error| {
            format!(
                "pip could not install python/requirements.txt (is the package index reachable?): {error}"
            )
        })?;
        std::fs::write(&stamp_file, &stamp)
            .map_err(|error| format!("could not write {}: {error}", stamp_file.display()))?;
        Ok(Self { python, version, packages })
    }
}

/// `Python 3.11.7`, or why there is none.
fn interpreter_version(program: &str) -> Result<String, String> {
    match Command::new(program).arg("--version").stdin(Stdio::null()).output() {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{program} is not on PATH"))
        }
        Err(error) => Err(format!("could not run {program}: {error}")),
        Ok(output) if !output.status.success() => {
            Err(format!("`{program} --version` failed ({})", output.status))
        }
        Ok(output) => {
            let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            Ok(if text.is_empty() { String::from_utf8_lossy(&output.stderr).trim().to_owned() } else { text })
        }
    }
}

/// What the environment is made from: the requirements and the interpreter, as a FNV-1a hash.
fn stamp(requirements: &str, version: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in requirements.bytes().chain([0]).chain(version.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}\n")
}

/// `requests==2.34.2, aiohttp==3.14.5`: the two packages the scripts import, as pinned.
fn packages(requirements: &str) -> String {
    requirements
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("requests==") || line.starts_with("aiohttp=="))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a pipe to the end on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// Runs `command` in a process group of its own, its output captured, up to `timeout` (then the
/// whole group is killed: a Python pool's workers too). Returns standard output, or why not.
fn run_captured(mut command: Command, timeout: Duration) -> Result<String, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|error| format!("could not start it: {error}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    // The group is killed only while its leader is unreaped (running, or a zombie, which keeps
    // its pid and so its group id): the signal cannot reach a group that reused the id. That
    // also stops a pool worker that a crashed script left behind, which would hold the pipes.
    let status = loop {
        let out_of_time = Instant::now() >= deadline;
        match exited(child.id()) {
            Some(true) => {
                kill_group(&child);
                break child.wait().map_err(|error| format!("could not reap it: {error}"));
            }
            Some(false) if !out_of_time => thread::sleep(Duration::from_millis(10)),
            // No /proc: no group kill after the exit.
            None => match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if !out_of_time => thread::sleep(Duration::from_millis(10)),
                Ok(None) => break timed_out(&mut child, timeout),
                Err(error) => break Err(format!("could not wait for it: {error}")),
            },
            Some(false) => break timed_out(&mut child, timeout),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Ok(status) if status.success() => Ok(stdout),
        Ok(status) => Err(format!("{status}: {}", last_lines(&stderr, 3))),
        Err(error) => Err(error),
    }
}

/// Whether `pid` (a child not reaped yet) has exited; `None` without `/proc`.
fn exited(pid: u32) -> Option<bool> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    Some(matches!(state, "Z" | "X"))
}

/// Kills a child's group past its time, then reaps it.
fn timed_out(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus, String> {
    kill_group(child);
    let _ = child.wait();
    Err(format!("timed out after {} s", timeout.as_secs_f64()))
}

fn kill_group(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

fn run_quietly(command: Command, timeout: Duration) -> Result<(), String> {
    run_captured(command, timeout).map(drop)
}

/// The last `n` non-empty lines of `text` that start with `ERROR` (pip's own), or else the
/// last `n` (a Python traceback ends with its error), joined with ` / `.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let errors: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with("ERROR")).collect();
    let lines = if errors.is_empty() { lines } else { errors };
    let tail = lines.get(lines.len().saturating_sub(n)..).unwrap_or_default();
    if tail.is_empty() { "no message".to_owned() } else { tail.join(" / ") }
}

/// `fanout mock-api` as a child, ended when dropped (its stdin closed, then killed and reaped).
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
}

impl Server {
    /// `fanout mock-api --time-scale S --seed 42` on a free loopback port, as `fanout bench`
    /// starts its own (the token from `FANOUT_TOKEN` or the development token, like the
    /// scripts).
    fn start(fanout: &Path, time_scale: f64) -> Result<Self, String> {
        let mut child = Command::new(fanout)
            .args(["mock-api", "--addr", "127.0.0.1:0", "--exit-on-stdin-eof"])
            .args(["--time-scale", &time_scale.to_string(), "--seed", &SEED.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("could not start {} mock-api: {error}", fanout.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (send, receive) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            if let Some(stdout) = stdout {
                let _ = BufReader::new(stdout).read_line(&mut line);
            }
            let _ = send.send(line);
        });
        let mut server = Self { child, stdin, url: String::new() };
        let line = receive.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        match line.trim().strip_prefix("listening on ") {
            Some(url) if url.starts_with("http://") => url.clone_into(&mut server.url),
            _ => {
                return Err(format!("the mock API did not print its address (first line {:?})", line.trim()));
            }
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One run of `point` against a fresh server.
fn run_once(
    venv: &Venv,
    options: &Options,
    point: &PythonPoint,
    expected: Option<&Summary>,
) -> Result<RunLine, String> {
    let server = Server::start(&options.fanout, point.time_scale)?;
    let script = options.workspace.join("python").join(point.approach.script());
    let mut command = Command::new(&venv.python);
    command
        .arg(&script)
        .args(point.args(&server.url, expected))
        .current_dir(options.workspace.join("python"));
    let stdout = run_captured(command, RUN_TIMEOUT)?;
    drop(server);
    let mut line = RunLine::parse(&stdout)?;
    // The harness's own check of the migration: the server's summary is the seed's.
    if point.approach.scenario() == Scenario::TicketMigration && line.summary.as_ref() != expected {
        line.verified = false;
    }
    if line.ok != point.jobs || line.errors != 0 {
        line.verified = false;
    }
    Ok(line)
}

/// A fanout row's median wall, for [`render_markdown`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FanoutWall {
    pub(crate) scenario: Scenario,
    pub(crate) executor: Executor,
    pub(crate) workers: usize,
    pub(crate) jobs: usize,
    pub(crate) time_scale: f64,
    /// Workers of the migration's nested executor.
    pub(crate) inner_workers: Option<usize>,
    pub(crate) wall_seconds: f64,
}

/// The walls of the report's correct, fault-free and unlimited rows.
pub(crate) fn fanout_walls(results: &Results) -> Vec<FanoutWall> {
    results
        .points
        .iter()
        .filter(|r| r.point.faults.is_none() && r.point.rates.is_none())
        .filter_map(|r| {
            let m = r.outcome.measured().filter(|m| m.is_correct())?;
            Some(FanoutWall {
                scenario: r.point.scenario,
                executor: r.point.executor,
                workers: r.point.workers,
                jobs: r.point.jobs,
                time_scale: r.point.time_scale,
                inner_workers: r.point.queue.map(|_| m.inner_workers.unwrap_or(INNER_WORKERS)),
                wall_seconds: m.wall_seconds,
            })
        })
        .collect()
}

/// The section: a table of the Python rows beside the matching fanout rows, fanout's speed-up
/// over each and the issue's target, then the line of article 2's daemonic error.
pub(crate) fn render_markdown(section: &PythonSection, fanout: &[FanoutWall]) -> String {
    let mut out = String::from("<a id=\"python\"></a>\n\n## The articles' Python beside fanout\n\n");
    let (python, packages, load_before, load_after, elapsed, rows) = match section {
        PythonSection::Skipped { reason } => {
            let _ = writeln!(
                out,
                "Skipped: {reason}. (With `python3` and the package index, `cargo xtask report` runs `python/` here; see `python/README.md`.)\n"
            );
            return out;
        }
        PythonSection::Measured { python, packages, load_before, load_after, elapsed_seconds, rows } => {
            (python, packages, load_before, load_after, *elapsed_seconds, rows)
        }
    };
    let runs: Vec<usize> =
        rows.iter().filter(|r| !r.point.approach.fails_by_design()).map(|r| r.point.runs).collect();
    let runs_text = match (runs.iter().min(), runs.iter().max()) {
        (Some(1), Some(1)) => "one run each".to_owned(),
        (Some(min), Some(max)) if min == max => format!("the median of {min} runs"),
        (Some(min), Some(max)) => format!("the median of {min} to {max} runs"),
        _ => "no run".to_owned(),
    };
    let _ = writeln!(
        out,
        "The articles' own approaches in Python (`python/`: {python}, {packages}, in \
         `<target>/python-venv`), each run against a fresh `fanout mock-api` of the kind fanout's \
         rows use (same binary, seed and time scale: {API_SCALE} for article 1, {MIGRATION_SCALE} for \
         article 2), in the same report run, {runs_text}. A script times its approach from the \
         pool's (or session's) start to its last answer; the interpreter's start-up and imports \
         are not counted. **Python CPU**: the CPU seconds of that part, the script's process and \
         its pool's worker processes together (the machine's cores also serve the mock server). \
         **verified**: every item equal to the one the seed generates (article 1), the server's summary (tickets, attachments, checksum) equal to the seed's (article \
         2). fanout's rows are the report's own, at the same sizes; fanout's migration rows run \
         {INNER_WORKERS} inner workers where the article's Python runs 20. Load average {load_before} \
         before the Python runs, {load_after} after ({elapsed}).\n",
        elapsed = stats::seconds(elapsed),
    );
    out.push_str(
        "| article | Python | Python wall | Python CPU | verified | fanout | fanout wall | fanout faster | target |\n\
         |---|---|---:|---:|---|---|---:|---:|---|\n",
    );
    for row in rows {
        let point = &row.point;
        let article = if point.approach.scenario() == Scenario::ApiCalls { 1 } else { 2 };
        let matched = fanout.iter().find(|f| point.matches(f));
        let fanout_label = matched.map_or_else(
            || "—".to_owned(),
            |f| match f.inner_workers {
                _ if f.executor == Executor::Serial => "serial".to_owned(),
                Some(inner) => format!("{} x{} (× {inner} inner)", f.executor, f.workers),
                None => format!("{} x{}", f.executor, f.workers),
            },
        );
        let fanout_wall = matched.map_or_else(|| "—".to_owned(), |f| stats::seconds(f.wall_seconds));
        let (python_wall, verified) = if point.approach.fails_by_design() {
            ("fails (below)".to_owned(), "—".to_owned())
        } else {
            let wall = row.median_wall().map_or_else(|| "—".to_owned(), stats::seconds);
            let ok: usize = row.runs.iter().map(|r| r.ok).min().unwrap_or(0);
            let mark = if row.verified() { "yes" } else { "**no**" };
            (wall, format!("{mark} ({ok}/{} × {})", point.jobs, row.runs.len()))
        };
        let python_cpu = match row.median_cpu() {
            Some(cpu) if !point.approach.fails_by_design() => stats::seconds(cpu),
            _ => "—".to_owned(),
        };
        let speed_up = match (matched, row.median_wall()) {
            (Some(f), Some(wall)) if !point.approach.fails_by_design() => {
                stats::speed_up(wall, f.wall_seconds)
            }
            _ => None,
        };
        // The issue's targets are for the article's 200 calls.
        let target = match (point.approach.target().filter(|_| point.jobs == 200), speed_up) {
            (Some(target), Some(got)) if got >= target => format!("≥ {} — met", stats::times(target)),
            (Some(target), Some(_)) => format!("≥ {} — **missed**", stats::times(target)),
            (Some(target), None) => format!("≥ {}", stats::times(target)),
            (None, _) => String::new(),
        };
        let _ = writeln!(
            out,
            "| {article} | {} | {python_wall} | {python_cpu} | {verified} | {fanout_label} | {fanout_wall} | {} \
             | {target} |",
            point.describe(),
            speed_up.map_or_else(|| "—".to_owned(), stats::times),
        );
    }
    out.push('\n');
    for row in rows.iter().filter(|r| r.point.approach.fails_by_design()) {
        let point = &row.point;
        let line = match (row.error(), row.runs.first()) {
            (Some(error), Some(run)) => format!(
                "**Article 2's nested process pools**, {}: `{error}`, after posting {} of {} tickets \
                 ({} attachments), as the article found; the one-line swap to \
                 `from multiprocessing.pool import ThreadPool as Pool` (the next row) works.",
                point.describe(),
                run.tickets_posted.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                point.jobs,
                run.summary.as_ref().map_or_else(|| "?".to_owned(), |s| s.attachments.to_string()),
            ),
            (None, Some(_)) => format!(
                "**Article 2's nested process pools**, {}: ran without the daemonic error (unexpected).",
                point.describe()
            ),
            (_, None) => format!(
                "**Article 2's nested process pools**, {}: no run ({}).",
                point.describe(),
                row.failures.first().map_or("no reason", String::as_str)
            ),
        };
        let _ = writeln!(out, "{line}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(wall: f64, ok: usize, verified: bool, error: Option<&str>) -> RunLine {
        RunLine {
            approach: "x".to_owned(),
            jobs: ok,
            wall_seconds: wall,
            ok,
            errors: 0,
            verified,
            error: error.map(str::to_owned),
            cpu_seconds: Some(wall / 2.0),
            python: Some("3.11.7".to_owned()),
            tickets_posted: None,
            summary: None,
        }
    }

    fn row(approach: Approach, walls: &[f64]) -> PythonRow {
        let point = points(false, 3).into_iter().find(|p| p.approach == approach).unwrap_or(PythonPoint {
            approach,
            jobs: 1,
            workers: 1,
            inner_workers: None,
            time_scale: 1.0,
            runs: 1,
        });
        let runs = walls.iter().map(|&w| line(w, point.jobs, true, None)).collect();
        PythonRow { point, runs, failures: Vec::new() }
    }

    fn wall(
        scenario: Scenario,
        executor: Executor,
        workers: usize,
        jobs: usize,
        scale: f64,
        seconds: f64,
    ) -> FanoutWall {
        let inner_workers = (scenario == Scenario::TicketMigration).then_some(INNER_WORKERS);
        FanoutWall {
            scenario,
            executor,
            workers,
            jobs,
            time_scale: scale,
            inner_workers,
            wall_seconds: seconds,
        }
    }

    #[test]
    fn a_scripts_line_parses_and_bad_output_says_why() {
        let stdout = "noise\n{\"approach\": \"Pool(20), nested Pool(20)\", \"jobs\": 80, \"wall_seconds\": 0.55, \
                      \"ok\": 0, \"errors\": 80, \"verified\": false, \"error\": \"AssertionError: daemonic \
                      processes are not allowed to have children\", \"python\": \"3.11.7\", \"workers\": 20, \
                      \"tickets_posted\": 80, \"summary\": {\"tickets\": 80, \"attachments\": 0, \"checksum\": \
                      \"5c2757a9b09421f6\"}, \"expected\": {}}\n\n";
        let parsed = RunLine::parse(stdout);
        assert!(parsed.is_ok(), "{parsed:?}");
        let parsed = parsed.unwrap_or_else(|_| line(0.0, 0, false, None));
        assert_eq!((parsed.jobs, parsed.ok, parsed.errors, parsed.verified), (80, 0, 80, false));
        assert_eq!(parsed.tickets_posted, Some(80));
        assert!(parsed.error.as_deref().is_some_and(|e| e.contains(DAEMONIC)));
        assert_eq!(parsed.summary.map(|s| s.attachments), Some(0));
        // Article 1's line has neither summary nor error.
        let api = RunLine::parse(
            "{\"approach\": \"serial\", \"jobs\": 200, \"wall_seconds\": 2.5, \"ok\": 200, \"errors\": 0, \
             \"verified\": true, \"error\": null, \"python\": \"3.11.7\", \"workers\": 1}",
        );
        assert_eq!(api.map(|l| (l.ok, l.verified, l.error, l.summary)), Ok((200, true, None, None)));
        let bad = RunLine::parse("Traceback (most recent call last):\n");
        assert!(bad.is_err_and(|e| e.contains("unreadable output") && e.contains("Traceback")));
        assert!(RunLine::parse("").is_err());
    }

    #[test]
    fn the_rows_are_the_articles_and_quick_runs_one_point() {
        let default = points(false, 1);
        assert_eq!(
            default.iter().map(|p| (p.approach, p.workers, p.jobs)).collect::<Vec<_>>(),
            [
                (Approach::Serial, 1, 200),
                (Approach::Pool, 32, 200),
                (Approach::ThreadPool, 32, 200),
                (Approach::Asyncio, 200, 200),
                (Approach::NestedPool, 20, 80),
                (Approach::NestedThreadPool, 20, 80),
            ]
        );
        assert!(default.iter().all(|p| p.runs >= MIN_RUNS || p.approach.fails_by_design()));
        assert!(default.iter().all(|p| p.time_scale
            == if p.approach.scenario() == Scenario::ApiCalls { API_SCALE } else { MIGRATION_SCALE }));
        let quick = points(true, 3);
        assert_eq!(quick.len(), 1);
        assert_eq!(
            quick.iter().map(|p| (p.approach, p.runs)).collect::<Vec<_>>(),
            [(Approach::ThreadPool, 1)]
        );
        // The scripts the rows name exist.
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python");
        for point in &default {
            assert!(python.join(point.approach.script()).is_file(), "{}", point.approach.script());
        }
    }

    #[test]
    fn args_pass_the_sizes_and_the_expected_summary() {
        let migration = points(false, 3).into_iter().find(|p| p.approach == Approach::NestedThreadPool);
        let summary = Summary { tickets: 80, attachments: 528, checksum: "90e7c25f547e1424".to_owned() };
        assert_eq!(
            migration.map(|p| p.args("http://127.0.0.1:1", Some(&summary)).join(" ")),
            Some(
                "--url http://127.0.0.1:1 --jobs 80 --workers 20 --seed 42 --inner-workers 20 \
                 --expect-tickets 80 --expect-attachments 528 --expect-checksum 90e7c25f547e1424"
                    .to_owned()
            )
        );
        let serial = PythonPoint {
            approach: Approach::Serial,
            jobs: 5,
            workers: 1,
            inner_workers: None,
            time_scale: 0.01,
            runs: 1,
        };
        assert_eq!(serial.args("u", None).join(" "), "--url u --jobs 5 --seed 42");
    }

    #[test]
    fn the_threadpool_swap_is_one_line() {
        let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python");
        let read = |name: &str| std::fs::read_to_string(python.join(name)).unwrap_or_default();
        let (pool, thread) = (read("article2_pool.py"), read("article2_threadpool.py"));
        assert!(!pool.is_empty() && pool.lines().count() == thread.lines().count());
        let differing: Vec<(&str, &str)> = pool.lines().zip(thread.lines()).filter(|(a, b)| a != b).collect();
        assert_eq!(
            differing,
            [("from multiprocessing import Pool", "from multiprocessing.pool import ThreadPool as Pool")]
        );
    }

    #[test]
    fn rows_take_the_median_and_say_what_is_wrong() {
        let good = row(Approach::Pool, &[0.5, 0.3, 0.4]);
        assert_eq!(good.median_wall(), Some(0.4));
        assert!(good.verified() && good.problem().is_none());
        let mut wrong = good.clone();
        if let Some(run) = wrong.runs.get_mut(1) {
            run.verified = false;
            run.ok = 199;
        }
        assert!(!wrong.verified());
        assert_eq!(wrong.median_wall(), Some(0.45), "the median of the verified runs");
        assert!(wrong.problem().is_some_and(|p| p.contains("article1_pool.py: not verified (199 ok")));
        let mut failed = good.clone();
        failed.failures.push("timed out after 120 s".to_owned());
        assert!(failed.problem().is_some_and(|p| p.ends_with("timed out after 120 s")));
        let mut daemonic = row(Approach::NestedPool, &[]);
        daemonic.runs.push(line(0.5, 0, false, Some(&format!("AssertionError: {DAEMONIC}"))));
        assert_eq!(daemonic.problem(), None, "the daemonic error is that row's expected outcome");
        daemonic.runs = vec![line(0.5, 80, true, None)];
        assert!(daemonic.problem().is_some_and(|p| p.contains("expected the daemonic error")));
    }

    #[test]
    fn a_skip_fails_only_under_ci() {
        let skipped = PythonSection::Skipped { reason: "python3 is not on PATH".to_owned() };
        assert!(skipped.problems(false).is_empty());
        assert_eq!(
            skipped.problems(true),
            ["python skipped with CI set (CI makes Python mandatory): python3 is not on PATH"]
        );
        let markdown = render_markdown(&skipped, &[]);
        assert!(markdown.contains("Skipped: python3 is not on PATH."), "{markdown}");
        // A missing interpreter is a reason, not an error.
        let missing = interpreter_version("python3-that-does-not-exist-fanout");
        assert_eq!(missing, Err("python3-that-does-not-exist-fanout is not on PATH".to_owned()));
        // The section survives results.json.
        let json = serde_json::to_string(&skipped).unwrap_or_default();
        assert_eq!(serde_json::from_str::<PythonSection>(&json).ok(), Some(skipped));
    }

    #[test]
    fn the_stamp_follows_requirements_and_interpreter() {
        let a = stamp("requests==2.34.2\n", "Python 3.11.7");
        assert_eq!(a, stamp("requests==2.34.2\n", "Python 3.11.7"));
        assert_ne!(a, stamp("requests==2.34.1\n", "Python 3.11.7"));
        assert_ne!(a, stamp("requests==2.34.2\n", "Python 3.12.1"));
        assert_eq!(
            packages("# pinned\nrequests==2.34.2\naiohttp==3.14.5\nyarl==1.25.1\n"),
            "requests==2.34.2, aiohttp==3.14.5"
        );
        assert_eq!(last_lines("a\n\nb\nc\n", 2), "b / c");
        assert_eq!(last_lines("", 2), "no message");
        assert_eq!(
            last_lines("WARNING: Retrying\nERROR: Could not find requests\nERROR: No matching\n", 3),
            "ERROR: Could not find requests / ERROR: No matching"
        );
    }

    #[test]
    fn the_table_puts_python_beside_fanout() {
        let mut daemonic = row(Approach::NestedPool, &[]);
        let mut failing = line(0.55, 0, false, Some(&format!("AssertionError: {DAEMONIC}")));
        failing.tickets_posted = Some(80);
        failing.summary =
            Some(Summary { tickets: 80, attachments: 0, checksum: "5c2757a9b09421f6".to_owned() });
        daemonic.runs.push(failing);
        let section = PythonSection::Measured {
            python: "Python 3.11.7".to_owned(),
            packages: "requests==2.34.2, aiohttp==3.14.5".to_owned(),
            load_before: "1.5".to_owned(),
            load_after: "1.7".to_owned(),
            elapsed_seconds: 30.0,
            rows: vec![
                row(Approach::Serial, &[2.5, 2.45, 2.51]),
                row(Approach::Pool, &[0.40, 0.34, 0.43]),
                row(Approach::ThreadPool, &[0.25, 0.23, 0.28]),
                row(Approach::Asyncio, &[0.09, 0.08, 0.10]),
                daemonic,
                row(Approach::NestedThreadPool, &[3.5, 3.4, 3.6]),
            ],
        };
        let fanout = [
            wall(Scenario::ApiCalls, Executor::Serial, 1, 200, 0.01, 2.17),
            wall(Scenario::ApiCalls, Executor::Process, 32, 200, 0.01, 0.096),
            wall(Scenario::ApiCalls, Executor::Thread, 32, 200, 0.01, 0.080),
            // At another time scale: not the async row's match.
            wall(Scenario::ApiCalls, Executor::Async, 200, 200, 1.0, 1.1),
            wall(Scenario::TicketMigration, Executor::Thread, 20, 80, 0.001, 0.2),
        ];
        let markdown = render_markdown(&section, &fanout);
        assert!(markdown.contains("## The articles' Python beside fanout"), "{markdown}");
        assert!(markdown.contains("the median of 3 runs"), "{markdown}");
        assert!(
            markdown.contains(
                "| 1 | `multiprocessing.Pool(32).map` over tuples (the starmap helper) | 400 ms | 200 ms | yes (200/200 × 3) \
                 | process x32 | 96.0 ms | 4.2x | ≥ 3.5x — met |"
            ),
            "{markdown}"
        );
        assert!(
            markdown.contains("| `multiprocessing.pool.ThreadPool(32).map` | 250 ms | 125 ms | yes (200/200 × 3) | thread x32 | 80.0 ms | 3.1x | ≥ 2.5x — met |"),
            "{markdown}"
        );
        assert!(
            markdown.contains(
                "| asyncio + aiohttp, 200 in flight | 90.0 ms | 45.0 ms | yes (200/200 × 3) | — | — | — | ≥ 1.8x |"
            ),
            "{markdown}"
        );
        assert!(markdown.contains("| serial: `requests.get` one after another | 2.50 s | 1.25 s | yes (200/200 × 3) | serial | 2.17 s | 1.2x |  |"), "{markdown}");
        assert!(markdown.contains("| thread x20 (× 4 inner) | 200 ms | 17.5x |"), "{markdown}");
        assert!(markdown.contains("| fails (below) | — | — | — | — | — |"), "{markdown}");
        assert!(
            markdown.contains(&format!(
                "`AssertionError: {DAEMONIC}`, after posting 80 of 80 tickets (0 attachments)"
            )),
            "{markdown}"
        );
        // A missed target says so.
        let slow = [wall(Scenario::ApiCalls, Executor::Process, 32, 200, 0.01, 0.2)];
        assert!(render_markdown(&section, &slow).contains("| 2.0x | ≥ 3.5x — **missed** |"));
    }

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn a_child_and_its_group_end_within_the_time() {
        assert_eq!(run_captured(sh("echo hi"), Duration::from_secs(10)), Ok("hi\n".to_owned()));
        assert_eq!(
            run_captured(sh("echo no >&2; echo ERROR: no index >&2; exit 3"), Duration::from_secs(10)),
            Err("exit status: 3: ERROR: no index".to_owned())
        );
        // A grandchild left behind holds the pipes: the group is stopped when the script exits.
        let start = Instant::now();
        assert_eq!(
            run_captured(sh("sleep 30 & echo done"), Duration::from_secs(10)),
            Ok("done\n".to_owned())
        );
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        // A hung script and its children are killed at the limit.
        let start = Instant::now();
        assert_eq!(
            run_captured(sh("sleep 30 & sleep 30"), Duration::from_millis(300)),
            Err("timed out after 0.3 s".to_owned())
        );
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        assert!(
            run_captured(Command::new("/nonexistent/fanout-python"), Duration::from_secs(1))
                .is_err_and(|e| e.starts_with("could not start it"))
        );
    }

    /// The real thing, by hand: `cargo build --release -p fanout-bench --bin fanout`, then
    /// `cargo test -p xtask python::tests::measure_for_real -- --ignored --nocapture`
    /// (`FANOUT_PYTHON_FULL=1` for the default rows rather than the quick point).
    #[test]
    #[ignore = "needs python3, the package index and a release fanout binary"]
    fn measure_for_real() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target_dir =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from);
        let options = Options {
            fanout: target_dir.join("release").join("fanout"),
            workspace,
            target_dir,
            quick: std::env::var_os("FANOUT_PYTHON_FULL").is_none(),
            repeat: 3,
        };
        let section = measure(&options);
        println!("{}", render_markdown(&section, &[]));
        assert!(matches!(section, PythonSection::Measured { .. }), "{section:?}");
        assert_eq!(section.problems(true), Vec::<String>::new());
    }
}
