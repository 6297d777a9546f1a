//! Blocking HTTP for the scenarios' jobs: [`Api`] (the server's URL and token, as serde fields
//! a job carries to any worker), the per-worker `ureq` agent, and [`HttpError`].
//!
//! **The per-worker initializer.** Every request goes through a `thread_local!` agent that the
//! first request on a thread creates, and that thread keeps (with its keep-alive connection)
//! for every later job. A thread-pool worker is a thread and a process-pool worker is a process
//! whose jobs run on one thread, so this one mechanism gives each worker of either kind its own
//! agent, with no setup hook in the executor. A forked process inherits the agent of the thread
//! that forked it, pooled socket included; two processes sharing one socket would interleave
//! their requests, so an agent created by another process is never used: it is leaked (not
//! closed, which could shut the parent's connection down) and replaced.
//!
//! The URL and the token reach jobs as fields of their serde structs, never through globals set
//! by the parent, which a worker process started from a fork server would not see.
//!
//! **Rate limits.** Every attempt goes through the limit of the executor running the job
//! ([`fanout::limit`]): with a per-request limit ([`RateLimit::per_request`]) each attempt takes
//! a permit first ([`limit::acquire`]); with a per-job limit the executor took the job's permit
//! before it started, and only retries take one more. A `429` with `Retry-After` pauses the
//! whole limit for that long ([`limit::pause`]), so that every worker slows down, not only the
//! one that met it. Outside a limited executor both calls do nothing.
//!
//! **Counting.** [`measured`] runs a job's requests and returns what they did
//! ([`RequestStats`]: attempts, retries, `429` answers, when the first and the last attempt
//! left), so that a job can return its own counts from any worker, a process one included.
//!
//! [`RateLimit::per_request`]: fanout::limit::RateLimit::per_request

use std::cell::{Cell, RefCell};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use fanout::limit::{self, Scope};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use ureq::Agent;

use crate::retry::{
    self, Deadline, Decision, Failure, GiveUp, Jitter, RETRY_AFTER, RETRY_AFTER_MS, RetryPolicy,
};

/// How long each phase of a request (connect, send, wait for the answer, read it) may take
/// before it fails; the slowest route waits 3 s at time scale 1.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

/// Size of each of a connection's input and output buffers: the answers and bodies are small
/// (attachments are at most 16 KiB and stream through anyway), and ureq's default of 128 KiB
/// each costs 256 KiB of freshly faulted memory per connection: 50 MB for 200 workers.
const BUFFER_SIZE: usize = 16 * 1024;

/// How much of an error body an [`HttpError`] keeps.
const ERROR_BODY_LIMIT: usize = 300;

/// A bearer token. It travels to workers like any field, but `Debug` never shows it and there
/// is no `Display`: it cannot end up in output or in an error message by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the one place that needs it: a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A request that failed. Serde, so that a job can return it from a worker process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum HttpError {
    /// No answer: connection refused or reset, timeout.
    #[error("{request}: {message}")]
    Transport {
        /// Method and path, such as `GET /api/items/7`.
        request: String,
        /// What the client said.
        message: String,
    },
    /// An answer outside 2xx.
    #[error("{request}: HTTP {status}: {body}")]
    Status {
        /// Method and path.
        request: String,
        /// The status code.
        status: u16,
        /// The start of the answer's body (the server's `{"error": ...}`).
        body: String,
    },
    /// A 2xx answer whose body was not what the contract says.
    #[error("{request}: unexpected answer: {message}")]
    Decode {
        /// Method and path.
        request: String,
        /// What the decoder said.
        message: String,
    },
}

/// The mock API as a job sees it: a base URL, a token and how to retry. Cheap to clone and to
/// serialize.
///
/// Every request retries what [`crate::retry`] says may succeed again (a connection refused, an
/// injected `500`, a dropped connection, a `429` after its `Retry-After`), and only when it is
/// idempotent: a `GET`, or a `POST` with an `Idempotency-Key` or an `X-Attachment-Name`. A
/// deadline ([`Api::with_deadline`], set by a job for its own requests) bounds the retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Api {
    base: String,
    token: Secret,
    #[serde(default)]
    retry: RetryPolicy,
    /// Set by a job in its worker; an `Instant` means nothing in another process.
    #[serde(skip)]
    deadline: Option<Deadline>,
}

