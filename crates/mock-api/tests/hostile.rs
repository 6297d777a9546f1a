//! Hostile input: malformed HTTP sent over raw TCP, from a table of known nasty requests and
//! from a property test. Every connection must get an answer or a close (never hang), no
//! server thread may panic, and the server must still answer afterwards, with nothing created.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Client, PATIENCE, Raw, TOKEN, fast, raw_exchange, read_whole_answer, start};
use fanout_mock_api::{FaultPoint, Faults, Latencies, MockServer, RateLimit};
use proptest::prelude::*;

/// Panics on the server's threads (its runtime's workers and its timer).
static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics on server threads, then lets the default hook print them.
fn watch_server_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            if name.starts_with("fanout-mock-api") || name.starts_with("mock-api") {
                SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// A server with a small body limit, without faults or with many.
fn hostile_server(faulty: bool) -> MockServer {
    watch_server_panics();
    let faults = if faulty {
        Faults::none()
            .with_error_rate(0.3)
            .with_drop_rate(0.2)
            .with_slow_tail(0.2, 10.0)
            .with_point(FaultPoint::Either)
            .with_rate_limit(RateLimit::new(1e9, 1_000_000))
            .with_max_concurrent(10_000)
    } else {
        Faults::none()
    };
    start(fast(faults).with_body_limit(64 * 1024))
}

fn auth() -> String {
    format!("Authorization: Bearer {TOKEN}\r\n")
}

fn post(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{}{headers}Content-Length: {}\r\n\r\n",
        auth(),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// The table: (what, bytes, half-close after sending).
fn nasty_requests() -> Vec<(&'static str, Vec<u8>, bool)> {
    let a = auth();
    let mut cases: Vec<(&'static str, Vec<u8>, bool)> = vec![
        ("garbage", b"\x00\x01\x02\xff\xfe garbage\r\n\r\n".to_vec(), false),
        ("nothing", Vec::new(), true),
        ("truncated request line", b"GET /api/ite".to_vec(), true),
        ("truncated headers", format!("GET /api/items/1 HTTP/1.1\r\nHost: x\r\n{a}Acc").into_bytes(), true),
        ("header without colon", format!("GET /api/items/1 HTTP/1.1\r\n{a}NoColonHere\r\n\r\n").into_bytes(), false),
        ("space in header name", format!("GET /api/items/1 HTTP/1.1\r\n{a}Bad Header: x\r\n\r\n").into_bytes(), false),
        ("huge header", format!("GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(1 << 20)).into_bytes(), false),
        (
            "many headers",
            format!("GET /health HTTP/1.1\r\n{}\r\n", "X-N: v\r\n".repeat(10_000)).into_bytes(),
            false,
        ),
        ("huge uri", format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100_000)).into_bytes(), false),
        ("raw invalid utf-8 path", [b"GET /old/tickets/\xff\xfe HTTP/1.1\r\n".as_slice(), a.as_bytes(), b"\r\n"].concat(), false),
        ("encoded invalid utf-8 id", format!("GET /old/tickets/%ff%fe HTTP/1.1\r\n{a}\r\n").into_bytes(), false),
        ("encoded invalid utf-8 queue", format!("GET /old/queues/%ff/tickets HTTP/1.1\r\n{a}\r\n").into_bytes(), false),
        ("nul in queue", format!("GET /old/queues/%00/tickets HTTP/1.1\r\n{a}\r\n").into_bytes(), false),
        ("dot segments", format!("GET /old/../../etc/passwd HTTP/1.1\r\n{a}\r\n").into_bytes(), false),
        ("huge id", format!("GET /api/items/{} HTTP/1.1\r\n{a}\r\n", "9".repeat(5000)).into_bytes(), false),
        ("http/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), false),
        ("http/0.9", b"GET /\r\n".to_vec(), true),
        ("unknown method", format!("BREW /api/items/1 HTTP/1.1\r\n{a}\r\n").into_bytes(), false),
        ("absolute form", format!("GET http://elsewhere/api/items/1 HTTP/1.1\r\n{a}\r\n").into_bytes(), false),
        ("asterisk form", b"OPTIONS * HTTP/1.1\r\n\r\n".to_vec(), false),
        ("connect", b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n".to_vec(), false),
        ("bad json", post("/new/tickets", "Idempotency-Key: 10001\r\n", b"{"), false),
        ("json array", post("/new/tickets", "Idempotency-Key: 10001\r\n", b"[]"), false),
        ("deep json", post("/new/tickets", "Idempotency-Key: 10001\r\n", &[b'['; 60_000]), false),
        ("huge number", post("/new/tickets", "Idempotency-Key: 10001\r\n", format!("{{\"id\": 1{}}}", "0".repeat(5000)).as_bytes()), false),
        ("invalid utf-8 json", post("/new/tickets", "Idempotency-Key: 10001\r\n", b"{\"id\": \"\xff\"}"), false),
        ("non-ascii key", post("/new/tickets", "Idempotency-Key: \u{ff}\u{fe}\r\n", b"{}"), false),
        ("huge key", post("/new/tickets", &format!("Idempotency-Key: {}\r\n", "1".repeat(50_000)), b"{}"), false),
        ("control chars in name", post("/new/tickets/5000001/attachments", "X-Attachment-Name: a\x01b\r\n", b"x"), false),
        ("huge name", post("/new/tickets/5000001/attachments", &format!("X-Attachment-Name: {}\r\n", "n".repeat(10_000)), b"x"), false),
        (
            "content-length larger than the body",
            format!("POST /new/tickets HTTP/1.1\r\n{a}Idempotency-Key: 10001\r\nContent-Length: 100\r\n\r\n{{}}").into_bytes(),
            true,
        ),
        (
            "content-length smaller than the body",
            format!("POST /new/tickets HTTP/1.1\r\n{a}Idempotency-Key: 10001\r\nContent-Length: 2\r\n\r\n{{}}garbage after\r\n\r\n").into_bytes(),
            false,
        ),
        ("negative content-length", format!("POST /new/tickets HTTP/1.1\r\n{a}Content-Length: -1\r\n\r\n").into_bytes(), false),
        ("text content-length", format!("POST /new/tickets HTTP/1.1\r\n{a}Content-Length: abc\r\n\r\n").into_bytes(), false),
        (
            "two content-lengths",
            format!("POST /new/tickets HTTP/1.1\r\n{a}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}x").into_bytes(),
            false,
        ),
        (
            "content-length and chunked",
            format!("POST /new/tickets HTTP/1.1\r\n{a}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").into_bytes(),
            false,
        ),
        ("bad chunk size", format!("POST /new/tickets HTTP/1.1\r\n{a}Transfer-Encoding: chunked\r\n\r\nzz\r\n").into_bytes(), false),
        (
            "overflowing chunk size",
            format!("POST /new/tickets HTTP/1.1\r\n{a}Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffffff\r\n").into_bytes(),
            false,
        ),
        (
            "declared body far over the limit",
            format!("POST /new/tickets HTTP/1.1\r\n{a}Content-Length: 1000000000000\r\n\r\nsome").into_bytes(),
            true,
        ),
        (
            "expect 100-continue over the limit",
            format!("POST /new/tickets HTTP/1.1\r\n{a}Expect: 100-continue\r\nContent-Length: 10000000\r\n\r\n").into_bytes(),
            false,
        ),
        ("body over the limit", post("/new/tickets/5000001/attachments", "X-Attachment-Name: big\r\n", &vec![7u8; 200_000]), false),
        ("empty authorization", b"GET /api/items/1 HTTP/1.1\r\nAuthorization: \r\n\r\n".to_vec(), false),
        ("bearer only", b"GET /api/items/1 HTTP/1.1\r\nAuthorization: Bearer\r\n\r\n".to_vec(), false),
        ("non-ascii token", b"GET /api/items/1 HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\xfd\r\n\r\n".to_vec(), false),
        (
            "huge token",
            format!("GET /api/items/1 HTTP/1.1\r\nAuthorization: Bearer {}\r\n\r\n", "t".repeat(60_000)).into_bytes(),
            false,
        ),
        (
            "two authorizations",
            format!("GET /api/items/1 HTTP/1.1\r\nAuthorization: Bearer wrong\r\n{a}\r\n").into_bytes(),
            false,
        ),
        ("unauthorized post with body", post_without_auth("/new/tickets", &[b'z'; 30_000]), false),
    ];
    let mut pipelined = Vec::new();
    for id in 1..=100 {
        pipelined.extend_from_slice(format!("GET /api/items/{id} HTTP/1.1\r\n{a}\r\n").as_bytes());
    }
    cases.push(("100 pipelined requests", pipelined, false));
    cases
}

fn post_without_auth(path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!("POST {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    request.extend_from_slice(body);
    request
}

/// The server still serves, and none of the hostile requests created anything.
fn assert_still_healthy(server: &MockServer) {
    let client = Client::new(server);
    assert_eq!(client.health()["status"], "ok");
    let summary = client.summary();
    assert_eq!((summary.tickets, summary.attachments), (0, 0), "hostile requests created {summary:?}");
    assert_eq!(SERVER_PANICS.load(Ordering::SeqCst), 0, "a server thread panicked");
}

#[test]
fn malformed_requests_get_an_answer_or_a_close_and_nothing_panics() {
    for faulty in [false, true] {
        let server = hostile_server(faulty);
        let addr = server.addr();
        let handles: Vec<_> = nasty_requests()
            .into_iter()
            .map(|(what, bytes, half_close)| {
                std::thread::spawn(move || (what, raw_exchange(addr, &bytes, half_close, PATIENCE)))
            })
            .collect();
        for handle in handles {
            let (what, outcome) = handle.join().unwrap_or(("a client thread panicked", Raw::Hung));
            assert_ne!(outcome, Raw::Hung, "{what} (faults: {faulty})");
            if let Raw::Answered { status } = outcome {
                // Nothing hostile may succeed in creating something, nor crash a handler.
                assert!(status != 201, "{what}: created something");
            }
        }
        assert_still_healthy(&server);
    }
}

#[test]
fn specific_rejections() {
    let server = hostile_server(false);
    let addr = server.addr();
    let expect = |what: &str, bytes: &[u8], half_close: bool, statuses: &[u16]| {
        let outcome = raw_exchange(addr, bytes, half_close, PATIENCE);
        match outcome {
            Raw::Answered { status } if statuses.contains(&status) => {}
            other => panic!("{what}: expected one of {statuses:?}, got {other:?}"),
        }
    };
    let a = auth();
    expect("garbage", b"\x00\x01\x02\xff\xfe garbage\r\n\r\n", false, &[400]);
    expect(
        "encoded invalid utf-8 id",
        format!("GET /old/tickets/%ff%fe HTTP/1.1\r\n{a}\r\n").as_bytes(),
        false,
        &[400],
    );
    expect(
        "huge id",
        format!("GET /api/items/{} HTTP/1.1\r\n{a}\r\n", "9".repeat(5000)).as_bytes(),
        false,
        &[400],
    );
    expect("deep json", &post("/new/tickets", "Idempotency-Key: 10001\r\n", &[b'['; 60_000]), false, &[400]);
    expect(
        "declared body far over the limit",
        format!("POST /new/tickets HTTP/1.1\r\n{a}Content-Length: 1000000000000\r\n\r\nsome").as_bytes(),
        true,
        &[413],
    );
    expect(
        "body over the limit",
        &post("/new/tickets/5000001/attachments", "X-Attachment-Name: big\r\n", &vec![7u8; 200_000]),
        false,
        &[413],
    );
    expect(
        "non-ascii token",
        b"GET /api/items/1 HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
        false,
        &[401],
    );
    assert_still_healthy(&server);
}

/// A client that pooled its connection gets an answer to its next request after a refused
/// POST: the server reads (drains) the body before refusing, or it would close the connection
/// with unread bytes and the client would meet a reset.
#[test]
fn a_refused_post_leaves_the_connection_usable() {
    // Time scale 1 (at 0 the rate limit never refuses) with latencies of zero.
    let faults = Faults::none().with_rate_limit(RateLimit::new(1e-6, 1));
    let server = start(fast(faults).with_time_scale(1.0).with_latencies(Latencies::uniform(Duration::ZERO)));
    let mut stream = TcpStream::connect(server.addr()).unwrap_or_else(|e| panic!("connect: {e}"));
    let _ = stream.set_read_timeout(Some(PATIENCE));
    // Far more than hyper reads on its own before closing a connection with an unread body.
    let body = vec![b'{'; 4 * 1024 * 1024];
    let heads = [
        format!("POST /new/tickets HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()),
        format!(
            "POST /new/tickets HTTP/1.1\r\nHost: x\r\n{}Idempotency-Key: 1\r\nContent-Length: {}\r\n\r\n",
            auth(),
            body.len()
        ),
        format!(
            "POST /new/tickets HTTP/1.1\r\nHost: x\r\n{}Idempotency-Key: 1\r\nContent-Length: {}\r\n\r\n",
            auth(),
            body.len()
        ),
    ];
    // 401 without a token, then the one request the rate limit admits (400: bad JSON), then 429.
    for (head, status) in heads.iter().zip([401, 400, 429]) {
        let sent = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
        assert!(sent.is_ok(), "the server closed the connection before {status}");
        let answer = read_whole_answer(&mut stream, PATIENCE);
        assert_eq!(answer.map(|(status, _)| status), Some(status), "the connection was closed");
    }
}

/// Parts a random request is built from, most of them valid so that the mutations reach past
/// the parser into routing, auth, extraction and the handlers.
fn request_parts() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just(b"GET".to_vec()),
        Just(b"POST".to_vec()),
        Just(b"PUT".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    let path = prop_oneof![
        Just(b"/api/items/1".to_vec()),
        Just(b"/old/queues/support/tickets".to_vec()),
        Just(b"/old/tickets/10001".to_vec()),
        Just(b"/old/attachments/1000001".to_vec()),
        Just(b"/new/tickets".to_vec()),
        Just(b"/new/tickets/5000001/attachments".to_vec()),
        Just(b"/new/tickets/summary".to_vec()),
        Just(b"/health".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    let header = prop_oneof![
        Just(format!("Authorization: Bearer {TOKEN}").into_bytes()),
        Just(b"Idempotency-Key: 10001".to_vec()),
        Just(b"X-Attachment-Name: a.txt".to_vec()),
        Just(b"Transfer-Encoding: chunked".to_vec()),
        (0u64..200_000).prop_map(|n| format!("Content-Length: {n}").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..60),
    ];
    let headers = proptest::collection::vec(header, 0..6);
    let body = prop_oneof![
        Just(Vec::new()),
        Just(b"{\"id\":10001}".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..300),
    ];
    (method, path, headers, body).prop_map(|(method, path, headers, body)| {
        let mut request = [method.as_slice(), b" ", path.as_slice(), b" HTTP/1.1\r\n"].concat();
        for header in headers {
            request.extend_from_slice(&header);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(&body);
        request
    })
}

/// A request, then cut short and/or with some bytes overwritten.
fn mutated_request() -> impl Strategy<Value = Vec<u8>> {
    (
        request_parts(),
        any::<Option<prop::sample::Index>>(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    )
        .prop_map(|(mut request, cut, flips)| {
            if !request.is_empty() {
                for (at, byte) in flips {
                    let at = at.index(request.len());
                    request[at] = byte;
                }
            }
            if let Some(cut) = cut {
                request.truncate(cut.index(request.len() + 1));
            }
            request
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_malformed_requests_never_hang_the_server(request in mutated_request(), faulty in any::<bool>()) {
        let server = shared_server(faulty);
        let outcome = raw_exchange(server, &request, true, PATIENCE);
        prop_assert_ne!(outcome, Raw::Hung);
        prop_assert_eq!(SERVER_PANICS.load(Ordering::SeqCst), 0);
    }
}

/// One server per flavour for the whole property test (a server per case would be slow).
fn shared_server(faulty: bool) -> SocketAddr {
    use std::sync::OnceLock;
    static SERVERS: OnceLock<[MockServer; 2]> = OnceLock::new();
    let servers = SERVERS.get_or_init(|| [hostile_server(false), hostile_server(true)]);
    servers[usize::from(faulty)].addr()
}

#[test]
fn the_property_test_servers_survive() {
    // Runs after or alongside the property test in the same process; either way they answer.
    for faulty in [false, true] {
        let client_server = shared_server(faulty);
        let outcome = raw_exchange(client_server, b"GET /health HTTP/1.1\r\n\r\n", false, PATIENCE);
        assert_eq!(outcome, Raw::Answered { status: 200 });
    }
}
