//! [`PartitionLog`]: opening and recovering a partition, appending, durability.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use rustmq_protocol::{BatchHeader, ProtocolError};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::producer_state::ProducerTable;
use super::retention::Maintenance;
use super::seal::Sealer;
use super::segment::{sync_dir, Segment};
use super::snapshot;
use super::sync::GroupCommit;
use super::{FlushPolicy, LogConfig, StorageError};

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset of the batch's last record.
    pub last_offset: u64,
    /// The broker's clock when the batch was appended (ms since the Unix epoch).
    pub log_append_time: i64,
}

/// How many times [`PartitionLog::try_append`] tries the log's lock before it leaves the
/// append to a blocking thread (another append's write to the page cache takes well under
/// this).
const TRY_APPEND_SPINS: u32 = 1_000;

/// The durable, segmented log of one partition.
///
/// Cheap to share: every method takes `&self`, appends are serialized internally, and reads
/// and syncs run concurrently with appends. See the [module docs](super) for the data flow.
pub struct PartitionLog {
    pub(super) dir: PathBuf,
    pub(super) config: LogConfig,
    /// [`LogConfig::roll_ms`], for the comparison every append makes.
    pub(super) roll_ms: i64,
    /// Serializes appends, rolls and index writes of the active segment.
    pub(super) appender: Mutex<ProducerTable>,
    /// Oldest first; the last one is the active segment. Never empty.
    pub(super) segments: RwLock<Vec<Arc<Segment>>>,
    pub(super) high_watermark: AtomicU64,
    pub(super) watermark_tx: watch::Sender<u64>,
    pub(super) commit: Arc<GroupCommit>,
    /// Set once the log's topic is deleted: nothing is written to its files any more.
    pub(super) retired: AtomicBool,
    /// Set while an append holds the log to roll its segment (it creates a file and syncs the
    /// directory).
    pub(super) rolling: AtomicBool,
    /// Held by a retention pass for its whole run (the files it removes too), and by
    /// [`retire`](PartitionLog::retire); what retention still has to do.
    pub(super) maintenance: Mutex<Maintenance>,
    /// Rolled segments waiting to be synced and indexed off the append lock.
    pub(super) sealer: Arc<Sealer>,
}

impl fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset())
            .field("high_watermark", &self.high_watermark())
            .field("segments", &self.segment_count())
            .finish_non_exhaustive()
    }
}

/// Dropping a log waits for its queued seals: their files are then in place for the next
/// open of the directory (a crash stops them, and that open verifies the unsealed segments).
impl Drop for PartitionLog {
    fn drop(&mut self) {
        self.sealer.drain();
    }
}

