//! Frame pool hot path: what an engine pays per frame to take and give back a buffer.
//!
//! `bulk32`: `alloc_bulk` of 32 frames and dropping them (the rx/tx burst pattern);
//! `single`: one `alloc` and drop. Throughput is reported per frame.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ukcm_nic::{FramePool, HugePolicy, PinnedBudget, PoolConfig};

fn pool_benches(c: &mut Criterion) {
    let cfg = PoolConfig { frame_size: 2048, headroom: 256, frames: 4096 };
    let pool = FramePool::with_region(cfg, &PinnedBudget::unlimited(), HugePolicy::Prefer).expect("pool");
    let mut g = c.benchmark_group("pool");

    g.throughput(Throughput::Elements(32));
    let mut v = Vec::with_capacity(32);
    g.bench_function("bulk32_alloc_drop", |b| {
        b.iter(|| {
            pool.alloc_bulk(&mut v, 32).expect("frames");
            black_box(&v);
            v.clear();
        })
    });

    g.throughput(Throughput::Elements(1));
    g.bench_function("single_alloc_drop", |b| {
        b.iter(|| {
            let f = pool.alloc().expect("frame");
            black_box(&f);
        })
    });
    g.finish();
}

criterion_group!(benches, pool_benches);
criterion_main!(benches);
