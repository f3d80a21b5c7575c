//! Property tests: the frame and message decoders and the reader primitives answer `Ok` or
//! `Err` on any input and never panic.
//!
//! Inputs are arbitrary bytes and valid encodings that were then damaged (bytes flipped, cut,
//! extended, inserted, removed). Where the outcome is fully specified (frame splitting, cut or
//! extended bodies, fixed-size reads) the tests compare with the specification instead of only
//! checking for a panic. Record batches and decompression are in `proptest_garbage_batch.rs`,
//! 1 MiB adversarial inputs in `adversarial_inputs.rs`.

mod strategies;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use rustmq_protocol::codec::{Decode, Reader};
use rustmq_protocol::frame::RESPONSE_BIT;
use rustmq_protocol::*;
use strategies::*;

// ---- frames and messages ---------------------------------------------------------------------

/// Decodes `body` as every kind, both ways. Whatever decodes must be what the sender meant:
/// encoding it again and decoding that gives the same value.
fn decode_as_every_kind(version: u16, body: &Bytes) -> Result<(), TestCaseError> {
    for kind in all_kinds() {
        let f = frame(kind, version, body.clone());
        match Request::from_frame(&f) {
            Ok(req) => {
                prop_assert_eq!(version, 1);
                prop_assert_eq!(req.kind().code(), kind);
                let again = reparse(&req.to_frame(1));
                prop_assert_eq!(Request::from_frame(&again)?, req);
            }
            Err(ProtocolError::UnknownKind(k)) => {
                prop_assert_eq!(k, kind);
                prop_assert!(ApiKind::from_code(kind).is_none());
            }
            Err(_) => {}
        }
        match Response::from_frame(&f) {
            Ok(resp) => {
                prop_assert_eq!(version, 1);
                prop_assert!(kind & RESPONSE_BIT != 0);
                let again = reparse(&resp.to_frame(1));
                prop_assert_eq!(again.header.kind, kind);
                prop_assert_eq!(Response::from_frame(&again)?, resp);
            }
            Err(ProtocolError::UnsupportedVersion { .. }) => prop_assert_ne!(version, 1),
            Err(_) => {}
        }
    }
    Ok(())
}

fn reparse(wire: &Bytes) -> Frame {
    let mut d = FrameDecoder::new(u32::MAX);
    d.extend(wire);
    d.next_frame()
        .expect("valid header")
        .expect("complete frame")
}

/// What [`FrameDecoder`] must return for `wire`: the frames, then whether it stops on an
/// oversized header.
fn expected_frames(wire: &[u8], max_body: u32) -> (Vec<(FrameHeader, &[u8])>, bool) {
    let mut out = Vec::new();
    let mut rest = wire;
    while rest.len() >= FRAME_HEADER_LEN {
        let header = FrameHeader::parse(rest[..FRAME_HEADER_LEN].try_into().unwrap());
        if header.body_len > max_body {
            return (out, true);
        }
        let end = FRAME_HEADER_LEN + header.body_len as usize;
        if rest.len() < end {
            break;
        }
        out.push((header, &rest[FRAME_HEADER_LEN..end]));
        rest = &rest[end..];
    }
    (out, false)
}

