//! `fanout`: the bench harness's command line.
//!
//! - `fanout bench ...` orchestrates: per repetition it starts the mock API in its own process,
//!   runs the measurement in a fresh child process, then prints one row (JSON or markdown).
//! - `fanout mock-api ...` serves the mock API until killed.
//! - `fanout floor ...` measures api-calls' floor over raw clients (`fanout_bench::floor`).
//! - `fanout __run SPEC` (hidden) is the measured run itself, printing one JSON line.

mod cli;

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fanout_bench::executor::{HOST_VISIBILITY, REDIS_URL_ENV};
use fanout_bench::report::{self, Row};
use fanout_bench::run::{self, HostsSeen, MockServerProcess, WorkerHosts};
use fanout_bench::scenario::{self, ChildMessage};
use fanout_bench::{RunSpec, Secret};
use fanout_mock_api::{Config, MockServer};

use crate::cli::{BenchArgs, Cli, Command, FloorArgs, Format, MockApiArgs, checked_token};

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Bench(args) => bench(&args),
        Command::MockApi(args) => mock_api(&args),
        Command::Floor(args) => floor(&args),
        Command::Worker { args } => fanout_redis::WorkerOptions::from_args(&args)
            .and_then(fanout_redis::run_workers)
            .map_err(Into::into),
        Command::Run { spec } => run_child(&spec),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) if run::interrupted() => loop {
            // The Ctrl-C handler reports and exits; what failed here failed because of it.
            std::thread::park();
        },
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `fanout bench`: the repetitions, each with a fresh server and a fresh run child.
fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let token = args.token()?;
    let spec = args.spec();
    spec.validate()?;
    if let Some(count) = spec.hosts.as_ref().map(|hosts| hosts.count) {
        if !args.hosts_netns.is_empty() && args.hosts_netns.len() != count {
            anyhow::bail!(
                "--hosts-netns names {} namespaces for --hosts {count}: give one per host",
                args.hosts_netns.len()
            );
        }
    }
    let _redis = redis_server_for(&spec)?;
    let exe =
        std::env::current_exe().context("could not locate the fanout executable to start its children")?;
    // Best effort: without it, orphans go to init, which reaps them too.
    let _ = run::become_subreaper();
    ctrlc::set_handler(|| {
        run::set_interrupted();
        // Children first: waiting for jobs in flight could take seconds at time scale 1, and
        // a run child's fork server and workers die with it.
        run::kill_live_children();
        // The run child's fork server and workers follow it within milliseconds (their
        // channels close); reap them all, so that none is left behind as a zombie.
        run::reap_descendants(Duration::from_millis(1500));
        eprintln!("{}", run::interrupted_report());
        std::process::exit(130);
    })
    .context("could not install the Ctrl-C handler")?;

    // Checked before any process starts, so that a bad flag is one clear error.
    args.faults.faults()?;
    if args.url.is_some() && !fault_args_are_default(args) {
        anyhow::bail!(
            "fault injection flags configure the server fanout bench starts; with --url, start `fanout mock-api` with them instead"
        );
    }
    let fault_args = args.faults.to_args();
    // On a terminal each run child draws a bar of its jobs' completions (`fanout::bar`), on
    // the standard error it shares with this process; piped, nothing is drawn.
    let bar = io::stderr().is_terminal();
    let mut runs = Vec::with_capacity(args.repeat);
    for repetition in 1..=args.repeat {
        // A server of the user's (`--url`) keeps its state between runs; otherwise every run
        // gets a fresh one.
        let server = match &args.url {
            Some(_) => None,
            None => Some(MockServerProcess::start(&exe, args.time_scale, args.seed, &token, &fault_args)?),
        };
        let url =
            server.as_ref().map_or_else(|| args.url.clone().unwrap_or_default(), |s| s.url().to_owned());
        let progress_bar = bar.then(|| format!("run {repetition}/{}", args.repeat));
        let mut spec = RunSpec { url, progress_bar, ..spec.clone() };
        // A fresh queue per repetition: nothing of an earlier one's (killed) workers is left in
        // its consumer group.
        let hosts = match &mut spec.hosts {
            Some(hosts) => {
                hosts.queue = format!("fanout-bench-hosts-{}-{repetition}", std::process::id());
                let visibility = args.host_visibility_ms.map_or(HOST_VISIBILITY, Duration::from_millis);
                let started = WorkerHosts::start(
                    &exe,
                    hosts.count,
                    spec.workers,
                    &hosts.queue,
                    REDIS_URL_ENV,
                    visibility,
                    &args.hosts_netns,
                )
                .context("could not start the worker hosts (--hosts)")?;
                Some(started)
            }
            None => None,
        };
        let hosts_cpu_before = hosts.as_ref().map(WorkerHosts::cpu_seconds);
        // Memory is sampled on the first repetition only: reading `/proc` of a tree of 33
        // processes every 10 ms takes CPU from the run it measures (api-calls on 32 worker
        // processes at time scale 0.01, on 2 cores: 86.2% sampling every run, 87.5% sampling
        // the first, means of 4 alternated pairs of `--repeat 5`), so the other repetitions
        // time the executor alone, and their median is the row's.
        let sample_memory = repetition == 1;
        // The server is idle outside the run child's life, so its CPU over that life is what
        // the run's requests cost it.
        let server_pid = server.as_ref().map(MockServerProcess::pid);
        let (measured, server_cpu) = fanout_bench::floor::server_cpu_during(server_pid, || {
            run::measure(&exe, &spec, &token, sample_memory)
        });
        let mut measured = measured.with_context(|| {
            format!("run {repetition} of {}: {} on {}", args.repeat, spec.scenario, spec.executor)
        })?;
        measured.server_cpu_seconds = server_cpu.map(|cpu| cpu.as_secs_f64());
        if let Some(hosts) = &hosts {
            let consumers = hosts
                .consumers()
                .map_err(anyhow::Error::msg)
                .context("could not list the workers that served the run")?;
            let cpu_seconds = hosts.cpu_seconds() - hosts_cpu_before.unwrap_or(0.0);
            measured.hosts = Some(HostsSeen { consumers, cpu_seconds: cpu_seconds.max(0.0) });
        }
        drop(hosts);
        drop(server);
        runs.push(measured);
    }

    let row = Row::from_runs(&spec, args.time_scale, &runs).context("no run was measured")?;
    let text = match args.format {
        Format::Json => row.to_json() + "\n",
        Format::Markdown => report::markdown(&[row]),
    };
    io::stdout().lock().write_all(text.as_bytes()).context("could not write the result")
}

