//! Runs the mock API as its own process, for load generators and curl.
//!
//! ```text
//! cargo run --release -p fanout-mock-api --example serve -- \
//!     [--scale 0.01] [--token TOKEN] [--port 0] [--items-ms 1046.5] [--seconds N]
//! ```
//!
//! Prints `listening on http://127.0.0.1:PORT` and the applied items latency (never the token),
//! then serves until killed, or for `--seconds N` followed by a graceful shutdown.
//! `--items-ms` overrides the items latency at scale 1 (e.g. `--scale 1 --items-ms 500`).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use fanout_mock_api::{Config, MockServer, Route};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default().with_time_scale(0.01);
    let mut seconds: Option<f64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--scale" => config = config.with_time_scale(value()?.parse()?),
            "--token" => config = config.with_token(value()?),
            "--port" => config = config.with_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, value()?.parse()?))),
            "--items-ms" => {
                let ms: f64 = value()?.parse()?;
                config = config.with_latency(Route::Items, Duration::try_from_secs_f64(ms / 1000.0)?);
            }
            "--seconds" => seconds = Some(value()?.parse()?),
            other => return Err(format!("unknown argument {other:?}; see the example's docs").into()),
        }
    }
    let applied = config.applied_latency(Route::Items);
    let server = MockServer::start(config)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", server.url())?;
    writeln!(out, "items latency {} us", applied.as_micros())?;
    out.flush()?;
    drop(out);
    match seconds {
        Some(seconds) => {
            std::thread::sleep(Duration::try_from_secs_f64(seconds)?);
            server.shutdown()?;
        }
        None => loop {
            std::thread::park();
        },
    }
    Ok(())
}
