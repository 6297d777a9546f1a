//! The precise timer behind the route latencies.
//!
//! tokio's timer wheel has a 1 ms resolution: it rounds every deadline up to the next
//! millisecond tick and its driver parks in whole milliseconds, so a 10.465 ms wait took
//! ~12.9 ms. This module owns the replacement: one dedicated OS thread per [`Timer`] holding a
//! min-heap of `(deadline, id)` (with the waiting requests' oneshot senders in a map beside it),
//! behind a `std::sync::Mutex` + `Condvar`. The thread waits with `Condvar::wait_timeout` until
//! shortly before the earliest deadline (a futex wait), spins (yielding) over the last 200 µs
//! within a CPU budget, fires every sender that is due and waits again; a registration that
//! becomes the earliest deadline wakes it. No sleeper is ever woken before its deadline.
//!
//! - Thousands of sleepers cost one heap entry, one map entry and one oneshot each.
//! - A sleeper dropped before its deadline (a client that disconnected) removes its entry at
//!   once; its heap slot is skipped when it comes due, and the heap is compacted when such
//!   stale slots pile up, so nothing accumulates.
//! - Dropping the [`Timer`] (or [`Timer::shutdown`]) stops and joins the thread; sleepers still
//!   waiting then return early, and later ones return at once.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Stale heap slots (of cancelled sleepers) tolerated beyond the live ones before compacting.
const STALE_SLACK: usize = 1024;

/// How long before a deadline the thread stops sleeping and spins (yielding) instead: a futex
/// wait overshoots by its 50 µs timer slack plus the wake-up of an idle (virtual) CPU, about
/// 150 µs on the 2-core VM this was measured on, and spinning the last stretch removes that.
const SPIN: Duration = Duration::from_micros(200);
/// Spinning may use at most `SPIN_BUDGET` of each `SPIN_WINDOW` (20% of a core); past that,
/// as under a dense stream of deadlines, the thread only sleeps.
const SPIN_WINDOW: Duration = Duration::from_millis(10);
/// See [`SPIN_WINDOW`].
const SPIN_BUDGET: Duration = Duration::from_millis(2);

/// A precise timer: one OS thread that wakes async sleepers at their deadlines.
///
/// Dropping it stops and joins the thread.
#[derive(Debug)]
pub(crate) struct Timer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Deadlines, earliest first. A slot whose id is not in `pending` was cancelled (stale).
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The senders of sleepers still waiting, by id.
    pending: HashMap<u64, oneshot::Sender<()>>,
    next_id: u64,
    stopped: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, but never propagate poisoning anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Timer {
    /// Starts the timer thread (named `name`).
    pub(crate) fn new(name: &str) -> io::Result<Timer> {
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), wake: Condvar::new() });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new().name(name.to_owned()).spawn(move || run(&shared))?
        };
        Ok(Timer { shared, thread: Mutex::new(Some(thread)) })
    }

    /// Waits until `deadline` without blocking the async runtime. A deadline that has passed
    /// returns at once without touching the timer thread. Returns early if the timer is shut
    /// down meanwhile.
    pub(crate) async fn sleep_until(&self, deadline: Instant) {
        if deadline <= Instant::now() {
            return;
        }
        if let Some(mut sleeper) = self.register(deadline) {
            sleeper.wait().await;
        }
    }

    /// Waits `duration` (see [`Timer::sleep_until`]).
    pub(crate) async fn sleep(&self, duration: Duration) {
        if duration.is_zero() {
            return;
        }
        match Instant::now().checked_add(duration) {
            Some(deadline) => self.sleep_until(deadline).await,
            // Beyond the clock's range: wait for the shutdown.
            None => {
                if let Some(mut sleeper) = self.register_far_future() {
                    sleeper.wait().await;
                }
            }
        }
    }

    /// Registers a sleeper for `deadline` (even a past one); `None` once the timer is stopped.
    fn register(&self, deadline: Instant) -> Option<Sleeper> {
        self.register_at(Some(deadline))
    }

    /// Registers a sleeper that only the shutdown wakes.
    fn register_far_future(&self) -> Option<Sleeper> {
        self.register_at(None)
    }

    /// Registers a sleeper, on the heap when it has a deadline; `None` once the timer is stopped.
    fn register_at(&self, deadline: Option<Instant>) -> Option<Sleeper> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.shared.lock();
        if state.stopped {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.pending.insert(id, tx);
        let earliest = deadline.is_some_and(|deadline| {
            let earliest = state.heap.peek().is_none_or(|Reverse((first, _))| deadline < *first);
            state.heap.push(Reverse((deadline, id)));
            earliest
        });
        drop(state);
        if earliest {
            self.shared.wake.notify_one();
        }
        Some(Sleeper { shared: Arc::clone(&self.shared), id, rx, done: false })
    }

    /// Stops and joins the timer thread (idempotent): sleepers still waiting return early and
    /// later ones return at once. Dropping the timer does the same.
    pub(crate) fn shutdown(&self) {
        self.shared.lock().stopped = true;
        self.shared.wake.notify_all();
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::warn!("the mock API's timer thread panicked");
            }
        }
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = self.shared.lock();
        (state.heap.len(), state.pending.len())
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One registered wait; dropping it before it fired removes its entry.
struct Sleeper {
    shared: Arc<Shared>,
    id: u64,
    rx: oneshot::Receiver<()>,
    done: bool,
}

