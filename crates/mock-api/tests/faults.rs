//! Fault injection end to end: each fault as a real client sees it, the idempotency of POSTs
//! under faults striking before and after applying, determinism, exemptions and `413`.
//! Outcomes are made certain with rates of 1, `max_per_request`, or fixed seeds.

mod common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, PATIENCE, Raw, Reply, TOKEN, fast, raw_exchange, raw_get, read_answer, start};
use fanout_mock_api::{Config, Dataset, Error, FaultPoint, Faults, Latencies, MockServer, RateLimit, Route};

/// Every non-exempt route of the contract, as (method, path) with a valid request.
const FAULTY_GETS: [&str; 5] = [
    "/api/items/1",
    "/old/queues/support/tickets",
    "/old/tickets/10001",
    "/old/tickets/10001/attachments",
    "/old/attachments/1000001",
];

fn ticket_json(old_id: u64) -> Vec<u8> {
    let data = Dataset::new(42);
    let ticket = data.ticket(old_id).unwrap_or_else(|| panic!("ticket {old_id}"));
    serde_json::to_vec(ticket).unwrap_or_default()
}

fn post_ticket(client: &Client, old_id: u64) -> Reply {
    let key = old_id.to_string();
    client.post("/new/tickets", &[("Idempotency-Key", &key)], &ticket_json(old_id))
}

fn post_attachment(client: &Client, new_id: u64, name: &str, bytes: &[u8]) -> Reply {
    client.post(&format!("/new/tickets/{new_id}/attachments"), &[("X-Attachment-Name", name)], bytes)
}

#[test]
fn faults_are_off_by_default_and_health_says_so() {
    assert!(Config::default().faults.is_off());
    let server = start(fast(Faults::default()));
    let client = Client::new(&server);
    for path in FAULTY_GETS.iter().cycle().take(50) {
        assert_eq!(client.get(path).status(), Some(200), "{path}");
    }
    let health = client.health();
    assert_eq!(health["faults"]["error_rate"], 0.0);
    assert_eq!(health["faults"]["point"], "after");
    assert_eq!(health["faults"]["rate_limit"], serde_json::Value::Null);
    let injected = &health["injected"];
    for key in ["errors", "drops", "hangs", "slow", "rate_limited", "over_capacity"] {
        assert_eq!(injected[key], 0, "{key}");
    }
    assert_eq!(health["in_flight"], 0);
}

#[test]
fn error_rate_one_answers_500_on_every_route_but_health_and_summary() {
    let server = start(fast(Faults::none().with_error_rate(1.0)));
    let client = Client::new(&server);
    for path in FAULTY_GETS {
        let reply = client.get(path);
        assert_eq!(reply.status(), Some(500), "{path}: {reply:?}");
        let message = reply.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(message.contains("injected fault"), "{message}");
        assert!(!message.contains(TOKEN));
    }
    assert_eq!(post_ticket(&client, 10_001).status(), Some(500));
    // Exempt: the liveness probe and the verification.
    assert_eq!(client.get("/health").status(), Some(200));
    assert_eq!(client.get("/new/tickets/summary").status(), Some(200));
    // Auth comes first: no fault without a valid token.
    assert_eq!(client.with_auth(None).get("/api/items/1").status(), Some(401));
    assert_eq!(client.health()["injected"]["errors"], 6);
}

#[test]
fn a_dropped_connection_sends_not_a_single_byte() {
    let server = start(fast(Faults::none().with_drop_rate(1.0)));
    // Raw TCP: the server closes without writing anything.
    for path in FAULTY_GETS {
        let outcome = raw_exchange(server.addr(), &raw_get(path), false, PATIENCE);
        assert_eq!(outcome, Raw::Closed { received: 0 }, "{path}");
    }
    // A real client sees a transport error, for GETs and POSTs.
    let client = Client::new(&server);
    for reply in [client.get("/api/items/7"), post_ticket(&client, 10_001)] {
        assert!(matches!(reply, Reply::Transport(_)), "{reply:?}");
    }
    assert_eq!(client.get("/health").status(), Some(200), "health is exempt");
    assert_eq!(client.health()["injected"]["drops"], 7);
}

