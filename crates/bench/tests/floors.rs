//! End-to-end tests of `fanout floor`: both raw clients at a small size fetch and verify every
//! item against a server of their own. No timing is asserted: the machine is shared and small.

use std::process::Command;

use serde_json::Value;

const TOKEN: &str = "test-token-floor-never-printed";

/// Runs `fanout floor --client CLIENT` at 20 jobs, 4 workers, time scale 0.01; its one row.
fn floor(client: &str, extra: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["floor", "--client", client, "--workers", "4", "--jobs", "20", "--time-scale", "0.01"])
        .args(["--repeat", "2", "--format", "json"])
        .args(extra)
        .env("FANOUT_TOKEN", TOKEN)
        .output()
        .unwrap_or_else(|error| panic!("could not run fanout: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "fanout floor --client {client} failed: {stderr}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "the token leaked: {stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one row: {stdout}");
    serde_json::from_str(lines[0]).unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
}

fn assert_floor(row: &Value, client: &str) {
    assert_eq!(row["client"], client, "{row}");
    assert_eq!(row["workers"], 4, "{row}");
    assert_eq!(row["jobs"], 20, "{row}");
    assert_eq!(row["ok"], 20, "{row}");
    assert_eq!(row["errors"], 0, "{row}");
    assert_eq!(row["verified"], true, "{row}");
    assert_eq!(row["requests"], 40, "{row}");
    assert!(row["wall_seconds"].as_f64().is_some_and(|w| w > 0.0), "{row}");
    assert!(row["ideal_seconds"].as_f64().is_some_and(|w| w > 0.0), "{row}");
    assert!(row["efficiency"].as_f64().is_some_and(|e| e > 0.0), "{row}");
    assert_eq!(row["wall_seconds_runs"].as_array().map(Vec::len), Some(2), "{row}");
    // The server is a process of the run: its CPU time is read (it may be 0 ticks).
    assert!(row["server_cpu_seconds_per_request"].as_f64().is_some_and(|s| s >= 0.0), "{row}");
}

#[test]
fn the_thread_floor_fetches_and_verifies_every_item() {
    let row = floor("threads", &[]);
    assert_floor(&row, "threads");
    assert_eq!(row["connections"], "warm", "{row}");
}

#[test]
fn the_async_floor_fetches_and_verifies_every_item() {
    assert_floor(&floor("async", &[]), "async");
}

#[test]
fn cold_floors_verify_too() {
    for client in ["threads", "async"] {
        let row = floor(client, &["--cold"]);
        assert_floor(&row, client);
        assert_eq!(row["connections"], "cold", "{row}");
    }
}

#[test]
fn bad_floor_flags_are_clear_errors() {
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["floor", "--client", "fibers", "--workers", "4"])
        .output()
        .unwrap_or_else(|error| panic!("could not run fanout: {error}"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("threads") && stderr.contains("async"), "{stderr}");
}