impl Sleeper {
    async fn wait(&mut self) {
        // `Err` means the timer stopped (the sender was dropped): return early.
        let _ = (&mut self.rx).await;
        self.done = true;
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.shared.lock();
        if state.pending.remove(&self.id).is_some() {
            let State { heap, pending, .. } = &mut *state;
            if heap.len() > pending.len().saturating_mul(2).saturating_add(STALE_SLACK) {
                heap.retain(|Reverse((_, id))| pending.contains_key(id));
            }
        }
    }
}

/// Caps the time the timer thread spends spinning (see [`SPIN_BUDGET`]).
struct SpinBudget {
    window_start: Instant,
    spent: Duration,
}

impl SpinBudget {
    fn allows(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window_start) >= SPIN_WINDOW {
            self.window_start = now;
            self.spent = Duration::ZERO;
        }
        self.spent < SPIN_BUDGET
    }
}

/// Body of the timer thread.
fn run(shared: &Shared) {
    let mut due = Vec::new();
    let mut budget = SpinBudget { window_start: Instant::now(), spent: Duration::ZERO };
    let mut state = shared.lock();
    while !state.stopped {
        let now = Instant::now();
        let mut next = None;
        while let Some(&Reverse((deadline, id))) = state.heap.peek() {
            if deadline > now {
                next = Some(deadline);
                break;
            }
            state.heap.pop();
            if let Some(tx) = state.pending.remove(&id) {
                due.push(tx);
            }
        }
        if !due.is_empty() {
            // Wake the sleepers without holding the lock, then look again.
            drop(state);
            for tx in due.drain(..) {
                // A dropped receiver (a cancelled request) is fine.
                let _ = tx.send(());
            }
            state = shared.lock();
            continue;
        }
        let Some(deadline) = next else {
            state = shared.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        let left = deadline.saturating_duration_since(now);
        let spin = budget.allows(now);
        if spin && left <= SPIN {
            // The last stretch: yield without the lock (so registrations and cancellations go
            // on), then look again.
            drop(state);
            std::thread::yield_now();
            budget.spent += now.elapsed();
            state = shared.lock();
            continue;
        }
        let timeout = if spin { left - SPIN } else { left };
        state = shared.wake.wait_timeout(state, timeout).unwrap_or_else(PoisonError::into_inner).0;
    }
    // Dropping the senders wakes every remaining sleeper.
    let pending = std::mem::take(&mut state.pending);
    state.heap.clear();
    drop(state);
    drop(pending);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Guard against hangs only (not a timing assertion).
    const HANG_GUARD: Duration = Duration::from_secs(60);

    fn runtime() -> tokio::runtime::Runtime {
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => panic!("runtime: {error}"),
        }
    }

    fn timer() -> Timer {
        Timer::new("test-timer").unwrap_or_else(|e| panic!("timer thread: {e}"))
    }

    #[test]
    fn a_later_registered_earlier_deadline_fires_first() {
        let timer = timer();
        let now = Instant::now();
        let late = timer.register(now + Duration::from_millis(300));
        let early = timer.register(now + Duration::from_millis(30));
        let (Some(mut late), Some(mut early)) = (late, early) else { panic!("timer stopped") };
        let order = runtime().block_on(async {
            let order = Arc::new(Mutex::new(Vec::new()));
            let record = |name: &'static str| {
                let order = Arc::clone(&order);
                move || order.lock().unwrap_or_else(PoisonError::into_inner).push(name)
            };
            let (record_late, record_early) = (record("late"), record("early"));
            let both = async {
                tokio::join!(
                    async {
                        late.wait().await;
                        record_late();
                    },
                    async {
                        early.wait().await;
                        record_early();
                    },
                )
            };
            assert!(tokio::time::timeout(HANG_GUARD, both).await.is_ok(), "sleepers hung");
            order.lock().unwrap_or_else(PoisonError::into_inner).clone()
        });
        assert_eq!(order, ["early", "late"]);
        assert!(Instant::now() >= now + Duration::from_millis(300), "no sleeper returns early");
        assert_eq!(timer.counts(), (0, 0));
    }

    #[test]
    fn many_sleepers_all_fire_after_their_deadlines() {
        let timer = Arc::new(timer());
        let fired = Arc::new(AtomicUsize::new(0));
        let sleepers = 3000;
        runtime().block_on(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..sleepers)
                .map(|i| {
                    let (timer, fired) = (Arc::clone(&timer), Arc::clone(&fired));
                    // Deadlines in scrambled order, 0..=50 ms.
                    let deadline = start + Duration::from_micros((i * 7919 % 50_001) as u64);
                    tokio::spawn(async move {
                        timer.sleep_until(deadline).await;
                        assert!(Instant::now() >= deadline, "woke before the deadline");
                        fired.fetch_add(1, Ordering::Relaxed);
                    })
                })
                .collect();
            for task in tasks {
                match tokio::time::timeout(HANG_GUARD, task).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => panic!("sleeper failed: {error}"),
                    Err(_) => panic!("sleeper hung"),
                }
            }
        });
        assert_eq!(fired.load(Ordering::Relaxed), sleepers);
        assert_eq!(timer.counts(), (0, 0));
    }

    #[test]
    fn zero_and_past_deadlines_fire_at_once() {
        let timer = timer();
        runtime().block_on(async {
            let past = Instant::now().checked_sub(Duration::from_secs(1)).unwrap_or_else(Instant::now);
            let quick = async {
                timer.sleep(Duration::ZERO).await;
                timer.sleep_until(past).await;
                timer.sleep_until(Instant::now()).await;
                // Through the timer thread too, bypassing the fast path.
                if let Some(mut sleeper) = timer.register(past) {
                    sleeper.wait().await;
                }
            };
            assert!(tokio::time::timeout(HANG_GUARD, quick).await.is_ok(), "past deadline hung");
        });
        assert_eq!(timer.counts(), (0, 0));
    }

    #[test]
    fn cancelled_sleepers_leave_no_entries() {
        let timer = timer();
        let far = Instant::now() + Duration::from_secs(3600);
        let sleepers: Vec<_> = (0..5000).filter_map(|_| timer.register(far)).collect();
        assert_eq!(timer.counts(), (5000, 5000));
        drop(sleepers);
        let (heap, pending) = timer.counts();
        assert_eq!(pending, 0);
        assert!(heap <= STALE_SLACK, "stale heap slots were compacted, {heap} left");
        // A sleeper dropped mid-wait (a disconnected client) is removed too.
        runtime().block_on(async {
            let wait = tokio::time::timeout(Duration::from_millis(20), timer.sleep_until(far));
            assert!(wait.await.is_err(), "an hour-long sleep cannot finish");
        });
        assert_eq!(timer.counts().1, 0);
    }

    #[test]
    fn shutdown_with_pending_sleepers_neither_hangs_nor_panics() {
        let timer = Arc::new(timer());
        let runtime = runtime();
        let far = Instant::now() + Duration::from_secs(3600);
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let timer = Arc::clone(&timer);
                runtime.spawn(async move { timer.sleep_until(far).await })
            })
            .collect();
        let waiter = {
            let timer = Arc::clone(&timer);
            runtime.spawn(async move { timer.sleep(Duration::MAX).await })
        };
        // Wait until all of them are registered.
        let guard = Instant::now() + HANG_GUARD;
        while timer.counts().1 < 101 {
            assert!(Instant::now() < guard, "sleepers never registered");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(timer.counts(), (100, 101), "the far-future sleeper has no heap slot");
        // The tasks still hold the timer, as requests in flight hold the server's state.
        timer.shutdown();
        assert!(timer.thread.lock().unwrap_or_else(PoisonError::into_inner).is_none(), "joined");
        runtime.block_on(async {
            for task in tasks.into_iter().chain([waiter]) {
                match tokio::time::timeout(HANG_GUARD, task).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => panic!("sleeper failed: {error}"),
                    Err(_) => panic!("sleeper hung after shutdown"),
                }
            }
        });
        // Registrations after the stop return at once.
        runtime.block_on(timer.sleep_until(far));
        timer.shutdown();
        assert_eq!(timer.counts(), (0, 0));

        // Dropping the timer itself with a registered sleeper.
        let timer = self::timer();
        let sleeper = timer.register(far);
        drop(timer);
        if let Some(mut sleeper) = sleeper {
            runtime.block_on(async {
                assert!(tokio::time::timeout(HANG_GUARD, sleeper.wait()).await.is_ok());
            });
        }
    }
}
