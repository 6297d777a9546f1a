//! Rate limits on the async executor: one limit that futures and blocking jobs share, taken per
//! job by the executor or per request by the futures, and a `429` pause that holds them all.
//!
//! Checks count events per time window, generously: a loaded machine runs things late, never
//! early, so a crowded window is a real failure.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fanout_async::AsyncExecutor;
use fanout_core::limit::{self, RateLimit};
use fanout_core::{BuildError, Executor};

/// The most events within any window of `window`.
fn densest(times: &mut [Instant], window: Duration) -> usize {
    times.sort();
    let (mut best, mut first) = (0, 0);
    for last in 0..times.len() {
        while times[last] - times[first] >= window {
            first += 1;
        }
        best = best.max(last - first + 1);
    }
    best
}

#[test]
fn a_limit_that_is_not_positive_is_a_build_error() {
    let error = AsyncExecutor::builder()
        .workers(4)
        .rate_limit(RateLimit::per_second(-1.0))
        .build()
        .expect_err("refused");
    assert!(matches!(error, BuildError::InvalidRateLimit { .. }), "{error}");
    let error = AsyncExecutor::builder().workers(4).max_in_flight(0).build().expect_err("refused");
    assert!(matches!(error, BuildError::ZeroInFlight), "{error}");
}

#[test]
fn futures_take_a_permit_per_job_from_one_limit() {
    let executor =
        AsyncExecutor::builder().workers(50).rate_limit(RateLimit::per_second(100.0)).build().unwrap();
    let started = Instant::now();
    let results = executor.map_async(|_: u64| async { Instant::now() }, 0..41);
    assert!(started.elapsed() >= Duration::from_millis(390), "{:?}", started.elapsed());
    let mut starts: Vec<Instant> = results.into_iter().map(Result::unwrap).collect();
    assert!(densest(&mut starts, Duration::from_millis(100)) <= 12, "{starts:?}");
}

#[test]
fn futures_take_a_permit_per_request_without_blocking_the_loop() {
    let limit = RateLimit::per_second(200.0).per_request();
    let executor = AsyncExecutor::builder().workers(50).rate_limit(limit).build().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let results = executor.map_async(
        |_: u64| {
            let requests = Arc::clone(&requests);
            async move {
                for _ in 0..3 {
                    fanout_async::acquire().await;
                    requests.lock().unwrap().push(Instant::now());
                }
            }
        },
        0..20,
    );
    assert_eq!(results.len(), 20);
    // 60 permits at 200/s: 295 ms at least.
    assert!(started.elapsed() >= Duration::from_millis(290), "{:?}", started.elapsed());
    let mut requests = std::mem::take(&mut *requests.lock().unwrap());
    assert_eq!(requests.len(), 60);
    assert!(densest(&mut requests, Duration::from_millis(100)) <= 22, "{requests:?}");
}

#[test]
fn blocking_jobs_of_the_trait_share_the_limit() {
    static STARTS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    fn job(x: u64) -> u64 {
        STARTS.lock().unwrap().push(Instant::now());
        x
    }
    let executor =
        AsyncExecutor::builder().workers(8).rate_limit(RateLimit::per_second(100.0)).build().unwrap();
    let started = Instant::now();
    assert_eq!(executor.map(job, 0..31).len(), 31);
    assert!(started.elapsed() >= Duration::from_millis(290), "{:?}", started.elapsed());
    let mut starts = std::mem::take(&mut *STARTS.lock().unwrap());
    assert!(densest(&mut starts, Duration::from_millis(100)) <= 12, "{starts:?}");
}

#[test]
fn a_pause_in_one_future_holds_every_future() {
    const PAUSE: Duration = Duration::from_millis(300);
    let executor =
        AsyncExecutor::builder().workers(8).rate_limit(RateLimit::per_second(1000.0)).build().unwrap();
    let results = executor.map_async(
        |x: u64| async move {
            if x == 0 {
                limit::pause(PAUSE); // a `429` with its `Retry-After`
            }
            (x, Instant::now())
        },
        0..30,
    );
    let times: Vec<(u64, Instant)> = results.into_iter().map(Result::unwrap).collect();
    let paused_at = times.iter().find(|(x, _)| *x == 0).unwrap().1;
    let during = times
        .iter()
        .filter(|(x, at)| *x != 0 && *at > paused_at && *at < paused_at + PAUSE - Duration::from_millis(20))
        .count();
    // Futures that had their permit before the pause may still run (one per slot at most).
    assert!(during <= 8, "{during} futures started during the pause");
    let after = times.iter().filter(|(_, at)| *at >= paused_at + PAUSE - Duration::from_millis(20)).count();
    assert!(after >= 15, "{after} futures after the pause");
}

#[test]
fn max_in_flight_caps_the_futures_at_once() {
    let executor = AsyncExecutor::builder().workers(50).max_in_flight(3).build().unwrap();
    assert_eq!(executor.workers(), 3);
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let results = executor.map_async(
        |_: u64| {
            let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
            async move {
                let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                peak.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        },
        0..30,
    );
    assert_eq!(results.len(), 30);
    assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 3);
}
