//! Fault injection: the [`Faults`] a server is configured with (all off by default) and the
//! crate-private injector that decides, request by request, what goes wrong.
//!
//! # The faults
//! - **Errors** (`error_rate`): the attempt is answered `500` with a JSON `{"error": ...}` body.
//! - **Dropped connections** (`drop_rate`): the attempt gets no answer at all: the server closes
//!   the connection without sending a byte (the answer's body fails before hyper flushes the
//!   head, so hyper drops the connection with nothing written). Clients see a transport error
//!   (connection closed or reset).
//! - **Hangs** (`hang_rate`): the attempt is never answered. The connection stays open, the
//!   way a stuck upstream looks to a client, until the client gives up or the server stops
//!   (then it is closed without an answer, like a drop). Only a client-side timeout, or an
//!   executor's job time limit, gets the client past it.
//! - **Slow tail** (`slow_rate`): the attempt waits `slow_factor` (default 10) times its route's
//!   latency. With a zero latency it is as fast as any other.
//! - **Rate limit** (`rate_limit`): a token bucket of `burst` requests refilled at `per_second`
//!   requests per second of the articles' time (scaled like the latencies: at time scale 0.01
//!   it admits 100 times as many per real second; at time scale 0 it never refuses). A refused
//!   request gets `429` with `Retry-After` (whole seconds, rounded up, at least 1, as HTTP
//!   requires) and `Retry-After-Ms` (the precise wait in milliseconds, which a scaled-down run
//!   needs; the precise header wins for clients that know it).
//! - **Concurrency cap** (`max_concurrent`): a request arriving while that many are in flight
//!   is refused at once with `503 Service Unavailable`, `Retry-After: 1` and `Retry-After-Ms`
//!   set to the route's applied latency (about when a slot frees up). The contract does not say
//!   what the cap answers; `503` is HTTP's "overloaded, try again later", kept apart from the
//!   rate limit's `429`, and nothing it refuses has been applied.
//!
//! Errors, drops and hangs strike at the [`FaultPoint`]: `Before` the request is applied (a failed
//! POST created nothing), or `After` it was applied in full, the answer then being replaced
//! (the default, and the realistic case: the client cannot tell whether its POST was applied,
//! and only the `Idempotency-Key` / `X-Attachment-Name` rules make the retry safe), or `Either`,
//! drawn per attempt. Either way the attempt first waits its route's latency. The contract's
//! idempotency holds under every fault: applying happens only in the handlers, which never
//! create a duplicate for a key they have seen, so a retried POST answers `200` with the id
//! of the first application.
//!
//! `GET /health` and `GET /new/tickets/summary` are exempt from every fault, the rate limit
//! and the cap: the first tells a client or an orchestrator whether the server is up, the
//! second is how a run proves that nothing was lost or duplicated, and neither is part of the
//! workload; a fault there would only make the verification flaky.
//!
//! # Determinism
//! Requests arrive concurrently, so "the n-th request fails" would depend on scheduling.
//! Instead the fate of an attempt (error, drop, slow, before or after) is a pure function of
//! the seed, the **request's identity** and **how many times that identity was seen before**.
//! The identity is the method, the path and the headers that name the resource: the
//! `Idempotency-Key` of `POST /new/tickets`, and for `POST /new/tickets/{new_id}/attachments`
//! the ticket's *old* id (new ids depend on creation order) and `X-Attachment-Name`.
//! So a run that makes the same requests, each retried until it succeeds, meets exactly the
//! same faults whatever the order, the concurrency or the executor. Only two clients sending
//! the *same* request at once can swap fates (which of them is attempt 0 and which attempt 1).
//! The rate limit and the cap depend on arrival times and load, not on the seed. The rate
//! limit's arrival time is the kernel's receive timestamp of the request where there is one
//! (`arrival`), so that a server busy or descheduled when requests come does not count them as
//! a burst when it reads them together.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checksum::Fnv1a;
use crate::config::Route;
use crate::error::Error;
use crate::prng::{Kind, SplitMix64, mix64};

/// How much slower a request of the slow tail is, by default.
pub const DEFAULT_SLOW_FACTOR: f64 = 10.0;

/// Routes exempt from every fault, the rate limit and the cap (see the module docs).
pub const EXEMPT_ROUTES: [Route; 2] = [Route::Health, Route::Summary];

