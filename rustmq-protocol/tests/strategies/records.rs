//! Record inputs for the batch builder, codecs, and a builder wrapper.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use rustmq_protocol::batch::BATCH_HEADER_LEN;
use rustmq_protocol::*;

use super::messages::string;

/// One record as the builder takes it.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    pub(crate) timestamp: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

pub(crate) fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(any::<u8>(), 0..48),
        // Compressible, and long enough to cross varint length boundaries.
        1 => (any::<u8>(), 0usize..400).prop_map(|(b, n)| vec![b; n]),
    ]
}

pub(crate) fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        // Around now, so deltas from the first record are both signs.
        4 => (-5_000_000i64..5_000_000).prop_map(|d| 1_700_000_000_000 + d),
        // Anything, deltas wrap.
        1 => any::<i64>(),
        1 => select(vec![i64::MIN, i64::MAX, -1, 0]),
    ]
}

pub(crate) fn input() -> impl Strategy<Value = Input> {
    (
        timestamp(),
        option::of(payload()),
        option::of(payload()),
        vec((string(), vec(any::<u8>(), 0..16)), 0..4),
    )
        .prop_map(|(timestamp, key, value, headers)| Input {
            timestamp,
            key,
            value,
            headers,
        })
}

pub(crate) fn codec() -> impl Strategy<Value = Compression> {
    select(Compression::ALL.to_vec())
}

pub(crate) fn producer() -> impl Strategy<Value = Option<(i64, i16, i32)>> {
    option::of((any::<i64>(), any::<i16>(), any::<i32>()))
}

/// Builds a batch; returns its bytes and the size of its uncompressed records section.
pub(crate) fn build(
    inputs: &[Input],
    codec: Compression,
    level: i32,
    producer: Option<(i64, i16, i32)>,
) -> (Bytes, usize) {
    let mut builder = RecordBatchBuilder::new().compression(codec, level);
    if let Some((id, epoch, seq)) = producer {
        builder = builder.producer(id, epoch, seq);
    }
    for r in inputs {
        let headers: Vec<(&str, &[u8])> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let before = builder.size();
        builder.push(
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            headers.iter().copied(),
        );
        let bound =
            RecordBatchBuilder::record_size_bound(r.key.as_deref(), r.value.as_deref(), headers);
        assert!(
            builder.size() - before <= bound,
            "record_size_bound is not an upper bound"
        );
    }
    assert_eq!(builder.len() as usize, inputs.len());
    let section = builder.size() - BATCH_HEADER_LEN;
    (builder.build().expect("non-empty batch"), section)
}
