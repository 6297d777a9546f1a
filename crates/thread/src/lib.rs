//! [`ThreadPool`]: fanout's thread-pool executor.
//!
//! Up to `n` worker threads, started on demand, take boxed tasks from one crossbeam channel.
//! A task is a chunk of inputs
//! (one input by default); its results go back as one message, so batching small jobs
//! ([`ThreadPoolBuilder::chunk_size`]) amortizes every channel operation.
//!
//! Through the [`Executor`](fanout_core::Executor) trait the pool runs the same jobs as every
//! other executor. Its inherent [`ThreadPool::scoped_map`] goes further and runs closures that
//! borrow or capture anything, which only threads sharing one address space can do.
//!
//! ```
//! use fanout_core::Executor;
//! use fanout_thread::ThreadPool;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let pool = ThreadPool::new(4)?;
//! let squares: Vec<u64> = pool.map(square, 0..100).into_iter().collect::<Result<_, _>>()?;
//! assert_eq!(squares[9], 81);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod in_place;
mod latch;
mod launch;
mod pool;
mod supervise;

pub use pool::{ThreadPool, ThreadPoolBuilder};