/// Whether `route` is exempt from fault injection (see [`EXEMPT_ROUTES`]).
pub fn is_exempt(route: Route) -> bool {
    EXEMPT_ROUTES.contains(&route)
}

/// When an injected error or drop strikes, relative to applying the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultPoint {
    /// Before the request is applied: a failed POST created nothing.
    Before,
    /// After the request was applied in full (a POST created its ticket or attachment); its
    /// answer is then replaced by the fault. The default: what a real network does to a
    /// client, and what idempotency keys exist for.
    #[default]
    After,
    /// Before or after, drawn per attempt (half and half) from the seed.
    Either,
}

/// A token-bucket rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second at time scale 1; scaled like the latencies (at scale 0.01
    /// the server admits 100 times as many per real second). Finite and > 0.
    pub per_second: f64,
    /// Requests admitted back to back before the rate applies (the bucket's size); >= 1.
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` requests per second (at time scale 1) with a burst of `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }
}

/// The faults a server injects. [`Faults::default`] injects none.
///
/// Rates are shares of attempts, from 0 to 1; `error_rate + drop_rate + hang_rate` must be at
/// most 1 (one draw decides: below `drop_rate` a drop, below `drop_rate + error_rate` an error,
/// below that plus `hang_rate` a hang), so each share is exact. See the module docs for what each fault does and how fates are drawn.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Faults {
    /// Share of attempts answered `500`. Default 0.
    pub error_rate: f64,
    /// Share of attempts whose connection is closed without an answer. Default 0.
    pub drop_rate: f64,
    /// Share of attempts that are never answered. Default 0.
    pub hang_rate: f64,
    /// Share of attempts that wait `slow_factor` times their latency. Default 0.
    pub slow_rate: f64,
    /// How much slower the slow tail is; finite and >= 1. Default 10.
    pub slow_factor: f64,
    /// When errors and drops strike. Default [`FaultPoint::After`].
    pub point: FaultPoint,
    /// At most this many errors and drops for one request identity; later attempts of it are
    /// served normally. `None` (the default) = no bound. Handy to make a test's outcome
    /// certain (`error_rate` 1 and a bound of 1: the first attempt fails, the retry succeeds),
    /// or to guarantee that a client with enough retries always gets through.
    pub max_per_request: Option<u32>,
    /// A rate limit answering `429`; `None` (the default) = unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Requests in flight at once before new ones are refused with `503`; `None` (the
    /// default) = no cap. At least 1.
    pub max_concurrent: Option<usize>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            drop_rate: 0.0,
            hang_rate: 0.0,
            slow_rate: 0.0,
            slow_factor: DEFAULT_SLOW_FACTOR,
            point: FaultPoint::default(),
            max_per_request: None,
            rate_limit: None,
            max_concurrent: None,
        }
    }
}

impl Faults {
    /// No faults (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether no fault is switched on.
    pub fn is_off(&self) -> bool {
        !self.draws_fates() && self.rate_limit.is_none() && self.max_concurrent.is_none()
    }

    /// Whether some per-attempt fault (error, drop, slow) is on.
    fn draws_fates(&self) -> bool {
        self.error_rate > 0.0 || self.drop_rate > 0.0 || self.hang_rate > 0.0 || self.slow_rate > 0.0
    }

    /// Sets the share of attempts answered `500`.
    pub fn with_error_rate(mut self, rate: f64) -> Self {
        self.error_rate = rate;
        self
    }

    /// Sets the share of attempts whose connection is dropped without an answer.
    pub fn with_drop_rate(mut self, rate: f64) -> Self {
        self.drop_rate = rate;
        self
    }

    /// Sets the share of attempts that are never answered.
    pub fn with_hang_rate(mut self, rate: f64) -> Self {
        self.hang_rate = rate;
        self
    }

    /// Sets the share of attempts that are `factor` times slower.
    pub fn with_slow_tail(mut self, rate: f64, factor: f64) -> Self {
        self.slow_rate = rate;
        self.slow_factor = factor;
        self
    }

    /// Sets when errors and drops strike.
    pub fn with_point(mut self, point: FaultPoint) -> Self {
        self.point = point;
        self
    }

    /// Bounds the errors and drops of one request identity.
    pub fn with_max_per_request(mut self, max: u32) -> Self {
        self.max_per_request = Some(max);
        self
    }

