//! The behaviours of `AsyncExecutor` beyond the conformance suite: native async maps, their
//! limits and error model, shutdown of futures, calls from inside tokio runtimes (its own and
//! others), and what blocking on the event loop does. No test asserts a duration.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fanout_async::{AsyncExecutor, Flavor};
use fanout_core::{BuildError, Executor, JobError, Shutdown};

fn square(x: u64) -> u64 {
    x * x
}

fn current(workers: usize) -> AsyncExecutor {
    AsyncExecutor::new(workers).expect("the executor builds")
}

fn multi(workers: usize) -> AsyncExecutor {
    AsyncExecutor::builder().workers(workers).worker_threads(2).build().expect("the executor builds")
}

#[test]
fn zero_workers_or_threads_are_build_errors() {
    assert!(matches!(AsyncExecutor::new(0), Err(BuildError::ZeroWorkers)));
    assert!(matches!(
        AsyncExecutor::builder().workers(2).worker_threads(0).build(),
        Err(BuildError::ZeroWorkers)
    ));
    assert_eq!(current(1).flavor(), Flavor::CurrentThread);
    assert_eq!(multi(1).flavor(), Flavor::MultiThread { threads: 2 });
}

#[test]
fn map_async_keeps_input_order_and_at_most_workers_in_flight() {
    for executor in [current(4), multi(4)] {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let results = executor.map_async(
            |x: u64| {
                let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    // Later inputs finish first: completion order differs from input order.
                    tokio::time::sleep(Duration::from_millis(1 + (x % 4))).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    x * 2
                }
            },
            (0..40).rev(),
        );
        let expected: Vec<_> = (0..40).rev().map(|x| Ok(x * 2)).collect();
        assert_eq!(results, expected);
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=4).contains(&peak), "peak in flight {peak}");
    }
}

#[test]
fn map_async_unordered_pulls_inputs_lazily() {
    let executor = current(8);
    let pulled = std::cell::Cell::new(0_usize);
    let inputs = (0..1_000_000_u64).inspect(|_| pulled.set(pulled.get() + 1));
    let first: Vec<_> = executor.map_async_unordered(|x| async move { x }, inputs).take(10).collect();
    assert_eq!(first.len(), 10);
    // At most the window (8) plus the ten that completed were pulled.
    assert!(pulled.get() <= 8 + 10, "pulled {} inputs for 10 results", pulled.get());
}

#[test]
fn a_panicking_future_or_builder_reports_panicked_and_the_others_finish() {
    for executor in [current(3), multi(3)] {
        let results = executor.map_async(
            |x: u64| {
                assert!(x != 3, "building future {x} fails");
                async move {
                    assert!(x != 5, "future {x} fails");
                    x
                }
            },
            0..8,
        );
        for (x, result) in (0_u64..).zip(&results) {
            match x {
                3 => assert_eq!(
                    *result,
                    Err(JobError::Panicked { message: "building future 3 fails".to_owned() })
                ),
                5 => assert_eq!(*result, Err(JobError::Panicked { message: "future 5 fails".to_owned() })),
                _ => assert_eq!(*result, Ok(x)),
            }
        }
        // The executor is whole after the panics.
        assert_eq!(executor.map(square, [3]), [Ok(9)]);
    }
}

#[test]
fn shutdown_cancels_queued_futures_and_finishes_running_ones() {
    for executor in [current(1), multi(1)] {
        let started = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&started);
        let running = executor.submit_async(async move {
            flag.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            "finished"
        });
        while !started.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let queued: Vec<_> = (0..5).map(|_| executor.submit_async(async { "ran" })).collect();
        executor.shutdown(Shutdown::CancelQueued);
        assert_eq!(running.wait(), Ok("finished"));
        for handle in queued {
            assert_eq!(handle.wait(), Err(JobError::Cancelled));
        }
    }
}

#[test]
fn drop_waits_for_queued_and_running_futures() {
    let executor = current(2);
    let done = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let done = Arc::clone(&done);
            executor.submit_async(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                done.fetch_add(1, Ordering::SeqCst)
            })
        })
        .collect();
    drop(executor);
    assert_eq!(done.load(Ordering::SeqCst), 6);
    assert!(handles.into_iter().all(|handle| handle.wait().is_ok()));
}

#[test]
fn block_on_runs_one_future() {
    let executor = current(1);
    assert_eq!(executor.block_on(async { 6 * 7 }), Ok(42));
    let panicked = executor.block_on(async {
        if true {
            panic!("block_on future fails");
        }
    });
    assert_eq!(panicked, Err(JobError::Panicked { message: "block_on future fails".to_owned() }));
}

