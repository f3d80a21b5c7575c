//! `RecordBatch::parse` (header, length, CRC) then every record, decompressing with a 1 MiB cap;
//! the broker's validation without decoding must accept exactly what decoding accepts.
//!
//! Input: `[flags, batch...]`. With bit 0 of `flags` set, the batch length and CRC are fixed up
//! first so that the fuzzer reaches the record and decompression decoders behind the CRC.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rustmq_protocol::batch::{seal, BATCH_HEADER_LEN, LOG_OVERHEAD};
use rustmq_protocol::RecordBatch;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let [flags, batch @ ..] = data else {
        return;
    };
    let mut batch = BytesMut::from(batch);
    if flags & 1 == 1 && batch.len() >= BATCH_HEADER_LEN {
        let length = (batch.len() - LOG_OVERHEAD) as u32;
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        seal(&mut batch);
    }
    let bytes: Bytes = batch.freeze();
    let Ok(parsed) = RecordBatch::parse(bytes.clone()) else {
        return;
    };
    let header = *parsed.header();
    assert_eq!(header.total_len(), bytes.len());
    let _ = (
        header.last_offset(),
        header.next_offset(),
        header.is_idempotent(),
    );
    let decoded = parsed.decode_all(LIMIT);
    assert_eq!(parsed.validate_records(LIMIT).is_ok(), decoded.is_ok());
    if let Ok(records) = decoded {
        assert_eq!(records.len(), header.record_count as usize);
        for (i, record) in records.iter().enumerate() {
            assert_eq!(record.offset, header.base_offset + i as u64);
        }
    }
});
