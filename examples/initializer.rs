//! `ProcessPoolBuilder::initializer`: per-worker state, set up once in each worker process.
//!
//! A worker process is a fresh copy of the program, so it sees none of what `main` set up.
//! The initializer runs once in each worker before its first job; here it fills a `OnceLock`
//! (where a real program would build an HTTP client or open a database connection), and
//! every job reads it. The output says which worker pid served which input, and that each
//! worker ran its initializer exactly once. `cargo run --example initializer`

use std::error::Error;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use fanout::{Executor, ProcessPool};

/// What each worker sets up once: a stand-in for a client with its connections.
struct Client {
    name: String,
}

static CLIENT: OnceLock<Client> = OnceLock::new();
static INITIALIZED: AtomicU32 = AtomicU32::new(0);

/// Runs once in every worker process, before its first job.
fn set_up_worker() {
    INITIALIZED.fetch_add(1, Ordering::Relaxed);
    let _ = CLIENT.set(Client { name: format!("client of worker {}", std::process::id()) });
}

/// The job: uses the worker's client; returns who served it and how often it was set up.
fn handle(x: u64) -> (u32, String, u32) {
    let client = CLIENT.get().expect("the initializer ran before the first job");
    (std::process::id(), format!("{} handled {x}", client.name), INITIALIZED.load(Ordering::Relaxed))
}

fn main() -> Result<(), Box<dyn Error>> {
    // The main process never runs the initializer: its `OnceLock` stays empty.
    assert!(CLIENT.get().is_none());
    let pool = ProcessPool::builder().workers(3).initializer(set_up_worker).build()?;
    for (x, result) in pool.map(handle, 0..9).into_iter().enumerate() {
        let (pid, message, initialized) = result?;
        println!("input {x}: pid {pid}: {message} (initializer ran {initialized}x in this worker)");
    }
    println!("workers: {:?}; main process {}", pool.worker_pids(), std::process::id());
    Ok(())
}
