//! Server configuration: the seed, the time scale, the bearer token, the address, the
//! per-route latencies, the body limit and the injected faults ([`Faults`], off by default),
//! plus the quantization rule that turns a configured
//! latency into the latency the server actually applies (scaled, to the nearest microsecond).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::error::Error;
use crate::faults::Faults;

/// Every route of the mock API, as named in the contract (`/work/shared/mock-api.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /api/items/{id}`.
    Items,
    /// `GET /old/queues/{queue}/tickets`.
    QueueTickets,
    /// `GET /old/tickets/{id}`.
    TicketDetails,
    /// `GET /old/tickets/{id}/attachments`.
    AttachmentList,
    /// `GET /old/attachments/{id}`.
    AttachmentDownload,
    /// `POST /new/tickets`.
    PostTicket,
    /// `POST /new/tickets/{new_id}/attachments`.
    PostAttachment,
    /// `GET /new/tickets/summary`.
    Summary,
    /// `GET /health`.
    Health,
}

impl Route {
    /// All routes, in the order of the contract.
    pub const ALL: [Route; 9] = [
        Route::Items,
        Route::QueueTickets,
        Route::TicketDetails,
        Route::AttachmentList,
        Route::AttachmentDownload,
        Route::PostTicket,
        Route::PostAttachment,
        Route::Summary,
        Route::Health,
    ];

    /// The snake_case key of the route, used in `/health`'s `latency_us` object.
    pub fn key(self) -> &'static str {
        match self {
            Route::Items => "items",
            Route::QueueTickets => "queue_tickets",
            Route::TicketDetails => "ticket_details",
            Route::AttachmentList => "attachment_list",
            Route::AttachmentDownload => "attachment_download",
            Route::PostTicket => "post_ticket",
            Route::PostAttachment => "post_attachment",
            Route::Summary => "summary",
            Route::Health => "health",
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Latency of each route at time scale 1 (before scaling and quantization).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Latencies {
    /// `GET /api/items/{id}`; default 1046.5 ms.
    pub items: Duration,
    /// `GET /old/queues/{queue}/tickets`; default 2000 ms.
    pub queue_tickets: Duration,
    /// `GET /old/tickets/{id}`; default 2000 ms.
    pub ticket_details: Duration,
    /// `GET /old/tickets/{id}/attachments`; default 1000 ms.
    pub attachment_list: Duration,
    /// `GET /old/attachments/{id}`; default 1500 ms.
    pub attachment_download: Duration,
    /// `POST /new/tickets`; default 3000 ms.
    pub post_ticket: Duration,
    /// `POST /new/tickets/{new_id}/attachments`; default 1000 ms.
    pub post_attachment: Duration,
    /// `GET /new/tickets/summary`; default 0.
    pub summary: Duration,
    /// `GET /health`; default 0.
    pub health: Duration,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            items: Duration::from_micros(1_046_500),
            queue_tickets: Duration::from_millis(2000),
            ticket_details: Duration::from_millis(2000),
            attachment_list: Duration::from_millis(1000),
            attachment_download: Duration::from_millis(1500),
            post_ticket: Duration::from_millis(3000),
            post_attachment: Duration::from_millis(1000),
            summary: Duration::ZERO,
            health: Duration::ZERO,
        }
    }
}

impl Latencies {
    /// The same latency (at scale 1) for every route; handy for tests (`Latencies::uniform(Duration::ZERO)`).
    pub fn uniform(latency: Duration) -> Self {
        let mut all = Self::default();
        for route in Route::ALL {
            all.set(route, latency);
        }
        all
    }

    /// The configured latency of `route` at scale 1.
    pub fn get(&self, route: Route) -> Duration {
        match route {
            Route::Items => self.items,
            Route::QueueTickets => self.queue_tickets,
            Route::TicketDetails => self.ticket_details,
            Route::AttachmentList => self.attachment_list,
            Route::AttachmentDownload => self.attachment_download,
            Route::PostTicket => self.post_ticket,
            Route::PostAttachment => self.post_attachment,
            Route::Summary => self.summary,
            Route::Health => self.health,
        }
    }

