//! The seam between fanout's engine and its executors: what an implementer of a new execution
//! model needs, and what a user of the executors never does.
//!
//! Like rayon's `iter::plumbing`, this module is public and documented, but it is the
//! implementers' side. An executor supplies two things:
//!
//! - a [`Pack`]er, which packs inputs into a chunk: [`BatchPacker`] keeps them as values (for
//!   workers in the same process), [`EncodedPacker`] encodes them into one message (for
//!   workers in other processes), with [`check_message_size`], the one size check;
//! - a [`Launch`]er, which hands a packed chunk and its [`Reply`] to a worker.
//!
//! The engine does the rest, once for every executor: [`Unordered`] (completion order, for
//! `map_unordered`) and [`Ordered`] (input order, for `imap` and `map`) pull inputs lazily,
//! keep a bounded window of chunks in flight and put results back in order. [`launch_one`]
//! runs one submitted job through the same launcher, answered through [`job_handle`]'s pair.
//!
//! The rules a launcher keeps:
//!
//! 1. Every chunk's [`Reply`] answers exactly once. Sending it, failing it or dropping it
//!    all count; a dropped reply answers [`JobError::Cancelled`](crate::JobError::Cancelled).
//!    A launcher never needs to write that rule again, only to not leak replies.
//! 2. [`Reply::start`] is called just before the chunk runs, and a `false` means do not run.
//! 3. Jobs run through [`run_caught`] (or [`run_chunk`] for a chunk, or [`catch_panic`]
//!    for code outside the job rules), so that a panic reads the same everywhere.
//! 4. Workers in another process call the job through [`entry_point`]'s [`EncodedEntry`], and
//!    the launcher answers through [`Reply::encoded`], which decodes what they sent.
//!
//! A launcher for workers in the calling process, in full:
//!
//! ```
//! use fanout_core::plumbing::{Batch, BatchPacker, Launch, Ordered, Reply, run_chunk};
//!
//! /// Runs every chunk on a thread of its own.
//! struct ThreadPerChunk<F> {
//!     f: std::sync::Arc<F>,
//! }
//!
//! impl<F: Fn(u64) -> u64 + Send + Sync + 'static> Launch for ThreadPerChunk<F> {
//!     type Input = u64;
//!     type Output = u64;
//!     type Packer = BatchPacker<u64>;
//!
//!     fn packer(&mut self) -> BatchPacker<u64> {
//!         BatchPacker::new(4)
//!     }
//!
//!     fn window(&self) -> usize {
//!         2
//!     }
//!
//!     fn launch(&mut self, chunk: Batch<u64>, reply: Reply<u64>) {
//!         let f = std::sync::Arc::clone(&self.f);
//!         std::thread::spawn(move || {
//!             if reply.start() {
//!                 reply.send(run_chunk(chunk, &*f));
//!             }
//!         });
//!     }
//! }
//!
//! let launcher = ThreadPerChunk { f: std::sync::Arc::new(|x: u64| x * 3) };
//! let results: Vec<_> = Ordered::new(launcher, 0..10_u64).collect();
//! assert_eq!(results[9], Ok(27));
//! ```

mod codec;
mod engine;
pub(crate) mod reply;

pub use crate::deadline::{DeadlineGuard, StopGuard};
pub use crate::job::JobState;
pub use crate::progress::ProgressCounters;
pub use codec::{
    EncodedEntry, EncodedPacker, catch_panic, check_message_size, decode_payload, encode_payload,
    entry_point, run_caught, run_caught_all, run_chunk,
};
pub use codec::{StreamingEntry, entry_point_streaming};
pub use engine::{Batch, BatchIter, BatchPacker, Launch, Ordered, Pack, Pushed, Unordered, launch_one};
pub use reply::{EncodedReply, Outcome, Reply, job_handle};

#[cfg(all(test, loom))]
mod loom_models;
