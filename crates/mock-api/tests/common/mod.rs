//! Helpers shared by the fault, hostile-input and log tests: starting a server, a ureq client
//! that reports transport errors instead of panicking, and raw TCP exchanges.
#![allow(dead_code, reason = "each test file uses a part of it")]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use fanout_mock_api::{Config, Faults, MockServer, Summary};
use serde_json::Value;
use ureq::Agent;

/// The token of the test servers.
pub(crate) const TOKEN: &str = "test-token-7c1e9d";

/// A generous bound for anything to happen; only reached when something hangs.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// Starts a server or fails the test.
pub(crate) fn start(config: Config) -> MockServer {
    MockServer::start(config).unwrap_or_else(|error| panic!("mock API did not start: {error}"))
}

/// A config that never waits, with the test token and `faults`.
pub(crate) fn fast(faults: Faults) -> Config {
    Config::default().with_time_scale(0.0).with_token(TOKEN).with_faults(faults)
}

/// What a request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// An answer (any status).
    Answer {
        /// Status code.
        status: u16,
        /// `Retry-After`, if any.
        retry_after: Option<String>,
        /// `Retry-After-Ms`, if any.
        retry_after_ms: Option<String>,
        /// The body.
        body: Vec<u8>,
    },
    /// No answer: the client's transport error.
    Transport(String),
}

impl Reply {
    /// The status, `None` for a transport error.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Reply::Answer { status, .. } => Some(*status),
            Reply::Transport(_) => None,
        }
    }

    /// The body as JSON (`Null` if it is not JSON or there is no answer).
    pub(crate) fn json(&self) -> Value {
        match self {
            Reply::Answer { body, .. } => serde_json::from_slice(body).unwrap_or(Value::Null),
            Reply::Transport(_) => Value::Null,
        }
    }

    /// A short name of the outcome: the status, or `transport`.
    pub(crate) fn outcome(&self) -> String {
        self.status().map_or_else(|| "transport".to_owned(), |status| status.to_string())
    }
}

/// A blocking client with the test token.
#[derive(Clone)]
pub(crate) struct Client {
    agent: Agent,
    base: String,
    auth: Option<String>,
}

impl Client {
    /// A client of `server`.
    pub(crate) fn new(server: &MockServer) -> Self {
        let agent: Agent =
            Agent::config_builder().http_status_as_error(false).timeout_global(Some(PATIENCE)).build().into();
        Self { agent, base: server.url().to_owned(), auth: Some(format!("Bearer {TOKEN}")) }
    }

    /// The same client with another `Authorization` header (or none).
    pub(crate) fn with_auth(&self, auth: Option<&str>) -> Self {
        Self { auth: auth.map(str::to_owned), ..self.clone() }
    }

    /// `GET path`.
    pub(crate) fn get(&self, path: &str) -> Reply {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            request = request.header("Authorization", auth);
        }
        reply(request.call())
    }

    /// `POST path` with `headers` and `body`.
    pub(crate) fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            request = request.header("Authorization", auth);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        reply(request.send(body))
    }

    /// `GET /health` as JSON; it must answer 200.
    pub(crate) fn health(&self) -> Value {
        let reply = self.get("/health");
        assert_eq!(reply.status(), Some(200), "{reply:?}");
        reply.json()
    }

    /// `GET /new/tickets/summary`; it must answer 200.
    pub(crate) fn summary(&self) -> Summary {
        let reply = self.get("/new/tickets/summary");
        assert_eq!(reply.status(), Some(200), "{reply:?}");
        serde_json::from_value(reply.json()).unwrap_or_else(|e| panic!("summary: {e}"))
    }

    /// Polls `/health` until `done` holds for it (panics after [`PATIENCE`]).
    pub(crate) fn wait_for_health(&self, what: &str, done: impl Fn(&Value) -> bool) {
        let started = Instant::now();
        loop {
            if done(&self.health()) {
                return;
            }
            assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn reply(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut response = match result {
        Ok(response) => response,
        Err(error) => return Reply::Transport(error.to_string()),
    };
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (retry_after, retry_after_ms) = (header("retry-after"), header("retry-after-ms"));
    match response.body_mut().read_to_vec() {
        Ok(body) => Reply::Answer { status, retry_after, retry_after_ms, body },
        Err(error) => Reply::Transport(format!("status {status}, then: {error}")),
    }
}

/// What a raw TCP exchange got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Raw {
    /// An HTTP answer's status line and head arrived.
    Answered {
        /// Its status.
        status: u16,
    },
    /// The server closed (or reset) the connection after sending `received` bytes that were not
    /// an answer (0 for a plain close).
    Closed {
        /// Bytes received.
        received: usize,
    },
    /// Neither within the timeout.
    Hung,
}

/// Sends `request` on a new connection to `addr` and waits up to `timeout` for an answer's
/// head or a close. With `half_close`, shuts the writing side down after sending (so the
/// server sees the end of a truncated request). Write errors (the server may close first)
/// are not failures.
pub(crate) fn raw_exchange(addr: SocketAddr, request: &[u8], half_close: bool, timeout: Duration) -> Raw {
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(stream) => stream,
        Err(error) => panic!("could not connect to {addr}: {error}"),
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let _ = stream.write_all(request);
    if half_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    read_answer(&mut stream, timeout)
}

/// Reads until an answer's head, a close, or `timeout`.
pub(crate) fn read_answer(stream: &mut TcpStream, timeout: Duration) -> Raw {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(status) = answered(&received) {
            return Raw::Answered { status };
        }
        if started.elapsed() > timeout {
            return Raw::Hung;
        }
        match stream.read(&mut buffer) {
            Ok(0) => return Raw::Closed { received: received.len() },
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return if let Some(status) = answered(&received) {
                    Raw::Answered { status }
                } else {
                    Raw::Hung
                };
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Raw::Closed { received: received.len() },
        }
    }
}

/// Reads one whole answer (head, then a `Content-Length` body) from a keep-alive connection:
/// its status and body, or `None` on a close, an error or a timeout.
pub(crate) fn read_whole_answer(stream: &mut TcpStream, timeout: Duration) -> Option<(u16, Vec<u8>)> {
    let _ = stream.set_read_timeout(Some(timeout));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let status = answered(&head)?;
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = text
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((status, body))
}

/// The status of a complete answer head in `bytes`, if there is one.
fn answered(bytes: &[u8]) -> Option<u16> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let status = head.strip_prefix("HTTP/1.")?.get(2..5)?;
    status.parse().ok()
}

/// A GET request with the test token, as raw bytes.
pub(crate) fn raw_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").into_bytes()
}
