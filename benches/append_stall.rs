//! How long an append waits when it rolls the active segment, against an ordinary append.
//!
//! ```text
//! cargo build --release -p benches --example append_stall
//! target/release/examples/append_stall [MIB] [PRODUCERS] [SEGMENT_MIB]
//! ```
//!
//! Registers PRODUCERS (default 10,000) idempotent producers with one batch each, then appends
//! MIB MiB (default 768) of batches of 150 records of 100 random alphanumeric bytes (~16 KiB,
//! W1's batch) to one partition log with SEGMENT_MIB MiB segments (default 128, the broker's
//! default), timing every append. With `acks=leader` nothing syncs the data before the roll,
//! so the page cache holds up to a segment's worth of dirty data when a roll seals it.
//!
//! Prints one JSON line: the ordinary appends' p50/p99/max, and every rolling append's time
//! (what an append, and every producer request behind it on the partition, waits at a roll).

use std::time::Instant;

use rustmq_broker::storage::{LogConfig, PartitionLog};
use rustmq_protocol::RecordBatchBuilder;

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(768);
    let producers: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let segment_mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(128);
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = LogConfig {
        segment_bytes: segment_mib << 20,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path(), config).expect("open the log");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let mut rng = fastrand::Rng::with_seed(7);
    for id in 0..producers {
        let mut builder = RecordBatchBuilder::new().producer(id, 0, 0);
        builder.push(now, None, Some(b"x"), []);
        let batch = builder.build().expect("batch");
        log.append(&batch[..]).expect("append");
    }
    let mut ordinary = Vec::new();
    let mut rolls = Vec::new();
    let mut written = 0u64;
    while written < mib << 20 {
        let mut builder = RecordBatchBuilder::new();
        for _ in 0..150 {
            let value: Vec<u8> = (0..100).map(|_| rng.alphanumeric() as u8).collect();
            builder.push(now, None, Some(&value), []);
        }
        let batch = builder.build().expect("batch");
        let segments = log.segment_count();
        let start = Instant::now();
        log.append(&batch[..]).expect("append");
        let us = start.elapsed().as_secs_f64() * 1e6;
        if log.segment_count() > segments {
            rolls.push(us);
        } else {
            ordinary.push(us);
        }
        written += batch.len() as u64;
    }
    ordinary.sort_by(f64::total_cmp);
    let pct = |p: f64| ordinary[((ordinary.len() as f64 * p) as usize).min(ordinary.len() - 1)];
    let rolls_ms: Vec<String> = rolls.iter().map(|us| format!("{:.1}", us / 1e3)).collect();
    let mut sorted = rolls.clone();
    sorted.sort_by(f64::total_cmp);
    let median_roll = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    println!(
        "{{\"log_mib\":{mib},\"producers\":{producers},\"segment_mib\":{segment_mib},\"appends\":{},\"p50_us\":{:.1},\"p99_us\":{:.1},\"max_ordinary_us\":{:.1},\"rolls_ms\":[{}],\"median_roll_over_p50\":{:.0}}}",
        ordinary.len(),
        pct(0.5),
        pct(0.99),
        ordinary.last().copied().unwrap_or(0.0),
        rolls_ms.join(","),
        median_roll / pct(0.5),
    );
    log.close().expect("close");
}
