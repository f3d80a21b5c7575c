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
//! The log is cut into segments of 1 MiB. The last two reads walk as many batch headers from
//! their index entry (half the index interval), one in the active segment (its index whole in
//! memory: the baseline) and one near the end of the first segment, which is sealed: its
//! indexes are paged out to their files (one entry in 64 kept in memory), so its lookup reads a
//! block of the index file first (a `pread` of at most 512 bytes; the file is opened at the
//! first lookup and kept open).
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
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path(), config).expect("log");
    let value = [b'v'; 100];
    // Where the first segment ends (the batch that made the second one), and where the last
    // one starts.
    let (mut sealed_end, mut active_base, mut segments) = (None, 0, 1);
    let mut batch_len = 0;
    for i in 0..BATCHES {
        let mut builder = RecordBatchBuilder::new();
        builder.push(
            1_700_000_000_000 + i as i64,
            None,
            Some(&value),
            std::iter::empty::<(&str, &[u8])>(),
        );
        let batch = builder.build().expect("batch");
        batch_len = batch.len() as u64;
        log.append(batch).expect("append");
        if log.segment_count() > segments {
            segments = log.segment_count();
            sealed_end.get_or_insert(i);
            active_base = i;
        }
    }
    let sealed_end = sealed_end.expect("more than one segment");
    // The batches are all of one size, so the index has an entry every `stride` batches from a
    // segment's start: an offset `stride / 2` past one, near a segment's end (outside its ring
    // of latest batches), walks as many headers in either segment.
    let stride = 4096u64.div_ceil(batch_len);
    let past_entry =
        |base: u64, end: u64| base + (end - base - 2 * stride) / stride * stride + stride / 2;
    // Waits for the first segment's seal (the log stays usable after `close`).
    log.close().expect("close");
    // `max_bytes` 1: every read returns exactly its one batch (at least one whole batch is
    // always returned), so they differ only in how the batch is found.
    let one = log.read(BATCHES - 1, 1).expect("read").len();
    let mut group = c.benchmark_group("fetch_one_batch");
    for (name, offset) in [
        ("at_the_tail", BATCHES - 1),
        ("20_batches_back", BATCHES - 20),
        ("index_walk_active", past_entry(active_base, BATCHES)),
        ("index_walk_sealed", past_entry(0, sealed_end)),
    ] {
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
