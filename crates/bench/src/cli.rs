//! The command line of `fanout` (clap derive), as DESIGN.md's CLI contract states it, with
//! the checks that turn bad flags into clear errors before anything starts.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fanout_bench::executor::Resilience;
use fanout_bench::run::TOKEN_ENV;
use fanout_bench::scenario::DEFAULT_RERUN_ROUNDS;
use fanout_bench::{ExecutorKind, Queue, RunSpec, Scenario, Secret};
use fanout_mock_api::config::{DEFAULT_BODY_LIMIT, DEFAULT_SEED, DEFAULT_TOKEN};
use fanout_mock_api::faults::DEFAULT_SLOW_FACTOR;
use fanout_mock_api::{FaultPoint, Faults, RateLimit};

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
    /// The floor of api-calls: the same requests over raw clients (pre-started threads or a
    /// bare async runtime, connections opened beforehand) with no executor, against a fresh
    /// mock API per repetition; prints one JSON line.
    Floor(FloorArgs),
    /// Serve a fanout-redis queue until killed, as worker processes of this executable:
    /// `fanout worker URL|env:VAR --queue NAME [--workers N]` (the URL best from a variable,
    /// `env:FANOUT_REDIS_URL`, so that its password is not on the command line).
    Worker {
        /// The worker's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<String>,
    },
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
    #[arg(long, value_name = "serial|process|thread|async|redis")]
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
    /// Runs, each in a fresh process against a fresh server; the median is reported. Memory
    /// is sampled on the first run only (the sampler's CPU would slow the runs it times).
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
    /// Run a task again, up to N more times, when its worker process dies (process only).
    #[arg(long, value_name = "N", default_value_t = 0)]
    retry_lost: u32,
    /// Fault drill: SIGKILL a random worker process every SECS seconds (process only; pair it
    /// with --retry-lost).
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    kill_worker_every: Option<std::time::Duration>,
    /// A time limit on each job of the (outer) executor, from when it starts on its worker: a
    /// job still running at it is stopped (its worker process killed and replaced, its future
    /// dropped, or its thread abandoned and replaced) and its inputs run again, the scenarios
    /// being idempotent (see --rerun-rounds). Not with --executor serial, which cannot stop a job.
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    job_timeout: Option<std::time::Duration>,
    /// At most this many rounds of re-runs of the inputs whose jobs expired (--job-timeout).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_RERUN_ROUNDS)]
    rerun_rounds: u32,
    /// The client's own rate limit, shared by every worker (thread and process): R requests
    /// per second at time scale 1, scaled like the latencies and like the server's
    /// --rate-limit, so `--throttle R --rate-limit R` keeps the client at the server's rate.
    /// api-calls takes a permit per job, ticket-migration one per request (its nested pools
    /// draw from the same limit); a 429's Retry-After pauses every worker.
    #[arg(long, value_name = "R", value_parser = positive)]
    throttle: Option<f64>,
    /// Permits the client's limit grants back to back (its GCRA burst) [default: 2, so that a
    /// permit granted late is made up by the next one and the rate holds at R; keep it below
    /// the server's --rate-burst].
    #[arg(long, value_name = "N", requires = "throttle", value_parser = clap::value_parser!(u32).range(1..))]
    throttle_burst: Option<u32>,
    /// Redis only: run the workers on K worker hosts, `fanout worker` processes on this
    /// machine (loopback, or network namespaces with --hosts-netns) sharing --workers (the
    /// remainder on the first hosts), started before each repetition and killed after it; the
    /// pool starts no worker of its own.
    #[arg(long, value_name = "K", value_parser = at_least_one)]
    hosts: Option<usize>,
    /// With --hosts: start host i inside network namespace NS_i (`ip netns exec NS_i`, one
    /// name per host, comma-separated), so that the hosts reach Redis and the mock API over
    /// their own network (give both with FANOUT_REDIS_URL and --url at addresses the
    /// namespaces reach). Needs root.
    #[arg(long, value_name = "NS,...", requires = "hosts", value_delimiter = ',')]
    pub(crate) hosts_netns: Vec<String>,
    /// With --hosts: the hosts' visibility timeout, how long the entry of a worker that died
    /// waits before another worker reclaims it [default: 30000].
    #[arg(long, value_name = "MS", requires = "hosts", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) host_visibility_ms: Option<u64>,
    /// Run against this mock API (`http://127.0.0.1:PORT`, as `fanout mock-api` prints it)
    /// instead of a fresh one per run: its state survives the run, so an interrupted migration
    /// resumes where it stopped. The server's --seed must match.
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// Fault injection in the mock API server the run starts.
    #[command(flatten)]
    pub(crate) faults: FaultArgs,
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
            resilience: Resilience {
                retry_lost: self.retry_lost,
                kill_worker_every: self.kill_worker_every,
                job_timeout: self.job_timeout,
            },
            rerun_rounds: self.rerun_rounds,
            progress_bar: None,
            throttle: self.throttle,
            throttle_burst: self.throttle_burst,
            hosts: self.hosts.map(|count| fanout_bench::scenario::Hosts { count, queue: String::new() }),
        }
    }

    /// The token, checked.
    pub(crate) fn token(&self) -> anyhow::Result<Secret> {
        checked_token(self.token.as_deref())
    }
}

