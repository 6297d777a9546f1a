//! Load generator: measures, from its own process, how much latency the mock API adds on top
//! of the applied latency of `GET /api/items/{id}` (read from `/health`'s `latency_us`).
//!
//! ```text
//! cargo run --release -p fanout-mock-api --example load -- URL TOKEN [burst|pool] \
//!     [-n 2000] [--clients 32] [--ramp-ms 0]
//! ```
//!
//! - `burst` (default): `-n` threads (default 2000) each open a keep-alive connection; once all
//!   are connected (and one settle second later) they send one request each, all at once or
//!   spread evenly over `--ramp-ms` (a ramp shorter than the latency still has all `n` in
//!   flight at the peak).
//! - `pool`: `--clients` threads (default 1, i.e. serial) share `-n` requests (default 200),
//!   each over its own keep-alive connection; also reports the wall time against the ideal
//!   `ceil(n / clients) * latency`.
//!
//! Each request is timed from just before its write to the end of its response body; the
//! report gives min / median / p99 / max / mean of `observed - applied` and the peak number of
//! requests in flight. Plain std threads and raw HTTP/1.1 over `TcpStream`; no timing
//! assertions. Needs one file descriptor per connection (`ulimit -n`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Conn { reader: BufReader::new(stream), host: addr.to_string() })
    }

    /// Sends a GET and reads the whole response: (status, body).
    fn get(&mut self, path: &str, token: Option<&str>) -> Result<(u16, Vec<u8>)> {
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}\r\n", self.host);
        self.reader.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err("connection closed in the headers".into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err("chunked responses are not supported".into());
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }
}

/// One timed request: when it started (since the common start) and how long it took.
#[derive(Clone, Copy)]
struct Sample {
    start: Duration,
    took: Duration,
}

fn timed_get(conn: &mut Conn, id: u64, token: &str, epoch: Instant) -> Result<Sample> {
    let begin = Instant::now();
    let (status, _) = conn.get(&format!("/api/items/{id}"), Some(token))?;
    let took = begin.elapsed();
    if status != 200 {
        return Err(format!("item {id}: status {status}").into());
    }
    Ok(Sample { start: begin.duration_since(epoch), took })
}

/// The applied items latency, from `/health`.
fn applied_latency(addr: SocketAddr) -> Result<Duration> {
    let (status, body) = Conn::open(addr)?.get("/health", None)?;
    let text = String::from_utf8(body)?;
    let micros = text
        .split("\"items\":")
        .nth(1)
        .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>())
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| format!("no latency_us.items in /health (status {status})"))?;
    Ok(Duration::from_micros(micros))
}

fn stack_thread<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>> {
    Ok(std::thread::Builder::new().stack_size(128 * 1024).spawn(f)?)
}

/// Time between the release of the connected threads and the first request, so that the
/// thundering herd of 2,000 threads leaving the barrier has settled before anything is timed.
const SETTLE: Duration = Duration::from_secs(1);

fn burst(addr: SocketAddr, token: &str, n: usize, ramp: Duration) -> Result<Vec<Sample>> {
    let barrier = Arc::new(Barrier::new(n + 1));
    // Threads stay alive until every request is done: exiting threads unmap their stacks,
    // which stalls the whole process (TLB shootdowns) while others are being timed.
    let finish = Arc::new(Barrier::new(n));
    let epoch = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (barrier, finish, epoch, token) =
            (Arc::clone(&barrier), Arc::clone(&finish), Arc::clone(&epoch), token.to_owned());
        let offset = if n > 1 { ramp.mul_f64(i as f64 / (n - 1) as f64) } else { Duration::ZERO };
        handles.push(stack_thread(move || -> Result<Sample> {
            let conn = Conn::open(addr);
            barrier.wait();
            let epoch = *epoch.get_or_init(|| Instant::now() + SETTLE);
            let sample = conn.and_then(|mut conn| {
                std::thread::sleep((epoch + offset).saturating_duration_since(Instant::now()));
                timed_get(&mut conn, i as u64 + 1, &token, epoch)
            });
            finish.wait();
            sample
        })?);
    }
    barrier.wait();
    handles.into_iter().map(|h| h.join().map_err(|_| "client thread panicked")?).collect()
}

