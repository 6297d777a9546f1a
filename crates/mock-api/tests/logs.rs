//! The token never appears in what the server logs (at any level), nor in its answers or
//! errors, whatever the requests: good, bad or rejected tokens, faults, oversized bodies.
//! A subscriber that records every event and span field is installed for the whole process
//! (the server logs from its own threads), so this file holds this one test.

mod common;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use common::{Client, Reply, TOKEN, fast, start};
use fanout_mock_api::{Config, Dataset, FaultPoint, Faults, MockServer};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Everything logged so far.
static LOG: Mutex<String> = Mutex::new(String::new());

fn log() -> String {
    LOG.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Records the target and every field of every event and span, at every level.
struct Capture {
    next_span: AtomicU64,
}

struct Fields;

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let line = format!("{}={value:?} ", field.name());
        LOG.lock().unwrap_or_else(PoisonError::into_inner).push_str(&line);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        span.record(&mut Fields);
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, values: &Record<'_>) {
        values.record(&mut Fields);
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let target = format!("\n{} {}: ", event.metadata().level(), event.metadata().target());
        LOG.lock().unwrap_or_else(PoisonError::into_inner).push_str(&target);
        event.record(&mut Fields);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[test]
fn the_token_never_appears_in_logs_answers_or_errors() {
    let installed = tracing::subscriber::set_global_default(Capture { next_span: AtomicU64::new(0) });
    assert!(installed.is_ok(), "another subscriber was installed first");
    let other = "Bearer someone-elses-s3cret";

    let data = Dataset::new(42);
    let mut replies: Vec<Reply> = Vec::new();
    // Drops are certain here; errors come from the mix below.
    let dropping = start(fast(Faults::none().with_drop_rate(1.0)));
    replies.push(Client::new(&dropping).get("/api/items/1"));
    assert!(dropping.shutdown().is_ok());

    let faults = Faults::none().with_error_rate(0.3).with_drop_rate(0.2).with_point(FaultPoint::Either);
    let server = start(fast(faults).with_body_limit(1024));
    let client = Client::new(&server);
    for auth in
        [Some(format!("Bearer {TOKEN}")), Some(other.to_owned()), Some(format!("Basic {TOKEN}")), None]
    {
        let c = client.with_auth(auth.as_deref());
        for path in [
            "/api/items/1",
            "/old/tickets/10001",
            "/old/tickets/x",
            "/no/such",
            "/health",
            "/new/tickets/summary",
        ] {
            replies.push(c.get(path));
        }
        let ticket =
            serde_json::to_vec(data.ticket(10_001).unwrap_or_else(|| panic!("10001"))).unwrap_or_default();
        replies.push(c.post("/new/tickets", &[("Idempotency-Key", "10001")], &ticket));
        replies.push(c.post("/new/tickets", &[("Idempotency-Key", "not-a-number")], b"{}"));
        replies.push(c.post("/new/tickets", &[], &[b'x'; 4096]));
        replies.push(c.post("/new/tickets/5000001/attachments", &[("X-Attachment-Name", "a")], b"x"));
    }
    assert!(server.shutdown().is_ok());

    // Errors of the library and the config's Debug.
    let refused = MockServer::start(Config::default().with_token(format!("{TOKEN} with space")));
    let refused = refused.err().map(|e| format!("{e} {e:?}")).unwrap_or_default();
    assert!(!refused.is_empty());
    let debug = format!("{:?}", fast(Faults::none()));

    let statuses: Vec<Option<u16>> = replies.iter().map(Reply::status).collect();
    for expected in [Some(200), Some(401), Some(413), Some(500), None] {
        assert!(statuses.contains(&expected), "no {expected:?} among {statuses:?}");
    }

    let log = log();
    // The capture works: the server did log, including rejections.
    assert!(log.contains("listening on"), "{log}");
    assert!(log.contains("rejected request"), "{log}");
    for secret in [TOKEN, "someone-elses-s3cret"] {
        assert!(!log.contains(secret), "the log shows a token:\n{log}");
        assert!(!refused.contains(secret), "{refused}");
        assert!(!debug.contains(secret), "{debug}");
        for reply in &replies {
            let shown = match reply {
                Reply::Answer { body, .. } => String::from_utf8_lossy(body).into_owned(),
                Reply::Transport(error) => error.clone(),
            };
            assert!(!shown.contains(secret), "an answer shows a token: {shown}");
        }
    }
}
