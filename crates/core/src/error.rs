//! The errors of fanout: what can happen to one job ([`JobError`]) and to building an
//! executor ([`BuildError`]).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why one job produced no output.
///
/// Every input of a `map` gets its own `Result`, so one of these never hides the results of
/// the other inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum JobError {
    /// The job panicked. The executor caught the panic and kept its workers.
    #[error("the job panicked: {message}")]
    Panicked {
        /// The panic's message, or a placeholder when the payload was not a string.
        message: String,
    },
    /// The worker that ran the job died before it reported a result (a process killed by a
    /// signal, or one that called `exit` inside the job). The executor replaced the worker.
    #[error("the worker running this job died ({exit}); retry the job if it is idempotent")]
    WorkerLost {
        /// How the worker ended.
        exit: WorkerExit,
    },
    /// The job never ran: the executor was shut down with its queue cancelled.
    #[error("the job was cancelled before it ran: the executor shut down and dropped its queue")]
    Cancelled,
    /// No result arrived in time. The job may still be running: wait on its handle again to
    /// get the result.
    #[error("no result within {timeout:?}; the job may still be running, wait again for it")]
    TimedOut {
        /// How long the caller waited.
        timeout: Duration,
    },
    /// The job, its input or its output could not be (de)serialized on its way to or from a
    /// worker process.
    #[error(
        "could not {} the job's {part}: {message}",
        if *.encoding { "serialize" } else { "deserialize" }
    )]
    Serialization {
        /// Which part of the job failed.
        part: PayloadPart,
        /// `true` when serializing failed, `false` when deserializing failed.
        encoding: bool,
        /// What the serializer said.
        message: String,
    },
}

/// The part of a job that crosses a process boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PayloadPart {
    /// The job's own state (a [`Stateful`](crate::Stateful) job's fields).
    Job,
    /// The job's input.
    Input,
    /// The job's output.
    Output,
    /// A whole message between the executor and a worker.
    Message,
}

impl fmt::Display for PayloadPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Job => "state",
            Self::Input => "input",
            Self::Output => "output",
            Self::Message => "message",
        })
    }
}

/// How a worker process ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WorkerExit {
    /// Killed by a signal.
    Signaled {
        /// The signal's number.
        signal: i32,
        /// The signal's name, such as `SIGKILL`.
        name: String,
    },
    /// Exited with this status while running a job.
    Exited {
        /// The exit status.
        status: i32,
    },
    /// The worker broke the protocol or vanished without an exit status that could be read.
    Unknown {
        /// What was observed.
        detail: String,
    },
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Signaled { signal, name } => write!(f, "killed by signal {signal} ({name})"),
            Self::Exited { status } => write!(f, "exited with status {status}"),
            Self::Unknown { detail } => f.write_str(detail),
        }
    }
}

/// Why an executor could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A pool needs at least one worker.
    #[error("an executor needs at least one worker; pass a worker count of 1 or more")]
    ZeroWorkers,
    /// A chunk holds at least one job.
    #[error("the chunk size must be at least 1")]
    ZeroChunkSize,
    /// A process pool's fork server could not be started or broke its protocol.
    #[error("the process pool's fork server failed: {reason}")]
    ForkServer {
        /// What went wrong.
        reason: String,
    },
    /// The operating system refused a resource (a thread, a process, a channel).
    #[error("could not {action}: {source}")]
    Os {
        /// What the executor was doing.
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}