#[test]
fn a_hung_request_is_never_answered_until_the_server_stops() {
    let server = start(fast(Faults::none().with_hang_rate(1.0)));
    // Raw TCP: no byte arrives, the connection stays open.
    let mut hung: Vec<TcpStream> = FAULTY_GETS
        .iter()
        .map(|path| {
            let mut stream = TcpStream::connect(server.addr()).expect("connects");
            // `read_answer` checks its deadline between reads that time out on their own.
            stream.set_read_timeout(Some(Duration::from_millis(50))).expect("a read timeout");
            std::io::Write::write_all(&mut stream, &raw_get(path)).expect("sends");
            assert_eq!(read_answer(&mut stream, Duration::from_millis(300)), Raw::Hung, "{path}");
            stream
        })
        .collect();
    let client = Client::new(&server);
    assert_eq!(client.get("/health").status(), Some(200), "health is exempt");
    let health = client.health();
    assert_eq!(health["injected"]["hangs"], 5, "{health}");
    assert_eq!(health["in_flight"], 5, "the hung requests are still in flight: {health}");
    assert_eq!(health["faults"]["hang_rate"], 1.0);
    // Stopping the server ends them (closed without an answer) instead of waiting for them:
    // without that, the graceful shutdown would wait its whole grace period of 5 s.
    let stopping = Instant::now();
    server.shutdown().expect("the server stops");
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "shutdown waited {:?} for hung requests",
        stopping.elapsed()
    );
    for stream in &mut hung {
        assert_eq!(read_answer(stream, PATIENCE), Raw::Closed { received: 0 });
    }
}

/// A fault striking after the POST was applied: the client saw a failure, the ticket exists,
/// and the retry with the same key answers 200 with the same id, never a duplicate.
#[test]
fn faults_after_applying_are_made_safe_by_idempotency_keys() {
    for fault in [Faults::none().with_error_rate(1.0), Faults::none().with_drop_rate(1.0)] {
        let faults = fault.with_point(FaultPoint::After).with_max_per_request(1);
        let server = start(fast(faults));
        let client = Client::new(&server);
        let first = post_ticket(&client, 10_001);
        assert!(matches!(first.status(), Some(500) | None), "{first:?}");
        assert_eq!(client.summary().tickets, 1, "applied although the client saw {}", first.outcome());
        let retry = post_ticket(&client, 10_001);
        assert_eq!(retry.status(), Some(200), "the retry finds the ticket: {retry:?}");
        let new_id = retry.json()["id"].as_u64().unwrap_or(0);
        assert!(new_id > 0);
        let after_ticket = client.summary();
        assert_eq!(after_ticket.tickets, 1, "no duplicate");

        let first = post_attachment(&client, new_id, "a.txt", b"hello");
        assert!(matches!(first.status(), Some(500) | None), "{first:?}");
        assert_eq!(client.summary().attachments, 1);
        let retry = post_attachment(&client, new_id, "a.txt", b"hello");
        assert_eq!(retry.status(), Some(200), "{retry:?}");
        assert_eq!(client.summary().attachments, 1, "no duplicate");
        assert_ne!(client.summary(), after_ticket);
    }
}

/// A fault striking before the POST was applied: nothing exists, the retry creates it (201).
#[test]
fn faults_before_applying_create_nothing() {
    for fault in [Faults::none().with_error_rate(1.0), Faults::none().with_drop_rate(1.0)] {
        let faults = fault.with_point(FaultPoint::Before).with_max_per_request(1);
        let server = start(fast(faults));
        let client = Client::new(&server);
        let first = post_ticket(&client, 10_002);
        assert!(matches!(first.status(), Some(500) | None), "{first:?}");
        assert_eq!(client.summary().tickets, 0, "nothing applied");
        let retry = post_ticket(&client, 10_002);
        assert_eq!(retry.status(), Some(201), "{retry:?}");
        let new_id = retry.json()["id"].as_u64().unwrap_or(0);
        let first = post_attachment(&client, new_id, "b.txt", b"bytes");
        assert!(matches!(first.status(), Some(500) | None), "{first:?}");
        assert_eq!(client.summary().attachments, 0);
        assert_eq!(post_attachment(&client, new_id, "b.txt", b"bytes").status(), Some(201));
        assert_eq!(client.summary().attachments, 1);
    }
}

