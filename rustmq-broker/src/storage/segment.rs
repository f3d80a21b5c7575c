//! One segment: a `.log` file of batches back to back, with its indexes.
//!
//! Only the partition's append path writes to a segment (under the log's append lock); readers
//! take a short read lock on the in-memory metadata to learn the committed size and an index
//! position, then read the file with `pread` without holding any lock. A sealed segment's
//! indexes are paged (see `index.rs`): a lookup there reads a block of an index file, also
//! outside the lock.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use rustmq_protocol::batch::{batch_size_at, set_base_offset, BATCH_HEADER_LEN, LOG_OVERHEAD};
use rustmq_protocol::{BatchHeader, ProtocolError, RecordBatch};
use tracing::warn;

use super::index::{
    read_with_identity, write_atomic_identified, FileIdentity, OffsetIndex, Paged, TimeIndex,
};
use super::scan::{scan, Walker, HEADER_CHUNK};
use super::snapshot::SNAPSHOT_EXT;
use super::StorageError;

/// Batches up to this size are copied to set their base offset and written with one call;
/// larger ones are written as offset + rest, without a copy.
pub(crate) const COPY_TO_PATCH_MAX: usize = 16 * 1024;

pub(crate) const LOG_EXT: &str = "log";
const INDEX_EXT: &str = "index";
const TIME_INDEX_EXT: &str = "timeindex";

/// `dir/{base:020}.{ext}`.
pub(crate) fn segment_path(dir: &Path, base_offset: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// Base offsets of the segments in `dir`, oldest first. Removes temporaries left by a crash
/// while an index was being written.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            fs::remove_file(entry.path())?;
            continue;
        }
        let Some(stem) = name.strip_suffix(".log") else {
            continue;
        };
        match stem.parse::<u64>() {
            // Offsets are i64 on the wire; a larger base could only come from a foreign file and
            // would overflow offset arithmetic.
            Ok(base) if stem.len() == 20 && base <= i64::MAX as u64 => bases.push(base),
            _ => warn!(file = name, "ignoring a file that is not a segment"),
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// fsyncs a directory so that created, renamed and removed entries survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    if FAIL_SYNC_DIR.with(|left| left.replace(left.get().saturating_sub(1))) > 0 {
        return Err(io::Error::other("injected directory sync failure"));
    }
    File::open(dir)?.sync_all()
}

