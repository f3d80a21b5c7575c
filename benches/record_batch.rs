//! Record-batch benchmarks: encode and decode per codec, LZ4's levels, CRC-32C, and
//! `RecordBatch::parse`.
//!
//! A batch is 1,000 records with 100-byte random alphanumeric values, with or without a
//! 10-byte key. Byte throughput counts the application bytes (keys + values), the same for every
//! codec, so figures compare across codecs; element throughput counts records.
//!
//! ```sh
//! cargo bench -p benches -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use rustmq_protocol::batch::BATCH_HEADER_LEN;
use rustmq_protocol::{Compression, RecordBatch, RecordBatchBuilder};

const RECORDS: usize = 1_000;
const VALUE_LEN: usize = 100;
const LEVEL: i32 = 3;

/// Records as a producer hands them over.
struct Workload {
    name: &'static str,
    records: Vec<(Option<Vec<u8>>, Vec<u8>)>,
}

impl Workload {
    fn new(name: &'static str, with_keys: bool) -> Self {
        // Seeded: the same inputs on every run.
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let records = (0..RECORDS)
            .map(|i| {
                let key = with_keys.then(|| format!("key-{i:06}").into_bytes());
                let value = (0..VALUE_LEN).map(|_| rng.alphanumeric() as u8).collect();
                (key, value)
            })
            .collect();
        Self { name, records }
    }

    fn payload_bytes(&self) -> u64 {
        self.records
            .iter()
            .map(|(k, v)| (k.as_ref().map_or(0, Vec::len) + v.len()) as u64)
            .sum()
    }

    fn encode(&self, codec: Compression) -> Bytes {
        let mut builder =
            RecordBatchBuilder::with_capacity(RECORDS * (VALUE_LEN + 24)).compression(codec, LEVEL);
        for (i, (key, value)) in self.records.iter().enumerate() {
            builder.push(
                1_700_000_000_000 + i as i64,
                key.as_deref(),
                Some(value),
                [],
            );
        }
        builder.build().expect("non-empty batch")
    }
}

fn workloads() -> [Workload; 2] {
    [Workload::new("keys", true), Workload::new("no_keys", false)]
}

/// What each codec does to the workloads; LZ4 finds nothing to match in random alphanumerics and
/// the builder then stores the batch uncompressed.
fn report_sizes(workloads: &[Workload]) {
    for w in workloads {
        for codec in Compression::ALL {
            let batch = w.encode(codec);
            let used = RecordBatch::parse(batch.clone())
                .expect("valid")
                .header()
                .compression();
            println!(
                "{}/{codec}: {} payload bytes -> {} byte batch ({} records section), stored as {used}",
                w.name,
                w.payload_bytes(),
                batch.len(),
                batch.len() - BATCH_HEADER_LEN,
            );
        }
    }
}

fn encode_decode(c: &mut Criterion) {
    let workloads = workloads();
    report_sizes(&workloads);
    for (unit, throughput) in [
        (
            "bytes",
            (|w: &Workload| Throughput::Bytes(w.payload_bytes())) as fn(&Workload) -> Throughput,
        ),
        ("records", |_: &Workload| {
            Throughput::Elements(RECORDS as u64)
        }),
    ] {
        let mut group = c.benchmark_group(format!("encode_{unit}"));
        for w in &workloads {
            group.throughput(throughput(w));
            for codec in Compression::ALL {
                group.bench_with_input(BenchmarkId::new(codec.name(), w.name), w, |b, w| {
                    b.iter(|| black_box(w.encode(codec)));
                });
            }
        }
        group.finish();

        let mut group = c.benchmark_group(format!("decode_{unit}"));
        for w in &workloads {
            group.throughput(throughput(w));
            for codec in Compression::ALL {
                let batch = w.encode(codec);
                group.bench_with_input(
                    BenchmarkId::new(codec.name(), w.name),
                    &batch,
                    |b, batch| {
                        b.iter(|| {
                            let parsed = RecordBatch::parse(batch.clone()).expect("valid");
                            black_box(parsed.decode_all(1 << 20).expect("valid"))
                        });
                    },
                );
            }
        }
        group.finish();
    }
}

/// `RecordBatch::parse` alone: header checks and the CRC over the stored bytes.
fn parse(c: &mut Criterion) {
    let [keys, _] = workloads();
    let mut group = c.benchmark_group("parse");
    for codec in Compression::ALL {
        let batch = keys.encode(codec);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_with_input(
            BenchmarkId::new(codec.name(), keys.name),
            &batch,
            |b, batch| {
                b.iter(|| black_box(RecordBatch::parse(batch.clone()).expect("valid")));
            },
        );
    }
    group.finish();
}

/// Checking every record without building any: the broker's check of each produced batch,
/// and the consumer's check of each fetched one (records are decoded later, one per receive).
fn validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_records");
    for w in workloads() {
        let batch = RecordBatch::parse(w.encode(Compression::None)).expect("valid");
        group.throughput(Throughput::Elements(RECORDS as u64));
        group.bench_with_input(BenchmarkId::new("none", w.name), &batch, |b, batch| {
            b.iter(|| black_box(batch).validate_records(1 << 20).expect("valid"));
        });
    }
    group.finish();
}

fn crc(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(7);
    let data: Vec<u8> = (0..1 << 20).map(|_| rng.u8(..)).collect();
    let mut group = c.benchmark_group("crc32c");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("1MiB", |b| b.iter(|| crc32c::crc32c(black_box(&data))));
    group.finish();
}

/// LZ4's levels on records that repeat themselves as JSON events do (random alphanumerics give
/// LZ4 nothing to find): 0-3 its fast mode, 4-12 LZ4 HC. Prints each level's batch size.
fn lz4_levels(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let records: Vec<Vec<u8>> = (0..RECORDS)
        .map(|i| {
            format!(
                r#"{{"order_id":"o-{i:06}","customer":"c-{}","cents":{},"currency":"EUR","status":"paid"}}"#,
                rng.u32(0..500),
                rng.u32(100..100_000)
            )
            .into_bytes()
        })
        .collect();
    let bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
    let encode = |level| {
        let mut builder = RecordBatchBuilder::with_capacity(bytes as usize + RECORDS * 24)
            .compression(Compression::Lz4, level);
        for (i, value) in records.iter().enumerate() {
            builder.push(1_700_000_000_000 + i as i64, None, Some(value), []);
        }
        builder.build().expect("non-empty batch")
    };
    let mut group = c.benchmark_group("lz4_levels");
    group.throughput(Throughput::Bytes(bytes));
    for level in [3, 4, 9, 12] {
        println!(
            "lz4 level {level}: {bytes} payload bytes -> {} byte batch",
            encode(level).len()
        );
        group.bench_with_input(BenchmarkId::new("encode", level), &level, |b, &level| {
            b.iter(|| black_box(encode(level)));
        });
        let batch = RecordBatch::parse(encode(level)).expect("valid");
        group.bench_with_input(BenchmarkId::new("decode", level), &batch, |b, batch| {
            b.iter(|| black_box(batch.decode_all(1 << 20).expect("valid")));
        });
    }
    group.finish();
}

// The macro generates an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(
        benches,
        super::encode_decode,
        super::lz4_levels,
        super::parse,
        super::validate,
        super::crc
    );
}
criterion_main!(group::benches);
