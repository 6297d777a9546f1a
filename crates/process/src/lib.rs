//! [`ProcessPool`]: fanout's forking process pool, with jobs serialized over ipc-channel.
//!
//! Workers are forked by the program's *fork server*: this same executable, run again with a
//! marker argument that a constructor recognizes before `main`. The first pool of a program
//! starts it; every pool of the process (and every pool built inside one of its workers) is
//! served by it while it runs, each with its own workers, channels and shutdown, and the last
//! pool's going stops it. The fork server is single-threaded and small; it forks the workers,
//! reaps them and reports how they ended. A pool starts one worker when it is built and the
//! others as jobs queue for them, up to its size, so that its first jobs run while the rest
//! start. Jobs travel to the workers as the address of their code (an offset within the
//! executable) plus their serialized state and inputs; results come back serialized. See
//! `ARCHITECTURE.md` for the protocol and the fork-safety argument.
//!
//! What this means for a program:
//! - Jobs follow fanout's rules (a `fn` item, a non-capturing closure, or a `Stateful` serde
//!   struct; serde inputs and outputs), so a job that would need pickling in Python does not
//!   compile here.
//! - Workers do not see what `main` did before the pool started: they are copies of a fresh
//!   start of the program. Pass what a job needs in its input or its state, or set it up in an
//!   [`initializer`](ProcessPoolBuilder::initializer).
//! - The caller may run any threads (tokio, rayon, its own): no worker is forked from it.
//! - Job code must live in the main executable, not in a library loaded with `dlopen`.
//! - A worker that dies (a signal, `exit` in a job) fails its job with `JobError::WorkerLost`
//!   and is replaced; the other jobs go on. When the pool's process dies, its workers follow
//!   (a pool built in a worker: when that worker dies); when the program dies, the fork server
//!   and every worker do.
//! - A pool built inside a job on a worker costs forks, not a new fork server: the worker
//!   asks the program's server, so the workers of nested pools are forked from the same small,
//!   single-threaded process (never from the worker, which may run threads). Such a pool
//!   also reuses workers by default: at its drop its idle workers wait in the fork server as
//!   spares, and the next nested pool (the next job's) takes them instead of forking; see
//!   [`reuse_workers`](ProcessPoolBuilder::reuse_workers) for what a reused worker keeps.
//! - A job that never returns cannot hold a worker forever when the pool has a time limit
//!   ([`job_timeout`](ProcessPoolBuilder::job_timeout), counted from when the job starts on its
//!   worker): it fails with `JobError::Expired`, its worker is SIGKILLed, reaped and replaced,
//!   and in a chunk of several inputs only that input fails. The job can watch its deadline
//!   with `fanout_core::deadline::expired()` and stop itself first.
//! - `shutdown(Shutdown::Kill)` (Python's `Pool.terminate()`) returns at once whatever the jobs
//!   do: queued jobs fail with `JobError::Cancelled`, running ones with `JobError::Killed`, and
//!   every worker is SIGKILLed and reaped before it returns. Dropping the pool (or
//!   `Shutdown::Finish`) waits for every job instead; with a time limit that wait is bounded.
//!
//! ```
//! use std::time::Duration;
//! use fanout_core::{Executor, JobError};
//! use fanout_process::ProcessPool;
//!
//! fn fetch(id: u64) -> u64 {
//!     if id == 2 {
//!         std::thread::sleep(Duration::from_secs(3600)); // a request without a timeout
//!     }
//!     id
//! }
//!
//! let limit = Duration::from_secs(1);
//! let pool = ProcessPool::builder().workers(2).chunk_size(4).job_timeout(limit).build()?;
//! let results = pool.map(fetch, 0..4);
//! assert_eq!(results, [Ok(0), Ok(1), Err(JobError::Expired { limit }), Ok(3)]);
//! assert_eq!(pool.progress().expired, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ```
//! use fanout_core::Executor;
//! use fanout_process::ProcessPool;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let pool = ProcessPool::new(2)?;
//! let squares: Vec<u64> = pool.map(square, 0..10).into_iter().collect::<Result<_, _>>()?;
//! assert_eq!(squares[9], 81);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A capturing closure does not compile (Rust's "Can't pickle"):
//!
//! ```compile_fail,E0080
//! use fanout_core::Executor;
//! use fanout_process::ProcessPool;
//!
//! let base = String::from("https://api.example/items/");
//! let pool = ProcessPool::new(2).unwrap();
//! // error: this job captures its environment ... move the captured values into the job's input
//! let urls = pool.map(move |id: u64| format!("{base}{id}"), 0..10);
//! ```
//!
//! Nor does an input that is not serde:
//!
//! ```compile_fail,E0277
//! use fanout_core::Executor;
//! use fanout_process::ProcessPool;
//!
//! struct Connection;
//! fn use_connection(_connection: Connection) -> u64 { 0 }
//!
//! let pool = ProcessPool::new(2).unwrap();
//! // error: `Connection` cannot travel to a worker: job inputs and outputs must be serde types
//! pool.map(use_connection, [Connection]);
//! ```

mod dispatcher;
mod permits;
mod pool;
mod protocol;
mod server;
mod worker;

pub use pool::{ProcessPool, ProcessPoolBuilder};
