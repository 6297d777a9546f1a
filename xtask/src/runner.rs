//! Building the harness in release and running one `fanout bench` per point.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::matrix::Point;
use crate::results::{Outcome, PointResult};

/// The cargo that runs this xtask (so that `+toolchain` and `CARGO_TARGET_DIR` carry over).
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `cargo build --release -p fanout-bench`, its output shown; returns the `fanout` binary.
pub(crate) fn build(workspace: &Path) -> anyhow::Result<PathBuf> {
    let status = cargo()
        .args(["build", "--release", "--package", "fanout-bench", "--bin", "fanout"])
        .current_dir(workspace)
        .status()
        .context("could not run cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p fanout-bench failed ({status})");
    }
    let binary = target_dir(workspace)?.join("release").join("fanout");
    if !binary.is_file() {
        bail!("the build succeeded but {} does not exist", binary.display());
    }
    Ok(binary)
}

/// The workspace's target directory, as `cargo metadata` reports it (`CARGO_TARGET_DIR`
/// and `.cargo/config.toml` included).
pub(crate) fn target_dir(workspace: &Path) -> anyhow::Result<PathBuf> {
    let output = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace)
        .stderr(Stdio::inherit())
        .output()
        .context("could not run cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed ({})", output.status);
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata printed something unreadable")?;
    match metadata.get("target_directory").and_then(serde_json::Value::as_str) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => bail!("cargo metadata reported no target_directory"),
    }
}

/// Reads a child's pipe to the end on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

/// Waits for `child` up to `timeout`; past it, interrupts it (so that `fanout bench` kills its
/// own children), then kills it. Polling `try_wait` from the thread that owns the child means
/// a signal can only reach this child, never a process that reused its pid.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<(ExitStatus, bool)> {
    let deadline = Instant::now() + timeout;
    let mut interrupted = false;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, interrupted));
        }
        let now = Instant::now();
        if now >= deadline && !interrupted {
            interrupted = true;
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGINT);
            }
        } else if now >= deadline + Duration::from_secs(10) {
            child.kill()?;
            return child.wait().map(|status| (status, true));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `fanout bench` for `point` with `repeat` runs; never fails: a failure is an [`Outcome`].
pub(crate) fn run_point(fanout: &Path, point: &Point, repeat: usize, timeout: Duration) -> PointResult {
    let start = Instant::now();
    let outcome = match run_captured(fanout, &point.args(repeat), timeout) {
        Err(why) => Outcome::Failed(why),
        Ok(run) => Outcome::from_invocation(run.success, &run.stdout, &run.stderr),
    };
    PointResult { point: point.clone(), outcome, elapsed_seconds: start.elapsed().as_secs_f64() }
}

/// A `fanout` invocation that ended within its time: its exit and its output.
pub(crate) struct Captured {
    pub(crate) success: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `fanout ARGS`, its output captured, within `timeout` (see [`wait_with_timeout`]); why
/// not, when it could not start, could not be waited for or timed out.
pub(crate) fn run_captured(fanout: &Path, args: &[String], timeout: Duration) -> Result<Captured, String> {
    let mut child = Command::new(fanout)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("could not start {}: {error}", fanout.display()))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let waited = wait_with_timeout(&mut child, timeout);
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    let command = args.first().map_or("fanout", String::as_str);
    match waited {
        Err(error) => Err(format!("could not wait for fanout {command}: {error}")),
        Ok((_, true)) => Err(format!("timed out after {} s", timeout.as_secs())),
        Ok((status, false)) => Ok(Captured { success: status.success(), stdout, stderr }),
    }
}