    /// Sets a rate limit.
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Caps the requests in flight at once.
    pub fn with_max_concurrent(mut self, max: usize) -> Self {
        self.max_concurrent = Some(max);
        self
    }

    /// Checks the values; the message names the field to fix.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |message: String| Err(Error::InvalidConfig(message));
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("drop_rate", self.drop_rate),
            ("hang_rate", self.hang_rate),
            ("slow_rate", self.slow_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return invalid(format!(
                    "faults.{name} must be a share from 0 to 1 (got {rate}); e.g. 0.1 for 10% of requests"
                ));
            }
        }
        if self.error_rate + self.drop_rate + self.hang_rate > 1.0 + 1e-9 {
            return invalid(format!(
                "faults.error_rate + faults.drop_rate + faults.hang_rate must be at most 1 (got {} + {} + {})",
                self.error_rate, self.drop_rate, self.hang_rate
            ));
        }
        if !self.slow_factor.is_finite() || self.slow_factor < 1.0 {
            return invalid(format!(
                "faults.slow_factor must be a finite number >= 1 (got {}); the default is {DEFAULT_SLOW_FACTOR}",
                self.slow_factor
            ));
        }
        if let Some(limit) = self.rate_limit {
            if !limit.per_second.is_finite() || limit.per_second <= 0.0 {
                return invalid(format!(
                    "faults.rate_limit.per_second must be a finite number > 0 (got {})",
                    limit.per_second
                ));
            }
            if limit.burst == 0 {
                return invalid("faults.rate_limit.burst must be at least 1".to_owned());
            }
        }
        if self.max_concurrent == Some(0) {
            return invalid(
                "faults.max_concurrent must be at least 1 (leave it unset for no cap)".to_owned(),
            );
        }
        Ok(())
    }
}

/// An injected failure of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Answer `500`.
    Error,
    /// Close the connection without an answer.
    Drop,
    /// Never answer.
    Hang,
}

/// What happens to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fate {
    /// The failure, if any.
    pub(crate) fault: Option<Fault>,
    /// Whether the failure strikes before the request is applied.
    pub(crate) before: bool,
    /// Whether the attempt waits `slow_factor` times its latency.
    pub(crate) slow: bool,
}

impl Fate {
    /// Nothing goes wrong.
    pub(crate) const FINE: Fate = Fate { fault: None, before: false, slow: false };
}

/// The fate of attempt `attempt` (0 = first) of the request identified by `key`, after
/// `faulted` errors and drops of it: a pure function of its arguments.
pub(crate) fn fate(seed: u64, faults: &Faults, key: u64, attempt: u32, faulted: u32) -> Fate {
    let id = key ^ mix64(u64::from(attempt).wrapping_add(0x6a09_e667_f3bc_c909));
    let mut rng = SplitMix64::keyed(seed, Kind::Fault, id);
    let failure_draw = rng.unit();
    let slow_draw = rng.unit();
    let point_draw = rng.unit();
    let may_fail = faults.max_per_request.is_none_or(|max| faulted < max);
    let fault = if !may_fail {
        None
    } else if failure_draw < faults.drop_rate {
        Some(Fault::Drop)
    } else if failure_draw < faults.drop_rate + faults.error_rate {
        Some(Fault::Error)
    } else if failure_draw < faults.drop_rate + faults.error_rate + faults.hang_rate {
        // Past the ranges of drops and errors, so that turning hangs on changes no other fate.
        Some(Fault::Hang)
    } else {
        None
    };
    let before = match faults.point {
        FaultPoint::Before => true,
        FaultPoint::After => false,
        FaultPoint::Either => point_draw < 0.5,
    };
    Fate { fault, before, slow: slow_draw < faults.slow_rate }
}

/// The identity of a request for [`fate`]: the method, the resource and the headers that name
/// what is created, hashed with framing so that no two different identities share bytes.
pub(crate) fn request_key(
    method: &[u8],
    resource: &[u8],
    idempotency_key: Option<&[u8]>,
    name: Option<&[u8]>,
) -> u64 {
    let mut h = Fnv1a::new(b"request\0");
    h.write_blob(method);
    h.write_blob(resource);
    for part in [idempotency_key, name] {
        match part {
            Some(bytes) => {
                h.write_u64(1);
                h.write_blob(bytes);
            }
            None => h.write_u64(0),
        }
    }
    h.finish()
}

