//! The retry policy of the scenarios' HTTP clients, blocking and async alike: sans-IO, so that
//! both share one implementation and it is tested without sleeping or sending anything.
//!
//! This module owns the *decisions*; the clients own the I/O. After each failed attempt a
//! client describes what went wrong as a [`Failure`] and asks [`Retrier::on_failure`] (or the
//! stateless [`RetryPolicy::decide`]) whether to [`Decision::Retry`] after a wait or to
//! [`Decision::GiveUp`], and why. The rules:
//!
//! - **Only what is safe to repeat is repeated.** A request that may have been applied is
//!   retried only when it is idempotent ([`is_idempotent`]: the safe methods, PUT and DELETE,
//!   and a POST carrying an `Idempotency-Key`, or one the contract makes idempotent by another
//!   header, such as the attachment POST's `X-Attachment-Name`). A connection that could not
//!   even be opened ([`Failure::Connect`]) sent nothing, so any request may be retried then.
//! - **Only transient failures are retried**: transport errors, timeouts and the statuses
//!   408, 425, 429, 500, 502, 503 and 504 ([`is_transient`]). A 400, 401, 404 or 413 would
//!   fail the same way again.
//! - **Exponential backoff with full jitter**: the n-th retry waits a uniformly random time in
//!   `[0, min(cap, base * 2^(n-1))]`, so clients that failed together do not come back
//!   together. The randomness comes from a [`Jitter`], seeded (reproducible) or from entropy.
//! - **`Retry-After` is honoured**: the wait is never shorter than what the server asked for
//!   ([`retry_after`] parses `Retry-After` in both its forms, seconds or an HTTP date, and the
//!   precise `Retry-After-Ms` that the mock API adds for scaled-down runs). A server asking
//!   for more than [`RetryPolicy::max_retry_after`] is not waited for.
//! - **Budgets**: at most [`RetryPolicy::max_attempts`] attempts, each with its own timeout
//!   ([`Retrier::next_timeout`]), and an optional [`Deadline`] (say, per ticket): no attempt
//!   starts after it, no attempt's timeout runs past it, and no wait that would end past it is
//!   begun.
//!
//! # The loop a client drives
//! The same loop serves a blocking client (`std::thread::sleep(wait)`) and an async one
//! (`tokio::time::sleep(wait).await`); only the sending and the sleeping differ. Here with a
//! fake server that fails twice:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use fanout_bench::retry::{Deadline, Decision, Failure, Jitter, RetryPolicy, is_idempotent};
//!
//! let mut answers = vec![Err(Failure::Transport), Err(Failure::status(503)), Ok(201)].into_iter();
//! let mut send = |_timeout: Duration| answers.next().unwrap_or(Ok(200));
//!
//! let policy = RetryPolicy::default().scaled(0.01);
//! let deadline = Deadline::after(Instant::now(), Duration::from_secs(5)); // e.g. per ticket
//! let mut retrier = policy.start(Some(deadline), Jitter::from_entropy());
//! let idempotent = is_idempotent("POST", true); // it carries an Idempotency-Key
//! let status = loop {
//!     let Some(timeout) = retrier.next_timeout(Instant::now()) else {
//!         panic!("deadline passed"); // a real client returns its error here
//!     };
//!     let failure = match send(timeout) {
//!         Ok(status) => break status,
//!         Err(failure) => failure,
//!     };
//!     match retrier.on_failure(&failure, idempotent, Instant::now()) {
//!         Decision::Retry(wait) => std::thread::sleep(wait),
//!         Decision::GiveUp(reason) => panic!("{reason}"),
//!     }
//! };
//! assert_eq!((status, retrier.failed_attempts()), (201, 2));
//! ```

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant, SystemTime};