/// Built, used and dropped inside other tokio runtimes (current-thread and multi-thread),
/// inside their async context: no "Cannot start a runtime from within a runtime", no "Cannot
/// drop a runtime in a context where blocking is not allowed".
#[test]
fn works_inside_another_tokio_runtime() {
    let outer_runtimes = [
        tokio::runtime::Builder::new_current_thread().enable_all().build(),
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build(),
    ];
    for outer in outer_runtimes {
        let outer = outer.expect("a tokio runtime builds");
        let results = outer.block_on(async {
            let executor = current(2);
            let blocking = executor.map(square, 0..4_u64);
            let futures = executor.map_async(|x: u64| async move { x + 1 }, 0..4);
            drop(executor);
            (blocking, futures)
        });
        assert_eq!(results.0, [Ok(0), Ok(1), Ok(4), Ok(9)]);
        assert_eq!(results.1, [Ok(1), Ok(2), Ok(3), Ok(4)]);
    }
}

/// A future may build and use an executor of its own: the async form of the article's nested
/// pools (blocking the outer loop while it waits, as any blocking call would).
#[test]
fn a_future_can_build_and_use_its_own_executor() {
    let results = current(2).map_async(
        |n: u64| async move {
            let inner = current(2);
            inner
                .map_async(|x: u64| async move { x * x }, 0..n)
                .into_iter()
                .map(|r| r.unwrap_or(0))
                .sum::<u64>()
        },
        [3, 4],
    );
    assert_eq!(results, [Ok(5), Ok(14)]);
}

/// Blocking calls from one of the executor's own futures run inline (no deadlock on the busy
/// loop); waiting for futures there would deadlock a current-thread loop, so it is refused with
/// a message, which the outer future reports as its panic. A multi-thread executor can wait.
#[test]
fn calls_from_its_own_futures() {
    let executor = Arc::new(current(2));
    let outer = Arc::clone(&executor);
    let results = executor.map_async(
        move |n: u64| {
            let executor = Arc::clone(&outer);
            async move { executor.map(square, 0..n).len() }
        },
        [2, 3],
    );
    assert_eq!(results, [Ok(2), Ok(3)]);

    let outer = Arc::clone(&executor);
    let refused = executor.block_on(async move { outer.map_async(|x: u64| async move { x }, [1]).len() });
    let Err(JobError::Panicked { message }) = refused else { panic!("expected a refusal, got {refused:?}") };
    assert!(message.contains("event loop") && message.contains("map_concurrent"), "{message}");

    let executor = Arc::new(multi(2));
    let outer = Arc::clone(&executor);
    let waited = executor.block_on(async move { outer.map_async(|x: u64| async move { x + 1 }, [1, 2]) });
    assert_eq!(waited, Ok(vec![Ok(2), Ok(3)]));
}

static RELEASED: AtomicBool = AtomicBool::new(false);

/// A blocking job that returns once a future has set `RELEASED` (or gives up after a minute).
fn wait_for_release(_: ()) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !RELEASED.load(Ordering::SeqCst) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Through the trait a blocking job runs on the blocking pool, so the event loop stays free:
/// a future completes (and releases the job) while the job is still running.
#[test]
fn blocking_jobs_through_the_trait_leave_the_loop_free() {
    let executor = current(2);
    let job = executor.submit(wait_for_release, ());
    let released = executor.block_on(async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        RELEASED.store(true, Ordering::SeqCst);
    });
    assert_eq!(released, Ok(()));
    assert_eq!(job.wait(), Ok(true));
}

/// Where async loses: a blocking call *inside* a future holds the one thread of a
/// current-thread runtime, so no other future runs until it returns: the future that only
/// needs a 1 ms timer, queued right behind one that sleeps 50 ms without awaiting, has not run
/// when the sleeper wakes up.
#[test]
fn a_blocking_call_inside_a_future_stalls_every_other_future() {
    let executor = current(2);
    let timer_fired = Arc::new(AtomicBool::new(false));
    let seen_by_blocker = Arc::new(AtomicBool::new(true));
    let (flag, seen) = (Arc::clone(&timer_fired), Arc::clone(&seen_by_blocker));
    let blocker = executor.submit_async(async move {
        std::thread::sleep(Duration::from_millis(50)); // blocking: no `.await`
        seen.store(flag.load(Ordering::SeqCst), Ordering::SeqCst);
    });
    let fired = Arc::clone(&timer_fired);
    let polite = executor.submit_async(async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        fired.store(true, Ordering::SeqCst);
    });
    assert_eq!(blocker.wait(), Ok(()));
    assert_eq!(polite.wait(), Ok(()));
    assert!(!seen_by_blocker.load(Ordering::SeqCst), "the loop ran another future during a blocking call");
}
