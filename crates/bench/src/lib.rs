//! `fanout-bench`: the harness behind `fanout bench`.
//!
//! It measures one scenario on one executor against the embedded mock API, the way the
//! articles' scripts ran: blocking HTTP jobs (or a CPU-bound job) fanned out over an executor,
//! or, with `--executor async`, the same requests as futures over one async client; every
//! result verified, the wall time compared with an ideal computed from the latency the
//! server really applies.
//!
//! - [`executor`]: [`dispatch`], building the facade's [`AnyExecutor`] of an [`ExecutorKind`]
//!   around a timed task.
//! - [`http`]: the per-worker `ureq` agent and the typed requests the scenarios share.
//! - [`http_async`]: [`AsyncApi`], the same requests over one async client (hyper-util's
//!   pool, rustls) per run, for the native-async versions of the HTTP scenarios.
//! - [`scenario`]: what a measured run does (`api-calls`, `ticket-migration`, `cpu`,
//!   `blocking-on-loop`), in the child process that `fanout bench` starts for each repetition.
//! - [`ideal`]: the ideal-time model of each scenario.
//! - [`floor`]: `fanout floor`, api-calls' requests over raw clients with no executor (the
//!   machine's own floor), and the mock server's CPU time per request.
//! - [`usage`]: CPU time (`getrusage`, `wait4`) and the summed RSS of a process tree (`/proc`).
//! - [`run`]: the orchestrator's side: the mock server's process, one run child per repetition.
//! - [`report`]: the result rows, as JSON Lines or markdown.

pub mod executor;
pub mod floor;
pub mod http;
pub mod http_async;
pub mod ideal;
pub mod report;
pub mod retry;
pub mod run;
pub mod scenario;
pub mod usage;

pub use executor::{AnyExecutor, ExecError, ExecutorKind, dispatch, dispatch_async};
pub use http::{Api, HttpError, Secret};
pub use http_async::AsyncApi;
pub use report::Row;
pub use scenario::{Queue, RunOutcome, RunSpec, Scenario};
