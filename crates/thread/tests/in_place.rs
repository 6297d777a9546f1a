//! The ordered `map` of an input with a known length writes results in place: these tests
//! hold it to its contract when the length is wrong or the input panics.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// Drops of [`Counted`] inputs (only the test below makes them).
static DROPS: AtomicUsize = AtomicUsize::new(0);

/// An input that counts its drops, for checking that every input is dropped exactly once.
#[derive(serde::Serialize, serde::Deserialize)]
struct Counted(u64);

impl Drop for Counted {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

/// Panics on every 5th input, while it owns it.
fn fragile(input: Counted) -> u64 {
    assert!(input.0 % 5 != 0, "input {} breaks the job", input.0);
    input.0
}

#[test]
fn every_input_is_dropped_once_when_jobs_panic_or_the_input_source_breaks() {
    let pool = ThreadPool::builder().workers(2).chunk_size(7).build().expect("pool");
    let results = pool.map(fragile, (0..1_000).map(Counted));
    assert_eq!(results.iter().filter(|result| result.is_err()).count(), 200);
    assert_eq!(results[6], Ok(6));
    assert_eq!(DROPS.load(Ordering::SeqCst), 1_000);

    // The input source panics in the middle of a chunk: the inputs already moved into their
    // slots of the chunk not yet sent are dropped too.
    DROPS.store(0, Ordering::SeqCst);
    let made = AtomicUsize::new(0);
    let inputs = (0..10_000_u64).map(|x| {
        assert!(x != 5_003, "input source broke");
        made.fetch_add(1, Ordering::SeqCst);
        Counted(x)
    });
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| pool.map(fragile, inputs)));
    assert!(outcome.is_err());
    assert_eq!(made.load(Ordering::SeqCst), 5_003);
    assert_eq!(DROPS.load(Ordering::SeqCst), 5_003);
}