/// A whole migration through faults before and after applying, retried until it succeeds,
/// ends with exactly the summary of a fault-free migration.
#[test]
fn a_retrying_migration_through_faults_loses_and_duplicates_nothing() {
    let faults = Faults::none()
        .with_error_rate(0.2)
        .with_drop_rate(0.1)
        .with_point(FaultPoint::Either)
        .with_max_per_request(4);
    let server = start(fast(faults).with_seed(9));
    let client = Client::new(&server);
    let data = Dataset::new(9);
    let retry = |request: &dyn Fn() -> Reply| -> Reply {
        for _ in 0..5 {
            let reply = request();
            if matches!(reply.status(), Some(200 | 201)) {
                return reply;
            }
            assert!(matches!(reply.status(), Some(500) | None), "{reply:?}");
        }
        panic!("still failing after 5 attempts, with at most 4 faults per request");
    };
    let ids: Vec<u64> = data.queue("support").unwrap_or_default().iter().copied().take(20).collect();
    for &old_id in &ids {
        let ticket = retry(&|| client.get(&format!("/old/tickets/{old_id}")));
        let Reply::Answer { body, .. } = ticket else { unreachable!() };
        let key = old_id.to_string();
        let created = retry(&|| client.post("/new/tickets", &[("Idempotency-Key", &key)], &body));
        let new_id = created.json()["id"].as_u64().unwrap_or(0);
        for attachment in data.attachments(old_id).unwrap_or_default() {
            let bytes = data.attachment_bytes(attachment.id).unwrap_or_default();
            retry(&|| post_attachment(&client, new_id, &attachment.name, &bytes));
        }
    }
    let health = client.health();
    assert!(health["injected"]["errors"].as_u64() > Some(0), "{health}");
    assert!(health["injected"]["drops"].as_u64() > Some(0), "{health}");

    // The same migration on a fault-free server.
    let clean = start(fast(Faults::none()).with_seed(9));
    let clean_client = Client::new(&clean);
    for &old_id in &ids {
        let key = old_id.to_string();
        let body =
            serde_json::to_vec(data.ticket(old_id).unwrap_or_else(|| panic!("{old_id}"))).unwrap_or_default();
        let created = clean_client.post("/new/tickets", &[("Idempotency-Key", &key)], &body);
        let new_id = created.json()["id"].as_u64().unwrap_or(0);
        for attachment in data.attachments(old_id).unwrap_or_default() {
            let bytes = data.attachment_bytes(attachment.id).unwrap_or_default();
            assert_eq!(post_attachment(&clean_client, new_id, &attachment.name, &bytes).status(), Some(201));
        }
    }
    assert_eq!(client.summary(), clean_client.summary());
}

/// The outcome of each attempt of `GET /api/items/{id}` for `ids`: every id tried `attempts`
/// times, round by round, spread over `threads` threads sending at once.
fn outcomes(
    server: &MockServer,
    ids: &[u64],
    attempts: usize,
    threads: usize,
) -> BTreeMap<(u64, usize), String> {
    let client = Client::new(server);
    let ids = Arc::new(ids.to_vec());
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let (client, ids) = (client.clone(), Arc::clone(&ids));
            std::thread::spawn(move || {
                let mine: Vec<u64> = ids.iter().copied().skip(thread).step_by(threads).collect();
                let mut seen = Vec::new();
                for attempt in 0..attempts {
                    for &id in &mine {
                        seen.push(((id, attempt), client.get(&format!("/api/items/{id}")).outcome()));
                    }
                }
                seen
            })
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
}