/// Name of the standard header with the wait a `429` or `503` asks for.
pub const RETRY_AFTER: &str = "retry-after";
/// Name of the mock API's header with the same wait in milliseconds (whole seconds are too
/// coarse for a run at time scale 0.01).
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// How a client retries. `Copy`: every request can take its own. Serde, so that a job can
/// carry it to a worker process inside its [`crate::http::Api`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry; 0 counts as 1).
    pub max_attempts: u32,
    /// The ceiling of the first retry's wait; each retry doubles it.
    pub base: Duration,
    /// The largest ceiling of a wait.
    pub cap: Duration,
    /// How long one attempt may take (connect, send, answer), cut to what remains of the
    /// deadline, if any.
    pub request_timeout: Duration,
    /// The longest `Retry-After` honoured; a server asking for more makes the client give up.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, waits from up to 100 ms doubling to at most 10 s, 60 s per attempt (the
    /// slowest route's 10x slow tail is 30 s at time scale 1), `Retry-After` up to 60 s.
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// What went wrong with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The request could not even be built (an invalid URL or header): trying again cannot
    /// help.
    Invalid,
    /// No connection could be opened (refused, unreachable): nothing was sent.
    Connect,
    /// The attempt ran out of its timeout; the server may have applied it.
    Timeout,
    /// The connection failed once the request may have been sent: reset, closed without an
    /// answer, a body cut short.
    Transport,
    /// An answer outside 2xx.
    Status {
        /// The status code.
        status: u16,
        /// The wait the server asked for (see [`retry_after`]), if any.
        retry_after: Option<Duration>,
    },
}

impl Failure {
    /// An answer with `status` and no `Retry-After`.
    pub fn status(status: u16) -> Self {
        Failure::Status { status, retry_after: None }
    }
}

/// Why a client should stop trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GiveUp {
    /// The answer would be the same on every attempt (a 4xx other than 408/425/429, a 501...).
    #[error("the failure is not transient: fix the request instead of retrying it")]
    NotRetryable,
    /// The request may have been applied and repeating it could apply it twice.
    #[error(
        "the request is not idempotent and may have been applied: send it with an Idempotency-Key to make it safe to retry"
    )]
    NotIdempotent,
    /// All attempts failed.
    #[error("gave up after {0} attempts; allow more attempts or check the server")]
    Exhausted(u32),
    /// The deadline passed, or the wait would end after it.
    #[error("the deadline is reached; give the work a longer deadline")]
    Deadline,
    /// The server asked to wait longer than the policy's `max_retry_after`.
    #[error(
        "the server asked to retry after {0:?}, longer than the policy allows; raise max_retry_after to wait that long"
    )]
    RetryAfterTooLong(Duration),
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then send the request again.
    Retry(Duration),
    /// Stop and report the failure.
    GiveUp(GiveUp),
}

/// Whether a request with `method` may be repeated without changing the outcome: the methods
/// HTTP defines as idempotent, or a `POST`/`PATCH` with an idempotency key
/// (`has_idempotency_key`; pass `true` as well for a POST the contract makes idempotent by
/// another header, like the attachment POST's `X-Attachment-Name`).
pub fn is_idempotent(method: &str, has_idempotency_key: bool) -> bool {
    const IDEMPOTENT: [&str; 6] = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];
    has_idempotency_key || IDEMPOTENT.iter().any(|m| m.eq_ignore_ascii_case(method))
}

/// Whether an answer with `status` may succeed if tried again: 408 Request Timeout, 425 Too
/// Early, 429 Too Many Requests, 500, 502, 503 and 504.
pub fn is_transient(status: u16) -> bool {
    matches!(status, 408 | 425 | 429 | 500 | 502 | 503 | 504)
}

/// The wait asked for by an answer's `Retry-After` and `Retry-After-Ms` header values; the
/// precise `Retry-After-Ms` wins when it parses. `None` when neither parses. `now` turns an
/// HTTP date into a wait (a date in the past is a wait of zero).
pub fn retry_after(
    retry_after: Option<&str>,
    retry_after_ms: Option<&str>,
    now: SystemTime,
) -> Option<Duration> {
    retry_after_ms
        .and_then(parse_retry_after_ms)
        .or_else(|| retry_after.and_then(|value| parse_retry_after(value, now)))
}

/// Parses a `Retry-After` value: delay-seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, and the two obsolete forms HTTP still accepts).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 means "a very long time".
        return Some(value.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses a `Retry-After-Ms` value: whole milliseconds.
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse().map_or(Duration::MAX, Duration::from_millis))
}

/// A point in time by which some work must be done (a ticket's migration, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline at `instant`.
    pub fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// The deadline `budget` after `now` (effectively never, if that overflows the clock).
    pub fn after(now: Instant, budget: Duration) -> Self {
        // Far enough to never matter, near enough to be representable.
        const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        Self(now.checked_add(budget).or_else(|| now.checked_add(FAR)).unwrap_or(now))
    }

    /// The deadline as an instant.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// What remains of the budget at `now` (zero once passed).
    pub fn remaining(self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }

    /// Whether the deadline has passed at `now`.
    pub fn expired(self, now: Instant) -> bool {
        now >= self.0
    }
}

