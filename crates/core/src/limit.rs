//! Rate limits that every worker of an executor shares: [`RateLimit`] (a builder setting),
//! [`acquire`] and [`pause`] (what a job calls), and [`Limiter`], the one limiter of a root
//! executor that serves them all.
//!
//! A limiter inside each worker multiplies the rate by the number of workers (PyrateLimiter's
//! issue 90: a 7/s limit inside `Pool(40)` measured 281/s). Here the limit lives once, in the
//! process that owns the executor, and everything draws from it: the executor's own dispatch
//! (a permit per job, the default), jobs that take a permit per request ([`acquire`], with
//! [`RateLimit::per_request`]), worker processes (which ask their parent over the pool's
//! channel), and pools nested inside jobs (which draw from the root's limiter instead of
//! making a second one).
//!
//! The rate is a GCRA ([`governor`]), so a burst of 1, the default, spaces permits evenly at
//! `1 / rate`: the server sees the rate it asked for, not a burst and a stall.
//!
//! ```
//! use std::time::Duration;
//! use fanout_core::limit::{self, RateLimit};
//!
//! // Outside an executor with a limit, `acquire` returns at once.
//! limit::acquire();
//! let limit = RateLimit::per_second(500.0).burst(5);
//! assert_eq!(limit.rate(), 500.0);
//! assert!(RateLimit::per_second(0.0).validate().is_err());
//! ```

use std::cell::RefCell;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::BuildError;

/// A rate limit: permits per second (a positive, finite number; fractions are fine) and how
/// many may be taken at once after a pause (the burst, 1 by default: evenly spaced).
///
/// By default the executor takes one permit per job before it hands the job to a worker.
/// [`per_request`](Self::per_request) leaves that to the jobs, which call [`acquire`] before
/// each request they make, so that a job of eight requests takes eight permits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    per_second: f64,
    burst: u32,
    scope: Scope,
}

/// Who takes the permits of a [`RateLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Scope {
    /// The executor, one permit per job, before the job starts.
    PerJob,
    /// The jobs themselves, with [`acquire`]: one permit per request.
    PerRequest,
}

impl RateLimit {
    /// `per_second` permits a second, a burst of 1, one permit per job.
    pub fn per_second(per_second: f64) -> Self {
        Self { per_second, burst: 1, scope: Scope::PerJob }
    }

    /// At most `burst` permits at once after an idle spell (at least 1).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// Jobs take the permits, one per request, with [`acquire`]; the executor takes none.
    pub fn per_request(mut self) -> Self {
        self.scope = Scope::PerRequest;
        self
    }

    /// Permits per second.
    pub fn rate(&self) -> f64 {
        self.per_second
    }

    /// Who takes the permits.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The error a builder reports for this limit, if it is not a usable one.
    pub fn validate(&self) -> Result<(), BuildError> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err(BuildError::InvalidRateLimit {
                reason: format!(
                    "the rate must be a finite number of permits per second above 0, not {}",
                    self.per_second
                ),
            });
        }
        if self.burst == 0 {
            return Err(BuildError::InvalidRateLimit { reason: "the burst must be at least 1".to_owned() });
        }
        // GCRA counts in nanoseconds: a period under 1 ns is no limit at all.
        if 1e9 / self.per_second < 1.0 {
            return Err(BuildError::InvalidRateLimit {
                reason: format!("{} permits per second is more than one a nanosecond", self.per_second),
            });
        }
        Ok(())
    }

    /// The time between two permits at the sustained rate (`1 / rate`).
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s (burst {})", self.per_second, self.burst)
    }
}

/// Where permits come from: a [`Limiter`] in this process, or (in a worker process) the
/// limiter of the parent, asked over the pool's channel.
pub trait PermitSource: Send + Sync {
    /// Blocks until one permit is granted.
    fn acquire(&self);

    /// Takes a permit if one is free now, for callers that must not block (a dispatcher, an
    /// event loop); see [`Poll`].
    fn poll_acquire(&self) -> Poll {
        Poll::MustBlock
    }

