//! Damage for valid encodings, garbage generators, and raw frames and batch headers built by
//! hand.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use rustmq_protocol::batch::{compute_crc, BATCH_HEADER_LEN, LOG_OVERHEAD, MAGIC};
use rustmq_protocol::frame::{ERROR_KIND, RESPONSE_BIT};
use rustmq_protocol::*;

/// One way to damage an encoding.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    Flip(Index, u8),
    Set(Index, u8),
    Truncate(Index),
    Extend(Vec<u8>),
    Insert(Index, Vec<u8>),
    Remove(Index, usize),
}

pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
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

pub(crate) fn mutate(buf: &mut Vec<u8>, mutations: &[Mutation]) {
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
pub(crate) fn garbage(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..max),
        vec(
            select(vec![0x00u8, 0x01, 0x02, 0x03, 0x7f, 0x80, 0x81, 0xff]),
            0..max
        ),
    ]
}

pub(crate) fn frame(kind: u16, version: u16, body: impl Into<Bytes>) -> Frame {
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
pub(crate) fn all_kinds() -> Vec<u16> {
    let mut kinds: Vec<u16> = ApiKind::ALL.iter().map(|k| k.code()).collect();
    kinds.extend(ApiKind::ALL.iter().map(|k| k.code() | RESPONSE_BIT));
    kinds.extend([ERROR_KIND, 0, 19, 0x7fff, RESPONSE_BIT, RESPONSE_BIT | 19]);
    kinds
}

// ---- batch headers ---------------------------------------------------------------------------

/// Fields of a batch header, with values near every edge the parser checks.
#[derive(Debug, Clone)]
pub(crate) struct RawHeader {
    pub(crate) base_offset: u64,
    pub(crate) batch_length: u32,
    pub(crate) magic: u8,
    pub(crate) crc: u32,
    pub(crate) attributes: u16,
    pub(crate) last_offset_delta: u32,
    pub(crate) base_timestamp: i64,
    pub(crate) max_timestamp: i64,
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    pub(crate) base_sequence: i32,
    pub(crate) record_count: u32,
}

impl RawHeader {
    pub(crate) fn write(&self, out: &mut BytesMut) {
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
    pub(crate) fn valid(&self) -> bool {
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

pub(crate) fn raw_header() -> impl Strategy<Value = RawHeader> {
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
pub(crate) fn seal(mut header: RawHeader, section: &[u8]) -> Bytes {
    header.batch_length = (BATCH_HEADER_LEN - LOG_OVERHEAD + section.len()) as u32;
    let mut out = BytesMut::new();
    header.write(&mut out);
    out.extend_from_slice(section);
    let crc = compute_crc(&out);
    out[13..17].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

pub(crate) fn header_for(count: u32, codec: Compression, base_offset: u64) -> RawHeader {
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
