//! The crate's error type: what can go wrong when configuring, starting or stopping a server.

use std::io;
use std::net::SocketAddr;

/// Errors of configuring, starting and stopping the mock API. Messages never include the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The [`Config`](crate::Config) is invalid; the message says which field to fix.
    #[error("invalid mock API configuration: {0}")]
    InvalidConfig(String),
    /// The listen address could not be bound.
    #[error("could not listen on {addr}: {source}; pick a free port, or port 0 to let the system choose")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The tokio runtime or the server thread could not be created.
    #[error(
        "could not start the mock API's runtime or thread: {0}; check the process's thread and file limits"
    )]
    Runtime(#[source] io::Error),
    /// The server stopped with an I/O error while serving.
    #[error("the mock API server failed while serving: {0}")]
    Serve(#[source] io::Error),
    /// The server thread panicked (a bug in this crate; please report it).
    #[error("the mock API server thread panicked; this is a bug in fanout-mock-api")]
    ThreadPanicked,
}
