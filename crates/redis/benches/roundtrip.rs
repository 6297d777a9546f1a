//! Per empty job through RedisPool on loopback (chunk 1 and chunk 64), beside the floor
//! measured in the same run: a bare XADD / XREADGROUP / XACK round trip on one connection.
//!
//! `cargo bench -p fanout-redis --bench roundtrip` (needs redis-server on the PATH).
//!
//! Read the bare figure with care on a small VM: it is one client in lockstep with the server,
//! and it comes out in one of two modes, ~25 us when the scheduler keeps both on one CPU and
//! ~200 us when it puts them on two (a wake-up across CPUs cost ~70 us on the 2-vCPU VM of
//! issue 16's measurements: `redis-benchmark -t ping -c 1` did 120k requests/s on one CPU,
//! 13k across two). Unpinned, the pool's processes do not stay on one CPU either, so the two
//! figures are read in different modes; `taskset -c 0 cargo bench -p fanout-redis --bench
//! roundtrip` puts the bench, its redis-server and the workers on one CPU, where both are in
//! the low mode: the pair the chunk-1 target compares. `tests/commands.rs` counts the pool's
//! round trips per job.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fanout_core::Executor;
use fanout_redis::RedisPool;

#[path = "../tests/support/mod.rs"]
mod support;

fn empty(x: u64) -> u64 {
    x
}

fn roundtrip(c: &mut Criterion) {
    let Some(redis) = support::TestRedis::start(None) else { return };
    let mut group = c.benchmark_group("redis");
    group.measurement_time(Duration::from_secs(4)).sample_size(20);

    let mut con = redis.connection();
    let _: redis::Value = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("bare")
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut con)
        .unwrap();
    group.throughput(Throughput::Elements(1));
    group.bench_function("bare XADD+XREADGROUP+XACK", |b| {
        b.iter(|| {
            let id: String = redis::cmd("XADD").arg("bare").arg("*").arg("i").arg(1).query(&mut con).unwrap();
            let _: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g")
                .arg("c")
                .arg("COUNT")
                .arg(1)
                .arg("STREAMS")
                .arg("bare")
                .arg(">")
                .query(&mut con)
                .unwrap();
            let _: redis::Value = redis::pipe()
                .cmd("XACK")
                .arg("bare")
                .arg("g")
                .arg(&id)
                .cmd("XDEL")
                .arg("bare")
                .arg(&id)
                .query(&mut con)
                .unwrap();
        });
    });

    for chunk in [1_usize, 64] {
        let pool = RedisPool::builder(&redis.url())
            .queue(&format!("bench-{chunk}"))
            .local_workers(2)
            .chunk_size(chunk)
            .prefetch(2)
            .build()
            .unwrap();
        let jobs = 256 * chunk as u64;
        group.throughput(Throughput::Elements(jobs));
        group.bench_function(format!("RedisPool empty job, chunk {chunk}, 2 workers"), |b| {
            b.iter(|| pool.map(empty, 0..jobs));
        });
    }
    group.finish();
}

criterion_group!(benches, roundtrip);
criterion_main!(benches);
