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
//! - `decode`: every record built (`decode_all`), as the consumer does once per receive.

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
        } else {
            batch.validate_records(1 << 20).expect("valid");
        }
    }
}
