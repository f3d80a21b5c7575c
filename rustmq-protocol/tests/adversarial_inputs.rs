//! Adversarial inputs of 1 MiB and giant counts in tiny inputs: every decoder must fail
//! promptly, trusting no length or count further than the bytes it was given. (Allocation sizes
//! are not measured here: the workspace forbids the `unsafe` a counting allocator needs; the
//! frame decoder's reservation is checked by a unit test in `frame.rs`.)

mod strategies;

use bytes::{BufMut, Bytes, BytesMut};
use rustmq_protocol::batch::set_base_offset;
use rustmq_protocol::codec::{put_uvarint, put_varint, Decode, Reader};
use rustmq_protocol::frame::RESPONSE_BIT;
use rustmq_protocol::*;
use strategies::*;

const MIB: usize = 1 << 20;

fn body_of(fill: u8) -> Bytes {
    Bytes::from(vec![fill; MIB])
}

#[test]
fn giant_counts_in_tiny_inputs_fail() {
    for count in [u64::from(u32::MAX), u64::MAX >> 1, 1 << 40, 2] {
        let mut buf = BytesMut::new();
        put_uvarint(&mut buf, count);
        buf.put_u8(0);
        let tiny = buf.freeze();
        assert!(matches!(
            Vec::<u64>::decode(&mut Reader::new(tiny.clone())),
            Err(ProtocolError::Truncated { .. })
        ));
        assert!(Vec::<String>::decode(&mut Reader::new(tiny.clone())).is_err());
        assert!(String::decode(&mut Reader::new(tiny.clone())).is_err());
        assert!(Bytes::decode(&mut Reader::new(tiny.clone())).is_err());
    }
    // MetadataRequest: `Some`, then a count of 2^62 strings, in 11 bytes.
    let mut body = BytesMut::new();
    body.put_u8(1);
    put_uvarint(&mut body, 1 << 62);
    let f = frame(ApiKind::Metadata.code(), 1, body.freeze());
    assert!(matches!(
        Request::from_frame(&f),
        Err(ProtocolError::Truncated { .. })
    ));
}

/// A count equal to the bytes left is accepted, one more is a lie: the check is exact.
#[test]
fn vec_count_is_bounded_by_the_input() {
    let n = MIB - 8;
    for (count, ok) in [(n, true), (n + 1, false)] {
        let mut body = BytesMut::new();
        put_uvarint(&mut body, count as u64);
        body.put_bytes(0, n); // n empty strings
        let f = frame(ApiKind::ListGroups.code() | RESPONSE_BIT, 1, body.freeze());
        match Response::from_frame(&f) {
            Ok(Response::ListGroups(r)) => assert!(ok && r.groups.len() == n),
            other => assert!(!ok && other.is_err(), "count {count}: {other:?}"),
        }
    }
}

#[test]
fn megabyte_fills_fail_for_every_kind() {
    for fill in [0x00, 0x01, 0x7f, 0x80, 0xff] {
        let body = body_of(fill);
        for kind in all_kinds() {
            let f = frame(kind, 1, body.clone());
            assert!(
                Request::from_frame(&f).is_err(),
                "request kind {kind} from {fill:#x}"
            );
            assert!(
                Response::from_frame(&f).is_err(),
                "response kind {kind} from {fill:#x}"
            );
        }
        let mut r = Reader::new(body.clone());
        let _ = r.uvarint();
        assert!(r.position() <= 10, "a varint reads at most 10 bytes");
    }
}

#[test]
fn megabyte_streams_through_the_frame_decoder() {
    // A header announcing the largest allowed body, then nothing: the decoder waits.
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    let mut head = BytesMut::new();
    FrameHeader {
        body_len: DEFAULT_MAX_FRAME_BYTES,
        kind: 1,
        version: 1,
        request_id: 1,
    }
    .write(&mut head);
    decoder.extend(&head);
    assert_eq!(decoder.next_frame(), Ok(None));
    assert_eq!(decoder.buffered(), FRAME_HEADER_LEN);

    // 1 MiB of back-to-back empty frames.
    let wire = vec![0u8; MIB];
    let mut decoder = FrameDecoder::new(0);
    decoder.extend(&wire);
    let mut n = 0;
    while let Some(f) = decoder.next_frame().unwrap() {
        assert!(f.body.is_empty());
        n += 1;
    }
    assert_eq!(n, MIB / FRAME_HEADER_LEN);
    assert_eq!(decoder.buffered(), MIB % FRAME_HEADER_LEN);

    // 0xff everywhere announces a 4 GiB body: refused from the header.
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    decoder.extend(&body_of(0xff));
    assert!(matches!(
        decoder.next_frame(),
        Err(ProtocolError::FrameTooLarge { .. })
    ));
}

