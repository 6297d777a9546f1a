//! Stuck jobs on `AsyncExecutor`: the job time limit (futures dropped, blocking jobs' threads
//! abandoned and replaced), `Shutdown::Kill`, and the progress counts of both.
//!
//! These are not timing benchmarks: every wait has a generous guard (tens of seconds) against a
//! hang on a loaded machine, and the only duration asserted is Kill's bound of 5 s (its target
//! is 1 s; the measured time is printed). Stuck blocking jobs always end eventually (they poll
//! `deadline::expired()`, or a flag that the test releases), so no thread outlives the test
//! binary by much.

use std::future::pending;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use fanout_async::AsyncExecutor;
use fanout_core::{Executor, JobError, Shutdown, deadline};

/// The limit of the tests' executors.
const LIMIT: Duration = Duration::from_millis(300);

/// How long any one step may take before the test calls it a hang.
const GUARD: Duration = Duration::from_secs(60);

fn expired() -> JobError {
    JobError::Expired { limit: LIMIT }
}

fn limited(workers: usize) -> AsyncExecutor {
    AsyncExecutor::builder().workers(workers).job_timeout(LIMIT).build().expect("the executor builds")
}

fn limited_multi(workers: usize) -> AsyncExecutor {
    AsyncExecutor::builder()
        .workers(workers)
        .worker_threads(2)
        .job_timeout(LIMIT)
        .build()
        .expect("the executor builds")
}

/// Runs `f` on a thread of its own and returns its value, or panics if it takes longer than
/// [`GUARD`] (leaving the thread behind): a hang fails the test instead of blocking the run.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(f());
    });
    match receiver.recv_timeout(GUARD) {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {GUARD:?}: it hangs"),
    }
}

/// Waits until `condition` holds, or panics after [`GUARD`].
fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < GUARD, "{what} did not happen within {GUARD:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn quick(x: u64) -> u64 {
    x * 10
}

// ---------------------------------------------------------------------------------------------
// Futures
// ---------------------------------------------------------------------------------------------

#[test]
fn a_stuck_future_expires_and_frees_its_slot_for_the_next() {
    for executor in [limited(1), limited_multi(1)] {
        assert_eq!(executor.job_timeout(), Some(LIMIT));
        let mut stuck = executor.submit_async(pending::<u64>());
        let mut asleep = executor.submit_async(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            1_u64
        });
        // Queued behind two stuck futures on the one slot: it runs only once both expired.
        let mut next = executor.submit_async(async { 7_u64 });
        assert_eq!(stuck.wait_timeout(GUARD), Err(expired()));
        assert_eq!(asleep.wait_timeout(GUARD), Err(expired()));
        assert_eq!(next.wait_timeout(GUARD), Ok(7));
        // Nothing was abandoned: an expired future is dropped, not left running.
        assert_eq!(executor.abandoned_threads(), 0);
        within("dropping the executor", move || drop(executor));
    }
}

#[test]
fn a_stuck_input_of_map_async_expires_alone() {
    let results = within("map_async with a stuck input", || {
        let executor = limited(1);
        executor.map_async(
            |x: u64| async move {
                if x == 1 {
                    pending::<()>().await;
                }
                x
            },
            0..4,
        )
    });
    assert_eq!(results, [Ok(0), Err(expired()), Ok(2), Ok(3)]);
}

/// The clock starts when a future gets its slot, not while it waits for one: three futures of
/// 200 ms each on one slot take 600 ms, twice the limit, and none of them expires.
#[test]
fn the_clock_of_a_future_starts_when_it_gets_its_slot() {
    let results = within("map_async of slow futures", || {
        let executor = limited(1);
        executor.map_async(
            |x: u64| async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                x
            },
            0..3,
        )
    });
    assert_eq!(results, [Ok(0), Ok(1), Ok(2)]);
}

#[test]
fn block_on_a_stuck_future_expires() {
    let result = within("block_on a stuck future", || limited(1).block_on(pending::<()>()));
    assert_eq!(result, Err(expired()));
}

// ---------------------------------------------------------------------------------------------
// Blocking jobs of the trait
// ---------------------------------------------------------------------------------------------

/// Released at the end of `a_stuck_blocking_job_expires_and_its_thread_is_abandoned`.
static RELEASE_ABANDONED: AtomicBool = AtomicBool::new(false);
/// Set by the stuck job once it sees `deadline::expired()`.
static ABANDONED_SAW_EXPIRED: AtomicBool = AtomicBool::new(false);
/// Set by the stuck job when it returns.
static ABANDONED_RETURNED: AtomicBool = AtomicBool::new(false);

