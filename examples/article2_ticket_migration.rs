//! Article 2, "ticket migration": serial first, then the nested pools that fail in Python.
//!
//! The article's 80 tickets took 30 min serially; each ticket's attachments were to be copied
//! on a pool inside a worker of the outer pool, which Python refuses (`daemonic processes are
//! not allowed to have children`). Here the embedded mock API answers 1000 times faster, so
//! starting 80 small process pools weighs 1000 times more than at the article's timings: the
//! cost of processes, shown large. `cargo run --release --example article2_ticket_migration`

use std::error::Error;
use std::sync::LazyLock;
use std::time::Instant;

use fanout::{Executor, ProcessPool, Serial, ThreadPool};
use fanout_mock_api::{Attachment, Config, Dataset, MockServer, QueueEntry, Summary, config::DEFAULT_SEED};
use serde::{Deserialize, Serialize};

const TOKEN: &str = "article-2-token";
const TIME_SCALE: f64 = 0.001;

type Fallible<T> = Result<T, Box<dyn Error>>;

/// One HTTP client per process, keeping its connections alive (a worker process builds its own).
static AGENT: LazyLock<ureq::Agent> = LazyLock::new(ureq::Agent::new_with_defaults);

fn get(url: &str) -> Fallible<Vec<u8>> {
    Ok(AGENT.get(url).header("Authorization", format!("Bearer {TOKEN}")).call()?.body_mut().read_to_vec()?)
}

fn post(url: &str, (name, value): (&str, &str), body: &[u8]) -> Fallible<Vec<u8>> {
    let request = AGENT.post(url).header("Authorization", format!("Bearer {TOKEN}")).header(name, value);
    Ok(request.send(body)?.body_mut().read_to_vec()?)
}

/// A job's error travels back from a worker process as a serde value: a string here.
fn job<T>(work: impl FnOnce() -> Fallible<T>) -> Result<T, String> {
    work().map_err(|error| error.to_string())
}

/// Which executor a ticket builds for its attachments: the same kind as the outer one.
#[derive(Clone, Copy, Serialize, Deserialize)]
enum Kind {
    Serial,
    Processes,
    Threads,
}

/// The outer job: one ticket, then its attachments on a pool of its own. A job with several
/// arguments takes them as one tuple.
fn migrate_ticket((url, kind, id): (String, Kind, u64)) -> Result<(), String> {
    job(|| {
        let ticket = get(&format!("{url}/old/tickets/{id}"))?;
        let attachments: Vec<Attachment> =
            serde_json::from_slice(&get(&format!("{url}/old/tickets/{id}/attachments"))?)?;
        let created = post(&format!("{url}/new/tickets"), ("Idempotency-Key", &id.to_string()), &ticket)?;
        let new_id = serde_json::from_slice::<serde_json::Value>(&created)?["id"].as_u64().ok_or("no id")?;
        let inputs = attachments.into_iter().map(|attachment| (url.clone(), new_id, attachment));
        // A pool inside a pool's worker, processes inside processes included: it just works.
        let copied = match kind {
            Kind::Serial => Serial::new().map(copy_attachment, inputs),
            Kind::Processes => ProcessPool::new(4)?.map(copy_attachment, inputs),
            Kind::Threads => ThreadPool::new(4)?.map(copy_attachment, inputs),
        };
        copied.into_iter().try_for_each(|result| Ok(result??))
    })
}

/// The inner job: one attachment, copied to the ticket the new system created.
fn copy_attachment((url, new_id, attachment): (String, u64, Attachment)) -> Result<(), String> {
    job(|| {
        let bytes = get(&format!("{url}/old/attachments/{}", attachment.id))?;
        let name = ("X-Attachment-Name", attachment.name.as_str());
        post(&format!("{url}/new/tickets/{new_id}/attachments"), name, &bytes).map(drop)
    })
}

/// Migrates the `support` queue to a fresh new system on `executor`, checks that the new system
/// holds exactly what a correct migration leaves there, and returns the seconds it took.
fn migrate(label: &str, executor: impl Executor, kind: Kind, serial: Option<f64>) -> Fallible<f64> {
    let server = MockServer::start(Config::default().with_time_scale(TIME_SCALE).with_token(TOKEN))?;
    let url = server.url();
    let start = Instant::now();
    let queue: Vec<QueueEntry> = serde_json::from_slice(&get(&format!("{url}/old/queues/support/tickets"))?)?;
    let results = executor.map(migrate_ticket, queue.iter().map(|ticket| (url.to_owned(), kind, ticket.id)));
    let seconds = start.elapsed().as_secs_f64();
    let failed = results.iter().filter(|result| !matches!(result, Ok(Ok(())))).count();
    let summary: Summary = serde_json::from_slice(&get(&format!("{url}/new/tickets/summary"))?)?;
    let correct = Some(summary) == Dataset::new(DEFAULT_SEED).expected_summary("support");
    let verdict = if correct { "nothing lost or duplicated" } else { "WRONG" };
    let speed_up = serial.map(|serial| format!(", {:.1}x faster", serial / seconds)).unwrap_or_default();
    println!("{label:<44} {} tickets in {seconds:.2} s{speed_up}, {failed} failed: {verdict}", queue.len());
    Ok(seconds)
}

fn main() -> Fallible<()> {
    let serial = Some(migrate("Serial, serial inside", Serial::new(), Kind::Serial, None)?);
    // The one-line swap, nested: 20 workers, each ticket's attachments on a pool of 4.
    migrate("ProcessPool(20), a ProcessPool(4) per ticket", ProcessPool::new(20)?, Kind::Processes, serial)?;
    migrate("ThreadPool(20), a ThreadPool(4) per ticket", ThreadPool::new(20)?, Kind::Threads, serial)?;
    println!("the article: ~30 min serially (1.8 s here), and its nested process pools did not run at all");
    Ok(())
}