/// Why a request was refused before being handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_concurrent` requests are in flight.
    OverCapacity,
    /// The rate limit's bucket is empty; a token is due in `wait`.
    RateLimited {
        /// Until the next token, in real time.
        wait: Duration,
    },
}

/// Counts of what the injector did, as `/health` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Injected {
    /// Attempts answered with an injected `500`.
    pub(crate) errors: u64,
    /// Attempts whose connection was dropped.
    pub(crate) drops: u64,
    /// Attempts that were never answered.
    pub(crate) hangs: u64,
    /// Attempts of the slow tail.
    pub(crate) slow: u64,
    /// Requests refused with `429`.
    pub(crate) rate_limited: u64,
    /// Requests refused with `503` by the cap.
    pub(crate) over_capacity: u64,
}

#[derive(Debug, Default)]
struct Counters {
    errors: AtomicU64,
    drops: AtomicU64,
    hangs: AtomicU64,
    slow: AtomicU64,
    rate_limited: AtomicU64,
    over_capacity: AtomicU64,
}

/// Attempts and injected failures so far of one request identity.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    attempts: u32,
    faulted: u32,
}

/// How far back [`Bucket`] keeps the arrivals it admitted (real time): a request served this
/// much after a later arrival is still judged in its place.
const REORDER_HORIZON: Duration = Duration::from_secs(1);

/// The most admitted arrivals [`Bucket`] keeps, whatever the horizon (a very high rate).
const REORDER_LOG: usize = 1024;

/// The rate limit's token bucket, clocked on arrival times (see `arrival`).
///
/// Requests are taken in the order the server gets to them, which after a stall is not their
/// arrival order (a backlog read at once is served by two runtime threads, in any order). A
/// plain bucket advanced to a later arrival has already capped the refill an earlier one was
/// owed, and would refuse a backlog that kept to the rate for being served out of order. So
/// the bucket keeps the arrivals it admitted over the last [`REORDER_HORIZON`]: a request is
/// admitted when the bucket, replayed over those arrivals and it in arrival order, has a
/// token at every step. Older arrivals are folded into the bucket's level at `since`; a
/// request that arrived before that is judged as if it came then.
#[derive(Debug)]
struct Bucket {
    capacity: f64,
    /// Tokens per real second; infinite at time scale 0.
    refill: f64,
    /// The level just after the arrivals up to `since` took their tokens.
    tokens: f64,
    since: Instant,
    /// Arrivals admitted after `since`, in arrival order.
    recent: VecDeque<Instant>,
}

impl Bucket {
    fn new(limit: RateLimit, time_scale: f64) -> Self {
        let refill = if time_scale > 0.0 { limit.per_second / time_scale } else { f64::INFINITY };
        let capacity = f64::from(limit.burst);
        Self { capacity, refill, tokens: capacity, since: Instant::now(), recent: VecDeque::new() }
    }

    /// The level after `tokens` at `from` refills until `to`.
    fn refilled(&self, tokens: f64, from: Instant, to: Instant) -> f64 {
        (tokens + to.saturating_duration_since(from).as_secs_f64() * self.refill).min(self.capacity)
    }

    /// The level just after the last kept arrival, and when that was; `None` if some arrival
    /// finds no token.
    fn replay(&self) -> Option<(f64, Instant)> {
        let (mut tokens, mut at) = (self.tokens, self.since);
        for &arrival in &self.recent {
            tokens = self.refilled(tokens, at, arrival) - 1.0;
            at = arrival;
            if tokens < 0.0 {
                return None;
            }
        }
        Some((tokens, at))
    }

    /// Takes a token for a request that arrived at `arrived`, or says how long until one is
    /// due.
    fn take(&mut self, arrived: Instant) -> Result<(), Duration> {
        if !self.refill.is_finite() {
            return Ok(());
        }
        let arrived = arrived.max(self.since);
        let place = self.recent.partition_point(|&arrival| arrival <= arrived);
        self.recent.insert(place, arrived);
        if self.replay().is_none() {
            self.recent.remove(place);
            let (tokens, at) = self.replay().unwrap_or((0.0, self.since));
            let level = self.refilled(tokens, at, arrived);
            let wait = ((1.0 - level) / self.refill).max(1.0 / self.refill);
            return Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX));
        }
        let latest = self.recent.back().copied().unwrap_or(arrived);
        while let Some(&oldest) = self.recent.front() {
            if self.recent.len() <= REORDER_LOG && latest.saturating_duration_since(oldest) <= REORDER_HORIZON
            {
                break;
            }
            self.tokens = self.refilled(self.tokens, self.since, oldest) - 1.0;
            self.since = oldest;
            self.recent.pop_front();
        }
        Ok(())
    }
}

