//! [`Progress`]: the latch of an in-place map, the one piece of hand-rolled synchronization
//! between its caller and its range tasks.
//!
//! Workers count the ranges they finished and unpark the caller when the count it waits for is
//! reached; the caller parks until then, and before the map's state goes away it waits until
//! every task has also *released* the state (made its last access to it). Under `--cfg loom`
//! the atomics, `park`/`unpark` and the spin hint are loom's, so that the models at the bottom
//! of this file explore the interleavings of this code (plus the fence loom needs to honour
//! `SeqCst`, see `seq_cst_store_load`).

#[cfg(loom)]
use loom::hint::spin_loop;
#[cfg(loom)]
use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(loom)]
use loom::thread::{self, Thread};
#[cfg(not(loom))]
use std::hint::spin_loop;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::thread::{self, Thread};

/// Orders a `SeqCst` write before a `SeqCst` read of another atomic, the store-buffering pair
/// that the latch's wake-up rests on (see `Progress::finish_one`). Outside loom this is
/// nothing: the two accesses' own `SeqCst` ordering gives that guarantee. Loom models `SeqCst`
/// accesses as `AcqRel` only (tokio-rs/loom#180; loom 0.7's `seq_cst` is a no-op) and so finds
/// the outcome `SeqCst` rules out, both sides reading the other's old value, as a lost wake-up;
/// a `SeqCst` fence, which loom does model, gives it the same guarantee.
#[inline(always)]
fn seq_cst_store_load() {
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// Counts finished ranges and wakes the caller when the count it waits for is reached.
pub(crate) struct Progress {
    done: AtomicUsize,
    /// Ranges whose task will never touch the map's state again; the state may go away only
    /// once every sent range is released (`done` alone is not enough: the task still reads
    /// `wake_at` and `caller` after counting itself done).
    released: AtomicUsize,
    /// The count the caller is parked for; `usize::MAX` when it is not waiting.
    wake_at: AtomicUsize,
    caller: Thread,
    /// Stands for the map's state in the loom models: a task reads it where it makes its last
    /// access to the state, and a model's caller writes it (frees the state) once
    /// `wait_released` returns, so that loom reports a task that still uses the state then.
    #[cfg(all(test, loom))]
    state: loom::cell::UnsafeCell<()>,
}

impl Progress {
    /// A latch for the calling thread: the one that waits (and may park) in
    /// [`wait_for`](Self::wait_for).
    pub(crate) fn for_current_thread() -> Self {
        Self {
            done: AtomicUsize::new(0),
            released: AtomicUsize::new(0),
            wake_at: AtomicUsize::new(usize::MAX),
            caller: thread::current(),
            #[cfg(all(test, loom))]
            state: loom::cell::UnsafeCell::new(()),
        }
    }

    /// How many ranges are done.
    pub(crate) fn done(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    /// Counts one range done (its results written), wakes the caller if it waits for this
    /// count, then releases the range.
    pub(crate) fn finish_one(&self) {
        // `SeqCst` on both sides: either the caller sees this count before it parks, or this
        // sees its `wake_at` and unparks it.
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        seq_cst_store_load();
        if done >= self.wake_at.load(Ordering::SeqCst) {
            self.caller.unpark();
        }
        #[cfg(all(test, loom))]
        self.state.with(|_| ());
        // The last access to the map's state by this task.
        self.released.fetch_add(1, Ordering::Release);
    }

    /// Blocks the caller until `target` ranges are done.
    pub(crate) fn wait_for(&self, target: usize) {
        while self.done.load(Ordering::SeqCst) < target {
            self.wake_at.store(target, Ordering::SeqCst);
            seq_cst_store_load();
            if self.done.load(Ordering::SeqCst) >= target {
                break;
            }
            thread::park();
        }
        self.wake_at.store(usize::MAX, Ordering::SeqCst);
    }

    /// Waits until `count` ranges are released: a task that counted itself done is between
    /// two atomic operations, so this only ever waits for a few instructions (or a preempted
    /// worker's next time slice).
    pub(crate) fn wait_released(&self, count: usize) {
        while self.released.load(Ordering::Acquire) < count {
            spin_loop();
            thread::yield_now();
        }
    }
}

/// Loom models of the latch: run with
/// `RUSTFLAGS="--cfg loom" cargo test --release -p fanout-thread --lib loom_models`.
#[cfg(all(test, loom))]
mod loom_models {
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::sync::atomic::Ordering;
    use loom::thread;

    use super::Progress;

    /// A map's state as the models see it: the latch and one result slot per worker.
    struct Map {
        progress: Progress,
        slots: [UnsafeCell<u64>; 2],
    }

    impl Map {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                progress: Progress::for_current_thread(),
                slots: [UnsafeCell::new(0), UnsafeCell::new(0)],
            })
        }

        /// A worker's range: writes its result, then counts itself done.
        fn run_range(&self, slot: usize) {
            // SAFETY: slot `slot` belongs to this worker alone until it is counted done; loom
            // checks that the caller's reads happen after this write.
            self.slots[slot].with_mut(|result| unsafe { *result = 10 + slot as u64 });
            self.progress.finish_one();
        }

        /// The caller's reads of every result, then the end of the state's life.
        fn take_results(&self, workers: usize) -> Vec<u64> {
            let mut results = Vec::new();
            for slot in &self.slots[..workers] {
                // SAFETY: only the workers write the slots, before they count themselves done;
                // loom reports this read as a race if `wait_for` returned too early.
                results.push(slot.with(|result| unsafe { *result }));
            }
            self.progress.wait_released(workers);
            // The state goes away: loom reports a race with any task that still touches it.
            self.progress.state.with_mut(|_| ());
            results
        }
    }

    /// Explores `f` with at most `preemptions` preemptions per execution (unless
    /// `LOOM_MAX_PREEMPTIONS` says otherwise): three threads that spin and park have too many
    /// interleavings to explore them all in CI's time, and bugs need few preemptions.
    fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = builder.preemption_bound.or(Some(preemptions));
        builder.check(f);
    }

    fn spawn_workers(map: &Arc<Map>, workers: usize) -> Vec<thread::JoinHandle<()>> {
        (0..workers)
            .map(|slot| {
                let map = Arc::clone(map);
                thread::spawn(move || map.run_range(slot))
            })
            .collect()
    }

    /// Two workers finish while the caller waits for both: the caller never returns before
    /// both results are written, never parks forever (loom reports a deadlock), and no task
    /// touches the state after `wait_released`.
    #[test]
    fn caller_waits_for_every_range() {
        model(3, || {
            let map = Map::new();
            let workers = spawn_workers(&map, 2);
            map.progress.wait_for(2);
            assert_eq!(map.take_results(2), [10, 11]);
            for worker in workers {
                worker.join().unwrap();
            }
        });
    }

    /// The in-place map's window: the caller first waits for part of the ranges, then for all
    /// of them, with the unpark token of the first wait possibly still pending.
    #[test]
    fn caller_waits_twice() {
        model(3, || {
            let map = Map::new();
            let workers = spawn_workers(&map, 2);
            map.progress.wait_for(1);
            assert!(map.progress.done() >= 1);
            map.progress.wait_for(2);
            assert_eq!(map.take_results(2), [10, 11]);
            for worker in workers {
                worker.join().unwrap();
            }
        });
    }

    /// The caller is in `wait_for` (it published what it waits for) before the worker counts
    /// its range: the worker must unpark it.
    #[test]
    fn caller_arrives_first() {
        loom::model(|| {
            let map = Map::new();
            let worker = {
                let map = Arc::clone(&map);
                thread::spawn(move || {
                    while map.progress.wake_at.load(Ordering::SeqCst) != 1 {
                        thread::yield_now();
                    }
                    map.run_range(0);
                })
            };
            map.progress.wait_for(1);
            assert_eq!(map.take_results(1), [10]);
            worker.join().unwrap();
        });
    }

    /// The workers are done before the caller arrives: `wait_for` and `wait_released` return
    /// without parking, and leave the latch idle.
    #[test]
    fn caller_arrives_last() {
        loom::model(|| {
            let map = Map::new();
            for worker in spawn_workers(&map, 2) {
                worker.join().unwrap();
            }
            map.progress.wait_for(2);
            assert_eq!(map.progress.wake_at.load(Ordering::SeqCst), usize::MAX);
            assert_eq!(map.take_results(2), [10, 11]);
        });
    }
}
