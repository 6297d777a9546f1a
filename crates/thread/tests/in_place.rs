//! The ordered `map` of an input with a known length writes results in place: these tests
//! hold it to its contract when the length is wrong or the input panics.

use std::panic::{self, AssertUnwindSafe};

use fanout_core::Executor;
use fanout_thread::ThreadPool;

fn triple(x: u64) -> u64 {
    x * 3
}

/// An iterator that claims an exact length it does not have.
struct Liar {
    next: u64,
    real: u64,
    claimed: usize,
}

impl Iterator for Liar {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        (self.next < self.real).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.claimed, Some(self.claimed))
    }
}

fn expected(n: u64) -> Vec<Result<u64, fanout_core::JobError>> {
    (0..n).map(|x| Ok(x * 3)).collect()
}

#[test]
fn more_inputs_than_the_size_hint_claims_are_all_mapped_in_order() {
    for chunk_size in [1, 3, 64] {
        let pool = ThreadPool::builder().workers(3).chunk_size(chunk_size).build().expect("pool");
        let results = pool.map(triple, Liar { next: 0, real: 5_000, claimed: 1_000 });
        assert_eq!(results, expected(5_000), "chunk size {chunk_size}");
    }
}

#[test]
fn fewer_inputs_than_the_size_hint_claims_give_only_their_results() {
    for chunk_size in [1, 3, 64] {
        let pool = ThreadPool::builder().workers(3).chunk_size(chunk_size).build().expect("pool");
        let results = pool.map(triple, Liar { next: 0, real: 1_000, claimed: 5_000 });
        assert_eq!(results, expected(1_000), "chunk size {chunk_size}");
    }
}

#[test]
fn an_input_iterator_that_panics_unwinds_after_the_tasks_and_leaves_the_pool_whole() {
    let pool = ThreadPool::builder().workers(2).chunk_size(8).build().expect("pool");
    let inputs = (0..100_000_u64).map(|x| if x == 50_000 { panic!("input source broke") } else { x });
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| pool.map(triple, inputs)));
    assert!(outcome.is_err(), "the input's panic reaches the caller");
    // The tasks already queued wrote into the dropped output only while it was alive, and the
    // pool serves the next call normally.
    assert_eq!(pool.map(triple, 0..10_000), expected(10_000));
}
