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

/// The waits of a rate-limited run that no permit can overlap, added to `requests / R` for its
/// bound: api-calls, the last call's latency (it leaves at the last permit); the migration, the
/// queue listing's (no ticket request can leave before its answer) and the last upload's.
pub fn rate_bound_waits(latency: &Applied, scenario: crate::Scenario) -> Duration {
    match scenario {
        crate::Scenario::TicketMigration => {
            latency.get(Route::QueueTickets) + latency.get(Route::PostAttachment)
        }
        _ => latency.get(Route::Items),
    }
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
