//! Issue 13's harness: a client throttled at the server's rate (`--throttle R --rate-limit R`)
//! gets no `429` at all, on every executor with a limit; unthrottled, the same run meets the
//! server's limit. Runs `fanout bench` itself, as a user would: small, bounded runs on loopback,
//! and no timing assertion (the report measures the times).

use std::process::Command;

use serde_json::Value;

/// The time scale of the runs: a call waits 10.465 ms.
const TIME_SCALE: &str = "0.01";

/// `fanout bench` with `args`, its JSON line.
fn bench(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["bench", "--time-scale", TIME_SCALE])
        .args(args)
        .output()
        .expect("fanout runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("{args:?}: {error}: {stdout}"))
}

/// 60 calls on 16 workers against a server that admits 500 a second (5 at time scale 1). Its
/// bucket holds 20 (40 ms at that rate), so that a loaded machine's scheduling stalls between
/// a permit and its request's arrival do not bunch the requests past it; the client's own
/// burst is 2.
fn api_calls(executor: &str, throttled: bool) -> Value {
    let mut args = vec!["--scenario", "api-calls", "--executor", executor, "--workers", "16", "--jobs", "60"];
    args.extend(["--rate-limit", "5", "--rate-burst", "20"]);
    if throttled {
        args.extend(["--throttle", "5"]);
    }
    bench(&args)
}

fn assert_no_429(executor: &str, row: &Value, required: u64) {
    assert_eq!(row["responses_429"], 0, "{executor}: {row}");
    assert_eq!(row["server_responses_429"], 0, "{executor}: {row}");
    assert_eq!(row["errors"], 0, "{executor}: {row}");
    assert_eq!(row["lost"], 0, "{executor}: {row}");
    assert_eq!(row["duplicated"], 0, "{executor}: {row}");
    assert_eq!(row["http_retries"], 0, "{executor}: {row}");
    // Every request went out once: no retry.
    assert_eq!(row["required_requests"], required, "{executor}: {row}");
    assert_eq!(row["requests"], required, "{executor}: {row}");
    // The client's limit, scaled like the server's: 5 at time scale 0.01 is 500 a second.
    assert!(
        row["throttle_per_second"].as_f64().is_some_and(|r| (r - row["server_rate_limit_per_second"]
            .as_f64()
            .unwrap_or(0.0))
        .abs()
            < 1e-6),
        "{executor}: {row}"
    );
    assert!(row["rate_ideal_seconds"].as_f64().is_some_and(|ideal| ideal > 0.0), "{executor}: {row}");
}

#[test]
fn a_throttled_run_meets_no_429_on_threads() {
    assert_no_429("thread", &api_calls("thread", true), 60);
}

#[test]
fn a_throttled_run_meets_no_429_on_processes() {
    assert_no_429("process", &api_calls("process", true), 60);
}

#[test]
fn a_throttled_run_meets_no_429_on_async() {
    assert_no_429("async", &api_calls("async", true), 60);
}

/// The migration takes a permit per request, from inside its jobs and from its nested pools'
/// workers (worker processes of worker processes, for the process pool): 10 tickets, 171
/// requests, against a server at 1,000 a second.
#[test]
fn a_throttled_migration_meets_no_429_on_processes_and_threads() {
    for executor in ["process", "thread"] {
        let row = bench(&[
            "--scenario",
            "ticket-migration",
            "--executor",
            executor,
            "--workers",
            "5",
            "--inner-workers",
            "4",
            "--jobs",
            "10",
            "--rate-limit",
            "10",
            "--rate-burst",
            "40",
            "--throttle",
            "10",
        ]);
        let required = row["required_requests"].as_u64().unwrap_or(0);
        assert!(required > 10 * 3, "{executor}: {row}");
        assert_no_429(executor, &row, required);
        assert_eq!(row["verified"], true, "{executor}: {row}");
    }
}

/// Unthrottled, 16 workers asking ~1,500 calls a second meet the server's limit, and the
/// clients' count of `429`s is the server's.
#[test]
fn an_unthrottled_run_meets_the_servers_limit() {
    let row = bench(&[
        "--scenario",
        "api-calls",
        "--executor",
        "thread",
        "--workers",
        "16",
        "--jobs",
        "60",
        "--rate-limit",
        "5",
        "--rate-burst",
        "5",
    ]);
    let seen = row["responses_429"].as_u64().unwrap_or(0);
    assert!(seen > 0, "{row}");
    assert_eq!(row["server_responses_429"], seen, "{row}");
    assert!(row["http_retries"].as_u64().is_some_and(|retries| retries > 0), "{row}");
    assert_eq!(row["throttle_per_second"], Value::Null, "{row}");
}

#[test]
fn serial_takes_a_throttle() {
    // Serial asks about 95 calls a second at this scale; a server and a client limit of 50 a
    // second (0.5 at time scale 1) bind it, and its permits keep it clear of every `429`. The
    // server's bucket holds one request more than the client's burst of 2: with equal bursts the
    // fourth request may find exactly one token left, and it is refused when the first request
    // took longer from its permit to the server than the fourth did (seen once in CI).
    let row = bench(&[
        "--scenario",
        "api-calls",
        "--executor",
        "serial",
        "--workers",
        "1",
        "--jobs",
        "20",
        "--rate-limit",
        "0.5",
        "--rate-burst",
        "3",
        "--throttle",
        "0.5",
    ]);
    assert_no_429("serial", &row, 20);
    assert!(row["request_rate"].as_f64().is_some_and(|rate| rate <= 55.0), "{row}");
}
