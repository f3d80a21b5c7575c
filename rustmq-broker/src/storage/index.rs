//! The sparse offset index and the time index of one segment.
//!
//! Both live in memory (a few hundred KiB for a full segment at the default interval) and are
//! written to their files when a segment is sealed and on close. Opening a log loads them from
//! the files for the sealed segments below its latest producer snapshot, and after a clean
//! close for the active one too, after checking them against the batches after their last
//! entry (the entries before it are trusted: the files are written whole, synced, and the
//! segment does not change after); the segments it walks for the producer table (or because
//! their files do not fit) get them rebuilt on the way, and files that are missing or differ
//! are rewritten. On disk, big-endian:
//!
//! ```text
//! .index      relative offset u32 | file position u32     (both strictly increasing)
//! .timeindex  timestamp i64       | relative offset u32   (both strictly increasing)
//! ```
//!
//! A time index entry `(t, r)` means: every batch up to and including the one at relative
//! offset `r` has `max_timestamp <= t`. Records are not ordered by time, so this running
//! maximum is what makes a binary search sound.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const OFFSET_ENTRY_LEN: usize = 8;
const TIME_ENTRY_LEN: usize = 12;

/// Maps relative offsets to file positions, one entry every `index_interval_bytes`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// Adds an entry; callers add them in offset and position order.
    pub(crate) fn push(&mut self, relative_offset: u32, position: u32) {
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|&(r, p)| r < relative_offset && p < position));
        self.entries.push((relative_offset, position));
    }

    /// Position of the last indexed batch starting at or before `relative_offset`; the segment
    /// start when none is.
    pub(crate) fn lookup(&self, relative_offset: u32) -> u64 {
        let n = self.entries.partition_point(|&(r, _)| r <= relative_offset);
        n.checked_sub(1).map_or(0, |i| u64::from(self.entries[i].1))
    }

    /// The last entry.
    pub(crate) fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    /// The index [`encode`](Self::encode) wrote, if `bytes` are one: whole entries, both
    /// fields strictly increasing, and positions below `segment_len`.
    pub(crate) fn decode(bytes: &[u8], segment_len: u64) -> Option<Self> {
        let entries = decode_entries(bytes, |e: &[u8; OFFSET_ENTRY_LEN]| {
            let field = |at: usize| u32::from_be_bytes(e[at..at + 4].try_into().expect("4 bytes"));
            (field(0), field(4))
        })?;
        let increasing = entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let inside = entries
            .last()
            .is_none_or(|&(_, p)| u64::from(p) < segment_len);
        (increasing && inside).then_some(Self { entries })
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_LEN);
        for &(r, p) in &self.entries {
            out.extend_from_slice(&r.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }
}

/// Maps running-maximum timestamps to relative offsets.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Adds an entry if `timestamp` is newer than the last one, which keeps the keys monotonic.
    pub(crate) fn push_if_newer(&mut self, timestamp: i64, relative_offset: u32) {
        if self.entries.last().is_none_or(|&(t, _)| timestamp > t) {
            debug_assert!(self
                .entries
                .last()
                .is_none_or(|&(_, r)| r < relative_offset));
            self.entries.push((timestamp, relative_offset));
        }
    }

    /// Relative offset of a batch from which a scan for the first record with a timestamp
    /// `>= timestamp` can start: the last entry whose running maximum is still below it.
    pub(crate) fn lookup(&self, timestamp: i64) -> Option<u32> {
        let n = self.entries.partition_point(|&(t, _)| t < timestamp);
        n.checked_sub(1).map(|i| self.entries[i].1)
    }

    /// The last entry.
    pub(crate) fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    /// Removes the last entry.
    pub(crate) fn pop(&mut self) {
        self.entries.pop();
    }

    /// The index [`encode_with_final`](Self::encode_with_final) wrote, if `bytes` are one:
    /// whole entries with both fields strictly increasing.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let entries = decode_entries(bytes, |e: &[u8; TIME_ENTRY_LEN]| {
            let t = i64::from_be_bytes(e[..8].try_into().expect("8 bytes"));
            (t, u32::from_be_bytes(e[8..].try_into().expect("4 bytes")))
        })?;
        let increasing = entries
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        increasing.then_some(Self { entries })
    }

    /// The encoded index with one more entry for the segment's final maximum, so a sealed
    /// segment's file always ends with its largest timestamp.
    pub(crate) fn encode_with_final(&self, last: Option<(i64, u32)>) -> Vec<u8> {
        let mut full = self.clone();
        if let Some((t, r)) = last {
            full.push_if_newer(t, r);
        }
        let mut out = Vec::with_capacity(full.entries.len() * TIME_ENTRY_LEN);
        for &(t, r) in &full.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&r.to_be_bytes());
        }
        out
    }
}

/// The entries of `N` bytes in `bytes`, each read by `read`; `None` unless they are whole.
fn decode_entries<const N: usize, T>(bytes: &[u8], read: impl Fn(&[u8; N]) -> T) -> Option<Vec<T>> {
    let (entries, rest) = bytes.as_chunks::<N>();
    rest.is_empty().then(|| entries.iter().map(read).collect())
}

/// Reads a whole index file; `Ok(None)` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `path` with `bytes` through a synced temporary file, so a crash leaves either the
/// old file or the new one (stray `.tmp` files are removed on open).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_the_floor_entry() {
        let mut index = OffsetIndex::default();
        index.push(10, 4000);
        index.push(20, 8200);
        assert_eq!(index.lookup(0), 0);
        assert_eq!(index.lookup(9), 0);
        assert_eq!(index.lookup(10), 4000);
        assert_eq!(index.lookup(19), 4000);
        assert_eq!(index.lookup(1000), 8200);
    }

    #[test]
    fn time_index_keeps_a_running_maximum() {
        let mut index = TimeIndex::default();
        index.push_if_newer(100, 0);
        index.push_if_newer(90, 5);
        index.push_if_newer(200, 9);
        assert_eq!(index.entries, vec![(100, 0), (200, 9)]);
        assert_eq!(
            index.lookup(100),
            None,
            "a record at 100 may sit in the first batch"
        );
        assert_eq!(index.lookup(101), Some(0));
        assert_eq!(index.lookup(i64::MAX), Some(9));
    }

    #[test]
    fn encodings_are_big_endian_and_time_index_gets_its_final_entry() {
        let mut offsets = OffsetIndex::default();
        offsets.push(3, 0x0102);
        assert_eq!(offsets.encode(), [0, 0, 0, 3, 0, 0, 1, 2]);
        let mut times = TimeIndex::default();
        times.push_if_newer(100, 0);
        let bytes = times.encode_with_final(Some((150, 7)));
        assert_eq!(bytes.len(), 2 * TIME_ENTRY_LEN);
        assert_eq!(&bytes[12..], [0, 0, 0, 0, 0, 0, 0, 150, 0, 0, 0, 7]);
        assert_eq!(times.encode_with_final(Some((50, 7))).len(), TIME_ENTRY_LEN);
        assert_eq!(times.encode_with_final(None).len(), TIME_ENTRY_LEN);
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two!").unwrap();
        assert_eq!(read_optional(&path).unwrap().as_deref(), Some(&b"two!"[..]));
        assert_eq!(read_optional(&dir.path().join("none")).unwrap(), None);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
