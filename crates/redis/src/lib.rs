//! [`RedisPool`]: fanout's [`Executor`](fanout_core::Executor) across many machines, on Redis
//! Streams and a consumer group. The same trait, the same job rules: replacing
//! `ProcessPool::new(8)?` by `RedisPool::builder(url).local_workers(8).build()?` is one line.
//!
//! ```no_run
//! use fanout_core::Executor;
//! use fanout_redis::RedisPool;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! // The URL (and its password) from the environment; never printed.
//! let pool = RedisPool::builder_from_env("FANOUT_REDIS_URL").local_workers(4).build()?;
//! let squares = pool.map(square, 0..100);
//! assert_eq!(squares[9], Ok(81));
//! # Ok::<(), fanout_redis::RedisError>(())
//! ```
//!
//! **Workers on other hosts.** Any program that links fanout-redis is also a worker of itself:
//! started with [`MARKER`] as its first argument, it serves a queue instead of running `main`
//! (a constructor catches the argument before `main`):
//!
//! ```text
//! FANOUT_REDIS_URL=redis://:password@10.0.0.1:6379/0 \
//!     myprog --fanout-redis-worker env:FANOUT_REDIS_URL --queue fanout --workers 8
//! ```
//!
//! or, from a program's own command line, one call: [`run_workers`]. Copy the *same build* to
//! every host: jobs travel as code offsets, and a worker of another build refuses them.
//!
//! # Delivery semantics
//!
//! - **At-least-once.** The caller adds each chunk as an entry of the stream
//!   `fanout:QUEUE:jobs`; workers read it in the consumer group `fanout-workers`
//!   (`XREADGROUP`), run it, then in one Lua script store the result and acknowledge and
//!   delete the entry (`XACK`, `XDEL`); the worker's next read travels in the same write,
//!   after the script (so a worker holds one entry at a time). A worker that dies
//!   before that leaves the entry pending; after the **visibility timeout** another worker
//!   takes it over (`XAUTOCLAIM`) and runs it again. A live worker on a long job renews its
//!   claim every third of the timeout (never more than two thirds apart; `XCLAIM ... JUSTID`,
//!   which does not count a delivery), so it is not taken over. Jobs must therefore be
//!   idempotent, as with Celery's or RQ's acks-late.
//! - **Exactly one answer per input.** Results are keyed by the run and the chunk, and each
//!   chunk is added as one entry, once: the script stores the result whose `XACK` finds the
//!   entry still pending (the first; `XADD` to the run's result stream) and counts any later
//!   one in the run's `dups` counter without storing it ([`RedisPool::duplicates`]); the
//!   caller also hands each chunk's reply at most one result.
//!   Ordered `map` and `imap` are the engine's, as on every executor.
//! - **Dead letters.** Every entry carries its delivery limit (`max_deliveries`, default 3).
//!   An entry taken over more often than that goes to the dead-letter stream
//!   `fanout:QUEUE:dead` and its inputs answer [`JobError::WorkerLost`](fanout_core::JobError).
//! - **Bounded.** The caller keeps only the engine's window of chunks ahead (two per worker,
//!   or one per worker more than Redis may hold), at most one entry per worker plus the
//!   [prefetch](RedisPoolBuilder::prefetch) of them in Redis, and deletes entries and results
//!   once done.
//! - **Security.** Every entry carries the run's random key (registered in
//!   `fanout:QUEUE:runs` while the pool lives) and the build id of the caller's executable. A
//!   worker calls code only for an entry of a live run, of its own build, in the current
//!   format, within the size limit (64 MiB by default, as the process pool); anything else is
//!   dead-lettered (foreign, malformed) or answered with an error (another build:
//!   [`RedisError::BuildMismatch`]), never run. Whoever can write to the Redis server can
//!   register a run: protect it with a password (`requirepass`) and a private network. The
//!   password comes in the URL, best from an environment variable
//!   ([`RedisPool::builder_from_env`]); it never appears in `Debug`, `Display`, errors or
//!   the workers' command lines ([`RedisUrl`]).
//! - **Shutdown.** `Finish` (and `Drop`) waits for every result. `CancelQueued` deletes the
//!   entries no worker has read yet (atomically: an entry is deleted only if it is not
//!   pending) and answers them `Cancelled`, then waits for the running ones. `Kill` does the
//!   same, answers the running ones `Killed` at once, unregisters the run and kills the local
//!   workers; a worker on any host running a job of that run sees within 250 ms that the run
//!   is gone, deletes the entry and ends itself, and its supervisor starts a fresh one.
//! - **Job time limits.** [`RedisPoolBuilder::job_timeout`], as on the process pool: the limit
//!   travels in each entry, counted from when the entry starts on its worker (per entry, so
//!   per chunk). Past it the worker stores the entry's result [`JobError::Expired`] (once,
//!   acknowledged, never redelivered) and ends its process; its supervisor (the pool for local
//!   workers, `run_workers` elsewhere, even of one) starts a fresh one.
//!
//! Not done yet: a pool whose queue has no live worker waits on `Finish` (and `Drop`) forever:
//! its entries sit unread, and reclaiming them needs a worker. Bound the wait with
//! `JobHandle::wait_timeout`, or use `Kill`.
//!
//! [`JobError::Expired`]: fanout_core::JobError::Expired

mod pool;
mod protocol;
mod url;
mod wire;
mod worker;

pub use pool::{RedisPool, RedisPoolBuilder};
pub use protocol::build_id;
pub use url::RedisUrl;
pub use worker::{Consumer, MARKER, WorkerOptions, consumers, readers, run_workers};

/// What went wrong talking to Redis or starting workers. No message ever holds the password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The URL did not parse.
    #[error("`{url}` is not a Redis URL; use redis://[:password@]host:port/db")]
    BadUrl {
        /// The URL, its password cut out.
        url: String,
    },
    /// The environment variable that should hold the URL is not set.
    #[error("the environment variable {name} holds no Redis URL; set it to redis://[:password@]host:port/db")]
    MissingEnv {
        /// The variable.
        name: String,
    },
    /// A Redis command failed.
    #[error("could not {action} on {url}: {message}; check that the server runs and the URL is right")]
    Redis {
        /// What was being done.
        action: &'static str,
        /// The URL, its password cut out.
        url: String,
        /// What Redis (or the connection) said, the password cut out.
        message: String,
    },
    /// A worker's arguments are wrong.
    #[error("{message}; usage: PROGRAM --fanout-redis-worker URL|env:VAR --queue NAME [--workers N]")]
    BadArguments {
        /// What is wrong.
        message: String,
    },
    /// A worker process could not be started.
    #[error("could not start a worker process: {source}")]
    Spawn {
        /// What the OS said.
        source: std::io::Error,
    },
    /// A worker refused a job of another build of the program.
    #[error(
        "a worker of build {worker} refused a job of build {job}: run the same build of the program on every host"
    )]
    BuildMismatch {
        /// The build id the entry carried.
        job: String,
        /// The worker's own.
        worker: String,
    },
}

impl From<RedisError> for fanout_core::BuildError {
    /// A pool that could not be built, as the facade's [`BuildError`](fanout_core::BuildError)
    /// (the message keeps its advice and never holds the password).
    fn from(error: RedisError) -> Self {
        let action = match &error {
            RedisError::Spawn { .. } => "start a fanout-redis worker",
            _ => "set up a fanout-redis pool",
        };
        Self::Os { action, source: std::io::Error::other(error.to_string()) }
    }
}
