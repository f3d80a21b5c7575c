//! `BatchIter` over concatenated batches (a fetch answer or a log segment), decoding the records
//! of every batch it accepts.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rustmq_protocol::BatchIter;

fuzz_target!(|data: &[u8]| {
    let mut iter = BatchIter::new(Bytes::copy_from_slice(data));
    let mut consumed = 0;
    while let Some(item) = iter.next() {
        match item {
            Ok(batch) => {
                consumed += batch.as_bytes().len();
                assert!(consumed <= data.len());
                if let Ok(records) = batch.records_with_limit(1 << 20) {
                    for record in records {
                        if record.is_err() {
                            break;
                        }
                    }
                }
            }
            Err(_) => {
                assert!(iter.next().is_none(), "iterator goes on after an error");
                break;
            }
        }
    }
});
