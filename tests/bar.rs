//! `fanout::bar` (the `indicatif` feature): the bar counts completions on every executor, so
//! it reaches its length when a map returns or an iterator is exhausted, and an ordered
//! `imap`'s bar moves past a slow input that holds the results behind it.
//!
//! `cargo test --workspace` builds the facade with the feature (fanout-bench and xtask enable
//! it); `cargo test -p fanout --features indicatif --test bar` runs this file alone. The bars
//! are hidden: nothing is drawn, but their position and length are kept.
#![cfg(feature = "indicatif")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fanout::bar::{self, indicatif::ProgressBar};
use fanout::{AnyExecutor, Executor, ExecutorKind, Serial, ThreadPool};

fn square(x: u64) -> u64 {
    x * x
}

fn fails_on_seven(x: u64) -> u64 {
    assert_ne!(x, 7, "seven");
    x
}

#[test]
fn a_map_brings_the_bar_to_its_length_on_every_executor() {
    for kind in ExecutorKind::ALL {
        let executor = AnyExecutor::new(kind, 3).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let progress = ProgressBar::hidden();
        let results = bar::map(&executor, square, 0..40_u64, &progress);
        assert_eq!(results.len(), 40, "{kind}");
        assert_eq!(results[6], Ok(36), "{kind}");
        assert_eq!((progress.position(), progress.length()), (40, Some(40)), "{kind}");
        executor.shutdown(fanout::Shutdown::Finish);
    }
}

#[test]
fn failures_count_as_completions_and_successive_calls_add_up() {
    let pool = ThreadPool::new(2).unwrap_or_else(|e| panic!("{e}"));
    let progress = ProgressBar::hidden();
    let results = bar::map(&pool, fails_on_seven, 0..10_u64, &progress);
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    assert_eq!((progress.position(), progress.length()), (10, Some(10)));
    // A second call on the same bar: it goes on from where the first left it.
    let unordered: Vec<_> = bar::map_unordered(&pool, square, vec![1, 2, 3], &progress).collect();
    assert_eq!(unordered.len(), 3);
    assert_eq!((progress.position(), progress.length()), (13, Some(13)));
}

#[test]
fn an_input_of_unknown_length_leaves_the_length_alone() {
    let pool = ThreadPool::new(2).unwrap_or_else(|e| panic!("{e}"));
    let progress = ProgressBar::hidden();
    let inputs = (0..50_u64).filter(|x| x % 2 == 0);
    let results: Vec<_> = bar::imap(&pool, square, inputs, &progress).collect();
    assert_eq!(results.len(), 25);
    assert_eq!((progress.position(), progress.length()), (25, None));
}

#[test]
fn a_dropped_iterator_stops_its_ticker() {
    let pool = ThreadPool::new(2).unwrap_or_else(|e| panic!("{e}"));
    let progress = ProgressBar::hidden();
    let mut iter = bar::imap(&pool, square, 0..1000_u64, &progress);
    assert_eq!(iter.next(), Some(Ok(0)));
    drop(iter);
    // No ticker left behind to move the bar: its position stays.
    let after_drop = progress.position();
    std::thread::sleep(bar::TICK * 3);
    assert_eq!(progress.position(), after_drop);
    assert!(after_drop <= 1000);
}

#[test]
fn a_serial_imaps_bar_moves_with_each_result() {
    // Serial adds its counts in batches of 64; the iterator counts what it yields.
    let serial = Serial::new();
    let progress = ProgressBar::hidden();
    let mut iter = bar::imap(&serial, square, 0..100_u64, &progress);
    assert_eq!(iter.by_ref().take(3).count(), 3);
    let guard = Instant::now();
    while progress.position() < 3 && guard.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!((progress.position(), progress.length()), (3, Some(100)));
    drop(iter);
    assert_eq!(progress.position(), 3, "three inputs ran, no more");
}

/// Input 0 blocks until the test releases it (a static: jobs capture nothing).
static RELEASE: AtomicBool = AtomicBool::new(false);

fn slow_first(x: u64) -> u64 {
    if x == 0 {
        let guard = Instant::now();
        while !RELEASE.load(Ordering::SeqCst) && guard.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    x
}

#[test]
fn an_ordered_imaps_bar_moves_past_a_slow_first_input() {
    let pool = ThreadPool::new(4).unwrap_or_else(|e| panic!("{e}"));
    let progress = ProgressBar::hidden();
    let watcher = {
        let progress = progress.clone();
        std::thread::spawn(move || {
            // Inputs 1, 2 and 3 finish while input 0, which `imap` must yield first, runs on.
            // A generous guard against a loaded machine: not a timing assertion.
            let guard = Instant::now();
            while progress.position() < 3 && guard.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let seen = progress.position();
            RELEASE.store(true, Ordering::SeqCst);
            seen
        })
    };
    let mut ordered = bar::imap(&pool, slow_first, 0..4_u64, &progress);
    // Blocks until the watcher releases input 0.
    assert_eq!(ordered.next(), Some(Ok(0)));
    let seen_before_the_first_result = watcher.join().unwrap_or(0);
    assert_eq!(seen_before_the_first_result, 3, "the bar waited for the slow input");
    assert_eq!(ordered.by_ref().collect::<Vec<_>>(), [Ok(1), Ok(2), Ok(3)]);
    assert_eq!(progress.position(), 4);
}
