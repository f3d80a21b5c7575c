//! Record batches: the unit on the wire and on disk.
//!
//! The layout follows Kafka's RecordBatch v2, big-endian:
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset        rewritten by the broker, outside the CRC
//!      8     4  batch_length       bytes after this field
//!     12     1  magic (= 2)
//!     13     4  crc                CRC-32C of every byte from `attributes` to the end
//!     17     2  attributes         bits 0-2: compression codec
//!     19     4  last_offset_delta
//!     23     8  base_timestamp     milliseconds since the Unix epoch
//!     31     8  max_timestamp
//!     39     8  producer_id        -1 without idempotence
//!     47     2  producer_epoch
//!     49     4  base_sequence      -1 without idempotence
//!     53     4  record_count
//!     57     -  records            compressed as a whole when the codec is not `none`
//! ```
//!
//! Each record is `length: uvarint`, then `attributes: u8`, `timestamp_delta: varint`,
//! `offset_delta: uvarint`, key and value as `varint length (-1 = null) + bytes`, and
//! `header_count: uvarint` followed by `key: uvarint length + utf-8, value: uvarint length + bytes`.
//!
//! The broker assigns offsets by rewriting `base_offset` only; it never decompresses to store and
//! a fetch returns the stored bytes as they are.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{put_uvarint, put_varint, uvarint_len, varint_len, Reader};
use crate::compression::Compression;
use crate::error::{ProtocolError, Result};

/// Size of the fixed batch header.
pub const BATCH_HEADER_LEN: usize = 57;
/// Size of the `base_offset` and `batch_length` prefix that precedes the length-counted part.
pub const LOG_OVERHEAD: usize = 12;
/// The batch format version written by this crate.
pub const MAGIC: u8 = 2;
/// `producer_id` of a batch sent without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// `base_sequence` of a batch sent without idempotence.
pub const NO_SEQUENCE: i32 = -1;
/// Default cap on the uncompressed size of one batch's records.
pub const DEFAULT_MAX_UNCOMPRESSED: usize = 64 * 1024 * 1024;

const CRC_OFFSET: usize = 13;
const CRC_START: usize = 17;
const COMPRESSION_MASK: u16 = 0x07;

