//! What the report is made of: the measured rows `fanout bench --format json` prints, each
//! point's [`Outcome`], and the [`Results`] file (`results.json`) the markdown and the plots
//! are rendered from.

use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::matrix::{Mode, Point, Section};

/// One JSON line of `fanout bench` (the CLI contract's keys, and the extras the report uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Measurement {
    pub(crate) workers: usize,
    pub(crate) jobs: usize,
    pub(crate) time_scale: f64,
    /// Wall time of the median run.
    pub(crate) wall_seconds: f64,
    /// The ideal time of the median run.
    pub(crate) ideal_seconds: f64,
    /// `ideal_seconds / wall_seconds`.
    pub(crate) efficiency: f64,
    pub(crate) ok: usize,
    pub(crate) errors: usize,
    pub(crate) lost: usize,
    pub(crate) duplicated: usize,
    pub(crate) cpu_seconds: f64,
    /// With `--hosts`: CPU time of the worker hosts over the median run, beside `cpu_seconds`
    /// (the client's).
    #[serde(default)]
    pub(crate) host_cpu_seconds: Option<f64>,
    /// With `--hosts`: hosts whose workers were given jobs.
    #[serde(default)]
    pub(crate) hosts_used: Option<usize>,
    pub(crate) peak_rss_bytes: u64,
    /// Peak of the summed PSS of the client's process tree (absent from older results).
    #[serde(default)]
    pub(crate) peak_pss_bytes: Option<u64>,
    #[serde(default)]
    pub(crate) verified: Option<bool>,
    #[serde(default)]
    pub(crate) inner_workers: Option<usize>,
    #[serde(default)]
    pub(crate) wall_seconds_runs: Vec<f64>,
    #[serde(default)]
    pub(crate) first_error: Option<String>,
    /// HTTP requests the median run retried (the migration; `None` where not counted).
    #[serde(default)]
    pub(crate) http_retries: Option<u64>,
    /// Tasks of the median run that ran again because their worker process died (process only).
    #[serde(default)]
    pub(crate) worker_retries: Option<u64>,
    /// The job time limit of the run, if any.
    #[serde(default)]
    pub(crate) job_timeout_seconds: Option<f64>,
    /// Results `Expired` the median run saw (jobs stopped at the limit), re-runs included.
    #[serde(default)]
    pub(crate) jobs_expired: Option<u64>,
    /// Inputs the median run ran again because their job expired.
    #[serde(default)]
    pub(crate) job_reruns: Option<u64>,
    /// The same, per round of re-runs.
    #[serde(default)]
    pub(crate) job_reruns_by_round: Vec<u64>,
    /// `429` answers the clients saw (the most over the runs).
    #[serde(default)]
    pub(crate) responses_429: Option<u64>,
    /// Requests the median run sent, retries included.
    #[serde(default)]
    pub(crate) requests: Option<u64>,
    /// Requests a fault-free run makes.
    #[serde(default)]
    pub(crate) required_requests: Option<u64>,
    /// The median run's requests per real second, from the first to the last.
    #[serde(default)]
    pub(crate) request_rate: Option<f64>,
    /// The client's limit, per real second.
    #[serde(default)]
    pub(crate) throttle_per_second: Option<f64>,
    /// The server's limit, per real second.
    #[serde(default)]
    pub(crate) server_rate_limit_per_second: Option<f64>,
    /// `required_requests / R`.
    #[serde(default)]
    pub(crate) rate_ideal_seconds: Option<f64>,
    /// The ideal plus the waits no permit can overlap.
    #[serde(default)]
    pub(crate) rate_bound_seconds: Option<f64>,
    /// The mock server's CPU time per request of the median run (absent with a server of the
    /// user's, and from older results).
    #[serde(default)]
    pub(crate) server_cpu_seconds_per_request: Option<f64>,
}

impl Measurement {
    /// Every job correct, none lost or duplicated.
    pub(crate) fn is_correct(&self) -> bool {
        self.errors == 0 && self.lost == 0 && self.duplicated == 0 && self.verified != Some(false)
    }
}

/// What became of a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status", content = "value")]
pub(crate) enum Outcome {
    /// `fanout bench` measured it.
    Measured(Box<Measurement>),
    /// The executor is not part of the workspace yet (`fanout bench` says "not built yet").
    NotBuilt(String),
    /// `fanout bench` failed, timed out or printed something unreadable.
    Failed(String),
}

