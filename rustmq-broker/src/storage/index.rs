//! The sparse offset index and the time index of one segment.
//!
//! The active segment's live in memory (a few hundred KiB for a full segment at the default
//! interval: 24 bytes per entry, 0.6% of the log) and are written to their files when the
//! segment is sealed and on close. A sealed segment's are paged ([`Paged`]): once its files
//! are written, or found whole at an open, only one entry in [`STRIDE`] stays in memory, and a
//! lookup reads the block of 64 entries that starts at the one it lands on from the file (one
//! `pread` of at most 768 bytes; the file is opened at the first lookup and kept open, up to
//! 1,024 files), as
//! Kafka maps its index files instead of holding them. A broker's memory then grows 64 times
//! slower with the data it keeps: 100 GiB of log with rising timestamps held ~600 MB of index
//! entries (24 bytes per 4 KiB); paged, ~10 MB. Opening a log loads them from
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
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use tracing::{debug, warn};

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

    /// Bytes held in memory.
    pub(crate) fn memory(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(u32, u32)>()
    }

    /// This index, paged: the file of `identity` holds these entries.
    pub(crate) fn paged(&self, identity: Option<FileIdentity>) -> Paged<(u32, u32)> {
        Paged::new(self.entries.iter().copied(), identity)
    }

    /// The index [`encode`](Self::encode) wrote, if `bytes` are one: whole entries, both
    /// fields strictly increasing, and positions below `segment_len`.
    pub(crate) fn decode(bytes: &[u8], segment_len: u64) -> Option<Self> {
        let entries: Vec<(u32, u32)> = decode_entries(bytes)?;
        let increasing = entries.windows(2).all(|w| w[0].precedes(w[1]));
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
        let entries: Vec<(i64, u32)> = decode_entries(bytes)?;
        let increasing = entries.windows(2).all(|w| w[0].precedes(w[1]));
        increasing.then_some(Self { entries })
    }

    /// The entry [`encode_with_final`](Self::encode_with_final) adds for the segment's final
    /// maximum, if it adds one.
    fn final_entry(&self, last: Option<(i64, u32)>) -> Option<(i64, u32)> {
        last.filter(|&(t, _)| self.entries.last().is_none_or(|&(newest, _)| t > newest))
    }

    /// Bytes held in memory.
    pub(crate) fn memory(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(i64, u32)>()
    }

    /// This index, paged: the file of `identity` holds these entries, and the final one for
    /// `last` (see [`encode_with_final`](Self::encode_with_final)).
    pub(crate) fn paged(
        &self,
        last: Option<(i64, u32)>,
        identity: Option<FileIdentity>,
    ) -> Paged<(i64, u32)> {
        let extra = self.final_entry(last);
        Paged::new(self.entries.iter().copied().chain(extra), identity)
    }

    /// The encoded index with one more entry for the segment's final maximum, so a sealed
    /// segment's file always ends with its largest timestamp.
    pub(crate) fn encode_with_final(&self, last: Option<(i64, u32)>) -> Vec<u8> {
        let extra = self.final_entry(last);
        let mut out = Vec::with_capacity((self.entries.len() + 1) * TIME_ENTRY_LEN);
        for (t, r) in self.entries.iter().copied().chain(extra) {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&r.to_be_bytes());
        }
        out
    }
}

/// One entry in this many of a paged index stays in memory.
pub(crate) const STRIDE: usize = 64;

/// An entry of an index file.
pub(crate) trait IndexEntry: Copy + Eq + std::fmt::Debug {
    /// Its size in the file.
    const LEN: usize;
    /// Reads one from the first `LEN` bytes.
    fn read(bytes: &[u8]) -> Self;
    /// Both fields strictly increase from `self` to `next` (the files' invariant).
    fn precedes(self, next: Self) -> bool;
}

impl IndexEntry for (u32, u32) {
    const LEN: usize = OFFSET_ENTRY_LEN;

    fn read(bytes: &[u8]) -> Self {
        let field = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        (field(0), field(4))
    }

    fn precedes(self, next: Self) -> bool {
        self.0 < next.0 && self.1 < next.1
    }
}

impl IndexEntry for (i64, u32) {
    const LEN: usize = TIME_ENTRY_LEN;

    fn read(bytes: &[u8]) -> Self {
        let t = i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        (
            t,
            u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")),
        )
    }

    fn precedes(self, next: Self) -> bool {
        self.0 < next.0 && self.1 < next.1
    }
}

/// The longest block a lookup reads.
const BLOCK_BYTES: usize = STRIDE * TIME_ENTRY_LEN;

