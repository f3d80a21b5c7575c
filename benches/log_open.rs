//! How long opening a partition log takes, and how much of it is read, as the log grows.
//!
//! ```text
//! cargo build --release -p benches --example log_open
//! target/release/examples/log_open [MIB] [RECORDS_PER_BATCH] [TS_STEP_MS]
//! ```
//!
//! Fills one partition log (default segment size, 128 MiB) in a temporary directory with MIB
//! MiB (default 1,024) of idempotent batches of RECORDS_PER_BATCH records (default 10) of
//! 100 random alphanumeric bytes, from 100 producers in turn, and closes it. Every batch is
//! stamped TS_STEP_MS (default 0) after the one before, the first four hours before the start
//! per ms of step (timestamps may not be ahead of the broker's clock): with rising
//! timestamps every offset index entry has its time index entry, as in a log that took
//! messages over time; with the default the time indexes hold one entry each. Then opens it
//! three times each way, in turn:
//!
//! - `clean`: as a broker restarts after a clean shutdown: the close left a producer snapshot
//!   at the end of the log and a marker, so every segment, the active one too, is opened from
//!   its index files and nothing is replayed (the log is closed again after the measure);
//! - `crash`: as after a crash (the marker removed): the sealed segments below the last roll's
//!   producer snapshot are opened from their index files, and the active segment is verified
//!   whole and replayed;
//! - `walk`: with the snapshots moved aside as well, so that every batch header of every
//!   segment is read to rebuild the producer table (what every open did before the
//!   snapshots).
//!
//! Prints one JSON line per open: wall time, the bytes of index entries the opened log holds in
//! memory (`index_bytes`: the active segment's whole indexes and one entry in 64 of each sealed
//! segment's, whose files hold the rest), and the bytes the process read meanwhile
//! (`rchar` of `/proc/self/io`: every `read`/`pread`, whether the page cache served it or
//! not; the files were just written, so the cache holds them and the times are those of a
//! warm cache). Then a summary line with the medians and their ratios to `walk`, the index
//! memory after the fill, and what the whole indexes would take (`whole_index_bytes`, as every
//! segment held them before they were paged).

use std::path::{Path, PathBuf};
use std::time::Instant;

use rustmq_broker::storage::{LogConfig, PartitionLog};
use rustmq_protocol::RecordBatchBuilder;

const PRODUCERS: i64 = 100;

fn rchar() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list the log")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

/// Opens the log at `dir`, and closes it if `close`; (milliseconds, bytes read, high
/// watermark, bytes of index entries in memory).
fn open(dir: &Path, close: bool) -> (f64, u64, u64, usize) {
    let read_before = rchar();
    let start = Instant::now();
    let log = PartitionLog::open(dir, LogConfig::default()).expect("open the log");
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let read = rchar() - read_before;
    let end = log.high_watermark();
    let index_bytes = log.index_memory();
    if close {
        log.close().expect("close");
    }
    drop(log);
    (ms, read, end, index_bytes)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_024);
    let per_batch: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let ts_step: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let dir = tempfile::tempdir().expect("temporary directory");
    let aside = tempfile::tempdir().expect("temporary directory");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open the log");
    let mut rng = fastrand::Rng::with_seed(7);
    let mut sequences = vec![0i32; PRODUCERS as usize];
    let (mut written, mut batches) = (0u64, 0i64);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    while written < mib << 20 {
        let producer = batches % PRODUCERS;
        let seq = &mut sequences[producer as usize];
        let mut builder = RecordBatchBuilder::new().producer(producer, 0, *seq);
        for _ in 0..per_batch {
            let value: Vec<u8> = (0..100).map(|_| rng.alphanumeric() as u8).collect();
            // Rising from four hours back per ms of step: a million batches stay in the past.
            builder.push(
                now - 14_400_000 * ts_step + batches * ts_step,
                None,
                Some(&value),
                [],
            );
        }
        let batch = builder.build().expect("non-empty batch");
        written += batch.len() as u64;
        log.append(&batch[..]).expect("append");
        *seq += per_batch as i32;
        batches += 1;
    }
    log.close().expect("close");
    let index_bytes = log.index_memory();
    drop(log);
    let segments = files_with(dir.path(), "log").len();
    // What the whole indexes took in memory before they were paged: 8 bytes per offset index
    // entry as in the file, 16 per time index entry (12 in the file, padded in memory).
    let file_bytes = |ext: &str| -> u64 {
        files_with(dir.path(), ext)
            .iter()
            .map(|p| std::fs::metadata(p).expect("index file").len())
            .sum()
    };
    let whole_index_bytes = file_bytes("index") + file_bytes("timeindex") / 12 * 16;
    let modes = ["clean", "crash", "walk"];
    let mut ms = [vec![], vec![], vec![]];
    let mut read = [0u64; 3];
    for round in 0..3 {
        for (i, mode) in modes.iter().enumerate() {
            let moved = match *mode {
                "clean" => vec![],
                "crash" => {
                    std::fs::remove_file(dir.path().join("clean-shutdown")).expect("marker");
                    vec![]
                }
                _ => files_with(dir.path(), "snapshot"),
            };
            for file in &moved {
                std::fs::rename(file, aside.path().join(file.file_name().expect("name")))
                    .expect("move aside");
            }
            let (took, bytes, end, index_bytes) = open(dir.path(), *mode == "clean");
            println!("{{\"round\":{round},\"open\":\"{mode}\",\"ms\":{took:.1},\"read_bytes\":{bytes},\"high_watermark\":{end},\"index_bytes\":{index_bytes}}}");
            ms[i].push(took);
            read[i] = bytes;
            for file in &moved {
                std::fs::rename(aside.path().join(file.file_name().expect("name")), file)
                    .expect("move back");
            }
            if *mode == "walk" {
                // The next round's clean open needs a close's marker.
                open(dir.path(), true);
            }
        }
    }
    let [clean, crash, walk] = ms.map(median);
    println!(
        "{{\"log_bytes\":{written},\"batches\":{batches},\"segments\":{segments},\"index_bytes\":{index_bytes},\"whole_index_bytes\":{whole_index_bytes},\"clean_ms\":{clean:.1},\"crash_ms\":{crash:.1},\"walk_ms\":{walk:.1},\"clean_read_bytes\":{},\"crash_read_bytes\":{},\"walk_read_bytes\":{},\"clean_over_walk_time\":{:.4},\"crash_over_walk_time\":{:.4},\"clean_over_walk_read\":{:.5},\"crash_over_walk_read\":{:.5}}}",
        read[0],
        read[1],
        read[2],
        clean / walk,
        crash / walk,
        read[0] as f64 / read[2].max(1) as f64,
        read[1] as f64 / read[2].max(1) as f64,
    );
}