fn check_frame_decoder(wire: &[u8], chunks: &[usize], max_body: u32) -> Result<(), TestCaseError> {
    let (expected, too_large) = expected_frames(wire, max_body);
    let mut decoder = FrameDecoder::new(max_body);
    let mut got = Vec::new();
    let mut failed = None;
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    'feed: while fed < wire.len() {
        let n = (*sizes.next().unwrap()).min(wire.len() - fed);
        decoder.extend(&wire[fed..fed + n]);
        fed += n;
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => got.push(f),
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break 'feed;
                }
            }
        }
    }
    prop_assert_eq!(got.len(), expected.len());
    for (f, (header, body)) in got.iter().zip(&expected) {
        prop_assert_eq!(&f.header, header);
        prop_assert_eq!(&f.body[..], *body);
    }
    match failed {
        None => prop_assert!(!too_large, "oversized frame header was accepted"),
        Some(ProtocolError::FrameTooLarge { size, max }) => {
            prop_assert!(too_large);
            prop_assert!(size > max && max == max_body as usize);
        }
        Some(other) => prop_assert!(false, "unexpected error {:?}", other),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn frame_decoder_on_garbage(
        wire in garbage(300),
        max_body in prop_oneof![0u32..64, any::<u32>()],
        chunks in vec(1usize..64, 1..6),
    ) {
        check_frame_decoder(&wire, &chunks, max_body)?;
    }

    /// Real frame streams with damage anywhere, header fields included.
    #[test]
    fn frame_decoder_on_damaged_streams(
        reqs in vec(request(), 1..4),
        resps in vec(response(), 0..3),
        mutations in vec(mutation(), 1..4),
        chunks in vec(1usize..64, 1..6),
    ) {
        let mut wire = Vec::new();
        for r in &reqs {
            wire.extend_from_slice(&r.to_frame(1));
        }
        for r in &resps {
            wire.extend_from_slice(&r.to_frame(2));
        }
        mutate(&mut wire, &mutations);
        check_frame_decoder(&wire, &chunks, 4096)?;
        let mut decoder = FrameDecoder::new(4096);
        decoder.extend(&wire);
        while let Ok(Some(f)) = decoder.next_frame() {
            let _ = Request::from_frame(&f);
            let _ = Response::from_frame(&f);
        }
    }

    #[test]
    fn messages_from_garbage_bodies(
        body in garbage(200),
        version in prop_oneof![4 => Just(1u16), 1 => any::<u16>()],
    ) {
        decode_as_every_kind(version, &Bytes::from(body))?;
    }

    #[test]
    fn damaged_request_bodies(req in request(), mutations in vec(mutation(), 1..4)) {
        let wire = req.to_frame(1);
        let mut body = wire[FRAME_HEADER_LEN..].to_vec();
        mutate(&mut body, &mutations);
        decode_as_every_kind(1, &Bytes::from(body))?;
    }

    #[test]
    fn damaged_response_bodies(resp in response(), mutations in vec(mutation(), 1..4)) {
        let wire = resp.to_frame(1);
        let mut body = wire[FRAME_HEADER_LEN..].to_vec();
        mutate(&mut body, &mutations);
        decode_as_every_kind(1, &Bytes::from(body))?;
    }

    /// Every field is self-delimiting, so a cut body never decodes and an extended body fails
    /// on exactly the bytes that were added.
    #[test]
    fn cut_or_extended_bodies_are_rejected(
        req in request(),
        resp in response(),
        cut in any::<Index>(),
        tail in vec(any::<u8>(), 1..20),
    ) {
        let req_wire = req.to_frame(1);
        let resp_wire = resp.to_frame(1);
        for (wire, is_request) in [(&req_wire, true), (&resp_wire, false)] {
            let kind = u16::from_be_bytes([wire[4], wire[5]]);
            let body = &wire[FRAME_HEADER_LEN..];
            let decode = |b: Vec<u8>| {
                let f = frame(kind, 1, b);
                if is_request { Request::from_frame(&f).map(drop) } else { Response::from_frame(&f).map(drop) }
            };
            if !body.is_empty() {
                let at = cut.index(body.len());
                let cut_result = decode(body[..at].to_vec());
                prop_assert!(
                    matches!(cut_result, Err(ProtocolError::Truncated { .. })),
                    "body cut at {}/{} gave {:?}", at, body.len(), cut_result
                );
            }
            let mut longer = body.to_vec();
            longer.extend_from_slice(&tail);
            prop_assert_eq!(decode(longer), Err(ProtocolError::TrailingBytes(tail.len())));
        }
    }
}

