// A job output that is not a serde type cannot travel back from a worker: the build fails
// with the same `Payload` message as for an input.
use fanout::{Executor, ProcessPool};

struct Report {
    _lines: u64,
}

fn make_report(lines: u64) -> Report {
    Report { _lines: lines }
}

fn main() {
    let pool = ProcessPool::new(2).unwrap();
    let _reports = pool.map(make_report, 0..3);
}