/// Which file a paged index reads: the one it was paged to, known by its device, inode, length
/// and modification time, so that a file put at the same path later (a topic deleted and made
/// again, whose segments have the same names) is never read in its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileIdentity {
    pub(crate) fn of(meta: &fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }

    /// The identity of the file at `path` now; `None` if it cannot be read.
    #[cfg(test)]
    pub(crate) fn at(path: &Path) -> Option<Self> {
        fs::metadata(path).ok().map(|meta| Self::of(&meta))
    }
}

/// Index files kept open by the paged indexes of the process.
static KEPT_OPEN: AtomicUsize = AtomicUsize::new(0);

/// The most index files kept open ([`keep_open_at_most`]); `usize::MAX` until it is first
/// needed.
pub(crate) static KEEP_OPEN_AT_MOST: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Held for writing by the test that lowers [`KEEP_OPEN_AT_MOST`], for reading by tests that
/// count on index files being kept open: those never run while the bound is lowered.
#[cfg(test)]
pub(crate) static KEEP_OPEN_BOUND_LOCK: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The most index files kept open: 1,024, or an eighth of the process's open-file limit when
/// that is less (read at the first lookup, after the broker binaries raised it). Past it, a
/// lookup opens its file and closes it again (~3.5 us more here), so the broker's file
/// descriptors do not grow with every sealed segment a reader has used (its segment files are
/// open anyway). A file not read between two retention passes gives its slot back
/// ([`Paged::release_if_idle`]), as does a segment that goes.
fn keep_open_at_most() -> usize {
    let bound = KEEP_OPEN_AT_MOST.load(Ordering::Acquire);
    if bound != usize::MAX {
        return bound;
    }
    use nix::sys::resource::{getrlimit, Resource};
    let derived = getrlimit(Resource::RLIMIT_NOFILE)
        .map_or(128, |(soft, _)| {
            usize::try_from(soft / 8).unwrap_or(usize::MAX)
        })
        .min(1024);
    let _ = KEEP_OPEN_AT_MOST.compare_exchange(
        usize::MAX,
        derived,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    KEEP_OPEN_AT_MOST.load(Ordering::Acquire)
}

/// A sealed segment's index, held in its file: every [`STRIDE`]-th entry in memory (1/64 of
/// the entries), the rest read a block at a time from the file it was paged to (opened at the
/// first lookup, checked to be that file, and kept open: see [`keep_open_at_most`]). A block
/// that cannot be read (the file removed by retention or a topic's deletion before its first
/// lookup, an I/O error, a different file at the path) or that does not fit its neighbours in
/// memory (the file was damaged) is not used: the lookup answers the entry in memory it landed
/// on, which is at or before the one wanted, so the reader walks further in the segment and
/// still finds its batch.
#[derive(Debug)]
pub(crate) struct Paged<T> {
    /// Entries `0, STRIDE, 2 * STRIDE...` of the file.
    summary: Vec<T>,
    /// Entries in the file.
    len: usize,
    /// The file's identity when it was paged to; `None` if unknown (no block is read then).
    identity: Option<FileIdentity>,
    /// The file, while it is kept open.
    file: Mutex<Option<Arc<File>>>,
    /// A block was read since the last [`release_if_idle`](Self::release_if_idle).
    used: AtomicBool,
    /// A block that could not be used was reported (once per index).
    warned: AtomicBool,
    /// Blocks read and used, and lookups answered from the summary instead (tests).
    #[cfg(test)]
    pub(crate) counts: [std::sync::atomic::AtomicU64; 2],
}

impl<T: IndexEntry> Paged<T> {
    fn new(entries: impl Iterator<Item = T>, identity: Option<FileIdentity>) -> Self {
        let mut summary = Vec::new();
        let mut len = 0;
        for (i, entry) in entries.enumerate() {
            if i % STRIDE == 0 {
                summary.push(entry);
            }
            len += 1;
        }
        summary.shrink_to_fit();
        Self {
            summary,
            len,
            // A file of another length than the entries' is not theirs.
            identity: identity.filter(|id| id.len == (len * T::LEN) as u64),
            file: Mutex::new(None),
            used: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            #[cfg(test)]
            counts: Default::default(),
        }
    }

    /// Bytes held in memory.
    pub(crate) fn memory(&self) -> usize {
        self.summary.capacity() * std::mem::size_of::<T>()
    }

    /// The summary and the number of entries (tests compare opens with them).
    #[cfg(test)]
    pub(crate) fn shape(&self) -> (Vec<T>, usize) {
        (self.summary.clone(), self.len)
    }

    /// Reads `block` at `at` from the file: the one kept open, or opened at `path` (and checked
    /// to be the one paged to), then kept open if [`KEEP_OPEN_AT_MOST`] allows.
    fn read_block(
        &self,
        path: impl FnOnce() -> PathBuf,
        block: &mut [u8],
        at: u64,
    ) -> io::Result<()> {
        self.used.store(true, Ordering::Relaxed);
        let kept = self.file.lock().clone();
        if let Some(file) = kept {
            return file.read_exact_at(block, at);
        }
        let identity = self
            .identity
            .ok_or_else(|| io::Error::other("the index file was unknown when it was paged"))?;
        let file = File::open(path())?;
        if FileIdentity::of(&file.metadata()?) != identity {
            return Err(io::Error::other("another file is at the index file's path"));
        }
        file.read_exact_at(block, at)?;
        if KEPT_OPEN.fetch_add(1, Ordering::AcqRel) < keep_open_at_most() {
            let mut kept = self.file.lock();
            if kept.is_none() {
                *kept = Some(Arc::new(file));
            } else {
                // Another lookup kept it first.
                KEPT_OPEN.fetch_sub(1, Ordering::AcqRel);
            }
        } else {
            KEPT_OPEN.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Closes the file kept open if no block was read since the last call; true if it did. A
    /// lookup still reading it holds it until it is done.
    pub(crate) fn release_if_idle(&self) -> bool {
        if self.used.swap(false, Ordering::Relaxed) {
            return false;
        }
        let released = self.file.lock().take().is_some();
        if released {
            KEPT_OPEN.fetch_sub(1, Ordering::AcqRel);
        }
        released
    }

    /// Whether the file is kept open (tests).
    #[cfg(test)]
    pub(crate) fn is_kept_open(&self) -> bool {
        self.file.lock().is_some()
    }

    /// The last entry of the file for which `below` holds (it holds for a prefix of the
    /// entries); `None` if it holds for none. The file is opened at `path` the first time;
    /// `valid` checks each entry of a block read (a position inside the segment, say).
    pub(crate) fn floor(
        &self,
        path: impl FnOnce() -> PathBuf,
        below: impl Fn(&T) -> bool,
        valid: impl Fn(&T) -> bool,
    ) -> Option<T> {
        let k = self.summary.partition_point(&below).checked_sub(1)?;
        let anchor = self.summary[k];
        let count = STRIDE.min(self.len - k * STRIDE);
        if count == 1 {
            return Some(anchor);
        }
        let mut buf = [0u8; BLOCK_BYTES];
        let block = &mut buf[..count * T::LEN];
        let read = self.read_block(path, block, (k * STRIDE * T::LEN) as u64);
        let entry = |i: usize| T::read(&block[i * T::LEN..]);
        let unusable = match read {
            Err(err) => Some(err.to_string()),
            Ok(()) => {
                let next = self.summary.get(k + 1).copied();
                let fits = entry(0) == anchor
                    && (1..count).all(|i| entry(i - 1).precedes(entry(i)) && valid(&entry(i)))
                    && next.is_none_or(|next| entry(count - 1).precedes(next));
                (!fits).then(|| "a block does not fit the entries in memory".to_owned())
            }
        };
        if let Some(reason) = unusable {
            #[cfg(test)]
            self.counts[1].fetch_add(1, Ordering::Relaxed);
            if self.identity.is_some() && !self.warned.swap(true, Ordering::Relaxed) {
                warn!(
                    %reason,
                    "a sealed segment's index block cannot be used; its lookups walk further in the segment"
                );
            } else {
                debug!(%reason, "index block not used");
            }
            return Some(anchor);
        }
        #[cfg(test)]
        self.counts[0].fetch_add(1, Ordering::Relaxed);
        // `below` holds for the block's first entry, the anchor.
        let (mut lo, mut hi) = (1, count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if below(&entry(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Some(entry(lo - 1))
    }
}

impl<T> Drop for Paged<T> {
    fn drop(&mut self) {
        if self.file.get_mut().is_some() {
            KEPT_OPEN.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Reads a whole index file with the identity of what was read; `Ok(None)` when it does not
/// exist.
pub(crate) fn read_with_identity(path: &Path) -> io::Result<Option<(Vec<u8>, FileIdentity)>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let identity = FileIdentity::of(&file.metadata()?);
    let mut bytes = Vec::with_capacity(usize::try_from(identity.len).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok(Some((bytes, identity)))
}

/// The entries in `bytes`; `None` unless they are whole.
fn decode_entries<T: IndexEntry>(bytes: &[u8]) -> Option<Vec<T>> {
    (bytes.len().is_multiple_of(T::LEN)).then(|| bytes.chunks_exact(T::LEN).map(T::read).collect())
}

/// Reads a whole index file; `Ok(None)` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    Ok(read_with_identity(path)?.map(|(bytes, _)| bytes))
}

/// Replaces `path` with `bytes` through a synced temporary file, so a crash leaves either the
/// old file or the new one (stray `.tmp` files are removed on open).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_identified(path, bytes).map(drop)
}

/// [`write_atomic`], answering the identity of the file written (taken before its rename, so
/// it is that file's whatever comes to the path after).
pub(crate) fn write_atomic_identified(path: &Path, bytes: &[u8]) -> io::Result<FileIdentity> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    let identity = FileIdentity::of(&file.metadata()?);
    fs::rename(&tmp, path)?;
    Ok(identity)
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

    /// A paged index answers every lookup as the whole index does, from blocks of its file,
    /// whatever the number of entries around the block size.
    #[test]
    fn paged_lookups_answer_as_the_whole_index() {
        let dir = tempfile::tempdir().unwrap();
        for len in [1u32, 2, 63, 64, 65, 128, 129, 200] {
            let mut offsets = OffsetIndex::default();
            let mut times = TimeIndex::default();
            for i in 0..len {
                offsets.push(3 * i + 1, 100 * i + 5);
                times.push_if_newer(10 * i64::from(i), 2 * i);
            }
            let offsets_path = dir.path().join(format!("{len}.index"));
            let times_path = dir.path().join(format!("{len}.timeindex"));
            write_atomic(&offsets_path, &offsets.encode()).unwrap();
            write_atomic(&times_path, &times.encode_with_final(None)).unwrap();
            let paged_offsets = offsets.paged(FileIdentity::at(&offsets_path));
            let paged_times = times.paged(None, FileIdentity::at(&times_path));
            for relative in 0..=3 * len + 2 {
                let paged = paged_offsets
                    .floor(|| offsets_path.clone(), |&(r, _)| r <= relative, |_| true)
                    .map_or(0, |(_, p)| u64::from(p));
                assert_eq!(paged, offsets.lookup(relative), "{len} entries, {relative}");
            }
            for ts in -1..=10 * i64::from(len) + 1 {
                let paged = paged_times
                    .floor(|| times_path.clone(), |&(t, _)| t < ts, |_| true)
                    .map(|(_, r)| r);
                assert_eq!(paged, times.lookup(ts), "{len} entries, {ts}");
            }
            for paged in [&paged_offsets.counts, &paged_times.counts] {
                assert_eq!(paged[1].load(Ordering::Relaxed), 0, "no fallback");
                assert_eq!(paged[0].load(Ordering::Relaxed) > 0, len > 1, "{len}");
            }
        }
    }

    /// Past [`KEEP_OPEN_AT_MOST`] index files kept open, a lookup opens its file for itself and
    /// closes it again, and still answers from its block.
    #[test]
    fn index_files_kept_open_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut offsets = OffsetIndex::default();
        for i in 0..100 {
            offsets.push(i + 1, 10 * i + 10);
        }
        let path = dir.path().join("x.index");
        write_atomic(&path, &offsets.encode()).unwrap();
        let paged: Vec<_> = (0..5)
            .map(|_| offsets.paged(FileIdentity::at(&path)))
            .collect();
        let lookup = |p: &Paged<(u32, u32)>| {
            p.floor(|| path.clone(), |&(r, _)| r <= 70, |_| true)
                .map(|(_, position)| position)
        };
        /// Puts the bound back, whatever happens to the test.
        struct Restore(usize);
        impl Drop for Restore {
            fn drop(&mut self) {
                KEEP_OPEN_AT_MOST.store(self.0, Ordering::Release);
            }
        }
        let _bound = KEEP_OPEN_BOUND_LOCK
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let restore = Restore(KEEP_OPEN_AT_MOST.swap(0, Ordering::AcqRel));
        for p in &paged[..3] {
            assert_eq!(lookup(p), Some(700));
            assert_eq!(lookup(p), Some(700));
            assert!(!p.is_kept_open(), "not kept past the bound");
        }
        drop(restore);
        assert!(keep_open_at_most() > 5, "{}", keep_open_at_most());
        for p in &paged {
            assert_eq!(lookup(p), Some(700));
        }
        assert!(paged.iter().all(|p| p.is_kept_open()), "kept");
        // Not read since: the next call closes it; read again, it is opened and kept again.
        assert!(!paged[0].release_if_idle(), "read since the last call");
        assert!(paged[0].release_if_idle(), "idle since the last call");
        assert!(!paged[0].is_kept_open());
        assert!(!paged[0].release_if_idle(), "nothing to release");
        assert_eq!(lookup(&paged[0]), Some(700));
        assert!(paged[0].is_kept_open());
        assert!(paged
            .iter()
            .all(|p| p.counts[0].load(Ordering::Relaxed) > 0
                && p.counts[1].load(Ordering::Relaxed) == 0));
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
