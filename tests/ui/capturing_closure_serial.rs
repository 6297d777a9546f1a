// The same rule holds on `Serial`, so that swapping one executor for another never breaks a
// build: a capturing closure is refused here too, with the same message.
use fanout::{Executor, Serial};

fn main() {
    let offset = 10_u64;
    let _sums = Serial::new().map(move |x: u64| x + offset, 0..3);
}
