//! fanout: the same jobs on four execution models behind one [`Executor`] trait.
//!
//! This facade re-exports the executors; see `fanout_core` for the rules of jobs and payloads.
pub use fanout_async::{AsyncExecutor, AsyncExecutorBuilder, Flavor, map_concurrent};
pub use fanout_core::*;
pub use fanout_process::{ProcessPool, ProcessPoolBuilder};
pub use fanout_thread::{ThreadPool, ThreadPoolBuilder};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
