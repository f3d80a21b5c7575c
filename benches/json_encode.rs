//! The `Json` codec's encoding against serde_json's own (`serde_json::to_vec`), in the same run:
//! W7's event (a number and 80 random alphanumeric characters), an order with a few short
//! strings, a map and a list, and a string with a character to escape in every five (where
//! the codec's word-at-a-time scan gains nothing); each into a new `Vec` and into a buffer
//! reused, as the typed producer encodes.
//!
//! ```sh
//! cargo bench -p benches --bench json_encode -- --warm-up-time 1 --measurement-time 3
//! ```

use std::collections::BTreeMap;
use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_main, Criterion, Throughput};
use rustmq::codec::{Codec, Json};
use serde::Serialize;

#[derive(Serialize)]
struct Event {
    seq: u64,
    body: String,
}

#[derive(Serialize)]
struct Order {
    id: String,
    customer: String,
    cents: u64,
    currency: &'static str,
    tags: Vec<String>,
    attributes: BTreeMap<String, String>,
    note: Option<String>,
}

fn encode<T: Serialize>(c: &mut Criterion, name: &str, value: &T) {
    let mut group = c.benchmark_group(format!("json_encode/{name}"));
    let len = serde_json::to_vec(value).unwrap().len();
    assert_eq!(
        Json::encode(value).unwrap(),
        serde_json::to_vec(value).unwrap()
    );
    group.throughput(Throughput::Bytes(len as u64));
    group.bench_function("serde_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(value)).unwrap())
    });
    group.bench_function("rustmq", |b| {
        b.iter(|| Json::encode(black_box(value)).unwrap())
    });
    // As the typed producer encodes: into a buffer it reuses.
    let mut vec = Vec::with_capacity(4096);
    group.bench_function("serde_json_reused_buffer", |b| {
        b.iter(|| {
            vec.clear();
            serde_json::to_writer(&mut vec, black_box(value)).unwrap();
        })
    });
    let mut buf = BytesMut::with_capacity(4096);
    group.bench_function("rustmq_reused_buffer", |b| {
        b.iter(|| {
            buf.clear();
            Json::encode_into(black_box(value), &mut buf).unwrap();
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let event = Event {
        seq: 123_456,
        body: (0..80).map(|_| rng.alphanumeric()).collect(),
    };
    encode(c, "event", &event);
    let order = Order {
        id: "ord-2026-11-29-000042".into(),
        customer: "customer-8812".into(),
        cents: 129_900,
        currency: "EUR",
        tags: vec!["priority".into(), "gift".into(), "eu-west".into()],
        attributes: BTreeMap::from([
            ("channel".into(), "web".into()),
            ("campaign".into(), "black-friday".into()),
        ]),
        note: Some("Leave at the door, ring twice.".into()),
    };
    encode(c, "order", &order);
    let escaped = "line\tone \"quoted\"\n\\path\\".repeat(4);
    encode(c, "escaped", &escaped);
}

// criterion's macro defines an undocumented `pub fn json`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(json, super::benches);
}
criterion_main!(group::json);