#[derive(Debug, Args)]
pub(crate) struct FloorArgs {
    /// The raw client.
    #[arg(long, value_enum)]
    client: fanout_bench::floor::Client,
    /// Threads or tasks, each with a connection of its own.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    workers: usize,
    /// Items fetched, ids 1..=N.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = at_least_one)]
    jobs: usize,
    /// Factor applied to the server's latencies (1 = the articles' timings).
    #[arg(long, value_name = "F", default_value_t = 0.01, value_parser = positive_time_scale, allow_negative_numbers = true)]
    time_scale: f64,
    /// Timed repetitions, each against a fresh server; the median wall is reported.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = at_least_one)]
    repeat: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub(crate) format: Format,
    /// Seed of the server's data.
    #[arg(long, value_name = "S", default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Bearer token between client and server [default: a fixed development token].
    #[arg(long, value_name = "T", env = TOKEN_ENV, hide_env_values = true)]
    token: Option<String>,
    /// Run against this mock API instead of a fresh one per repetition (the server's CPU
    /// time is then not read: `server_cpu_seconds_per_request` is null).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Open the connections inside the timed window (as the scenarios do) instead of before it.
    #[arg(long)]
    cold: bool,
}

impl FloorArgs {
    /// The floor's options.
    pub(crate) fn options(&self) -> fanout_bench::floor::FloorOptions {
        fanout_bench::floor::FloorOptions {
            client: self.client,
            workers: self.workers,
            jobs: self.jobs,
            time_scale: self.time_scale,
            repeat: self.repeat,
            seed: self.seed,
            url: self.url.clone(),
            cold: self.cold,
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
    /// Bearer token the server requires [default: a fixed development token]. Prefer the
    /// environment variable: a command line is visible to every user of the machine.
    #[arg(long, value_name = "T", env = TOKEN_ENV, hide_env_values = true, value_parser = secret)]
    token: Option<Secret>,
    /// Factor applied to every latency (1 = the articles' timings, 0 = no waiting).
    #[arg(long, value_name = "F", default_value_t = 0.01, value_parser = time_scale_or_zero, allow_negative_numbers = true)]
    pub(crate) time_scale: f64,
    /// Seed of the generated data and of the injected faults.
    #[arg(long, value_name = "S", default_value_t = DEFAULT_SEED)]
    pub(crate) seed: u64,
    /// Largest accepted request body, in bytes; larger ones get 413.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BODY_LIMIT, value_parser = at_least_one)]
    pub(crate) body_limit: usize,
    /// Fault injection (all off by default).
    #[command(flatten)]
    pub(crate) faults: FaultArgs,
    /// Exit when standard input closes (how `fanout bench` makes sure its server never
    /// outlives it).
    #[arg(long, hide = true)]
    pub(crate) exit_on_stdin_eof: bool,
}

impl MockApiArgs {
    /// The token, checked.
    pub(crate) fn token(&self) -> anyhow::Result<Secret> {
        checked_token(self.token.as_ref().map(Secret::expose))
    }
}

/// The mock API's fault injection flags (see `fanout_mock_api::faults`). A share is a number
/// from 0 to 1. The fates of errors, drops and the slow tail follow from `--seed` and each
/// request's identity, whatever the order requests arrive in.
#[derive(Debug, Clone, PartialEq, Args)]
#[command(next_help_heading = "Fault injection")]
pub(crate) struct FaultArgs {
    /// Share of requests answered 500.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = share)]
    error_rate: f64,
    /// Share of requests whose connection is closed without an answer.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = share)]
    drop_rate: f64,
    /// Share of requests that are never answered (the connection stays open, like a stuck
    /// upstream); only a client timeout or a job time limit gets past them.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = share)]
    hang_rate: f64,
    /// Share of requests that are --slow-factor times slower (a slow tail).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = share)]
    slow_rate: f64,
    /// How much slower the slow tail is.
    #[arg(long, value_name = "F", default_value_t = DEFAULT_SLOW_FACTOR, value_parser = slow_factor)]
    slow_factor: f64,
    /// When an error or a drop strikes: before the request is applied, after it was (a POST
    /// then exists although its client saw a failure), or either, drawn per request.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = FaultPointArg::After)]
    fault_point: FaultPointArg,
    /// At most this many errors and drops for one request; later attempts of it succeed.
    #[arg(long, value_name = "N")]
    max_faults_per_request: Option<u32>,
    /// Rate limit, in requests per second at time scale 1 (scaled like the latencies);
    /// requests over it get 429 with Retry-After and Retry-After-Ms.
    #[arg(long, value_name = "R", value_parser = positive)]
    rate_limit: Option<f64>,
    /// Requests the rate limit admits back to back [default: one second's worth, at least 1].
    #[arg(long, value_name = "N", requires = "rate_limit", value_parser = clap::value_parser!(u32).range(1..))]
    rate_burst: Option<u32>,
    /// Requests in flight at once before new ones get 503 with Retry-After.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    max_concurrent: Option<usize>,
}

/// `--fault-point`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FaultPointArg {
    /// Before the request is applied.
    Before,
    /// After the request was applied.
    After,
    /// Before or after, drawn per request.
    Either,
}

impl FaultArgs {
    /// The faults these flags describe, checked.
    pub(crate) fn faults(&self) -> anyhow::Result<Faults> {
        let point = match self.fault_point {
            FaultPointArg::Before => FaultPoint::Before,
            FaultPointArg::After => FaultPoint::After,
            FaultPointArg::Either => FaultPoint::Either,
        };
        let mut faults = Faults::none()
            .with_error_rate(self.error_rate)
            .with_drop_rate(self.drop_rate)
            .with_hang_rate(self.hang_rate)
            .with_slow_tail(self.slow_rate, self.slow_factor)
            .with_point(point);
        if let Some(max) = self.max_faults_per_request {
            faults = faults.with_max_per_request(max);
        }
        if let Some(rate) = self.rate_limit {
            let one_second = u32::try_from(rate.ceil() as u64).unwrap_or(u32::MAX).max(1);
            faults = faults.with_rate_limit(RateLimit::new(rate, self.rate_burst.unwrap_or(one_second)));
        }
        if let Some(max) = self.max_concurrent {
            faults = faults.with_max_concurrent(max);
        }
        faults.validate().map_err(|error| anyhow::anyhow!("{error} (check the fault injection flags)"))?;
        Ok(faults)
    }