impl Outcome {
    /// The outcome of a `fanout bench` invocation that ended with `success`, its standard output
    /// and standard error.
    pub(crate) fn from_invocation(success: bool, stdout: &str, stderr: &str) -> Self {
        let last_line = stdout.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or_default();
        if success {
            return match serde_json::from_str::<Measurement>(last_line) {
                Ok(measurement) => Self::Measured(Box::new(measurement)),
                Err(error) => Self::Failed(format!("unreadable output {last_line:?}: {error}")),
            };
        }
        let message = stderr
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .map(|line| line.trim().trim_start_matches("error: ").to_owned())
            .unwrap_or_else(|| "failed without a message".to_owned());
        let not_yet = |part: &&str| part.contains("not built yet") || part.contains("not available on");
        match message.split(": ").find(not_yet) {
            Some(part) => Self::NotBuilt(part.split(';').next().unwrap_or(part).trim().to_owned()),
            None => Self::Failed(message),
        }
    }

    pub(crate) fn measured(&self) -> Option<&Measurement> {
        match self {
            Self::Measured(measurement) => Some(measurement),
            Self::NotBuilt(_) | Self::Failed(_) => None,
        }
    }

    /// Why the point has no correct measurement, if it has none; a measured point whose errors
    /// are its measurement (see [`Point::errors_expected`]) has no problem.
    pub(crate) fn problem_of(&self, point: &Point) -> Option<String> {
        match self {
            Self::Measured(_) if point.errors_expected() => None,
            _ => self.problem(),
        }
    }

    /// Why the point has no correct measurement, if it has none.
    pub(crate) fn problem(&self) -> Option<String> {
        match self {
            Self::Measured(m) if m.is_correct() => None,
            Self::Measured(m) => Some(format!(
                "{} errors, {} lost, {} duplicated{}",
                m.errors,
                m.lost,
                m.duplicated,
                m.first_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            )),
            Self::NotBuilt(message) | Self::Failed(message) => Some(message.clone()),
        }
    }
}

/// A point and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PointResult {
    pub(crate) point: Point,
    pub(crate) outcome: Outcome,
    /// How long the `fanout bench` invocation took, all runs and servers included.
    pub(crate) elapsed_seconds: f64,
}

/// Everything a report is rendered from; written as `results.json` beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) mode: Mode,
    pub(crate) repeat: usize,
    pub(crate) machine: Machine,
    /// Seconds the measurements took (the build excluded).
    pub(crate) elapsed_seconds: f64,
    pub(crate) sections: Vec<Section>,
    pub(crate) points: Vec<PointResult>,
    /// The articles' Python in the same run (`None` in a results file from before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) python: Option<crate::python::PythonSection>,
    /// The floors in the same run (`None` in a results file from before them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) floors: Option<Vec<crate::floors::FloorResult>>,
}

impl Results {
    /// The outcome of `point`, if it ran.
    pub(crate) fn outcome(&self, point: &Point) -> Option<&Outcome> {
        self.points.iter().find(|result| result.point.same_as(point)).map(|result| &result.outcome)
    }

