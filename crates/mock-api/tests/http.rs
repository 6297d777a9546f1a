//! End-to-end tests: a real HTTP client (ureq) against `MockServer` on 127.0.0.1:0.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fanout_mock_api::{
    Attachment, Config, Dataset, Error, Item, Latencies, MockServer, QueueEntry, Route, Summary, Ticket,
};
use serde_json::Value;
use ureq::Agent;

const TOKEN: &str = "test-token-3f9a";

/// A server that never waits.
fn fast_config() -> Config {
    Config::default().with_time_scale(0.0).with_token(TOKEN)
}

fn start(config: Config) -> MockServer {
    match MockServer::start(config) {
        Ok(server) => server,
        Err(error) => panic!("mock API did not start: {error}"),
    }
}

/// A tiny blocking client that returns (status, body) and never fails on 4xx.
#[derive(Clone)]
struct Client {
    agent: Agent,
    base: String,
    auth: Option<String>,
}

impl Client {
    fn new(server: &MockServer) -> Self {
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Self { agent, base: server.url().to_owned(), auth: Some(format!("Bearer {TOKEN}")) }
    }

    fn with_auth(&self, auth: Option<&str>) -> Self {
        Self { auth: auth.map(str::to_owned), ..self.clone() }
    }

    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            request = request.header("Authorization", auth);
        }
        let mut response = request.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_vec().unwrap_or_else(|e| panic!("GET {path} body: {e}"));
        (status, body)
    }

    fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path);
        (status, parse(&body))
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            request = request.header("Authorization", auth);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.send(body).unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_vec().unwrap_or_else(|e| panic!("POST {path} body: {e}"));
        (status, parse(&body))
    }

    fn post_ticket(&self, ticket: &Ticket) -> (u16, u64) {
        let key = ticket.id.to_string();
        let body = serde_json::to_vec(ticket).unwrap_or_default();
        let (status, answer) = self.post("/new/tickets", &[("Idempotency-Key", &key)], &body);
        (status, answer["id"].as_u64().unwrap_or(0))
    }

    fn post_attachment(&self, new_id: u64, name: &str, bytes: &[u8]) -> (u16, Value) {
        self.post(&format!("/new/tickets/{new_id}/attachments"), &[("X-Attachment-Name", name)], bytes)
    }

    fn summary(&self) -> Summary {
        let (status, body) = self.get("/new/tickets/summary");
        assert_eq!(status, 200);
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("summary: {e}"))
    }
}

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

fn typed<T: serde::de::DeserializeOwned>(body: &[u8]) -> T {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("unexpected body: {e}"))
}

/// Asserts an error answer: the status and a JSON `{"error": "..."}` body.
fn assert_error(answer: (u16, Value), status: u16) {
    assert_eq!(answer.0, status, "body: {}", answer.1);
    let message = answer.1["error"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "error body without message: {}", answer.1);
    assert!(!message.contains(TOKEN));
}

/// Migrates one ticket the way a correct client does; returns its new id.
fn migrate_ticket(client: &Client, old_id: u64) -> u64 {
    let (status, body) = client.get(&format!("/old/tickets/{old_id}"));
    assert_eq!(status, 200);
    let ticket: Ticket = typed(&body);
    let (status, list) = client.get(&format!("/old/tickets/{old_id}/attachments"));
    assert_eq!(status, 200);
    let attachments: Vec<Attachment> = typed(&list);
    let (status, new_id) = client.post_ticket(&ticket);
    assert!(status == 201 || status == 200, "POST ticket: {status}");
    for attachment in attachments {
        let (status, bytes) = client.get(&format!("/old/attachments/{}", attachment.id));
        assert_eq!(status, 200);
        assert_eq!(bytes.len() as u64, attachment.size);
        let (status, _) = client.post_attachment(new_id, &attachment.name, &bytes);
        assert!(status == 201 || status == 200, "POST attachment: {status}");
    }
    new_id
}