    /// Overrides the latency of `route` at scale 1.
    pub fn set(&mut self, route: Route, latency: Duration) {
        let slot = match route {
            Route::Items => &mut self.items,
            Route::QueueTickets => &mut self.queue_tickets,
            Route::TicketDetails => &mut self.ticket_details,
            Route::AttachmentList => &mut self.attachment_list,
            Route::AttachmentDownload => &mut self.attachment_download,
            Route::PostTicket => &mut self.post_ticket,
            Route::PostAttachment => &mut self.post_attachment,
            Route::Summary => &mut self.summary,
            Route::Health => &mut self.health,
        };
        *slot = latency;
    }
}

/// Configuration of the mock API server.
///
/// Build it from [`Config::default`] and the `with_*` methods (or by assigning the public
/// fields); the struct is `#[non_exhaustive]` so that options such as fault injection can be
/// added later without breaking callers. `Debug` never shows the token.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Seed of all generated data (items, tickets, attachments). Default 42.
    pub seed: u64,
    /// Factor applied to every latency (1.0 = the article's timings). Must be finite and >= 0.
    /// Default 1.0.
    pub time_scale: f64,
    /// Bearer token required on every route except `/health`. Must be non-empty visible
    /// ASCII without spaces. Never logged or printed.
    pub token: String,
    /// Address to listen on; port 0 picks a free port. Default `127.0.0.1:0`.
    pub addr: SocketAddr,
    /// Per-route latencies at scale 1.
    pub latencies: Latencies,
    /// Largest accepted request body in bytes; larger bodies get `413` (on any route, from the
    /// declared `Content-Length` or, for a body without one, once it grows past the limit).
    /// Default 8 MiB: the contract sets no limit, and the largest legitimate body (an
    /// attachment, at most 16 KiB) is far below it.
    pub body_limit: usize,
    /// Injected faults; [`Faults::default`] (none) by default.
    pub faults: Faults,
}

/// Default seed of the generated data.
pub const DEFAULT_SEED: u64 = 42;
/// Default bearer token (for local use only; pass your own in anything shared).
pub const DEFAULT_TOKEN: &str = "fanout-mock-token";
/// Default request body limit: 8 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 8 * 1024 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            seed: DEFAULT_SEED,
            time_scale: 1.0,
            token: DEFAULT_TOKEN.to_owned(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            latencies: Latencies::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            faults: Faults::default(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("seed", &self.seed)
            .field("time_scale", &self.time_scale)
            .field("token", &"<redacted>")
            .field("addr", &self.addr)
            .field("latencies", &self.latencies)
            .field("body_limit", &self.body_limit)
            .field("faults", &self.faults)
            .finish()
    }
}

impl Config {
    /// Sets the data seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the time scale (1.0 = real article timings, 0.0 = no waiting).
    pub fn with_time_scale(mut self, time_scale: f64) -> Self {
        self.time_scale = time_scale;
        self
    }

    /// Sets the bearer token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    /// Sets the listen address.
    pub fn with_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Overrides one route's latency at scale 1.
    pub fn with_latency(mut self, route: Route, latency: Duration) -> Self {
        self.latencies.set(route, latency);
        self
    }

    /// Replaces all latencies at scale 1.
    pub fn with_latencies(mut self, latencies: Latencies) -> Self {
        self.latencies = latencies;
        self
    }

    /// Sets the request body limit in bytes.
    pub fn with_body_limit(mut self, body_limit: usize) -> Self {
        self.body_limit = body_limit;
        self
    }

