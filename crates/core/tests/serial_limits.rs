//! `Serial`'s rate limit: its jobs wait for their permits on the caller's thread, per job or
//! per request, and a limit that is not positive is a build error.
//!
//! Permits are counted per time window, generously: a loaded machine runs jobs late, never
//! early, so a window holding more jobs than the rate allows is a real failure.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use fanout_core::limit::{self, RateLimit};
use fanout_core::{BuildError, Executor, Serial};

/// The most events within any window of `window` among `times` (sorted already: one thread).
fn densest(times: &[Instant], window: Duration) -> usize {
    let mut best = 0;
    let mut first = 0;
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
    for rate in [0.0, -1.0, f64::INFINITY] {
        let error = Serial::builder().rate_limit(RateLimit::per_second(rate)).build().expect_err("refused");
        assert!(matches!(error, BuildError::InvalidRateLimit { .. }), "{error}");
    }
    let error = Serial::builder().max_in_flight(0).build().expect_err("refused");
    assert!(matches!(error, BuildError::ZeroInFlight), "{error}");
    // One in flight is what Serial does anyway.
    assert!(Serial::builder().max_in_flight(1).build().is_ok());
}

#[test]
fn every_job_waits_for_its_permit() {
    static STARTS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    fn job(x: u64) -> u64 {
        STARTS.lock().unwrap().push(Instant::now());
        x
    }
    let serial = Serial::builder().rate_limit(RateLimit::per_second(100.0)).build().unwrap();
    let started = Instant::now();
    let results = serial.map(job, 0..21);
    assert_eq!(results, (0..21).map(Ok).collect::<Vec<_>>());
    // 21 permits at 100/s, the first at once: 200 ms at least, whatever the machine does.
    assert!(started.elapsed() >= Duration::from_millis(195), "{:?}", started.elapsed());
    let starts = std::mem::take(&mut *STARTS.lock().unwrap());
    assert!(densest(&starts, Duration::from_millis(100)) <= 11, "{starts:?}");
    // `submit` takes its permit too.
    let before = Instant::now();
    for x in 0..3 {
        assert_eq!(serial.submit(job, x).wait(), Ok(x));
    }
    assert!(before.elapsed() >= Duration::from_millis(25), "{:?}", before.elapsed());
}

#[test]
fn per_request_permits_are_taken_by_the_jobs() {
    static REQUESTS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    fn three_requests(x: u64) -> u64 {
        for _ in 0..3 {
            limit::acquire();
            REQUESTS.lock().unwrap().push(Instant::now());
        }
        x
    }
    let serial = Serial::builder().rate_limit(RateLimit::per_second(200.0).per_request()).build().unwrap();
    let started = Instant::now();
    assert_eq!(serial.map(three_requests, 0..10).len(), 10);
    // 30 permits at 200/s and none per job: 145 ms at least.
    assert!(started.elapsed() >= Duration::from_millis(140), "{:?}", started.elapsed());
    let requests = std::mem::take(&mut *REQUESTS.lock().unwrap());
    assert!(densest(&requests, Duration::from_millis(100)) <= 21, "{requests:?}");
    // Outside the executor's jobs there is no limit to take from.
    let outside = Instant::now();
    for _ in 0..100 {
        limit::acquire();
    }
    assert!(outside.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_serial_without_a_limit_runs_at_once() {
    // The fast path: no permit source, nothing waits (the guard is against a hang only).
    let started = Instant::now();
    assert_eq!(Serial::new().map(|x: u64| x, 0..10_000).len(), 10_000);
    assert!(started.elapsed() < Duration::from_secs(10));
}
