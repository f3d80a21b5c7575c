//! Helpers shared by the storage tests.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use rustmq_protocol::{BatchIter, Compression, Record, RecordBatchBuilder};

use super::{AppendInfo, LogConfig, PartitionLog};

/// A batch of `count` records with timestamps `ts, ts + 1, ...` and values `"{tag}-{i}"`.
pub(crate) fn batch(tag: &str, count: u32, ts: i64) -> BytesMut {
    batch_with(tag, count, ts, Compression::None, None)
}

/// Like [`batch`], with a codec and an optional `(producer id, epoch, base sequence)`.
pub(crate) fn batch_with(
    tag: &str,
    count: u32,
    ts: i64,
    codec: Compression,
    producer: Option<(i64, i16, i32)>,
) -> BytesMut {
    let mut builder = RecordBatchBuilder::new().compression(codec, 1);
    if let Some((id, epoch, seq)) = producer {
        builder = builder.producer(id, epoch, seq);
    }
    for i in 0..count {
        let value = format!("{tag}-{i}");
        builder.push(
            ts + i64::from(i),
            Some(tag.as_bytes()),
            Some(value.as_bytes()),
            [],
        );
    }
    BytesMut::from(&builder.build().expect("non-empty batch")[..])
}

/// A config with small segments and dense indexes so that tests cross every boundary.
pub(crate) fn small_config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

/// Every record from `from` to the high watermark, read with `max_bytes` per call.
pub(crate) fn read_all(log: &PartitionLog, from: u64, max_bytes: u32) -> Vec<Record> {
    let mut records = Vec::new();
    let mut next = from;
    while next < log.high_watermark() {
        let bytes = log.read(next, max_bytes).expect("read");
        assert!(!bytes.is_empty(), "read at {next} returned nothing");
        for batch in BatchIter::new(bytes) {
            for record in batch.expect("valid batch").records().expect("records") {
                let record = record.expect("record");
                if record.offset >= next {
                    next = record.offset + 1;
                    records.push(record);
                }
            }
        }
    }
    records
}

/// The concatenated contents of every `.log` file in `dir`, oldest first.
pub(crate) fn raw_log(dir: &Path) -> Bytes {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    names.sort();
    let mut out = BytesMut::new();
    for name in names {
        out.extend_from_slice(&std::fs::read(name).unwrap());
    }
    out.freeze()
}

/// `(offset, value as text)` of each record.
pub(crate) fn values(records: &[rustmq_protocol::Record]) -> Vec<(u64, String)> {
    records
        .iter()
        .map(|r| {
            let value = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
            (r.offset, value)
        })
        .collect()
}

/// Appends `n` batches of 1 to 4 records; returns (info, stored length) per batch.
pub(crate) fn fill(log: &PartitionLog, n: u32) -> Vec<(AppendInfo, usize)> {
    (0..n)
        .map(|i| {
            let b = batch(&format!("b{i}"), i % 4 + 1, 1_000 + i64::from(i) * 10);
            let len = b.len();
            (log.append(b).unwrap(), len)
        })
        .collect()
}

/// What [`fill`]`(log, n)` stored, as [`values`] reports it.
pub(crate) fn expected_values(n: u32) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for i in 0..n {
        for r in 0..(i % 4 + 1) {
            out.push((offset, format!("b{i}-{r}")));
            offset += 1;
        }
    }
    out
}

/// A one-record-per-value idempotent batch from `(producer id, epoch, base sequence)`.
pub(crate) fn idem(tag: &str, count: u32, producer: (i64, i16, i32)) -> BytesMut {
    batch_with(tag, count, 0, Compression::None, Some(producer))
}