#[test]
fn fates_follow_the_seed_and_the_request_not_the_order_or_the_concurrency() {
    let faults = Faults::none().with_error_rate(0.3).with_drop_rate(0.1);
    let ids: Vec<u64> = (1..=60).collect();
    let reversed: Vec<u64> = ids.iter().rev().copied().collect();
    let a = outcomes(&start(fast(faults.clone()).with_seed(5)), &ids, 3, 1);
    let b = outcomes(&start(fast(faults.clone()).with_seed(5)), &reversed, 3, 4);
    let c = outcomes(&start(fast(faults).with_seed(6)), &ids, 3, 1);
    assert_eq!(a.len(), 180);
    assert_eq!(a, b, "same seed: same fate for each attempt of each request");
    assert_ne!(a, c, "another seed: other fates");
    let count = |what: &str| a.values().filter(|outcome| *outcome == what).count();
    let (errors, drops, fine) = (count("500"), count("transport"), count("200"));
    assert_eq!(errors + drops + fine, 180);
    // Fixed by the seed, so not flaky; loose enough to survive a change of the mixer.
    assert!((25..=85).contains(&errors), "{errors} errors of 180 at 30%");
    assert!((5..=35).contains(&drops), "{drops} drops of 180 at 10%");
}

#[test]
fn the_slow_tail_waits_ten_times_the_latency() {
    let latencies = Latencies::uniform(Duration::ZERO);
    let config = Config::default()
        .with_token(TOKEN)
        .with_latencies(latencies)
        .with_latency(Route::Items, Duration::from_millis(30))
        .with_faults(Faults::none().with_slow_tail(1.0, 10.0));
    let server = start(config);
    let client = Client::new(&server);
    let started = Instant::now();
    assert_eq!(client.get("/api/items/1").status(), Some(200));
    // A lower bound only: the server's timer never wakes a request early.
    assert!(started.elapsed() >= Duration::from_millis(300), "took {:?}", started.elapsed());
    assert_eq!(client.health()["injected"]["slow"], 1);
    assert_eq!(client.health()["faults"]["slow_factor"], 10.0);
}

#[test]
fn the_rate_limit_answers_429_with_retry_after() {
    // 1 request per 1000 s at time scale 1 with a burst of 2: the third request is refused.
    let config = Config::default()
        .with_token(TOKEN)
        .with_latencies(Latencies::uniform(Duration::ZERO))
        .with_faults(Faults::none().with_rate_limit(RateLimit::new(0.001, 2)));
    let server = start(config);
    let client = Client::new(&server);
    assert_eq!(client.get("/api/items/1").status(), Some(200));
    assert_eq!(client.get("/old/tickets/10001").status(), Some(200));
    let refused = client.get("/api/items/2");
    let Reply::Answer { status, retry_after, retry_after_ms, .. } = &refused else {
        panic!("no answer: {refused:?}");
    };
    assert_eq!(*status, 429);
    let seconds: u64 = retry_after.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    let millis: u64 = retry_after_ms.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!((1..=1000).contains(&seconds), "Retry-After: {retry_after:?}");
    assert!(
        millis > 0 && millis <= seconds * 1000 && millis + 1000 > seconds * 1000,
        "{millis} ms vs {seconds} s"
    );
    assert!(refused.json()["error"].as_str().unwrap_or("").contains("rate limit"));
    assert_eq!(post_ticket(&client, 10_001).status(), Some(429));
    assert_eq!(client.summary().tickets, 0, "a refused POST is not applied");
    assert_eq!(client.get("/health").status(), Some(200), "exempt");
    assert_eq!(client.health()["injected"]["rate_limited"], 2);
}

