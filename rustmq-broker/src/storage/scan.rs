//! Walking the batches of a segment file: the recovery scan and header-by-header lookups.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rustmq_protocol::batch::{self, BATCH_HEADER_LEN};
use rustmq_protocol::{BatchHeader, ProtocolError};

use super::segment::SegmentMeta;
use super::StorageError;

/// Read-ahead when verifying a whole segment on open.
const RECOVERY_CHUNK: usize = 1 << 20;
/// Read-ahead when walking headers only: enough for several small batches per syscall without
/// reading much of the large ones.
pub(super) const HEADER_CHUNK: usize = 16 << 10;

/// Scans a segment file from the start, feeding every valid batch to `on_batch` and to fresh
/// metadata. Stops at the first batch that is incomplete, invalid or out of sequence and says
/// why; `meta.size` is then where the valid data ends.
pub(super) fn scan(
    file: &File,
    len: u64,
    base_offset: u64,
    index_interval: u32,
    verify_crc: bool,
    on_batch: &mut dyn FnMut(&BatchHeader),
) -> Result<(SegmentMeta, Option<String>), StorageError> {
    let mut meta = SegmentMeta::new(base_offset, index_interval);
    let chunk = if verify_crc {
        RECOVERY_CHUNK
    } else {
        HEADER_CHUNK
    };
    let mut walker = Walker::new(file, 0, len, verify_crc, chunk);
    loop {
        let (position, header) = match walker.next_batch() {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok((meta, None)),
            Err(StorageError::CorruptBatch(err)) => return Ok((meta, Some(err.to_string()))),
            Err(err) => return Err(err),
        };
        let expected = meta.next_offset;
        if header.base_offset != expected {
            let reason = format!(
                "base offset {} where {expected} was expected",
                header.base_offset
            );
            return Ok((meta, Some(reason)));
        }
        let last_relative = expected - base_offset + u64::from(header.last_offset_delta);
        let (Ok(relative), true) = (
            u32::try_from(expected - base_offset),
            last_relative <= u64::from(u32::MAX),
        ) else {
            return Ok((meta, Some("relative offset overflow".to_owned())));
        };
        on_batch(&header);
        let next = expected + u64::from(header.record_count);
        let size = header.total_len() as u64;
        meta.on_batch(relative, position, size, header.max_timestamp, next);
    }
}

/// Walks batch headers through a read-ahead window, so a scan costs one syscall per chunk
/// rather than one per batch.
pub(super) struct Walker<'a> {
    file: &'a File,
    window: Vec<u8>,
    window_start: u64,
    chunk: usize,
    position: u64,
    end: u64,
    verify_crc: bool,
}

impl<'a> Walker<'a> {
    pub(super) fn new(
        file: &'a File,
        position: u64,
        end: u64,
        verify_crc: bool,
        chunk: usize,
    ) -> Self {
        Self {
            file,
            window: Vec::new(),
            window_start: 0,
            chunk,
            position,
            end,
            verify_crc,
        }
    }

    /// `len` bytes at `at`, which the caller has checked lie before `end`.
    fn bytes(&mut self, at: u64, len: usize) -> io::Result<&[u8]> {
        let window_end = self.window_start + self.window.len() as u64;
        if at < self.window_start || at + len as u64 > window_end {
            let n = (len.max(self.chunk) as u64).min(self.end - at) as usize;
            self.window.resize(n, 0);
            self.file.read_exact_at(&mut self.window, at)?;
            self.window_start = at;
        }
        let from = (at - self.window_start) as usize;
        Ok(&self.window[from..from + len])
    }

    /// The next batch's position and header; `CorruptBatch` if the bytes at the current
    /// position are not a complete, valid batch.
    pub(super) fn next_batch(&mut self) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let position = self.position;
        let remaining = self.end.saturating_sub(position);
        if remaining == 0 {
            return Ok(None);
        }
        let truncated = |needed: usize| {
            StorageError::CorruptBatch(ProtocolError::Truncated {
                needed,
                remaining: remaining as usize,
            })
        };
        if remaining < BATCH_HEADER_LEN as u64 {
            return Err(truncated(BATCH_HEADER_LEN));
        }
        let header = BatchHeader::parse(self.bytes(position, BATCH_HEADER_LEN)?)?;
        let len = header.total_len();
        if len as u64 > remaining {
            return Err(truncated(len));
        }
        if self.verify_crc {
            batch::verify_crc(self.bytes(position, len)?)?;
        }
        self.position = position + len as u64;
        Ok(Some((position, header)))
    }
}