/// The wall clock in ms since the Unix epoch (0 before it, saturating far after).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl PartitionLog {
    /// The configuration in force (with `segment_bytes` capped at `u32::MAX`).
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one batch and returns the offsets it was given.
    ///
    /// The caller has verified the CRC; this re-checks the header and that the buffer holds
    /// exactly one batch. Idempotent batches are checked against the producer table first: a
    /// retry of a stored batch returns [`StorageError::DuplicateSequence`] and writes nothing.
    /// Only `base_offset` is rewritten, in the copy written to the segment. It may block on the
    /// disk: a batch that rolls the segment (it is full, or its first batch is older than
    /// [`LogConfig::roll_ms`]) creates the new segment's file and syncs the directory (the
    /// sealed segment is synced off the append lock: see `storage/seal.rs`), and with
    /// [`FlushPolicy::Always`] it returns once the batch is on disk (sharing the fdatasync with
    /// concurrent appends; a retry answered as a duplicate too, once its stored copy is). Async callers try [`try_append`](Self::try_append) first and run
    /// this on a blocking thread when it cannot append without waiting.
    pub fn append(&self, batch: impl AsRef<[u8]>) -> Result<AppendInfo, StorageError> {
        let batch = batch.as_ref();
        let header = self.check_append(batch)?;
        let appended = {
            let mut producers = self.appender.lock();
            let active = self.active();
            self.append_locked(&mut producers, active, batch, &header, now_ms())
        };
        if self.config.flush == FlushPolicy::Always {
            // A retry of a stored batch is answered as its first append is: once the batch is
            // on disk (the first may still be syncing it, its answer lost).
            let end = match &appended {
                Ok(info) => Some(info.last_offset + 1),
                Err(StorageError::DuplicateSequence { base_offset }) => Some(base_offset + 1),
                Err(_) => None,
            };
            if let Some(end) = end {
                self.commit.sync_blocking(end, || self.sync_target())?;
            }
        }
        appended
    }

    /// [`append`](Self::append), if it can be done without waiting for the disk: `None` (and
    /// nothing done) when the batch would roll the segment (a roll syncs the directory), with
    /// [`FlushPolicy::Always`], or while another append holds the log to roll it, or holds
    /// it for longer than a short spin. Another append's write (to the page cache) is waited
    /// for that way: the calling thread never parks on the log.
    /// Async callers append here on their own thread and run [`append`](Self::append) on a
    /// blocking thread when this answers `None`, so that an fdatasync never holds up the other
    /// connections that thread serves.
    pub fn try_append(&self, batch: impl AsRef<[u8]>) -> Option<Result<AppendInfo, StorageError>> {
        if self.config.flush == FlushPolicy::Always {
            return None;
        }
        let batch = batch.as_ref();
        let header = match self.check_append(batch) {
            Ok(header) => header,
            Err(e) => return Some(Err(e)),
        };
        // Spinning, not parking: a holder that is about to roll (it sets `rolling` only once
        // it has the lock), or waits for the disk otherwise, must not hold this thread.
        let mut spins = 0;
        let mut producers = loop {
            if let Some(producers) = self.appender.try_lock() {
                break producers;
            }
            if spins == TRY_APPEND_SPINS || self.rolling.load(Ordering::Acquire) {
                return None;
            }
            spins += 1;
            std::hint::spin_loop();
        };
        let active = self.active();
        let now = now_ms();
        if !self.has_room(&active, batch, &header, now) {
            return None;
        }
        Some(self.append_locked(&mut producers, active, batch, &header, now))
    }

    /// Whether `batch` goes into `active` without a roll, by size and by age (`now` is the
    /// broker's clock, read once per append: no other clock read or syscall is made here).
    fn has_room(&self, active: &Segment, batch: &[u8], header: &BatchHeader, now: i64) -> bool {
        active.has_room(
            batch.len() as u64,
            header.record_count,
            self.config.segment_bytes,
            now.saturating_sub(self.roll_ms),
        )
    }

    /// The checks of an append before the log is locked: the batch's header, and that the
    /// buffer holds exactly one batch.
    fn check_append(&self, batch: &[u8]) -> Result<BatchHeader, StorageError> {
        let header = BatchHeader::parse(batch)?;
        if header.total_len() != batch.len() {
            return Err(StorageError::CorruptBatch(ProtocolError::CorruptBatch(
                "batch length does not match its buffer",
            )));
        }
        self.commit.check()?;
        Ok(header)
    }

    /// The append itself, under the append lock (`producers`), into `active` or, when it has
    /// no room or is too old, a new segment. `now` is the broker's clock, read under the lock.
    fn append_locked(
        &self,
        producers: &mut ProducerTable,
        mut active: Arc<Segment>,
        batch: &[u8],
        header: &BatchHeader,
        now: i64,
    ) -> Result<AppendInfo, StorageError> {
        if self.retired.load(Ordering::Acquire) {
            return Err(StorageError::Retired);
        }
        producers.check(header)?;
        // After the idempotence check: a retry of a stored batch is a duplicate, whatever the
        // clock did since.
        let limit = self.config.message_timestamp_after_max_ms;
        if header.max_timestamp > now.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX)) {
            return Err(StorageError::InvalidTimestamp {
                timestamp: header.max_timestamp,
                ahead_ms: header.max_timestamp.saturating_sub(now),
                limit_ms: limit,
            });
        }
        if !self.has_room(&active, batch, header, now) {
            active = self.roll(&active, producers)?;
        }
        let base_offset = active.next_offset();
        active.append(batch, header, now)?;
        producers.record(header, base_offset, now);
        let next = active.next_offset();
        self.high_watermark.store(next, Ordering::Release);
        self.watermark_tx.send_replace(next);
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            log_append_time: now,
        })
    }

    /// Fences older epochs of an idempotent producer on this partition (see
    /// `ProducerTable::fence`); taken under the append lock, so an append either finished
    /// before (and is visible) or is checked against the new epoch.
    pub fn fence_producer(&self, producer_id: i64, epoch: i16) {
        self.appender.lock().fence(producer_id, epoch);
    }

    /// Undoes [`fence_producer`](Self::fence_producer): `producer_id`'s name was forgotten, so
    /// its epoch is no longer kept here for its own sake, and its sequences are forgotten once
    /// it has been idle for `producer_id_expiration_ms`, as any producer's.
    pub fn unpin_producer(&self, producer_id: i64) {
        self.appender.lock().unpin(producer_id);
    }

    /// Whether `producer_id` wrote to this partition at or after `since` (the broker's clock,
    /// ms; producers found when the log was opened count as writing then).
    pub fn producer_active_since(&self, producer_id: i64, since: i64) -> bool {
        self.appender.lock().active_since(producer_id, since)
    }

    /// Refuses every batch of `producer_id` on this partition from now on, whatever its epoch
    /// (its name used every epoch and moved to a new id); under the append lock, as
    /// [`fence_producer`](Self::fence_producer).
    pub fn retire_producer(&self, producer_id: i64) {
        self.appender.lock().retire(producer_id);
    }

    /// Makes a new active segment after `old`, and queues `old` to be sealed (synced, its
    /// index files and the producer snapshot as of the new segment's base written) by a thread
    /// of its own: see `storage/seal.rs`. Called with the append lock held, which it holds only
    /// to encode the snapshot and create the new file.
    pub(super) fn roll(
        &self,
        old: &Arc<Segment>,
        producers: &ProducerTable,
    ) -> Result<Arc<Segment>, StorageError> {
        // `try_append` gives up at once while this is set, instead of spinning on the lock.
        struct Rolling<'a>(&'a AtomicBool);
        impl Drop for Rolling<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        self.rolling.store(true, Ordering::Release);
        let _rolling = Rolling(&self.rolling);
        let base = old.next_offset();
        // A failed append may have left bytes past the committed end; a sealed segment must
        // end exactly at its last batch or the next open would report it as damaged.
        let size = old.size();
        let truncated = old.file.metadata()?.len() != size;
        if truncated {
            old.file.set_len(size)?;
        }
        // The producers as of the new segment's base: the next open replays batch headers
        // from there on only. Written by the seal, once `old` is on disk.
        let snapshot = snapshot::encode(base, producers);
        let segment = Arc::new(Segment::create(
            &self.dir,
            base,
            self.config.index_interval_bytes,
        )?);
        if let Err(err) = sync_dir(&self.dir) {
            // `old` stays the active segment and may take smaller batches past `base`: a file
            // left at `base` would overlap it at the next open. Removed as best we can; one
            // left anyway (or brought back by a crash) is empty, and the open removes it.
            if let Err(remove) = segment.delete_files() {
                warn!(dir = %self.dir.display(), base_offset = base, error = %remove,
                    "could not remove the new segment of a failed roll");
            }
            return Err(err.into());
        }
        // `old` is not sealed yet, so a group commit from now on syncs it with the new one.
        self.segments.write().push(Arc::clone(&segment));
        self.sealer
            .submit(Arc::clone(old), base, snapshot, truncated);
        debug!(dir = %self.dir.display(), base_offset = base, "rolled a new segment");
        Ok(segment)
    }

    /// Bytes of index entries the log holds in memory: the active segment's whole indexes (and
    /// those of rolled segments not sealed yet), and one entry in 64 of each sealed segment's,
    /// whose index files hold the rest (see `storage/index.rs`).
    pub fn index_memory(&self) -> usize {
        self.segments.read().iter().map(|s| s.index_memory()).sum()
    }

    /// Closes the sealed segments' index files kept open that no lookup read since the last
    /// call, so that their slots (see `storage/index.rs`) go to the files read now; how many it
    /// closed. The broker's retention pass calls it.
    pub fn release_idle_index_files(&self) -> usize {
        let segments = self.segments.read().clone();
        segments.iter().map(|s| s.release_idle_index_files()).sum()
    }

    /// Waits until every rolled segment is sealed (see `storage/seal.rs`).
    #[cfg(test)]
    pub(crate) fn wait_for_seals(&self) {
        self.sealer.paused.store(false, Ordering::Release);
        self.sealer.drain();
    }

    pub(super) fn active(&self) -> Arc<Segment> {
        let segments = self.segments.read();
        Arc::clone(segments.last().expect("a log always has an active segment"))
    }

    /// The files a sync must cover and the end offset they hold, read together so that
    /// syncing them covers that end: the active file, and the rolled ones not sealed yet
    /// (older files were synced by their seal), oldest first.
    pub(super) fn sync_target(&self) -> (Vec<Arc<File>>, u64) {
        let segments = self.segments.read();
        let unsealed = segments
            .iter()
            .rev()
            .take_while(|segment| !segment.is_sealed())
            .count();
        let files = segments[segments.len() - unsealed..]
            .iter()
            .map(|segment| Arc::clone(&segment.file))
            .collect();
        (files, self.high_watermark())
    }

    /// Resolves once every offset up to and including `offset` is on disk.
    ///
    /// Concurrent callers share one fdatasync: one of them runs it on the blocking pool and
    /// the others wait for it. An `offset` at or past the high watermark is
    /// [`StorageError::OffsetOutOfRange`] (it could otherwise wait forever).
    pub async fn sync_up_to(&self, offset: u64) -> Result<(), StorageError> {
        let end = self.high_watermark();
        if offset >= end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset(),
                end,
            });
        }
        self.commit
            .sync_async(offset + 1, || self.sync_target())
            .await
    }

    /// Async form of [`flush`](Self::flush), used by the interval flusher.
    pub(super) async fn sync_all(&self) -> Result<(), StorageError> {
        let end = self.high_watermark();
        self.commit.sync_async(end, || self.sync_target()).await
    }

    /// Blocks until everything appended so far is on disk; does nothing if it already is.
    pub fn flush(&self) -> Result<(), StorageError> {
        let end = self.high_watermark();
        self.commit.sync_blocking(end, || self.sync_target())
    }

    /// The offset the next appended record will get.
    pub fn high_watermark(&self) -> u64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// The first offset still stored.
    pub fn log_start_offset(&self) -> u64 {
        self.segments.read().first().map_or(0, |s| s.base_offset)
    }

    /// Bytes of batches stored, across all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.read().iter().map(|s| s.size()).sum()
    }

    /// Number of segments, the active one included.
    pub fn segment_count(&self) -> u32 {
        u32::try_from(self.segments.read().len()).unwrap_or(u32::MAX)
    }

    /// A receiver of the high watermark, changed after every append; long-poll fetches wait
    /// on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.watermark_tx.subscribe()
    }

    /// Number of fdatasync attempts made for appended data: group commits (each syncs the
    /// active file and any rolled one not sealed yet) and seals.
    pub fn sync_count(&self) -> u64 {
        self.commit.count()
    }

    /// Stops every write to the log's files, for good: its topic is being deleted, and a
    /// topic of the same name may soon have files at the same paths. Waits for an append (and
    /// the roll it may do) and a retention pass in progress; later appends fail with
    /// [`StorageError::Retired`], and retention and [`close`](Self::close) leave the files
    /// alone. Reads of what is stored go on while the files last. Waits for the queued seals
    /// (see `storage/seal.rs`) too, as they write into the directory.
    pub fn retire(&self) {
        let _maintenance = self.maintenance.lock();
        let _appends = self.appender.lock();
        self.retired.store(true, Ordering::Release);
        // A seal writes index files and a snapshot into the directory.
        self.sealer.drain();
    }

    /// Whether the log was [retired](Self::retire): its topic is being deleted.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Wakes the long polls waiting for appends (see [`subscribe`](Self::subscribe)) without
    /// one: its topic was deleted, and they answer so instead of waiting out their deadline
    /// while holding the deleted files open.
    pub fn wake_readers(&self) {
        self.watermark_tx.send_modify(|_| {});
    }

    /// Undoes [`retire`](Self::retire): the topic's deletion failed before its files moved.
    pub(crate) fn reinstate(&self) {
        self.retired.store(false, Ordering::Release);
    }

    /// Writes the active segment's index files, syncs everything, and writes a producer
    /// snapshot at the end of the log and the clean-shutdown marker, so that the next open
    /// reads no batch but the last few of each segment (see the [module docs](super)); for a
    /// clean shutdown. Holds the append lock throughout (the sync, and the snapshot, whose size
    /// grows with the producers: ~200 ms for a million), and first waits for the queued seals
    /// (see `storage/seal.rs`). The log stays usable: an append
    /// after it makes the next open recover the active segment as after a crash.
    pub fn close(&self) -> Result<(), StorageError> {
        let producers = self.appender.lock();
        if self.retired.load(Ordering::Acquire) {
            return Ok(());
        }
        // The rolled segments' index files and snapshots are in place before the marker
        // vouches for them.
        self.sealer.drain();
        let active = self.active();
        // A failed append may have left bytes past the committed end: the marker vouches for
        // the file as it is (the open compares its length).
        let size = active.size();
        if active.file.metadata()?.len() != size {
            active.file.set_len(size)?;
        }
        active.write_indexes()?;
        self.flush()?;
        let next_offset = active.next_offset();
        snapshot::write(&self.dir, next_offset, &producers)?;
        // Those of earlier closes, inside the active segment.
        let base = active.base_offset;
        if let Err(err) =
            snapshot::remove(&self.dir, |offset| offset > base && offset < next_offset)
        {
            warn!(dir = %self.dir.display(), %err, "could not remove old producer snapshots");
        }
        // The index files and the snapshot are in the directory before the marker can be:
        // renames may reach the disk in any order.
        sync_dir(&self.dir)?;
        snapshot::write_clean(
            &self.dir,
            snapshot::CleanShutdown {
                active_base: base,
                active_size: size,
                next_offset,
                first_append_ms: active.first_append_ms(),
            },
        )?;
        drop(producers);
        sync_dir(&self.dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustmq_protocol::{BatchIter, RecordBatchBuilder};

    use super::*;
    use crate::storage::test_util::{
        batch, expected_values, fill, idem, read_all, small_config, values,
    };

    const _: () = {
        const fn send_sync<T: Send + Sync>() {}
        send_sync::<PartitionLog>();
    };

    #[test]
    fn module_doc_example_works() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        let mut builder = RecordBatchBuilder::new();
        builder.push(1_700_000_000_000, Some(b"key"), Some(b"value"), []);
        let batch = builder.build().expect("one record");
        let info = log.append(&batch[..]).unwrap();
        assert_eq!((info.base_offset, log.high_watermark()), (0, 1));
        let stored = log.read(0, 1024 * 1024).unwrap();
        assert_eq!(stored.len(), batch.len());
        log.close().unwrap();
    }

    /// `try_append` appends what it can without waiting for the disk, and leaves alone (for
    /// `append` on a blocking thread) a batch that would roll the segment, any batch under
    /// `flush = always`, and any batch while another append holds the log.
    #[test]
    fn try_append_leaves_what_may_wait_for_the_disk_to_append() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(4096)).unwrap();
        let b = batch("a", 10, 0);
        let first = log.try_append(&b[..]).expect("room").unwrap();
        assert_eq!((first.base_offset, first.last_offset), (0, 9));
        // Up to the segment's end, then a roll is left to `append`.
        let mut appended = 10;
        while let Some(info) = log.try_append(&b[..]) {
            appended = info.unwrap().last_offset + 1;
        }
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.high_watermark(), appended);
        let rolled = log.append(&b[..]).unwrap();
        assert_eq!(rolled.base_offset, appended);
        assert_eq!(log.segment_count(), 2);
        // Bad input is answered at once.
        assert!(matches!(
            log.try_append(&b[..b.len() - 1]),
            Some(Err(StorageError::CorruptBatch(_)))
        ));
        // Another append holds the log to roll it: left alone, nothing written.
        {
            let _held = log.appender.lock();
            log.rolling.store(true, Ordering::Release);
            assert!(log.try_append(&b[..]).is_none());
            log.rolling.store(false, Ordering::Release);
        }
        assert_eq!(log.high_watermark(), appended + 10);
        let always = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(
            always.path(),
            LogConfig {
                flush: FlushPolicy::Always,
                ..small_config(1 << 20)
            },
        )
        .unwrap();
        assert!(log.try_append(&b[..]).is_none());
        assert_eq!(log.high_watermark(), 0);
    }

    /// Small batches are copied to set their base offset, large ones written as offset + rest:
    /// both must store the assigned offset, leave the caller's bytes alone and keep the CRC.
    #[test]
    fn small_and_large_batches_store_their_assigned_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        let counts = [1u32, 2_000, 3, 10_000, 1];
        let mut expected = Vec::new();
        for (i, &count) in counts.iter().enumerate() {
            let b = batch(&format!("s{i}"), count, 0);
            let before = b.clone();
            let info = log.append(&b).unwrap();
            assert_eq!(b, before, "append must not modify the caller's batch");
            assert_eq!(info.last_offset + 1 - info.base_offset, u64::from(count));
            expected
                .extend((0..count).map(|r| (info.base_offset + u64::from(r), format!("s{i}-{r}"))));
        }
        assert!(batch("x", 2_000, 0).len() > crate::storage::segment::COPY_TO_PATCH_MAX);
        assert_eq!(values(&read_all(&log, 0, 64 * 1024)), expected);
        log.close().unwrap();
    }

    #[test]
    fn append_assigns_offsets_and_reads_back_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(500)).unwrap();
        let infos = fill(&log, 40);
        let mut next = 0;
        for (info, _) in &infos {
            assert_eq!(info.base_offset, next);
            next = info.last_offset + 1;
        }
        assert_eq!(log.high_watermark(), next);
        assert!(log.segment_count() > 5, "{} segments", log.segment_count());
        assert_eq!(
            log.size_bytes(),
            infos.iter().map(|(_, l)| *l as u64).sum::<u64>()
        );
        assert_eq!(values(&read_all(&log, 0, 1)), expected_values(40));
        assert_eq!(values(&read_all(&log, 0, u32::MAX)), expected_values(40));
        // A read from any offset starts with the batch that contains it.
        for (info, _) in &infos {
            for offset in info.base_offset..=info.last_offset {
                let bytes = log.read(offset, 1).unwrap();
                let first = BatchIter::new(bytes).next().unwrap().unwrap();
                assert_eq!(first.header().base_offset, info.base_offset);
            }
        }
    }

    #[test]
    fn oversized_batch_gets_its_own_segment() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(100)).unwrap();
        let big = batch("big", 20, 0);
        assert!(big.len() > 100);
        log.append(big.clone()).unwrap();
        log.append(big.clone()).unwrap();
        assert_eq!(log.segment_count(), 2);
        assert_eq!(log.read(0, 1).unwrap().len(), big.len());
        assert_eq!(log.read(20, 1).unwrap().len(), big.len());
    }

    /// A roll whose directory sync fails removes the file it created: the old segment stays
    /// the active one and takes a smaller batch past the failed roll's base, and the log then
    /// reopens with everything (a file left there would overlap the old segment).
    #[test]
    fn a_failed_roll_leaves_no_segment_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(1_000)).unwrap();
        let (small, big) = (batch("s", 1, 0), batch("big", 20, 0));
        assert!(small.len() * 3 < big.len() && big.len() < 1_000);
        while log.active().size() + (big.len() as u64) <= 1_000 {
            log.append(&small[..]).unwrap();
        }
        assert!(log.active().size() + small.len() as u64 <= 1_000);
        let base = log.high_watermark();
        crate::storage::segment::FAIL_SYNC_DIR.with(|n| n.set(1));
        assert!(matches!(log.append(&big[..]), Err(StorageError::Io(_))));
        assert!(!dir.path().join(format!("{base:020}.log")).exists());
        assert_eq!(log.segment_count(), 1);
        let info = log.append(&small[..]).unwrap();
        assert_eq!((info.base_offset, log.segment_count()), (base, 1));
        let rolled = log.append(&big[..]).unwrap();
        assert_eq!((rolled.base_offset, log.segment_count()), (base + 1, 2));
        drop(log);
        let log = PartitionLog::open(dir.path(), small_config(1_000)).unwrap();
        assert_eq!((log.high_watermark(), log.segment_count()), (base + 21, 2));
        assert_eq!(read_all(&log, 0, 1).len() as u64, base + 21);
    }

    /// The active segment rolls at the first append after its first batch is older than
    /// `segment_ms` (or `retention_ms` when shorter), so that retention can delete it.
    #[test]
    fn an_old_active_segment_rolls_and_retention_then_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_ms: 60_000,
            retention_ms: Some(3_600_000),
            ..small_config(1 << 20)
        };
        let log = PartitionLog::open(dir.path(), config).unwrap();
        let ts = 1_000_000;
        let before = now_ms();
        log.append(batch("a", 2, ts)).unwrap();
        assert!((before..=now_ms()).contains(&log.active().first_append_ms()));
        // Young enough: no roll.
        log.active().set_first_append_ms(now_ms() - 30_000);
        log.append(batch("b", 1, ts)).unwrap();
        assert_eq!(log.segment_count(), 1);
        // Older than segment_ms: the next append rolls (not on the async path: a roll syncs the
        // directory).
        log.active().set_first_append_ms(now_ms() - 60_001 - 1_000);
        let c = batch("c", 1, ts + 10);
        assert!(log.try_append(&c[..]).is_none());
        assert_eq!(log.append(&c[..]).unwrap().base_offset, 3);
        assert_eq!(log.segment_count(), 2);
        assert_eq!(log.active().base_offset, 3);
        assert!(log.active().first_append_ms() >= before);
        // Retention deletes the sealed segment once its records are past the retention.
        log.wait_for_seals();
        assert_eq!(log.apply_retention(ts + 1 + 3_600_000).unwrap(), 0);
        assert_eq!(log.apply_retention(ts + 2 + 3_600_000).unwrap(), 1);
        assert_eq!(log.log_start_offset(), 3);
        assert_eq!(values(&read_all(&log, 3, 1)), [(3, "c-0".to_owned())]);
        // A reopened log estimates its active segment's age from its file.
        drop(log);
        let log = PartitionLog::open(dir.path(), small_config(1 << 20)).unwrap();
        let estimate = log.active().first_append_ms();
        assert!(
            estimate <= now_ms() && estimate > before - 60_000,
            "{estimate}"
        );

        // A retention shorter than segment_ms rolls by the retention.
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_ms: Some(60_000),
            ..small_config(1 << 20)
        };
        assert_eq!(config.segment_ms, crate::storage::DEFAULT_SEGMENT_MS);
        let log = PartitionLog::open(dir.path(), config).unwrap();
        log.append(batch("a", 1, ts)).unwrap();
        log.active().set_first_append_ms(now_ms() - 30_000);
        log.append(batch("b", 1, ts)).unwrap();
        assert_eq!(log.segment_count(), 1);
        log.active().set_first_append_ms(now_ms() - 120_000);
        log.append(batch("c", 1, ts)).unwrap();
        assert_eq!(log.segment_count(), 2);
    }

    #[test]
    fn rejects_malformed_input() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        let mut two = batch("a", 1, 0);
        two.extend_from_slice(&batch("b", 1, 0));
        assert!(matches!(
            log.append(two),
            Err(StorageError::CorruptBatch(_))
        ));
        assert!(matches!(
            log.append([0u8; 10]),
            Err(StorageError::CorruptBatch(_))
        ));
        assert_eq!(log.high_watermark(), 0);
    }

    #[test]
    fn idempotent_duplicates_gaps_and_stale_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(300)).unwrap();
        assert_eq!(log.append(idem("a", 3, (9, 1, 0))).unwrap().base_offset, 0);
        assert_eq!(log.append(idem("b", 2, (9, 1, 3))).unwrap().base_offset, 3);
        let hw = log.high_watermark();
        assert!(matches!(
            log.append(idem("a", 3, (9, 1, 0))),
            Err(StorageError::DuplicateSequence { base_offset: 0 })
        ));
        assert!(matches!(
            log.append(idem("c", 1, (9, 1, 6))),
            Err(StorageError::OutOfOrderSequence {
                producer_id: 9,
                expected: 5,
                got: 6
            })
        ));
        assert!(matches!(
            log.append(idem("c", 1, (9, 0, 5))),
            Err(StorageError::InvalidProducerEpoch {
                producer_id: 9,
                current: 1,
                got: 0
            })
        ));
        assert_eq!(log.high_watermark(), hw, "rejected batches write nothing");
        assert_eq!(log.append(idem("d", 1, (9, 2, 0))).unwrap().base_offset, hw);
        // Non-idempotent batches are never deduplicated.
        log.append(batch("x", 1, 0)).unwrap();
        log.append(batch("x", 1, 0)).unwrap();
    }

    /// An idle producer is forgotten by the retention pass after its expiration (a retry of
    /// its old batch is then written again, as from a new producer); a named one is not.
    #[test]
    fn idle_producers_expire_at_the_retention_pass() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            producer_id_expiration_ms: 60_000,
            ..small_config(10_000)
        };
        let log = PartitionLog::open(dir.path(), config).unwrap();
        let now = now_ms();
        log.append(idem("a", 1, (1, 0, 0))).unwrap();
        log.fence_producer(2, 3);
        log.append(idem("b", 1, (2, 3, 0))).unwrap();
        log.apply_retention(now + 30_000).unwrap();
        assert!(matches!(
            log.append(idem("a", 1, (1, 0, 0))),
            Err(StorageError::DuplicateSequence { base_offset: 0 })
        ));
        log.apply_retention(now + 120_000).unwrap();
        assert_eq!(log.append(idem("a", 1, (1, 0, 0))).unwrap().base_offset, 2);
        assert!(matches!(
            log.append(idem("b", 1, (2, 2, 0))),
            Err(StorageError::InvalidProducerEpoch { current: 3, .. })
        ));
        assert!(matches!(
            log.append(idem("b", 1, (2, 3, 0))),
            Err(StorageError::DuplicateSequence { base_offset: 1 })
        ));
    }

    /// A batch stamped further ahead of the broker's clock than the log accepts is refused,
    /// but only after the idempotence check: the retry of a batch stored before (when the
    /// clock was ahead, or the limit higher) is answered as the duplicate it is.
    #[test]
    fn timestamps_too_far_ahead_are_refused_after_the_duplicate_check() {
        let dir = tempfile::tempdir().unwrap();
        let ahead = now_ms() + 10 * 60_000;
        let stamped = |ts: i64, seq: i32| {
            crate::storage::test_util::batch_with(
                "t",
                1,
                ts,
                rustmq_protocol::Compression::None,
                Some((1, 0, seq)),
            )
        };
        let log = PartitionLog::open(dir.path(), small_config(10_000)).unwrap();
        assert_eq!(log.append(stamped(ahead, 0)).unwrap().base_offset, 0);
        log.close().unwrap();
        let strict = LogConfig {
            message_timestamp_after_max_ms: 60_000,
            ..small_config(10_000)
        };
        let log = PartitionLog::open(dir.path(), strict).unwrap();
        assert!(matches!(
            log.append(stamped(ahead, 0)),
            Err(StorageError::DuplicateSequence { base_offset: 0 })
        ));
        assert!(matches!(
            log.append(stamped(ahead, 1)),
            Err(StorageError::InvalidTimestamp {
                limit_ms: 60_000,
                ..
            })
        ));
        assert_eq!(log.high_watermark(), 1, "the refused batch wrote nothing");
        assert_eq!(log.append(stamped(now_ms(), 1)).unwrap().base_offset, 1);
    }

    #[test]
    fn watchers_see_the_high_watermark_advance() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        let mut rx = log.subscribe();
        assert_eq!(*rx.borrow_and_update(), 0);
        log.append(batch("a", 3, 0)).unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_sync_calls_share_fdatasyncs() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(PartitionLog::open(dir.path(), LogConfig::default()).unwrap());
        for i in 0..50 {
            log.append(batch(&format!("m{i}"), 1, 0)).unwrap();
        }
        let before = log.sync_count();
        let barrier = Arc::new(tokio::sync::Barrier::new(50));
        let tasks: Vec<_> = (0..50u64)
            .map(|offset| {
                let (log, barrier) = (Arc::clone(&log), Arc::clone(&barrier));
                tokio::spawn(async move {
                    barrier.wait().await;
                    log.sync_up_to(offset).await
                })
            })
            .collect();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("sync resolves")
                .unwrap()
                .unwrap();
        }
        let syncs = log.sync_count() - before;
        assert!(
            (1..50).contains(&syncs),
            "{syncs} fdatasyncs for 50 callers"
        );
        // Everything is durable now: neither path syncs again.
        log.sync_up_to(49).await.unwrap();
        log.flush().unwrap();
        assert_eq!(log.sync_count() - before, syncs);
        assert!(matches!(
            log.sync_up_to(50).await,
            Err(StorageError::OffsetOutOfRange { offset: 50, .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn interleaved_appends_and_syncs_all_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(PartitionLog::open(dir.path(), small_config(1_000)).unwrap());
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let info = log.append(batch(&format!("m{i}"), 2, 0))?;
                    log.sync_up_to(info.last_offset).await
                })
            })
            .collect();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("sync resolves")
                .unwrap()
                .unwrap();
        }
        // Seals of the rolls above sync too.
        log.wait_for_seals();
        let syncs = log.sync_count();
        log.flush().unwrap();
        assert_eq!(log.sync_count(), syncs, "every append was already durable");
    }

    #[test]
    fn flush_always_makes_each_append_durable_with_shared_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            flush: FlushPolicy::Always,
            ..LogConfig::default()
        };
        let log = Arc::new(PartitionLog::open(dir.path(), config).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    for i in 0..10 {
                        log.append(batch(&format!("t{t}-{i}"), 1, 0)).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let syncs = log.sync_count();
        assert!((1..=80).contains(&syncs), "{syncs}");
        log.flush().unwrap();
        assert_eq!(log.sync_count(), syncs, "nothing was left unsynced");
    }

    /// Under `FlushPolicy::Always`, a retry of a batch whose first append is still syncing
    /// is not answered (as a duplicate) before the batch is on disk.
    #[test]
    fn flush_always_answers_a_duplicate_once_its_batch_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            flush: FlushPolicy::Always,
            ..LogConfig::default()
        };
        let log = Arc::new(PartitionLog::open(dir.path(), config).unwrap());
        // The syncer role held here stands for a slow fdatasync under way.
        let held = log.commit.hold_role();
        let append = |log: &Arc<PartitionLog>| {
            let log = Arc::clone(log);
            std::thread::spawn(move || log.append(idem("a", 1, (1, 0, 0))))
        };
        let first = append(&log);
        while log.high_watermark() == 0 {
            std::thread::yield_now();
        }
        let retry = append(&log);
        std::thread::sleep(Duration::from_millis(200));
        assert!(!first.is_finished(), "the first waits for its sync");
        assert!(
            !retry.is_finished(),
            "the retry is not answered before its batch is on disk"
        );
        drop(held);
        assert_eq!(first.join().unwrap().unwrap().base_offset, 0);
        assert!(matches!(
            retry.join().unwrap(),
            Err(StorageError::DuplicateSequence { base_offset: 0 })
        ));
        assert!(log.commit.count() >= 2, "a sync after the held role");
    }

    #[tokio::test]
    async fn interval_flusher_syncs_new_data_and_stops_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            flush: FlushPolicy::Interval(Duration::from_millis(10)),
            ..LogConfig::default()
        };
        let log = Arc::new(PartitionLog::open(dir.path(), config).unwrap());
        let flusher = crate::storage::spawn_interval_flusher(&log).unwrap();
        log.append(batch("a", 1, 0)).unwrap();
        let before = log.sync_count();
        // No event marks a background flush, so poll the counter (bounded).
        tokio::time::timeout(Duration::from_secs(10), async {
            while log.sync_count() == before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the flusher synced the append");
        drop(log);
        tokio::time::timeout(Duration::from_secs(5), flusher)
            .await
            .expect("flusher ends")
            .unwrap();
    }
}
