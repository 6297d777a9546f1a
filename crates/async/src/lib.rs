//! [`AsyncExecutor`]: fanout's executor on a tokio runtime.
//!
//! It has two faces:
//!
//! - **Through the [`Executor`](fanout_core::Executor) trait** it runs the same blocking jobs as
//!   every other executor, on the runtime's blocking pool with at most `workers` running at
//!   once: asyncio's `run_in_executor`. Swapping `ThreadPool::new(8)` for
//!   `AsyncExecutor::new(8)` is the usual one-line change, and the conformance suite holds.
//! - **Natively** it runs futures: [`AsyncExecutor::map_async`] (input order) and
//!   [`AsyncExecutor::map_async_unordered`] (completion order) keep at most `workers` futures in
//!   flight on one thread (a current-thread runtime, like asyncio's event loop, by default; a
//!   multi-thread runtime on request), pulling inputs only as futures complete.
//!   [`map_concurrent`] bounds concurrency *inside* one future: the async form of a nested pool.
//!
//! Both keep fanout's error model: one `Result` per input, a panic is
//! [`JobError::Panicked`](fanout_core::JobError::Panicked), dropping the executor waits for what
//! is queued and running, `shutdown(Shutdown::CancelQueued)` makes what has not started
//! report [`JobError::Cancelled`](fanout_core::JobError::Cancelled), a job time limit stops
//! what runs too long, and `shutdown(Shutdown::Kill)` stops everything at once (see
//! [Stuck jobs](#stuck-jobs-time-limits-and-kill)).
//!
//! # Blocking and async, side by side
//!
//! The same fetch loop, blocking on a thread pool and async on this executor. The example
//! `examples/side_by_side.rs` runs both against the mock API with real HTTP clients (`ureq`,
//! `reqwest`) and lists what changed; here the request is a stand-in that waits 5 ms.
//!
//! ```
//! use std::time::Duration;
//! use fanout_async::AsyncExecutor;
//! use fanout_core::Executor;
//! use fanout_thread::ThreadPool;
//!
//! // Blocking: a job is a plain function; a waiting request holds its thread.
//! fn fetch(id: u64) -> u64 {
//!     std::thread::sleep(Duration::from_millis(5)); // ureq::get(..).call()
//!     id * 10
//! }
//! let pool = ThreadPool::new(32)?; // 32 threads: 32 requests at once
//! let blocking = pool.map(fetch, 1..=200);
//!
//! // Async: the job is an `async fn`; every wait is an `.await`, which frees the thread.
//! async fn fetch_async(id: u64) -> u64 {
//!     tokio::time::sleep(Duration::from_millis(5)).await; // client.get(..).send().await
//!     id * 10
//! }
//! let executor = AsyncExecutor::new(200)?; // 200 in flight, on one thread
//! let futures = executor.map_async(fetch_async, 1..=200);
//!
//! assert_eq!(blocking, futures); // same results, same order, same error type
//! # Ok::<(), fanout_core::BuildError>(())
//! ```
//!
//! What changed, and why the article's author found async "very hard to manage" when bolted
//! onto serial code:
//!
//! 1. **The client.** A blocking client per worker thread becomes one async client (one
//!    connection pool) for the whole run, cloned into every future.
//! 2. **The job.** A trait job must be rebuildable in another process (a `fn` or serde state);
//!    a future never leaves the process, so the closure given to `map_async` may capture
//!    anything, but each future must *own* what it uses (`async move`, clones), because it
//!    outlives the call that created it.
//! 3. **Every wait needs `.await`, all the way down.** Forget one, or call a blocking library,
//!    `std::thread::sleep` or a long computation inside a future, and nothing fails: the event
//!    loop's one thread is simply held, and every other future waits behind it (see below).
//!    Blocking code does not become async by being called from `async fn`.
//! 4. **The call.** `pool.map(job, ids)` becomes `executor.map_async(|id| fetch(..), ids)`:
//!    the same ordered `Vec<Result<_, JobError>>`.
//! 5. **What `workers` means.** Threads, each holding one request, become futures in flight on
//!    one thread: 200 requests waiting at once cost 200 small futures and sockets, not 200
//!    stacks.
//!
//! # Where async loses
//!
//! Measured with `fanout bench` on the project's 2-core machine, time scale 0.01:
//!
//! - **A blocking call inside a future** (`--scenario blocking-on-loop`: the `api-calls`
//!   requests made with the *blocking* client inside each future). With 200 futures in flight
//!   on the current-thread runtime, each request holds the loop until it is answered: 200
//!   requests take 2.2 s, the serial time (efficiency 0.005 against one 10.5 ms round). The
//!   test `a_blocking_call_inside_a_future_stalls_every_other_future` shows the same stall
//!   without timing it. The fix is to keep blocking work off the loop: through the trait
//!   (`executor.map(job, ..)`, the blocking pool) or with an async client.
//! - **CPU-bound work** (`--scenario cpu`). A future that computes is a blocking call too: on
//!   the event loop the jobs run one at a time on one core, whatever `workers` says. Through the
//!   trait, which the `cpu` scenario uses, they run on the blocking pool and the executor is a
//!   thread pool with one more hop per job: 32 jobs on 2 workers, efficiency 0.94 against the
//!   thread pool's 0.95. Async brings nothing to CPU work; it only waits well.
//! - **Every request's CPU runs on one thread.** Async removes the threads, not the work: on
//!   the current-thread runtime the loop alone opens every connection and writes and reads
//!   every request, so 200 requests on fresh connections leave over ~22 ms on this machine
//!   (the mock server, on the same 2 cores, needs about as much CPU per request again), not at
//!   once. `api-calls` with 200 in flight takes ~46 ms against an ideal of one 10.5 ms round
//!   (efficiency 0.23; 200 threads: 60 to 80 ms), in 12 MB of memory (200 threads: 18 MB,
//!   32 worker processes: 110 MB); with 32 in flight (7 rounds) the efficiency is 0.89. A
//!   multi-thread runtime ([`AsyncExecutorBuilder::multi_thread`]) spreads that CPU over the
//!   cores.
//!
//! # Stuck jobs: time limits and `Kill`
//!
//! A request without a timeout, a lock never released: a job that never ends must not hang the
//! program. [`AsyncExecutorBuilder::job_timeout`] sets a time limit per job, counted from when
//! the job starts (not while it waits for one of the `workers` slots):
//!
//! - **A future** still running at its limit is dropped, which stops it at its current
//!   `.await`: it reports [`JobError::Expired`](fanout_core::JobError::Expired) and its slot
//!   goes to the next future at once.
//! - **A blocking job** of the [`Executor`](fanout_core::Executor) trait cannot be stopped:
//!   Rust cannot kill a thread. At its limit it reports `Expired` at once, and its thread is
//!   *abandoned*: a fresh thread takes its place, so the executor keeps its `workers` capacity,
//!   while the abandoned one runs the job to its end, drops the late result and exits. The job
//!   sees [`deadline::expired`](fanout_core::deadline::expired) turn true and can return early
//!   (a job that polls it between steps gives its thread back soon after its limit).
//!   [`AsyncExecutor::abandoned_threads`] counts them, as does
//!   [`Progress::abandoned_threads`](fanout_core::Progress).
//!
//! [`Shutdown::Kill`](fanout_core::Shutdown::Kill) (Python's `Pool.terminate()`) returns at once
//! whatever the jobs do: what has not started reports `Cancelled`, what runs reports
//! [`JobError::Killed`](fanout_core::JobError::Killed) (futures are dropped, blocking jobs'
//! threads abandoned as above), and the runtime shuts down without waiting for them. Dropping
//! the executor still means [`Shutdown::Finish`](fanout_core::Shutdown::Finish): it waits for
//! every job, which a time limit bounds.
//!
//! ```
//! use std::time::Duration;
//! use fanout_async::AsyncExecutor;
//! use fanout_core::{Executor, JobError, Shutdown, deadline};
//!
//! /// A blocking job that checks its deadline between two pages.
//! fn crawl(pages: u64) -> u64 {
//!     let mut fetched = 0;
//!     while fetched < pages && !deadline::expired() {
//!         std::thread::sleep(Duration::from_millis(1)); // fetch one page
//!         fetched += 1;
//!     }
//!     fetched
//! }
//!
//! let limit = Duration::from_secs(1);
//! let executor = AsyncExecutor::builder().workers(2).job_timeout(limit).build()?;
//! let expired = JobError::Expired { limit };
//!
//! // A future that would sleep for an hour is dropped at its limit.
//! let naps = executor.map_async(
//!     |secs: u64| async move { tokio::time::sleep(Duration::from_secs(secs)).await },
//!     [0, 3600],
//! );
//! assert_eq!(naps, [Ok(()), Err(expired.clone())]);
//!
//! // A blocking job that would crawl for an hour expires too; this one stops itself.
//! assert_eq!(executor.map(crawl, [3, 3_600_000]), [Ok(3), Err(expired)]);
//!
//! // Kill: the running future reports `Killed`, the one queued behind it `Cancelled`.
//! let executor = AsyncExecutor::new(1)?;
//! let (started, running) = std::sync::mpsc::channel();
//! let stuck = executor.submit_async(async move {
//!     started.send(()).unwrap();
//!     std::future::pending::<()>().await
//! });
//! let queued = executor.submit_async(async {});
//! running.recv().unwrap();
//! executor.shutdown(Shutdown::Kill);
//! assert_eq!(stuck.wait(), Err(JobError::Killed));
//! assert_eq!(queued.wait(), Err(JobError::Cancelled));
//! # Ok::<(), fanout_core::BuildError>(())
//! ```
//!
//! Two limits remain. A future that *blocks* its thread (no `.await`) can only be dropped once
//! it returns to the runtime; on a current-thread runtime it holds every other future and timer
//! meanwhile, and `Kill` leaves the blocked event-loop thread behind after half a second. And
//! jobs that run inline (a blocking call from one of the executor's own futures or jobs) run
//! under the limit of their caller, not one of their own.
//!
//! # Inside another tokio runtime
//!
//! The runtime lives on a thread of its own (the event loop), and callers only hand it tasks
//! and wait on channels, so an `AsyncExecutor` can be built, used and dropped anywhere, inside
//! another runtime's `block_on` or task included: tokio's "Cannot start a runtime from within
//! a runtime" and "Cannot drop a runtime in a context where blocking is not allowed" cannot
//! happen. Waiting still blocks the calling thread: inside async code, prefer
//! [`map_concurrent`] or `spawn_blocking` around the call. From one of the executor's *own*
//! futures, blocking methods run their jobs inline, and the waiting methods (`map_async`,
//! `block_on`) panic with a message on a current-thread runtime, where waiting would deadlock
//! the loop; a multi-thread runtime waits with `block_in_place`.
//!
//! # Modules
//!
//! - `executor`: [`AsyncExecutor`], its builder and [`Flavor`], the event-loop thread that owns
//!   the runtime, the [`Executor`](fanout_core::Executor) implementation and the native async
//!   methods.
//! - `blocking`: the trait's blocking jobs, a queue drained by at most `workers` tasks on the
//!   runtime's blocking pool; their replies claimable by the job timer or a kill, abandoned
//!   threads, and the job timer thread.
//! - `launch`: one chunk of futures' life on the runtime (a permit, then the futures under
//!   their time limit), answered through fanout-core's exactly-once `Reply`, `Killed` if the
//!   runtime drops it. The caller's side of a map (lazy inputs, the window, the order of
//!   results) is fanout-core's engine.
//! - `concurrent`: [`map_concurrent`], bounded concurrency inside one future.
//! - `catch`: panics of futures as [`JobError::Panicked`](fanout_core::JobError::Panicked).

