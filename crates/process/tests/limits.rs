//! Rate limits across worker processes: one limit in the parent that 8 workers, their jobs'
//! own requests and a pool nested in a worker all draw from, and a `429` pause that holds them
//! all.
//!
//! The "server" is a loopback listener of the test's own that records when each connection
//! arrives; the checks count arrivals per time window, generously (a loaded machine delivers
//! requests late, never early, so a crowded window is a real failure).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fanout_core::limit::{self, RateLimit};
use fanout_core::{BuildError, Executor};
use fanout_process::ProcessPool;

/// Arrivals: when, and the first byte the client sent.
type Arrivals = Vec<(Instant, u8)>;

/// A listener that records `expected` connections (or gives up after 60 s).
fn recorder(expected: usize) -> (SocketAddr, JoinHandle<Arrivals>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let thread = std::thread::spawn(move || {
        let mut arrivals = Vec::with_capacity(expected);
        let give_up = Instant::now() + Duration::from_secs(60);
        while arrivals.len() < expected && Instant::now() < give_up {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let at = Instant::now();
                    stream.set_nonblocking(false).unwrap();
                    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut byte = [0_u8];
                    let _ = stream.read_exact(&mut byte);
                    arrivals.push((at, byte[0]));
                }
                Err(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
        arrivals
    });
    (address, thread)
}

/// One request: connect and send `mark`.
fn request(address: &str, mark: u8) {
    let mut stream = TcpStream::connect(address).expect("the recorder listens");
    stream.write_all(&[mark]).expect("the recorder reads");
}

/// The most arrivals a window of `window` may hold at `rate` per second when `concurrent`
/// requests can be in flight at once: the rate's share, one for each edge of the window, and
/// every in-flight request, since a busy machine may run workers late and deliver the requests
/// whose permits they already hold in one bunch. Without a shared limit, each of the workers
/// would send at `rate` on its own: many times this.
fn allowed(rate: f64, window: Duration, concurrent: usize) -> usize {
    (rate * window.as_secs_f64()).ceil() as usize + 2 + concurrent
}

/// The most arrivals within any window of `window`.
fn densest(arrivals: &Arrivals, window: Duration) -> usize {
    let mut times: Vec<Instant> = arrivals.iter().map(|(at, _)| *at).collect();
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

fn span(arrivals: &Arrivals) -> Duration {
    let first = arrivals.iter().map(|(at, _)| *at).min().unwrap();
    let last = arrivals.iter().map(|(at, _)| *at).max().unwrap();
    last - first
}

#[test]
fn a_limit_that_is_not_positive_is_a_build_error() {
    let error = ProcessPool::builder()
        .workers(2)
        .rate_limit(RateLimit::per_second(0.0))
        .build()
        .expect_err("refused");
    assert!(matches!(error, BuildError::InvalidRateLimit { .. }), "{error}");
    let error = ProcessPool::builder().workers(2).max_in_flight(0).build().expect_err("refused");
    assert!(matches!(error, BuildError::ZeroInFlight), "{error}");
}

#[test]
fn eight_worker_processes_share_one_per_job_limit() {
    fn call(address: String) -> u8 {
        request(&address, b'J');
        1
    }
    let (address, recorded) = recorder(41);
    let pool = ProcessPool::builder().workers(8).rate_limit(RateLimit::per_second(100.0)).build().unwrap();
    let results = pool.map(call, std::iter::repeat_n(address.to_string(), 41));
    assert!(results.iter().all(|r| *r == Ok(1)), "{results:?}");
    let arrivals = recorded.join().unwrap();
    assert_eq!(arrivals.len(), 41);
    // 41 permits at 100/s span 400 ms at least (less the jitter of the first arrivals).
    assert!(span(&arrivals) >= Duration::from_millis(350), "{:?}", span(&arrivals));
    let window = Duration::from_millis(200);
    assert!(densest(&arrivals, window) <= allowed(100.0, window, 8), "{arrivals:?}");
}

#[test]
fn jobs_in_worker_processes_take_a_permit_per_request_from_the_parent() {
    fn three_calls(address: String) -> u8 {
        for _ in 0..3 {
            limit::acquire();
            request(&address, b'R');
        }
        3
    }
    let (address, recorded) = recorder(48);
    let limit = RateLimit::per_second(200.0).per_request();
    let pool = ProcessPool::builder().workers(8).rate_limit(limit).build().unwrap();
    let results = pool.map(three_calls, std::iter::repeat_n(address.to_string(), 16));
    assert!(results.iter().all(|r| *r == Ok(3)), "{results:?}");
    let arrivals = recorded.join().unwrap();
    assert_eq!(arrivals.len(), 48);
    // 48 permits at 200/s: 235 ms at least.
    assert!(span(&arrivals) >= Duration::from_millis(200), "{:?}", span(&arrivals));
    let window = Duration::from_millis(200);
    assert!(densest(&arrivals, window) <= allowed(200.0, window, 8), "{arrivals:?}");
}

#[test]
fn a_pool_nested_in_a_worker_draws_from_the_roots_limit() {
    fn inner_call(address: String) -> u8 {
        request(&address, b'I');
        1
    }
    fn outer_call(address: String) -> u8 {
        request(&address, b'O');
        // No limit of its own: it draws from the root's, through this worker's parent.
        let pool = ProcessPool::new(2).expect("a nested pool builds in a worker");
        let inner = pool.map(inner_call, std::iter::repeat_n(address, 6));
        1 + inner.into_iter().map(|r| r.unwrap_or(0)).sum::<u8>()
    }
    let (address, recorded) = recorder(28);
    let pool = ProcessPool::builder().workers(4).rate_limit(RateLimit::per_second(50.0)).build().unwrap();
    let results = pool.map(outer_call, std::iter::repeat_n(address.to_string(), 4));
    assert!(results.iter().all(|r| *r == Ok(7)), "{results:?}");
    let arrivals = recorded.join().unwrap();
    assert_eq!(arrivals.len(), 28);
    // 4 outer and 24 inner permits, one limit at 50/s: 540 ms at least. Inner pools with
    // limits of their own (or none) would send their 24 requests in a few bursts instead.
    assert!(span(&arrivals) >= Duration::from_millis(480), "{:?}", span(&arrivals));
    let window = Duration::from_millis(200);
    assert!(densest(&arrivals, window) <= allowed(50.0, window, 12), "{arrivals:?}");
}

#[test]
fn a_pause_in_one_worker_holds_every_worker() {
    const PAUSE: Duration = Duration::from_millis(400);
    fn call(input: (String, bool)) -> u8 {
        let (address, pauses) = input;
        if pauses {
            // What a job does with a `429` and its `Retry-After`.
            limit::pause(PAUSE);
            request(&address, b'P');
        } else {
            request(&address, b'J');
        }
        1
    }
    let (address, recorded) = recorder(40);
    let pool = ProcessPool::builder().workers(4).rate_limit(RateLimit::per_second(500.0)).build().unwrap();
    let inputs = (0..40).map(|i| (address.to_string(), i == 0));
    assert_eq!(pool.map(call, inputs).len(), 40);
    let arrivals = recorded.join().unwrap();
    let paused_at = arrivals.iter().find(|(_, mark)| *mark == b'P').expect("the pausing job ran").0;
    // Requests whose permit was granted before the pause may still arrive (one per worker at
    // most); nothing else arrives until the pause is over.
    let during = arrivals
        .iter()
        .filter(|(at, mark)| {
            *mark == b'J' && *at > paused_at && *at < paused_at + PAUSE - Duration::from_millis(50)
        })
        .count();
    assert!(during <= 4, "{during} requests arrived during the pause");
    let after =
        arrivals.iter().filter(|(at, _)| *at >= paused_at + PAUSE - Duration::from_millis(50)).count();
    assert!(after >= 20, "{after} requests after the pause");
}
