//! The errors of fanout: what can happen to one job ([`JobError`]), how a worker process ended
//! ([`WorkerExit`]), and why an executor could not be built ([`BuildError`]).
//!
//! Every cause has its own variant, so that a program can match on it; messages say what to do.

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
    /// The worker that ran the job died, or could not run it, before it reported a result.
    /// The executor replaced the worker where it could.
    #[error("the worker running this job was lost ({exit}); retry the job if it is idempotent")]
    WorkerLost {
        /// How the worker ended.
        exit: WorkerExit,
    },
    /// The job never ran: it was cancelled through its handle, the executor was shut down with
    /// its queue cancelled, or the iterator of its `map` was dropped before it started.
    #[error("the job was cancelled before it ran")]
    Cancelled,
    /// The *caller's wait* ended before a result arrived ([`JobHandle::wait_timeout`]): the
    /// job itself goes on, and waiting on its handle again gets its result. Not to be confused
    /// with [`Expired`](Self::Expired), the *job's* time limit.
    ///
    /// [`JobHandle::wait_timeout`]: crate::JobHandle::wait_timeout
    #[error("no result within {waited:?} of waiting; the job may still be running, wait again for it")]
    WaitTimedOut {
        /// How long the caller waited.
        waited: Duration,
    },
    /// The *job* ran longer than the executor's job time limit (`job_timeout` on its builder)
    /// and was stopped: its worker process killed and replaced, its future dropped, or its
    /// thread abandoned and replaced. The clock starts when the job starts on its worker.
    #[error(
        "the job ran longer than its time limit of {limit:?} and was stopped; raise the limit \
         or make the job finish sooner (it may be retried if it is idempotent)"
    )]
    Expired {
        /// The job time limit it exceeded.
        limit: Duration,
    },
    /// The job was running when the executor was terminated with
    /// [`Shutdown::Kill`](crate::Shutdown::Kill): its worker was killed (or its thread
    /// abandoned) before it could report a result.
    #[error("the job was running when its executor was killed (Shutdown::Kill)")]
    Killed,
    /// This handle's result was already returned by an earlier `wait_timeout` or `try_wait`.
    #[error("the result of this job was already taken from its handle")]
    ResultTaken,
    /// The job, its input or its output could not be (de)serialized on its way to or from a
    /// worker process.
    #[error("could not {direction} the job's {part}: {message}")]
    Serialization {
        /// Which part of the job failed.
        part: PayloadPart,
        /// Whether writing or reading the bytes failed.
        direction: Direction,
        /// What the serializer (or the size check) said.
        message: String,
    },
}

/// Which way a payload was travelling when it failed to (de)serialize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Turning a value into bytes.
    Encode,
    /// Turning bytes back into a value.
    Decode,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Encode => "serialize",
            Self::Decode => "deserialize",
        })
    }
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

/// How a worker ended, or why it could not run a job.
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
    /// The worker broke the protocol and was killed.
    ProtocolViolation(Violation),
    /// The worker's process is gone but the fork server that could say how it ended is gone
    /// too (or did not answer): the pool cannot run jobs any more.
    ForkServerGone {
        /// What the pool saw.
        reason: String,
    },
    /// The worker's exit status could not be collected (`waitpid` failed with this errno).
    ReapFailed {
        /// The `errno` of `waitpid`.
        errno: i32,
    },
    /// The pool's worker initializer panicked, so the pool starts no workers: fix the
    /// initializer.
    InitializerPanicked {
        /// The panic's message.
        message: String,
    },
    /// No worker could be started to run the job (`fork` or a channel failed).
    SpawnFailed {
        /// What the operating system said.
        reason: String,
    },
    /// The pool's channels to its workers failed, so it cannot hear from them any more.
    ChannelsFailed {
        /// What the channel said.
        reason: String,
    },
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Signaled { signal, name } => write!(f, "killed by signal {signal} ({name})"),
            Self::Exited { status } => write!(f, "exited with status {status}"),
            Self::ProtocolViolation(violation) => write!(f, "killed for breaking the protocol: {violation}"),
            Self::ForkServerGone { reason } => write!(f, "its fork server is gone ({reason})"),
            Self::ReapFailed { errno } => {
                write!(
                    f,
                    "its exit status could not be collected ({})",
                    std::io::Error::from_raw_os_error(*errno)
                )
            }
            Self::InitializerPanicked { message } => {
                write!(f, "the pool's initializer panicked ({message}); fix it, the pool starts no workers")
            }
            Self::SpawnFailed { reason } => write!(f, "no worker could be started: {reason}"),
            Self::ChannelsFailed { reason } => {
                write!(f, "the pool's channels to its workers failed: {reason}")
            }
        }
    }
}

/// How a worker broke the protocol between it and its pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A message that does not decode.
    #[error("it sent a malformed message ({message})")]
    MalformedMessage {
        /// What the decoder said.
        message: String,
    },
    /// An answer to a job it was not given.
    #[error("it answered a job it was not given")]
    UnrequestedAnswer,
    /// An answer with the wrong number of results for its chunk.
    #[error("it answered {got} results for a chunk of {expected} inputs")]
    WrongResultCount {
        /// Inputs in the chunk.
        expected: usize,
        /// Results in the answer.
        got: usize,
    },
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
    /// A job time limit of zero would expire every job before it starts.
    #[error("the job time limit must be longer than zero; pass a positive `job_timeout`")]
    ZeroJobTimeout,
    /// A rate limit that is not a positive, finite rate with a burst of at least 1.
    #[error("invalid rate limit: {reason}")]
    InvalidRateLimit {
        /// What is wrong with it.
        reason: String,
    },
    /// A limit of zero jobs in flight would run nothing.
    #[error("max_in_flight must be at least 1")]
    ZeroInFlight,
    /// This executor cannot stop a running job, so it refuses a time limit rather than ignore
    /// it.
    #[error(
        "the {executor} executor cannot enforce a job time limit (it runs jobs on the caller's \
         own thread, which nothing can stop); use a thread, process or async executor for a \
         `job_timeout`"
    )]
    JobTimeoutUnsupported {
        /// The executor's name.
        executor: &'static str,
    },
    /// A process pool's fork server could not be started or broke its protocol.
    #[error("the process pool's fork server failed: {0}")]
    ForkServer(#[from] ForkServerError),
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

/// What went wrong with a process pool's fork server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ForkServerError {
    /// It exited, or did not say hello in time, while it started.
    #[error("it did not start: it exited or did not answer within {0:?}")]
    DidNotStart(Duration),
    /// Its hello could not be read.
    #[error("its hello could not be read ({message})")]
    Hello {
        /// What ipc-channel said.
        message: String,
    },
    /// It runs other code than this process.
    #[error(
        "it runs different code than this process (is the job code in a dynamically loaded \
         library? the process pool needs it in the main executable)"
    )]
    DifferentExecutable,
    /// It went away, or stopped answering, after it started.
    #[error("it is gone ({message})")]
    Gone {
        /// What the pool saw.
        message: String,
    },
    /// It answered a request with the answer to another.
    #[error("it answered out of turn")]
    OutOfTurn,
}