thread_local! {
    /// Retries made by requests on this thread (see [`retries_on_this_thread`]).
    static RETRIES: Cell<u64> = const { Cell::new(0) };
    /// What the requests on this thread did since the innermost [`measured`] began.
    static STATS: Cell<RequestStats> = const { Cell::new(RequestStats::ZERO) };
}

/// How many times requests made on the calling thread were retried so far. A job reads it
/// before and after its requests to report its own retries, whichever worker it ran on.
pub fn retries_on_this_thread() -> u64 {
    RETRIES.get()
}

/// What a job's requests did: the attempts sent (retries included), the retries, the `429`
/// answers, and when the first and the last attempt left (on `CLOCK_MONOTONIC`, which every
/// process of the machine shares, so that the counts of worker processes add up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestStats {
    /// Attempts sent, retries included: the requests the server saw.
    pub attempts: u64,
    /// Attempts that were retries of a failed one.
    pub retries: u64,
    /// `429 Too Many Requests` answers.
    pub responses_429: u64,
    /// When the first attempt left, in nanoseconds of `CLOCK_MONOTONIC`.
    pub first_sent_ns: Option<u64>,
    /// When the last attempt left, in nanoseconds of `CLOCK_MONOTONIC`.
    pub last_sent_ns: Option<u64>,
}

impl RequestStats {
    /// No request.
    pub const ZERO: Self =
        Self { attempts: 0, retries: 0, responses_429: 0, first_sent_ns: None, last_sent_ns: None };

    /// Both counts together.
    #[must_use]
    pub fn and(self, other: Self) -> Self {
        let earliest = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let latest = |a: Option<u64>, b: Option<u64>| a.max(b);
        Self {
            attempts: self.attempts + other.attempts,
            retries: self.retries + other.retries,
            responses_429: self.responses_429 + other.responses_429,
            first_sent_ns: earliest(self.first_sent_ns, other.first_sent_ns),
            last_sent_ns: latest(self.last_sent_ns, other.last_sent_ns),
        }
    }

    /// The rate at which the attempts left, per second: the intervals between the first and
    /// the last over the time between them. `None` for fewer than two attempts.
    pub fn rate(&self) -> Option<f64> {
        let span = self.last_sent_ns?.checked_sub(self.first_sent_ns?)?;
        (self.attempts >= 2 && span > 0).then(|| (self.attempts - 1) as f64 / (span as f64 / 1e9))
    }

    /// Counts an attempt leaving now (a retry, if `retry`).
    pub(crate) fn sent(&mut self, retry: bool) {
        let now = monotonic_ns();
        self.attempts += 1;
        self.retries += u64::from(retry);
        self.first_sent_ns = Some(self.first_sent_ns.map_or(now, |first| first.min(now)));
        self.last_sent_ns = Some(self.last_sent_ns.map_or(now, |last| last.max(now)));
    }
}

/// Now on `CLOCK_MONOTONIC`, in nanoseconds: a clock that every process of the machine shares
/// (Rust's `Instant` reads the same clock but cannot travel between processes).
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable `timespec` for the duration of the call, and
    // `CLOCK_MONOTONIC` is a clock every Linux kernel has.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut now) };
    if status != 0 {
        return 0;
    }
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Runs `requests` and returns what the requests made on this thread meanwhile did. Nested
/// calls count apart: an inner `measured` (a serial inner executor's job, on the same thread)
/// reports its own requests, and the outer one does not see them.
pub fn measured<T>(requests: impl FnOnce() -> T) -> (T, RequestStats) {
    let outer = STATS.replace(RequestStats::ZERO);
    let output = requests();
    let stats = STATS.replace(outer);
    (output, stats)
}

