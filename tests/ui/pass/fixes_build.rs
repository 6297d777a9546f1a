// The fixes that the compile-fail messages suggest build and run: the captured value moved into
// a tuple input, or into the fields of a `Stateful` serde struct, on `ProcessPool` and `Serial`.
//
// This pass case also makes trybuild build the cases (`cargo build`) instead of only checking
// them (`cargo check`): the capturing-closure error is a const assertion that is evaluated when
// the job is monomorphized, which `cargo check` never does.
use fanout::{Executor, ProcessPool, Serial, Stateful, StatefulJob};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Url {
    base: String,
}

impl StatefulJob<u64> for Url {
    type Output = String;

    fn call(&self, id: u64) -> String {
        format!("{}{id}", self.base)
    }
}

fn main() {
    let base = String::from("https://api.example/items/");
    let inputs: Vec<(String, u64)> = (0..3).map(|id| (base.clone(), id)).collect();

    let pool = ProcessPool::new(2).unwrap();
    let urls = pool.map(|(base, id): (String, u64)| format!("{base}{id}"), inputs.clone());
    assert_eq!(urls[2].as_deref(), Ok("https://api.example/items/2"));
    let urls = pool.map(Stateful(Url { base: base.clone() }), 0..3);
    assert_eq!(urls[1].as_deref(), Ok("https://api.example/items/1"));

    let sums = Serial::new().map(|(x, offset): (u64, u64)| x + offset, [(1, 10), (2, 10)]);
    assert_eq!(sums, [Ok(11), Ok(12)]);
}