    /// Pauses every permit for `duration` from now (a server's `Retry-After`).
    fn pause(&self, duration: Duration);

    /// Whether jobs take the permits themselves (see [`RateLimit::per_request`]).
    fn scope(&self) -> Scope;

    /// The time between two permits at the limit's rate, when this source knows it: how long
    /// a permit handed to another process stays good (a request sent later than that lands
    /// on a later permit's slot, and bunches with it). `None`: no bound.
    fn period(&self) -> Option<Duration> {
        None
    }
}

/// What [`PermitSource::poll_acquire`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// A permit was taken.
    Granted,
    /// No permit before this long from now: ask again then.
    WaitFor(Duration),
    /// This source can only grant by blocking (it asks another process): call
    /// [`PermitSource::acquire`] on a thread that may block.
    MustBlock,
}

/// The rate limiter of one root executor, shared by everything that runs on its behalf.
pub struct Limiter {
    gcra: DefaultDirectRateLimiter,
    limit: RateLimit,
    /// No permit before this many nanoseconds after `epoch` (0: no pause).
    paused_until: AtomicU64,
    /// Permits granted so far.
    granted: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Limiter {
    /// A limiter for `limit`, which must be valid ([`RateLimit::validate`]).
    pub fn new(limit: RateLimit) -> Result<Self, BuildError> {
        limit.validate()?;
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(limit.period())
            .ok_or_else(|| BuildError::InvalidRateLimit { reason: format!("{limit} has no period") })?
            .allow_burst(burst);
        Ok(Self {
            gcra: RateLimiter::direct(quota),
            limit,
            paused_until: AtomicU64::new(0),
            granted: AtomicU64::new(0),
        })
    }

    /// The limit this limiter keeps.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Permits granted so far.
    pub fn granted(&self) -> u64 {
        self.granted.load(Ordering::Relaxed)
    }

    /// Takes one permit if one is free now; otherwise says how long to wait before asking
    /// again (for a dispatcher that must not block).
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let paused = self.paused_for();
        if !paused.is_zero() {
            return Err(paused);
        }
        match self.gcra.check() {
            Ok(()) => {
                self.granted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(not_until) => {
                Err(not_until.wait_time_from(DefaultClock::default().now()).max(Duration::from_micros(1)))
            }
        }
    }

    /// How long the current pause lasts from now (zero when there is none).
    fn paused_for(&self) -> Duration {
        let until = self.paused_until.load(Ordering::Acquire);
        if until == 0 {
            return Duration::ZERO;
        }
        let now = epoch().elapsed().as_nanos() as u64;
        Duration::from_nanos(until.saturating_sub(now))
    }
}

impl PermitSource for Limiter {
    fn acquire(&self) {
        while let Err(wait) = self.try_acquire() {
            std::thread::sleep(wait);
        }
    }

    fn poll_acquire(&self) -> Poll {
        match self.try_acquire() {
            Ok(()) => Poll::Granted,
            Err(wait) => Poll::WaitFor(wait),
        }
    }

    fn pause(&self, duration: Duration) {
        let until = (epoch().elapsed() + duration).as_nanos() as u64;
        self.paused_until.fetch_max(until, Ordering::AcqRel);
    }

    fn scope(&self) -> Scope {
        self.limit.scope
    }

