//! The broker's fetch path: `PartitionLog::read` of one small batch, as a consumer that keeps up
//! asks for it (the batch just appended), and the same read twenty batches further back.
//!
//! The log holds 20,000 batches of one 100-byte record each (what a producer sending one
//! message at a time stores, as in W4), default settings (a sparse offset index entry every
//! 4 KiB). A segment keeps where its eight latest batches start, so the read at the tail goes
//! straight to its batch; an older one walks the batch headers after the offset index's entry
//! (a `pread` of the index interval and a header parse per batch passed). Both in one run: the
//! second is the baseline of the first.
//!
//! ```sh
//! cargo bench -p benches --bench fetch_path -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;

use criterion::{criterion_main, Criterion};
use rustmq_broker::storage::{LogConfig, PartitionLog};
use rustmq_protocol::RecordBatchBuilder;

const BATCHES: u64 = 20_000;

fn fetch(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("log");
    let value = [b'v'; 100];
    for i in 0..BATCHES {
        let mut builder = RecordBatchBuilder::new();
        builder.push(
            1_700_000_000_000 + i as i64,
            None,
            Some(&value),
            std::iter::empty::<(&str, &[u8])>(),
        );
        log.append(builder.build().expect("batch")).expect("append");
    }
    // `max_bytes` 1: every read returns exactly its one batch (at least one whole batch is
    // always returned), so the two differ only in how the batch is found.
    let one = log.read(BATCHES - 1, 1).expect("read").len();
    let mut group = c.benchmark_group("fetch_one_batch");
    for (name, back) in [("at_the_tail", 1), ("20_batches_back", 20)] {
        let offset = BATCHES - back;
        assert_eq!(log.read(offset, 1).expect("read").len(), one);
        group.bench_function(name, |b| {
            b.iter(|| log.read(black_box(offset), 1).expect("read"))
        });
    }
    group.finish();
}

// The macro generates an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::fetch);
}
criterion_main!(group::benches);
