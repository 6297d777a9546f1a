//! Threads start on demand: one at build, more when tasks wait, never more than `workers`.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use fanout_core::Executor;
use fanout_thread::ThreadPool;

/// Jobs that return only once `n` of them run at the same time (or after a generous timeout,
/// reporting `false`): they all succeed only if the pool started a thread for each.
struct Rendezvous {
    arrived: Mutex<usize>,
    all_here: Condvar,
    n: usize,
}

impl Rendezvous {
    fn new(n: usize) -> Self {
        Self { arrived: Mutex::new(0), all_here: Condvar::new(), n }
    }

    fn meet(&self) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.all_here.notify_all();
        let (arrived, timeout) = self
            .all_here
            .wait_timeout_while(arrived, Duration::from_secs(30), |arrived| *arrived < self.n)
            .unwrap();
        drop(arrived);
        !timeout.timed_out()
    }
}

#[test]
fn a_new_pool_starts_one_thread() {
    let pool = ThreadPool::new(64).unwrap();
    assert_eq!(pool.threads_started(), 1);
    assert_eq!(pool.workers(), 64);
}

#[test]
fn blocked_jobs_get_a_thread_each() {
    let pool = ThreadPool::new(16).unwrap();
    let rendezvous = Rendezvous::new(16);
    let met = pool.scoped_map(|_: usize| rendezvous.meet(), 0..16);
    assert!(met.iter().all(|met| *met == Ok(true)), "{met:?}");
    assert_eq!(pool.threads_started(), 16);
}

#[test]
fn blocked_submissions_get_a_thread_each() {
    // `submit` takes a stateless job, so the rendezvous is a static.
    static RENDEZVOUS: Mutex<usize> = Mutex::new(0);
    static ALL_HERE: Condvar = Condvar::new();
    fn meet(n: usize) -> bool {
        let mut arrived = RENDEZVOUS.lock().unwrap();
        *arrived += 1;
        ALL_HERE.notify_all();
        let (_arrived, timeout) =
            ALL_HERE.wait_timeout_while(arrived, Duration::from_secs(30), |arrived| *arrived < n).unwrap();
        !timeout.timed_out()
    }
    let pool = ThreadPool::new(8).unwrap();
    let handles: Vec<_> = (0..8).map(|_| pool.submit(meet, 8)).collect();
    for handle in handles {
        assert_eq!(handle.wait(), Ok(true));
    }
}

#[test]
fn never_more_threads_than_workers() {
    let pool = ThreadPool::new(3).unwrap();
    let rendezvous = Rendezvous::new(3);
    let met = pool.scoped_map(|_: usize| rendezvous.meet(), 0..3);
    assert!(met.iter().all(|met| *met == Ok(true)));
    assert_eq!(pool.map(|x: u64| x, 0..1000).len(), 1000);
    assert_eq!(pool.threads_started(), 3);
}
