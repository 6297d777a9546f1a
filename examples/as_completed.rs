//! `submit`, `as_completed`, and a handle's `try_wait`, `is_finished` and `cancel`.
//!
//! First, jobs of different durations are submitted to a `ThreadPool` and consumed with
//! `fanout::as_completed`, in the order they finish (Python's `concurrent.futures`). Then, on
//! a pool of one worker busy with a long job, a queued job is cancelled: it never runs and its
//! handle reports `JobError::Cancelled`. `cargo run --example as_completed`

use std::error::Error;
use std::thread::sleep;
use std::time::Duration;

use fanout::{Executor, JobError, ThreadPool, as_completed};

/// The job: sleeps for its input, in milliseconds, and returns it.
fn sleep_ms(ms: u64) -> u64 {
    sleep(Duration::from_millis(ms));
    ms
}

fn main() -> Result<(), Box<dyn Error>> {
    let pool = ThreadPool::new(4)?;
    let durations = [120, 30, 80, 10];
    let handles = durations.map(|ms| pool.submit(sleep_ms, ms));
    for (position, result) in as_completed(handles) {
        println!("as_completed: job {position} ({} ms) finished", result?);
    }

    let pool = ThreadPool::new(1)?;
    let mut long = pool.submit(sleep_ms, 200);
    let queued = pool.submit(sleep_ms, 10); // waits behind the long job: the only worker is busy
    println!("long job: try_wait = {:?}, is_finished = {}", long.try_wait(), long.is_finished());
    println!("queued job: cancel() = {}", queued.cancel());
    let cancelled = queued.wait();
    println!("queued job: wait() = {cancelled:?}");
    assert_eq!(cancelled, Err(JobError::Cancelled));
    println!("long job: wait_timeout = {:?}", long.wait_timeout(Duration::from_secs(2)));
    println!("long job: try_wait again = {:?}", long.try_wait());
    Ok(())
}