// ---- reader primitives -----------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    U8,
    U16,
    U32,
    U64,
    I16,
    I32,
    I64,
    Uvarint,
    Varint,
    Length,
    Bytes(usize),
    Slice(usize),
    Finish,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::U8),
        Just(Op::U16),
        Just(Op::U32),
        Just(Op::U64),
        Just(Op::I16),
        Just(Op::I32),
        Just(Op::I64),
        Just(Op::Uvarint),
        Just(Op::Varint),
        Just(Op::Length),
        prop_oneof![0usize..16, Just(usize::MAX)].prop_map(Op::Bytes),
        prop_oneof![0usize..16, Just(usize::MAX)].prop_map(Op::Slice),
        Just(Op::Finish),
    ]
}

/// Decodes `T` from `data`; on success the reader has not gone past the input.
fn decode_type<T: Decode>(data: &Bytes) {
    let mut r = Reader::new(data.clone());
    let _ = T::decode(&mut r);
    assert_eq!(r.position() + r.remaining(), data.len());
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn reader_primitives(data in garbage(64), ops in vec(op(), 1..24)) {
        let data = Bytes::from(data);
        let mut r = Reader::new(data.clone());
        for op in ops {
            let before = r.position();
            let fixed = |n: usize, ok: bool| -> Result<(), TestCaseError> {
                // Fixed-size reads succeed exactly when enough bytes remain.
                prop_assert_eq!(ok, data.len() - before >= n);
                Ok(())
            };
            match op {
                Op::U8 => fixed(1, r.u8().is_ok())?,
                Op::U16 => fixed(2, r.u16().is_ok())?,
                Op::U32 => fixed(4, r.u32().is_ok())?,
                Op::U64 => fixed(8, r.u64().is_ok())?,
                Op::I16 => fixed(2, r.i16().is_ok())?,
                Op::I32 => fixed(4, r.i32().is_ok())?,
                Op::I64 => fixed(8, r.i64().is_ok())?,
                Op::Bytes(n) => {
                    let got = r.bytes(n);
                    fixed(n, got.is_ok())?;
                    if let Ok(b) = got {
                        prop_assert_eq!(&b[..], &data[before..before + n]);
                    }
                }
                Op::Slice(n) => {
                    let got = r.slice(n).map(<[u8]>::to_vec);
                    fixed(n, got.is_ok())?;
                    if let Ok(b) = got {
                        prop_assert_eq!(&b[..], &data[before..before + n]);
                    }
                }
                Op::Uvarint => { let _ = r.uvarint(); }
                Op::Varint => { let _ = r.varint(); }
                Op::Length => {
                    if let Ok(n) = r.length() {
                        prop_assert!(n <= r.remaining(), "length {} exceeds the {} bytes left", n, r.remaining());
                    }
                }
                Op::Finish => prop_assert_eq!(r.finish().is_ok(), r.remaining() == 0),
            }
            prop_assert!(r.position() >= before);
            prop_assert_eq!(r.position() + r.remaining(), data.len());
        }
    }

    #[test]
    fn decode_impls_on_garbage(data in garbage(96)) {
        let data = Bytes::from(data);
        decode_type::<bool>(&data);
        decode_type::<String>(&data);
        decode_type::<Bytes>(&data);
        decode_type::<Option<u64>>(&data);
        decode_type::<Vec<String>>(&data);
        decode_type::<Vec<Vec<u32>>>(&data);
        decode_type::<(u16, Option<String>)>(&data);
        decode_type::<Acks>(&data);
        decode_type::<ErrorCode>(&data);
        decode_type::<Credentials>(&data);
        decode_type::<OffsetSpec>(&data);
        decode_type::<TopicSettings>(&data);
        decode_type::<HelloRequest>(&data);
        decode_type::<MetadataResponse>(&data);
        decode_type::<DescribeGroupResponse>(&data);
        decode_type::<ErrorResponse>(&data);
    }
}
