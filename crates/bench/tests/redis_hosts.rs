//! `fanout bench --executor redis --hosts K`: the outer pool's workers on K worker-host
//! processes (`fanout worker`, on loopback), none of the pool's own. Runs the bench binary as a
//! user would, on api-calls and on the nested ticket migration (its inner pools, built inside
//! the hosts' jobs, start workers of their own), each bounded in time and requests, and checks
//! from the JSON row that the hosts really served the run (`host_workers`, `hosts_used`, no
//! `other_workers`) and that no host process outlives the bench.
//!
//! Needs redis-server (the bench starts its own): without it the Redis tests say SKIPPED,
//! unless `FANOUT_REQUIRE_REDIS` is set (as `.ci/run` does), then they fail.

#[path = "../../redis/tests/support/require.rs"]
mod require;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A run's bound: far above the few seconds each takes on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(120);

/// One run at a time: each starts a redis-server, a mock server and a dozen processes.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `fanout bench ARGS` with its own redis-server (no `FANOUT_REDIS_URL`), killed past
/// [`DEADLINE`]; its JSON row, and the bench's pid.
fn bench(args: &[&str]) -> (Value, u32) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .arg("bench")
        .args(args)
        .env_remove("FANOUT_REDIS_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fanout starts");
    let pid = child.id();
    let started = Instant::now();
    while child.try_wait().expect("fanout can be waited for").is_none() {
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fanout bench {args:?} ran past {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("fanout's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    let row = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("{error}: {stdout}"));
    (row, pid)
}

/// Processes still running whose command line names a worker-host queue of the bench `pid`
/// (`fanout-bench-hosts-PID-N`): host supervisors or their workers left behind.
fn leftovers(pid: u32) -> Vec<String> {
    let needle = format!("fanout-bench-hosts-{pid}-");
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, std::fs::read(format!("/proc/{p}/cmdline")).ok()?)))
        .map(|(p, cmdline)| (p, String::from_utf8_lossy(&cmdline).replace('\0', " ")))
        .filter(|(_, cmdline)| cmdline.contains(&needle))
        .map(|(p, cmdline)| format!("{p}: {cmdline}"))
        .collect()
}

/// The row says the hosts served the run, and nothing else did.
fn assert_served_by_hosts(row: &Value, workers: u64) {
    assert_eq!(row["executor"], "redis", "{row}");
    assert_eq!(row["hosts"], 2, "{row}");
    assert_eq!(row["hosts_used"], 2, "both hosts' workers were given entries: {row}");
    let host_workers = row["host_workers"].as_u64().unwrap_or(0);
    assert!((2..=workers).contains(&host_workers), "{row}");
    assert_eq!(row["other_workers"], 0, "the pool started no worker of its own: {row}");
    assert!(row["host_cpu_seconds"].as_f64().is_some_and(|cpu| cpu > 0.0), "{row}");
}

#[test]
fn api_calls_run_on_two_worker_hosts() {
    if !require::redis_found() {
        return;
    }
    let args = ["--scenario", "api-calls", "--executor", "redis", "--workers", "8", "--hosts", "2"];
    let (row, pid) = bench(&[&args[..], &["--jobs", "64", "--time-scale", "0.01"]].concat());
    assert_eq!(
        (&row["ok"], &row["errors"], &row["lost"], &row["duplicated"]),
        (&64.into(), &0.into(), &0.into(), &0.into()),
        "{row}"
    );
    assert_eq!(row["verified"], true, "{row}");
    assert_served_by_hosts(&row, 8);
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

#[test]
fn the_nested_migration_runs_on_two_worker_hosts() {
    if !require::redis_found() {
        return;
    }
    let args = ["--scenario", "ticket-migration", "--executor", "redis", "--workers", "4", "--hosts", "2"];
    let size = ["--jobs", "8", "--inner-workers", "2", "--time-scale", "0.001"];
    let (row, pid) = bench(&[&args[..], &size].concat());
    assert_eq!(
        (&row["ok"], &row["errors"], &row["lost"], &row["duplicated"]),
        (&8.into(), &0.into(), &0.into(), &0.into()),
        "{row}"
    );
    assert_eq!(row["verified"], true, "{row}");
    assert_served_by_hosts(&row, 4);
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

#[test]
fn hosts_with_another_executor_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["bench", "--scenario", "api-calls", "--executor", "thread", "--workers", "4", "--hosts", "2"])
        .output()
        .expect("fanout runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--hosts") && stderr.contains("--executor redis"), "{stderr}");
    let too_many = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["bench", "--scenario", "api-calls", "--executor", "redis", "--workers", "2", "--hosts", "3"])
        .output()
        .expect("fanout runs");
    let stderr = String::from_utf8_lossy(&too_many.stderr);
    assert!(!too_many.status.success() && stderr.contains("between 1 and --workers"), "{stderr}");
    let one_namespace = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["bench", "--scenario", "api-calls", "--executor", "redis", "--workers", "4", "--hosts", "2"])
        .args(["--hosts-netns", "only-one"])
        .output()
        .expect("fanout runs");
    let stderr = String::from_utf8_lossy(&one_namespace.stderr);
    assert!(!one_namespace.status.success() && stderr.contains("one per host"), "{stderr}");
}
