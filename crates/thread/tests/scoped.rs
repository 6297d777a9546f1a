//! `ThreadPool`'s own API beyond the trait: borrowing closures, and nested use of one pool.

use std::sync::atomic::{AtomicUsize, Ordering};

use fanout_core::{Executor, JobError};
use fanout_thread::ThreadPool;

#[test]
fn scoped_map_runs_closures_that_borrow_and_mutate_shared_state() {
    let pool = ThreadPool::builder().workers(3).chunk_size(4).build().expect("pool");
    let words: Vec<String> = (0..100).map(|i| format!("word{i}")).collect();
    let calls = AtomicUsize::new(0);
    let lengths = pool.scoped_map(
        |word: &String| {
            calls.fetch_add(1, Ordering::Relaxed);
            word.len()
        },
        &words,
    );
    assert_eq!(calls.load(Ordering::Relaxed), 100);
    let expected: Vec<Result<usize, JobError>> = words.iter().map(|w| Ok(w.len())).collect();
    assert_eq!(lengths, expected);
}

#[test]
fn a_panic_in_a_scoped_closure_fails_only_its_input() {
    let pool = ThreadPool::new(2).expect("pool");
    let limit = 7;
    let results = pool.scoped_map(|x: u32| if x == limit { panic!("over the limit") } else { x }, 0..10);
    for (x, result) in (0..10).zip(results) {
        if x == limit {
            assert!(matches!(result, Err(JobError::Panicked { ref message }) if message == "over the limit"));
        } else {
            assert_eq!(result, Ok(x));
        }
    }
}

#[test]
fn a_job_can_map_over_its_own_pool_without_deadlock() {
    // Every worker waits on a nested map over the same pool; the waiting workers run the
    // nested tasks themselves instead of blocking the pool.
    let pool = ThreadPool::new(2).expect("pool");
    let sums = pool.scoped_map(
        |n: u64| pool.scoped_map(|x: u64| x * x, 0..n).into_iter().map(Result::unwrap).sum::<u64>(),
        [10, 20, 30, 40],
    );
    let expected = |n: u64| (0..n).map(|x| x * x).sum::<u64>();
    assert_eq!(sums, [Ok(expected(10)), Ok(expected(20)), Ok(expected(30)), Ok(expected(40))]);
}

#[test]
fn scoped_map_returns_only_after_every_borrow_ended() {
    let pool = ThreadPool::new(4).expect("pool");
    for round in 0..50 {
        let data: Vec<u64> = (0..64).map(|x| x + round).collect();
        let total: u64 =
            pool.scoped_map(|i: usize| data[i] * 2, 0..data.len()).into_iter().map(Result::unwrap).sum();
        assert_eq!(total, data.iter().map(|x| x * 2).sum::<u64>());
        // `data` is dropped here, while the pool lives on: a task still holding the borrow
        // would read freed memory (run the test under valgrind or miri to see it).
    }
    assert_eq!(pool.workers(), 4);
}
