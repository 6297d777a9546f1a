//! The deterministic dataset: items, the old system's queues, tickets and attachments, the
//! expected summary of a full migration and the serial-cost model. Everything here is pure
//! (no server needed) and is derived from a seed, so a client can verify its work offline.

use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::checksum::{self, Accumulator, Summary};
use crate::config::{Config, Route};
use crate::prng::{Kind, SplitMix64};

/// Items exist for ids `1..=ITEM_ID_MAX`.
pub const ITEM_ID_MAX: u64 = 1_000_000;

/// Names of the old system's queues.
pub const QUEUES: [&str; 2] = ["support", "archive"];

/// Ids of attachments start here and run on without gaps, queue after queue.
const FIRST_ATTACHMENT_ID: u64 = 1_000_001;

/// Smallest and largest generated attachment, in bytes.
const ATTACHMENT_SIZE: Range<u64> = 256..16_385;

/// A queue of the old system.
struct QueueSpec {
    name: &'static str,
    first_ticket_id: u64,
    tickets: usize,
    /// Exact number of attachments over all tickets of the queue: chosen so a serial
    /// migration at scale 1 costs 22.5 s (support) or 18 s (archive) per ticket:
    /// 6 s per ticket (GET details 2 + GET list 1 + POST 3) + 2.5 s per attachment.
    attachments: usize,
}

const QUEUE_SPECS: [QueueSpec; 2] = [
    QueueSpec { name: "support", first_ticket_id: 10_001, tickets: 80, attachments: 528 },
    QueueSpec { name: "archive", first_ticket_id: 20_001, tickets: 2000, attachments: 9600 },
];

/// An item of `GET /api/items/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Item {
    /// The id asked for.
    pub id: u64,
    /// A generated name.
    pub name: String,
    /// A generated value in `0..1_000_000`.
    pub value: u64,
}

/// One entry of `GET /old/queues/{queue}/tickets`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueueEntry {
    /// The ticket's id in the old system.
    pub id: u64,
    /// The ticket's subject.
    pub subject: String,
}

/// A ticket of the old system, as `GET /old/tickets/{id}` returns it. `POST /new/tickets`
/// expects exactly this JSON object as its body.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ticket {
    /// The ticket's id in the old system.
    pub id: u64,
    /// One-line subject.
    pub subject: String,
    /// Free-text body.
    pub body: String,
    /// Requester's e-mail address.
    pub requester: String,
    /// Creation time, RFC 3339 in UTC (e.g. `2023-04-05T06:07:08Z`).
    pub created_at: String,
    /// One of `open`, `pending`, `on_hold`, `solved`, `closed`.
    pub status: String,
}

/// One entry of `GET /old/tickets/{id}/attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// The attachment's id (for `GET /old/attachments/{id}`).
    pub id: u64,
    /// File name, unique within its ticket.
    pub name: String,
    /// Length of the bytes in bytes.
    pub size: u64,
}

struct QueueData {
    name: &'static str,
    ticket_ids: Vec<u64>,
    /// Range of this queue's tickets in `Dataset::tickets`.
    tickets: Range<usize>,
}

struct TicketData {
    ticket: Ticket,
    /// Range of this ticket's attachments in `Dataset::attachments`.
    attachments: Range<usize>,
}

/// All data the mock API serves, generated deterministically from a seed.
///
/// Building it takes a few milliseconds; items and attachment bytes are generated on demand.
pub struct Dataset {
    seed: u64,
    queues: Vec<QueueData>,
    tickets: Vec<TicketData>,
    attachments: Vec<Attachment>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("seed", &self.seed)
            .field("tickets", &self.tickets.len())
            .field("attachments", &self.attachments.len())
            .finish_non_exhaustive()
    }
}

