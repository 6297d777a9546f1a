//! Stuck jobs never hang a program: a job time limit, `Shutdown::Kill`, and progress.
//!
//! Input 4 stands for an HTTP call without a timeout: it never returns on its own. With
//! `job_timeout`, every executor stops it at its limit (a process worker is SIGKILLed and
//! replaced, a thread is abandoned and replaced, a future is dropped) and reports
//! `JobError::Expired` for that input alone; `Shutdown::Kill` stops a pool at once, whatever its
//! jobs do. `cargo run --example stuck_jobs`

use std::error::Error;
use std::time::{Duration, Instant};

use fanout::{AnyExecutor, AsyncExecutor, Executor, JobError, ProcessPool, Shutdown, ThreadPool, deadline};

/// Sleeps "forever" on input 4; the others take 10 ms.
fn fetch(id: u64) -> u64 {
    let pause = if id == 4 { Duration::from_secs(3_600) } else { Duration::from_millis(10) };
    // A cooperative job would poll `deadline::expired()` between its steps and return early;
    // this one does not, to show that the limit holds anyway.
    std::thread::sleep(pause);
    id * 100
}

/// Stops as soon as it is told to: a job that polls its deadline.
fn polite(id: u64) -> u64 {
    while !deadline::expired() {
        std::thread::sleep(Duration::from_millis(5));
    }
    id
}

fn main() -> Result<(), Box<dyn Error>> {
    let limit = Duration::from_millis(300);
    let executors: [AnyExecutor; 3] = [
        ThreadPool::builder().workers(4).job_timeout(limit).build()?.into(),
        ProcessPool::builder().workers(4).chunk_size(4).job_timeout(limit).build()?.into(),
        AsyncExecutor::builder().workers(4).job_timeout(limit).build()?.into(),
    ];
    for executor in executors {
        let started = Instant::now();
        let results = executor.map(fetch, 0..8);
        let expired: Vec<usize> =
            (0..results.len()).filter(|&i| matches!(results[i], Err(JobError::Expired { .. }))).collect();
        assert_eq!(expired, [4]);
        assert!(results.iter().enumerate().all(|(i, r)| i == 4 || *r == Ok(i as u64 * 100)));
        println!(
            "{:>7}: 8 inputs in {:>4} ms, input 4 expired after {limit:?}; progress: {}",
            executor.name(),
            started.elapsed().as_millis(),
            executor.progress(),
        );
    }

    // `Kill` returns at once: the running job reports `Killed`, the queued ones `Cancelled`.
    let pool = ProcessPool::new(1)?;
    let running = pool.submit(fetch, 4);
    std::thread::sleep(Duration::from_millis(200)); // let it start
    let queued = pool.submit(fetch, 1);
    let killed_at = Instant::now();
    pool.shutdown(Shutdown::Kill);
    println!("process: Shutdown::Kill returned in {:?}", killed_at.elapsed());
    assert_eq!(running.wait(), Err(JobError::Killed));
    assert_eq!(queued.wait(), Err(JobError::Cancelled));

    // A thread cannot be killed: `Kill` abandons it, and a job that polls its deadline sees
    // `expired()` turn true and returns, so its thread leaves too.
    let pool = ThreadPool::new(1)?;
    let watch = pool.progress_watch();
    let handle = pool.submit(polite, 7);
    std::thread::sleep(Duration::from_millis(50));
    pool.shutdown(Shutdown::Kill);
    assert_eq!(handle.wait(), Err(JobError::Killed));
    println!("thread: after Kill, {}", watch.snapshot());
    Ok(())
}