fn fault_args_are_default(args: &BenchArgs) -> bool {
    args.faults.to_args().is_empty()
}

/// `fanout floor`: api-calls' requests over a raw client, one row.
fn floor(args: &FloorArgs) -> anyhow::Result<()> {
    let token = args.token()?;
    let exe =
        std::env::current_exe().context("could not locate the fanout executable to start the mock API")?;
    let row = fanout_bench::floor::run(&exe, &args.options(), &token).context("fanout floor")?;
    let text = match args.format {
        Format::Json => row.to_json() + "\n",
        Format::Markdown => row.to_markdown(),
    };
    io::stdout().lock().write_all(text.as_bytes()).context("could not write the result")
}

/// `fanout mock-api`: serve until killed (or, for `fanout bench`, until stdin closes).
fn mock_api(args: &MockApiArgs) -> anyhow::Result<()> {
    let config = Config::default()
        .with_addr(args.addr)
        .with_time_scale(args.time_scale)
        .with_seed(args.seed)
        .with_body_limit(args.body_limit)
        .with_faults(args.faults.faults()?)
        .with_token(args.token()?.expose());
    let server = MockServer::start(config).context("could not start the mock API")?;
    {
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{}{}", run::LISTENING_PREFIX, server.url())
            .and_then(|()| stdout.flush())
            .context("could not print the address")?;
    }
    if args.exit_on_stdin_eof {
        // The orchestrator holds the other end: once it is gone, nobody waits for answers.
        let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
        std::process::exit(0);
    }
    loop {
        std::thread::park();
    }
}

/// `fanout __run SPEC`: one measured run; prints one [`ChildMessage`] line.
fn run_child(spec: &str) -> anyhow::Result<()> {
    let token = std::env::var(run::TOKEN_ENV).ok();
    let message = match (serde_json::from_str::<RunSpec>(spec), checked_token(token.as_deref())) {
        (Ok(spec), Ok(token)) => execute(&spec, token),
        (Err(error), _) => ChildMessage::Failed(format!("invalid run spec: {error}")),
        (_, Err(error)) => ChildMessage::Failed(error.to_string()),
    };
    let line = serde_json::to_string(&message).context("could not encode the result")?;
    writeln!(io::stdout().lock(), "{line}").context("could not write the result")
}

fn execute(spec: &RunSpec, token: Secret) -> ChildMessage {
    match scenario::execute(spec, token) {
        Ok(outcome) => ChildMessage::Done(Box::new(outcome)),
        Err(error) => ChildMessage::Failed(error.to_string()),
    }
}

/// `--executor redis` without `FANOUT_REDIS_URL`: a redis-server of this run's own (a free
/// loopback port, no persistence), killed when the run ends; its URL goes to the run children.
fn redis_server_for(spec: &RunSpec) -> anyhow::Result<Option<RedisServer>> {
    if spec.executor != fanout::ExecutorKind::Redis || std::env::var_os(REDIS_URL_ENV).is_some() {
        return Ok(None);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("--executor redis needs redis-server (apt-get install redis-server) or FANOUT_REDIS_URL")?;
    let server = RedisServer(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "redis-server did not start within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: set before this process starts any other thread that could read the environment.
    unsafe { std::env::set_var(REDIS_URL_ENV, format!("redis://127.0.0.1:{port}/0")) };
    Ok(Some(server))
}

/// A redis-server child, killed and reaped on drop.
struct RedisServer(std::process::Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
