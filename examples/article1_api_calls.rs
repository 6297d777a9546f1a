//! Article 1, "200 API calls": serial first, then the one-line swap to a pool.
//!
//! The article's script fetched 200 items from an API that took about a second to answer:
//! 209.3 s one after another, 16.3 s with `multiprocessing.Pool(32)`. Here the same calls go to
//! the embedded mock API, started in this process, 100 times faster (time scale 0.01).
//!
//! ```text
//! cargo run --release --example article1_api_calls
//! ```
//!
//! The server runs on tokio threads in this process, and `ProcessPool` is still safe: its
//! workers are forked from a fresh, single-threaded fork server, never from this process.

use std::error::Error;
use std::sync::LazyLock;
use std::time::Instant;

use fanout::{BuildError, Executor, ProcessPool, Serial, Stateful, StatefulJob, ThreadPool};
use fanout_mock_api::{Config, Item, MockServer};
use serde::{Deserialize, Serialize};

const TOKEN: &str = "article-1-token";
const TIME_SCALE: f64 = 0.01;
const CALLS: u64 = 200;

/// One HTTP client per process, keeping its connections alive. A worker process builds its
/// own on first use: the fork server it comes from never touched it.
static AGENT: LazyLock<ureq::Agent> = LazyLock::new(ureq::Agent::new_with_defaults);

/// The job: fetch one item. Its state, where the API is, travels to every worker, thread or
/// process, as a serde field: a worker process cannot see this process's variables.
#[derive(Serialize, Deserialize)]
struct FetchItem {
    url: String,
}

impl StatefulJob<u64> for FetchItem {
    type Output = Result<Item, String>;

    fn call(&self, id: u64) -> Self::Output {
        AGENT
            .get(format!("{}/api/items/{id}", self.url))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .and_then(|mut answer| answer.body_mut().read_json())
            .map_err(|error| error.to_string())
    }
}

/// Builds an executor, makes the calls on it and shuts it down: the same code for every
/// executor, because they share one trait. Returns the seconds it all took.
fn fetch_all<E: Executor>(
    label: &str,
    build: impl FnOnce() -> Result<E, BuildError>,
    url: &str,
    serial: Option<f64>,
) -> Result<f64, Box<dyn Error>> {
    let start = Instant::now();
    let executor = build()?;
    let results = executor.map(Stateful(FetchItem { url: url.to_owned() }), 1..=CALLS);
    drop(executor);
    let seconds = start.elapsed().as_secs_f64();
    let fetched = results.iter().filter(|result| matches!(result, Ok(Ok(_)))).count();
    let speed_up = serial.map(|serial| format!(": {:.1}x faster", serial / seconds)).unwrap_or_default();
    println!("{label:<16} {fetched}/{CALLS} items in {seconds:.3} s{speed_up}");
    Ok(seconds)
}

fn main() -> Result<(), Box<dyn Error>> {
    let server = MockServer::start(Config::default().with_time_scale(TIME_SCALE).with_token(TOKEN))?;
    let url = server.url();
    println!("{CALLS} calls to {url}, each waiting the article's 1.0465 s x {TIME_SCALE}\n");

    // 1. The article's first script: one call after another.
    let serial = Some(fetch_all("Serial", || Ok(Serial::new()), url, None)?);

    // 2. The one-line swap: the same calls on 32 worker processes, the article's Pool(32)...
    fetch_all("ProcessPool(32)", || ProcessPool::new(32), url, serial)?;
    // ...or on 32 threads: Python's `from multiprocessing.pool import ThreadPool as Pool`.
    fetch_all("ThreadPool(32)", || ThreadPool::new(32), url, serial)?;

    println!(
        "\nthe article: 209.3 s serially, 16.3 s with Pool(32): 12.8x; 7 rounds of 1.0465 s (28.6x) is ideal"
    );
    Ok(())
}
