//! Property tests: every decoder answers `Ok` or `Err` on any input and never panics.
//!
//! Inputs are arbitrary bytes and valid encodings that were then damaged (bytes flipped, cut,
//! extended). Record batches get their CRC recomputed after the damage so that the record and
//! decompression decoders behind the CRC check see the garbage too. Where the outcome is fully
//! specified (frame splitting, batch header checks, cut or extended bodies) the tests compare
//! with the specification instead of only checking for a panic.
//!
//! Allocation: every length and count must be backed by input bytes. The deterministic tests at
//! the end feed 1 MiB adversarial inputs (giant counts, endless varints, lying size prefixes)
//! and expect a prompt error.

mod strategies;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use rustmq_protocol::batch::{compute_crc, set_base_offset, BATCH_HEADER_LEN, LOG_OVERHEAD, MAGIC};
use rustmq_protocol::codec::{put_uvarint, put_varint, Decode, Reader};
use rustmq_protocol::frame::{ERROR_KIND, RESPONSE_BIT};
use rustmq_protocol::*;
use strategies::*;

// ---- damage ----------------------------------------------------------------------------------

/// One way to damage an encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Truncate(Index),
    Extend(Vec<u8>),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that mean something to a varint or tag decoder.
    let special = prop_oneof![
        select(vec![0x00u8, 0x01, 0x02, 0x7f, 0x80, 0xff]),
        any::<u8>()
    ];
    prop_oneof![
        4 => (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        3 => (any::<Index>(), special).prop_map(|(i, b)| Mutation::Set(i, b)),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..16).prop_map(Mutation::Extend),
        1 => (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
}

fn mutate(buf: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = buf.len();
        match m {
            Mutation::Flip(i, mask) if len > 0 => buf[i.index(len)] ^= mask,
            Mutation::Set(i, b) if len > 0 => buf[i.index(len)] = *b,
            Mutation::Truncate(i) if len > 0 => buf.truncate(i.index(len)),
            Mutation::Extend(tail) => buf.extend_from_slice(tail),
            Mutation::Insert(i, b) => {
                let at = i.index(len + 1);
                buf.splice(at..at, b.iter().copied());
            }
            Mutation::Remove(i, n) if len > 0 => {
                let at = i.index(len);
                buf.drain(at..(at + n).min(len));
            }
            _ => {}
        }
    }
}

/// Arbitrary bytes, half the time from an alphabet of varint and tag bytes so that decoders get
/// past their first field.
fn garbage(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..max),
        vec(
            select(vec![0x00u8, 0x01, 0x02, 0x03, 0x7f, 0x80, 0x81, 0xff]),
            0..max
        ),
    ]
}

// ---- frames and messages ---------------------------------------------------------------------

fn frame(kind: u16, version: u16, body: impl Into<Bytes>) -> Frame {
    let body = body.into();
    Frame {
        header: FrameHeader {
            body_len: body.len() as u32,
            kind,
            version,
            request_id: 7,
        },
        body,
    }
}

/// Every request kind, every response kind, the error kind and a few unknown ones.
fn all_kinds() -> Vec<u16> {
    let mut kinds: Vec<u16> = ApiKind::ALL.iter().map(|k| k.code()).collect();
    kinds.extend(ApiKind::ALL.iter().map(|k| k.code() | RESPONSE_BIT));
    kinds.extend([ERROR_KIND, 0, 19, 0x7fff, RESPONSE_BIT, RESPONSE_BIT | 19]);
    kinds
}

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

// ---- record batches --------------------------------------------------------------------------

/// Fields of a batch header, with values near every edge the parser checks.
#[derive(Debug, Clone)]
struct RawHeader {
    base_offset: u64,
    batch_length: u32,
    magic: u8,
    crc: u32,
    attributes: u16,
    last_offset_delta: u32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    record_count: u32,
}

impl RawHeader {
    fn write(&self, out: &mut BytesMut) {
        out.put_u64(self.base_offset);
        out.put_u32(self.batch_length);
        out.put_u8(self.magic);
        out.put_u32(self.crc);
        out.put_u16(self.attributes);
        out.put_u32(self.last_offset_delta);
        out.put_i64(self.base_timestamp);
        out.put_i64(self.max_timestamp);
        out.put_i64(self.producer_id);
        out.put_i16(self.producer_epoch);
        out.put_i32(self.base_sequence);
        out.put_u32(self.record_count);
    }

    /// Whether [`BatchHeader::parse`] must accept these fields.
    fn valid(&self) -> bool {
        self.magic == MAGIC
            && self.batch_length as usize >= BATCH_HEADER_LEN - LOG_OVERHEAD
            && self.record_count > 0
            && self.last_offset_delta == self.record_count - 1
            && self.attributes & 0x07 < 4
            && self
                .base_offset
                .checked_add(u64::from(self.record_count))
                .is_some()
    }
}

fn raw_header() -> impl Strategy<Value = RawHeader> {
    let count = prop_oneof![3 => 1u32..40, 1 => Just(0u32), 1 => any::<u32>(), 1 => Just(u32::MAX)];
    let base = prop_oneof![3 => 0u64..1_000, 1 => any::<u64>(), 1 => (u64::MAX - 64)..=u64::MAX];
    (
        (base, prop_oneof![3 => 40u32..2_000, 1 => any::<u32>()]),
        prop_oneof![4 => Just(MAGIC), 1 => any::<u8>()],
        any::<u32>(),
        prop_oneof![4 => 0u16..8, 1 => any::<u16>()],
        (
            count,
            prop_oneof![4 => Just(None), 1 => any::<u32>().prop_map(Some)],
        ),
        (
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
            any::<i16>(),
            any::<i32>(),
        ),
    )
        .prop_map(
            |((base_offset, batch_length), magic, crc, attributes, (record_count, delta), rest)| {
                RawHeader {
                    base_offset,
                    batch_length,
                    magic,
                    crc,
                    attributes,
                    last_offset_delta: delta.unwrap_or(record_count.wrapping_sub(1)),
                    base_timestamp: rest.0,
                    max_timestamp: rest.1,
                    producer_id: rest.2,
                    producer_epoch: rest.3,
                    base_sequence: rest.4,
                    record_count,
                }
            },
        )
}

/// Seals `header` + `section` into a batch whose length and CRC are right, so that parsing
/// gets past those checks.
fn seal(mut header: RawHeader, section: &[u8]) -> Bytes {
    header.batch_length = (BATCH_HEADER_LEN - LOG_OVERHEAD + section.len()) as u32;
    let mut out = BytesMut::new();
    header.write(&mut out);
    out.extend_from_slice(section);
    let crc = compute_crc(&out);
    out[13..17].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

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
    if let Ok(records) = batch.decode_all(limit) {
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

// ---- adversarial inputs, 1 MiB ---------------------------------------------------------------

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

fn header_for(count: u32, codec: Compression, base_offset: u64) -> RawHeader {
    RawHeader {
        base_offset,
        batch_length: 0,
        magic: MAGIC,
        crc: 0,
        attributes: codec.id(),
        last_offset_delta: count - 1,
        base_timestamp: 0,
        max_timestamp: 0,
        producer_id: -1,
        producer_epoch: 0,
        base_sequence: -1,
        record_count: count,
    }
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
