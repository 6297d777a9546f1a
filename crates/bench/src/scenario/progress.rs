//! What the run child tells the orchestrator while it runs: one line per finished ticket on
//! its standard output, before the final result line.
//!
//! If `fanout bench` is interrupted, it kills the run child at once (waiting for jobs in
//! flight could take seconds at the articles' time scale) and reports from these lines how
//! many jobs finished and which tickets were migrated. A run against the same server
//! (`--url`) migrates the rest: the idempotency keys turn the tickets already there into
//! `200`s, never duplicates.

use std::io::Write;

use serde::{Deserialize, Serialize};

/// One progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Progress {
    /// A ticket's job finished; `migrated` says whether it and all its attachments made it.
    TicketDone {
        /// The old system's ticket id.
        ticket: u64,
        /// Whether the ticket was migrated completely.
        migrated: bool,
    },
}

impl Progress {
    /// Parses a line of the run child's output; `None` for any other line.
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str::<ProgressLine>(line).ok().map(|line| line.progress)
    }
}

#[derive(Serialize, Deserialize)]
struct ProgressLine {
    progress: Progress,
}

/// Prints the line for a finished ticket (flushed: the orchestrator reads it as it comes).
pub(crate) fn ticket_done(ticket: u64, migrated: bool) {
    let line = ProgressLine { progress: Progress::TicketDone { ticket, migrated } };
    if let Ok(text) = serde_json::to_string(&line) {
        let mut stdout = std::io::stdout().lock();
        // Progress is best effort: a closed pipe must not fail the run.
        let _ = writeln!(stdout, "{text}").and_then(|()| stdout.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_round_trip_and_other_lines_are_not_progress() {
        let line = serde_json::to_string(&ProgressLine {
            progress: Progress::TicketDone { ticket: 7, migrated: true },
        })
        .unwrap_or_default();
        assert_eq!(Progress::parse(&line), Some(Progress::TicketDone { ticket: 7, migrated: true }));
        assert_eq!(Progress::parse(r#"{"done":{"ok":1}}"#), None);
        assert_eq!(Progress::parse("not json"), None);
    }
}