#[cfg(test)]
thread_local! {
    /// Fault injection for tests: how many of this thread's next [`sync_dir`] calls fail (a
    /// failure that cannot be provoked otherwise without exhausting the process's files).
    pub(crate) static FAIL_SYNC_DIR: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Unlinks the files of the segment at `base_offset` and the producer snapshot taken at its
/// base, indexes and snapshot first so a crash never leaves them without their log; files
/// already gone are fine.
pub(crate) fn remove_segment_files(dir: &Path, base_offset: u64) -> io::Result<()> {
    for ext in [SNAPSHOT_EXT, INDEX_EXT, TIME_INDEX_EXT, LOG_EXT] {
        match fs::remove_file(segment_path(dir, base_offset, ext)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// What is known about a segment's contents; changes only while it is the active segment (and
/// once after, when its indexes are paged out).
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    /// Bytes of complete, committed batches.
    pub(crate) size: u64,
    /// The offset after the last batch.
    pub(crate) next_offset: u64,
    /// Largest batch `max_timestamp`, `i64::MIN` while empty.
    pub(crate) max_timestamp: i64,
    /// The broker's clock (ms since the Unix epoch) when the first batch was appended, which
    /// the time-based roll goes by; for the active segment of a reopened log an estimate (see
    /// `PartitionLog::open`), `i64::MAX` when unknown (never rolled by time).
    first_append_ms: i64,
    indexes: Indexes,
    bytes_since_index: u64,
    index_interval: u64,
    recent: RecentBatches,
}

/// A segment's offset and time indexes: whole in memory while the segment is written, paged
/// once it is sealed and its index files hold them (see `index.rs`).
#[derive(Debug, Clone)]
enum Indexes {
    Full {
        offsets: OffsetIndex,
        times: TimeIndex,
    },
    Paged(Arc<PagedIndexes>),
}

/// A sealed segment's indexes, in their files.
#[derive(Debug)]
pub(crate) struct PagedIndexes {
    offsets: Paged<(u32, u32)>,
    times: Paged<(i64, u32)>,
    /// The segment's size: no position the offset index gives lies at or past it.
    size: u64,
    /// The time index's last entry (the segment's largest timestamp and its last batch): no
    /// entry lies past it in either field.
    last_time: Option<(i64, u32)>,
}

/// The summaries and lengths of a segment's paged indexes (tests).
#[cfg(test)]
pub(crate) type PagedShape = ((Vec<(u32, u32)>, usize), (Vec<(i64, u32)>, usize));

impl PagedIndexes {
    /// The last entry of the offset index at or before `relative`: its position, or the
    /// segment's start when none is (see [`OffsetIndex::lookup`]).
    fn offset_floor(&self, path: impl FnOnce() -> PathBuf, relative: u32) -> u64 {
        self.offsets
            .floor(
                path,
                |&(r, _)| r <= relative,
                |&(_, position)| u64::from(position) < self.size,
            )
            .map_or(0, |(_, position)| u64::from(position))
    }

    /// The relative offset of the last time index entry below `timestamp` (see
    /// [`TimeIndex::lookup`]).
    fn time_floor(&self, path: impl FnOnce() -> PathBuf, timestamp: i64) -> Option<u32> {
        self.times
            .floor(
                path,
                |&(t, _)| t < timestamp,
                |&(t, relative)| {
                    self.last_time
                        .is_some_and(|(lt, lr)| t <= lt && relative <= lr)
                },
            )
            .map(|(_, relative)| relative)
    }
}

/// How many of the latest batches [`RecentBatches`] keeps.
const RECENT_BATCHES: usize = 8;

/// Where the latest batches of a segment start (the latest one's offset also ends the time
/// index written for the segment). A consumer that keeps up fetches what was
/// appended since its last fetch: one of these. Found here, its position needs no walk from
/// the sparse offset index, which reads and parses the headers of the batches in between
/// (a `pread` of up to 16 KiB and ~4,600 instructions per fetch at the tail).
#[derive(Debug, Clone, Default)]
struct RecentBatches {
    /// `(relative base offset, position)` of consecutive batches, a ring; `next` is where the
    /// next one goes and `len` how many are set.
    entries: [(u32, u64); RECENT_BATCHES],
    next: usize,
    len: usize,
}

impl RecentBatches {
    /// Notes the batch just appended (every one is noted, in order).
    fn push(&mut self, relative: u32, position: u64) {
        self.entries[self.next] = (relative, position);
        self.next = (self.next + 1) % RECENT_BATCHES;
        self.len = (self.len + 1).min(RECENT_BATCHES);
    }

    /// The relative base offset of the latest batch, if any.
    fn newest(&self) -> Option<u32> {
        (self.len > 0).then(|| self.entries[(self.next + RECENT_BATCHES - 1) % RECENT_BATCHES].0)
    }

    /// Where the batch holding `relative` starts, if it is one of the batches kept; the caller
    /// has checked that `relative` is below the segment's next offset.
    fn position_of(&self, relative: u32) -> Option<u64> {
        // Newest first: the first batch starting at or before `relative` holds it, since the
        // batch after it (if any) starts after `relative`.
        (1..=self.len)
            .map(|back| self.entries[(self.next + RECENT_BATCHES - back) % RECENT_BATCHES])
            .find(|&(base, _)| base <= relative)
            .map(|(_, position)| position)
    }
}

impl SegmentMeta {
    pub(super) fn new(base_offset: u64, index_interval: u32) -> Self {
        Self {
            size: 0,
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            first_append_ms: i64::MAX,
            indexes: Indexes::Full {
                offsets: OffsetIndex::default(),
                times: TimeIndex::default(),
            },
            bytes_since_index: 0,
            index_interval: u64::from(index_interval),
            recent: RecentBatches::default(),
        }
    }

    /// Accounts for a batch written at `position`. The same function runs on append and on the
    /// recovery scan, so rebuilt indexes equal the ones that were written.
    pub(super) fn on_batch(
        &mut self,
        relative: u32,
        position: u64,
        len: u64,
        max_ts: i64,
        next_offset: u64,
    ) {
        self.max_timestamp = self.max_timestamp.max(max_ts);
        if self.bytes_since_index >= self.index_interval {
            // Start positions fit: a segment rolls before it passes u32::MAX bytes.
            debug_assert!(
                matches!(self.indexes, Indexes::Full { .. }),
                "a paged segment is sealed"
            );
            if let (Ok(position), Indexes::Full { offsets, times }) =
                (u32::try_from(position), &mut self.indexes)
            {
                offsets.push(relative, position);
                times.push_if_newer(self.max_timestamp, relative);
                self.bytes_since_index = 0;
            }
        }
        self.bytes_since_index += len;
        self.size = position + len;
        self.next_offset = next_offset;
        self.recent.push(relative, position);
    }

    /// The time index file's final entry: the segment's largest timestamp at its latest batch.
    fn final_time_entry(&self) -> Option<(i64, u32)> {
        self.recent.newest().map(|r| (self.max_timestamp, r))
    }

    /// The index files' contents; `None` once paged (the files hold them).
    pub(super) fn encoded_indexes(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let Indexes::Full { offsets, times } = &self.indexes else {
            return None;
        };
        Some((
            offsets.encode(),
            times.encode_with_final(self.final_time_entry()),
        ))
    }

    /// Pages the indexes out, to the files of these identities, which hold what
    /// [`encoded_indexes`](Self::encoded_indexes) gives.
    fn page_out(&mut self, offsets_id: Option<FileIdentity>, times_id: Option<FileIdentity>) {
        if let Indexes::Full { offsets, times } = &self.indexes {
            self.indexes = Indexes::Paged(Arc::new(PagedIndexes {
                offsets: offsets.paged(offsets_id),
                times: times.paged(self.final_time_entry(), times_id),
                size: self.size,
                last_time: self.final_time_entry(),
            }));
        }
    }

    /// Bytes of index entries held in memory.
    pub(crate) fn index_memory(&self) -> usize {
        match &self.indexes {
            Indexes::Full { offsets, times } => offsets.memory() + times.memory(),
            Indexes::Paged(paged) => paged.offsets.memory() + paged.times.memory(),
        }
    }

    /// The position of the last indexed batch at or before `relative` (see
    /// [`OffsetIndex::lookup`]) while the indexes are whole; else the paged indexes, to read
    /// outside the metadata lock.
    fn offset_position(&self, relative: u32) -> Result<u64, Arc<PagedIndexes>> {
        match &self.indexes {
            Indexes::Full { offsets, .. } => Ok(offsets.lookup(relative)),
            Indexes::Paged(paged) => Err(Arc::clone(paged)),
        }
    }

    /// Where a scan for the first record at or after `timestamp` can start (the time index's
    /// entry, then the offset index's), as [`offset_position`](Self::offset_position).
    fn time_position(&self, timestamp: i64) -> Result<u64, Arc<PagedIndexes>> {
        match &self.indexes {
            Indexes::Full { offsets, times } => {
                Ok(times.lookup(timestamp).map_or(0, |r| offsets.lookup(r)))
            }
            Indexes::Paged(paged) => Err(Arc::clone(paged)),
        }
    }
}

/// One segment of a partition log.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of the first batch (and the file name).
    pub(crate) base_offset: u64,
    /// Shared so that syncs and reads outlive a concurrent roll or deletion (unlinking an open
    /// file is fine on unix).
    pub(crate) file: Arc<File>,
    dir: PathBuf,
    meta: RwLock<SegmentMeta>,
    /// Sealed: no longer the active segment, its data synced (so group commit need not sync it
    /// again), its index files and the snapshot at its end written as far as they could be (so
    /// retention may delete it). Off for the active segment, and for a rolled one until its
    /// seal (`super::seal`) is done.
    sealed: AtomicBool,
}

impl Segment {
    /// Creates an empty segment, replacing a leftover file of a roll that failed half-way.
    pub(crate) fn create(dir: &Path, base_offset: u64, index_interval: u32) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(segment_path(dir, base_offset, LOG_EXT))?;
        Ok(Self::new(
            dir,
            base_offset,
            file,
            SegmentMeta::new(base_offset, index_interval),
        ))
    }

    fn new(dir: &Path, base_offset: u64, file: File, meta: SegmentMeta) -> Self {
        Self {
            base_offset,
            file: Arc::new(file),
            dir: dir.to_path_buf(),
            meta: RwLock::new(meta),
            sealed: AtomicBool::new(false),
        }
    }

    /// Whether the segment is sealed (see the field).
    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// Marks the segment sealed, once its data is on disk.
    pub(crate) fn mark_sealed(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    /// Opens a segment that may hold unsynced data (the last one, or a rolled one whose seal
    /// had not run): verifies every batch and truncates the file at the first one that is
    /// incomplete, corrupt or out of sequence (a write torn by a crash).
    pub(crate) fn recover(
        dir: &Path,
        base_offset: u64,
        index_interval: u32,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> Result<Self, StorageError> {
        let path = segment_path(dir, base_offset, LOG_EXT);
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let len = file.metadata()?.len();
        let (meta, stopped) = scan(&file, len, base_offset, index_interval, true, on_batch)?;
        if let Some(reason) = stopped {
            warn!(
                segment = %path.display(),
                valid_bytes = meta.size,
                truncated_bytes = len - meta.size,
                %reason,
                "truncating the torn tail of a segment"
            );
            file.set_len(meta.size)?;
        }
        Ok(Self::new(dir, base_offset, file, meta))
    }

    /// Opens a sealed segment by walking its batch headers (fed to `on_batch`, for the
    /// producer table). Its batches were synced by the seal after its roll, so only headers are
    /// read;
    /// the indexes fall out of the same scan, and index files that are missing or differ are
    /// rewritten. See also [`open_indexed`](Self::open_indexed), which reads only the last
    /// batches.
    pub(crate) fn open_sealed(
        dir: &Path,
        base_offset: u64,
        index_interval: u32,
        on_batch: &mut dyn FnMut(&BatchHeader),
    ) -> Result<Self, StorageError> {
        let path = segment_path(dir, base_offset, LOG_EXT);
        let file = File::open(&path)?;
        let len = file.metadata()?.len();
        let (meta, stopped) = scan(&file, len, base_offset, index_interval, false, on_batch)?;
        if let Some(reason) = stopped {
            // Later segments exist, so truncating would not make the log contiguous again;
            // serve what precedes the damage and let readers skip the gap.
            warn!(
                segment = %path.display(),
                valid_bytes = meta.size,
                ignored_bytes = len - meta.size,
                %reason,
                "sealed segment is damaged; ignoring its tail"
            );
        }
        let segment = Self::new(dir, base_offset, file, meta);
        let (offsets, times) = segment
            .meta
            .read()
            .encoded_indexes()
            .expect("a scanned segment's indexes are in memory");
        let on_disk = (
            read_with_identity(&segment.path(INDEX_EXT))?,
            read_with_identity(&segment.path(TIME_INDEX_EXT))?,
        );
        let fresh = match on_disk {
            (Some((o, offsets_id)), Some((t, times_id))) if o == offsets && t == times => {
                Some((offsets_id, times_id))
            }
            _ => None,
        };
        if let Some((offsets_id, times_id)) = fresh {
            segment
                .meta
                .write()
                .page_out(Some(offsets_id), Some(times_id));
        } else {
            warn!(segment = %path.display(), "index files missing or stale; rewriting them");
            if let Err(err) = segment.write_and_page_indexes() {
                warn!(segment = %path.display(), %err, "could not rewrite index files");
            }
        }
        Ok(segment)
    }

    /// Opens a segment from its index files without scanning it: only the batches after the
    /// last offset index entry are read (at most about `index_interval` bytes and one batch,
    /// and checked whole, CRC included), to find its end and its latest batches, and to check
    /// that the files end as this segment does (no index entry missing there, the largest
    /// timestamp no lower than theirs); the entries before are trusted. `None` when the files
    /// are missing or do not fit (the caller then scans it). Used for the sealed segments below
    /// the latest producer snapshot, where the open needs no batch header, and for the active
    /// one (`writable`) after a clean close. The indexes, size, end and largest timestamp are
    /// what a scan would have built, so appends to the active segment go on as before the
    /// close; the ring of latest batches holds only the batches walked, and when the first
    /// batch was appended is left unknown (the caller sets it).
    pub(crate) fn open_indexed(
        dir: &Path,
        base_offset: u64,
        index_interval: u32,
        writable: bool,
    ) -> Result<Option<Self>, StorageError> {
        let path = segment_path(dir, base_offset, LOG_EXT);
        let file = OpenOptions::new().read(true).write(writable).open(&path)?;
        let len = file.metadata()?.len();
        let (Some((offsets, offsets_id)), Some((times, times_id))) = (
            read_with_identity(&segment_path(dir, base_offset, INDEX_EXT))?,
            read_with_identity(&segment_path(dir, base_offset, TIME_INDEX_EXT))?,
        ) else {
            return Ok(None);
        };
        let (Some(offset_index), Some(mut time_index)) = (
            OffsetIndex::decode(&offsets, len),
            TimeIndex::decode(&times),
        ) else {
            return Ok(None);
        };
        let Some((max_timestamp, max_relative)) = time_index.last() else {
            return Ok(None);
        };
        // A sealed segment's, paged to the file as it is (before its final entry is dropped
        // below).
        let paged_times = (!writable).then(|| time_index.paged(None, Some(times_id)));
        let (relative, position) = offset_index.last().unwrap_or((0, 0));
        // The entry the file adds for the segment's final maximum (see `encode_with_final`)
        // lies after the last offset index entry, where the index in memory has none: the
        // other entries are made with offset index entries.
        if offset_index
            .last()
            .is_none_or(|(last, _)| max_relative > last)
        {
            time_index.pop();
        }
        let mut meta = SegmentMeta::new(base_offset, index_interval);
        meta.next_offset = base_offset + u64::from(relative);
        meta.size = u64::from(position);
        let mut tail_max = i64::MIN;
        // Whole batches, CRC checked: what a crash could have torn is at the end.
        let mut walker = Walker::new(&file, meta.size, len, true, HEADER_CHUNK);
        loop {
            let (position, header) = match walker.next_batch() {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(StorageError::CorruptBatch(_)) => return Ok(None),
                Err(err) => return Err(err),
            };
            let relative = meta.next_offset - base_offset;
            let last = relative + u64::from(header.last_offset_delta);
            let (true, Ok(relative), true) = (
                header.base_offset == meta.next_offset,
                u32::try_from(relative),
                last <= u64::from(u32::MAX),
            ) else {
                return Ok(None);
            };
            if meta.bytes_since_index >= meta.index_interval {
                // A scan would have put an index entry at this batch: the index file is of an
                // earlier state of the segment (or of another `index_interval_bytes`).
                return Ok(None);
            }
            tail_max = tail_max.max(header.max_timestamp);
            meta.recent.push(relative, position);
            meta.bytes_since_index += header.total_len() as u64;
            meta.size = position + header.total_len() as u64;
            meta.next_offset += u64::from(header.record_count);
        }
        // The walk reached the end of the file from a batch the offset index named, and the
        // time index ends with the segment's largest timestamp, at or before its last batch.
        let fits = meta
            .recent
            .newest()
            .is_some_and(|newest| max_relative <= newest)
            && meta.size == len
            && tail_max <= max_timestamp;
        if !fits {
            return Ok(None);
        }
        meta.max_timestamp = max_timestamp;
        meta.indexes = match paged_times {
            // Sealed: paged, to the files just checked.
            Some(times) => Indexes::Paged(Arc::new(PagedIndexes {
                offsets: offset_index.paged(Some(offsets_id)),
                times,
                size: meta.size,
                last_time: meta.final_time_entry(),
            })),
            None => Indexes::Full {
                offsets: offset_index,
                times: time_index,
            },
        };
        Ok(Some(Self::new(dir, base_offset, file, meta)))
    }

    /// A copy of the metadata (tests compare opens with it).
    #[cfg(test)]
    pub(crate) fn meta_for_tests(&self) -> SegmentMeta {
        self.meta.read().clone()
    }

    /// The index files' contents as the metadata has them: from memory, or from the files once
    /// paged (tests compare opens with them).
    #[cfg(test)]
    pub(crate) fn encoded_indexes_for_tests(&self) -> (Vec<u8>, Vec<u8>) {
        self.meta.read().encoded_indexes().unwrap_or_else(|| {
            (
                fs::read(self.path(INDEX_EXT)).unwrap(),
                fs::read(self.path(TIME_INDEX_EXT)).unwrap(),
            )
        })
    }

    /// Whether the indexes are paged (tests).
    #[cfg(test)]
    pub(crate) fn is_paged(&self) -> bool {
        matches!(self.meta.read().indexes, Indexes::Paged(_))
    }

    /// The paged indexes' summaries and lengths (tests compare opens with them).
    #[cfg(test)]
    pub(crate) fn paged_shape(&self) -> Option<PagedShape> {
        match &self.meta.read().indexes {
            Indexes::Full { .. } => None,
            Indexes::Paged(p) => Some((p.offsets.shape(), p.times.shape())),
        }
    }

    /// Index blocks read and used, and lookups answered from the summary instead, of both
    /// paged indexes (tests).
    #[cfg(test)]
    pub(crate) fn paged_counts(&self) -> [u64; 2] {
        match &self.meta.read().indexes {
            Indexes::Full { .. } => [0, 0],
            Indexes::Paged(p) => [0, 1].map(|i| {
                p.offsets.counts[i].load(Ordering::Relaxed)
                    + p.times.counts[i].load(Ordering::Relaxed)
            }),
        }
    }

    fn path(&self, ext: &str) -> PathBuf {
        segment_path(&self.dir, self.base_offset, ext)
    }

    /// Committed size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.meta.read().size
    }

    /// The offset after the last batch.
    pub(crate) fn next_offset(&self) -> u64 {
        self.meta.read().next_offset
    }

    /// Largest batch timestamp (`i64::MIN` when empty).
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.meta.read().max_timestamp
    }

    /// Whether a batch of `len` bytes and `records` records goes into this segment without
    /// rolling: the segment stays within `segment_bytes` and 32-bit relative offsets, and its
    /// first batch was appended no earlier than `oldest_first_append_ms` (the time-based roll).
    /// An empty segment takes any batch, so an oversized batch gets a segment of its own.
    pub(crate) fn has_room(
        &self,
        len: u64,
        records: u32,
        segment_bytes: u64,
        oldest_first_append_ms: i64,
    ) -> bool {
        let meta = self.meta.read();
        if meta.size == 0 {
            return true;
        }
        let last_relative = meta.next_offset - self.base_offset + u64::from(records) - 1;
        meta.size + len <= segment_bytes
            && last_relative <= u64::from(u32::MAX)
            && meta.first_append_ms >= oldest_first_append_ms
    }

    /// Sets when the first batch was appended (the recovered active segment's estimate).
    pub(crate) fn set_first_append_ms(&self, ms: i64) {
        self.meta.write().first_append_ms = ms;
    }

    /// When the first batch was appended (`i64::MAX` while unknown).
    pub(crate) fn first_append_ms(&self) -> i64 {
        self.meta.read().first_append_ms
    }

    /// Writes `batch` with its base offset set to `self.next_offset()` (the batch itself is not
    /// modified); `now_ms` is the broker's clock. Called under the log's append lock; the batch
    /// becomes visible to readers only after the write completed.
    pub(crate) fn append(&self, batch: &[u8], header: &BatchHeader, now_ms: i64) -> io::Result<()> {
        let (position, base_offset) = {
            let meta = self.meta.read();
            (meta.size, meta.next_offset)
        };
        // A failed write leaves garbage past `size` only; the next append overwrites it and
        // recovery truncates it.
        if batch.len() <= COPY_TO_PATCH_MAX {
            let mut patched = batch.to_vec();
            set_base_offset(&mut patched, base_offset);
            self.file.write_all_at(&patched, position)?;
        } else {
            // Large batches are not copied: the new base offset, then the rest as received.
            self.file
                .write_all_at(&base_offset.to_be_bytes(), position)?;
            self.file.write_all_at(&batch[8..], position + 8)?;
        }
        let relative = u32::try_from(base_offset - self.base_offset)
            .map_err(|_| io::Error::other("relative offset overflow"))?;
        let next_offset = base_offset + u64::from(header.record_count);
        let mut meta = self.meta.write();
        if position == 0 {
            meta.first_append_ms = now_ms;
        }
        meta.on_batch(
            relative,
            position,
            batch.len() as u64,
            header.max_timestamp,
            next_offset,
        );
        Ok(())
    }

    /// Writes both index files (each atomically); nothing once the indexes are paged (the files
    /// hold them).
    pub(crate) fn write_indexes(&self) -> io::Result<()> {
        self.write_index_files().map(drop)
    }

    /// [`write_indexes`](Self::write_indexes), answering the identities of the files written.
    fn write_index_files(&self) -> io::Result<Option<(FileIdentity, FileIdentity)>> {
        let Some((offsets, times)) = self.meta.read().encoded_indexes() else {
            return Ok(None);
        };
        Ok(Some((
            write_atomic_identified(&self.path(INDEX_EXT), &offsets)?,
            write_atomic_identified(&self.path(TIME_INDEX_EXT), &times)?,
        )))
    }

    /// Writes both index files and pages the indexes out to them: for a segment that is
    /// sealed (nothing is appended to it any more). On failure they stay in memory.
    pub(crate) fn write_and_page_indexes(&self) -> io::Result<()> {
        if let Some((offsets_id, times_id)) = self.write_index_files()? {
            self.meta.write().page_out(Some(offsets_id), Some(times_id));
        }
        Ok(())
    }

    /// Bytes of index entries this segment holds in memory.
    pub(crate) fn index_memory(&self) -> usize {
        self.meta.read().index_memory()
    }

    /// Closes the index files kept open that no lookup read since the last call (see
    /// `index::Paged::release_if_idle`); how many it closed.
    pub(crate) fn release_idle_index_files(&self) -> usize {
        let paged = match &self.meta.read().indexes {
            Indexes::Full { .. } => return 0,
            Indexes::Paged(paged) => Arc::clone(paged),
        };
        usize::from(paged.offsets.release_if_idle()) + usize::from(paged.times.release_if_idle())
    }

    /// Unlinks the segment's files (see [`remove_segment_files`]). Open handles keep working.
    pub(crate) fn delete_files(&self) -> io::Result<()> {
        remove_segment_files(&self.dir, self.base_offset)
    }

    /// Position of the batch containing `offset` and the committed end of the segment, or
    /// `None` if the segment does not hold `offset`.
    pub(crate) fn find_batch(&self, offset: u64) -> Result<Option<(u64, u64)>, StorageError> {
        let (start, relative, end) = {
            let meta = self.meta.read();
            if offset < self.base_offset || offset >= meta.next_offset {
                return Ok(None);
            }
            let relative = u32::try_from(offset - self.base_offset).unwrap_or(u32::MAX);
            if let Some(position) = meta.recent.position_of(relative) {
                return Ok(Some((position, meta.size)));
            }
            (meta.offset_position(relative), relative, meta.size)
        };
        let start =
            start.unwrap_or_else(|paged| paged.offset_floor(|| self.path(INDEX_EXT), relative));
        let mut walker = Walker::new(&self.file, start, end, false, HEADER_CHUNK);
        while let Some((position, header)) = walker.next_batch()? {
            if header.base_offset > offset {
                return Err(corrupt("batch offsets out of order"));
            }
            let last = header
                .base_offset
                .checked_add(u64::from(header.last_offset_delta))
                .ok_or_else(|| corrupt("batch offset overflow"))?;
            if offset <= last {
                return Ok(Some((position, end)));
            }
        }
        Ok(None)
    }

    /// Appends to `out` the whole batches in `position..end` that fit in `budget` bytes, or the
    /// first batch alone if none fits and `at_least_one`. Returns where the next batch starts.
    pub(crate) fn read_batches(
        &self,
        out: &mut Vec<u8>,
        position: u64,
        end: u64,
        budget: usize,
        at_least_one: bool,
    ) -> Result<u64, StorageError> {
        let available = end.saturating_sub(position);
        let start = out.len();
        let want = usize::try_from(available).unwrap_or(usize::MAX).min(budget);
        out.resize(start + want, 0);
        self.file.read_exact_at(&mut out[start..], position)?;
        let mut used = 0usize;
        while let Some(size) = batch_size_at(&out[start + used..]) {
            check_batch_size(size, available - used as u64)?;
            if used + size > want {
                break;
            }
            used += size;
        }
        if used == 0 && at_least_one && available > 0 {
            let mut prefix = [0u8; LOG_OVERHEAD];
            if available < LOG_OVERHEAD as u64 {
                return Err(corrupt("partial batch at the end of a segment"));
            }
            self.file.read_exact_at(&mut prefix, position)?;
            let size = batch_size_at(&prefix).unwrap_or(0);
            check_batch_size(size, available)?;
            // Keep what was already read and fetch only the rest of the batch.
            let have = want.min(size);
            out.resize(start + size, 0);
            self.file
                .read_exact_at(&mut out[start + have..], position + have as u64)?;
            used = size;
        }
        out.truncate(start + used);
        Ok(position + used as u64)
    }

    /// The first record with a timestamp `>= timestamp` in this segment.
    /// `Err(Ok(n))` from `room(n)` (no room for `n` bytes decompressed now) ends the search
    /// with `Ok(Err(n))`.
    pub(crate) fn find_timestamp<R>(
        &self,
        timestamp: i64,
        max_uncompressed: usize,
        room: &dyn Fn(usize) -> Result<R, usize>,
    ) -> Result<Result<Option<(u64, i64)>, usize>, StorageError> {
        let (start, end) = {
            let meta = self.meta.read();
            if meta.max_timestamp < timestamp {
                return Ok(Ok(None));
            }
            (meta.time_position(timestamp), meta.size)
        };
        let start = start.unwrap_or_else(|paged| {
            paged
                .time_floor(|| self.path(TIME_INDEX_EXT), timestamp)
                .map_or(0, |r| paged.offset_floor(|| self.path(INDEX_EXT), r))
        });
        let mut walker = Walker::new(&self.file, start, end, false, HEADER_CHUNK);
        while let Some((position, header)) = walker.next_batch()? {
            if header.max_timestamp < timestamp {
                continue;
            }
            let mut raw = vec![0u8; header.total_len()];
            self.file.read_exact_at(&mut raw, position)?;
            let batch = RecordBatch::parse(Bytes::from(raw))?;
            // Held while the batch is decoded: what it decompresses to.
            let _room = match room(batch.declared_uncompressed_len().unwrap_or(0)) {
                Ok(room) => room,
                Err(wanted) => return Ok(Err(wanted)),
            };
            for record in batch.records_with_limit(max_uncompressed)? {
                let record = record?;
                if record.timestamp >= timestamp {
                    return Ok(Ok(Some((record.offset, record.timestamp))));
                }
            }
            // The header overstated its max timestamp; the answer is further on.
        }
        Ok(Ok(None))
    }
}

fn corrupt(what: &'static str) -> StorageError {
    StorageError::CorruptBatch(ProtocolError::CorruptBatch(what))
}

fn check_batch_size(size: usize, available: u64) -> Result<(), StorageError> {
    if size < BATCH_HEADER_LEN {
        return Err(corrupt("batch length shorter than its header"));
    }
    if size as u64 > available {
        return Err(StorageError::CorruptBatch(ProtocolError::Truncated {
            needed: size,
            remaining: usize::try_from(available).unwrap_or(usize::MAX),
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::RecentBatches;

    /// Batches of 1, 2, 3... records from relative offset 0, `position` = 100 x their index.
    fn recent(batches: u32) -> (RecentBatches, Vec<(u32, u32)>) {
        let mut ring = RecentBatches::default();
        let mut bounds = Vec::new();
        let mut base = 0;
        for i in 0..batches {
            ring.push(base, u64::from(i) * 100);
            bounds.push((base, base + i));
            base += i + 1;
        }
        (ring, bounds)
    }

    #[test]
    fn the_latest_batches_are_found_and_older_ones_left_to_the_index() {
        for batches in [0, 1, 5, 8, 9, 20] {
            let (ring, bounds) = recent(batches);
            for (i, &(first, last)) in bounds.iter().enumerate() {
                let kept = i + 8 >= bounds.len();
                for relative in first..=last {
                    let expected = kept.then_some(i as u64 * 100);
                    assert_eq!(
                        ring.position_of(relative),
                        expected,
                        "{batches} batches, offset {relative}"
                    );
                }
            }
        }
    }
}
