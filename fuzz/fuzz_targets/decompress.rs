//! `Compression::decompress` for every codec with a 1 MiB cap.
//!
//! Input: `[codec, section...]`; the low two bits of the first byte pick the codec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustmq_protocol::Compression;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let [codec, section @ ..] = data else {
        return;
    };
    let codec = Compression::ALL[usize::from(codec & 3)];
    if let Ok(out) = codec.decompress(section, LIMIT) {
        let announced = u32::from_be_bytes(section[..4].try_into().unwrap()) as usize;
        assert_eq!(out.len(), announced);
        assert!(out.len() <= LIMIT);
    }
});