#[test]
fn health_needs_no_auth_and_reports_applied_latencies() {
    let config = Config::default().with_time_scale(0.01).with_token(TOKEN);
    let server = start(config.clone());
    let client = Client::new(&server).with_auth(None);
    let (status, health) = client.get_json("/health");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["time_scale"], 0.01);
    let latency = &health["latency_us"];
    assert_eq!(latency["items"], 10_465, "1046.5 ms * 0.01 is 10465 µs");
    assert_eq!(latency["queue_tickets"], 20_000);
    assert_eq!(latency["summary"], 0);
    for route in Route::ALL {
        let expected = config.applied_latency(route).as_micros() as u64;
        assert_eq!(latency[route.key()].as_u64(), Some(expected), "{route}");
    }
    assert!(!health.to_string().contains(TOKEN));

    let tiny = Config::default().with_time_scale(0.0001).with_token(TOKEN);
    let server = start(tiny);
    let (_, health) = Client::new(&server).get_json("/health");
    assert_eq!(health["latency_us"]["items"], 105, "104.65 µs rounds to 105 µs");
    assert_eq!(health["latency_us"]["health"], 0);
}

#[test]
fn every_route_but_health_needs_the_token() {
    let server = start(fast_config());
    let client = Client::new(&server);
    let anonymous = client.with_auth(None);
    let wrong = client.with_auth(Some("Bearer not-the-token"));
    let basic = client.with_auth(Some("Basic dXNlcjpwYXNz"));
    let gets = [
        "/api/items/1",
        "/old/queues/support/tickets",
        "/old/tickets/10001",
        "/old/tickets/10001/attachments",
        "/old/attachments/1000001",
        "/new/tickets/summary",
    ];
    for path in gets {
        for c in [&anonymous, &wrong, &basic] {
            assert_error(c.get_json(path), 401);
        }
    }
    for c in [&anonymous, &wrong] {
        assert_error(c.post("/new/tickets", &[("Idempotency-Key", "10001")], b"{}"), 401);
        assert_error(c.post("/new/tickets/5000001/attachments", &[("X-Attachment-Name", "a")], b"x"), 401);
    }
    let (status, _) = anonymous.get("/health");
    assert_eq!(status, 200);
}

#[test]
fn items_match_the_dataset_and_unknown_ids_are_404() {
    let server = start(fast_config());
    let client = Client::new(&server);
    let data = Dataset::new(42);
    for id in [1, 2, 777, 1_000_000] {
        let (status, body) = client.get(&format!("/api/items/{id}"));
        assert_eq!(status, 200);
        let item: Item = typed(&body);
        assert_eq!(Some(item), data.item(id));
    }
    assert_error(client.get_json("/api/items/0"), 404);
    assert_error(client.get_json("/api/items/1000001"), 404);
    assert_error(client.get_json("/api/items/not-a-number"), 400);
    assert_error(client.get_json("/api/items/99999999999999999999999"), 400);
    assert_error(client.get_json("/no/such/route"), 404);
}

