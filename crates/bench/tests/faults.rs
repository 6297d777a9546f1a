//! The proof of issue 7: the `support` migration through a bad network (10% errors, 2% dropped
//! connections, a 1% slow tail) and, for the process pool, a worker SIGKILLed every 50 ms,
//! ends for every executor with every ticket and attachment migrated once and the summary
//! checksum of a fault-free run. Runs `fanout bench` itself, as a user would.

use std::process::Command;

use serde_json::Value;

/// Time scale of the runs: a ticket costs ~22.5 ms serially, the whole queue ~2 s.
const TIME_SCALE: &str = "0.001";

fn migrate(executor: &str, extra: &[&str]) -> Value {
    let faults = ["--error-rate", "0.1", "--drop-rate", "0.02", "--slow-rate", "0.01"];
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["bench", "--scenario", "ticket-migration", "--queue", "support", "--executor", executor])
        .args(["--workers", "10", "--inner-workers", "4", "--time-scale", TIME_SCALE])
        .args(faults)
        .args(extra)
        .output()
        .expect("fanout runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{executor}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("{executor}: {error}: {stdout}"))
}

fn assert_nothing_lost_or_duplicated(executor: &str, row: &Value) {
    assert_eq!(row["ok"], 80, "{executor}: {row}");
    assert_eq!(row["errors"], 0, "{executor}: {row}");
    assert_eq!(row["lost"], 0, "{executor}: {row}");
    assert_eq!(row["duplicated"], 0, "{executor}: {row}");
    // The new system's summary (its counts and checksum) equals a fault-free migration's.
    assert_eq!(row["verified"], true, "{executor}: {row}");
    // The faults happened: with 10% errors some of ~1,000 requests must have been retried.
    assert!(row["http_retries"].as_u64().is_some_and(|retries| retries > 0), "{executor}: {row}");
}

#[test]
fn the_migration_survives_faults_on_serial() {
    assert_nothing_lost_or_duplicated("serial", &migrate("serial", &[]));
}

#[test]
fn the_migration_survives_faults_on_threads() {
    assert_nothing_lost_or_duplicated("thread", &migrate("thread", &[]));
}

#[test]
fn the_migration_survives_faults_on_async() {
    assert_nothing_lost_or_duplicated("async", &migrate("async", &[]));
}

#[test]
fn the_migration_survives_faults_and_killed_workers_on_processes() {
    let row = migrate("process", &["--retry-lost", "8", "--kill-worker-every", "0.05"]);
    assert_nothing_lost_or_duplicated("process", &row);
    assert!(row["worker_retries"].is_u64(), "{row}");
}

#[test]
fn resilience_flags_are_refused_without_worker_processes() {
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["bench", "--scenario", "ticket-migration", "--executor", "thread", "--workers", "2"])
        .args(["--kill-worker-every", "1"])
        .output()
        .expect("fanout runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--executor process"));
}
