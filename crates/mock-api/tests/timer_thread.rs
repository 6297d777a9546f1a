//! The latency timer's thread lives exactly as long as the server: a server whose latencies are
//! all zero never starts one, and shutting a server down joins it, even with a request still
//! waiting and another one abandoned by its client. (Its own test binary, so that no other
//! test's server runs meanwhile.)
#![cfg(target_os = "linux")]

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use fanout_mock_api::{Config, Latencies, MockServer, Route};

const TOKEN: &str = "timer-thread-token";

/// Threads of this process named like the timer thread.
fn timer_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "mock-api-timer")
        .count()
}

fn start(config: Config) -> MockServer {
    MockServer::start(config.with_token(TOKEN)).unwrap_or_else(|e| panic!("mock API did not start: {e}"))
}

fn send_item_request(server: &MockServer, id: u64) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr()).unwrap_or_else(|e| panic!("connect: {e}"));
    let request = format!("GET /api/items/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap_or_else(|e| panic!("write: {e}"));
    stream
}

#[test]
fn the_timer_thread_lives_exactly_as_long_as_the_server() {
    assert_eq!(timer_threads(), 0);
    let idle = start(Config::default().with_time_scale(0.0));
    assert_eq!(timer_threads(), 0, "zero latencies need no timer");
    assert!(idle.shutdown().is_ok());

    let config = Config::default()
        .with_time_scale(1.0)
        .with_latencies(Latencies::uniform(Duration::ZERO))
        .with_latency(Route::Items, Duration::from_millis(20));
    let server = start(config.clone());
    assert_eq!(timer_threads(), 1);
    let body = ureq::get(format!("{}/api/items/3", server.url()))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .call()
        .and_then(|mut r| r.body_mut().read_to_string())
        .unwrap_or_else(|e| panic!("GET: {e}"));
    assert!(body.contains(r#""id":3"#));
    // A client that gives up mid-wait, and one still waiting at shutdown.
    drop(send_item_request(&server, 4));
    let _waiting = send_item_request(&server, 5);
    assert!(server.shutdown().is_ok());
    assert_eq!(timer_threads(), 0, "shutdown joins the timer thread");

    // Dropping the server instead of shutting it down joins it too.
    let server = start(config.with_latency(Route::Items, Duration::from_secs(3600)));
    let _waiting = send_item_request(&server, 6);
    // Give the server time to start waiting (the test passes either way; it then also covers a
    // sleeper dropped with the runtime after the 5 s grace period).
    std::thread::sleep(Duration::from_millis(200));
    drop(server);
    assert_eq!(timer_threads(), 0, "drop joins the timer thread");
}