/// The fixed header of a record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Bytes that follow the `batch_length` field.
    pub batch_length: u32,
    /// Format version.
    pub magic: u8,
    /// Stored CRC-32C.
    pub crc: u32,
    /// Attribute bits (codec in bits 0-2).
    pub attributes: u16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: u32,
    /// Timestamp of the first record (ms).
    pub base_timestamp: i64,
    /// Largest record timestamp in the batch (ms).
    pub max_timestamp: i64,
    /// Idempotent producer id, or [`NO_PRODUCER_ID`].
    pub producer_id: i64,
    /// Idempotent producer epoch.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or [`NO_SEQUENCE`].
    pub base_sequence: i32,
    /// Number of records.
    pub record_count: u32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf` without checking the CRC.
    pub fn parse(buf: &[u8]) -> Result<Self> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(ProtocolError::Truncated {
                needed: BATCH_HEADER_LEN,
                remaining: buf.len(),
            });
        }
        let be64 = |at: usize| u64::from_be_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
        let be32 = |at: usize| u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
        let be16 = |at: usize| u16::from_be_bytes(buf[at..at + 2].try_into().expect("2 bytes"));
        let header = BatchHeader {
            base_offset: be64(0),
            batch_length: be32(8),
            magic: buf[12],
            crc: be32(13),
            attributes: be16(17),
            last_offset_delta: be32(19),
            base_timestamp: be64(23) as i64,
            max_timestamp: be64(31) as i64,
            producer_id: be64(39) as i64,
            producer_epoch: be16(47) as i16,
            base_sequence: be32(49) as i32,
            record_count: be32(53),
        };
        if header.magic != MAGIC {
            return Err(ProtocolError::InvalidValue {
                field: "batch magic",
                value: header.magic.into(),
            });
        }
        if (header.batch_length as usize) < BATCH_HEADER_LEN - LOG_OVERHEAD {
            return Err(ProtocolError::CorruptBatch(
                "batch length shorter than its header",
            ));
        }
        if header.record_count == 0 {
            return Err(ProtocolError::CorruptBatch("empty batch"));
        }
        if header.last_offset_delta != header.record_count - 1 {
            return Err(ProtocolError::CorruptBatch(
                "last offset delta does not match the record count",
            ));
        }
        // `base_offset` is outside the CRC: a peer can send anything, and record offsets
        // (`base_offset + delta`) must not overflow.
        let records = u64::from(header.record_count);
        if header.base_offset.checked_add(records).is_none() {
            return Err(ProtocolError::CorruptBatch("offsets overflow u64"));
        }
        Compression::from_id(header.attributes & COMPRESSION_MASK)?;
        Ok(header)
    }

    /// Size of the whole batch in bytes.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.last_offset_delta)
    }

    /// The offset after the last record.
    pub fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    /// The codec of the records section.
    pub fn compression(&self) -> Compression {
        Compression::from_id(self.attributes & COMPRESSION_MASK).unwrap_or_default()
    }

    /// Whether the batch carries an idempotent producer id and sequence.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0 && self.base_sequence >= 0
    }
}

/// Reads the total size of the batch starting at `buf` from its length prefix, if present.
pub fn batch_size_at(buf: &[u8]) -> Option<usize> {
    let len = buf.get(8..12)?;
    Some(u32::from_be_bytes(len.try_into().ok()?) as usize + LOG_OVERHEAD)
}

/// Rewrites the base offset of an encoded batch in place (the CRC does not cover it).
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) {
    batch[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the idempotent producer fields of an encoded batch in place and seals it again
/// (they are covered by the CRC): a producer whose id the broker does not know sends the same
/// records again under a new id.
///
/// # Panics
///
/// If `batch` is shorter than [`BATCH_HEADER_LEN`].
pub fn set_producer(batch: &mut [u8], producer_id: i64, epoch: i16, base_sequence: i32) {
    batch[39..47].copy_from_slice(&producer_id.to_be_bytes());
    batch[47..49].copy_from_slice(&epoch.to_be_bytes());
    batch[49..53].copy_from_slice(&base_sequence.to_be_bytes());
    seal(batch);
}

/// Computes the CRC-32C of an encoded batch.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Writes the CRC-32C of an encoded batch into its header, after the bytes it covers changed
/// (the builder's last step; tests and fuzzers use it to craft batches that pass the CRC).
pub fn seal(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
}

/// Checks the CRC of a complete encoded batch.
pub fn verify_crc(batch: &[u8]) -> Result<()> {
    let header = BatchHeader::parse(batch)?;
    if batch.len() != header.total_len() {
        return Err(ProtocolError::CorruptBatch(
            "batch length does not match its buffer",
        ));
    }
    let computed = compute_crc(batch);
    if computed != header.crc {
        return Err(ProtocolError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// A record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    /// Header name.
    pub key: String,
    /// Header value.
    pub value: Bytes,
}

/// One decoded record with its absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Absolute offset in the partition.
    pub offset: u64,
    /// Timestamp in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Optional key.
    pub key: Option<Bytes>,
    /// Optional value.
    pub value: Option<Bytes>,
    /// Headers in the order they were written.
    pub headers: Vec<RecordHeader>,
}

/// A validated record batch over shared bytes.
#[derive(Debug, Clone)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RecordBatch {
    /// Validates `bytes` as exactly one batch: header, length and CRC.
    pub fn parse(bytes: Bytes) -> Result<Self> {
        verify_crc(&bytes)?;
        let header = BatchHeader::parse(&bytes)?;
        let section = bytes.len() - BATCH_HEADER_LEN;
        if header.record_count as usize > section {
            return Err(ProtocolError::CorruptBatch("more records than bytes"));
        }
        Ok(Self { header, bytes })
    }

    /// The batch header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The encoded batch.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The size of the records section once decompressed, as the section declares it (a
    /// compressed section starts with it), before anything is decompressed; the section's
    /// own size if it is not compressed. `None` for a compressed section too short to hold
    /// it (which decompressing refuses).
    pub fn declared_uncompressed_len(&self) -> Option<usize> {
        let section = &self.bytes[BATCH_HEADER_LEN..];
        match self.header.compression() {
            Compression::None => Some(section.len()),
            _ => section
                .first_chunk::<4>()
                .map(|size| u32::from_be_bytes(*size) as usize),
        }
    }

    /// Iterates the records, decompressing first if needed (at most `max_uncompressed` bytes).
    pub fn records_with_limit(&self, max_uncompressed: usize) -> Result<RecordIter> {
        let section = self.bytes.slice(BATCH_HEADER_LEN..);
        let data = match self.header.compression() {
            Compression::None => section,
            codec => Bytes::from(codec.decompress(&section, max_uncompressed)?),
        };
        Ok(RecordIter {
            reader: Reader::new(data),
            index: 0,
            count: self.header.record_count,
            base_offset: self.header.base_offset,
            base_timestamp: self.header.base_timestamp,
        })
    }

    /// Iterates the records with the default decompression cap.
    pub fn records(&self) -> Result<RecordIter> {
        self.records_with_limit(DEFAULT_MAX_UNCOMPRESSED)
    }

    /// Checks every record as [`decode_all`](Self::decode_all) would, without building them:
    /// nothing is allocated unless the batch is compressed. Accepts exactly the batches
    /// `decode_all` accepts.
    pub fn validate_records(&self, max_uncompressed: usize) -> Result<()> {
        self.records_with_limit(max_uncompressed)?
            .validate()
            .map(drop)
    }

    /// Checks a batch as a broker must before storing it: every record as
    /// [`validate_records`](Self::validate_records) does, and the header's `max_timestamp`
    /// against the records' timestamps. The header's value is what the broker's time index,
    /// timestamp lookups and time-based retention go by, and the CRC keeps it from being
    /// corrected in place, so a batch whose header disagrees with its records is refused.
    pub fn validate_produced(&self, max_uncompressed: usize) -> Result<()> {
        let max = self
            .records_with_limit(max_uncompressed)?
            .validate_max_timestamp()?;
        self.check_max_timestamp(max)
    }

    /// Fails unless `max`, the largest timestamp of the batch's records (`None` for none), is
    /// the header's `max_timestamp`.
    pub fn check_max_timestamp(&self, max: Option<i64>) -> Result<()> {
        if max.is_none_or(|max| max == self.header.max_timestamp) {
            Ok(())
        } else {
            Err(ProtocolError::CorruptBatch(
                "max_timestamp does not match the records' timestamps",
            ))
        }
    }

    /// Decodes every record, checking the whole records section.
    pub fn decode_all(&self, max_uncompressed: usize) -> Result<Vec<Record>> {
        self.records_with_limit(max_uncompressed)?.collect()
    }
}

/// Where a checked record's fields lie in its batch's records section: what building it
/// needs, without parsing it again ([`RecordIter::check_spans`], [`RecordIter::record_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSpan {
    timestamp_delta: i64,
    /// Start and length of the key, and of the value; a length of `u32::MAX` is null.
    key: (u32, u32),
    value: (u32, u32),
    /// Where the header count starts; `u32::MAX` when the record has no headers.
    headers: u32,
}

