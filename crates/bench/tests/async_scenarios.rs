//! The native-async versions of the HTTP scenarios, end to end: in-process against the
//! embedded mock API (`MockServer` on 127.0.0.1), and through `fanout bench --executor async`
//! for the JSON rows. Nothing here asserts a speed.

use std::process::{Command, Output};

use fanout_bench::scenario::{self, Queue, RunSpec, Scenario};
use fanout_bench::{ExecutorKind, Secret};
use fanout_mock_api::config::DEFAULT_SEED;
use fanout_mock_api::{Config, MockServer};
use serde_json::Value;

const TOKEN: &str = "async-test-token-never-printed";

fn server() -> MockServer {
    MockServer::start(Config::default().with_time_scale(0.001).with_token(TOKEN))
        .unwrap_or_else(|error| panic!("the mock API starts: {error}"))
}

fn spec(scenario: Scenario, url: &str, jobs: usize) -> RunSpec {
    RunSpec {
        scenario,
        executor: ExecutorKind::Async,
        workers: 8,
        jobs,
        queue: Queue::Support,
        inner_workers: 3,
        seed: DEFAULT_SEED,
        url: url.to_owned(),
        resilience: Default::default(),
        rerun_rounds: scenario::DEFAULT_RERUN_ROUNDS,
        progress_bar: None,
        throttle: None,
        throttle_burst: None,
        hosts: None,
    }
}

#[test]
fn async_api_calls_fetch_and_verify_every_item() {
    let server = server();
    let outcome = scenario::execute(&spec(Scenario::ApiCalls, server.url(), 40), Secret::new(TOKEN))
        .unwrap_or_else(|error| panic!("the run goes through: {error}"));
    assert_eq!((outcome.ok, outcome.errors, outcome.lost, outcome.duplicated), (40, 0, 0, 0), "{outcome:?}");
    assert!(outcome.verified, "{outcome:?}");
}

#[test]
fn async_ticket_migration_migrates_every_ticket_and_attachment_once() {
    let server = server();
    let outcome = scenario::execute(&spec(Scenario::TicketMigration, server.url(), 12), Secret::new(TOKEN))
        .unwrap_or_else(|error| panic!("the run goes through: {error}"));
    assert_eq!((outcome.ok, outcome.errors, outcome.lost, outcome.duplicated), (12, 0, 0, 0), "{outcome:?}");
    assert!(outcome.verified, "{outcome:?}");
}

#[test]
fn a_wrong_token_is_an_error_per_item_without_the_token() {
    let server = server();
    let outcome = scenario::execute(&spec(Scenario::ApiCalls, server.url(), 3), Secret::new("wrong-token"));
    // `/health` needs no token, so the run goes through and every item fails with a 401.
    let outcome = outcome.unwrap_or_else(|error| panic!("the run goes through: {error}"));
    assert_eq!((outcome.ok, outcome.errors), (0, 3), "{outcome:?}");
    let first = outcome.first_error.unwrap_or_default();
    assert!(first.contains("HTTP 401") && !first.contains("wrong-token"), "{first}");
}

fn fanout(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_fanout")).args(args).env("FANOUT_TOKEN", TOKEN).output();
    output.unwrap_or_else(|error| panic!("could not run fanout: {error}"))
}

/// `fanout bench` at time scale 0.001 with `args`; its one JSON row.
fn bench(args: &[&str]) -> Value {
    let mut all = vec!["bench", "--time-scale", "0.001", "--executor", "async"];
    all.extend_from_slice(args);
    let output = fanout(&all);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "fanout {all:?} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "the token leaked");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("not one JSON row ({error}): {stdout}"))
}

fn assert_verified(row: &Value, jobs: u64) {
    assert_eq!(row["executor"], "async", "{row}");
    assert_eq!(row["jobs"], jobs, "{row}");
    assert_eq!(row["ok"], jobs, "{row}");
    for key in ["errors", "lost", "duplicated"] {
        assert_eq!(row[key], 0, "{key}: {row}");
    }
    assert_eq!(row["verified"], true, "{row}");
}

#[test]
fn bench_rows_for_every_scenario_on_async() {
    let row = bench(&["--scenario", "api-calls", "--workers", "16", "--jobs", "20"]);
    assert_verified(&row, 20);
    assert_eq!((row["workers"].as_u64(), row["nested"].as_bool()), (Some(16), Some(false)), "{row}");

    let row =
        bench(&["--scenario", "ticket-migration", "--workers", "3", "--jobs", "4", "--inner-workers", "2"]);
    assert_verified(&row, 4);
    assert_eq!((row["nested"].as_bool(), row["inner_workers"].as_u64()), (Some(true), Some(2)), "{row}");

    // CPU jobs go through the trait, to the blocking pool.
    let row = bench(&["--scenario", "cpu", "--workers", "2", "--jobs", "2"]);
    assert_verified(&row, 2);

    let row = bench(&["--scenario", "blocking-on-loop", "--workers", "4", "--jobs", "3"]);
    assert_verified(&row, 3);
    assert_eq!(row["scenario"], "blocking-on-loop", "{row}");
}
