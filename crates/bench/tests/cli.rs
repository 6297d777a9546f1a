//! End-to-end tests of the `fanout` binary: `bench` on every built executor and scenario at a
//! tiny time scale, its flag errors, and `mock-api`. Nothing here asserts a speed: the machine
//! is shared and small.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

use fanout_bench::report::CONTRACT_KEYS;
use serde_json::Value;

const TOKEN: &str = "test-token-7c1e-never-printed";

fn fanout(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_fanout")).args(args).env("FANOUT_TOKEN", TOKEN).output();
    let output = output.unwrap_or_else(|error| panic!("could not run fanout: {error}"));
    let shown =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!shown.contains(TOKEN), "the token leaked into the output: {shown}");
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `fanout bench` with `args` at time scale 0.001 and returns its one JSON row.
fn bench(args: &[&str]) -> Value {
    let mut all = vec!["bench", "--time-scale", "0.001"];
    all.extend_from_slice(args);
    let output = fanout(&all);
    assert!(output.status.success(), "fanout {all:?} failed: {}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}")))
        .collect();
    assert_eq!(rows.len(), 1, "one row per configuration: {stdout}");
    rows.into_iter().next().unwrap_or_default()
}

fn assert_correct(row: &Value, jobs: u64) {
    for key in CONTRACT_KEYS.into_iter().chain(["repeat", "nested", "inner_workers", "queue"]) {
        assert!(row.get(key).is_some(), "missing key {key} in {row}");
    }
    assert_eq!(row["jobs"], jobs, "{row}");
    assert_eq!(row["ok"], jobs, "{row}");
    assert_eq!(row["errors"], 0, "{row}");
    assert_eq!(row["lost"], 0, "{row}");
    assert_eq!(row["duplicated"], 0, "{row}");
    assert_eq!(row["verified"], true, "{row}");
    assert!(row["efficiency"].as_f64().is_some_and(|e| e > 0.0), "{row}");
    assert!(row["wall_seconds"].as_f64().is_some_and(|w| w > 0.0), "{row}");
    assert!(row["peak_rss_bytes"].as_u64().is_some_and(|rss| rss > 0), "{row}");
    assert!(row["peak_pss_bytes"].as_u64().is_some_and(|pss| pss > 0), "{row}");
}

#[test]
fn api_calls_on_serial_and_thread() {
    for executor in ["serial", "thread"] {
        let row =
            bench(&["--scenario", "api-calls", "--executor", executor, "--workers", "4", "--jobs", "12"]);
        assert_correct(&row, 12);
        assert_eq!(row["scenario"], "api-calls");
        assert_eq!(row["executor"], executor);
        assert_eq!(row["nested"], false);
    }
}

#[test]
fn ticket_migration_on_serial_and_thread() {
    for (executor, inner) in [("serial", 1), ("thread", 2)] {
        let row = bench(&[
            "--scenario",
            "ticket-migration",
            "--executor",
            executor,
            "--workers",
            "3",
            "--jobs",
            "5",
            "--inner-workers",
            "2",
        ]);
        assert_correct(&row, 5);
        assert_eq!(row["nested"], true);
        assert_eq!(row["inner_workers"], inner);
        assert_eq!(row["queue"], "support");
    }
}

#[test]
fn ticket_migration_of_the_archive_queue() {
    let row = bench(&[
        "--scenario",
        "ticket-migration",
        "--executor",
        "thread",
        "--workers",
        "4",
        "--jobs",
        "3",
        "--queue",
        "archive",
    ]);
    assert_correct(&row, 3);
    assert_eq!(row["queue"], "archive");
}

#[test]
fn cpu_on_serial_and_thread() {
    for executor in ["serial", "thread"] {
        let row = bench(&["--scenario", "cpu", "--executor", executor, "--workers", "2", "--jobs", "3"]);
        assert_correct(&row, 3);
        assert!(row["cpu_seconds"].as_f64().is_some_and(|cpu| cpu > 0.0), "{row}");
    }
}

#[test]
fn repeat_reports_every_run_and_markdown_is_a_table() {
    let row = bench(&[
        "--scenario",
        "api-calls",
        "--executor",
        "thread",
        "--workers",
        "2",
        "--jobs",
        "4",
        "--repeat",
        "2",
    ]);
    assert_eq!(row["repeat"], 2);
    assert_eq!(row["wall_seconds_runs"].as_array().map(Vec::len), Some(2));

    let output = fanout(&[
        "bench",
        "--scenario",
        "api-calls",
        "--executor",
        "serial",
        "--workers",
        "1",
        "--jobs",
        "2",
        "--time-scale",
        "0.001",
        "--format",
        "markdown",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let table = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(table.starts_with("| scenario | executor |"), "{table}");
    assert!(table.contains("| api-calls | serial | 1 | 2 |"), "{table}");
}

#[test]
fn bad_flags_fail_with_a_helpful_message() {
    let base = ["bench", "--scenario", "api-calls", "--executor", "thread"];
    let cases: [(&[&str], &str); 7] = [
        (&["--workers", "0"], "--workers"),
        (&["--workers", "2", "--time-scale", "0"], "greater than 0"),
        (&["--workers", "2", "--time-scale", "-1"], "greater than 0"),
        (&["--workers", "2", "--time-scale", "NaN"], "greater than 0"),
        (&["--workers", "2", "--repeat", "0"], "--repeat"),
        (&["--workers", "2", "--jobs", "0"], "--jobs"),
        (&["--workers", "2", "--format", "yaml"], "possible values"),
    ];
    for (args, hint) in cases {
        let all: Vec<&str> = base.iter().chain(args).copied().collect();
        let output = fanout(&all);
        assert!(!output.status.success(), "{all:?} should fail");
        assert!(stderr(&output).contains(hint), "{all:?}: {}", stderr(&output));
    }

    let output = fanout(&["bench", "--scenario", "api-calls", "--executor", "fork", "--workers", "2"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("serial, process, thread, async"), "{}", stderr(&output));

    let output = fanout(&[
        "bench",
        "--scenario",
        "ticket-migration",
        "--executor",
        "serial",
        "--workers",
        "1",
        "--jobs",
        "81",
    ]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("80 tickets"), "{}", stderr(&output));

    let output =
        fanout(&["bench", "--scenario", "blocking-on-loop", "--executor", "thread", "--workers", "2"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("--executor async"), "{}", stderr(&output));
}

/// Kills the child on drop, so a failing assertion leaves no server behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn mock_api_prints_its_address_and_serves() {
    let child = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["mock-api", "--time-scale", "0"])
        .env("FANOUT_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("could not start fanout mock-api: {error}"));
    let mut server = Killed(child);
    let mut line = String::new();
    if let Some(stdout) = server.0.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    let url =
        line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let health: Value = ureq::get(format!("{url}/health"))
        .call()
        .and_then(|mut response| response.body_mut().read_to_string())
        .map(|body| serde_json::from_str(&body).unwrap_or_default())
        .unwrap_or_else(|error| panic!("GET /health: {error}"));
    assert_eq!(health["status"], "ok");
    assert_eq!(health["time_scale"], 0.0);
    assert!(health["latency_us"]["items"].is_u64(), "{health}");

    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let status = |token: &str| {
        let response =
            agent.get(format!("{url}/api/items/1")).header("Authorization", format!("Bearer {token}")).call();
        response.map(|response| response.status().as_u16()).unwrap_or_default()
    };
    assert_eq!(status(TOKEN), 200);
    assert_eq!(status("wrong-token"), 401);
}