const NULL_SPAN: u32 = u32::MAX;

/// Iterator over the records of a batch; yields an error and stops on corrupt input.
///
/// Cloning it is cheap (the records are shared, not copied).
#[derive(Debug, Clone)]
pub struct RecordIter {
    reader: Reader,
    index: u32,
    count: u32,
    base_offset: u64,
    base_timestamp: i64,
}

impl RecordIter {
    /// Reads and checks the fields every record starts with: its length, attributes,
    /// timestamp delta and offset delta. Returns where the record ends, its timestamp delta and
    /// its offset delta.
    #[inline]
    fn record_start(&mut self) -> Result<(usize, i64, u64)> {
        let r = &mut self.reader;
        let len = r.length()?;
        let end = r.position() + len;
        let _attributes = r.u8()?;
        let ts_delta = r.varint()?;
        let offset_delta = r.uvarint()?;
        if offset_delta != u64::from(self.index) {
            return Err(ProtocolError::CorruptBatch(
                "record offset delta out of sequence",
            ));
        }
        Ok((end, ts_delta, offset_delta))
    }

    /// Parses the next record, checking all of it, and builds it.
    fn next_record(&mut self) -> Result<Record> {
        let (end, ts_delta, offset_delta) = self.record_start()?;
        let r = &mut self.reader;
        let key = nullable_bytes(r)?;
        let value = nullable_bytes(r)?;
        let header_count = r.length()?;
        // No call into the allocator for the usual record without headers.
        let mut headers = if header_count == 0 {
            Vec::new()
        } else {
            Vec::with_capacity(header_count.min(64))
        };
        for _ in 0..header_count {
            let klen = r.length()?;
            let name =
                std::str::from_utf8(r.slice(klen)?).map_err(|_| ProtocolError::InvalidUtf8)?;
            let key = name.to_owned();
            let vlen = r.length()?;
            headers.push(RecordHeader {
                key,
                value: r.bytes(vlen)?,
            });
            if r.position() > end {
                break;
            }
        }
        check_end(r, end)?;
        Ok(Record {
            offset: self.base_offset + offset_delta,
            timestamp: self.base_timestamp.wrapping_add(ts_delta),
            key,
            value,
            headers,
        })
    }

    /// Checks the next record as [`next_record`](Self::next_record) would, building nothing
    /// (the broker's check of every produced batch and the consumer's check of every fetched
    /// one take this path).
    #[inline]
    fn check_record(&mut self) -> Result<()> {
        self.check_record_timestamp().map(drop)
    }

    /// [`check_record`](Self::check_record), answering the record's timestamp.
    #[inline]
    fn check_record_timestamp(&mut self) -> Result<i64> {
        let (end, ts_delta, _) = self.record_start()?;
        let r = &mut self.reader;
        skip_nullable(r)?;
        skip_nullable(r)?;
        let header_count = r.length()?;
        skip_headers(r, header_count, end)?;
        check_end(r, end)?;
        Ok(self.base_timestamp.wrapping_add(ts_delta))
    }

    /// Checks every remaining record as [`validate`](Self::validate) does; the largest of
    /// their timestamps (`None` if none remain).
    pub fn validate_max_timestamp(mut self) -> Result<Option<i64>> {
        let any = self.index < self.count;
        let mut max = i64::MIN;
        while self.index < self.count {
            max = max.max(self.advance(Self::check_record_timestamp)?);
        }
        Ok(any.then_some(max))
    }

    /// Checks every remaining record without building any; the number checked.
    pub fn validate(mut self) -> Result<u32> {
        let mut checked = 0;
        while self.index < self.count {
            self.advance(Self::check_record)?;
            checked += 1;
        }
        Ok(checked)
    }

