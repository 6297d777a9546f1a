// A closure that captures its environment cannot be rebuilt in a worker process: the build
// fails with the `AssertStateless` message, which says where to move the captured state.
use fanout::{Executor, ProcessPool};

fn main() {
    let base = String::from("https://api.example/items/");
    let pool = ProcessPool::new(2).unwrap();
    let _urls = pool.map(move |id: u64| format!("{base}{id}"), 0..3);
}
