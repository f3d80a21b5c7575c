//! Property tests: every request, response and record batch survives encode then decode unchanged.
//!
//! Requests and responses go through the real path a peer takes: `to_frame`, a [`FrameDecoder`]
//! fed in arbitrary chunks, then `from_frame`. Record batches go through the builder, `parse`
//! (CRC check) and `decode_all`, for every codec.

mod strategies;

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use rustmq_protocol::batch::{
    set_base_offset, verify_crc, BATCH_HEADER_LEN, NO_PRODUCER_ID, NO_SEQUENCE,
};
use rustmq_protocol::codec::{
    put_uvarint, put_varint, uvarint_len, varint_len, Reader, SHARE_MIN_BYTES,
};
use rustmq_protocol::*;
use strategies::*;

// ---- frame helpers ---------------------------------------------------------------------------

/// Feeds `wire` to a decoder in chunks of the given sizes (cycled) and collects every frame,
/// checking that no frame appears before its last byte has been fed.
fn decode_stream(wire: &[u8], chunks: &[usize], max_body: u32) -> Vec<Frame> {
    let mut decoder = FrameDecoder::new(max_body);
    let mut frames = Vec::new();
    let mut fed = 0;
    let mut consumed = 0;
    let mut sizes = chunks.iter().cycle();
    while fed < wire.len() {
        let n = (*sizes.next().expect("non-empty chunk list")).min(wire.len() - fed);
        decoder.extend(&wire[fed..fed + n]);
        fed += n;
        while let Some(frame) = decoder.next_frame().expect("valid frame stream") {
            consumed += FRAME_HEADER_LEN + frame.body.len();
            assert!(
                consumed <= fed,
                "frame returned before all of its bytes arrived"
            );
            frames.push(frame);
        }
    }
    assert_eq!(
        decoder.buffered(),
        0,
        "bytes left over after the last frame"
    );
    frames
}

fn one_frame(wire: &Bytes) -> Frame {
    let mut frames = decode_stream(wire, &[wire.len().max(1)], DEFAULT_MAX_FRAME_BYTES);
    assert_eq!(frames.len(), 1);
    frames.pop().expect("one frame")
}

