//! How many Redis commands one job costs at chunk 1, counted by the server
//! (`INFO commandstats` deltas over a run): the round trips on a job's critical path are what
//! bounds its latency, so their count is checked here, as a count (never a time).

mod support;

use std::collections::BTreeMap;

use fanout_core::Executor;
use fanout_redis::RedisPool;
use support::TestRedis;

fn empty(x: u64) -> u64 {
    x
}

/// `cmdstat_NAME:calls=N,usec=U,...` of `INFO commandstats`, by name: (calls, usec).
fn calls(con: &mut redis::Connection) -> BTreeMap<String, (u64, u64)> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| rest.split(',').find_map(|kv| kv.strip_prefix(key))?.parse().ok();
            Some((name.to_owned(), (field("calls=")?, field("usec=")?)))
        })
        .collect()
}

/// `total_reads_processed` of `INFO stats`: the requests the server read from its clients.
fn reads(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(con).unwrap();
    info.lines().find_map(|line| line.strip_prefix("total_reads_processed:")?.trim().parse().ok()).unwrap()
}

#[test]
fn commands_per_job_at_chunk_1() {
    let Some(redis) = TestRedis::start(None) else { return };
    let pool = RedisPool::builder(&redis.url()).local_workers(2).prefetch(2).build().unwrap();
    // Warm up: workers connected, scripts loaded, the run known to them.
    assert_eq!(pool.map(empty, 0..50).len(), 50);
    let mut con = redis.connection();
    let jobs = 2000_u64;
    let (before, reads_before) = (calls(&mut con), reads(&mut con));
    let results = pool.map(empty, 0..jobs);
    let (after, reads_after) = (calls(&mut con), reads(&mut con));
    assert!(results.iter().all(Result::is_ok));
    let mut report = String::new();
    let mut total = 0.0;
    for (name, &(n, usec)) in &after {
        let (n0, usec0) = before.get(name).copied().unwrap_or((0, 0));
        if n > n0 && name != "info" {
            let per_job = (n - n0) as f64 / jobs as f64;
            let usec = (usec - usec0) as f64 / jobs as f64;
            report.push_str(&format!("  {name:<16} {per_job:.3} per job, {usec:.2} us of server time\n"));
            total += per_job;
        }
    }
    // Each request the server reads (one command, or one pipeline sent at once) is a round
    // trip of some client; the two `INFO` calls add two.
    let round_trips = (reads_after - reads_before).saturating_sub(2) as f64 / jobs as f64;
    eprintln!(
        "commands per job at chunk 1 over {jobs} jobs (those a script runs included):\n{report}  \
         total {total:.3}\nround trips per job (requests the server read): {round_trips:.3}"
    );
    // A count, not a time: per job at most the caller's round (its adds and its read) and the
    // worker's completion with its next read, which blocks when the queue ran dry (about 1.6
    // measured, 1.75 at most in a few runs; 2.1 when a dry queue cost the worker a second
    // read, 4.7 before the reads and adds shared round trips). The bound leaves room for a
    // few rounds that time out on a loaded machine.
    assert!(round_trips < 2.5, "{round_trips:.3} round trips per job");
}