/// The source of the backoff's randomness: a splitmix64 stream. Seed it for reproducible
/// waits (tests, a run that must be replayed), or take [`Jitter::from_entropy`].
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A stream determined by `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self(seed)
    }

    /// A stream seeded from the process's hash randomness, the time and a counter, so
    /// clients started together do not draw the same waits.
    pub fn from_entropy() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u32(std::process::id());
        if let Ok(since) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
            hasher.write_u128(since.as_nanos());
        }
        Self(hasher.finish())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniformly random duration in `[0, max]`, to the nanosecond.
    pub fn up_to(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        let draw = match nanos.checked_add(1) {
            Some(span) => self.next_u64() % span,
            None => self.next_u64(),
        };
        Duration::from_nanos(draw)
    }
}

impl RetryPolicy {
    /// The policy with `base`, `cap` and `request_timeout` multiplied by `time_scale` (the
    /// mock API's factor on its latencies), so a run at 0.01 backs off 100 times faster.
    /// `max_attempts` and `max_retry_after` stay as they are. A non-finite or negative scale
    /// leaves the policy unchanged.
    pub fn scaled(self, time_scale: f64) -> Self {
        if !time_scale.is_finite() || time_scale < 0.0 {
            return self;
        }
        let scale =
            |d: Duration| Duration::try_from_secs_f64(d.as_secs_f64() * time_scale).unwrap_or(Duration::MAX);
        Self {
            base: scale(self.base),
            cap: scale(self.cap),
            request_timeout: scale(self.request_timeout),
            ..self
        }
    }

    /// The ceiling of the wait before retry number `retry` (1 = the first retry):
    /// `min(cap, base * 2^(retry - 1))`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1);
        2u32.checked_pow(doublings)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.cap, |ceiling| ceiling.min(self.cap))
    }

    /// The decision after attempt number `attempt` (1 = the first) failed with `failure`.
    /// `idempotent` says whether the request may be repeated (see [`is_idempotent`]);
    /// `remaining` is what is left of the deadline, if there is one.
    pub fn decide(
        &self,
        attempt: u32,
        failure: &Failure,
        idempotent: bool,
        remaining: Option<Duration>,
        jitter: &mut Jitter,
    ) -> Decision {
        let (transient, asked) = match *failure {
            Failure::Invalid => (false, None),
            Failure::Connect | Failure::Timeout | Failure::Transport => (true, None),
            Failure::Status { status, retry_after } => (is_transient(status), retry_after),
        };
        if !transient {
            return Decision::GiveUp(GiveUp::NotRetryable);
        }
        if !idempotent && *failure != Failure::Connect {
            return Decision::GiveUp(GiveUp::NotIdempotent);
        }
        let max_attempts = self.max_attempts.max(1);
        if attempt >= max_attempts {
            return Decision::GiveUp(GiveUp::Exhausted(max_attempts));
        }
        if let Some(asked) = asked
            && asked > self.max_retry_after
        {
            return Decision::GiveUp(GiveUp::RetryAfterTooLong(asked));
        }
        let backoff = jitter.up_to(self.backoff_ceiling(attempt));
        let wait = asked.map_or(backoff, |asked| asked.max(backoff));
        match remaining {
            Some(remaining) if wait >= remaining => Decision::GiveUp(GiveUp::Deadline),
            _ => Decision::Retry(wait),
        }
    }

    /// A [`Retrier`] for one request under this policy, bounded by `deadline` if given.
    pub fn start(self, deadline: Option<Deadline>, jitter: Jitter) -> Retrier {
        Retrier { policy: self, deadline, jitter, attempts: 0 }
    }
}

/// The retry state of one request: how many attempts failed, its deadline and its jitter.
/// See the module docs for the loop that drives it.
#[derive(Debug, Clone)]
pub struct Retrier {
    policy: RetryPolicy,
    deadline: Option<Deadline>,
    jitter: Jitter,
    attempts: u32,
}

impl Retrier {
    /// The timeout of the next attempt: the policy's `request_timeout`, cut to what remains of
    /// the deadline. `None` once the deadline has passed: do not send, give up with
    /// [`GiveUp::Deadline`].
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        match self.deadline {
            Some(deadline) if deadline.expired(now) => None,
            Some(deadline) => Some(self.policy.request_timeout.min(deadline.remaining(now))),
            None => Some(self.policy.request_timeout),
        }
    }

    /// Records that the attempt just made failed with `failure` (at `now`) and decides.
    pub fn on_failure(&mut self, failure: &Failure, idempotent: bool, now: Instant) -> Decision {
        self.attempts = self.attempts.saturating_add(1);
        let remaining = self.deadline.map(|deadline| deadline.remaining(now));
        self.policy.decide(self.attempts, failure, idempotent, remaining, &mut self.jitter)
    }

    /// Failed attempts so far.
    pub fn failed_attempts(&self) -> u32 {
        self.attempts
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Retry(wait) => write!(f, "retry in {wait:?}"),
            Decision::GiveUp(reason) => write!(f, "give up: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base: 100 * MS,
            cap: 1000 * MS,
            request_timeout: 2000 * MS,
            max_retry_after: 5000 * MS,
        }
    }

    fn decide(attempt: u32, failure: Failure, idempotent: bool, remaining: Option<Duration>) -> Decision {
        policy().decide(attempt, &failure, idempotent, remaining, &mut Jitter::seeded(7))
    }

    fn is_retry(decision: Decision) -> bool {
        matches!(decision, Decision::Retry(_))
    }

    #[test]
    fn idempotency_of_methods() {
        for method in ["GET", "get", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"] {
            assert!(is_idempotent(method, false), "{method}");
        }
        assert!(!is_idempotent("POST", false));
        assert!(!is_idempotent("PATCH", false));
        assert!(is_idempotent("POST", true));
    }

    #[test]
    fn transient_statuses() {
        for status in [408, 425, 429, 500, 502, 503, 504] {
            assert!(is_transient(status), "{status}");
        }
        for status in [200, 201, 301, 400, 401, 403, 404, 405, 409, 413, 422, 501, 505] {
            assert!(!is_transient(status), "{status}");
        }
    }

    #[test]
    fn transient_failures_of_idempotent_requests_are_retried() {
        for failure in [
            Failure::Connect,
            Failure::Timeout,
            Failure::Transport,
            Failure::status(500),
            Failure::status(502),
            Failure::status(503),
            Failure::status(504),
            Failure::status(429),
            Failure::status(408),
        ] {
            assert!(is_retry(decide(1, failure, true, None)), "{failure:?}");
        }
    }

    #[test]
    fn permanent_failures_are_not_retried() {
        for status in [400, 401, 403, 404, 409, 413, 501] {
            assert_eq!(
                decide(1, Failure::status(status), true, None),
                Decision::GiveUp(GiveUp::NotRetryable)
            );
        }
    }

    #[test]
    fn a_post_without_idempotency_key_is_never_repeated_once_sent() {
        for failure in [Failure::Timeout, Failure::Transport, Failure::status(500), Failure::status(503)] {
            assert_eq!(
                decide(1, failure, false, None),
                Decision::GiveUp(GiveUp::NotIdempotent),
                "{failure:?}"
            );
        }
        // A connection that never opened sent nothing: safe to retry even then.
        assert!(is_retry(decide(1, Failure::Connect, false, None)));
        // Not transient wins over not idempotent: the message says what to fix.
        assert_eq!(decide(1, Failure::status(400), false, None), Decision::GiveUp(GiveUp::NotRetryable));
        let idempotent_post = is_idempotent("POST", true);
        assert!(is_retry(decide(1, Failure::Transport, idempotent_post, None)));
    }

    #[test]
    fn attempts_are_bounded() {
        for attempt in 1..5 {
            assert!(is_retry(decide(attempt, Failure::Transport, true, None)), "{attempt}");
        }
        assert_eq!(decide(5, Failure::Transport, true, None), Decision::GiveUp(GiveUp::Exhausted(5)));
        assert_eq!(decide(9, Failure::Transport, true, None), Decision::GiveUp(GiveUp::Exhausted(5)));
        let once = RetryPolicy { max_attempts: 0, ..policy() };
        assert_eq!(
            once.decide(1, &Failure::Transport, true, None, &mut Jitter::seeded(1)),
            Decision::GiveUp(GiveUp::Exhausted(1)),
            "0 attempts counts as 1"
        );
    }

    #[test]
    fn backoff_ceiling_doubles_up_to_the_cap() {
        let p = policy();
        let ceilings: Vec<_> = (1..=6).map(|retry| p.backoff_ceiling(retry)).collect();
        assert_eq!(ceilings, [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]);
        assert_eq!(p.backoff_ceiling(0), 100 * MS);
        assert_eq!(p.backoff_ceiling(u32::MAX), 1000 * MS, "no overflow");
        let huge = RetryPolicy { base: Duration::MAX, cap: Duration::MAX, ..p };
        assert_eq!(huge.backoff_ceiling(3), Duration::MAX);
    }

    #[test]
    fn full_jitter_spreads_waits_over_the_whole_range() {
        let p = RetryPolicy { max_attempts: 100, ..policy() };
        let mut jitter = Jitter::seeded(42);
        for attempt in 1..=6 {
            let ceiling = p.backoff_ceiling(attempt);
            let waits: Vec<Duration> = (0..2000)
                .map(|_| match p.decide(attempt, &Failure::Transport, true, None, &mut jitter) {
                    Decision::Retry(wait) => wait,
                    other => panic!("{other:?}"),
                })
                .collect();
            let min = waits.iter().copied().min().unwrap_or_default();
            let max = waits.iter().copied().max().unwrap_or_default();
            assert!(max <= ceiling, "attempt {attempt}: {max:?} > {ceiling:?}");
            assert!(min < ceiling / 20, "attempt {attempt}: smallest wait {min:?}");
            assert!(max > ceiling * 19 / 20, "attempt {attempt}: largest wait {max:?}");
            let mean = waits.iter().sum::<Duration>() / 2000;
            assert!(mean > ceiling * 4 / 10 && mean < ceiling * 6 / 10, "mean {mean:?} of {ceiling:?}");
        }
    }

    #[test]
    fn jitter_is_reproducible_when_seeded() {
        let draws = |seed| {
            let mut j = Jitter::seeded(seed);
            (0..8).map(|_| j.up_to(Duration::from_secs(1))).collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
        assert_ne!(draws(3), draws(4));
        assert_eq!(Jitter::seeded(1).up_to(Duration::ZERO), Duration::ZERO);
        assert!(Jitter::seeded(1).up_to(Duration::MAX) <= Duration::MAX);
        let (mut a, mut b) = (Jitter::from_entropy(), Jitter::from_entropy());
        assert_ne!(a.next_u64(), b.next_u64(), "two clients draw different waits");
    }

    #[test]
    fn retry_after_is_a_floor() {
        // A Retry-After far above the backoff ceiling is waited exactly.
        let asked = Failure::Status { status: 429, retry_after: Some(3000 * MS) };
        assert_eq!(decide(1, asked, true, None), Decision::Retry(3000 * MS));
        // A tiny one never shortens the backoff below it, and never goes below itself.
        let mut jitter = Jitter::seeded(9);
        for _ in 0..500 {
            let small = Failure::Status { status: 503, retry_after: Some(50 * MS) };
            match policy().decide(1, &small, true, None, &mut jitter) {
                Decision::Retry(wait) => assert!(wait >= 50 * MS && wait <= 100 * MS, "{wait:?}"),
                other => panic!("{other:?}"),
            }
        }
        let too_long = Failure::Status { status: 503, retry_after: Some(6000 * MS) };
        assert_eq!(decide(1, too_long, true, None), Decision::GiveUp(GiveUp::RetryAfterTooLong(6000 * MS)));
        // Retry-After on a permanent failure does not make it retryable.
        let permanent = Failure::Status { status: 400, retry_after: Some(MS) };
        assert_eq!(decide(1, permanent, true, None), Decision::GiveUp(GiveUp::NotRetryable));
    }

    #[test]
    fn a_wait_past_the_deadline_is_not_begun() {
        let asked = Failure::Status { status: 429, retry_after: Some(3000 * MS) };
        assert_eq!(decide(1, asked, true, Some(2999 * MS)), Decision::GiveUp(GiveUp::Deadline));
        assert_eq!(decide(1, asked, true, Some(3001 * MS)), Decision::Retry(3000 * MS));
        assert_eq!(
            decide(1, Failure::Transport, true, Some(Duration::ZERO)),
            Decision::GiveUp(GiveUp::Deadline)
        );
    }

    #[test]
    fn parses_retry_after_in_both_forms() {
        let now =
            httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap_or(SystemTime::UNIX_EPOCH);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(Duration::MAX));
        for bad in ["", "-1", "1.5", "+3", "soon", "Wed, 32 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("Wed Oct 21 07:28:05 2015", now), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "past date"
        );
        assert_eq!(parse_retry_after_ms("250"), Some(250 * MS));
        assert_eq!(parse_retry_after_ms("2.5"), None);
        assert_eq!(parse_retry_after_ms(""), None);
        // The precise header wins; an unparsable one falls back to Retry-After.
        assert_eq!(retry_after(Some("1"), Some("12"), now), Some(12 * MS));
        assert_eq!(retry_after(Some("1"), Some("x"), now), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(None, None, now), None);
        assert_eq!(retry_after(Some("later"), None, now), None);
    }

    #[test]
    fn deadlines() {
        let now = Instant::now();
        let deadline = Deadline::after(now, 500 * MS);
        assert_eq!(deadline.remaining(now), 500 * MS);
        assert_eq!(deadline.remaining(now + 200 * MS), 300 * MS);
        assert_eq!(deadline.remaining(now + 900 * MS), Duration::ZERO);
        assert!(!deadline.expired(now + 499 * MS));
        assert!(deadline.expired(now + 500 * MS));
        assert_eq!(Deadline::at(now).instant(), now);
        assert!(!Deadline::after(now, Duration::MAX).expired(now + Duration::from_secs(3600)));
    }

    #[test]
    fn a_retrier_drives_one_request() {
        let now = Instant::now();
        let mut retrier = policy().start(Some(Deadline::after(now, 5000 * MS)), Jitter::seeded(5));
        assert_eq!(retrier.next_timeout(now), Some(2000 * MS));
        assert_eq!(retrier.next_timeout(now + 4000 * MS), Some(1000 * MS), "cut to the deadline");
        assert_eq!(retrier.next_timeout(now + 5000 * MS), None, "deadline passed: do not send");
        let mut at = now;
        let mut waits = Vec::new();
        loop {
            match retrier.on_failure(&Failure::status(500), true, at) {
                Decision::Retry(wait) => {
                    waits.push(wait);
                    at += wait;
                }
                Decision::GiveUp(reason) => {
                    assert_eq!(reason, GiveUp::Exhausted(5));
                    break;
                }
            }
        }
        assert_eq!(waits.len(), 4);
        assert_eq!(retrier.failed_attempts(), 5);
        for (i, wait) in waits.iter().enumerate() {
            assert!(*wait <= policy().backoff_ceiling(i as u32 + 1));
        }
        // Without a deadline only the attempts bound it.
        let unbounded = policy().start(None, Jitter::seeded(1));
        assert_eq!(unbounded.next_timeout(now), Some(2000 * MS));
        assert_eq!(unbounded.policy().max_attempts, 5);
        // A deadline that runs out mid-way stops the retries.
        let mut short = policy().start(Some(Deadline::after(now, 150 * MS)), Jitter::seeded(1));
        let asked = Failure::Status { status: 503, retry_after: Some(200 * MS) };
        assert_eq!(short.on_failure(&asked, true, now), Decision::GiveUp(GiveUp::Deadline));
    }

    #[test]
    fn scaling_and_messages() {
        let scaled = RetryPolicy::default().scaled(0.01);
        assert_eq!(scaled.base, MS);
        assert_eq!(scaled.cap, 100 * MS);
        assert_eq!(scaled.request_timeout, 600 * MS);
        assert_eq!(scaled.max_attempts, 6);
        assert_eq!(scaled.max_retry_after, Duration::from_secs(60));
        assert_eq!(RetryPolicy::default().scaled(f64::NAN), RetryPolicy::default());
        assert_eq!(Decision::Retry(MS).to_string(), "retry in 1ms");
        assert!(Decision::GiveUp(GiveUp::NotIdempotent).to_string().contains("Idempotency-Key"));
        assert!(GiveUp::Exhausted(3).to_string().contains("3 attempts"));
    }
}