#[test]
fn old_system_routes_serve_the_dataset() {
    let server = start(fast_config());
    let client = Client::new(&server);
    let data = Dataset::new(42);

    let (status, body) = client.get("/old/queues/support/tickets");
    assert_eq!(status, 200);
    let listing: Vec<QueueEntry> = typed(&body);
    assert_eq!(listing.len(), 80);
    assert_eq!(Some(listing.clone()), data.queue_listing("support"));
    let (status, body) = client.get("/old/queues/archive/tickets");
    assert_eq!(status, 200);
    let archive: Vec<QueueEntry> = typed(&body);
    assert_eq!(archive.len(), 2000);
    assert!(archive.iter().all(|a| listing.iter().all(|s| s.id != a.id)), "queues must not share ticket ids");

    let id = listing[3].id;
    let (status, body) = client.get(&format!("/old/tickets/{id}"));
    assert_eq!(status, 200);
    let ticket: Ticket = typed(&body);
    assert_eq!(Some(&ticket), data.ticket(id));
    assert_eq!(ticket.subject, listing[3].subject);

    let with_attachments = data
        .queue("support")
        .unwrap_or_default()
        .iter()
        .copied()
        .find(|&t| !data.attachments(t).unwrap_or_default().is_empty())
        .unwrap_or(0);
    let (status, body) = client.get(&format!("/old/tickets/{with_attachments}/attachments"));
    assert_eq!(status, 200);
    let list: Vec<Attachment> = typed(&body);
    assert_eq!(Some(list.as_slice()), data.attachments(with_attachments));
    for attachment in &list {
        let (status, bytes) = client.get(&format!("/old/attachments/{}", attachment.id));
        assert_eq!(status, 200);
        assert_eq!(bytes.len() as u64, attachment.size);
        assert_eq!(Some(bytes), data.attachment_bytes(attachment.id));
    }

    assert_error(client.get_json("/old/queues/nope/tickets"), 404);
    assert_error(client.get_json("/old/tickets/1"), 404);
    assert_error(client.get_json("/old/tickets/1/attachments"), 404);
    assert_error(client.get_json("/old/attachments/1"), 404);
    assert_error(client.get_json("/old/attachments/x"), 400);
}

#[test]
fn bad_posts_get_400_404_and_413() {
    let server = start(fast_config().with_body_limit(1024));
    let client = Client::new(&server);
    let data = Dataset::new(42);
    let ticket = data.ticket(10_001).cloned().unwrap_or_else(|| panic!("ticket 10001"));
    let json = serde_json::to_vec(&ticket).unwrap_or_default();

    assert_error(client.post("/new/tickets", &[("Idempotency-Key", "10001")], b"{not json"), 400);
    assert_error(client.post("/new/tickets", &[("Idempotency-Key", "10001")], br#"{"id": 10001}"#), 400);
    assert_error(client.post("/new/tickets", &[], &json), 400);
    assert_error(client.post("/new/tickets", &[("Idempotency-Key", "abc")], &json), 400);
    assert_error(client.post("/new/tickets", &[("Idempotency-Key", "10002")], &json), 400);
    assert_error(client.post("/new/tickets", &[("Idempotency-Key", "10001")], &[b' '; 2048]), 413);
    assert_eq!(client.summary().tickets, 0, "rejected POSTs create nothing");

    let (status, new_id) = client.post_ticket(&ticket);
    assert_eq!(status, 201);
    let path = format!("/new/tickets/{new_id}/attachments");
    assert_error(client.post(&path, &[], b"bytes"), 400);
    assert_error(client.post(&path, &[("X-Attachment-Name", "")], b"bytes"), 400);
    assert_error(client.post(&path, &[("X-Attachment-Name", "big.bin")], &[0u8; 4096]), 413);
    assert_error(client.post_attachment(10_001, "a.txt", b"old ids are not new ids"), 404);
    assert_error(client.post_attachment(new_id + 1, "a.txt", b"x"), 404);
    assert_error(client.post("/new/tickets/abc/attachments", &[("X-Attachment-Name", "a")], b"x"), 400);
    assert_eq!(client.summary().attachments, 0);
}

#[test]
fn posts_are_idempotent() {
    let server = start(fast_config());
    let client = Client::new(&server);
    let data = Dataset::new(42);
    let ticket = data.ticket(10_002).cloned().unwrap_or_else(|| panic!("ticket 10002"));

    let (status, first) = client.post_ticket(&ticket);
    assert_eq!(status, 201);
    let after_first = client.summary();
    assert_eq!(after_first.tickets, 1);
    let (status, again) = client.post_ticket(&ticket);
    assert_eq!(status, 200);
    assert_eq!(again, first);
    assert_eq!(client.summary(), after_first, "a repeated POST changes nothing");

    let (status, created) = client.post_attachment(first, "notes.txt", b"hello");
    assert_eq!(status, 201);
    assert_eq!(created["size"], 5);
    let after_attachment = client.summary();
    assert_eq!(after_attachment.attachments, 1);
    let (status, repeated) = client.post_attachment(first, "notes.txt", b"hello");
    assert_eq!(status, 200);
    assert_eq!(repeated["id"], created["id"]);
    assert_eq!(client.summary(), after_attachment);
    let (status, _) = client.post_attachment(first, "other.txt", b"hello");
    assert_eq!(status, 201);
    assert_eq!(client.summary().attachments, 2);
}

#[test]
fn serial_migration_of_support_matches_the_expected_summary() {
    let server = start(fast_config());
    let client = Client::new(&server);
    let data = Dataset::new(42);
    let (status, body) = client.get("/old/queues/support/tickets");
    assert_eq!(status, 200);
    let listing: Vec<QueueEntry> = typed(&body);
    for entry in &listing {
        migrate_ticket(&client, entry.id);
    }
    let summary = client.summary();
    assert_eq!(summary.tickets, 80);
    assert_eq!(summary.attachments, 528);
    assert_eq!(Some(summary), data.expected_summary("support"));
}

#[test]
fn concurrent_migration_in_any_order_gives_the_same_summary() {
    let server = start(fast_config());
    let client = Client::new(&server);
    let data = Arc::new(Dataset::new(42));
    let ids: Vec<u64> = data.queue("support").unwrap_or_default().to_vec();
    let workers = 4;
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let client = client.clone();
            // Each worker walks the queue backwards, taking every 4th ticket, and one
            // worker repeats all of them to exercise idempotency under concurrency.
            let mine: Vec<u64> = ids
                .iter()
                .rev()
                .enumerate()
                .filter(|(i, _)| w == 0 || i % workers == w)
                .map(|(_, &id)| id)
                .collect();
            std::thread::spawn(move || {
                for id in mine {
                    migrate_ticket(&client, id);
                }
            })
        })
        .collect();
    for handle in handles {
        assert!(handle.join().is_ok(), "worker panicked");
    }
    assert_eq!(Some(client.summary()), data.expected_summary("support"));
}