/// The running side of [`Faults`]: admission (cap, rate limit), fates and counters.
#[derive(Debug)]
pub(crate) struct Injector {
    faults: Faults,
    seed: u64,
    /// Attempts seen per request identity; only filled when some per-attempt fault is on.
    seen: Mutex<HashMap<u64, Seen>>,
    bucket: Option<Mutex<Bucket>>,
    in_flight: AtomicUsize,
    counters: Counters,
}

/// A request's place among those in flight; released on drop.
#[derive(Debug)]
pub(crate) struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Injector {
    /// The injector of a validated `faults` for a server with `seed` and `time_scale`.
    pub(crate) fn new(faults: Faults, seed: u64, time_scale: f64) -> Self {
        let bucket = faults.rate_limit.map(|limit| Mutex::new(Bucket::new(limit, time_scale)));
        Self {
            faults,
            seed,
            seen: Mutex::new(HashMap::new()),
            bucket,
            in_flight: AtomicUsize::new(0),
            counters: Counters::default(),
        }
    }

    /// The configured faults.
    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Admits a request that `arrived` then (it counts as in flight until the slot drops) or
    /// refuses it. The rate limit is measured on the arrival times, not on when the server
    /// gets to each request (see `arrival`).
    pub(crate) fn admit(&self, arrived: Instant) -> Result<Slot<'_>, Refusal> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(&self.in_flight);
        if self.faults.max_concurrent.is_some_and(|max| before >= max) {
            self.counters.over_capacity.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::OverCapacity);
        }
        if let Some(bucket) = &self.bucket
            && let Err(wait) = lock(bucket).take(arrived)
        {
            self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::RateLimited { wait });
        }
        Ok(slot)
    }

    /// Draws the fate of the next attempt of the request identified by `key` (computed only
    /// when some per-attempt fault is on), and counts it.
    pub(crate) fn decide(&self, key: impl FnOnce() -> u64) -> Fate {
        if !self.faults.draws_fates() {
            return Fate::FINE;
        }
        let key = key();
        let fate = {
            let mut seen = lock(&self.seen);
            let entry = seen.entry(key).or_default();
            let fate = fate(self.seed, &self.faults, key, entry.attempts, entry.faulted);
            entry.attempts = entry.attempts.saturating_add(1);
            if fate.fault.is_some() {
                entry.faulted = entry.faulted.saturating_add(1);
            }
            fate
        };
        let counter = match fate.fault {
            Some(Fault::Error) => Some(&self.counters.errors),
            Some(Fault::Drop) => Some(&self.counters.drops),
            Some(Fault::Hang) => Some(&self.counters.hangs),
            None => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if fate.slow {
            self.counters.slow.fetch_add(1, Ordering::Relaxed);
        }
        fate
    }

    /// Requests in flight now (exempt routes excluded).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// What was injected so far.
    pub(crate) fn injected(&self) -> Injected {
        let c = &self.counters;
        Injected {
            errors: c.errors.load(Ordering::Relaxed),
            drops: c.drops.load(Ordering::Relaxed),
            hangs: c.hangs.load(Ordering::Relaxed),
            slow: c.slow.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            over_capacity: c.over_capacity.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(faults: &Faults, seed: u64, n: u64) -> (u64, u64, u64, u64) {
        let (mut errors, mut drops, mut slow, mut before) = (0, 0, 0, 0);
        for id in 0..n {
            let f = fate(seed, faults, request_key(b"GET", format!("/x/{id}").as_bytes(), None, None), 0, 0);
            match f.fault {
                Some(Fault::Error) => errors += 1,
                Some(Fault::Drop) => drops += 1,
                Some(Fault::Hang) | None => {}
            }
            slow += u64::from(f.slow);
            before += u64::from(f.before);
        }
        (errors, drops, slow, before)
    }

    #[test]
    fn default_is_off_and_valid() {
        let faults = Faults::default();
        assert!(faults.is_off());
        assert!(faults.validate().is_ok());
        assert_eq!(fate(1, &faults, 7, 0, 0), Fate::FINE);
        assert!(!Faults::none().with_error_rate(0.1).is_off());
        assert!(!Faults::none().with_max_concurrent(3).is_off());
        assert!(!Faults::none().with_rate_limit(RateLimit::new(1.0, 1)).is_off());
    }

    #[test]
    fn shares_match_the_rates() {
        let faults = Faults::none()
            .with_error_rate(0.1)
            .with_drop_rate(0.02)
            .with_slow_tail(0.05, 10.0)
            .with_point(FaultPoint::Either);
        let n = 100_000;
        let (errors, drops, slow, before) = shares(&faults, 42, n);
        let near = |count: u64, rate: f64| ((count as f64 / n as f64) - rate).abs() < 0.01;
        assert!(near(errors, 0.1), "{errors}");
        assert!(near(drops, 0.02), "{drops}");
        assert!(near(slow, 0.05), "{slow}");
        assert!(near(before, 0.5), "{before}");
        let always = Faults::none().with_error_rate(1.0).with_point(FaultPoint::Before);
        assert_eq!(shares(&always, 42, 100), (100, 0, 0, 100));
        let drop_all = Faults::none().with_drop_rate(1.0);
        assert_eq!(shares(&drop_all, 42, 100), (0, 100, 0, 0));
    }

    #[test]
    fn fates_are_pure_and_keyed() {
        let faults = Faults::none().with_error_rate(0.5).with_drop_rate(0.2).with_slow_tail(0.5, 10.0);
        let key = request_key(b"POST", b"/new/tickets", Some(b"10001"), None);
        let run = |seed| (0..32).map(|attempt| fate(seed, &faults, key, attempt, 0)).collect::<Vec<_>>();
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
        let other = request_key(b"POST", b"/new/tickets", Some(b"10002"), None);
        let other_run = (0..32).map(|attempt| fate(42, &faults, other, attempt, 0)).collect::<Vec<_>>();
        assert_ne!(run(42), other_run);
    }

    #[test]
    fn identity_framing_separates_parts() {
        let a = request_key(b"POST", b"/a", Some(b"b"), None);
        let b = request_key(b"POST", b"/ab", None, None);
        let c = request_key(b"POST", b"/a", None, Some(b"b"));
        assert!(a != b && b != c && a != c);
        assert_ne!(request_key(b"GET", b"/x", None, None), request_key(b"POST", b"/x", None, None));
    }

    #[test]
    fn max_per_request_bounds_failures() {
        let faults = Faults::none().with_error_rate(1.0).with_max_per_request(2);
        let injector = Injector::new(faults, 1, 1.0);
        let outcomes: Vec<_> = (0..4).map(|_| injector.decide(|| 99).fault).collect();
        assert_eq!(outcomes, [Some(Fault::Error), Some(Fault::Error), None, None]);
        // Another identity has its own count.
        assert_eq!(injector.decide(|| 100).fault, Some(Fault::Error));
        assert_eq!(injector.injected().errors, 3);
    }

    #[test]
    fn hangs_take_their_share_and_leave_the_other_fates_alone() {
        let base = Faults::none().with_error_rate(0.1).with_drop_rate(0.05);
        let with_hangs = base.clone().with_hang_rate(0.2);
        let (mut hangs, mut changed) = (0, 0);
        for id in 0..10_000_u64 {
            let key = request_key(b"GET", format!("/x/{id}").as_bytes(), None, None);
            let (before, after) = (fate(9, &base, key, 0, 0), fate(9, &with_hangs, key, 0, 0));
            match after.fault {
                Some(Fault::Hang) => hangs += 1,
                _ => changed += usize::from(before != after),
            }
            // A request that fails without hangs fails the same way with them.
            if before.fault.is_some() {
                assert_eq!(before, after, "request {id}");
            }
        }
        assert!((1_800..2_200).contains(&hangs), "{hangs} hangs in 10,000 at a rate of 0.2");
        assert_eq!(changed, 0, "turning hangs on changed other fates");
    }

    #[test]
    fn validation_names_the_field() {
        let message = |f: Faults| f.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message(Faults::none().with_error_rate(1.5)).contains("error_rate"));
        assert!(message(Faults::none().with_drop_rate(-0.1)).contains("drop_rate"));
        assert!(message(Faults::none().with_slow_tail(f64::NAN, 10.0)).contains("slow_rate"));
        assert!(message(Faults::none().with_error_rate(0.7).with_drop_rate(0.7)).contains("at most 1"));
        assert!(message(Faults::none().with_hang_rate(2.0)).contains("hang_rate"));
        assert!(message(Faults::none().with_drop_rate(0.5).with_hang_rate(0.6)).contains("at most 1"));
        assert!(message(Faults::none().with_slow_tail(0.1, 0.5)).contains("slow_factor"));
        assert!(message(Faults::none().with_rate_limit(RateLimit::new(0.0, 1))).contains("per_second"));
        assert!(message(Faults::none().with_rate_limit(RateLimit::new(1.0, 0))).contains("burst"));
        assert!(message(Faults::none().with_max_concurrent(0)).contains("max_concurrent"));
        assert!(Faults::none().with_error_rate(0.9).with_drop_rate(0.1).validate().is_ok());
    }

    #[test]
    fn bucket_admits_a_burst_then_refills() {
        let mut bucket = Bucket::new(RateLimit::new(2.0, 3), 1.0);
        let start = bucket.since;
        for _ in 0..3 {
            assert_eq!(bucket.take(start), Ok(()));
        }
        assert_eq!(bucket.take(start), Err(Duration::from_millis(500)));
        assert_eq!(bucket.take(start + Duration::from_millis(500)), Ok(()));
        // Time scale 0.5: twice as fast in real time.
        let mut fast = Bucket::new(RateLimit::new(2.0, 1), 0.5);
        let start = fast.since;
        assert_eq!(fast.take(start), Ok(()));
        assert_eq!(fast.take(start), Err(Duration::from_millis(250)));
        // Time scale 0: never refuses.
        let mut free = Bucket::new(RateLimit::new(1.0, 1), 0.0);
        let start = free.since;
        assert!((0..100).all(|_| free.take(start).is_ok()));
    }

    #[test]
    fn arrivals_served_out_of_order_are_judged_by_their_arrival() {
        // 10 a second, no burst: arrivals 150 ms apart all conform, in whatever order they
        // are served.
        let orders: [[u64; 3]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
        for order in orders {
            let mut bucket = Bucket::new(RateLimit::new(10.0, 1), 1.0);
            let start = bucket.since + Duration::from_secs(1);
            for index in order {
                let arrival = start + Duration::from_millis(150 * index);
                assert_eq!(bucket.take(arrival), Ok(()), "{order:?}");
            }
            // A fourth within them is over the rate, in any place.
            for ms in [0, 75, 150, 225, 300] {
                assert!(bucket.take(start + Duration::from_millis(ms)).is_err(), "{order:?}, {ms} ms");
            }
        }
        // Back to back, out of order or not, is over the rate.
        let mut bucket = Bucket::new(RateLimit::new(10.0, 1), 1.0);
        let start = bucket.since + Duration::from_secs(1);
        assert_eq!(bucket.take(start + Duration::from_millis(10)), Ok(()));
        assert!(bucket.take(start + Duration::from_millis(5)).is_err());
        assert!(bucket.take(start + Duration::from_millis(10)).is_err());
        // Past the horizon an arrival counts as if it came at the folded point.
        let mut bucket = Bucket::new(RateLimit::new(10.0, 2), 1.0);
        let start = bucket.since + Duration::from_secs(1);
        for ms in [0, 500, 1000, 1500, 2000] {
            assert_eq!(bucket.take(start + Duration::from_millis(ms)), Ok(()));
        }
        assert_eq!(bucket.recent.len(), 3, "older ones folded");
        assert_eq!(bucket.take(start), Ok(()), "judged as if it came at 500 ms, the folded point");
    }

    #[test]
    fn the_cap_refuses_and_releases() {
        let injector = Injector::new(Faults::none().with_max_concurrent(2), 1, 1.0);
        let a = injector.admit(Instant::now());
        let b = injector.admit(Instant::now());
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(injector.admit(Instant::now()).err(), Some(Refusal::OverCapacity));
        assert_eq!(injector.in_flight(), 2);
        drop(a);
        assert!(injector.admit(Instant::now()).is_ok());
        assert_eq!(injector.in_flight(), 1);
        assert_eq!(injector.injected().over_capacity, 1);
    }
}