    /// The flags again, as arguments of `fanout mock-api`, only those that differ from their
    /// defaults: for a command that takes the same flags and forwards them to the server it
    /// starts.
    pub(crate) fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut push = |flag: &str, value: String| {
            args.push(format!("--{flag}"));
            args.push(value);
        };
        for (flag, value, default) in [
            ("error-rate", self.error_rate, 0.0),
            ("drop-rate", self.drop_rate, 0.0),
            ("hang-rate", self.hang_rate, 0.0),
            ("slow-rate", self.slow_rate, 0.0),
            ("slow-factor", self.slow_factor, DEFAULT_SLOW_FACTOR),
        ] {
            if value != default {
                push(flag, value.to_string());
            }
        }
        if let Some(value) =
            self.fault_point.to_possible_value().filter(|_| self.fault_point != FaultPointArg::After)
        {
            push("fault-point", value.get_name().to_owned());
        }
        if let Some(max) = self.max_faults_per_request {
            push("max-faults-per-request", max.to_string());
        }
        if let Some(rate) = self.rate_limit {
            push("rate-limit", rate.to_string());
        }
        if let Some(burst) = self.rate_burst {
            push("rate-burst", burst.to_string());
        }
        if let Some(max) = self.max_concurrent {
            push("max-concurrent", max.to_string());
        }
        args
    }
}

/// A token from the command line or the environment. Never fails: a parser that refused a
/// value would have clap echo it in its error; [`checked_token`] checks it without echoing.
fn secret(text: &str) -> Result<Secret, String> {
    Ok(Secret::new(text))
}

fn seconds(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|secs| std::time::Duration::try_from_secs_f64(secs).ok())
        .filter(|every| !every.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}

fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err("must be a share from 0 to 1, such as 0.1 for 10% of requests".to_owned()),
    }
}

fn slow_factor(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(factor) if factor.is_finite() && factor >= 1.0 => Ok(factor),
        _ => Err("must be a finite number of at least 1, such as 10".to_owned()),
    }
}

fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
        _ => Err("must be a finite number greater than 0".to_owned()),
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

    /// Parses `fanout mock-api ARGS`.
    fn mock_api(args: &[&str]) -> Result<MockApiArgs, clap::Error> {
        let argv = ["fanout", "mock-api"].iter().chain(args).copied();
        match Cli::try_parse_from(argv)?.command {
            Command::MockApi(args) => Ok(args),
            _ => Err(clap::Error::new(clap::error::ErrorKind::InvalidSubcommand)),
        }
    }

    #[test]
    fn mock_api_faults_are_off_by_default() -> anyhow::Result<()> {
        let args = mock_api(&[])?;
        assert_eq!(args.faults.faults()?, Faults::none());
        assert!(args.faults.to_args().is_empty());
        assert_eq!(args.body_limit, DEFAULT_BODY_LIMIT);
        Ok(())
    }

    #[test]
    fn mock_api_fault_flags_build_the_config_and_round_trip() -> anyhow::Result<()> {
        let flags = [
            "--error-rate",
            "0.1",
            "--drop-rate",
            "0.02",
            "--hang-rate",
            "0.03",
            "--slow-rate",
            "0.01",
            "--slow-factor",
            "20",
            "--fault-point",
            "either",
            "--max-faults-per-request",
            "3",
            "--rate-limit",
            "2.5",
            "--max-concurrent",
            "50",
        ];
        let args = mock_api(&flags)?;
        let expected = Faults::none()
            .with_error_rate(0.1)
            .with_drop_rate(0.02)
            .with_hang_rate(0.03)
            .with_slow_tail(0.01, 20.0)
            .with_point(FaultPoint::Either)
            .with_max_per_request(3)
            .with_rate_limit(RateLimit::new(2.5, 3))
            .with_max_concurrent(50);
        assert_eq!(args.faults.faults()?, expected, "the burst defaults to one second's worth");
        let forwarded = args.faults.to_args();
        let again = mock_api(&forwarded.iter().map(String::as_str).collect::<Vec<_>>())?;
        assert_eq!(again.faults, args.faults);
        let burst = mock_api(&["--rate-limit", "0.5", "--rate-burst", "4"])?;
        assert_eq!(burst.faults.faults()?.rate_limit, Some(RateLimit::new(0.5, 4)));
        assert_eq!(
            mock_api(&["--rate-limit", "0.5"])?.faults.faults()?.rate_limit,
            Some(RateLimit::new(0.5, 1))
        );
        Ok(())
    }

    #[test]
    fn mock_api_refuses_bad_fault_flags() {
        for bad in [
            &["--error-rate", "1.5"][..],
            &["--drop-rate", "-0.1"],
            &["--slow-rate", "NaN"],
            &["--slow-factor", "0.5"],
            &["--rate-limit", "0"],
            &["--rate-burst", "3"],
            &["--rate-limit", "1", "--rate-burst", "0"],
            &["--max-concurrent", "0"],
            &["--fault-point", "sometimes"],
            &["--body-limit", "0"],
        ] {
            assert!(mock_api(bad).is_err(), "{bad:?}");
        }
        // Each share is valid alone, but together they exceed 1.
        let args = mock_api(&["--error-rate", "0.8", "--drop-rate", "0.5"]);
        let error = args.map_err(anyhow::Error::from).and_then(|args| args.faults.faults());
        assert!(error.is_err_and(|e| e.to_string().contains("at most 1")));
    }

    #[test]
    fn the_mock_api_token_never_shows() -> anyhow::Result<()> {
        let args = mock_api(&["--token", "s3cret-flag-token"])?;
        assert_eq!(args.token()?.expose(), "s3cret-flag-token");
        assert!(!format!("{args:?}").contains("s3cret-flag-token"));
        // Refused without echoing, by clap or by the check.
        let spaced =
            mock_api(&["--token", "bad s3cret"]).map_err(anyhow::Error::from).and_then(|a| a.token());
        let message = spaced.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!message.is_empty() && !message.contains("s3cret"), "{message}");
        // The help shows neither the value of the environment variable nor a default token.
        let help = mock_api(&["--help"]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(help.contains(TOKEN_ENV), "{help}");
        assert!(!help.contains(DEFAULT_TOKEN));
        Ok(())
    }

    #[test]
    fn bad_tokens_are_refused_without_being_echoed() {
        let error = checked_token(Some("has space")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!error.is_empty() && !error.contains("has space"));
        assert!(checked_token(None).is_ok());
    }
}
