//! Sleeps shorter than tokio's timer tick, for futures waiting for a rate-limit permit.
//!
//! tokio's timer wheel has a resolution of one millisecond: a `sleep` ends on the first tick
//! at or after its deadline, up to a millisecond late. A limit of 1,000 requests a second
//! hands out a permit a millisecond, so a future that sleeps until its permit on tokio's timer
//! often wakes a whole permit late, and once the limit's burst has absorbed that, the late
//! permit is lost: 32 futures lined up for a 1,000/s limit (burst 2) took 975–987 permits a
//! second on tokio's timer, and 1,002 on this one.
//!
//! This module owns one thread a process that wakes futures at their deadlines to the
//! precision of a condition variable's timed wait (tens of microseconds). Waits of more than
//! [`COARSE_ABOVE`] (a server's `Retry-After` pause, a slow limit) sleep on tokio's timer for
//! all but their last millisecond, so the thread only ever sees short waits.
//!
//! The thread is started on first use and then waits on its condition variable whenever no
//! future waits; it is the same for every executor of the process. A process forked from one
//! that had it starts its own (the thread is not copied by `fork`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Waits longer than this sleep on tokio's timer first, for all but [`TICK`] of them.
pub(crate) const COARSE_ABOVE: Duration = Duration::from_millis(5);

/// tokio's timer resolution.
const TICK: Duration = Duration::from_millis(1);

/// Sleeps for `wait`, to within tens of microseconds however short it is.
pub(crate) async fn sleep(wait: Duration) {
    let deadline = Instant::now() + wait;
    if wait > COARSE_ABOVE {
        tokio::time::sleep(wait - TICK).await;
    }
    if Instant::now() >= deadline {
        return;
    }
    let (wake, woken) = oneshot::channel();
    if timer().push(deadline, wake) {
        // The timer thread never ends, and sends before it drops the sender.
        let _ = woken.await;
    } else {
        // No timer thread could be started: tokio's timer, a tick late, is better than none.
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// One future's wake-up: ordered by deadline, then by arrival.
struct Entry {
    deadline: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    entries: BinaryHeap<Reverse<Entry>>,
    next_seq: u64,
    /// The process whose thread serves this queue: a forked child has none.
    served_by: Option<u32>,
}

struct Timer {
    queue: Mutex<Queue>,
    /// Signalled when an entry is pushed that is earlier than every other.
    earlier: Condvar,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<Timer> = OnceLock::new();
    TIMER.get_or_init(|| Timer { queue: Mutex::default(), earlier: Condvar::new() })
}

impl Timer {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue is consistent at every unlock: nothing in it can panic half-way.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `wake` for `deadline`; `false` when there is no timer thread to send it.
    fn push(&'static self, deadline: Instant, wake: oneshot::Sender<()>) -> bool {
        let mut queue = self.lock();
        if queue.served_by != Some(std::process::id()) {
            let started =
                std::thread::Builder::new().name("fanout-async-timer".into()).spawn(move || self.serve());
            if started.is_err() {
                return false;
            }
            queue.served_by = Some(std::process::id());
        }
        let seq = queue.next_seq;
        queue.next_seq += 1;
        let earliest = queue.entries.peek().is_none_or(|Reverse(first)| deadline < first.deadline);
        queue.entries.push(Reverse(Entry { deadline, seq, wake }));
        drop(queue);
        if earliest {
            self.earlier.notify_one();
        }
        true
    }

    /// The timer thread: wakes every entry whose deadline has come, then waits for the next
    /// deadline or an earlier entry.
    fn serve(&self) {
        let mut queue = self.lock();
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            while queue.entries.peek().is_some_and(|Reverse(first)| first.deadline <= now) {
                due.extend(queue.entries.pop().map(|Reverse(entry)| entry.wake));
            }
            if !due.is_empty() {
                // Woken futures push again at once: not while this thread holds the queue.
                drop(queue);
                for wake in due {
                    // A future dropped while it waited has dropped its receiver: nothing to do.
                    let _ = wake.send(());
                }
                queue = self.lock();
                continue;
            }
            queue = match queue.entries.peek() {
                Some(Reverse(first)) => {
                    let wait = first.deadline - now;
                    self.earlier.wait_timeout(queue, wait).unwrap_or_else(PoisonError::into_inner).0
                }
                None => self.earlier.wait(queue).unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    #[test]
    fn a_sleep_lasts_at_least_its_wait() {
        runtime().block_on(async {
            for wait in [0, 50, 300, 900, 2_500, 7_000] {
                let wait = Duration::from_micros(wait);
                let started = Instant::now();
                sleep(wait).await;
                assert!(started.elapsed() >= wait, "{wait:?} ended after {:?}", started.elapsed());
            }
        });
    }

    #[test]
    fn concurrent_sleeps_end_in_deadline_order() {
        runtime().block_on(async {
            let ended = std::sync::Arc::new(Mutex::new(Vec::new()));
            let tasks: Vec<_> = [900u64, 300, 600, 100]
                .into_iter()
                .map(|micros| {
                    let ended = std::sync::Arc::clone(&ended);
                    tokio::spawn(async move {
                        sleep(Duration::from_micros(micros * 3)).await;
                        ended.lock().unwrap().push(micros);
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            assert_eq!(*ended.lock().unwrap(), [100, 300, 600, 900]);
        });
    }

    #[test]
    fn a_dropped_sleep_leaves_the_timer_serving_the_others() {
        runtime().block_on(async {
            let abandoned = tokio::spawn(sleep(Duration::from_millis(2)));
            abandoned.abort();
            let started = Instant::now();
            sleep(Duration::from_millis(3)).await;
            assert!(started.elapsed() >= Duration::from_millis(3));
        });
    }
}