fn pool(addr: SocketAddr, token: &str, n: usize, clients: usize) -> Result<(Vec<Sample>, Duration)> {
    let next = Arc::new(AtomicU64::new(1));
    let barrier = Arc::new(Barrier::new(clients + 1));
    let epoch = Instant::now() + Duration::from_millis(200);
    let mut handles = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (next, barrier, token) = (Arc::clone(&next), Arc::clone(&barrier), token.to_owned());
        handles.push(stack_thread(move || -> Result<Vec<Sample>> {
            let conn = Conn::open(addr);
            barrier.wait();
            let mut conn = conn?;
            // Warm the connection up outside the measurement.
            conn.get("/health", None)?;
            std::thread::sleep(epoch.saturating_duration_since(Instant::now()));
            let mut samples = Vec::new();
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id > n as u64 {
                    return Ok(samples);
                }
                samples.push(timed_get(&mut conn, id, &token, epoch)?);
            }
        })?);
    }
    barrier.wait();
    let mut samples = Vec::with_capacity(n);
    for handle in handles {
        samples.extend(handle.join().map_err(|_| "client thread panicked")??);
    }
    let wall = Instant::now().saturating_duration_since(epoch);
    let end = samples.iter().map(|s| s.start + s.took).max().unwrap_or_default();
    Ok((samples, end.min(wall)))
}

fn peak_in_flight(samples: &[Sample]) -> usize {
    let mut events: Vec<(Duration, i32)> =
        samples.iter().flat_map(|s| [(s.start, 1), (s.start + s.took, -1)]).collect();
    events.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        peak = peak.max(now);
    }
    usize::try_from(peak).unwrap_or(0)
}

fn report(samples: &[Sample], applied: Duration) {
    let mut over: Vec<f64> =
        samples.iter().map(|s| (s.took.as_secs_f64() - applied.as_secs_f64()) * 1e3).collect();
    over.sort_by(f64::total_cmp);
    let n = over.len();
    if n == 0 {
        return;
    }
    let at = |q: f64| over[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    let mean = over.iter().sum::<f64>() / n as f64;
    println!(
        "requests {n}, applied latency {:.3} ms, peak in flight {}",
        applied.as_secs_f64() * 1e3,
        peak_in_flight(samples)
    );
    println!(
        "observed - applied (ms): min {:.3} median {:.3} p99 {:.3} max {:.3} mean {:.3}",
        over[0],
        at(0.5),
        at(0.99),
        over[n - 1],
        mean
    );
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: load URL TOKEN [burst|pool] [-n N] [--clients C] [--ramp-ms MS]";
    let url = args.next().ok_or(usage)?;
    let token = args.next().ok_or(usage)?;
    let (mut mode, mut n, mut clients, mut ramp_ms) = ("burst".to_owned(), None, 1usize, 0.0f64);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value; {usage}"));
        match arg.as_str() {
            "burst" | "pool" => mode = arg.clone(),
            "-n" => n = Some(value()?.parse::<usize>()?),
            "--clients" => clients = value()?.parse::<usize>()?.max(1),
            "--ramp-ms" => ramp_ms = value()?.parse()?,
            other => return Err(format!("unknown argument {other:?}; {usage}").into()),
        }
    }
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let addr = host.to_socket_addrs()?.next().ok_or("URL has no address")?;
    let applied = applied_latency(addr)?;
    if mode == "burst" {
        let n = n.unwrap_or(2000);
        let ramp = Duration::try_from_secs_f64(ramp_ms / 1e3)?;
        println!("burst of {n} requests, ramp {ramp:?}");
        let samples = burst(addr, &token, n, ramp)?;
        report(&samples, applied);
    } else {
        let n = n.unwrap_or(200);
        println!("pool of {clients} clients, {n} requests");
        let (samples, wall) = pool(addr, &token, n, clients)?;
        report(&samples, applied);
        let ideal = applied * u32::try_from(n.div_ceil(clients))?;
        println!(
            "wall {:.3} ms, ideal {:.3} ms (ceil(n/clients) * latency), efficiency {:.4}, mean overshoot per round {:.3} ms",
            wall.as_secs_f64() * 1e3,
            ideal.as_secs_f64() * 1e3,
            ideal.as_secs_f64() / wall.as_secs_f64(),
            (wall.as_secs_f64() - ideal.as_secs_f64()) * 1e3 / n.div_ceil(clients) as f64
        );
    }
    Ok(())
}