mod blocking;
mod catch;
mod concurrent;
mod executor;
mod fine_timer;
mod launch;

pub use concurrent::map_concurrent;

/// Takes one permit of the rate limit of the executor this future runs on, without blocking
/// its thread (the async form of [`fanout_core::limit::acquire`], for futures that take a
/// permit per request under [`RateLimit::per_request`](fanout_core::limit::RateLimit::per_request));
/// returns at once when there is no limit. [`fanout_core::limit::pause`] does not block, so
/// futures call it as it is.
///
/// ```
/// use fanout_async::AsyncExecutor;
/// use fanout_core::limit::RateLimit;
///
/// let executor = AsyncExecutor::builder()
///     .workers(8)
///     .rate_limit(RateLimit::per_second(1000.0).per_request())
///     .build()?;
/// let fetched = executor.map_async(
///     |id: u64| async move {
///         for _ in 0..2 {
///             fanout_async::acquire().await; // one permit per request
///         }
///         id
///     },
///     0..4,
/// );
/// assert_eq!(fetched, [Ok(0), Ok(1), Ok(2), Ok(3)]);
/// # Ok::<(), fanout_core::BuildError>(())
/// ```
pub async fn acquire() {
    if let Some(source) = fanout_core::limit::ambient() {
        launch::wait_for_permit(&source).await;
    }
}
pub use executor::{AsyncExecutor, AsyncExecutorBuilder, Flavor};