impl Dataset {
    /// Generates the dataset of `seed`.
    pub fn new(seed: u64) -> Self {
        let mut queues = Vec::with_capacity(QUEUE_SPECS.len());
        let mut tickets = Vec::new();
        let mut attachments = Vec::new();
        for (queue_index, spec) in (0u64..).zip(QUEUE_SPECS.iter()) {
            let counts = attachment_counts(seed, queue_index, spec);
            let start = tickets.len();
            let mut ticket_ids = Vec::with_capacity(spec.tickets);
            for (id, count) in (spec.first_ticket_id..).zip(counts) {
                let first = attachments.len();
                for index in 0..count {
                    let attachment_id = FIRST_ATTACHMENT_ID + attachments.len() as u64;
                    attachments.push(make_attachment(seed, attachment_id, index));
                }
                tickets.push(TicketData {
                    ticket: make_ticket(seed, id),
                    attachments: first..attachments.len(),
                });
                ticket_ids.push(id);
            }
            queues.push(QueueData { name: spec.name, ticket_ids, tickets: start..tickets.len() });
        }
        Self { seed, queues, tickets, attachments }
    }

    /// The seed this dataset was generated from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The item with `id`, or `None` outside `1..=ITEM_ID_MAX`.
    pub fn item(&self, id: u64) -> Option<Item> {
        if !(1..=ITEM_ID_MAX).contains(&id) {
            return None;
        }
        let mut rng = SplitMix64::keyed(self.seed, Kind::Item, id);
        let adjective = rng.pick(ADJECTIVES);
        let noun = rng.pick(NOUNS);
        Some(Item { id, name: format!("{adjective} {noun} {id}"), value: rng.below(1_000_000) })
    }

    /// Ids of the tickets in queue `name`, in listing order, or `None` for an unknown queue.
    pub fn queue(&self, name: &str) -> Option<&[u64]> {
        self.queue_data(name).map(|q| q.ticket_ids.as_slice())
    }

    /// The answer of `GET /old/queues/{name}/tickets`.
    pub fn queue_listing(&self, name: &str) -> Option<Vec<QueueEntry>> {
        let queue = self.queue_data(name)?;
        let tickets = self.tickets.get(queue.tickets.clone())?;
        Some(
            tickets
                .iter()
                .map(|t| QueueEntry { id: t.ticket.id, subject: t.ticket.subject.clone() })
                .collect(),
        )
    }

    /// The old ticket with `id`.
    pub fn ticket(&self, id: u64) -> Option<&Ticket> {
        self.ticket_data(id).map(|t| &t.ticket)
    }

    /// The attachments of the old ticket with `id` (possibly empty), or `None` for an unknown ticket.
    pub fn attachments(&self, ticket_id: u64) -> Option<&[Attachment]> {
        let ticket = self.ticket_data(ticket_id)?;
        self.attachments.get(ticket.attachments.clone())
    }

    /// The attachment with `id`.
    pub fn attachment(&self, id: u64) -> Option<&Attachment> {
        let index = usize::try_from(id.checked_sub(FIRST_ATTACHMENT_ID)?).ok()?;
        self.attachments.get(index)
    }

