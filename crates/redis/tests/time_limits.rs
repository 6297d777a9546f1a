//! Stuck jobs on a RedisPool: the job time limit (`job_timeout`) kills and replaces the worker
//! process running an overdue job, and its input answers `Expired`, stored once.
//!
//! No timed assertions: the guards only turn a hang into a failure.

mod support;

use std::time::Duration;

use fanout_core::{Executor, JobError};
use fanout_redis::RedisPool;
use support::{TestRedis, wait_until};

/// The job time limit of these tests (RUST_BACKTRACE=1 makes worker starts slow: >= 2 s).
const LIMIT: Duration = Duration::from_secs(2);

/// Against hangs only.
const GUARD: Duration = Duration::from_secs(60);

/// Sleeps an hour on 3 (after writing its pid to the file named in the environment).
fn sleeps_on_3(x: u64) -> u64 {
    if x == 3 {
        if let Some(path) = std::env::var_os("FANOUT_TEST_PID_FILE") {
            let _ = std::fs::write(path, std::process::id().to_string());
        }
        std::thread::sleep(Duration::from_secs(3600));
    }
    x * 10
}

fn zombies_of(pid: u32) -> usize {
    let Ok(dirs) = std::fs::read_dir("/proc") else { return 0 };
    dirs.filter_map(Result::ok)
        .filter_map(|d| std::fs::read_to_string(d.path().join("stat")).ok())
        .filter(|stat| {
            let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = after.split_whitespace().collect();
            fields.first() == Some(&"Z") && fields.get(1) == Some(&pid.to_string().as_str())
        })
        .count()
}

#[test]
fn an_overdue_job_answers_expired_and_its_worker_is_replaced() {
    let Some(redis) = TestRedis::start(None) else { return };
    let path = std::env::temp_dir().join(format!("fanout-redis-tl-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    // SAFETY: set before any worker starts; this test binary's other test does not read it.
    unsafe { std::env::set_var("FANOUT_TEST_PID_FILE", &path) };
    let pool = RedisPool::builder(&redis.url()).local_workers(2).job_timeout(LIMIT).build().unwrap();
    let before = pool.local_worker_pids();
    let results = pool.map(sleeps_on_3, 0..8);
    for (x, result) in results.iter().enumerate() {
        let x = x as u64;
        if x == 3 {
            assert_eq!(result, &Err(JobError::Expired { limit: LIMIT }));
        } else {
            assert_eq!(result, &Ok(x * 10));
        }
    }
    // The overdue job's worker process is gone and replaced.
    let stuck: i32 = std::fs::read_to_string(&path).unwrap().trim().parse().unwrap();
    wait_until("the stuck worker to be replaced", GUARD, || {
        let pids = pool.local_worker_pids();
        !pids.contains(&(stuck as u32)) && pids.len() == before.len()
    });
    // SAFETY: signal 0 only checks that the process exists.
    wait_until("the stuck worker to be gone", GUARD, || unsafe { libc::kill(stuck, 0) } != 0);
    // Stored once, never redelivered; the pool keeps working.
    assert_eq!(pool.duplicates(), 0);
    assert_eq!(pool.dead_letters(), 0);
    assert_eq!(pool.map(sleeps_on_3, 4..12).iter().filter(|r| r.is_err()).count(), 0);
    drop(pool);
    let _ = std::fs::remove_file(&path);
    assert_eq!(zombies_of(std::process::id()), 0);
}

#[test]
fn a_zero_time_limit_is_refused() {
    let Some(redis) = TestRedis::start(None) else { return };
    assert!(RedisPool::builder(&redis.url()).job_timeout(Duration::ZERO).build().is_err());
}
