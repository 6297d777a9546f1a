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

/// Sleeps an hour on 3, after writing its worker's pid to `path`.
fn sleeps_on_3((path, x): (String, u64)) -> u64 {
    if x == 3 {
        let _ = std::fs::write(path, std::process::id().to_string());
        std::thread::sleep(Duration::from_secs(3600));
    }
    x * 10
}

fn pid_file(name: &str) -> String {
    let path = std::env::temp_dir().join(format!("fanout-redis-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path.to_string_lossy().into_owned()
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
    let path = pid_file("limit");
    let pool = RedisPool::builder(&redis.url()).local_workers(2).job_timeout(LIMIT).build().unwrap();
    let before = pool.local_worker_pids();
    let results = pool.map(sleeps_on_3, (0..8).map(|x| (path.clone(), x)));
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
    assert_eq!(
        pool.map(sleeps_on_3, (4..12).map(|x| (path.clone(), x))).iter().filter(|r| r.is_err()).count(),
        0
    );
    drop(pool);
    let _ = std::fs::remove_file(&path);
    assert_eq!(zombies_of(std::process::id()), 0);
}

#[test]
fn a_zero_time_limit_is_refused() {
    let Some(redis) = TestRedis::start(None) else { return };
    assert!(RedisPool::builder(&redis.url()).job_timeout(Duration::ZERO).build().is_err());
}

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn kill_reaches_a_worker_of_a_separate_supervisor() {
    let Some(redis) = TestRedis::start(None) else { return };
    let path = pid_file("kill");
    // "Another host": this executable started as a worker supervisor of two processes.
    let mut supervisor = std::process::Command::new(std::env::current_exe().unwrap())
        .args([fanout_redis::MARKER, "env:FANOUT_TEST_WORKER_URL", "--queue", "killq", "--workers", "2"])
        .env("FANOUT_TEST_WORKER_URL", redis.url())
        .spawn()
        .unwrap();
    let pool = RedisPool::builder(&redis.url()).queue("killq").workers(2).build().unwrap();
    let stuck = pool.submit(sleeps_on_3, (path.clone(), 3));
    let fine = pool.submit(sleeps_on_3, (path.clone(), 4));
    wait_until("the long job to start", GUARD, || {
        std::fs::read_to_string(&path).is_ok_and(|pid| !pid.trim().is_empty())
    });
    let pid: i32 = std::fs::read_to_string(&path).unwrap().trim().parse().unwrap();
    assert_eq!(fine.wait(), Ok(40));
    pool.shutdown(fanout_core::Shutdown::Kill);
    assert_eq!(stuck.wait(), Err(JobError::Killed));
    // SAFETY: signal 0 only checks that the process exists.
    wait_until(
        "the remote worker running the killed job to die",
        GUARD,
        || unsafe { libc::kill(pid, 0) } != 0,
    );
    // The supervisor replaced it and serves a new pool.
    assert!(matches!(supervisor.try_wait(), Ok(None)), "the supervisor died");
    let pool = RedisPool::builder(&redis.url()).queue("killq").workers(2).build().unwrap();
    assert_eq!(pool.map(square, 0..10), (0..10).map(|x| Ok(x * x)).collect::<Vec<_>>());
    drop(pool);
    let _ = supervisor.kill();
    let _ = supervisor.wait();
    let _ = std::fs::remove_file(&path);
}