    /// The measurement of `point`, if it has one.
    pub(crate) fn measured(&self, point: &Point) -> Option<&Measurement> {
        self.outcome(point).and_then(Outcome::measured)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn measurement(workers: usize, jobs: usize, wall: f64, ideal: f64) -> Measurement {
        Measurement {
            workers,
            jobs,
            time_scale: 0.01,
            wall_seconds: wall,
            ideal_seconds: ideal,
            efficiency: ideal / wall,
            ok: jobs,
            errors: 0,
            lost: 0,
            duplicated: 0,
            cpu_seconds: 0.05,
            host_cpu_seconds: None,
            hosts_used: None,
            peak_rss_bytes: 8 << 20,
            peak_pss_bytes: Some(4 << 20),
            verified: Some(true),
            inner_workers: None,
            wall_seconds_runs: vec![wall],
            first_error: None,
            http_retries: None,
            worker_retries: None,
            job_timeout_seconds: None,
            jobs_expired: None,
            job_reruns: None,
            job_reruns_by_round: Vec::new(),
            responses_429: None,
            requests: None,
            required_requests: None,
            request_rate: None,
            throttle_per_second: None,
            server_rate_limit_per_second: None,
            rate_ideal_seconds: None,
            rate_bound_seconds: None,
            server_cpu_seconds_per_request: Some(0.00008),
        }
    }

    #[test]
    fn a_json_line_of_fanout_bench_parses() {
        let line = r#"{"scenario":"api-calls","executor":"thread","workers":32,"jobs":200,"time_scale":0.01,"wall_seconds":0.081,"ideal_seconds":0.073255,"efficiency":0.9044,"ok":200,"errors":0,"lost":0,"duplicated":0,"cpu_seconds":0.04,"peak_rss_bytes":9000000,"repeat":3,"nested":false,"inner_workers":null,"queue":null,"verified":true,"wall_seconds_runs":[0.08,0.081,0.09],"process_cpu_seconds":0.05,"first_error":null}"#;
        let outcome = Outcome::from_invocation(true, &format!("{line}\n"), "");
        let measured = outcome.measured().cloned();
        assert_eq!(measured.as_ref().map(|m| (m.workers, m.wall_seconds)), Some((32, 0.081)));
        assert_eq!(outcome.problem(), None);
        assert_eq!(measured.as_ref().map(|m| (m.http_retries, m.worker_retries)), Some((None, None)));
        let faulty = line
            .replace(r#""first_error":null"#, r#""first_error":null,"http_retries":12,"worker_retries":3"#);
        let faulty = Outcome::from_invocation(true, &faulty, "");
        assert_eq!(faulty.measured().map(|m| (m.http_retries, m.worker_retries)), Some((Some(12), Some(3))));
        let stuck = line.replace(
            r#""first_error":null"#,
            r#""first_error":null,"job_timeout_seconds":0.5,"jobs_expired":7,"job_reruns":7,"job_reruns_by_round":[5,2]"#,
        );
        let stuck = Outcome::from_invocation(true, &stuck, "").measured().cloned();
        assert_eq!(
            stuck.map(|m| (m.job_timeout_seconds, m.jobs_expired, m.job_reruns, m.job_reruns_by_round)),
            Some((Some(0.5), Some(7), Some(7), vec![5, 2]))
        );
        let limited = line.replace(
            r#""first_error":null"#,
            r#""first_error":null,"responses_429":0,"requests":200,"required_requests":200,"request_rate":499.1,"throttle_per_second":500.0,"server_rate_limit_per_second":500.0,"rate_ideal_seconds":0.4,"rate_bound_seconds":0.410465"#,
        );
        let limited = Outcome::from_invocation(true, &limited, "").measured().cloned();
        assert_eq!(
            limited.map(|m| (m.responses_429, m.request_rate, m.rate_bound_seconds)),
            Some((Some(0), Some(499.1), Some(0.410465)))
        );
        // A Redis line with worker hosts (`--hosts`) reads too: the report ignores those keys.
        let hosts = line.replace(r#""executor":"thread""#, r#""executor":"redis""#).replace(
            r#""first_error":null"#,
            r#""first_error":null,"hosts":2,"host_workers":32,"hosts_used":2,"other_workers":0,"host_cpu_seconds":0.06"#,
        );
        assert_eq!(Outcome::from_invocation(true, &hosts, "").measured().map(|m| m.workers), Some(32));
    }

    #[test]
    fn failures_are_classified() {
        let not_built = Outcome::from_invocation(
            false,
            "",
            "error: run 1 of 3: api-calls on async: the async executor is not built yet; use --executor \
             serial or --executor thread for now\n",
        );
        assert_eq!(not_built, Outcome::NotBuilt("the async executor is not built yet".to_owned()));
        let unavailable = Outcome::from_invocation(
            false,
            "",
            "error: --throttle: the client's rate limit is not available on async yet (no builder); use \
             --executor thread\n",
        );
        assert_eq!(
            unavailable,
            Outcome::NotBuilt(
                "the client's rate limit is not available on async yet (no builder)".to_owned()
            )
        );
        let failed = Outcome::from_invocation(false, "", "error: run 1 of 3: boom\n");
        assert_eq!(failed, Outcome::Failed("run 1 of 3: boom".to_owned()));
        assert!(matches!(Outcome::from_invocation(true, "garbage", ""), Outcome::Failed(_)));
        let mut wrong = measurement(4, 10, 1.0, 0.5);
        wrong.lost = 2;
        assert!(Outcome::Measured(Box::new(wrong)).problem().is_some_and(|p| p.contains("2 lost")));
    }
}
