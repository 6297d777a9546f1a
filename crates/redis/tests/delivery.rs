//! The delivery semantics against a real redis-server: order, a worker killed mid-job, a
//! duplicate counted once, the dead-letter path, foreign entries, cancelling, the password.

mod support;

use std::time::Duration;

use fanout_core::{Executor, JobError, Shutdown};
use fanout_redis::RedisPool;
use support::{TestRedis, wait_until};

fn square(x: u64) -> u64 {
    x * x
}

/// Writes this worker's pid to `path`, sleeps `ms`, returns the pid.
fn record_and_sleep((path, ms): (String, u64)) -> u32 {
    let _ = std::fs::write(&path, std::process::id().to_string());
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn die(_: u64) -> u64 {
    std::process::abort()
}

fn slow(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(300));
    x
}

fn temp_file(name: &str) -> String {
    let path = std::env::temp_dir().join(format!("fanout-redis-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path.to_string_lossy().into_owned()
}

fn pid_in(path: &str) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Its input backwards.
fn reversed(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.reverse();
    bytes
}

#[test]
fn entries_and_results_of_megabytes_travel_whole() {
    // Replies far larger than a read (the entries to the workers, the results to the
    // caller), several of them at once, on the hand-parsed connections of the hot path.
    let Some(redis) = TestRedis::start(None) else { return };
    let pool = RedisPool::builder(&redis.url()).local_workers(2).prefetch(2).build().unwrap();
    let inputs: Vec<Vec<u8>> =
        (0..6_u32).map(|i| (0..(3_u32 << 20) + i).map(|j| (j % 251) as u8 ^ i as u8).collect()).collect();
    let results = pool.map(reversed, inputs.clone());
    assert_eq!(results, inputs.into_iter().map(|input| Ok(reversed(input))).collect::<Vec<_>>());
    // Small ones after them, on the same connections.
    assert_eq!(pool.map(square, 0..20), (0..20).map(|x| Ok(x * x)).collect::<Vec<_>>());
}

#[test]
fn map_imap_and_submit_answer_in_order() {
    let Some(redis) = TestRedis::start(None) else { return };
    let pool = RedisPool::builder(&redis.url()).local_workers(2).chunk_size(3).build().unwrap();
    assert_eq!(pool.map(square, 0..40), (0..40).map(|x| Ok(x * x)).collect::<Vec<_>>());
    assert_eq!(pool.imap(square, 0..5).collect::<Vec<_>>(), [Ok(0), Ok(1), Ok(4), Ok(9), Ok(16)]);
    assert_eq!(pool.submit(square, 12).wait(), Ok(144));
    assert_eq!(pool.duplicates(), 0);
}

#[test]
fn a_worker_killed_mid_job_has_its_entry_reclaimed() {
    let Some(redis) = TestRedis::start(None) else { return };
    let pool = RedisPool::builder(&redis.url())
        .local_workers(2)
        .visibility_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let path = temp_file("killed");
    let mut handle = pool.submit(record_and_sleep, (path.clone(), 1500));
    wait_until("the job to start", Duration::from_secs(20), || pid_in(&path).is_some());
    let victim = pid_in(&path).unwrap();
    // SAFETY: kill(2) on a child of this test.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let result = handle.wait_timeout(Duration::from_secs(30));
    let winner = result.expect("the reclaimed entry ran");
    assert_ne!(winner as i32, victim);
    assert_eq!(pool.duplicates(), 0);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_duplicate_delivery_is_counted_once_and_never_returned() {
    let Some(redis) = TestRedis::start(None) else { return };
    let pool = RedisPool::builder(&redis.url())
        .local_workers(2)
        .visibility_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let path = temp_file("stopped");
    let mut handle = pool.submit(record_and_sleep, (path.clone(), 1500));
    wait_until("the job to start", Duration::from_secs(20), || pid_in(&path).is_some());
    let frozen = pid_in(&path).unwrap();
    // A live worker that stops renewing (a pause, a partition): it is taken over.
    // SAFETY: kill(2) on a child of this test.
    unsafe { libc::kill(frozen, libc::SIGSTOP) };
    let result = handle.wait_timeout(Duration::from_secs(30));
    assert_ne!(result.expect("ran on the other worker") as i32, frozen);
    // SAFETY: as above.
    unsafe { libc::kill(frozen, libc::SIGCONT) };
    wait_until("the late duplicate", Duration::from_secs(20), || pool.duplicates() == 1);
    assert_eq!(pool.map(square, [3]), [Ok(9)]);
    assert_eq!(pool.duplicates(), 1);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn an_entry_delivered_too_often_is_dead_lettered_as_worker_lost() {
    let Some(redis) = TestRedis::start(None) else { return };
    let pool = RedisPool::builder(&redis.url())
        .local_workers(1)
        .visibility_timeout(Duration::from_millis(300))
        .max_deliveries(2)
        .build()
        .unwrap();
    let result = pool.submit(die, 1).wait_timeout(Duration::from_secs(60));
    assert!(matches!(result, Err(JobError::WorkerLost { .. })), "{result:?}");
    assert_eq!(pool.dead_letters(), 1);
    assert_eq!(pool.map(square, [4]), [Ok(16)]);
}

#[test]
fn foreign_and_malformed_entries_never_run() {
    let Some(redis) = TestRedis::start(None) else { return };
    let pool = RedisPool::builder(&redis.url()).local_workers(1).build().unwrap();
    let mut con = redis.connection();
    let foreign: [&[(&str, &str)]; 3] = [
        &[("v", "1"), ("e", "0"), ("s", ""), ("i", ""), ("c", "0"), ("m", "3")],
        &[
            ("v", "1"),
            ("k", "0123456789abcdef0123456789abcdef"),
            ("e", "0"),
            ("b", "x"),
            ("s", ""),
            ("i", ""),
            ("c", "0"),
            ("m", "3"),
        ],
        &[("garbage", "\u{1}\u{2}")],
    ];
    for fields in foreign {
        let mut cmd = redis::cmd("XADD");
        cmd.arg("fanout:fanout:jobs").arg("*");
        for (name, value) in fields {
            cmd.arg(*name).arg(*value);
        }
        cmd.query::<String>(&mut con).unwrap();
    }
    wait_until("three dead letters", Duration::from_secs(20), || pool.dead_letters() == 3);
    let reasons: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg("fanout:fanout:dead").arg("-").arg("+").query(&mut con).unwrap();
    for entry in &reasons.ids {
        let reason: String = entry.get("reason").unwrap();
        assert!(reason.starts_with("foreign") || reason.starts_with("malformed"), "{reason}");
    }
    assert_eq!(pool.map(square, 0..3), [Ok(0), Ok(1), Ok(4)]);
}

#[test]
fn cancel_queued_removes_unread_entries() {
    let Some(redis) = TestRedis::start(None) else { return };
    let pool = RedisPool::builder(&redis.url()).local_workers(1).build().unwrap();
    let handles: Vec<_> = (0..8).map(|x| pool.submit(slow, x)).collect();
    std::thread::sleep(Duration::from_millis(400));
    pool.shutdown(Shutdown::CancelQueued);
    let results: Vec<_> = handles.into_iter().map(|h| h.wait()).collect();
    let cancelled = results.iter().filter(|r| **r == Err(JobError::Cancelled)).count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(cancelled + ok, 8, "{results:?}");
    assert!(cancelled >= 4, "{results:?}");
}

#[test]
fn the_password_never_appears() {
    let secret = "pw-4c7f1b9e-never-printed";
    let Some(redis) = TestRedis::start(Some(secret)) else { return };
    // SAFETY: set before any thread of this test reads the environment; the variable's name is
    // this test's own.
    unsafe { std::env::set_var("FANOUT_TEST_REDIS_URL_PW", redis.url()) };
    let builder = RedisPool::builder_from_env("FANOUT_TEST_REDIS_URL_PW").local_workers(1);
    assert!(!format!("{builder:?}").contains(secret));
    let pool = builder.build().unwrap();
    assert!(!format!("{pool:?}").contains(secret));
    assert_eq!(pool.map(square, [5]), [Ok(25)]);
    for pid in pool.local_worker_pids() {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&cmdline).contains(secret));
    }
    let wrong = format!("redis://:{secret}-wrong@127.0.0.1:{}/0", redis.port);
    let error = RedisPool::builder(&wrong).build().unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(!text.contains(secret), "{text}");
    assert!(text.contains("***") || text.contains("127.0.0.1"), "{text}");
}

#[test]
fn a_pool_on_another_database_keeps_all_its_keys_there() {
    let Some(redis) = TestRedis::start(None) else { return };
    // The per-job connections select the URL's database themselves (`wire.rs`), the others
    // through redis-rs: both must land in the same one.
    let url = format!("redis://127.0.0.1:{}/3", redis.port);
    let pool = RedisPool::builder(&url).queue("db3").local_workers(2).build().unwrap();
    // Split across databases, the jobs would never be read: a guard instead of a hang.
    let handles: Vec<_> = (1..=20_u64).map(|x| pool.submit(square, x)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let results: Vec<_> = handles
        .into_iter()
        .map(|mut handle| handle.wait_timeout(deadline.saturating_duration_since(std::time::Instant::now())))
        .collect();
    // Not `Finish`, which would wait for entries nobody reads if the test fails.
    pool.shutdown(Shutdown::Kill);
    assert_eq!(results, (1..=20).map(|x| Ok(x * x)).collect::<Vec<_>>());
    let keys = |db: u8| -> Vec<String> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/{db}", redis.port)).unwrap();
        let mut con = client.get_connection().unwrap();
        redis::cmd("KEYS").arg("fanout:*").query(&mut con).unwrap()
    };
    assert!(keys(0).is_empty(), "keys in database 0: {:?}", keys(0));
    assert!(keys(3).iter().any(|key| key.starts_with("fanout:db3:")), "{:?}", keys(3));
}

/// Appends this worker's pid to `path`, sleeps `ms`, returns the pid.
fn append_and_sleep((path, ms): (String, u64)) -> u32 {
    use std::io::Write;
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let _ = writeln!(file, "{}", std::process::id());
    }
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

#[test]
fn a_live_worker_on_a_long_job_keeps_its_claim() {
    let Some(redis) = TestRedis::start(None) else { return };
    let pool = RedisPool::builder(&redis.url())
        .local_workers(2)
        .visibility_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let path = temp_file("long");
    // Five times the visibility timeout: without renewal the other worker would take it over.
    let result = pool.submit(append_and_sleep, (path.clone(), 1500)).wait();
    assert!(result.is_ok(), "{result:?}");
    let runs = std::fs::read_to_string(&path).unwrap_or_default().lines().count();
    assert_eq!(runs, 1, "the job ran {runs} times");
    assert_eq!(pool.duplicates(), 0);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn workers_started_apart_from_the_pool_serve_it() {
    let Some(redis) = TestRedis::start(None) else { return };
    // "Another host": this executable started as a worker supervisor of two processes, the
    // URL in its environment, found by the marker argument before the test harness's `main`.
    let mut workers = std::process::Command::new(std::env::current_exe().unwrap())
        .args([fanout_redis::MARKER, "env:FANOUT_TEST_WORKER_URL", "--queue", "apart", "--workers", "2"])
        .env("FANOUT_TEST_WORKER_URL", redis.url())
        .spawn()
        .unwrap();
    let pool = RedisPool::builder(&redis.url()).queue("apart").workers(2).build().unwrap();
    assert_eq!(pool.map(square, 0..20), (0..20).map(|x| Ok(x * x)).collect::<Vec<_>>());
    drop(pool);
    // The supervisor's workers die with it (PR_SET_PDEATHSIG).
    let _ = workers.kill();
    let _ = workers.wait();
}

#[test]
fn bad_worker_arguments_are_typed_errors() {
    let error = fanout_redis::WorkerOptions::from_args(&["redis://127.0.0.1:1/0".to_owned()]).unwrap_err();
    assert!(error.to_string().contains("--queue"), "{error}");
    let error =
        fanout_redis::WorkerOptions::from_args(&["env:FANOUT_TEST_UNSET_VARIABLE".to_owned()]).unwrap_err();
    assert!(error.to_string().contains("FANOUT_TEST_UNSET_VARIABLE"), "{error}");
}

/// A server that loses the completion script (`SCRIPT FLUSH`, as after a restart) while jobs
/// run: a worker's completion and its read of the next entry travel in one write, so the read
/// runs even when the script is missing; the worker loads the script, completes again, and
/// runs the entry it read. Nothing is lost or answered twice, and no entry waits for the
/// visibility timeout (an entry lost by its worker would be answered only after it: the guard,
/// half of it, only catches that, it times nothing).
#[test]
fn a_flushed_completion_script_loses_no_entry() {
    let Some(redis) = TestRedis::start(None) else { return };
    let visibility = Duration::from_secs(40);
    let pool = RedisPool::builder(&redis.url())
        .local_workers(2)
        .prefetch(2)
        .visibility_timeout(visibility)
        .build()
        .unwrap();
    let mut con = redis.connection();
    for round in 0..5_u64 {
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut con).unwrap();
        let inputs = round * 100..round * 100 + 100;
        let expected: Vec<_> = inputs.clone().map(|x| Ok(x * x)).collect();
        let started = std::time::Instant::now();
        let handle = std::thread::scope(|scope| {
            let run = scope.spawn(|| pool.map(square, inputs));
            // Flush again while the map runs.
            std::thread::sleep(Duration::from_millis(2));
            let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut con).unwrap();
            run.join().unwrap()
        });
        assert_eq!(handle, expected);
        assert!(started.elapsed() < visibility / 2, "an entry waited for the visibility timeout");
    }
    assert_eq!(pool.duplicates(), 0);
}

#[test]
fn a_supervisor_that_cannot_reach_redis_fails_once_and_clearly() {
    // Nothing listens on loopback port 1: refused at once. The supervisor must say so in one
    // line and exit, not start workers that each fail and are restarted in a loop.
    let mut supervisor = std::process::Command::new(std::env::current_exe().unwrap())
        .args([fanout_redis::MARKER, "env:FANOUT_TEST_WORKER_URL", "--queue", "nowhere", "--workers", "2"])
        .env("FANOUT_TEST_WORKER_URL", "redis://:hunter2@127.0.0.1:1/0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = supervisor.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = supervisor.kill();
            let _ = supervisor.wait();
            panic!("the supervisor kept running without a Redis for 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(supervisor.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("could not connect") && !stderr.contains("hunter2"), "{stderr}");
}