fn record(update: impl FnOnce(&mut RequestStats)) {
    let mut stats = STATS.get();
    update(&mut stats);
    STATS.set(stats);
}

/// A successful answer: its status (`201` created or `200` already there) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code, always 2xx.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// Decodes the body as JSON; `request` names the request in the error.
    pub fn json<T: DeserializeOwned>(&self, request: impl FnOnce() -> String) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body)
            .map_err(|error| HttpError::Decode { request: request(), message: error.to_string() })
    }
}

impl Api {
    /// The API at `base` (`http://127.0.0.1:PORT`, no trailing slash) with `token`.
    pub fn new(base: impl Into<String>, token: Secret) -> Self {
        Self { base: base.into(), token, retry: RetryPolicy::default(), deadline: None }
    }

    /// The same API with `policy` for its retries (typically `RetryPolicy::default()` scaled by
    /// the server's time scale).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The same API with a deadline for every request and retry made through it.
    pub fn with_deadline(mut self, deadline: Deadline) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The retry policy.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The token (for the async client of [`crate::http_async`]).
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// `GET path`, the body as bytes.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, HttpError> {
        self.send("GET", path, &[], None).map(|answer| answer.body)
    }

    /// `GET path`, the body decoded from JSON.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, HttpError> {
        self.send("GET", path, &[], None)?.json(|| format!("GET {path}"))
    }

    /// `POST path` with extra `headers` and `body`.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Answer, HttpError> {
        self.send("POST", path, headers, Some(body))
    }

    /// Sends the request, retrying it as [`crate::retry`] decides.
    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Answer, HttpError> {
        let keyed = headers.iter().any(|(name, _)| {
            name.eq_ignore_ascii_case("idempotency-key") || name.eq_ignore_ascii_case("x-attachment-name")
        });
        let idempotent = retry::is_idempotent(method, keyed);
        let mut retrier = self.retry.start(self.deadline, Jitter::from_entropy());
        // With a per-request limit every attempt takes a permit; with a per-job one the
        // executor took the first attempt's, and a retry takes one more.
        let per_request = limit::ambient().is_some_and(|source| source.scope() == Scope::PerRequest);
        loop {
            if retrier.next_timeout(Instant::now()).is_none() {
                return Err(HttpError::Transport {
                    request: format!("{method} {path}"),
                    message: format!("{} after {} attempts", GiveUp::Deadline, retrier.failed_attempts()),
                });
            }
            let retry = retrier.failed_attempts() > 0;
            if per_request || retry {
                limit::acquire();
            }
            record(|stats| stats.sent(retry));
            let (error, failure) = match self.send_once(method, path, headers, body) {
                Ok(answer) => return Ok(answer),
                Err(failed) => failed,
            };
            if let Failure::Status { status: 429, retry_after } = failure {
                record(|stats| stats.responses_429 += 1);
                // One 429 slows every worker of the executor, not only this one.
                if let Some(wait) = retry_after {
                    limit::pause(wait);
                }
            }
            match retrier.on_failure(&failure, idempotent, Instant::now()) {
                Decision::Retry(wait) => {
                    RETRIES.set(RETRIES.get() + 1);
                    std::thread::sleep(wait);
                }
                Decision::GiveUp(_) => return Err(error),
            }
        }
    }

    /// One attempt; a failure comes with how [`crate::retry`] classifies it.
    fn send_once(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Answer, (HttpError, Failure)> {
        let request = || format!("{method} {path}");
        let transport = |error: ureq::Error| {
            let failure = classify(&error);
            (HttpError::Transport { request: request(), message: error.to_string() }, failure)
        };
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token.expose());
        let headers = [("Authorization", auth.as_str())].into_iter().chain(headers.iter().copied());
        let agent = worker_agent();
        let mut response = match body {
            None => {
                headers.fold(agent.get(&url), |request, (name, value)| request.header(name, value)).call()
            }
            Some(body) => headers
                .fold(agent.post(&url), |request, (name, value)| request.header(name, value))
                .send(body),
        }
        .map_err(transport)?;
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok());
        let wait = retry::retry_after(header(RETRY_AFTER), header(RETRY_AFTER_MS), SystemTime::now());
        // A body cut short (a dropped connection) is a transport failure like any other.
        let body = response.body_mut().read_to_vec().map_err(|error| {
            (HttpError::Transport { request: request(), message: error.to_string() }, Failure::Transport)
        })?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&body);
            let body = text.chars().take(ERROR_BODY_LIMIT).collect();
            let failure = Failure::Status { status, retry_after: wait };
            return Err((HttpError::Status { request: request(), status, body }, failure));
        }
        Ok(Answer { status, body })
    }
}

