//! `ProcessPoolBuilder::retry_lost`: a job whose worker dies runs again on a fresh worker.
//!
//! The job kills its own worker process (`std::process::exit(3)`) the first time it sees
//! inputs 3 and 7, leaving a marker file so that the second attempt succeeds. With
//! `retry_lost(2)` every result arrives; without retries those two inputs report
//! `JobError::WorkerLost` with how the worker ended. `cargo run --example retry_lost`

use std::error::Error;
use std::path::PathBuf;

use fanout::{Executor, JobError, ProcessPool};

/// Crashes the worker the first time it sees 3 or 7 in `dir`, then succeeds.
fn crash_once((dir, x): (PathBuf, u64)) -> u64 {
    let marker = dir.join(format!("seen-{x}"));
    if (x == 3 || x == 7) && std::fs::File::create_new(&marker).is_ok() {
        std::process::exit(3); // as a segfault or the OOM killer would, mid-job
    }
    x * 10
}

/// A fresh marker directory, so that each pool's jobs crash once again.
fn marker_dir(name: &str) -> Result<PathBuf, std::io::Error> {
    let dir = std::env::temp_dir().join(format!("fanout-retry-lost-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = marker_dir("retried")?;
    let pool = ProcessPool::builder().workers(4).retry_lost(2).build()?;
    let results = pool.map(crash_once, (0..10).map(|x| (dir.clone(), x)));
    let values: Vec<u64> = results.into_iter().collect::<Result<_, _>>()?;
    println!("retry_lost(2): all {} results arrived: {values:?}", values.len());
    println!("retry_lost(2): {} task(s) ran again on a new worker", pool.retried_tasks());
    std::fs::remove_dir_all(&dir)?;

    let dir = marker_dir("lost")?;
    let pool = ProcessPool::new(4)?; // retry_lost(0), the default
    for (x, result) in pool.map(crash_once, (0..10).map(|x| (dir.clone(), x))).into_iter().enumerate() {
        match result {
            Ok(value) => println!("no retries:    {x} -> {value}"),
            Err(JobError::WorkerLost { exit }) => println!("no retries:    {x} -> worker lost, it {exit}"),
            Err(error) => println!("no retries:    {x} -> {error}"),
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
