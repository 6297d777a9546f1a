//! `ProcessPoolBuilder::max_tasks_per_worker`: workers retire after a number of tasks.
//!
//! Python's `maxtasksperchild`: each worker is replaced by a fresh process after it ran this
//! many tasks (chunks; one input each by default), which bounds whatever job code leaks. The
//! job returns the pid of the worker that ran it; counting distinct pids shows the
//! replacements. `cargo run --example max_tasks_per_worker`

use std::collections::BTreeSet;
use std::error::Error;

use fanout::{Executor, ProcessPool};

/// The job: which worker process ran it.
fn worker_pid(_input: u64) -> u32 {
    std::process::id()
}

/// Runs 12 inputs on `pool` and prints how many distinct workers ran them.
fn distinct_workers(label: &str, pool: &ProcessPool) -> Result<usize, Box<dyn Error>> {
    let pids: Vec<u32> = pool.map(worker_pid, 0..12).into_iter().collect::<Result<_, _>>()?;
    let distinct: BTreeSet<u32> = pids.iter().copied().collect();
    println!("{label}: 12 inputs ran on {} distinct worker pids: {pids:?}", distinct.len());
    Ok(distinct.len())
}

fn main() -> Result<(), Box<dyn Error>> {
    let pool = ProcessPool::new(2)?;
    let kept = distinct_workers("no limit               ", &pool)?;

    let pool = ProcessPool::builder().workers(2).max_tasks_per_worker(2).build()?;
    let replaced = distinct_workers("max_tasks_per_worker(2)", &pool)?;
    println!("live workers now: {:?}", pool.worker_pids());

    assert!(kept <= 2, "two workers, never replaced");
    assert!(replaced >= 6, "each worker ran at most 2 tasks, so 12 inputs need at least 6");
    Ok(())
}
