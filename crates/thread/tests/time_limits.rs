//! Job time limits and `Shutdown::Kill` on a thread pool: a stuck job is given up on (its
//! thread abandoned and replaced) without hanging the program.
//!
//! A stuck job here spins until its test releases it, so that no abandoned thread outlives its
//! test binary's last test by much. Timings are guards against a hang, generous for a loaded
//! 2-core machine, never benchmarks.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fanout_core::{Executor, JobError, Shutdown, deadline};
use fanout_thread::ThreadPool;

const LIMIT: Duration = Duration::from_millis(200);
/// How long a test waits for something that should take well under a second.
const GUARD: Duration = Duration::from_secs(20);

/// Spins until `release` is set (or a minute passed: a safety net for a failing test).
fn spin_until(release: &AtomicBool) {
    let start = Instant::now();
    while !release.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn pool_with_limit(workers: usize) -> ThreadPool {
    ThreadPool::builder().workers(workers).job_timeout(LIMIT).build().expect("the pool builds")
}

#[test]
fn a_stuck_job_expires_and_the_next_job_runs_on_a_fresh_thread() {
    static RELEASE: AtomicBool = AtomicBool::new(false);
    fn stuck_or_double(x: u64) -> u64 {
        if x == 0 {
            spin_until(&RELEASE);
        }
        x * 2
    }
    let pool = pool_with_limit(1);
    let started = Instant::now();
    let stuck = pool.submit(stuck_or_double, 0);
    assert_eq!(stuck.wait(), Err(JobError::Expired { limit: LIMIT }));
    assert!(started.elapsed() >= LIMIT, "expired after {:?}, before its limit", started.elapsed());
    // The pool's only worker is still stuck, yet the next job runs: a fresh thread took its place.
    assert_eq!(pool.submit(stuck_or_double, 21).wait(), Ok(42));
    assert_eq!(pool.abandoned_threads(), 1);
    assert_eq!(pool.threads_started(), 1, "the abandoned thread no longer counts");
    let progress = pool.progress();
    assert_eq!((progress.submitted, progress.succeeded, progress.failed, progress.expired), (2, 1, 1, 1));
    RELEASE.store(true, Ordering::SeqCst);
}

#[test]
fn a_stuck_input_in_a_chunk_of_8_fails_alone() {
    static RELEASE: AtomicBool = AtomicBool::new(false);
    fn stuck_at_3(x: u64) -> u64 {
        if x == 3 || x == 11 {
            spin_until(&RELEASE);
        }
        x + 100
    }
    let pool = ThreadPool::builder().workers(2).chunk_size(8).job_timeout(LIMIT).build().unwrap();
    let results = pool.map(stuck_at_3, 0..16);
    for (input, result) in results.iter().enumerate() {
        if input == 3 || input == 11 {
            assert_eq!(*result, Err(JobError::Expired { limit: LIMIT }), "input {input}");
        } else {
            assert_eq!(*result, Ok(input as u64 + 100), "input {input}");
        }
    }
    let mut unordered: Vec<_> = pool.map_unordered(stuck_at_3, 0..8).collect();
    unordered.sort_by_key(|(index, _)| *index);
    assert_eq!(unordered.len(), 8);
    assert_eq!(unordered[3].1, Err(JobError::Expired { limit: LIMIT }));
    assert!(
        unordered.iter().filter(|(index, _)| *index != 3).all(|(index, r)| *r == Ok(*index as u64 + 100))
    );
    assert_eq!(pool.abandoned_threads(), 3);
    RELEASE.store(true, Ordering::SeqCst);
}

#[test]
fn kill_returns_at_once_with_stuck_jobs_and_answers_every_handle() {
    static RELEASE: AtomicBool = AtomicBool::new(false);
    fn stuck(x: u64) -> u64 {
        spin_until(&RELEASE);
        x
    }
    // No time limit: `Kill` must not need one.
    let pool = ThreadPool::new(2).unwrap();
    let watch = pool.progress_watch();
    let handles: Vec<_> = (0..6).map(|x| pool.submit(stuck, x)).collect();
    // Both workers are busy with a stuck job before the kill.
    let wait_start = Instant::now();
    while pool.progress().started < 2 && wait_start.elapsed() < GUARD {
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed_at = Instant::now();
    pool.shutdown(Shutdown::Kill);
    let took = killed_at.elapsed();
    eprintln!("Shutdown::Kill with 2 stuck jobs and 4 queued returned in {took:?}");
    assert!(took < Duration::from_secs(5), "Kill took {took:?} (the target is under 1 s)");
    let results: Vec<_> = handles.into_iter().map(|handle| handle.wait()).collect();
    assert_eq!(results.iter().filter(|r| **r == Err(JobError::Killed)).count(), 2, "{results:?}");
    assert_eq!(results.iter().filter(|r| **r == Err(JobError::Cancelled)).count(), 4, "{results:?}");
    let progress = watch.snapshot();
    assert_eq!(progress.abandoned_threads, 2);
    assert_eq!((progress.killed, progress.cancelled, progress.pending()), (2, 4, 0));
    RELEASE.store(true, Ordering::SeqCst);
}

#[test]
fn an_abandoned_job_sees_expired_and_its_thread_leaves() {
    static LEFT: AtomicUsize = AtomicUsize::new(0);
    /// Cooperative: polls the deadline (and the pool's stop flag) instead of a release flag.
    fn until_told(_: u64) -> u64 {
        let start = Instant::now();
        while !deadline::expired() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        LEFT.fetch_add(1, Ordering::SeqCst);
        0
    }
    let pool = ThreadPool::new(1).unwrap();
    let handle = pool.submit(until_told, 0);
    let wait_start = Instant::now();
    while pool.progress().started < 1 && wait_start.elapsed() < GUARD {
        std::thread::sleep(Duration::from_millis(5));
    }
    pool.shutdown(Shutdown::Kill);
    assert_eq!(handle.wait(), Err(JobError::Killed));
    // The job saw `expired()` turn true when its thread was given up on, and returned.
    let wait_start = Instant::now();
    while LEFT.load(Ordering::SeqCst) == 0 && wait_start.elapsed() < GUARD {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(LEFT.load(Ordering::SeqCst), 1);
}

#[test]
fn a_job_sees_its_deadline() {
    fn time_left_ms(_: u64) -> Option<u128> {
        deadline::time_left().map(|left| left.as_millis())
    }
    let pool = pool_with_limit(2);
    let left = pool.submit(time_left_ms, 0).wait().unwrap().expect("a deadline is set");
    assert!(left <= LIMIT.as_millis(), "{left} ms left of {LIMIT:?}");
    assert_eq!(ThreadPool::new(1).unwrap().submit(time_left_ms, 0).wait(), Ok(None));
}

#[test]
fn dropping_a_pool_with_a_limit_is_bounded_by_it() {
    static RELEASE: AtomicBool = AtomicBool::new(false);
    fn stuck(x: u64) -> u64 {
        spin_until(&RELEASE);
        x
    }
    let pool = pool_with_limit(2);
    let handles: Vec<_> = (0..3).map(|x| pool.submit(stuck, x)).collect();
    let dropped_at = Instant::now();
    drop(pool); // `Finish`: every job runs, each stopped at its limit
    let took = dropped_at.elapsed();
    assert!(took < GUARD, "drop took {took:?}");
    for handle in handles {
        assert_eq!(handle.wait(), Err(JobError::Expired { limit: LIMIT }));
    }
    RELEASE.store(true, Ordering::SeqCst);
}

#[test]
fn progress_adds_up_for_a_map_with_panics_and_expiries() {
    static RELEASE: AtomicBool = AtomicBool::new(false);
    fn job(x: u64) -> u64 {
        match x % 50 {
            7 => panic!("input {x} panics"),
            13 if x < 100 => {
                spin_until(&RELEASE);
                x
            }
            _ => x,
        }
    }
    // A longer limit: a panic that prints a backtrace (`RUST_BACKTRACE=1`) can take a debug
    // build longer than `LIMIT`, and would then rightly be reported expired.
    const LONG: Duration = Duration::from_secs(2);
    let build =
        |chunk_size| ThreadPool::builder().workers(4).chunk_size(chunk_size).job_timeout(LONG).build();
    for pool in [build(1).unwrap(), build(5).unwrap()] {
        let results = pool.map(job, 0..300);
        let expired = results.iter().filter(|r| matches!(r, Err(JobError::Expired { .. }))).count() as u64;
        let panicked = results.iter().filter(|r| matches!(r, Err(JobError::Panicked { .. }))).count() as u64;
        assert_eq!((expired, panicked), (2, 6));
        let progress = pool.progress();
        assert_eq!(progress.submitted, 300);
        assert_eq!(progress.started, 300);
        assert_eq!(progress.succeeded, 292);
        assert_eq!(progress.failed, 8);
        assert_eq!(progress.expired, 2);
        assert_eq!(progress.pending(), 0);
        assert_eq!(progress.abandoned_threads, 2);
    }
    // Without a limit (the in-place `map`, the streaming engine and `submit` all count).
    let pool = ThreadPool::new(3).unwrap();
    fn panics_at_7(x: u64) -> u64 {
        assert!(x % 50 != 7, "input {x} panics");
        x
    }
    assert_eq!(pool.map(panics_at_7, 0..200).iter().filter(|r| r.is_err()).count(), 4);
    assert_eq!(pool.imap(panics_at_7, 0..100).filter(Result::is_err).count(), 2);
    assert_eq!(pool.submit(panics_at_7, 1).wait(), Ok(1));
    let progress = pool.progress();
    assert_eq!(
        (progress.submitted, progress.started, progress.succeeded, progress.failed),
        (301, 301, 295, 6)
    );
    RELEASE.store(true, Ordering::SeqCst);
}

#[test]
fn a_job_that_gives_up_at_its_deadline_is_expired() {
    fn polite(x: u64) -> u64 {
        while !deadline::expired() {
            std::thread::sleep(Duration::from_millis(2));
        }
        x
    }
    // Whether the job's return or the watchdog's claim comes first, the result is `Expired`.
    let pool = ThreadPool::builder().workers(1).job_timeout(Duration::from_millis(300)).build().unwrap();
    assert_eq!(pool.submit(polite, 1).wait(), Err(JobError::Expired { limit: Duration::from_millis(300) }));
    assert_eq!(pool.submit(|x: u64| x + 1, 1).wait(), Ok(2));
}