    /// The bytes of the attachment with `id`; their length equals the listed `size`.
    pub fn attachment_bytes(&self, id: u64) -> Option<Vec<u8>> {
        let attachment = self.attachment(id)?;
        let len = usize::try_from(attachment.size).ok()?;
        let mut rng = SplitMix64::keyed(self.seed, Kind::AttachmentBytes, id);
        let mut bytes = Vec::with_capacity(len + 8);
        while bytes.len() < len {
            bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        bytes.truncate(len);
        Some(bytes)
    }

    /// Total number of attachments over all tickets of queue `name`.
    pub fn attachment_total(&self, name: &str) -> Option<usize> {
        let queue = self.queue_data(name)?;
        let tickets = self.tickets.get(queue.tickets.clone())?;
        Some(tickets.iter().map(|t| t.attachments.len()).sum())
    }

    /// The summary a fresh server reports after a correct, complete migration of queue
    /// `name`: every ticket POSTed once with the JSON fetched from `GET /old/tickets/{id}`
    /// (`Idempotency-Key` = its id), and every attachment uploaded under its listed name
    /// with its downloaded bytes. Migrating several queues adds their counts, and their
    /// checksums as wrapping `u64` sums.
    pub fn expected_summary(&self, name: &str) -> Option<Summary> {
        let queue = self.queue_data(name)?;
        let mut acc = Accumulator::default();
        for ticket in self.tickets.get(queue.tickets.clone())? {
            let old_id = ticket.ticket.id;
            acc.add_ticket(checksum::ticket_digest(old_id, &ticket.ticket));
            for attachment in self.attachments.get(ticket.attachments.clone())? {
                let bytes = self.attachment_bytes(attachment.id)?;
                acc.add_attachment(checksum::attachment_digest(old_id, &attachment.name, &bytes));
            }
        }
        Some(acc.summary())
    }

    /// The time a serial migration of queue `name` spends waiting on the server under
    /// `config`: one queue listing, then per ticket GET details + GET attachment list +
    /// POST ticket, and per attachment GET bytes + POST attachment, each at its
    /// [`Config::applied_latency`] (each route's scaled latency rounded to the nearest
    /// microsecond, exactly what the server waits). (Reading the summary is not included.) At
    /// scale 1 this is 1802 s for `support` and 36002 s for `archive`; at scale 0.01, 18.02 s
    /// for `support`.
    pub fn serial_migration_cost(&self, name: &str, config: &Config) -> Option<Duration> {
        let tickets = u32::try_from(self.queue(name)?.len()).ok()?;
        let attachments = u32::try_from(self.attachment_total(name)?).ok()?;
        let per_ticket = config.applied_latency(Route::TicketDetails)
            + config.applied_latency(Route::AttachmentList)
            + config.applied_latency(Route::PostTicket);
        let per_attachment =
            config.applied_latency(Route::AttachmentDownload) + config.applied_latency(Route::PostAttachment);
        let total = config
            .applied_latency(Route::QueueTickets)
            .saturating_add(per_ticket.checked_mul(tickets).unwrap_or(Duration::MAX))
            .saturating_add(per_attachment.checked_mul(attachments).unwrap_or(Duration::MAX));
        Some(total)
    }

    fn queue_data(&self, name: &str) -> Option<&QueueData> {
        self.queues.iter().find(|q| q.name == name)
    }

    fn ticket_data(&self, id: u64) -> Option<&TicketData> {
        self.queues.iter().find_map(|q| {
            let first = *q.ticket_ids.first()?;
            let offset = usize::try_from(id.checked_sub(first)?).ok()?;
            if offset >= q.ticket_ids.len() {
                return None;
            }
            self.tickets.get(q.tickets.start + offset)
        })
    }
}

/// Per-ticket attachment counts of a queue: pseudo-random in `0..=ceil(2 * mean)`, then
/// nudged one at a time at pseudo-random tickets until they add up to the exact total.
fn attachment_counts(seed: u64, queue_index: u64, spec: &QueueSpec) -> Vec<usize> {
    let n = spec.tickets;
    if n == 0 {
        return Vec::new();
    }
    let max = (2 * spec.attachments).div_ceil(n) as u64;
    let mut counts: Vec<usize> = (spec.first_ticket_id..)
        .take(n)
        .map(|id| {
            let mut rng = SplitMix64::keyed(seed, Kind::AttachmentCount, id);
            rng.range(0, max) as usize
        })
        .collect();
    let mut sum: usize = counts.iter().sum();
    let mut rng = SplitMix64::keyed(seed, Kind::AttachmentCountAdjust, queue_index);
    let mut step = 0usize;
    while sum != spec.attachments {
        // Random tickets first; a plain sweep after that guarantees termination.
        let index = if step < 64 * n { rng.below(n as u64) as usize } else { step % n };
        step += 1;
        let Some(count) = counts.get_mut(index) else {
            continue;
        };
        if sum < spec.attachments && (*count as u64) < max {
            *count += 1;
            sum += 1;
        } else if sum > spec.attachments && *count > 0 {
            *count -= 1;
            sum -= 1;
        }
    }
    counts
}

fn make_ticket(seed: u64, id: u64) -> Ticket {
    let mut rng = SplitMix64::keyed(seed, Kind::Ticket, id);
    let problem = rng.pick(PROBLEMS);
    let object = rng.pick(OBJECTS);
    let context = rng.pick(CONTEXTS);
    let subject = format!("{problem} {object} {context}");
    let first = rng.pick(FIRST_NAMES);
    let last = rng.pick(LAST_NAMES);
    let sentences = rng.range(2, 4);
    let mut body = format!("Hello, {problem} {object} {context}.");
    for _ in 0..sentences {
        body.push(' ');
        body.push_str(rng.pick(SENTENCES));
    }
    body.push_str(&format!(" Thanks, {first}"));
    let requester = format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), rng.below(100));
    // 2022-01-01T00:00:00Z plus up to three years.
    let created = 1_640_995_200 + rng.below(3 * 365 * 86_400);
    let status = rng.pick(STATUSES).to_owned();
    Ticket { id, subject, body, requester, created_at: format_rfc3339(created), status }
}

