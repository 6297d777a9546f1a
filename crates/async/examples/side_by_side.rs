//! The same fetch loop twice, against the embedded mock API: blocking on a `ThreadPool`, then
//! async on an `AsyncExecutor`. Read the two halves side by side; the differences are listed
//! under "What changed" and marked `// CHANGED` in the async half.
//!
//! ```text
//! cargo run --release -p fanout-async --example side_by_side [-- ITEMS]
//! ```
//!
//! # What changed
//!
//! 1. **The client.** Blocking: `ureq`, one connection per worker thread, each thread waiting
//!    for its own answer. Async: one `reqwest::Client` for the whole run, a connection pool that
//!    every future shares (clone it into each future: clones share the pool).
//! 2. **The job.** Blocking: a `StatefulJob` whose state (URL, token) is serde fields, because
//!    the trait's jobs must be able to travel to a worker process. Async: an `async fn` that
//!    takes the client; futures never leave the process, so they may capture anything they
//!    own, but they must own it (`async move`, clones) because they outlive the call that
//!    created them.
//! 3. **Every wait gets an `.await`.** `call()` becomes `send().await`, reading the body
//!    becomes `.json().await`. A wait without `.await` (a blocking call, `std::thread::sleep`,
//!    a long computation) does not fail: it silently holds the event loop and every other
//!    future waits behind it (`fanout bench --scenario blocking-on-loop` measures that).
//! 4. **The call.** `pool.map(job, ids)` becomes `executor.map_async(|id| fetch(..), ids)`:
//!    same ordered results, same `JobError`s (a panicking future reports `Panicked`).
//! 5. **What `workers` means.** Blocking: 32 threads, so 32 requests at once, 7 rounds for 200.
//!    Async: 200 futures in flight on one thread, one round; memory per request in flight is
//!    a future and a socket buffer, not a thread stack.
//!
//! What did not change: the results, their order, the error model, and the executor's
//! lifetime (built, used, dropped; dropping waits for what is in flight).

use std::time::Instant;

use fanout_async::AsyncExecutor;
use fanout_core::{Executor, JobError, Stateful, StatefulJob};
use fanout_mock_api::{Config, Item, MockServer};
use fanout_thread::ThreadPool;
use serde::{Deserialize, Serialize};

const TOKEN: &str = "side-by-side-token";

/// Each item's result: the executor's error outside, the request's error inside.
type Fetched = Vec<Result<Result<Item, String>, JobError>>;

type Error = Box<dyn std::error::Error>;

// ---------------------------------------------------------------- blocking: ThreadPool + ureq

/// The blocking job: its state is serde fields, so any executor (a process pool too) can run it.
#[derive(Serialize, Deserialize)]
struct Fetch {
    base: String,
    token: String,
}

impl StatefulJob<u64> for Fetch {
    type Output = Result<Item, String>;

    fn call(&self, id: u64) -> Self::Output {
        let url = format!("{}/api/items/{id}", self.base);
        ureq::get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .call() // blocks this worker thread until the answer is there
            .and_then(|mut response| response.body_mut().read_json::<Item>())
            .map_err(|error| format!("GET {url}: {error}"))
    }
}

fn blocking(base: &str, ids: Vec<u64>) -> Result<Fetched, Error> {
    let pool = ThreadPool::new(32)?; // 32 threads: 32 requests at once
    let job = Stateful(Fetch { base: base.to_owned(), token: TOKEN.to_owned() });
    Ok(pool.map(job, ids))
}

// ------------------------------------------------------------ async: AsyncExecutor + reqwest

/// The async job: an `async fn` that borrows nothing and owns its client clone. // CHANGED (2)
async fn fetch(client: reqwest::Client, base: String, id: u64) -> Result<Item, String> {
    let url = format!("{base}/api/items/{id}");
    let answer = async {
        client
            .get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await? // CHANGED (3): waits without holding the thread
            .error_for_status()?
            .json::<Item>()
            .await // CHANGED (3)
    };
    answer.await.map_err(|error: reqwest::Error| format!("GET {url}: {error}"))
}

fn asynchronous(base: &str, ids: Vec<u64>) -> Result<Fetched, Error> {
    let executor = AsyncExecutor::new(200)?; // CHANGED (5): 200 futures in flight, one thread
    let client = reqwest::Client::new(); // CHANGED (1): one client, one connection pool
    // CHANGED (4): `map_async` with a closure that builds each input's future.
    Ok(executor.map_async(|id| fetch(client.clone(), base.to_owned(), id), ids))
}

// ------------------------------------------------------------------------------------ main

fn main() -> Result<(), Error> {
    let items: u64 = std::env::args().nth(1).map_or(Ok(200), |n| n.parse())?;
    let server = MockServer::start(Config::default().with_time_scale(0.01).with_token(TOKEN))?;
    let ids: Vec<u64> = (1..=items).collect();

    let start = Instant::now();
    let threads = blocking(server.url(), ids.clone())?;
    let threads_time = start.elapsed();

    let start = Instant::now();
    let futures = asynchronous(server.url(), ids)?;
    let futures_time = start.elapsed();

    let ok = |results: &Fetched| results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    println!("blocking, ThreadPool(32):       {} of {items} items in {threads_time:?}", ok(&threads));
    println!("async, AsyncExecutor(200):      {} of {items} items in {futures_time:?}", ok(&futures));
    println!("same results, in the same order: {}", threads == futures);
    server.shutdown()?;
    Ok(())
}