/// How a failed `ureq` call counts for retries: nothing was sent when no connection opened.
fn classify(error: &ureq::Error) -> Failure {
    use ureq::Timeout as Phase;
    match error {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => Failure::Connect,
        ureq::Error::Timeout(Phase::Connect | Phase::Resolve) => Failure::Connect,
        ureq::Error::Timeout(_) => Failure::Timeout,
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Failure::Connect,
        _ => Failure::Transport,
    }
}

thread_local! {
    /// This thread's agent and the process that created it.
    static AGENT: RefCell<Option<(u32, Agent)>> = const { RefCell::new(None) };
}

/// The calling worker's agent, created on first use (see the module docs).
fn worker_agent() -> Agent {
    AGENT.with(|slot| {
        let mut slot = slot.borrow_mut();
        let pid = std::process::id();
        if let Some(inherited) = slot.take_if(|(owner, _)| *owner != pid) {
            // Created before a fork: its pooled socket belongs to the parent.
            std::mem::forget(inherited);
        }
        let (_, agent) = slot.get_or_insert_with(|| (pid, new_agent()));
        agent.clone()
    })
}

/// A new agent. There is deliberately no global, per-call or resolve timeout: with one of them
/// set, ureq resolves every request's host (even an IP literal, even for a pooled connection)
/// on a freshly spawned thread, which costs a thread per request.
fn new_agent() -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(PHASE_TIMEOUT))
        .timeout_send_request(Some(PHASE_TIMEOUT))
        .timeout_send_body(Some(PHASE_TIMEOUT))
        .timeout_recv_response(Some(PHASE_TIMEOUT))
        .timeout_recv_body(Some(PHASE_TIMEOUT))
        .input_buffer_size(BUFFER_SIZE)
        .output_buffer_size(BUFFER_SIZE)
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        let api = Api::new("http://127.0.0.1:1", Secret::new("s3cret-token"));
        assert!(!format!("{api:?}").contains("s3cret-token"));
    }

    /// Port 1 on loopback: nothing listens there, every connection is refused.
    fn refused(policy: RetryPolicy) -> Api {
        Api::new("http://127.0.0.1:1", Secret::new("s3cret-token")).with_retry(policy)
    }

    #[test]
    fn transport_errors_name_the_request_not_the_token() {
        let api = refused(RetryPolicy { max_attempts: 1, ..RetryPolicy::default() });
        let error = api.get_bytes("/health").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.starts_with("GET /health: "), "{error}");
        assert!(!error.contains("s3cret-token"));
    }

    #[test]
    fn a_refused_connection_is_retried_as_the_policy_says() {
        let policy = RetryPolicy { max_attempts: 3, ..RetryPolicy::default().scaled(0.001) };
        let before = retries_on_this_thread();
        assert!(refused(policy).get_bytes("/health").is_err());
        assert_eq!(retries_on_this_thread() - before, 2);
    }

    #[test]
    fn a_passed_deadline_sends_nothing_more() {
        let api = refused(RetryPolicy::default()).with_deadline(Deadline::at(Instant::now()));
        let before = retries_on_this_thread();
        let error = api.get_bytes("/health").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("deadline"), "{error}");
        assert_eq!(retries_on_this_thread(), before);
    }
}
