//! `fanout-mock-api`: the embedded mock HTTP API that the fanout benchmarks talk to.
//!
//! It serves the routes of the contract in `shared/mock-api.md`: deterministic items
//! (`GET /api/items/{id}`) and a ticket migration from an "old" system to a "new" one, each
//! route waiting its configured latency times a time scale (rounded to the nearest
//! microsecond) on a precise timer thread of its own, without blocking the async runtime, so
//! thousands of requests can wait at once.
//!
//! - [`config`]: [`Config`], [`Latencies`], [`Route`] and the latency quantization rule.
//! - [`faults`]: [`Faults`] (errors, dropped connections, a slow tail, a rate limit, a
//!   concurrency cap; all off by default), what each answers, and how fates are drawn
//!   deterministically from the seed.
//! - [`data`]: the pure [`Dataset`] (items, queues, tickets, attachments, the expected
//!   summary of a full migration and the serial-cost model).
//! - [`checksum`]: the [`Summary`] and its order-independent checksum.
//! - [`server`]: [`bind`], [`router`], [`serve`] and the threaded [`MockServer`].
//! - [`error`]: the crate's [`Error`].
//!
//! All routes but `/health` need `Authorization: Bearer <token>`. `POST /new/tickets`
//! expects the ticket's JSON exactly as `GET /old/tickets/{id}` returned it, with
//! `Idempotency-Key: <old id>`; `POST /new/tickets/{new_id}/attachments` expects the raw bytes
//! and `X-Attachment-Name: <name from the attachment list>`.
//!
//! # Example
//!
//! ```
//! use fanout_mock_api::{Config, MockServer};
//!
//! let server = MockServer::start(
//!     Config::default().with_time_scale(0.0).with_token("example-token"),
//! )?;
//! let body = ureq::get(format!("{}/api/items/7", server.url()))
//!     .header("Authorization", "Bearer example-token")
//!     .call()?
//!     .body_mut()
//!     .read_to_string()?;
//! assert!(body.contains(r#""id":7"#));
//! server.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod arrival;
pub mod checksum;
pub mod config;
pub mod data;
pub mod error;
pub mod faults;
mod prng;
mod routes;
pub mod server;
mod timer;

pub use checksum::Summary;
pub use config::{Config, Latencies, Route};
pub use data::{Attachment, Dataset, Item, QueueEntry, Ticket};
pub use error::Error;
pub use faults::{FaultPoint, Faults, RateLimit};
pub use server::{MockServer, bind, router, serve};