#[test]
fn megabyte_batches_with_lying_counts_fail() {
    let section = vec![0u8; MIB];
    // More records than bytes: refused by parse.
    let batch = seal(header_for(u32::MAX, Compression::None, 0), &section);
    assert!(matches!(
        RecordBatch::parse(batch),
        Err(ProtocolError::CorruptBatch(_))
    ));
    // As many records as bytes, each an empty record: the first one fails.
    let batch =
        RecordBatch::parse(seal(header_for(MIB as u32, Compression::None, 0), &section)).unwrap();
    assert!(batch.decode_all(MIB).is_err());

    // One record claiming 2^40 headers, then a 1 MiB key of nothing.
    let mut rec = BytesMut::new();
    rec.put_u8(0); // attributes
    put_varint(&mut rec, 0); // timestamp delta
    put_uvarint(&mut rec, 0); // offset delta
    put_varint(&mut rec, -1); // key
    put_varint(&mut rec, -1); // value
    put_uvarint(&mut rec, 1 << 40); // header count
    rec.put_bytes(0, MIB);
    let mut section = BytesMut::new();
    put_uvarint(&mut section, rec.len() as u64);
    section.extend_from_slice(&rec);
    let batch = RecordBatch::parse(seal(header_for(1, Compression::None, 0), &section)).unwrap();
    assert!(batch.decode_all(MIB).is_err());
}

/// Decompression bombs: a prefix over the limit is refused before decoding; a prefix that
/// lies low stops decoding one byte past it.
#[test]
fn decompression_bombs_fail() {
    let plain = vec![0u8; 4 * MIB];
    for codec in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
        let mut bomb = Vec::new();
        codec.compress(&plain, 1, &mut bomb).unwrap();
        assert!(bomb.len() < MIB, "{codec}: {} bytes", bomb.len());
        assert!(matches!(
            codec.decompress(&bomb, MIB),
            Err(ProtocolError::TooLargeUncompressed { size, max: MIB }) if size == 4 * MIB
        ));
        bomb[..4].copy_from_slice(&1024u32.to_be_bytes());
        assert!(
            codec.decompress(&bomb, MIB).is_err(),
            "{codec}: lying prefix accepted"
        );

        // In a batch: the default 64 MiB cap refuses a 4 GiB announcement.
        let mut section = bomb.clone();
        section[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        let batch = RecordBatch::parse(seal(header_for(1, codec, 0), &section)).unwrap();
        assert!(matches!(
            batch.records(),
            Err(ProtocolError::TooLargeUncompressed { .. })
        ));
    }
}

/// Regression: a `base_offset` near `u64::MAX` used to pass `parse` (the CRC does not cover it)
/// and then overflow while computing record offsets: a panic in debug builds, wrapped offsets
/// in release builds.
#[test]
fn base_offset_overflow_is_refused() {
    let mut b = RecordBatchBuilder::new();
    b.push(0, None, Some(&b"a"[..]), []);
    b.push(1, None, Some(&b"b"[..]), []);
    let built = b.build().unwrap();
    for (base, ok) in [
        (u64::MAX, false),
        (u64::MAX - 1, false),
        (u64::MAX - 2, true),
    ] {
        let mut raw = BytesMut::from(&built[..]);
        set_base_offset(&mut raw, base);
        match RecordBatch::parse(raw.freeze()) {
            Ok(batch) => {
                assert!(ok, "base offset {base} accepted");
                assert_eq!(batch.header().next_offset(), u64::MAX);
                let offsets: Vec<u64> = batch
                    .decode_all(64)
                    .unwrap()
                    .iter()
                    .map(|r| r.offset)
                    .collect();
                assert_eq!(offsets, [base, base + 1]);
            }
            Err(e) => assert!(
                !ok && matches!(e, ProtocolError::CorruptBatch(_)),
                "{base}: {e:?}"
            ),
        }
    }
}
