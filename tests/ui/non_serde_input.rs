// A job input that is not a serde type cannot travel to a worker: the build fails with the
// `Payload` message, which says to derive serde or to build the state inside the job.
use fanout::{Executor, ProcessPool};

struct Connection;

fn use_connection(_connection: Connection) -> u64 {
    0
}

fn main() {
    let pool = ProcessPool::new(2).unwrap();
    let _results = pool.map(use_connection, [Connection]);
}
