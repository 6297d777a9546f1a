//! The command line of `fanout` (clap derive), as DESIGN.md's CLI contract states it, with
//! the checks that turn bad flags into clear errors before anything starts.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fanout_bench::run::TOKEN_ENV;
use fanout_bench::{ExecutorKind, Queue, RunSpec, Scenario, Secret};
use fanout_mock_api::config::{DEFAULT_SEED, DEFAULT_TOKEN};

/// Run the same jobs serially, on a process pool, a thread pool or an async executor, and
/// measure them against each other on real HTTP work.
#[derive(Debug, Parser)]
#[command(name = "fanout", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Measure one scenario on one executor against a fresh mock API, each repetition in a
    /// fresh process.
    Bench(BenchArgs),
    /// Serve the mock API; prints `listening on http://127.0.0.1:PORT`, serves until killed.
    MockApi(MockApiArgs),
    /// One measured run, in the process `fanout bench` starts for it (internal).
    #[command(name = "__run", hide = true)]
    Run {
        /// The run's spec, as JSON.
        spec: String,
    },
}

/// How `fanout bench` prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// One JSON object per line.
    Json,
    /// A markdown table.
    Markdown,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The workload.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// The execution model.
    #[arg(long, value_enum)]
    executor: ExecutorKind,
    /// Workers of the executor (of the outer one for ticket-migration).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    workers: usize,
    /// Number of jobs [default: 200 for api-calls, the whole queue for ticket-migration (its
    /// first N tickets otherwise), 32 for cpu].
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    jobs: Option<usize>,
    /// Factor applied to the server's latencies (1 = the articles' timings).
    #[arg(long, value_name = "F", default_value_t = 0.01, value_parser = positive_time_scale, allow_negative_numbers = true)]
    pub(crate) time_scale: f64,
    /// Runs, each in a fresh process against a fresh server; the median is reported.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one)]
    pub(crate) repeat: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub(crate) format: Format,
    /// The queue that ticket-migration moves.
    #[arg(long, value_enum, default_value_t = Queue::Support)]
    queue: Queue,
    /// Workers of ticket-migration's nested, per-ticket executor.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = at_least_one)]
    inner_workers: usize,
    /// Seed of the server's data.
    #[arg(long, value_name = "S", default_value_t = DEFAULT_SEED)]
    pub(crate) seed: u64,
    /// Bearer token between client and server [default: a fixed development token].
    #[arg(long, value_name = "T", env = TOKEN_ENV, hide_env_values = true)]
    token: Option<String>,
}

impl BenchArgs {
    /// The run's spec, without the server's URL yet.
    pub(crate) fn spec(&self) -> RunSpec {
        RunSpec {
            scenario: self.scenario,
            executor: self.executor,
            workers: self.workers,
            jobs: self.jobs.unwrap_or_else(|| self.scenario.default_jobs(self.queue)),
            queue: self.queue,
            inner_workers: self.inner_workers,
            seed: self.seed,
            url: String::new(),
        }
    }

    /// The token, checked.
    pub(crate) fn token(&self) -> anyhow::Result<Secret> {
        checked_token(self.token.as_deref())
    }
}

#[derive(Debug, Args)]
pub(crate) struct MockApiArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) addr: SocketAddr,
    /// Bearer token the server requires [default: a fixed development token].
    #[arg(long, value_name = "T", env = TOKEN_ENV, hide_env_values = true)]
    token: Option<String>,
    /// Factor applied to every latency (1 = the articles' timings, 0 = no waiting).
    #[arg(long, value_name = "F", default_value_t = 0.01, value_parser = time_scale_or_zero, allow_negative_numbers = true)]
    pub(crate) time_scale: f64,
    /// Seed of the generated data.
    #[arg(long, value_name = "S", default_value_t = DEFAULT_SEED)]
    pub(crate) seed: u64,
    /// Exit when standard input closes (how `fanout bench` makes sure its server never
    /// outlives it).
    #[arg(long, hide = true)]
    pub(crate) exit_on_stdin_eof: bool,
}

impl MockApiArgs {
    /// The token, checked.
    pub(crate) fn token(&self) -> anyhow::Result<Secret> {
        checked_token(self.token.as_deref())
    }
}

/// The token from a flag, the environment or the default; never echoed in an error.
pub(crate) fn checked_token(token: Option<&str>) -> anyhow::Result<Secret> {
    let token = token.unwrap_or(DEFAULT_TOKEN);
    if token.is_empty() || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        anyhow::bail!("the token (--token or {TOKEN_ENV}) must be non-empty visible ASCII without spaces");
    }
    Ok(Secret::new(token))
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(count) => Ok(count),
        Err(_) => Err("expected a whole number of at least 1".to_owned()),
    }
}

fn positive_time_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(scale) if scale.is_finite() && scale > 0.0 => Ok(scale),
        _ => Err("must be a finite number greater than 0, such as 0.01 (100 times faster than the \
                  articles) or 1 (their real timings)"
            .to_owned()),
    }
}

fn time_scale_or_zero(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(scale) if scale.is_finite() && scale >= 0.0 => Ok(scale),
        _ => {
            Err("must be a finite number of at least 0 (0 = no waiting, 1 = the articles' timings)"
                .to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn numbers_are_checked() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").is_err());
        assert!(at_least_one("-1").is_err());
        assert_eq!(positive_time_scale("0.01"), Ok(0.01));
        for bad in ["0", "-1", "NaN", "inf", "x"] {
            assert!(positive_time_scale(bad).is_err(), "{bad}");
        }
        assert_eq!(time_scale_or_zero("0"), Ok(0.0));
    }

    #[test]
    fn bad_tokens_are_refused_without_being_echoed() {
        let error = checked_token(Some("has space")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!error.is_empty() && !error.contains("has space"));
        assert!(checked_token(None).is_ok());
    }
}