#[test]
fn the_concurrency_cap_answers_503_and_frees_its_slot() {
    // Items wait 60 s; everything else answers at once.
    let config = Config::default()
        .with_token(TOKEN)
        .with_latencies(Latencies::uniform(Duration::ZERO))
        .with_latency(Route::Items, Duration::from_secs(60))
        .with_faults(Faults::none().with_max_concurrent(1));
    let server = start(config);
    let client = Client::new(&server);
    let mut holder = TcpStream::connect(server.addr()).unwrap_or_else(|e| panic!("connect: {e}"));
    std::io::Write::write_all(&mut holder, &raw_get("/api/items/1")).unwrap_or_else(|e| panic!("send: {e}"));
    client.wait_for_health("the slow request to be in flight", |health| health["in_flight"] == 1);

    let refused = client.get("/old/tickets/10001");
    let Reply::Answer { status, retry_after, retry_after_ms, .. } = &refused else {
        panic!("no answer: {refused:?}");
    };
    assert_eq!(*status, 503);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(retry_after_ms.is_some());
    assert_eq!(post_ticket(&client, 10_001).status(), Some(503));
    assert_eq!(client.get("/new/tickets/summary").status(), Some(200), "exempt");
    assert_eq!(client.summary().tickets, 0);

    // The client gives up: its request is cancelled and its slot freed.
    drop(holder);
    client.wait_for_health("the slot to be freed", |health| health["in_flight"] == 0);
    assert_eq!(client.get("/old/tickets/10001").status(), Some(200));
    assert_eq!(client.health()["injected"]["over_capacity"], 2);
}

#[test]
fn bodies_over_the_limit_get_413_everywhere() {
    let server = start(fast(Faults::none()).with_body_limit(1024));
    let client = Client::new(&server);
    let big = vec![b'x'; 2048];
    // Declared lengths over the limit: 413 before auth, routing or latency.
    assert_eq!(post_ticket(&client, 10_001).status(), Some(201), "a ticket fits");
    for path in ["/new/tickets", "/health", "/api/items/1", "/no/such/route"] {
        assert_eq!(client.post(path, &[("Idempotency-Key", "10001")], &big).status(), Some(413), "{path}");
        assert_eq!(client.with_auth(None).post(path, &[], &big).status(), Some(413), "{path}");
    }
    // A body much larger than the socket buffers: still a readable 413, not a reset.
    let huge = vec![0u8; 3 * 1024 * 1024];
    let reply = post_attachment(&client, 5_000_001, "big.bin", &huge);
    assert_eq!(reply.status(), Some(413), "{reply:?}");
    let message = reply.json()["error"].as_str().unwrap_or("").to_owned();
    assert!(message.contains("1024 bytes"), "{message}");

    // A chunked body (no Content-Length) is cut off once it passes the limit.
    let mut stream = TcpStream::connect(server.addr()).unwrap_or_else(|e| panic!("connect: {e}"));
    let _ = stream.set_read_timeout(Some(PATIENCE));
    let head = format!(
        "POST /new/tickets/5000001/attachments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nX-Attachment-Name: c.bin\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut request = head.into_bytes();
    for _ in 0..4 {
        request.extend_from_slice(b"200\r\n");
        request.extend_from_slice(&[b'y'; 0x200]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    std::io::Write::write_all(&mut stream, &request).unwrap_or_else(|e| panic!("send: {e}"));
    assert_eq!(read_answer(&mut stream, PATIENCE), Raw::Answered { status: 413 });
    assert_eq!(client.summary().attachments, 0);
    assert_eq!(client.health()["body_limit"], 1024);
}

#[test]
fn invalid_faults_are_refused_at_start() {
    for faults in [
        Faults::none().with_error_rate(2.0),
        Faults::none().with_drop_rate(0.6).with_error_rate(0.6),
        Faults::none().with_slow_tail(0.1, 0.0),
        Faults::none().with_rate_limit(RateLimit::new(f64::INFINITY, 1)),
        Faults::none().with_max_concurrent(0),
    ] {
        match MockServer::start(fast(faults.clone())) {
            Err(Error::InvalidConfig(message)) => assert!(message.contains("faults."), "{message}"),
            other => panic!("{faults:?} was accepted: {:?}", other.map(|s| s.url().to_owned())),
        }
    }
}

/// The client must not hide a drop by retrying on its own, and the next attempt, on a fresh
/// connection, gets its own fate.
#[test]
fn a_drop_closes_only_its_own_connection() {
    let faults = Faults::none().with_drop_rate(1.0).with_max_per_request(1);
    let server = start(fast(faults));
    let client = Client::new(&server);
    assert!(matches!(client.get("/api/items/3"), Reply::Transport(_)));
    assert_eq!(client.get("/api/items/3").status(), Some(200));
    assert_eq!(client.get("/api/items/3").status(), Some(200));
}
