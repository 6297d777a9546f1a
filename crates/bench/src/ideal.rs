//! The ideal time of each scenario: what a run would take if the executor added nothing, no
//! request cost anything but the server's wait, and the server answered every request at once.
//!
//! The latencies are the ones the server **applies** ([`Applied`], read from `GET /health`'s
//! `latency_us`): the configured latency times the time scale, rounded to the microsecond by
//! the server, whose precise timer then waits exactly that long. At time scale 0.01 an item
//! takes 10.465 ms.
//!
//! - `api-calls`: `ceil(jobs / workers)` rounds of one item request ([`api_calls`]); also the
//!   ideal of `blocking-on-loop`, the same requests, which is what its futures would take if
//!   they awaited instead of blocking.
//! - `ticket-migration`: the queue listing, then a greedy simulation of the outer workers
//!   taking tickets in queue order, each ticket costing details + attachment list + POST plus
//!   `ceil(attachments / inner workers)` rounds of download + upload ([`migration`]). A serial
//!   run is the same model with one outer and one inner worker: the full serial cost.
//! - `cpu`: the per-job time measured serially in the run's own process just before the run,
//!   times `ceil(jobs / min(workers, cores))` ([`cpu`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Duration;

use fanout_mock_api::{Config, Route};
use serde::Deserialize;

/// The answer of `GET /health`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Health {
    /// The server's data seed.
    pub seed: u64,
    /// The server's time scale.
    pub time_scale: f64,
    /// The applied latency of each route in microseconds, keyed by [`Route::key`].
    pub latency_us: BTreeMap<String, u64>,
    /// The faults the server injects (only its rate limit is read).
    #[serde(default)]
    pub faults: HealthFaults,
    /// What the server injected so far.
    #[serde(default)]
    pub injected: Injected,
}

/// `faults` of `GET /health`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HealthFaults {
    /// The rate limit: requests per second at time scale 1, and the burst.
    #[serde(default)]
    pub rate_limit: Option<HealthRateLimit>,
}

/// `faults.rate_limit` of `GET /health`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct HealthRateLimit {
    /// Requests per second at time scale 1.
    pub per_second: f64,
    /// Requests admitted back to back.
    pub burst: u32,
}

/// `injected` of `GET /health`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Injected {
    /// Requests refused with `429` so far.
    #[serde(default)]
    pub rate_limited: u64,
}

impl Health {
    /// The server's rate limit in requests per real second (its `per_second` over its time
    /// scale), if it has one and a time scale above 0.
    pub fn server_rate_limit(&self) -> Option<f64> {
        let limit = self.faults.rate_limit?;
        (self.time_scale > 0.0).then(|| limit.per_second / self.time_scale)
    }
}