fn make_attachment(seed: u64, id: u64, index: usize) -> Attachment {
    let mut rng = SplitMix64::keyed(seed, Kind::AttachmentMeta, id);
    let stem = rng.pick(FILE_STEMS);
    let ext = rng.pick(FILE_EXTENSIONS);
    Attachment {
        id,
        name: format!("{stem}-{}.{ext}", index + 1),
        size: rng.range(ATTACHMENT_SIZE.start, ATTACHMENT_SIZE.end - 1),
    }
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn format_rfc3339(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Days since 1970-01-01 to a (year, month, day) civil date (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

const ADJECTIVES: &[&str] = &[
    "amber", "brisk", "calm", "dusty", "eager", "faint", "gentle", "hollow", "ivory", "jolly", "keen",
    "lucid", "mellow", "nimble", "olive", "proud", "quiet", "rustic", "silent", "tidy",
];
const NOUNS: &[&str] = &[
    "anchor", "beacon", "canyon", "delta", "ember", "falcon", "garden", "harbor", "island", "jungle",
    "kettle", "lantern", "meadow", "nebula", "orchard", "pebble", "quarry", "river", "summit", "thicket",
];
const PROBLEMS: &[&str] = &[
    "Cannot open",
    "Error when saving",
    "Slow loading of",
    "Missing data in",
    "Duplicate entries in",
    "Wrong totals in",
    "Timeout while exporting",
    "Access denied to",
    "Broken link in",
    "Question about",
];
const OBJECTS: &[&str] = &[
    "invoices",
    "the dashboard",
    "monthly report",
    "user profile",
    "order history",
    "shared folder",
    "billing settings",
    "the mobile app",
    "CSV export",
    "team calendar",
];
const CONTEXTS: &[&str] = &[
    "after the update",
    "since Monday",
    "on Firefox",
    "for new users",
    "in the EU region",
    "with large files",
    "on the shared account",
    "after password reset",
];
const SENTENCES: &[&str] = &[
    "It worked fine last week.",
    "Several colleagues see the same thing.",
    "I attached a screenshot of the error.",
    "Restarting the browser did not help.",
    "This is blocking our month-end close.",
    "Could you please have a look today?",
    "The problem happens about half of the time.",
    "We are on the business plan.",
    "Clearing the cache did not change anything.",
    "Let me know if you need more details.",
];
const FIRST_NAMES: &[&str] = &[
    "Ada", "Boris", "Chen", "Dana", "Emil", "Fatima", "Goran", "Hana", "Ivan", "Julia", "Kofi", "Lena",
    "Mateo", "Nora", "Omar", "Priya",
];
const LAST_NAMES: &[&str] = &[
    "Novak", "Smith", "Garcia", "Kowalski", "Okafor", "Tanaka", "Muller", "Rossi", "Silva", "Jensen",
    "Petrov", "Haddad",
];
const STATUSES: &[&str] = &["open", "pending", "on_hold", "solved", "closed"];
const FILE_STEMS: &[&str] =
    &["screenshot", "invoice", "export", "logfile", "report", "photo", "contract", "trace"];
const FILE_EXTENSIONS: &[&str] = &["png", "pdf", "csv", "txt", "jpg", "log", "json"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_have_the_exact_totals() {
        let data = Dataset::new(42);
        assert_eq!(data.queue("support").map(<[u64]>::len), Some(80));
        assert_eq!(data.queue("archive").map(<[u64]>::len), Some(2000));
        assert_eq!(data.attachment_total("support"), Some(528));
        assert_eq!(data.attachment_total("archive"), Some(9600));
        assert_eq!(data.queue("nope"), None);
    }

    #[test]
    fn counts_are_spread_and_exact_for_many_seeds() {
        for seed in 0..50 {
            for (i, spec) in (0u64..).zip(QUEUE_SPECS.iter()) {
                let counts = attachment_counts(seed, i, spec);
                assert_eq!(counts.iter().sum::<usize>(), spec.attachments);
                assert!(counts.iter().any(|&c| c == 0 || c > 8), "counts spread");
            }
        }
    }

    #[test]
    fn attachment_names_are_unique_within_a_ticket_and_sizes_match() {
        let data = Dataset::new(7);
        for &id in data.queue("support").unwrap_or_default() {
            let list = data.attachments(id).unwrap_or_default();
            let mut names: Vec<&str> = list.iter().map(|a| a.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), list.len());
            for a in list {
                let bytes = data.attachment_bytes(a.id).unwrap_or_default();
                assert_eq!(bytes.len() as u64, a.size);
                assert!((256..=16_384).contains(&a.size));
            }
        }
    }

    #[test]
    fn lookups_reject_unknown_ids() {
        let data = Dataset::new(42);
        assert!(data.item(0).is_none());
        assert!(data.item(ITEM_ID_MAX + 1).is_none());
        assert!(data.item(ITEM_ID_MAX).is_some());
        assert!(data.ticket(10_000).is_none());
        assert!(data.ticket(10_001).is_some());
        assert!(data.ticket(10_081).is_none());
        assert!(data.ticket(22_000).is_some());
        assert!(data.ticket(22_001).is_none());
        assert!(data.attachment(FIRST_ATTACHMENT_ID - 1).is_none());
        assert!(data.attachment(FIRST_ATTACHMENT_ID + 528 + 9600 - 1).is_some());
        assert!(data.attachment(FIRST_ATTACHMENT_ID + 528 + 9600).is_none());
        assert!(data.attachment(u64::MAX).is_none());
    }

    #[test]
    fn dates_format_correctly() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_640_995_200), "2022-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn serial_cost_at_scale_one() {
        let data = Dataset::new(42);
        let config = Config::default();
        assert_eq!(data.serial_migration_cost("support", &config), Some(Duration::from_secs(1802)));
        assert_eq!(data.serial_migration_cost("archive", &config), Some(Duration::from_secs(36_002)));
    }

    #[test]
    fn serial_cost_sums_the_microsecond_latencies_of_each_route() {
        let data = Dataset::new(42);
        let config = Config::default().with_time_scale(0.01);
        assert_eq!(data.serial_migration_cost("support", &config), Some(Duration::from_millis(18_020)));
        // At scale 1/3 every route rounds on its own: listing 666667 µs, per ticket
        // 666667 + 333333 + 1000000 µs, per attachment 500000 + 333333 µs.
        let config = Config::default().with_time_scale(1.0 / 3.0);
        let expected = 666_667 + 80 * 2_000_000 + 528 * 833_333;
        assert_eq!(data.serial_migration_cost("support", &config), Some(Duration::from_micros(expected)));
    }
}