    /// Checks the next `n` records (at most the remaining ones) exactly as iterating would,
    /// without building them and without moving this iterator. On corrupt input, the error
    /// comes with the number of records that checked fine before it. (A consumer that builds
    /// the records later takes [`check_spans`](Self::check_spans), which spares it a second
    /// parse; `benches/records_callgrind.rs` compares the two.)
    pub fn check_ahead(&self, n: u32) -> std::result::Result<(), (u32, ProtocolError)> {
        let mut ahead = self.clone();
        let n = n.min(self.remaining());
        for good in 0..n {
            ahead.advance(Self::check_record).map_err(|e| (good, e))?;
        }
        Ok(())
    }

    /// Checks the next `n` records (at most the remaining ones) exactly as iterating would, and
    /// moves past them, noting in `out` where each one's fields lie: [`record_at`](Self::record_at)
    /// then builds them without parsing them again. On corrupt input, the error comes with the
    /// number of records that checked fine before it (their spans are in `out`); the iterator
    /// then stops.
    pub fn check_spans(
        &mut self,
        n: u32,
        out: &mut Vec<RecordSpan>,
    ) -> std::result::Result<(), (u32, ProtocolError)> {
        let n = n.min(self.remaining());
        out.reserve(n as usize);
        for good in 0..n {
            let span = self.advance(Self::span_record).map_err(|e| (good, e))?;
            out.push(span);
        }
        Ok(())
    }

    /// Checks the next record as [`check_record`](Self::check_record) does, answering where
    /// its fields lie.
    #[inline]
    fn span_record(&mut self) -> Result<RecordSpan> {
        let (end, timestamp_delta, _) = self.record_start()?;
        let r = &mut self.reader;
        let field = |r: &mut Reader| -> Result<(u32, u32)> {
            Ok(match nullable_len(r)? {
                None => (0, NULL_SPAN),
                Some(n) => {
                    let at = r.position();
                    r.slice(n)?;
                    (position_u32(at)?, position_u32(n)?)
                }
            })
        };
        let key = field(r)?;
        let value = field(r)?;
        let headers_at = r.position();
        let header_count = r.length()?;
        skip_headers(r, header_count, end)?;
        check_end(r, end)?;
        Ok(RecordSpan {
            timestamp_delta,
            key,
            value,
            headers: if header_count == 0 {
                NULL_SPAN
            } else {
                position_u32(headers_at)?
            },
        })
    }

    /// The record at `index` in the batch (counted from its first record), which
    /// [`check_spans`](Self::check_spans) of this iterator checked and described as `span`.
    /// (A span of another batch builds a wrong record, with null fields where it does not
    /// fit; nothing else goes wrong.)
    pub fn record_at(&self, index: u32, span: &RecordSpan) -> Record {
        let field = |(start, len): (u32, u32)| {
            (len != NULL_SPAN).then(|| {
                let bytes = self.reader.bytes_at(start as usize, len as usize);
                debug_assert!(bytes.is_some(), "a span of another batch");
                bytes.unwrap_or_default()
            })
        };
        let headers = if span.headers == NULL_SPAN {
            Vec::new()
        } else {
            let mut r = self.reader.clone();
            r.seek(span.headers as usize);
            let headers = read_headers(&mut r);
            debug_assert!(headers.is_ok(), "a span of another batch");
            headers.unwrap_or_default()
        };
        Record {
            offset: self.base_offset + u64::from(index),
            timestamp: self.base_timestamp.wrapping_add(span.timestamp_delta),
            key: field(span.key),
            value: field(span.value),
            headers,
        }
    }

    /// Steps over the next `n` records (at most the remaining ones) without building them;
    /// fails on the first corrupt one, as iterating would.
    pub fn skip_records(&mut self, n: u32) -> Result<()> {
        for _ in 0..n.min(self.remaining()) {
            self.advance(Self::check_record)?;
        }
        Ok(())
    }

    /// Records not iterated yet.
    pub fn remaining(&self) -> u32 {
        self.count - self.index
    }

    /// Size of the records section this iterator holds (decompressed, for a compressed batch),
    /// whatever has been iterated: the memory it keeps alive.
    pub fn held_bytes(&self) -> usize {
        self.reader.position() + self.reader.remaining()
    }

    /// The next record through `read` (building or checking it), then the end-of-batch
    /// checks; stops the iteration on error.
    #[inline]
    fn advance<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let result = read(self);
        if result.is_err() {
            self.index = self.count;
            return result;
        }
        self.index += 1;
        if self.index == self.count && self.reader.remaining() != 0 {
            return Err(ProtocolError::CorruptBatch(
                "trailing bytes after the last record",
            ));
        }
        result
    }
}

/// A position or length in a records section as a `u32` (sections are far smaller: the
/// decompression limit bounds them).
fn position_u32(n: usize) -> Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n != NULL_SPAN)
        .ok_or(ProtocolError::CorruptBatch("records section too large"))
}

/// The headers of a record whose header count is next in `r` (checked before).
fn read_headers(r: &mut Reader) -> Result<Vec<RecordHeader>> {
    let count = r.length()?;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let klen = r.length()?;
        let key = std::str::from_utf8(r.slice(klen)?)
            .map_err(|_| ProtocolError::InvalidUtf8)?
            .to_owned();
        let vlen = r.length()?;
        headers.push(RecordHeader {
            key,
            value: r.bytes(vlen)?,
        });
    }
    Ok(headers)
}