/// `/health` did not list a route's latency.
#[derive(Debug, Clone, thiserror::Error)]
#[error("GET /health lists no latency for the {0} route; is the server a fanout mock API?")]
pub struct MissingRoute(&'static str);

/// The latency the server applies to each route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied(HashMap<Route, Duration>);

impl Applied {
    /// The latencies a server reports in `GET /health`.
    pub fn from_health(health: &Health) -> Result<Self, MissingRoute> {
        Route::ALL
            .iter()
            .map(|&route| match health.latency_us.get(route.key()) {
                Some(&micros) => Ok((route, Duration::from_micros(micros))),
                None => Err(MissingRoute(route.key())),
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// The latencies a server started with `config` applies (for tests and offline models).
    pub fn from_config(config: &Config) -> Self {
        Self(Route::ALL.iter().map(|&route| (route, config.applied_latency(route))).collect())
    }

    /// The applied latency of `route`.
    pub fn get(&self, route: Route) -> Duration {
        self.0.get(&route).copied().unwrap_or_default()
    }
}

/// `count` repetitions of `each` (saturating).
fn times(each: Duration, count: usize) -> Duration {
    each.checked_mul(u32::try_from(count).unwrap_or(u32::MAX)).unwrap_or(Duration::MAX)
}

/// `api-calls`: `ceil(jobs / workers)` rounds of one `GET /api/items/{id}`.
pub fn api_calls(latency: &Applied, jobs: usize, workers: usize) -> Duration {
    times(latency.get(Route::Items), jobs.div_ceil(workers.max(1)))
}

/// `ticket-migration`: the queue listing, then `outer` workers taking the tickets (given by
/// their attachment counts, in queue order) each from the earliest free worker; a ticket costs
/// details + attachment list + POST, then `ceil(attachments / inner)` rounds of download +
/// upload on its inner executor.
pub fn migration(latency: &Applied, attachments: &[usize], outer: usize, inner: usize) -> Duration {
    let fixed = latency.get(Route::TicketDetails)
        + latency.get(Route::AttachmentList)
        + latency.get(Route::PostTicket);
    let per_round = latency.get(Route::AttachmentDownload) + latency.get(Route::PostAttachment);
    let mut free_at: BinaryHeap<Reverse<Duration>> =
        std::iter::repeat_n(Reverse(Duration::ZERO), outer.clamp(1, attachments.len().max(1))).collect();
    for &count in attachments {
        if let Some(Reverse(start)) = free_at.pop() {
            let ticket = fixed.saturating_add(times(per_round, count.div_ceil(inner.max(1))));
            free_at.push(Reverse(start.saturating_add(ticket)));
        }
    }
    let makespan = free_at.into_iter().map(|Reverse(end)| end).max().unwrap_or_default();
    latency.get(Route::QueueTickets).saturating_add(makespan)
}

/// A client rate limit for [`throttled_api_calls`] and [`throttled_migration`]: permits per
/// second and the burst of its GCRA.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttle {
    /// Permits per second.
    pub rate: f64,
    /// Permits granted back to back (at least 1).
    pub burst: u32,
}

/// GCRA permits handed out in request order: each request gets the first permit at or after it
/// asks.
struct Permits {
    period: Duration,
    tolerance: Duration,
    /// The theoretical arrival time of the next permit.
    next: Duration,
}

impl Permits {
    fn new(throttle: Throttle) -> Self {
        let period = Duration::try_from_secs_f64(1.0 / throttle.rate).unwrap_or(Duration::MAX);
        let tolerance = times(period, throttle.burst.max(1) as usize - 1);
        Self { period, tolerance, next: Duration::ZERO }
    }

    /// The time at which a request asking at `at` gets its permit.
    fn grant(&mut self, at: Duration) -> Duration {
        let granted = at.max(self.next.saturating_sub(self.tolerance));
        self.next = self.next.max(granted).saturating_add(self.period);
        granted
    }
}

/// `api-calls` under a client limit of one permit per call: `jobs` calls on `workers`
/// workers, each call waiting for its permit and then its latency.
pub fn throttled_api_calls(latency: &Applied, jobs: usize, workers: usize, throttle: Throttle) -> Duration {
    let call = latency.get(Route::Items);
    let mut permits = Permits::new(throttle);
    let mut free_at: BinaryHeap<Reverse<Duration>> =
        std::iter::repeat_n(Reverse(Duration::ZERO), workers.clamp(1, jobs.max(1))).collect();
    let mut end = Duration::ZERO;
    for _ in 0..jobs {
        if let Some(Reverse(free)) = free_at.pop() {
            let done = permits.grant(free).saturating_add(call);
            end = end.max(done);
            free_at.push(Reverse(done));
        }
    }
    end
}

/// One request of the migration, as [`throttled_migration`] follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// The queue listing.
    Listing,
    /// A ticket's details, attachment list and POST (0, 1, 2), by its index in queue order.
    Ticket(usize, u8),
    /// The download (0) or upload (1) of a ticket's attachment.
    Attachment(usize, u8),
}

/// `ticket-migration` under a client limit of one permit per request, simulated: the listing,
/// then `outer` workers taking the tickets in queue order; each ticket's details, attachment
/// list and POST one after another, then its attachments `inner` at a time, each a download
/// and an upload. Every request waits for the next permit, in the order the requests are
/// made, then its route's latency. Where [`migration`] is the critical path of the waits
/// alone, this is the critical path of the waits and the limit together: at the start and
/// the end fewer requests are ready than the limit would allow (every ticket waits for the
/// listing; the last tickets' requests follow one another).
pub fn throttled_migration(
    latency: &Applied,
    attachments: &[usize],
    outer: usize,
    inner: usize,
    throttle: Throttle,
) -> Duration {
    // Events in time order: (time, is a completion, step); at one instant completions first.
    let mut events: BinaryHeap<Reverse<(Duration, u8, Step)>> = BinaryHeap::new();
    let mut permits = Permits::new(throttle);
    let inner = inner.max(1);
    let route = |step: Step| match step {
        Step::Listing => Route::QueueTickets,
        Step::Ticket(_, 0) => Route::TicketDetails,
        Step::Ticket(_, 1) => Route::AttachmentList,
        Step::Ticket(..) => Route::PostTicket,
        Step::Attachment(_, 0) => Route::AttachmentDownload,
        Step::Attachment(..) => Route::PostAttachment,
    };
    // Per ticket: attachments not started yet, and not finished yet.
    let mut to_start: Vec<usize> = attachments.to_vec();
    let mut unfinished: Vec<usize> = attachments.to_vec();
    let mut next_ticket = 0;
    let mut end = Duration::ZERO;
    events.push(Reverse((Duration::ZERO, 1, Step::Listing)));
    while let Some(Reverse((at, kind, step))) = events.pop() {
        if kind == 1 {
            // Asked: the permit, then the latency.
            let done = permits.grant(at).saturating_add(latency.get(route(step)));
            events.push(Reverse((done, 0, step)));
            continue;
        }
        end = end.max(at);
        let ask = |events: &mut BinaryHeap<_>, step| events.push(Reverse((at, 1, step)));
        let mut ticket_done = false;
        match step {
            Step::Listing => {
                for _ in 0..outer.clamp(1, attachments.len().max(1)) {
                    if next_ticket < attachments.len() {
                        ask(&mut events, Step::Ticket(next_ticket, 0));
                        next_ticket += 1;
                    }
                }
            }
            Step::Ticket(ticket, part @ (0 | 1)) => ask(&mut events, Step::Ticket(ticket, part + 1)),
            Step::Ticket(ticket, _) => {
                let starting = to_start.get(ticket).copied().unwrap_or(0).min(inner);
                if let Some(left) = to_start.get_mut(ticket) {
                    *left -= starting;
                }
                for _ in 0..starting {
                    ask(&mut events, Step::Attachment(ticket, 0));
                }
                ticket_done = starting == 0;
            }
            Step::Attachment(ticket, 0) => ask(&mut events, Step::Attachment(ticket, 1)),
            Step::Attachment(ticket, _) => {
                if let Some(left) = unfinished.get_mut(ticket) {
                    *left = left.saturating_sub(1);
                }
                match to_start.get_mut(ticket) {
                    Some(left) if *left > 0 => {
                        *left -= 1;
                        ask(&mut events, Step::Attachment(ticket, 0));
                    }
                    _ => ticket_done = unfinished.get(ticket).is_some_and(|&left| left == 0),
                }
            }
        }
        if ticket_done && next_ticket < attachments.len() {
            ask(&mut events, Step::Ticket(next_ticket, 0));
            next_ticket += 1;
        }
    }
    end
}

/// `cpu`: `per_job` (measured serially) times `ceil(jobs / min(workers, cores))`.
pub fn cpu(per_job: Duration, jobs: usize, workers: usize, cores: usize) -> Duration {
    times(per_job, jobs.div_ceil(workers.min(cores).max(1)))
}

#[cfg(test)]
mod tests {
    use fanout_mock_api::Dataset;

    use super::*;

    fn at(scale: f64) -> Applied {
        Applied::from_config(&Config::default().with_time_scale(scale))
    }

    fn support_counts(data: &Dataset) -> Vec<usize> {
        let ids = data.queue("support").unwrap_or_default();
        ids.iter().map(|&id| data.attachments(id).map_or(0, <[_]>::len)).collect()
    }

    #[test]
    fn api_calls_counts_rounds_of_the_applied_latency() {
        let latency = at(0.01);
        assert_eq!(latency.get(Route::Items), Duration::from_micros(10_465));
        // The article's 209.3 s serial, at a hundredth of the time.
        assert_eq!(api_calls(&latency, 200, 1), Duration::from_micros(2_093_000));
        assert_eq!(api_calls(&latency, 200, 32), Duration::from_micros(7 * 10_465));
        assert_eq!(api_calls(&latency, 200, 200), Duration::from_micros(10_465));
        assert_eq!(api_calls(&latency, 200, 1000), Duration::from_micros(10_465));
        // The article's figure at scale 1: 7 rounds of 1.0465 s.
        assert_eq!(api_calls(&at(1.0), 200, 32), Duration::from_micros(7 * 1_046_500));
    }

    #[test]
    fn serial_migration_is_the_datasets_serial_cost() {
        let data = Dataset::new(42);
        for scale in [1.0, 0.01, 0.001] {
            let config = Config::default().with_time_scale(scale);
            let model = migration(&Applied::from_config(&config), &support_counts(&data), 1, 1);
            assert_eq!(Some(model), data.serial_migration_cost("support", &config));
        }
    }

    #[test]
    fn migration_with_a_worker_per_ticket_is_the_longest_ticket() {
        let latency = at(1.0);
        let counts = [0, 3, 7, 1];
        let ticket = |n: u64| Duration::from_secs(6) + Duration::from_millis(2500) * n.div_ceil(2) as u32;
        let expected = Duration::from_secs(2) + ticket(7);
        assert_eq!(migration(&latency, &counts, 4, 2), expected);
        assert_eq!(migration(&latency, &counts, 100, 2), expected);
    }

    #[test]
    fn migration_workers_take_tickets_greedily_in_order() {
        let latency = at(1.0);
        // Ticket costs with one inner worker: 6 + 2.5 n s. Two workers: A takes 8.5 (n=1),
        // B takes 31 (n=10); A then takes 6 (n=0) ending at 14.5, then 8.5 (n=1) ending at 23.
        let counts = [1, 10, 0, 1];
        let expected = Duration::from_secs(2) + Duration::from_secs(31);
        assert_eq!(migration(&latency, &counts, 2, 1), expected);
        assert_eq!(migration(&latency, &[], 3, 1), Duration::from_secs(2));
    }

    #[test]
    fn a_throttled_run_is_the_limit_plus_what_no_permit_overlaps() {
        let latency = at(0.01);
        let throttle = Throttle { rate: 500.0, burst: 1 };
        // 200 calls, permits every 2 ms from 0: the last at 398 ms, then its 10.465 ms.
        let api = throttled_api_calls(&latency, 200, 32, throttle);
        assert_eq!(api, Duration::from_micros(398_000 + 10_465));
        // A burst of 2 hands out the first two at once.
        let burst = throttled_api_calls(&latency, 200, 32, Throttle { burst: 2, ..throttle });
        assert_eq!(burst, Duration::from_micros(396_000 + 10_465));
        // Too few workers for the rate: their rounds bound it, as without a limit.
        assert_eq!(throttled_api_calls(&latency, 20, 1, throttle), api_calls(&latency, 20, 1));
    }

    #[test]
    fn a_throttled_migration_is_bounded_by_the_limit_and_by_its_chains() {
        let data = Dataset::new(42);
        let counts = support_counts(&data);
        let latency = at(0.01);
        let requests: usize = 1 + counts.iter().map(|n| 3 + 2 * n).sum::<usize>();
        assert_eq!(requests, 1297);
        // A limit far above what the workers ask: the waits' own critical path.
        let free = throttled_migration(&latency, &counts, 20, 4, Throttle { rate: 1e9, burst: 1 });
        let model = migration(&latency, &counts, 20, 4);
        assert!(free.abs_diff(model) < Duration::from_millis(1), "{free:?} against {model:?}");
        // At 1000/s: at least the permits' 1.296 s, plus the listing before them and the tail.
        let limited = throttled_migration(&latency, &counts, 20, 4, Throttle { rate: 1000.0, burst: 2 });
        assert!(limited > Duration::from_millis(1296 + 20), "{limited:?}");
        assert!(limited < Duration::from_millis(1600), "{limited:?}");
        // Serially the chain alone bounds it.
        let serial = throttled_migration(&latency, &counts, 1, 1, Throttle { rate: 1000.0, burst: 1 });
        assert!(serial >= migration(&latency, &counts, 1, 1));
    }

    #[test]
    fn cpu_is_limited_by_cores() {
        let job = Duration::from_millis(20);
        assert_eq!(cpu(job, 32, 1, 2), Duration::from_millis(640));
        assert_eq!(cpu(job, 32, 8, 2), Duration::from_millis(320));
        assert_eq!(cpu(job, 32, 8, 16), Duration::from_millis(80));
        assert_eq!(cpu(job, 3, 2, 2), Duration::from_millis(40));
    }

    #[test]
    fn health_latencies_parse() {
        let mut latency_us: BTreeMap<String, u64> =
            Route::ALL.iter().map(|route| (route.key().to_owned(), 1000)).collect();
        let health = Health {
            seed: 1,
            time_scale: 0.01,
            latency_us: latency_us.clone(),
            faults: HealthFaults { rate_limit: Some(HealthRateLimit { per_second: 5.0, burst: 5 }) },
            injected: Injected::default(),
        };
        assert_eq!(health.server_rate_limit().map(f64::round), Some(500.0));
        let applied = Applied::from_health(&health).ok();
        assert_eq!(applied.map(|a| a.get(Route::PostTicket)), Some(Duration::from_millis(1)));
        latency_us.remove("items");
        assert!(Applied::from_health(&Health { latency_us, ..health }).is_err());
    }
}