#[test]
fn queue_totals_and_serial_cost_model() {
    let data = Dataset::new(42);
    assert_eq!(data.attachment_total("support"), Some(528));
    assert_eq!(data.attachment_total("archive"), Some(9600));
    let scale_one = Config::default();
    let support = data.serial_migration_cost("support", &scale_one).unwrap_or_default();
    let archive = data.serial_migration_cost("archive", &scale_one).unwrap_or_default();
    assert_eq!(support, Duration::from_secs(1802));
    assert_eq!(archive, Duration::from_secs(36_002));
    assert!((support.as_secs_f64() / 1800.0 - 1.0).abs() < 0.05);
    assert!((archive.as_secs_f64() / 36_000.0 - 1.0).abs() < 0.05);
    // Uses the applied (µs-rounded) latencies: 20 + 80 * 60 + 528 * 25 ms.
    let scaled = Config::default().with_time_scale(0.01);
    assert_eq!(data.serial_migration_cost("support", &scaled), Some(Duration::from_millis(18_020)));
    assert_eq!(data.serial_migration_cost("nope", &scale_one), None);
    // Other seeds keep the exact totals.
    for seed in [0, 1, 7, u64::MAX] {
        let other = Dataset::new(seed);
        assert_eq!(other.attachment_total("support"), Some(528));
        assert_eq!(other.attachment_total("archive"), Some(9600));
    }
}

