//! `FrameDecoder` on an arbitrary byte stream, fed in chunks; every frame is then decoded as a
//! request and as a response.
//!
//! Input: `[max_body_hi, max_body_lo, chunk, stream...]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustmq_protocol::{FrameDecoder, ProtocolError, Request, Response, FRAME_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let [hi, lo, chunk, stream @ ..] = data else {
        return;
    };
    let max_body = u32::from(u16::from_be_bytes([*hi, *lo]));
    let chunk = usize::from(*chunk).max(1);
    let mut decoder = FrameDecoder::new(max_body);
    let mut consumed = 0;
    for piece in stream.chunks(chunk) {
        decoder.extend(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert_eq!(frame.body.len(), frame.header.body_len as usize);
                    assert!(frame.header.body_len <= max_body);
                    consumed += FRAME_HEADER_LEN + frame.body.len();
                    let _ = Request::from_frame(&frame);
                    let _ = Response::from_frame(&frame);
                }
                Ok(None) => break,
                Err(ProtocolError::FrameTooLarge { size, max }) => {
                    assert!(size > max);
                    return;
                }
                Err(e) => panic!("unexpected frame error {e:?}"),
            }
        }
    }
    assert_eq!(consumed + decoder.buffered(), stream.len());
});
