//! The rate limit counts requests when they arrived, not when the server got round to reading
//! them (issue 13): under CPU load the server's threads wait for a core too, and read a
//! backlog of requests that came at the rate all at once. No timing assertion: the requests
//! are sent slower than the limit, and the test counts the `429`s.
#![cfg(target_os = "linux")]

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::{PATIENCE, Raw, TOKEN, raw_get, read_answer};
use fanout_mock_api::{Config, Faults, Latencies, RateLimit, server};

#[test]
fn requests_that_kept_to_the_rate_are_admitted_though_the_server_read_them_late() {
    // One request every 100 ms, no burst.
    let config = Config::default()
        .with_token(TOKEN)
        .with_latencies(Latencies::uniform(Duration::ZERO))
        .with_faults(Faults::none().with_rate_limit(RateLimit::new(10.0, 1)));
    let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
    let (stall_tx, stall_rx) = tokio::sync::oneshot::channel::<()>();
    let (stalled_tx, stalled_rx) = mpsc::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        // One thread runs the whole server: blocking it stops every read.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let listener = server::bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
            addr_tx.send(listener.local_addr().expect("local addr")).expect("send addr");
            let serving = tokio::spawn(server::serve(listener, config, async {
                let _ = stop_rx.await;
            }));
            let _ = stall_rx.await;
            let _ = stalled_tx.send(());
            // The server is "descheduled" while the client sends.
            std::thread::sleep(Duration::from_millis(700));
            serving.await.expect("server task").expect("server");
        });
    });
    let addr = addr_rx.recv_timeout(PATIENCE).expect("server address");
    // The server serves (and its listener asks for receive timestamps) before the stall.
    let mut probe = TcpStream::connect(addr).expect("connect");
    probe.write_all(&raw_get("/health")).expect("write");
    assert_eq!(read_answer(&mut probe, PATIENCE), Raw::Answered { status: 200 });
    let _ = stall_tx.send(());
    stalled_rx.recv_timeout(PATIENCE).expect("the server stalls");
    // Three requests 150 ms apart (slower than the limit's 100 ms), all while it stalls: the
    // kernel queues them, and the server reads them together when it wakes.
    let mut sent = Vec::new();
    for id in 1..=3 {
        if id > 1 {
            std::thread::sleep(Duration::from_millis(150));
        }
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.write_all(&raw_get(&format!("/api/items/{id}"))).expect("write");
        sent.push(stream);
    }
    let statuses: Vec<Raw> = sent.iter_mut().map(|stream| read_answer(stream, PATIENCE)).collect();
    assert_eq!(
        statuses,
        vec![Raw::Answered { status: 200 }; 3],
        "a request that kept to the rate was refused"
    );
    let _ = stop_tx.send(());
    server.join().expect("server thread");
}