// ---- message properties ----------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn request_round_trips(req in request(), id in any::<u32>()) {
        let wire = req.to_frame(id);
        let frame = one_frame(&wire);
        prop_assert_eq!(frame.header.request_id, id);
        prop_assert_eq!(frame.header.kind, req.kind().code());
        prop_assert_eq!(frame.header.version, 1);
        prop_assert!(!frame.header.is_response());
        prop_assert_eq!(frame.header.body_len as usize, wire.len() - FRAME_HEADER_LEN);
        prop_assert_eq!(req.to_frame_chunks(id).concat(), wire.to_vec());
        prop_assert_eq!(Request::from_frame(&frame)?, req);
    }

    #[test]
    fn response_round_trips(resp in response(), id in any::<u32>()) {
        let wire = resp.to_frame(id);
        let frame = one_frame(&wire);
        prop_assert_eq!(frame.header.request_id, id);
        prop_assert!(frame.header.is_response());
        match resp.kind() {
            Some(kind) => prop_assert_eq!(frame.header.kind, kind.code() | frame::RESPONSE_BIT),
            None => prop_assert_eq!(frame.header.kind, frame::ERROR_KIND),
        }
        prop_assert_eq!(resp.to_frame_chunks(id).concat(), wire.to_vec());
        prop_assert_eq!(Response::from_frame(&frame)?, resp);
    }

    /// Large byte fields go out as chunks of their own, shared with the message, and the
    /// chunks still make exactly the frame.
    #[test]
    fn large_fields_are_shared_not_copied(len in 0usize..20_000, id in any::<u32>()) {
        let batch = Bytes::from(vec![7u8; len]);
        let req = Request::Produce(ProduceRequest {
            topic: "t".into(),
            partition: 1,
            acks: Acks::Leader,
            timeout_ms: 5,
            batch: batch.clone(),
        });
        let resp = Response::Fetch(FetchResponse {
            high_watermark: 9,
            log_start_offset: 0,
            records: batch.clone(),
        });
        for (chunks, wire) in [
            (req.to_frame_chunks(id), req.to_frame(id)),
            (resp.to_frame_chunks(id), resp.to_frame(id)),
        ] {
            prop_assert_eq!(chunks.concat(), wire.to_vec());
            let shared = chunks.iter().any(|c| c.as_ptr() == batch.as_ptr() && c.len() == len);
            prop_assert_eq!(shared, len >= SHARE_MIN_BYTES);
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Several frames back to back, cut at arbitrary points, come out whole and in order.
    #[test]
    fn frame_stream_survives_any_chunking(
        reqs in vec(request(), 1..6),
        resps in vec(response(), 1..6),
        chunks in vec(1usize..40, 1..8),
    ) {
        let mut wire = BytesMut::new();
        for (i, r) in reqs.iter().enumerate() {
            wire.extend_from_slice(&r.to_frame(i as u32));
        }
        for (i, r) in resps.iter().enumerate() {
            wire.extend_from_slice(&r.to_frame(1000 + i as u32));
        }
        let frames = decode_stream(&wire, &chunks, DEFAULT_MAX_FRAME_BYTES);
        prop_assert_eq!(frames.len(), reqs.len() + resps.len());
        for (i, (frame, req)) in frames.iter().zip(&reqs).enumerate() {
            prop_assert_eq!(frame.header.request_id, i as u32);
            prop_assert_eq!(&Request::from_frame(frame)?, req);
        }
        for (i, (frame, resp)) in frames[reqs.len()..].iter().zip(&resps).enumerate() {
            prop_assert_eq!(frame.header.request_id, 1000 + i as u32);
            prop_assert_eq!(&Response::from_frame(frame)?, resp);
        }
    }

    /// A decoder whose limit is one byte below a frame's body refuses it from the header alone.
    #[test]
    fn frame_limit_is_exact(req in request()) {
        let wire = req.to_frame(1);
        let body = (wire.len() - FRAME_HEADER_LEN) as u32;
        prop_assert_eq!(decode_stream(&wire, &[wire.len()], body).len(), 1);
        if body > 0 {
            let mut decoder = FrameDecoder::new(body - 1);
            decoder.extend(&wire[..FRAME_HEADER_LEN]);
            let refused = matches!(
                decoder.next_frame(),
                Err(ProtocolError::FrameTooLarge { size, max }) if size == body as usize && max == body as usize - 1
            );
            prop_assert!(refused);
        }
    }

    #[test]
    fn varints_round_trip(u in any::<u64>(), i in any::<i64>(), small in -300i64..300) {
        let mut buf = BytesMut::new();
        put_uvarint(&mut buf, u);
        prop_assert_eq!(buf.len(), uvarint_len(u));
        let split = buf.len();
        put_varint(&mut buf, i);
        prop_assert_eq!(buf.len() - split, varint_len(i));
        put_varint(&mut buf, small);
        let mut r = Reader::new(buf.freeze());
        prop_assert_eq!(r.uvarint()?, u);
        prop_assert_eq!(r.varint()?, i);
        prop_assert_eq!(r.varint()?, small);
        r.finish()?;
    }
}

/// The generators reach every request kind and every response kind, including the error
/// answer, so a kind added to the protocol without a strategy makes this test fail.
#[test]
fn every_kind_is_generated() {
    let mut runner = TestRunner::deterministic();
    let (req, resp) = (request(), response());
    let mut req_kinds = HashSet::new();
    let mut resp_kinds = HashSet::new();
    for _ in 0..2_000 {
        req_kinds.insert(req.new_tree(&mut runner).unwrap().current().kind());
        resp_kinds.insert(resp.new_tree(&mut runner).unwrap().current().kind());
    }
    let all: HashSet<_> = ApiKind::ALL.iter().copied().collect();
    assert_eq!(req_kinds, all);
    let mut all_resp: HashSet<_> = all.into_iter().map(Some).collect();
    all_resp.insert(None);
    assert_eq!(resp_kinds, all_resp);
}

fn assert_records(
    records: &[Record],
    inputs: &[Input],
    base_offset: u64,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(records.len(), inputs.len());
    for (i, (rec, input)) in records.iter().zip(inputs).enumerate() {
        prop_assert_eq!(rec.offset, base_offset + i as u64);
        prop_assert_eq!(rec.timestamp, input.timestamp);
        prop_assert_eq!(rec.key.as_deref(), input.key.as_deref());
        prop_assert_eq!(rec.value.as_deref(), input.value.as_deref());
        let headers: Vec<(&str, &[u8])> = rec
            .headers
            .iter()
            .map(|h| (h.key.as_str(), &h.value[..]))
            .collect();
        let expected: Vec<(&str, &[u8])> = input
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), &v[..]))
            .collect();
        prop_assert_eq!(headers, expected);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn batch_round_trips(
        inputs in vec(input(), 1..24),
        codec in codec(),
        level in -2i32..12,
        producer in producer(),
    ) {
        let (bytes, section) = build(&inputs, codec, level, producer);
        let batch = RecordBatch::parse(bytes.clone())?;
        prop_assert_eq!(batch.as_bytes(), &bytes);
        let h = *batch.header();
        prop_assert_eq!(h.base_offset, 0);
        prop_assert_eq!(h.total_len(), bytes.len());
        prop_assert_eq!(h.record_count as usize, inputs.len());
        prop_assert_eq!(h.last_offset_delta as usize, inputs.len() - 1);
        prop_assert_eq!(h.next_offset(), inputs.len() as u64);
        prop_assert_eq!(h.base_timestamp, inputs[0].timestamp);
        prop_assert_eq!(h.max_timestamp, inputs.iter().map(|r| r.timestamp).max().unwrap());
        let (id, epoch, seq) = producer.unwrap_or((NO_PRODUCER_ID, 0, NO_SEQUENCE));
        prop_assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (id, epoch, seq));
        prop_assert_eq!(h.is_idempotent(), id >= 0 && seq >= 0);
        // The builder falls back to no compression when the codec does not help.
        prop_assert!(h.compression() == codec || h.compression() == Compression::None);
        if h.compression() == Compression::None {
            prop_assert_eq!(bytes.len(), BATCH_HEADER_LEN + section);
        } else {
            prop_assert!(bytes.len() < BATCH_HEADER_LEN + section);
        }

        assert_records(&batch.decode_all(section)?, &inputs, 0)?;
        batch.validate_records(section)?;
        let streamed: Vec<Record> = batch.records()?.collect::<Result<_, _>>()?;
        assert_records(&streamed, &inputs, 0)?;
    }

    /// Compressible records keep their codec, and the decompression cap is exact.
    #[test]
    fn compressed_batches_use_their_codec(
        inputs in vec(input(), 1..8),
        filler in any::<u8>(),
        codec in select(Compression::ALL[1..].to_vec()),
        level in 1i32..6,
    ) {
        let mut inputs = inputs;
        inputs.push(Input { timestamp: 0, key: None, value: Some(vec![filler; 2_000]), headers: vec![] });
        let (bytes, section) = build(&inputs, codec, level, None);
        let batch = RecordBatch::parse(bytes)?;
        prop_assert_eq!(batch.header().compression(), codec);
        assert_records(&batch.decode_all(section)?, &inputs, 0)?;
        let capped = batch.decode_all(section - 1);
        let refused = matches!(
            capped,
            Err(ProtocolError::TooLargeUncompressed { size, max }) if size == section && max == section - 1
        );
        prop_assert!(refused, "{:?}", capped);
    }

    /// The broker assigns offsets by rewriting `base_offset`; the CRC does not cover it.
    #[test]
    fn base_offset_rewrite_keeps_crc_valid(
        inputs in vec(input(), 1..8),
        codec in codec(),
        base in prop_oneof![any::<u64>(), Just(0u64), Just(u64::MAX / 2)],
    ) {
        let n = inputs.len() as u64;
        let base = base.min(u64::MAX - n);
        let (bytes, section) = build(&inputs, codec, 3, None);
        let mut raw = BytesMut::from(&bytes[..]);
        set_base_offset(&mut raw, base);
        prop_assert_eq!(&raw[8..], &bytes[8..]);
        verify_crc(&raw)?;
        let batch = RecordBatch::parse(raw.freeze())?;
        prop_assert_eq!(batch.header().crc, RecordBatch::parse(bytes)?.header().crc);
        prop_assert_eq!(batch.header().base_offset, base);
        prop_assert_eq!(batch.header().last_offset(), base + n - 1);
        prop_assert_eq!(batch.header().next_offset(), base + n);
        assert_records(&batch.decode_all(section)?, &inputs, base)?;
    }

    /// Every byte but `base_offset` is checked: a flip anywhere else fails `parse`.
    #[test]
    fn any_flip_outside_base_offset_is_detected(
        inputs in vec(input(), 1..6),
        codec in codec(),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let (bytes, _) = build(&inputs, codec, 3, None);
        let mut raw = BytesMut::from(&bytes[..]);
        let at = 8 + at.index(raw.len() - 8);
        raw[at] ^= mask;
        prop_assert!(RecordBatch::parse(raw.freeze()).is_err(), "flip at {} went unnoticed", at);
    }

    /// Concatenated batches (a fetch answer) split back into the same batches.
    #[test]
    fn batch_iter_splits_concatenation(
        batches in vec((vec(input(), 1..5), codec(), any::<u32>()), 1..5),
    ) {
        let mut wire = BytesMut::new();
        let mut expected = Vec::new();
        let mut next = 0u64;
        for (inputs, codec, gap) in &batches {
            let (bytes, _) = build(inputs, *codec, 1, None);
            let start = wire.len();
            wire.extend_from_slice(&bytes);
            set_base_offset(&mut wire[start..], next);
            expected.push((next, wire[start..].to_vec(), inputs.clone()));
            next += inputs.len() as u64 + u64::from(*gap);
        }
        let got: Vec<RecordBatch> = BatchIter::new(wire.freeze()).collect::<Result<_, _>>()?;
        prop_assert_eq!(got.len(), expected.len());
        for (batch, (base, raw, inputs)) in got.iter().zip(&expected) {
            prop_assert_eq!(&batch.as_bytes()[..], &raw[..]);
            assert_records(&batch.records()?.collect::<Result<Vec<_>, _>>()?, inputs, *base)?;
        }
    }

    #[test]
    fn compression_round_trips(data in payload(), codec in codec(), level in -5i32..25) {
        let mut out = vec![0xAA];
        codec.compress(&data, level, &mut out)?;
        prop_assert_eq!(out[0], 0xAA, "compress must append, not overwrite");
        prop_assert_eq!(codec.decompress(&out[1..], data.len())?, data.clone());
        prop_assert_eq!(codec.name().parse::<Compression>()?, codec);
        prop_assert_eq!(Compression::from_id(codec.id())?, codec);
    }
}