    fn period(&self) -> Option<Duration> {
        Some(self.limit.period())
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter").field("limit", &self.limit).field("granted", &self.granted()).finish()
    }
}

/// A shared handle on a [`PermitSource`]: what executors keep and pass to their jobs' threads.
pub type PermitHandle = Arc<dyn PermitSource>;

thread_local! {
    /// The permit source of the executor whose job runs on this thread.
    static AMBIENT: RefCell<Option<PermitHandle>> = const { RefCell::new(None) };
    /// Whether the job running on this thread holds a `max_in_flight` slot.
    static HOLDS_SLOT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Takes one permit from the rate limit of the executor running this job (blocking until it is
/// granted), or returns at once when there is none. Call it before each request when the
/// executor's limit is [`per_request`](RateLimit::per_request); with a per-job limit the
/// executor took this job's permit already, and this takes one more.
///
/// In a worker process the permit comes from the parent's limiter, so the limit holds across
/// every worker; in a pool nested inside a job, from the root executor's.
pub fn acquire() {
    if let Some(source) = ambient() {
        source.acquire();
    }
}

/// Pauses the rate limit of the executor running this job for `duration` (a `429`'s
/// `Retry-After`): no worker gets a permit before it ends, so one `429` slows every worker
/// instead of each finding the limit on its own. Does nothing outside a limited executor.
pub fn pause(duration: Duration) {
    if let Some(source) = ambient() {
        source.pause(duration);
    }
}

/// The permit source of the executor whose job runs on this thread, if it has a limit: a pool
/// built inside a job inherits it, so that it draws from the root's limit.
pub fn ambient() -> Option<PermitHandle> {
    AMBIENT.with_borrow(Clone::clone)
}

/// Makes `source` the permit source of the jobs on this thread until the guard is dropped (for
/// executors, around their workers' jobs).
pub struct AmbientGuard {
    previous: Option<PermitHandle>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl AmbientGuard {
    /// Installs `source` on this thread.
    pub fn install(source: Option<PermitHandle>) -> Self {
        let previous = AMBIENT.replace(source);
        Self { previous, _not_send: std::marker::PhantomData }
    }
}

impl Drop for AmbientGuard {
    fn drop(&mut self) {
        AMBIENT.set(self.previous.take());
    }
}

impl fmt::Debug for AmbientGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmbientGuard").finish_non_exhaustive()
    }
}

/// The permit source a new executor uses: its own limit's, or else the one of the job it is
/// built in (a nested pool draws from its root's limit).
pub fn source_for(limit: Option<RateLimit>) -> Result<Option<PermitHandle>, BuildError> {
    match limit {
        Some(limit) => Ok(Some(Arc::new(Limiter::new(limit)?))),
        None => Ok(ambient()),
    }
}

/// An executor's limits in one place: the permits a job takes before it starts (a
/// [`PerJob`](Scope::PerJob) rate limit, its own or its root's) and the slots of
/// `max_in_flight`. Executors whose workers may block call [`enter`](Self::enter) before each
/// job; others use the parts.
#[derive(Clone, Default)]
pub struct Gate {
    /// The permit source of the executor's jobs (per job or per request), for [`AmbientGuard`].
    source: Option<PermitHandle>,
    /// Taken per job before it starts: `source` when its scope is per job.
    per_job: Option<PermitHandle>,
    slots: Option<Arc<Slots>>,
}

impl Gate {
    /// The gate of an executor built with `limit` and `max_in_flight` (a pool built inside a
    /// limited job inherits that job's rate limit when it has none of its own).
    pub fn new(limit: Option<RateLimit>, max_in_flight: Option<usize>) -> Result<Self, BuildError> {
        let source = source_for(limit)?;
        let per_job = source.clone().filter(|source| source.scope() == Scope::PerJob);
        let slots = match max_in_flight {
            Some(0) => return Err(BuildError::ZeroInFlight),
            Some(max) => Some(Arc::new(Slots::new(max))),
            None => None,
        };
        Ok(Self { source, per_job, slots })
    }

    /// Whether the gate limits nothing: jobs go straight through (the fast path).
    #[inline]
    pub fn is_open(&self) -> bool {
        self.per_job.is_none() && self.slots.is_none()
    }

    /// Whether the executor's jobs have a permit source (a rate limit, per job or per request,
    /// their own or their root's).
    #[inline]
    pub fn is_rate_limited(&self) -> bool {
        self.source.is_some()
    }

    /// The permit source to install on the executor's job threads (see [`AmbientGuard`]).
    pub fn source(&self) -> Option<PermitHandle> {
        self.source.clone()
    }

    /// The permits a job takes before it starts, if the rate limit is per job.
    pub fn per_job(&self) -> Option<&PermitHandle> {
        self.per_job.as_ref()
    }

    /// The slots of `max_in_flight`, if there is a limit.
    pub fn slots(&self) -> Option<&Arc<Slots>> {
        self.slots.as_ref()
    }

    /// Blocks until the next job may start: a slot, then a permit. The job runs while the
    /// returned guard lives; dropping it frees the slot.
    ///
    /// A job that waits for jobs of its own executor (a nested `map` on the same pool, whose
    /// worker runs queued jobs while it waits) already holds a slot: the jobs it runs on its
    /// thread take none, or a `max_in_flight` below the nesting depth would deadlock.
    pub fn enter(&self) -> GateGuard {
        let slot = match &self.slots {
            Some(slots) if !HOLDS_SLOT.get() => {
                let slot = slots.take();
                HOLDS_SLOT.set(true);
                Some(slot)
            }
            _ => None,
        };
        if let Some(permits) = &self.per_job {
            permits.acquire();
        }
        GateGuard { _slot: slot, _not_send: std::marker::PhantomData }
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("rate_limited", &self.source.is_some())
            .field("per_job", &self.per_job.is_some())
            .field("max_in_flight", &self.slots.as_ref().map(|slots| slots.max))
            .finish()
    }
}

/// A job's pass through a [`Gate`]: holds its `max_in_flight` slot, on the thread that
/// entered.
#[derive(Debug)]
pub struct GateGuard {
    _slot: Option<SlotGuard>,
    _not_send: std::marker::PhantomData<*const ()>,
}

/// `max_in_flight`: a counting semaphore of blocking slots.
#[derive(Debug)]
pub struct Slots {
    max: usize,
    taken: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

impl Slots {
    fn new(max: usize) -> Self {
        Self { max, taken: std::sync::Mutex::new(0), freed: std::sync::Condvar::new() }
    }

    /// How many jobs may be in flight at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes a slot, waiting for one to be free.
    pub fn take(self: &Arc<Self>) -> SlotGuard {
        let mut taken = self.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *taken >= self.max {
            taken = self.freed.wait(taken).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *taken += 1;
        SlotGuard { slots: Arc::clone(self) }
    }

    /// Takes a slot if one is free now.
    pub fn try_take(self: &Arc<Self>) -> Option<SlotGuard> {
        let mut taken = self.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (*taken < self.max).then(|| {
            *taken += 1;
            SlotGuard { slots: Arc::clone(self) }
        })
    }
}

/// A taken slot of [`Slots`], freed when dropped.
#[derive(Debug)]
pub struct SlotGuard {
    slots: Arc<Slots>,
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        if self._slot.is_some() {
            HOLDS_SLOT.set(false);
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut taken = self.slots.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *taken -= 1;
        self.slots.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_that_is_not_positive_is_refused() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e9] {
            assert!(
                matches!(RateLimit::per_second(rate).validate(), Err(BuildError::InvalidRateLimit { .. })),
                "{rate}"
            );
        }
        assert!(RateLimit::per_second(5.0).burst(0).validate().is_err());
        assert!(RateLimit::per_second(0.5).validate().is_ok());
    }

    #[test]
    fn permits_are_spaced_by_the_rate() {
        let limiter = Limiter::new(RateLimit::per_second(200.0)).unwrap();
        let start = Instant::now();
        for _ in 0..21 {
            limiter.acquire();
        }
        // 20 intervals of 5 ms at least (the first permit is free); no upper bound, the
        // machine may be slow.
        assert!(start.elapsed() >= Duration::from_millis(95), "{:?}", start.elapsed());
        assert_eq!(limiter.granted(), 21);
    }

    #[test]
    fn a_pause_holds_every_permit() {
        let limiter = Limiter::new(RateLimit::per_second(1000.0).burst(10)).unwrap();
        limiter.pause(Duration::from_millis(100));
        assert!(limiter.try_acquire().is_err());
        let start = Instant::now();
        limiter.acquire();
        assert!(start.elapsed() >= Duration::from_millis(80), "{:?}", start.elapsed());
    }
}
