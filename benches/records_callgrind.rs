//! Instructions per record of checking and decoding a record batch, for
//! `valgrind --tool=callgrind` (deterministic, unlike timings on a shared machine):
//!
//! ```text
//! cargo build --release -p benches --example records_callgrind
//! valgrind --tool=callgrind target/release/examples/records_callgrind 10 validate
//! valgrind --tool=callgrind target/release/examples/records_callgrind 30 validate
//! ```
//!
//! The difference of the two totals divided by 20,000 (20 more passes over 1,000 records) is
//! the cost of one record without the fixed setup.
//!
//! Modes:
//! - `validate`: every record checked without being built, as the broker checks each
//!   produced batch and the consumer each fetched one.
//! - `decode`: every record built (`decode_all`).
//! - `consumer`: what the consumer did for each fetched record before it kept their spans: a
//!   check (`check_ahead`) when fetched, then a full parse to build it when received.
//! - `spans`: what it does now: a check that notes where each record's fields lie
//!   (`check_spans`), then each record built from its span (`record_at`).

use rustmq_protocol::batch::{RecordBatch, RecordBatchBuilder};

fn main() {
    let mut args = std::env::args().skip(1);
    let passes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let mode = args.next().unwrap_or_else(|| "validate".into());
    // W1's records: 100 random alphanumeric bytes, here with a 10-byte key and no headers.
    let mut rng = fastrand::Rng::with_seed(1);
    let mut builder = RecordBatchBuilder::new();
    for i in 0..1_000 {
        let value: Vec<u8> = (0..100).map(|_| rng.alphanumeric() as u8).collect();
        let key = format!("key-{i:06}");
        builder.push(
            1_700_000_000_000 + i,
            Some(key.as_bytes()),
            Some(&value),
            [],
        );
    }
    let batch = RecordBatch::parse(builder.build().expect("batch")).expect("valid");
    for _ in 0..passes {
        if mode == "decode" {
            std::hint::black_box(batch.decode_all(1 << 20).expect("valid"));
        } else if mode == "consumer" {
            let iter = batch.records_with_limit(1 << 20).expect("valid");
            iter.check_ahead(u32::MAX).expect("valid");
            for record in iter {
                std::hint::black_box(record.expect("valid"));
            }
        } else if mode == "spans" {
            let mut iter = batch.records_with_limit(1 << 20).expect("valid");
            let mut spans = Vec::new();
            iter.check_spans(u32::MAX, &mut spans).expect("valid");
            for (i, span) in spans.iter().enumerate() {
                std::hint::black_box(iter.record_at(i as u32, span));
            }
        } else {
            batch.validate_records(1 << 20).expect("valid");
        }
    }
}
