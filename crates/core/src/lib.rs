//! The contract every fanout executor keeps.
//!
//! A *job* is a function from an input to an output ([`Job`]); inputs and outputs are serde
//! types that own their data ([`Payload`]). An [`Executor`] runs one job over many inputs, in
//! input order ([`Executor::map`]), in completion order ([`Executor::map_unordered`]) or one at a
//! time ([`Executor::submit`]). Every input gets its own `Result`: a failure of one input
//! ([`JobError`]) never loses the others.
//!
//! The rules are strict on purpose: a job's code must be nameable without its environment (a
//! `fn` item, a non-capturing closure, or a serde struct wrapped in [`Stateful`]), because a
//! process pool has to rebuild the job in another process. Python reports a violation at run
//! time ("Can't pickle"); here it is a compile error, for every executor alike, so that
//! switching executors is always a one-line change.
//!
//! This crate also holds [`Serial`], the baseline that runs jobs inline, and [`plumbing`]: the
//! engine every other executor is built on, documented for implementers.
//!
//! ```
//! use fanout_core::{Executor, Serial};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let executor = Serial::new();
//! let squares: Result<Vec<u64>, _> = executor.map(square, 1..=4).into_iter().collect();
//! assert_eq!(squares.unwrap(), [1, 4, 9, 16]);
//! ```

pub mod deadline;
mod error;
mod executor;
mod handle;
mod job;
pub mod limit;
pub mod plumbing;
mod progress;
mod serial;
mod sync;

pub use error::{BuildError, Direction, ForkServerError, JobError, PayloadPart, Violation, WorkerExit};
pub use executor::{Executor, Shutdown};
pub use handle::{AsCompleted, JobHandle, as_completed, wait_any, wait_any_timeout};
pub use job::{Job, Payload, Stateful, StatefulJob};
pub use progress::{Progress, ProgressWatch};
pub use serial::{Serial, SerialBuilder};
