//! `AnyExecutor` and `ExecutorKind`: the execution model chosen at run time.
//!
//! The kind comes from the first command-line argument (`serial`, `thread`, `process` or
//! `async`; default `thread`) and is parsed with `FromStr`; `AnyExecutor` implements the same
//! `Executor` trait, so the code that runs jobs does not change. An unknown name is an
//! `UnknownExecutor` error that lists the valid ones.
//! `cargo run --example any_executor -- process`

use std::error::Error;

use fanout::{AnyExecutor, Executor, ExecutorKind, ProcessPool};

/// The job: the same on every executor.
fn fetch(id: u64) -> String {
    format!("item {id}")
}

/// Code written against the trait: it runs on whatever `main` built.
fn run(executor: &impl Executor) -> Result<Vec<String>, fanout::JobError> {
    executor.map(fetch, 1..=4).into_iter().collect()
}

fn main() -> Result<(), Box<dyn Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "thread".to_owned());
    let kind: ExecutorKind = match name.parse() {
        Ok(kind) => kind,
        Err(error) => {
            eprintln!("{error}"); // `?` would print its `Debug` form: UnknownExecutor("...")
            std::process::exit(2);
        }
    };
    let executor = AnyExecutor::new(kind, 4)?;
    println!("{} executor, workers: {}: {:?}", executor.name(), executor.workers(), run(&executor)?);

    assert_eq!("process".parse::<ExecutorKind>(), Ok(ExecutorKind::Process));
    match "fibers".parse::<ExecutorKind>() {
        Ok(kind) => println!("unexpected: {kind}"),
        Err(error) => println!("\"fibers\".parse::<ExecutorKind>(): {error}"),
    }

    // An executor with non-default settings converts with `From`.
    let configured = AnyExecutor::from(ProcessPool::builder().workers(2).retry_lost(1).build()?);
    println!("{} executor, workers: {}: {:?}", configured.kind(), configured.workers(), run(&configured)?);
    Ok(())
}