/// Stuck until the test releases it (a minute at most), noting when its deadline shows.
fn stuck_until_released(_: ()) -> u64 {
    let start = Instant::now();
    while !RELEASE_ABANDONED.load(Ordering::SeqCst) && start.elapsed() < GUARD {
        if deadline::expired() {
            ABANDONED_SAW_EXPIRED.store(true, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    ABANDONED_RETURNED.store(true, Ordering::SeqCst);
    1
}

#[test]
fn a_stuck_blocking_job_expires_and_its_thread_is_abandoned() {
    let executor = limited(1);
    let mut stuck = executor.submit(stuck_until_released, ());
    // Queued behind the stuck job on the one worker: a fresh thread runs it.
    let mut next = executor.submit(quick, 4);
    assert_eq!(stuck.wait_timeout(GUARD), Err(expired()));
    assert_eq!(next.wait_timeout(GUARD), Ok(40));
    assert_eq!(executor.abandoned_threads(), 1);
    assert_eq!(executor.progress().abandoned_threads, 1);
    // The abandoned job still runs, and sees its deadline passed.
    wait_until("the abandoned job seeing deadline::expired()", || {
        ABANDONED_SAW_EXPIRED.load(Ordering::SeqCst)
    });
    assert!(!ABANDONED_RETURNED.load(Ordering::SeqCst));
    // The executor keeps its capacity: more jobs run while the abandoned thread is stuck.
    assert_eq!(executor.map(quick, 0..20), (0..20).map(|x| Ok(x * 10)).collect::<Vec<_>>());
    // Dropping the executor waits for everything but the abandoned thread.
    within("dropping an executor with an abandoned thread", move || drop(executor));
    assert!(!ABANDONED_RETURNED.load(Ordering::SeqCst), "the drop waited for the abandoned job");
    RELEASE_ABANDONED.store(true, Ordering::SeqCst);
    wait_until("the abandoned job returning", || ABANDONED_RETURNED.load(Ordering::SeqCst));
}

/// `Drop` means `Finish`: a stuck job abandoned (or a stuck future dropped) while the executor
/// is being dropped does not cost the jobs queued behind it: they run, and the limit bounds the
/// drop.
#[test]
fn drop_runs_the_jobs_queued_behind_an_abandoned_thread() {
    let executor = limited(1);
    let stuck = executor.submit(stuck_until_expired, 0);
    let queued: Vec<_> = (1..4).map(|x| executor.submit(quick, x)).collect();
    let stuck_future = executor.submit_async(pending::<u64>());
    let queued_futures: Vec<_> = (1..4).map(|x| executor.submit_async(async move { x })).collect();
    within("dropping the executor", move || drop(executor));
    assert_eq!(stuck.wait(), Err(expired()));
    assert_eq!(stuck_future.wait(), Err(expired()));
    for (x, (job, future)) in (1..4).zip(queued.into_iter().zip(queued_futures)) {
        assert_eq!(job.wait(), Ok(x * 10));
        assert_eq!(future.wait(), Ok(x));
    }
}

/// Loops until its deadline shows, then takes a while longer: long enough for the supervisor
/// to abandon it first (it reports `Expired` either way).
fn stuck_until_expired(_: u64) -> u64 {
    let start = Instant::now();
    while !deadline::expired() && start.elapsed() < GUARD {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(200));
    0
}

fn stuck_at_one(x: u64) -> u64 {
    if x == 1 { stuck_until_expired(x) } else { quick(x) }
}

#[test]
fn a_stuck_input_of_map_expires_alone_and_the_rest_run() {
    let executor = limited(1);
    let results = executor.map(stuck_at_one, 0..5);
    assert_eq!(results, [Ok(0), Err(expired()), Ok(20), Ok(30), Ok(40)]);
    let mut unordered: Vec<_> = executor.map_unordered(stuck_at_one, 0..5).collect();
    unordered.sort_by_key(|(index, _)| *index);
    let unordered: Vec<_> = unordered.into_iter().map(|(_, result)| result).collect();
    assert_eq!(unordered, results);
    within("dropping the executor", move || drop(executor));
}

/// A job that returns on its own past its deadline (it polled `deadline::expired()`) expired
/// all the same, whether or not the supervisor came first.
fn returns_once_expired(_: ()) -> u64 {
    let start = Instant::now();
    while !deadline::expired() && start.elapsed() < GUARD {
        std::thread::sleep(Duration::from_millis(1));
    }
    5
}

#[test]
fn a_job_that_stops_itself_at_its_deadline_reports_expired() {
    let executor = limited(2);
    let handles: Vec<_> = (0..4).map(|_| executor.submit(returns_once_expired, ())).collect();
    for mut handle in handles {
        assert_eq!(handle.wait_timeout(GUARD), Err(expired()));
    }
    within("dropping the executor", move || drop(executor));
}

/// The clock of a blocking job starts when a thread starts it: jobs of 150 ms queued three
/// deep on one worker (450 ms in all) do not expire at 300 ms.
fn sleeps_150_ms(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(150));
    x
}

#[test]
fn the_clock_of_a_blocking_job_starts_when_it_starts() {
    let executor = limited(1);
    assert_eq!(executor.map(sleeps_150_ms, 0..3), [Ok(0), Ok(1), Ok(2)]);
    assert_eq!(executor.abandoned_threads(), 0);
}

/// Without a limit nothing expires, and a job sees no deadline.
fn time_left(_: ()) -> Option<Duration> {
    deadline::time_left()
}

#[test]
fn jobs_see_their_deadline_only_under_a_limit() {
    let unlimited = AsyncExecutor::new(1).expect("the executor builds");
    assert_eq!(unlimited.job_timeout(), None);
    assert_eq!(unlimited.submit(time_left, ()).wait(), Ok(None));
    let left = limited(1).submit(time_left, ()).wait().expect("the job runs");
    assert!(left.is_some_and(|left| left <= LIMIT), "time left {left:?}");
}

// ---------------------------------------------------------------------------------------------
// Shutdown::Kill
// ---------------------------------------------------------------------------------------------

/// Blocking jobs of the kill test that started, and that returned.
static KILL_STARTED: AtomicUsize = AtomicUsize::new(0);
static KILL_RETURNED: AtomicUsize = AtomicUsize::new(0);

/// Stuck until its executor is killed (no time limit: only the kill's stop flag ends it).
fn stuck_until_killed(_: ()) -> u64 {
    KILL_STARTED.fetch_add(1, Ordering::SeqCst);
    let start = Instant::now();
    while !deadline::expired() && start.elapsed() < GUARD {
        std::thread::sleep(Duration::from_millis(1));
    }
    KILL_RETURNED.fetch_add(1, Ordering::SeqCst);
    2
}

#[test]
fn kill_returns_at_once_with_running_jobs_killed_and_queued_ones_cancelled() {
    let flavors = [
        AsyncExecutor::new(2).expect("the executor builds"),
        AsyncExecutor::builder().workers(2).worker_threads(2).build().expect("the executor builds"),
    ];
    let mut returned = 0;
    for executor in flavors {
        let started_futures = Arc::new(AtomicUsize::new(0));
        let running_futures: Vec<_> = (0..2)
            .map(|_| {
                let started = Arc::clone(&started_futures);
                executor.submit_async(async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    pending::<u64>().await
                })
            })
            .collect();
        let started_before = KILL_STARTED.load(Ordering::SeqCst);
        let running_jobs: Vec<_> = (0..2).map(|_| executor.submit(stuck_until_killed, ())).collect();
        // Queued only once the stuck ones hold both slots (a multi-thread runtime may poll
        // tasks in another order than they were spawned).
        wait_until("both futures running", || started_futures.load(Ordering::SeqCst) == 2);
        wait_until("both blocking jobs running", || {
            KILL_STARTED.load(Ordering::SeqCst) == started_before + 2
        });
        let queued_futures: Vec<_> = (0..3).map(|_| executor.submit_async(async { 3_u64 })).collect();
        let queued_jobs: Vec<_> = (0..3).map(|_| executor.submit(stuck_until_killed, ())).collect();
        let name = format!("{:?}", executor.flavor());
        let watch = executor.progress_watch();

        let start = Instant::now();
        within("Shutdown::Kill", move || executor.shutdown(Shutdown::Kill));
        let took = start.elapsed();
        println!("Shutdown::Kill ({name}) returned in {took:?}");
        assert!(took < Duration::from_secs(5), "Shutdown::Kill took {took:?}");

        for mut handle in running_futures.into_iter().chain(running_jobs) {
            assert_eq!(handle.wait_timeout(GUARD), Err(JobError::Killed));
        }
        for mut handle in queued_futures.into_iter().chain(queued_jobs) {
            assert_eq!(handle.wait_timeout(GUARD), Err(JobError::Cancelled));
        }
        // The abandoned jobs saw the kill (`deadline::expired()`) and returned; the queued
        // ones never started.
        returned += 2;
        wait_until("the killed jobs returning", || KILL_RETURNED.load(Ordering::SeqCst) == returned);
        assert_eq!(KILL_STARTED.load(Ordering::SeqCst), started_before + 2);
        let progress = watch.snapshot();
        assert_eq!((progress.submitted, progress.killed, progress.cancelled), (10, 4, 6), "{progress:?}");
        assert_eq!(progress.pending(), 0);
        // The two blocking jobs' threads were abandoned; futures never are.
        assert_eq!(progress.abandoned_threads, 2);
    }
}

/// The one thing Kill cannot stop at once: a future that blocks the event loop's thread
/// without awaiting. Kill still returns (it leaves the loop thread behind after a grace
/// period), and the future's handle reports `Killed` once the blocking call returns.
#[test]
fn kill_returns_even_when_a_future_blocks_the_event_loop() {
    let executor = AsyncExecutor::new(2).expect("the executor builds");
    let started = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&started);
    let mut blocker = executor.submit_async(async move {
        flag.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(2)); // blocking: no `.await`
        4_u64
    });
    wait_until("the blocking future running", || started.load(Ordering::SeqCst));
    let queued = executor.submit_async(async { 5_u64 });
    let start = Instant::now();
    within("Shutdown::Kill", move || executor.shutdown(Shutdown::Kill));
    let took = start.elapsed();
    println!("Shutdown::Kill with the event loop blocked returned in {took:?}");
    assert!(took < Duration::from_secs(5), "Shutdown::Kill took {took:?}");
    assert_eq!(blocker.wait_timeout(GUARD), Err(JobError::Killed));
    assert_eq!(queued.wait(), Err(JobError::Cancelled));
}

