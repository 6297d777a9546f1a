//! The facts at the top of the report: machine, toolchain, commit and date.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where and with what the numbers were measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Machine {
    /// CPU model (`/proc/cpuinfo`).
    pub(crate) cpu: String,
    /// Cores this process may use.
    pub(crate) cores: usize,
    /// Total memory in bytes (`/proc/meminfo`).
    pub(crate) memory_bytes: u64,
    /// Kernel (`/proc/sys/kernel/osrelease`).
    pub(crate) kernel: String,
    /// 1-minute load average when the measurements started.
    pub(crate) load_average: String,
    /// `rustc -V`.
    pub(crate) rustc: String,
    /// `git rev-parse --short HEAD`, with ` (dirty)` when the tree has changes.
    pub(crate) commit: String,
    /// UTC date and time the measurements started.
    pub(crate) date: String,
}

impl Machine {
    /// Collects the facts now; what cannot be found reads "unknown".
    pub(crate) fn collect(workspace: &Path) -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|line| {
                line.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let memory_bytes = read("/proc/meminfo")
            .lines()
            .find_map(|line| {
                line.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
            })
            .map_or(0, |kib| kib * 1024);
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
        let load_average = read("/proc/loadavg").split_whitespace().next().unwrap_or("unknown").to_owned();
        let commit = match output(workspace, "git", &["rev-parse", "--short", "HEAD"]) {
            Some(hash) => {
                // Read-only: `--no-optional-locks` keeps `git status` from refreshing the index,
                // which others may be using at the same time.
                let status = output(workspace, "git", &["--no-optional-locks", "status", "--porcelain"]);
                if status.is_some_and(|s| !s.is_empty()) { format!("{hash} (dirty)") } else { hash }
            }
            None => "unknown".to_owned(),
        };
        let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_bytes,
            kernel: if kernel.is_empty() { "unknown".to_owned() } else { kernel },
            load_average,
            rustc: output(workspace, "rustc", &["-V"]).unwrap_or_else(|| "unknown".to_owned()),
            commit,
            date: utc_date(seconds),
        }
    }
}

/// The trimmed standard output of a command that succeeded.
fn output(dir: &Path, program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).current_dir(dir).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// `YYYY-MM-DD HH:MM UTC` for seconds since the Unix epoch (the civil-from-days algorithm of
/// Howard Hinnant's date library, valid for any date after 1970).
pub(crate) fn utc_date(seconds: u64) -> String {
    let days = seconds / 86_400;
    let (hour, minute) = (seconds % 86_400 / 3600, seconds % 3600 / 60);
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(utc_date(4_102_444_799), "2099-12-31 23:59 UTC");
    }
}