/// Checks and steps over `count` headers of a record ending at `end`.
#[inline]
fn skip_headers(r: &mut Reader, count: usize, end: usize) -> Result<()> {
    for _ in 0..count {
        let klen = r.length()?;
        std::str::from_utf8(r.slice(klen)?).map_err(|_| ProtocolError::InvalidUtf8)?;
        let vlen = r.length()?;
        r.slice(vlen)?;
        if r.position() > end {
            break;
        }
    }
    Ok(())
}

/// Fails unless the record's fields ended exactly at its announced `end`.
#[inline]
fn check_end(r: &Reader, end: usize) -> Result<()> {
    if r.position() == end {
        Ok(())
    } else {
        Err(ProtocolError::CorruptBatch(
            "record length does not match its fields",
        ))
    }
}

/// A nullable length-prefixed field.
#[inline]
fn nullable_bytes(r: &mut Reader) -> Result<Option<Bytes>> {
    nullable_len(r)?.map(|n| r.bytes(n)).transpose()
}

/// Checks and steps over a nullable length-prefixed field.
#[inline]
fn skip_nullable(r: &mut Reader) -> Result<()> {
    if let Some(n) = nullable_len(r)? {
        r.slice(n)?;
    }
    Ok(())
}

/// The length of a nullable field (`None`: null).
#[inline]
fn nullable_len(r: &mut Reader) -> Result<Option<usize>> {
    match r.varint()? {
        -1 => Ok(None),
        n if n < 0 => Err(ProtocolError::CorruptBatch("negative field length")),
        n => usize::try_from(n)
            .map(Some)
            .map_err(|_| ProtocolError::BadVarint),
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        Some(self.advance(Self::next_record))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining() as usize;
        (0, Some(n))
    }
}

/// Splits concatenated batches (a fetch answer or a log segment) into validated batches.
#[derive(Debug, Clone)]
pub struct BatchIter {
    buf: Bytes,
}

impl BatchIter {
    /// Iterates the batches in `buf`.
    pub fn new(buf: Bytes) -> Self {
        Self { buf }
    }
}

impl Iterator for BatchIter {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let result = match batch_size_at(&self.buf) {
            None => Err(ProtocolError::Truncated {
                needed: LOG_OVERHEAD,
                remaining: self.buf.len(),
            }),
            Some(size) if size > self.buf.len() => Err(ProtocolError::Truncated {
                needed: size,
                remaining: self.buf.len(),
            }),
            Some(size) => RecordBatch::parse(self.buf.split_to(size)),
        };
        if result.is_err() {
            self.buf.clear();
        }
        Some(result)
    }
}

/// Builds one record batch, record by record.
///
/// ```
/// use rustmq_protocol::batch::{RecordBatch, RecordBatchBuilder};
/// use rustmq_protocol::Compression;
///
/// let mut builder = RecordBatchBuilder::new().compression(Compression::Lz4, 1);
/// builder.push(1_700_000_000_000, Some(b"key"), Some(b"value"), [("h", &b"v"[..])]);
/// let batch = RecordBatch::parse(builder.build().unwrap()).unwrap();
/// let records = batch.decode_all(1 << 20).unwrap();
/// assert_eq!(records[0].value.as_deref(), Some(&b"value"[..]));
/// ```
#[derive(Debug, Clone)]
pub struct RecordBatchBuilder {
    records: BytesMut,
    count: u32,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    compression: Compression,
    level: i32,
}

