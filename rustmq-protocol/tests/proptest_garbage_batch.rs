//! Property tests: the record-batch decoders answer `Ok` or `Err` on any input and never panic.
//!
//! Batches are built for real, then damaged; most get their length and CRC fixed up afterwards
//! so that the record and decompression decoders behind the CRC check see the damage too.
//! `BatchHeader::parse` is compared with its rules; `Compression::decompress` gets garbage,
//! damaged streams and lying size prefixes.

mod strategies;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use rustmq_protocol::batch::{BATCH_HEADER_LEN, LOG_OVERHEAD};
use rustmq_protocol::*;
use strategies::*;

// ---- record batches --------------------------------------------------------------------------

/// Parses and fully decodes a batch; checks what an accepted batch promises.
fn parse_and_decode(bytes: Bytes, limit: usize) -> Result<(), TestCaseError> {
    let Ok(batch) = RecordBatch::parse(bytes.clone()) else {
        return Ok(());
    };
    let h = *batch.header();
    prop_assert_eq!(h.total_len(), bytes.len());
    prop_assert!(h.record_count as usize <= bytes.len() - BATCH_HEADER_LEN);
    let _ = (
        h.last_offset(),
        h.next_offset(),
        h.compression(),
        h.is_idempotent(),
    );
    let decoded = batch.decode_all(limit);
    // Validation without decoding (the broker's path) accepts exactly what decoding accepts.
    prop_assert_eq!(batch.validate_records(limit).is_ok(), decoded.is_ok());
    if let Ok(records) = decoded {
        prop_assert_eq!(records.len(), h.record_count as usize);
        for (i, r) in records.iter().enumerate() {
            prop_assert_eq!(r.offset, h.base_offset + i as u64);
        }
    }
    // The iterator yields at most `record_count` items and nothing after an error.
    if let Ok(mut iter) = batch.records_with_limit(limit) {
        let mut n = 0u64;
        for item in iter.by_ref() {
            n += 1;
            prop_assert!(n <= u64::from(h.record_count));
            if item.is_err() {
                prop_assert!(iter.next().is_none());
                break;
            }
        }
    }
    Ok(())
}

/// Where the records section of a damaged batch comes from.
#[derive(Debug, Clone)]
enum Section {
    /// Arbitrary bytes.
    Garbage(Vec<u8>),
    /// A real (possibly compressed) section, damaged.
    Damaged(Vec<Input>, Compression, Vec<Mutation>),
    /// A real uncompressed section, damaged, then compressed with a valid stream so that the
    /// record decoder behind the decompressor sees the damage.
    Recompressed(Vec<Input>, Compression, Vec<Mutation>),
}

fn section() -> impl Strategy<Value = Section> {
    prop_oneof![
        garbage(200).prop_map(Section::Garbage),
        (vec(input(), 1..6), codec(), vec(mutation(), 1..4))
            .prop_map(|(i, c, m)| Section::Damaged(i, c, m)),
        (vec(input(), 1..6), codec(), vec(mutation(), 1..4))
            .prop_map(|(i, c, m)| Section::Recompressed(i, c, m)),
    ]
}

