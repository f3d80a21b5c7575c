//! The broker's memory for idempotent producers that come and go: each producer id that writes
//! to a partition takes a place in that partition's producer table, and the retention pass
//! forgets it once it has been idle for `log.producer_id_expiration_ms`.
//!
//! ```text
//! cargo build --release -p benches --example producer_ids
//! target/release/examples/producer_ids [PRODUCERS]
//! target/release/examples/producer_ids fenced [PRODUCERS]
//! ```
//!
//! `fenced` instead fences PRODUCERS named producers' ids in the partition, as a named
//! producer's initialisation does in every partition of the broker, and prints the memory
//! that takes (named producers are never forgotten).
//!
//! Opens one partition log in a temporary directory and appends one single-record idempotent
//! batch from each of PRODUCERS distinct producer ids (default 1,000,000), as that many
//! short-lived producers would. Then runs the retention pass twice: first at a time when every
//! producer is still within its expiration (no producer can be due, so the pass does not walk
//! the table), then past it (the pass walks the table under the append lock and forgets them
//! all). Prints one JSON line: the process's
//! resident memory (`VmRSS`, KiB) before the appends, after them and after each pass, and how
//! long each pass held the log; and how long the log's close took and the size of the
//! producer snapshot it wrote (a segment roll writes the same, holding the append lock).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use benches::memory;
use rustmq_broker::storage::{LogConfig, PartitionLog};
use rustmq_protocol::RecordBatchBuilder;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let fenced = args.first().is_some_and(|a| a == "fenced");
    if fenced {
        args.remove(0);
    }
    let producers: i64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let expiration = Duration::from_secs(3_600);
    let config = LogConfig {
        producer_id_expiration_ms: expiration.as_millis() as u64,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path(), config).expect("open the log");
    let (before, _) = memory();
    if fenced {
        for id in 0..producers {
            log.fence_producer(id, 1);
        }
        let (after, _) = memory();
        println!(
            "{{\"fenced\":{producers},\"rss_kib_before\":{before},\"rss_kib_fenced\":{after},\"bytes_per_producer\":{:.0}}}",
            (after.saturating_sub(before) * 1024) as f64 / producers.max(1) as f64
        );
        return;
    }
    for id in 0..producers {
        let mut builder = RecordBatchBuilder::new().producer(id, 0, 0);
        builder.push(0, None, Some(b"x"), []);
        log.append(builder.build().expect("one record"))
            .expect("append");
    }
    let (appended, _) = memory();
    // A clean close writes the producer snapshot of the whole table (a roll writes the same,
    // under the append lock).
    let started = Instant::now();
    log.close().expect("close");
    let close = started.elapsed();
    let snapshot_bytes: u64 = std::fs::read_dir(dir.path())
        .expect("list the log")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "snapshot"))
        .map(|p| std::fs::metadata(p).expect("snapshot").len())
        .sum();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    let pass = |at: i64| {
        let started = Instant::now();
        log.apply_retention(at).expect("retention pass");
        (started.elapsed(), memory().0)
    };
    let (walk, walked) = pass(now);
    let (forget, forgotten) = pass(now + 2 * expiration.as_millis() as i64);
    println!(
        "{{\"producers\":{producers},\"rss_kib_before\":{before},\"rss_kib_appended\":{appended},\"bytes_per_producer\":{:.0},\"pass_within_expiration_ms\":{:.2},\"rss_kib_after_that_pass\":{walked},\"pass_past_expiration_ms\":{:.2},\"rss_kib_after_expiry\":{forgotten},\"close_ms\":{:.1},\"snapshot_bytes\":{snapshot_bytes}}}",
        (appended.saturating_sub(before) * 1024) as f64 / producers.max(1) as f64,
        walk.as_secs_f64() * 1e3,
        forget.as_secs_f64() * 1e3,
        close.as_secs_f64() * 1e3,
    );
}