#[test]
fn kill_with_a_time_limit_and_nothing_running_is_quick_too() {
    let executor = limited(2);
    assert_eq!(executor.map(quick, 0..4), [Ok(0), Ok(10), Ok(20), Ok(30)]);
    let start = Instant::now();
    within("Shutdown::Kill", move || executor.shutdown(Shutdown::Kill));
    println!("Shutdown::Kill of an idle executor returned in {:?}", start.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------------

fn panics_at_multiples_of_three_and_sticks_at_four_and_seven(x: u64) -> u64 {
    match x {
        4 | 7 => stuck_until_expired(x),
        // `resume_unwind` skips the panic hook: with `RUST_BACKTRACE=1` a debug build's hook
        // can take longer than the limit to print a backtrace, and the job would then rightly
        // be reported expired instead of panicked.
        _ if x % 3 == 0 => std::panic::resume_unwind(Box::new(format!("job {x} fails"))),
        _ => x,
    }
}

/// Counts results by kind: (ok, expired, panicked, other errors).
fn tally<T>(results: &[Result<T, JobError>]) -> (u64, u64, u64, u64) {
    let mut counts = (0, 0, 0, 0);
    for result in results {
        match result {
            Ok(_) => counts.0 += 1,
            Err(JobError::Expired { .. }) => counts.1 += 1,
            Err(JobError::Panicked { .. }) => counts.2 += 1,
            Err(_) => counts.3 += 1,
        }
    }
    counts
}

#[test]
fn progress_adds_up_for_a_map_with_panics_and_expiries() {
    // 0..10: panics at 0, 3, 6, 9; expires at 4, 7; 1, 2, 5, 8 succeed.
    let blocking = limited(2);
    let results = blocking.map(panics_at_multiples_of_three_and_sticks_at_four_and_seven, 0..10);
    assert_eq!(tally(&results), (4, 2, 4, 0));

    let futures = limited(2);
    let future_results = futures.map_async(
        |x: u64| async move {
            match x {
                4 | 7 => pending::<u64>().await,
                _ if x % 3 == 0 => panic!("future {x} fails"),
                _ => x,
            }
        },
        0..10,
    );
    assert_eq!(tally(&future_results), (4, 2, 4, 0));

    for (executor, results) in [(&blocking, &results), (&futures, &future_results)] {
        let progress = executor.progress();
        let (ok, expired, panicked, _) = tally(results);
        assert_eq!(progress.submitted, 10, "{progress:?}");
        assert_eq!(progress.submitted, progress.succeeded + progress.failed + progress.cancelled);
        assert_eq!(progress.pending(), 0);
        assert_eq!(progress.started, 10);
        assert_eq!(progress.succeeded, ok);
        assert_eq!(progress.failed, expired + panicked);
        assert_eq!(progress.expired, expired);
        assert_eq!((progress.cancelled, progress.killed), (0, 0));
    }
}

#[test]
fn progress_counts_kills_and_cancellations() {
    let executor = AsyncExecutor::new(1).expect("the executor builds");
    let watch = executor.progress_watch();
    let started = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&started);
    let running = executor.submit_async(async move {
        flag.store(true, Ordering::SeqCst);
        pending::<()>().await
    });
    wait_until("the future running", || started.load(Ordering::SeqCst));
    let queued = executor.submit_async(async {});
    within("Shutdown::Kill", move || executor.shutdown(Shutdown::Kill));
    assert_eq!(running.wait(), Err(JobError::Killed));
    assert_eq!(queued.wait(), Err(JobError::Cancelled));
    let progress = watch.snapshot();
    assert_eq!((progress.submitted, progress.started), (2, 1), "{progress:?}");
    assert_eq!((progress.failed, progress.killed, progress.cancelled), (1, 1, 1));
    assert_eq!(progress.pending(), 0);
}
