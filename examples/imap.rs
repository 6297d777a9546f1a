//! `imap` and `map_unordered` over an endless input.
//!
//! Both are lazy: they pull inputs only as workers free up, so `0..` never gets collected, and
//! `take(n)` stops the stream (dropping it abandons the jobs in flight). Every third input is
//! slow; `imap` still yields the results in input order, each as soon as those before it are
//! there, while `map_unordered` yields `(index, result)` as jobs finish.
//! `cargo run --example imap`

use std::error::Error;
use std::thread::sleep;
use std::time::{Duration, Instant};

use fanout::{Executor, ThreadPool};

/// A job whose duration varies: multiples of 3 take 60 ms, the others 10 ms.
fn square_slowly(x: u64) -> u64 {
    sleep(Duration::from_millis(if x % 3 == 0 { 60 } else { 10 }));
    x * x
}

fn main() -> Result<(), Box<dyn Error>> {
    let pool = ThreadPool::new(4)?;

    let start = Instant::now();
    println!("imap: input order, over the endless input 0..");
    for (x, result) in pool.imap(square_slowly, 0..).take(8).enumerate() {
        println!("  {:>3} ms  input {x}: {}", start.elapsed().as_millis(), result?);
    }

    let start = Instant::now();
    println!("map_unordered: completion order, over the endless input 0..");
    let mut order = Vec::new();
    for (index, result) in pool.map_unordered(square_slowly, 0..).take(8) {
        println!("  {:>3} ms  input {index}: {}", start.elapsed().as_millis(), result?);
        order.push(index);
    }
    println!("map_unordered's order: {order:?}");
    Ok(())
}