impl Default for RecordBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordBatchBuilder {
    /// An empty, uncompressed, non-idempotent batch.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty batch with room for `bytes` of records.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            // The header is written in place at `build`, so an uncompressed batch is never
            // copied: the records follow room reserved for it.
            records: {
                let mut buf = BytesMut::with_capacity(BATCH_HEADER_LEN + bytes);
                buf.put_bytes(0, BATCH_HEADER_LEN);
                buf
            },
            count: 0,
            base_timestamp: None,
            max_timestamp: i64::MIN,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: 0,
            base_sequence: NO_SEQUENCE,
            compression: Compression::None,
            level: 0,
        }
    }

    /// Sets the codec and its level.
    pub fn compression(mut self, compression: Compression, level: i32) -> Self {
        self.compression = compression;
        self.level = level;
        self
    }

    /// Marks the batch as sent by an idempotent producer.
    pub fn producer(mut self, producer_id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Uncompressed size of the batch so far, header included.
    pub fn size(&self) -> usize {
        self.records.len()
    }

    /// Upper bound of the bytes one record adds to a batch.
    pub fn record_size_bound<'a>(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> usize {
        let mut n =
            1 + 10 + 5 + 10 + key.map_or(0, <[u8]>::len) + 10 + value.map_or(0, <[u8]>::len) + 5;
        for (k, v) in headers {
            n += 10 + k.len() + 10 + v.len();
        }
        n + 5
    }

    /// Appends one record.
    pub fn push<'a>(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])> + Clone,
    ) {
        let base = *self.base_timestamp.get_or_insert(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let ts_delta = timestamp.wrapping_sub(base);
        let offset_delta = u64::from(self.count);

        let field_len = |f: Option<&[u8]>| match f {
            None => varint_len(-1),
            Some(b) => varint_len(b.len() as i64) + b.len(),
        };
        let mut header_count = 0usize;
        let mut headers_len = 0usize;
        for (k, v) in headers.clone() {
            header_count += 1;
            headers_len +=
                uvarint_len(k.len() as u64) + k.len() + uvarint_len(v.len() as u64) + v.len();
        }
        let body_len = 1
            + varint_len(ts_delta)
            + uvarint_len(offset_delta)
            + field_len(key)
            + field_len(value)
            + uvarint_len(header_count as u64)
            + headers_len;

        let buf = &mut self.records;
        buf.reserve(body_len + 5);
        put_uvarint(buf, body_len as u64);
        buf.put_u8(0);
        put_varint(buf, ts_delta);
        put_uvarint(buf, offset_delta);
        for field in [key, value] {
            match field {
                None => put_varint(buf, -1),
                Some(b) => {
                    put_varint(buf, b.len() as i64);
                    buf.put_slice(b);
                }
            }
        }
        put_uvarint(buf, header_count as u64);
        for (k, v) in headers {
            put_uvarint(buf, k.len() as u64);
            buf.put_slice(k.as_bytes());
            put_uvarint(buf, v.len() as u64);
            buf.put_slice(v);
        }
        self.count += 1;
    }

    /// Encodes the batch with base offset 0. Compression is skipped when it would not make the
    /// batch smaller.
    pub fn build(self) -> Result<Bytes> {
        if self.count == 0 {
            return Err(ProtocolError::CorruptBatch("empty batch"));
        }
        let mut records = self.records;
        let mut codec = self.compression;
        let mut out = if codec == Compression::None {
            records
        } else {
            let mut compressed = Vec::new();
            codec.compress(&records[BATCH_HEADER_LEN..], self.level, &mut compressed)?;
            if compressed.len() >= records.len() - BATCH_HEADER_LEN {
                codec = Compression::None;
                records
            } else {
                records.truncate(BATCH_HEADER_LEN);
                records.extend_from_slice(&compressed);
                records
            }
        };
        let batch_length = u32::try_from(out.len() - LOG_OVERHEAD)
            .map_err(|_| ProtocolError::CorruptBatch("batch larger than 4 GiB"))?;
        {
            let mut header = &mut out[..BATCH_HEADER_LEN];
            header.put_u64(0);
            header.put_u32(batch_length);
            header.put_u8(MAGIC);
            header.put_u32(0);
            header.put_u16(codec.id());
            header.put_u32(self.count - 1);
            header.put_i64(self.base_timestamp.unwrap_or(0));
            header.put_i64(self.max_timestamp);
            header.put_i64(self.producer_id);
            header.put_i16(self.producer_epoch);
            header.put_i32(self.base_sequence);
            header.put_u32(self.count);
        }
        seal(&mut out);
        Ok(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(codec: Compression) -> Bytes {
        let mut b = RecordBatchBuilder::new().compression(codec, 3);
        for i in 0..100u32 {
            let value = format!("value-{i}-").repeat(10);
            b.push(
                1_000 + i64::from(i),
                Some(format!("k{i}").as_bytes()),
                Some(value.as_bytes()),
                [("n", &i.to_be_bytes()[..])],
            );
        }
        b.build().unwrap()
    }

    /// The codecs of this build.
    fn available() -> impl Iterator<Item = Compression> {
        Compression::ALL.into_iter().filter(|c| c.is_available())
    }

    #[test]
    fn every_codec_round_trips() {
        for codec in available() {
            let bytes = sample(codec);
            let batch = RecordBatch::parse(bytes).unwrap();
            assert_eq!(batch.header().compression(), codec);
            let records = batch.decode_all(1 << 20).unwrap();
            assert_eq!(records.len(), 100);
            assert_eq!(records[7].offset, 7);
            assert_eq!(records[7].timestamp, 1_007);
            assert_eq!(records[7].key.as_deref(), Some(&b"k7"[..]));
            assert_eq!(records[7].headers[0].value.as_ref(), &7u32.to_be_bytes());
            assert_eq!(batch.header().max_timestamp, 1_099);
        }
    }

    /// A produced batch must carry its records' largest timestamp as its `max_timestamp`,
    /// compressed or not; records out of time order are fine.
    #[test]
    fn a_produced_batch_must_carry_its_records_max_timestamp() {
        for codec in available() {
            let batch = RecordBatch::parse(sample(codec)).unwrap();
            batch.validate_produced(1 << 20).unwrap();
            for lie in [0, 1_098, 1_100, i64::MAX] {
                let mut bytes = sample(codec).to_vec();
                bytes[31..39].copy_from_slice(&lie.to_be_bytes());
                seal(&mut bytes);
                let batch = RecordBatch::parse(Bytes::from(bytes)).unwrap();
                batch.validate_records(1 << 20).unwrap();
                assert!(
                    matches!(
                        batch.validate_produced(1 << 20),
                        Err(ProtocolError::CorruptBatch(_))
                    ),
                    "{codec:?} {lie}"
                );
            }
        }
        let mut b = RecordBatchBuilder::new();
        for ts in [50, 10, 70, -5] {
            b.push(ts, None, Some(b"v"), []);
        }
        let batch = RecordBatch::parse(b.build().unwrap()).unwrap();
        assert_eq!(batch.header().max_timestamp, 70);
        batch.validate_produced(1 << 20).unwrap();
    }

    /// An iterator holds its whole records section, decompressed, however far it has gone.
    #[cfg(feature = "compression")]
    #[test]
    fn held_bytes_is_the_records_section_as_held() {
        let plain = RecordBatch::parse(sample(Compression::None)).unwrap();
        let mut iter = plain.records().unwrap();
        let section = plain.as_bytes().len() - BATCH_HEADER_LEN;
        assert_eq!(iter.held_bytes(), section);
        iter.skip_records(60).unwrap();
        assert_eq!(iter.held_bytes(), section);
        let packed = RecordBatch::parse(sample(Compression::Zstd)).unwrap();
        let iter = packed.records().unwrap();
        assert_eq!(iter.held_bytes(), section);
        assert!(packed.as_bytes().len() - BATCH_HEADER_LEN < section);
    }

    #[test]
    fn base_offset_rewrite_keeps_crc_valid() {
        let mut raw = BytesMut::from(&sample(Compression::None)[..]);
        set_base_offset(&mut raw, 42);
        let batch = RecordBatch::parse(raw.freeze()).unwrap();
        assert_eq!(batch.decode_all(1 << 20).unwrap()[0].offset, 42);
        assert_eq!(batch.header().last_offset(), 141);
    }

    /// A batch given another producer id, epoch and sequence keeps its records and a valid CRC,
    /// compressed or not.
    #[test]
    fn producer_rewrite_reseals_the_batch() {
        for codec in available() {
            let built = sample(codec);
            let mut raw = BytesMut::from(&built[..]);
            set_producer(&mut raw, 7, 3, 1_000);
            let batch = RecordBatch::parse(raw.freeze()).unwrap();
            let header = batch.header();
            assert_eq!(
                (
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence
                ),
                (7, 3, 1_000)
            );
            let before = RecordBatch::parse(built).unwrap();
            assert_eq!(
                batch.decode_all(1 << 20).unwrap(),
                before.decode_all(1 << 20).unwrap()
            );
        }
    }

    #[test]
    fn base_offset_that_overflows_is_rejected() {
        let mut raw = BytesMut::from(&sample(Compression::None)[..]);
        set_base_offset(&mut raw, u64::MAX - 99);
        assert!(matches!(
            RecordBatch::parse(raw.clone().freeze()),
            Err(ProtocolError::CorruptBatch(_))
        ));
        set_base_offset(&mut raw, u64::MAX - 100);
        let batch = RecordBatch::parse(raw.freeze()).unwrap();
        assert_eq!(batch.decode_all(1 << 20).unwrap()[99].offset, u64::MAX - 1);
    }

    #[cfg(feature = "compression")]
    #[test]
    fn flipped_bit_fails_crc() {
        let mut raw = BytesMut::from(&sample(Compression::Lz4)[..]);
        let at = raw.len() - 3;
        raw[at] ^= 0x10;
        assert!(matches!(
            RecordBatch::parse(raw.freeze()),
            Err(ProtocolError::CrcMismatch { .. })
        ));
    }

    #[cfg(feature = "compression")]
    #[test]
    fn batch_iter_splits_and_reports_truncation() {
        let a = sample(Compression::None);
        let b = sample(Compression::Zstd);
        let mut both = BytesMut::new();
        both.extend_from_slice(&a);
        both.extend_from_slice(&b);
        let n = BatchIter::new(both.clone().freeze())
            .filter(Result::is_ok)
            .count();
        assert_eq!(n, 2);
        both.truncate(both.len() - 1);
        let results: Vec<_> = BatchIter::new(both.freeze()).collect();
        assert!(results[0].is_ok() && results[1].is_err());
    }

    /// Ten plain records, the sixth (offset 5) corrupt: its offset delta is out of sequence,
    /// under a CRC recomputed to match, as a broken or hostile peer could send it.
    fn sixth_record_corrupt() -> RecordBatch {
        let mut b = RecordBatchBuilder::new();
        for i in 0..10 {
            b.push(1_000 + i, Some(b"k"), Some(b"v"), std::iter::empty());
        }
        let mut raw = b.build().unwrap().to_vec();
        let mut r = crate::codec::Reader::new(Bytes::copy_from_slice(&raw[BATCH_HEADER_LEN..]));
        for _ in 0..5 {
            let len = r.length().unwrap();
            r.slice(len).unwrap();
        }
        // Length, attributes and timestamp delta take a byte each; then the offset delta.
        let at = BATCH_HEADER_LEN + r.position() + 3;
        assert_eq!(raw[at], 5);
        raw[at] = 9;
        seal(&mut raw);
        RecordBatch::parse(Bytes::from(raw)).unwrap()
    }

    #[test]
    fn check_ahead_counts_the_good_records_before_a_corrupt_one_and_moves_nothing() {
        let iter = sixth_record_corrupt().records().unwrap();
        assert_eq!(iter.check_ahead(5), Ok(()));
        let (good, e) = iter.check_ahead(8).unwrap_err();
        assert_eq!(good, 5);
        assert!(matches!(e, ProtocolError::CorruptBatch(_)), "{e:?}");
        assert_eq!(iter.remaining(), 10, "checking ahead does not advance");
        let mut iter = iter;
        iter.skip_records(3).unwrap();
        assert_eq!(
            (iter.remaining(), iter.next().unwrap().unwrap().offset),
            (7, 3)
        );
        assert!(
            iter.skip_records(4).is_err(),
            "skipping checks what it skips"
        );
        assert!(
            iter.next().is_none(),
            "and stops the iteration on corrupt input"
        );
        if Compression::Lz4.is_available() {
            let plain = RecordBatch::parse(sample(Compression::Lz4)).unwrap();
            assert_eq!(plain.records().unwrap().check_ahead(u32::MAX), Ok(()));
        }
    }

    /// Records built from their spans are the records iterating builds, whatever their keys,
    /// values and headers; a corrupt record ends the spans with the count of good ones.
    #[test]
    fn records_built_from_their_spans_equal_the_parsed_ones() {
        let mut b = RecordBatchBuilder::new();
        for i in 0..40u32 {
            let key = format!("k{i}");
            let value = format!("v{i}").repeat(i as usize % 7);
            let headers: Vec<(String, Vec<u8>)> = (0..i % 3)
                .map(|h| (format!("h{h}"), vec![h as u8; h as usize]))
                .collect();
            b.push(
                -5 + i64::from(i) * 3,
                (i % 2 == 0).then_some(key.as_bytes()),
                (i % 5 != 0).then_some(value.as_bytes()),
                headers.iter().map(|(k, v)| (k.as_str(), &v[..])),
            );
        }
        let mut sources = vec![RecordBatch::parse(b.build().unwrap()).unwrap()];
        if Compression::Lz4.is_available() {
            sources.push(RecordBatch::parse(sample(Compression::Lz4)).unwrap());
        }
        for batch in sources {
            let parsed = batch.decode_all(1 << 20).unwrap();
            let mut iter = batch.records().unwrap();
            iter.skip_records(3).unwrap();
            let mut spans = Vec::new();
            iter.check_spans(u32::MAX, &mut spans).unwrap();
            assert_eq!(spans.len(), parsed.len() - 3);
            assert!(iter.next().is_none(), "checked past");
            for (i, span) in spans.iter().enumerate() {
                assert_eq!(
                    iter.record_at(3 + i as u32, span),
                    parsed[3 + i],
                    "record {i}"
                );
            }
        }
        let corrupt = sixth_record_corrupt();
        let mut iter = corrupt.records().unwrap();
        let mut spans = Vec::new();
        let (good, e) = iter.check_spans(8, &mut spans).unwrap_err();
        assert_eq!((good, spans.len()), (5, 5));
        let parsed: Vec<Record> = corrupt
            .records()
            .unwrap()
            .take(5)
            .map(Result::unwrap)
            .collect();
        for (i, span) in spans.iter().enumerate() {
            assert_eq!(iter.record_at(i as u32, span), parsed[i], "good record {i}");
        }
        assert!(matches!(e, ProtocolError::CorruptBatch(_)), "{e:?}");
        assert!(iter.next().is_none(), "stopped on corrupt input");
    }

    #[test]
    fn null_key_and_value() {
        let mut b = RecordBatchBuilder::new();
        b.push(5, None, None, std::iter::empty());
        let batch = RecordBatch::parse(b.build().unwrap()).unwrap();
        let r = &batch.decode_all(1024).unwrap()[0];
        assert_eq!((r.key.clone(), r.value.clone()), (None, None));
    }

    /// Without the feature a compressed batch can be neither built nor read: both are the
    /// typed error (what a consumer built without it meets on fetching one), never a panic.
    #[cfg(not(feature = "compression"))]
    #[test]
    fn compressed_batches_are_a_typed_error_without_the_feature() {
        let unavailable = |codec: Compression| ProtocolError::CompressionUnavailable {
            codec: codec.name(),
        };
        for codec in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
            let mut b = RecordBatchBuilder::new().compression(codec, 1);
            b.push(1, None, Some(&[7u8; 4096]), []);
            assert_eq!(b.build(), Err(unavailable(codec)));
            // A batch as a peer with the codec would send it: attributes name the codec.
            let mut raw = sample(Compression::None).to_vec();
            raw[17..19].copy_from_slice(&codec.id().to_be_bytes());
            seal(&mut raw);
            let batch = RecordBatch::parse(Bytes::from(raw)).unwrap();
            assert_eq!(batch.header().compression(), codec);
            assert_eq!(batch.records().err(), Some(unavailable(codec)));
            assert_eq!(batch.validate_produced(1 << 20), Err(unavailable(codec)));
            assert_eq!(batch.decode_all(1 << 20).err(), Some(unavailable(codec)));
        }
    }
}