#[test]
fn same_seed_same_data_other_seed_other_data() {
    let a = start(fast_config().with_seed(7));
    let b = start(fast_config().with_seed(7));
    let c = start(fast_config().with_seed(8));
    let (a, b, c) = (Client::new(&a), Client::new(&b), Client::new(&c));
    let paths = [
        "/api/items/123",
        "/old/queues/support/tickets",
        "/old/tickets/10005",
        "/old/tickets/20005/attachments",
        "/old/attachments/1000010",
    ];
    let mut differing = 0;
    for path in paths {
        let (sa, ba) = a.get(path);
        let (sb, bb) = b.get(path);
        let (sc, bc) = c.get(path);
        assert_eq!((sa, sb, sc), (200, 200, 200), "{path}");
        assert_eq!(ba, bb, "{path} differs between equal seeds");
        if ba != bc {
            differing += 1;
        }
    }
    assert_eq!(differing, paths.len(), "another seed must change every answer");
    assert_ne!(Dataset::new(7).expected_summary("support"), Dataset::new(8).expected_summary("support"));
}

/// Sends `requests` item GETs at once, one thread each; their statuses and the time they took.
fn concurrent_item_gets(client: &Client, requests: usize) -> (Vec<u16>, Duration) {
    let barrier = Arc::new(Barrier::new(requests));
    let started = Instant::now();
    let handles: Vec<_> = (0..requests)
        .map(|i| {
            let client = client.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                client.get(&format!("/api/items/{}", i + 1)).0
            })
        })
        .collect();
    let statuses = handles.into_iter().map(|h| h.join().unwrap_or(0)).collect();
    (statuses, started.elapsed())
}

#[test]
fn many_concurrent_sleeping_requests_overlap() {
    let latencies = Latencies::uniform(Duration::ZERO);
    let config = fast_config()
        .with_time_scale(1.0)
        .with_latencies(latencies)
        .with_latency(Route::Items, Duration::from_millis(50));
    let server = start(config);
    let client = Client::new(&server);
    let requests = 500;
    let (statuses, elapsed) = concurrent_item_gets(&client, requests);
    assert!(statuses.iter().all(|&s| s == 200), "all requests answer 200");
    // Serially this would take 500 * 50 ms = 25 s; loose bound for a shared 2-core box.
    assert!(elapsed < Duration::from_secs(5), "500 concurrent 50 ms requests took {elapsed:?}");
}

#[test]
fn start_reports_bad_config_and_busy_port() {
    match MockServer::start(fast_config().with_time_scale(-1.0)) {
        Err(Error::InvalidConfig(message)) => assert!(message.contains("time_scale")),
        other => panic!("expected InvalidConfig, got {:?}", other.map(|s| s.url().to_owned())),
    }
    match MockServer::start(Config::default().with_token("has space")) {
        Err(Error::InvalidConfig(message)) => assert!(!message.contains("has space")),
        other => panic!("expected InvalidConfig, got {:?}", other.map(|s| s.url().to_owned())),
    }
    let first = start(fast_config());
    match MockServer::start(fast_config().with_addr(first.addr())) {
        Err(error @ Error::Bind { .. }) => assert!(error.to_string().contains("port")),
        other => panic!("expected Bind, got {:?}", other.map(|s| s.url().to_owned())),
    }
    assert!(first.url().starts_with("http://127.0.0.1:"));
    assert!(first.shutdown().is_ok());
}

#[test]
fn config_debug_and_errors_hide_the_token() {
    let config = fast_config();
    assert!(!format!("{config:?}").contains(TOKEN));
    let server = start(config);
    assert!(!format!("{server:?}").contains(TOKEN));
}

/// The contract's load: 2,000 requests in flight at once (ignored by default: 2,000 client
/// threads are heavy for a shared box; run with `cargo test -- --ignored`).
#[test]
#[ignore]
fn two_thousand_concurrent_sleeping_requests() {
    let config = fast_config()
        .with_time_scale(1.0)
        .with_latencies(Latencies::uniform(Duration::ZERO))
        .with_latency(Route::Items, Duration::from_millis(500));
    let server = start(config);
    let client = Client::new(&server);
    let requests = 2000;
    let (statuses, elapsed) = concurrent_item_gets(&client, requests);
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert_eq!(ok, requests);
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
}
