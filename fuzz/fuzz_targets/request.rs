//! `Request::from_frame` for any kind, version and body. What decodes must encode back to a
//! frame that decodes to the same request.
//!
//! Input: `[kind_hi, kind_lo, version_hi, version_lo, body...]`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rustmq_protocol::{Frame, FrameDecoder, FrameHeader, Request};

fuzz_target!(|data: &[u8]| {
    let [k0, k1, v0, v1, body @ ..] = data else {
        return;
    };
    let frame = Frame {
        header: FrameHeader {
            body_len: body.len() as u32,
            kind: u16::from_be_bytes([*k0, *k1]),
            version: u16::from_be_bytes([*v0, *v1]),
            request_id: 1,
        },
        body: Bytes::copy_from_slice(body),
    };
    if let Ok(request) = Request::from_frame(&frame) {
        let mut decoder = FrameDecoder::new(u32::MAX);
        decoder.extend(&request.to_frame(1));
        let again = decoder.next_frame().unwrap().unwrap();
        assert_eq!(again.header.kind, frame.header.kind);
        assert_eq!(Request::from_frame(&again).unwrap(), request);
    }
});