/// The section bytes, the codec they are in and the record count of the original.
fn materialize(section: &Section) -> (Vec<u8>, Compression, u32) {
    match section {
        Section::Garbage(bytes) => (bytes.clone(), Compression::None, 1),
        Section::Damaged(inputs, codec, mutations) => {
            let (batch, _) = build(inputs, *codec, 1, None);
            let parsed = BatchHeader::parse(&batch).expect("built batch");
            let mut raw = batch[BATCH_HEADER_LEN..].to_vec();
            mutate(&mut raw, mutations);
            (raw, parsed.compression(), inputs.len() as u32)
        }
        Section::Recompressed(inputs, codec, mutations) => {
            let (batch, _) = build(inputs, Compression::None, 0, None);
            let mut raw = batch[BATCH_HEADER_LEN..].to_vec();
            mutate(&mut raw, mutations);
            if *codec == Compression::None {
                return (raw, Compression::None, inputs.len() as u32);
            }
            let mut out = Vec::new();
            codec.compress(&raw, 1, &mut out).expect("compress");
            (out, *codec, inputs.len() as u32)
        }
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn batch_header_parse_follows_its_rules(header in raw_header(), tail in garbage(16)) {
        let mut buf = BytesMut::new();
        header.write(&mut buf);
        buf.extend_from_slice(&tail);
        let parsed = BatchHeader::parse(&buf);
        prop_assert_eq!(parsed.is_ok(), header.valid(), "{:?} for {:?}", parsed, header);
        if let Ok(h) = parsed {
            prop_assert_eq!(h.base_offset, header.base_offset);
            prop_assert_eq!(h.crc, header.crc);
            prop_assert_eq!(h.producer_id, header.producer_id);
            prop_assert_eq!(h.next_offset() - h.base_offset, u64::from(h.record_count));
            prop_assert_eq!(h.compression().id(), header.attributes & 0x07);
        }
        // Anything shorter than a header is refused.
        let cut = buf.len().min(BATCH_HEADER_LEN - 1);
        let truncated = matches!(BatchHeader::parse(&buf[..cut]), Err(ProtocolError::Truncated { .. }));
        prop_assert!(truncated);
    }

    #[test]
    fn batch_header_parse_on_garbage(data in garbage(80)) {
        let _ = BatchHeader::parse(&data).map(|h| (h.total_len(), h.next_offset(), h.compression()));
    }

    /// Any header fields, any section, valid length and CRC: parse and decode never panic.
    #[test]
    fn sealed_batches_with_damaged_records(
        header in raw_header(),
        section in section(),
        use_own_count in any::<bool>(),
        limit in prop_oneof![0usize..64, 64usize..4096, Just(1 << 20)],
    ) {
        let (raw, codec, count) = materialize(&section);
        let mut header = header;
        header.attributes = (header.attributes & !0x07) | codec.id();
        if use_own_count {
            header.record_count = count;
            header.last_offset_delta = count - 1;
        }
        parse_and_decode(seal(header, &raw), limit)?;
    }

    /// A damaged batch whose CRC was not fixed up is always refused.
    #[test]
    fn damaged_batches_without_crc_fixup(
        inputs in vec(input(), 1..6),
        codec in codec(),
        at in any::<Index>(),
        mask in 1u8..=255,
    ) {
        let (batch, section) = build(&inputs, codec, 1, None);
        let mut raw = batch.to_vec();
        let at = 8 + at.index(raw.len() - 8);
        raw[at] ^= mask;
        prop_assert!(RecordBatch::parse(Bytes::from(raw.clone())).is_err());
        parse_and_decode(Bytes::from(raw), section)?;
    }

    #[test]
    fn record_batch_parse_on_garbage(data in garbage(200)) {
        parse_and_decode(Bytes::from(data), 1024)?;
    }

    #[test]
    fn batch_iter_on_damaged_concatenations(
        batches in vec((vec(input(), 1..4), codec()), 0..4),
        mutations in vec(mutation(), 0..4),
        prefix in garbage(24),
    ) {
        let mut wire = prefix;
        for (inputs, codec) in &batches {
            wire.extend_from_slice(&build(inputs, *codec, 1, None).0);
        }
        mutate(&mut wire, &mutations);
        let total = wire.len();
        let mut iter = BatchIter::new(Bytes::from(wire));
        let mut consumed = 0;
        for n in 0.. {
            // Each good batch consumes at least a header's worth of bytes.
            prop_assert!(n <= total / BATCH_HEADER_LEN + 1, "iterator does not end");
            match iter.next() {
                None => break,
                Some(Ok(batch)) => {
                    consumed += batch.as_bytes().len();
                    prop_assert!(consumed <= total);
                    parse_and_decode(batch.as_bytes().clone(), 4096)?;
                }
                Some(Err(_)) => {
                    prop_assert!(iter.next().is_none(), "iterator goes on after an error");
                    break;
                }
            }
        }
    }

    #[test]
    fn batch_iter_on_garbage(data in garbage(300)) {
        let total = data.len();
        let n = BatchIter::new(Bytes::from(data)).take(total + 2).count();
        prop_assert!(n <= total / LOG_OVERHEAD + 1);
    }
}

// ---- decompression ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn decompress_garbage(codec in codec(), data in garbage(200), limit in prop_oneof![0usize..512, Just(1 << 20)]) {
        check_decompress(codec, &data, limit)?;
    }

    /// Valid streams with damage, including a lying size prefix.
    #[test]
    fn decompress_damaged(
        codec in codec(),
        plain in payload(),
        mutations in vec(mutation(), 1..4),
        prefix in prop_oneof![Just(None), any::<u32>().prop_map(Some), (0u32..600).prop_map(Some)],
        limit in prop_oneof![0usize..1024, Just(1 << 20)],
    ) {
        let mut data = Vec::new();
        codec.compress(&plain, 1, &mut data)?;
        mutate(&mut data, &mutations);
        if let (Some(p), true) = (prefix, data.len() >= 4) {
            data[..4].copy_from_slice(&p.to_be_bytes());
        }
        check_decompress(codec, &data, limit)?;
    }
}

fn check_decompress(codec: Compression, data: &[u8], limit: usize) -> Result<(), TestCaseError> {
    if let Ok(out) = codec.decompress(data, limit) {
        let announced = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
        prop_assert_eq!(out.len(), announced);
        prop_assert!(out.len() <= limit);
    }
    Ok(())
}
