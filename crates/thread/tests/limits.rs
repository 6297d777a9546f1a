//! Rate limits and `max_in_flight` on a thread pool: one limit that every thread, and every
//! pool nested in a job, draws from; a `429` pause that holds every worker.
//!
//! The checks count permits per time window, generously: a loaded machine may start jobs late,
//! never early, so a window holding more starts than the rate allows is a real failure.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fanout_core::limit::{self, RateLimit};
use fanout_core::{BuildError, Executor};
use fanout_thread::ThreadPool;

/// The most events within any window of `window` among `times`.
fn densest(times: &mut [Instant], window: Duration) -> usize {
    times.sort();
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

fn take(times: &Mutex<Vec<Instant>>) -> Vec<Instant> {
    std::mem::take(&mut *times.lock().unwrap())
}

#[test]
fn a_limit_that_is_not_positive_is_a_build_error() {
    for rate in [0.0, -3.0, f64::NAN] {
        let built = ThreadPool::builder().workers(2).rate_limit(RateLimit::per_second(rate)).build();
        let error = built.expect_err("refused");
        assert!(matches!(error, BuildError::InvalidRateLimit { .. }), "{error}");
        assert!(error.to_string().contains("above 0"), "{error}");
    }
    let error = ThreadPool::builder().workers(2).max_in_flight(0).build().expect_err("refused");
    assert!(matches!(error, BuildError::ZeroInFlight), "{error}");
}

#[test]
fn eight_threads_share_one_per_job_limit() {
    static STARTS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    fn job(x: u64) -> u64 {
        STARTS.lock().unwrap().push(Instant::now());
        x
    }
    let pool = ThreadPool::builder().workers(8).rate_limit(RateLimit::per_second(100.0)).build().unwrap();
    let started = Instant::now();
    assert_eq!(pool.map(job, 0..41).len(), 41);
    // 41 evenly spaced permits at 100/s span 400 ms at least, whatever the machine does.
    assert!(started.elapsed() >= Duration::from_millis(390), "{:?}", started.elapsed());
    let mut starts = take(&STARTS);
    // 100/s is 10 per 100 ms; one more for a window's two edges, one for scheduling jitter.
    assert!(densest(&mut starts, Duration::from_millis(100)) <= 12, "{starts:?}");
}

#[test]
fn a_pool_nested_in_a_job_draws_from_the_roots_limit() {
    static STARTS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    fn inner(x: u64) -> u64 {
        STARTS.lock().unwrap().push(Instant::now());
        x
    }
    fn outer(x: u64) -> u64 {
        STARTS.lock().unwrap().push(Instant::now());
        // No limit of its own: it inherits the root's.
        let pool = ThreadPool::new(4).expect("the inner pool builds");
        pool.map(inner, 0..4).into_iter().map(Result::unwrap).sum::<u64>() + x
    }
    let pool = ThreadPool::builder().workers(4).rate_limit(RateLimit::per_second(100.0)).build().unwrap();
    let started = Instant::now();
    assert_eq!(pool.map(outer, 0..6).len(), 6);
    // 6 outer and 24 inner jobs, all on the root's limit: 30 permits, 290 ms at least.
    assert!(started.elapsed() >= Duration::from_millis(280), "{:?}", started.elapsed());
    let mut starts = take(&STARTS);
    assert_eq!(starts.len(), 30);
    assert!(densest(&mut starts, Duration::from_millis(100)) <= 12, "{starts:?}");
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
    let limit = RateLimit::per_second(200.0).per_request();
    let pool = ThreadPool::builder().workers(8).rate_limit(limit).build().unwrap();
    let started = Instant::now();
    assert_eq!(pool.map(three_requests, 0..20).len(), 20);
    // 60 permits at 200/s: 295 ms at least; the jobs took no permit of their own.
    assert!(started.elapsed() >= Duration::from_millis(290), "{:?}", started.elapsed());
    let mut requests = take(&REQUESTS);
    assert!(densest(&mut requests, Duration::from_millis(100)) <= 22, "{requests:?}");
}

#[test]
fn a_pause_holds_every_worker() {
    static STARTS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    static PAUSED_AT: Mutex<Option<Instant>> = Mutex::new(None);
    const PAUSE: Duration = Duration::from_millis(300);
    fn job(x: u64) -> u64 {
        if x == 0 {
            // What a job does with a `429` and its `Retry-After`. (Job 0, the first to get a
            // permit: threads waiting for permits are not served in input order.)
            limit::pause(PAUSE);
            *PAUSED_AT.lock().unwrap() = Some(Instant::now());
        } else {
            STARTS.lock().unwrap().push(Instant::now());
        }
        x
    }
    let pool = ThreadPool::builder().workers(4).rate_limit(RateLimit::per_second(1000.0)).build().unwrap();
    assert_eq!(pool.map(job, 0..40).len(), 40);
    let paused_at = PAUSED_AT.lock().unwrap().expect("job 0 ran");
    let starts = take(&STARTS);
    // Jobs that had their permit before the pause may still start (at most one per worker);
    // no other job starts until the pause is over.
    let during = starts
        .iter()
        .filter(|&&t| t > paused_at && t < paused_at + PAUSE - Duration::from_millis(20))
        .count();
    assert!(during <= 4, "{during} jobs started during the pause");
    // The jobs after the pause did run, once it was over.
    let after = starts.iter().filter(|&&t| t >= paused_at + PAUSE - Duration::from_millis(20)).count();
    assert!(after >= 20, "{after} jobs started after the pause");
}

#[test]
fn max_in_flight_caps_the_jobs_running_at_once() {
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);
    fn job(x: u64) -> u64 {
        let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        x
    }
    let pool = ThreadPool::builder().workers(8).max_in_flight(2).build().unwrap();
    assert_eq!(pool.map(job, 0..40).into_iter().filter(Result::is_ok).count(), 40);
    assert_eq!(pool.submit(job, 1).wait(), Ok(1));
    assert_eq!(PEAK.load(Ordering::SeqCst), 2);
}

#[test]
fn a_serial_executor_built_in_a_job_draws_from_the_roots_limit() {
    static STARTS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    fn inner(x: u64) -> u64 {
        STARTS.lock().unwrap().push(Instant::now());
        x
    }
    fn outer(x: u64) -> u64 {
        STARTS.lock().unwrap().push(Instant::now());
        let serial = fanout_core::Serial::new();
        serial.map(inner, 0..4).into_iter().map(Result::unwrap).sum::<u64>() + x
    }
    let pool = ThreadPool::builder().workers(4).rate_limit(RateLimit::per_second(100.0)).build().unwrap();
    let started = Instant::now();
    assert_eq!(pool.map(outer, 0..4).len(), 4);
    // 4 outer and 16 inner jobs, all on the root's limit: 20 permits, 190 ms at least.
    assert!(started.elapsed() >= Duration::from_millis(180), "{:?}", started.elapsed());
    let mut starts = take(&STARTS);
    assert_eq!(starts.len(), 20);
    assert!(densest(&mut starts, Duration::from_millis(100)) <= 12, "{starts:?}");
}