    /// Sets the injected faults.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Checks the configuration; the server refuses to start with an invalid one.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.time_scale.is_finite() || self.time_scale < 0.0 {
            return Err(Error::InvalidConfig(format!(
                "time_scale must be a finite number >= 0 (got {}); use 1.0 for real timings or e.g. 0.01 to run 100x faster",
                self.time_scale
            )));
        }
        if self.token.is_empty() {
            return Err(Error::InvalidConfig(
                "token must not be empty; pass the bearer token clients will send".to_owned(),
            ));
        }
        if !self.token.bytes().all(|b| b.is_ascii_graphic()) {
            // Do not echo the token: it is a secret even when malformed.
            return Err(Error::InvalidConfig(
                "token must be visible ASCII without spaces or control characters".to_owned(),
            ));
        }
        if self.body_limit == 0 {
            return Err(Error::InvalidConfig(
                "body_limit must be at least 1 byte; the default is 8 MiB".to_owned(),
            ));
        }
        self.faults.validate()
    }

    /// The latency the server actually applies to `route`: the configured latency times
    /// `time_scale`, rounded to the **nearest microsecond** (half a microsecond rounds up), so
    /// 1046.5 ms at scale 0.01 is 10.465 ms. A zero latency stays zero (and so does a scaled
    /// latency under 0.5 µs). An invalid (negative or non-finite) scale counts as zero here;
    /// [`Config::validate`] rejects it before a server starts. The server waits this long on
    /// its own precise timer (tokio's would round up to whole milliseconds), and `/health`
    /// reports it in `latency_us`.
    pub fn applied_latency(&self, route: Route) -> Duration {
        quantize(self.latencies.get(route), self.time_scale)
    }
}

/// Scales `latency` and rounds it to the nearest microsecond (halves round up).
///
/// The scaled value is first rounded to the nearest nanosecond, so floating-point noise such
/// as `1046.5 ms * 0.01 = 10465000.000000002 ns` cannot move it across a rounding boundary.
fn quantize(latency: Duration, time_scale: f64) -> Duration {
    if !time_scale.is_finite() || time_scale <= 0.0 || latency.is_zero() {
        return Duration::ZERO;
    }
    // `as` from f64 saturates at the bounds, which is the behaviour wanted for huge values.
    let nanos = (latency.as_nanos() as f64 * time_scale).round() as u64;
    let micros = nanos / 1_000 + u64::from(nanos % 1_000 >= 500);
    Duration::from_micros(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizes_to_the_nearest_microsecond() {
        let c = Config::default().with_time_scale(0.01);
        assert_eq!(c.applied_latency(Route::Items), Duration::from_micros(10_465));
        assert_eq!(c.applied_latency(Route::QueueTickets), Duration::from_millis(20));
        assert_eq!(c.applied_latency(Route::Summary), Duration::ZERO);
        // 104.65 µs rounds up, 1.0465 µs down, 0.10465 µs to zero.
        let c = Config::default().with_time_scale(0.0001);
        assert_eq!(c.applied_latency(Route::Items), Duration::from_micros(105));
        let c = Config::default().with_time_scale(0.000_001);
        assert_eq!(c.applied_latency(Route::Items), Duration::from_micros(1));
        let c = Config::default().with_time_scale(0.000_000_1);
        assert_eq!(c.applied_latency(Route::Items), Duration::ZERO);
        // Exactly half a microsecond rounds up.
        let c = Config::default().with_latency(Route::Items, Duration::from_nanos(2_500));
        assert_eq!(c.applied_latency(Route::Items), Duration::from_micros(3));
        let c = Config::default().with_time_scale(0.1);
        assert_eq!(c.applied_latency(Route::PostTicket), Duration::from_millis(300));
        let c = Config::default();
        assert_eq!(c.applied_latency(Route::Items), Duration::from_micros(1_046_500));
        // 2000 ms / 3 = 666666.67 µs.
        let c = Config::default().with_time_scale(1.0 / 3.0);
        assert_eq!(c.applied_latency(Route::QueueTickets), Duration::from_micros(666_667));
        assert_eq!(Config::default().with_time_scale(0.0).applied_latency(Route::Items), Duration::ZERO);
        let huge = Config::default().with_time_scale(1e30);
        assert_eq!(huge.applied_latency(Route::Items), Duration::from_micros(u64::MAX / 1000 + 1));
    }

    #[test]
    fn debug_redacts_the_token() {
        let c = Config::default().with_token("s3cret-value");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-value"));
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn validation_rejects_bad_values_without_echoing_the_token() {
        assert!(Config::default().validate().is_ok());
        assert!(Config::default().with_time_scale(-1.0).validate().is_err());
        assert!(Config::default().with_time_scale(f64::NAN).validate().is_err());
        assert!(Config::default().with_token("").validate().is_err());
        assert!(Config::default().with_body_limit(0).validate().is_err());
        let err = Config::default()
            .with_token("bad token")
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!err.is_empty());
        assert!(!err.contains("bad token"));
    }
}
