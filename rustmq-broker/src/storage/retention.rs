//! Retention: deleting whole old segments by age and by total size.
//!
//! A pass records the new log start offset in the partition's `log-start-offset` file
//! (durably), then takes the expired segments out of the log, unlinks their files and syncs
//! the directory; a start it cannot record deletes nothing until a later pass can. Files that
//! cannot be removed are retried by every later pass, and the recorded start offset keeps
//! them from being served again should the broker restart first: the open leaves out (and
//! removes) every segment below it.

use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;

use tracing::{debug, info, warn};

use super::index::{read_optional, write_atomic};
use super::producer_state::ProducerTable;
use super::segment::{remove_segment_files, sync_dir};
use super::{PartitionLog, StorageError};

/// The file in a partition directory that holds the log start offset retention last moved to
/// (decimal). Absent until retention first deletes something.
const START_OFFSET_FILE: &str = "log-start-offset";

/// What a partition's retention still has to finish; kept under `PartitionLog::maintenance`.
#[derive(Debug, Default)]
pub(crate) struct Maintenance {
    /// Base offsets of segments out of the log whose files could not all be removed yet.
    pub(super) undeleted: Vec<u64>,
    /// The log start offset the partition directory holds: recorded in [`START_OFFSET_FILE`],
    /// or implied by the files (no segment below it).
    pub(super) durable_start: u64,
    /// Files were removed and the directory sync that makes it durable failed.
    pub(super) dir_unsynced: bool,
}

/// The log start offset recorded in `dir`, if any (a damaged record is ignored, with a warning:
/// the segments on disk are then served as they are).
pub(super) fn read_start_offset(dir: &Path) -> io::Result<Option<u64>> {
    let path = dir.join(START_OFFSET_FILE);
    let Some(bytes) = read_optional(&path)? else {
        return Ok(None);
    };
    let parsed = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.trim().parse().ok());
    if parsed.is_none() {
        warn!(file = %path.display(), "ignoring an unreadable log start offset");
    }
    Ok(parsed)
}

/// Records `start` as the log start offset of the partition in `dir`, durably.
fn write_start_offset(dir: &Path, start: u64) -> io::Result<()> {
    write_atomic(
        &dir.join(START_OFFSET_FILE),
        format!("{start}\n").as_bytes(),
    )?;
    sync_dir(dir)
}

impl PartitionLog {
    /// Deletes the oldest non-active segments that retention no longer covers and returns how
    /// many went.
    ///
    /// A segment goes by time when its newest batch timestamp is older than
    /// `now_ms - retention_ms`, and by size while the log without it still holds at least
    /// `retention_bytes`. Deletion stops at the first segment that stays, so the log remains
    /// contiguous; `log_start_offset` moves to the first remaining segment, and is recorded
    /// durably before any file is removed. Readers already holding a deleted segment finish
    /// their read from the unlinked file. Files an earlier pass could not remove are retried.
    ///
    /// The active segment is not deleted as such; it rolls by age at the next append (see
    /// [`LogConfig::roll_ms`](super::LogConfig::roll_ms)), after which retention can act once
    /// the rolled segment is sealed (see `storage/seal.rs`). A partition that receives nothing
    /// gets no such append: when its active segment is past the roll age and every record of
    /// its log is past `retention_ms`, the pass
    /// rolls the active segment itself and deletes it, as Kafka does, so that retention holds
    /// for idle partitions too; the log is then empty, starting at its end offset.
    ///
    /// Each pass also forgets the idempotent producers idle for longer than
    /// [`LogConfig::producer_id_expiration_ms`](super::LogConfig::producer_id_expiration_ms).
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        // The whole pass, file removals included, is over before a retirement completes: the
        // paths may belong to a new topic of the same name after it.
        let mut maintenance = self.maintenance.lock();
        if self.retired.load(Ordering::Acquire) {
            return Ok(0);
        }
        let config = self.config();
        let cutoff = config
            .retention_ms
            .map(|ms| now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
        // Under the append lock: a walk over the producers of this partition, and the roll of
        // an idle partition's expired active segment.
        let rolled = {
            let mut producers = self.appender.lock();
            let forgotten = producers.expire(now_ms, config.producer_id_expiration_ms);
            if forgotten > 0 {
                debug!(dir = %self.dir().display(), forgotten, "forgot idle idempotent producers");
            }
            cutoff.is_some_and(|cutoff| self.roll_expired(&producers, cutoff, now_ms))
        };
        if rolled {
            // Deleted below once sealed.
            self.sealer.drain();
        }
        // Which segments go, read first: only retention (under `maintenance`) takes segments
        // from the front, and appends add at the end, so they are still the first `count`
        // when they are taken out below.
        let (count, start) = {
            let segments = self.segments.read();
            let mut total: u64 = segments.iter().map(|s| s.size()).sum();
            let mut count = 0;
            // The active segment (the last) is never deleted, nor a rolled one until its seal
            // is done (it writes the segment's files).
            while count + 1 < segments.len() && segments[count].is_sealed() {
                let segment = &segments[count];
                let size = segment.size();
                let expired = cutoff.is_some_and(|cutoff| segment.max_timestamp() < cutoff);
                let oversized = config
                    .retention_bytes
                    .is_some_and(|limit| total - size >= limit);
                if !expired && !oversized {
                    break;
                }
                total -= size;
                count += 1;
            }
            let start = segments.get(count).map_or(0, |s| s.base_offset);
            (count, start)
        };
        let maintenance = &mut *maintenance;
        // The new start is recorded first, and the segments go only once it is: files below
        // it that survive (a removal that fails, or a crash before the directory is synced)
        // are then left out by the next open, not served again, and a restart never moves the
        // log start back to where it was before this pass.
        if count > 0 && start > maintenance.durable_start {
            match write_start_offset(&self.dir, start) {
                Ok(()) => maintenance.durable_start = start,
                Err(err) => {
                    warn!(dir = %self.dir().display(), log_start_offset = start, %err,
                        "could not record the log start offset: nothing deleted, retried by the next pass");
                    return Ok(0);
                }
            }
        }
        let removed: Vec<_> = self.segments.write().drain(..count).collect();
        maintenance
            .undeleted
            .extend(removed.iter().map(|segment| segment.base_offset));
        let dir = self.dir();
        maintenance
            .undeleted
            .retain(|&base| match remove_segment_files(dir, base) {
                Ok(()) => {
                    maintenance.dir_unsynced = true;
                    false
                }
                Err(err) => {
                    warn!(dir = %dir.display(), base_offset = base, %err,
                        "could not delete a deleted segment's files; retried by the next pass");
                    true
                }
            });
        if maintenance.dir_unsynced {
            match sync_dir(dir) {
                Ok(()) => maintenance.dir_unsynced = false,
                Err(err) => warn!(dir = %dir.display(), %err,
                    "could not sync the directory after deleting segments; retried by the next pass"),
            }
        }
        if !removed.is_empty() {
            info!(
                dir = %self.dir().display(),
                deleted = removed.len(),
                log_start_offset = start,
                "retention deleted segments"
            );
        }
        Ok(removed.len())
    }

    /// Rolls the active segment of a partition that has received nothing for the roll age,
    /// when it holds data and every record of the log is older than `cutoff`: the roll the
    /// next append would make, made here so that the pass can delete the whole log. Called
    /// with the append lock (`producers`) held; `true` if it rolled (the caller then waits for
    /// the seal). Record timestamps are the producers' own, so a busy partition stamping its
    /// records in the past is not rolled before its segment is old by the broker's clock.
    fn roll_expired(&self, producers: &ProducerTable, cutoff: i64, now_ms: i64) -> bool {
        let active = self.active();
        let expired = active.size() > 0
            && active.first_append_ms() <= now_ms.saturating_sub(self.roll_ms)
            && self
                .segments
                .read()
                .iter()
                .all(|segment| segment.max_timestamp() < cutoff);
        if !expired {
            return false;
        }
        match self.roll(&active, producers) {
            Ok(_) => {
                debug!(dir = %self.dir().display(), "rolled an idle partition's expired active segment");
                true
            }
            Err(err) => {
                warn!(dir = %self.dir().display(), %err,
                    "could not roll an idle partition's expired active segment; retried by the next pass");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::test_util::{batch, read_all, small_config};
    use crate::storage::{LogConfig, PartitionLog, StorageError};

    /// Four segments of two batches each (plus the active one holding one), batch `i` stamped
    /// `1_000 * i`.
    fn log(dir: &std::path::Path, config: LogConfig) -> (PartitionLog, usize) {
        let log = PartitionLog::open(dir, config).unwrap();
        let len = batch("s0", 1, 0).len();
        for i in 0..9 {
            log.append(batch(&format!("s{i}"), 1, 1_000 * i)).unwrap();
        }
        log.wait_for_seals();
        assert_eq!(log.segment_count(), 5);
        (log, len)
    }

    fn files(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn retention_by_size_keeps_at_least_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let len = batch("s0", 1, 0).len() as u64;
        let config = LogConfig {
            retention_bytes: Some(4 * len),
            ..small_config(2 * len)
        };
        let (log, _) = log(dir.path(), config);
        assert_eq!(log.size_bytes(), 9 * len);
        // 9 -> 7 -> 5 batches; dropping one more segment would leave 3 < 4.
        assert_eq!(log.apply_retention(0).unwrap(), 2);
        assert_eq!(log.size_bytes(), 5 * len);
        assert_eq!((log.log_start_offset(), log.segment_count()), (4, 3));
        assert_eq!(log.apply_retention(0).unwrap(), 0);
        assert!(!files(dir.path())
            .iter()
            .any(|f| f.starts_with("00000000000000000002")));
        assert!(matches!(
            log.read(3, 100),
            Err(StorageError::OffsetOutOfRange {
                offset: 3,
                start: 4,
                end: 9
            })
        ));
        assert_eq!(read_all(&log, 4, 1).len(), 5);
        drop(log);
        let log = PartitionLog::open(dir.path(), small_config(2 * len)).unwrap();
        assert_eq!((log.log_start_offset(), log.high_watermark()), (4, 9));
    }

    #[test]
    fn retention_by_time_deletes_the_expired_prefix_only() {
        let dir = tempfile::tempdir().unwrap();
        let len = batch("s0", 1, 0).len() as u64;
        let config = LogConfig {
            retention_ms: Some(10_000),
            ..small_config(2 * len)
        };
        let (log, _) = log(dir.path(), config);
        // Segment newest timestamps: 1_000, 3_000, 5_000, 7_000, active 8_000.
        assert_eq!(log.apply_retention(13_000).unwrap(), 1);
        assert_eq!(log.log_start_offset(), 2);
        assert_eq!(log.apply_retention(15_001).unwrap(), 2);
        assert_eq!(log.log_start_offset(), 6);
        // Everything expired: the active segment is rolled and goes too, leaving an empty one.
        assert_eq!(log.apply_retention(i64::MAX).unwrap(), 2);
        assert_eq!((log.segment_count(), log.log_start_offset()), (1, 9));
        assert_eq!(
            files(dir.path())
                .iter()
                .filter(|f| f.ends_with(".log"))
                .count(),
            1
        );
        let info = log.append(batch("new", 1, 0)).unwrap();
        assert_eq!(info.base_offset, 9);
    }

    #[test]
    fn no_retention_configured_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let len = batch("s0", 1, 0).len() as u64;
        let (log, _) = log(dir.path(), small_config(2 * len));
        assert_eq!(log.apply_retention(i64::MAX).unwrap(), 0);
        assert_eq!(log.segment_count(), 5);
    }

    /// Retention with a log start offset it could not record deletes nothing: a crash could
    /// bring the files back without the record that leaves them out, and a restart would move
    /// the log start back. The next pass records it, then deletes them. Here the record's
    /// directory sync fails, then (after a restart) its write: its path is a non-empty
    /// directory.
    #[test]
    fn nothing_is_deleted_before_the_log_start_offset_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let len = batch("s0", 1, 0).len() as u64;
        let config = LogConfig {
            retention_bytes: Some(0),
            ..small_config(2 * len)
        };
        let (log, _) = self::log(dir.path(), config.clone());
        let first = dir.path().join("00000000000000000000.log");
        crate::storage::segment::FAIL_SYNC_DIR.with(|n| n.set(1));
        assert_eq!(log.apply_retention(0).unwrap(), 0);
        assert_eq!(
            log.log_start_offset(),
            0,
            "the start moved before it was recorded"
        );
        assert!(first.exists());
        drop(log);

        // A crash took the record's unsynced rename.
        std::fs::remove_file(dir.path().join("log-start-offset")).unwrap();
        let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        assert_eq!(log.log_start_offset(), 0);
        let obstacle = dir.path().join("log-start-offset");
        std::fs::create_dir(&obstacle).unwrap();
        std::fs::write(obstacle.join("x"), b"").unwrap();
        assert_eq!(log.apply_retention(0).unwrap(), 0);
        assert_eq!(log.log_start_offset(), 0);
        drop(log);
        // A restart serves what the log served before the failed passes.
        std::fs::remove_dir_all(&obstacle).unwrap();
        let log = PartitionLog::open(dir.path(), config).unwrap();
        assert_eq!(log.log_start_offset(), 0);
        assert_eq!(log.apply_retention(0).unwrap(), 4);
        assert_eq!(log.log_start_offset(), 8);
        assert!(!first.exists());
    }

    /// A segment whose files cannot be removed (here its index path is a non-empty directory,
    /// which even root cannot unlink) is out of the log for good: a restart does not serve it
    /// again, and its files are removed by a later pass once that works.
    #[test]
    fn a_failed_delete_is_retried_and_not_served_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let len = batch("s0", 1, 0).len() as u64;
        let config = LogConfig {
            retention_bytes: Some(0),
            ..small_config(2 * len)
        };
        let (log, _) = self::log(dir.path(), config.clone());
        let first = dir.path().join("00000000000000000000.log");
        let obstacle = dir.path().join("00000000000000000000.index");
        std::fs::remove_file(&obstacle).unwrap();
        std::fs::create_dir(&obstacle).unwrap();
        std::fs::write(obstacle.join("x"), b"").unwrap();
        assert_eq!(log.apply_retention(0).unwrap(), 4);
        assert_eq!(log.log_start_offset(), 8);
        assert!(first.exists(), "the removal failed");
        // Retried by the next pass, which has nothing new to delete.
        std::fs::remove_dir_all(&obstacle).unwrap();
        assert_eq!(log.apply_retention(0).unwrap(), 0);
        assert!(!first.exists());
        assert_eq!(
            files(dir.path())
                .iter()
                .filter(|f| f.ends_with(".log"))
                .count(),
            1
        );

        // The same failure, then a restart (without retention configured): the deleted prefix
        // is not served again, and its files are removed by the open, or when they can be.
        for obstacle_stays in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (log, _) = self::log(dir.path(), config.clone());
            let first = dir.path().join("00000000000000000000.log");
            let obstacle = dir.path().join("00000000000000000000.index");
            std::fs::remove_file(&obstacle).unwrap();
            std::fs::create_dir(&obstacle).unwrap();
            std::fs::write(obstacle.join("x"), b"").unwrap();
            assert_eq!(log.apply_retention(0).unwrap(), 4);
            drop(log);
            if !obstacle_stays {
                std::fs::remove_dir_all(&obstacle).unwrap();
            }
            let log = PartitionLog::open(dir.path(), small_config(2 * len)).unwrap();
            assert_eq!((log.log_start_offset(), log.high_watermark()), (8, 9));
            assert!(matches!(
                log.read(0, 100),
                Err(StorageError::OffsetOutOfRange { start: 8, .. })
            ));
            assert_eq!(first.exists(), obstacle_stays);
            if obstacle_stays {
                std::fs::remove_dir_all(&obstacle).unwrap();
                assert_eq!(log.apply_retention(0).unwrap(), 0);
                assert!(!first.exists());
            }
            assert_eq!(
                files(dir.path()),
                [
                    "00000000000000000008.log",
                    "00000000000000000008.snapshot",
                    "log-start-offset"
                ]
            );
            drop(log);
            let log = PartitionLog::open(dir.path(), small_config(2 * len)).unwrap();
            assert_eq!((log.log_start_offset(), log.high_watermark()), (8, 9));
        }
    }

    #[test]
    fn a_reader_holding_a_deleted_segment_keeps_reading() {
        let dir = tempfile::tempdir().unwrap();
        let len = batch("s0", 1, 0).len() as u64;
        let config = LogConfig {
            retention_bytes: Some(0),
            ..small_config(2 * len)
        };
        let (log, _) = log(dir.path(), config);
        let held = log.segments.read()[0].clone();
        assert_eq!(log.apply_retention(0).unwrap(), 4);
        assert!(!dir.path().join("00000000000000000000.log").exists());
        let (position, end) = held.find_batch(1).unwrap().unwrap();
        let mut out = Vec::new();
        held.read_batches(&mut out, position, end, usize::MAX, true)
            .unwrap();
        assert_eq!(out.len() as u64, len);
    }

    /// A partition that receives nothing more: once every record is past the retention, the
    /// pass rolls its active segment and deletes it; before, nothing goes. The log then starts
    /// at its end, across a restart too, and appends go on from there.
    #[test]
    fn an_idle_partition_is_emptied_once_all_its_records_are_past_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let hour: i64 = 3_600_000;
        let config = LogConfig {
            retention_ms: Some(hour as u64),
            ..small_config(1 << 20)
        };
        let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        log.append(batch("a", 2, 1_000)).unwrap();
        log.append(batch("b", 3, 5_000)).unwrap();
        let newest = 5_002;
        // Every record is past the retention, but the segment took a batch within the roll
        // age (an hour here) on the broker's clock: a partition that receives old timestamps
        // is not idle.
        log.active().set_first_append_ms(newest + 2);
        assert_eq!(log.apply_retention(newest + 1 + hour).unwrap(), 0);
        assert_eq!(log.segment_count(), 1);
        // Idle for the roll age, but its newest record is not past the retention yet.
        log.active().set_first_append_ms(0);
        assert_eq!(log.apply_retention(newest + hour).unwrap(), 0);
        assert_eq!((log.segment_count(), log.log_start_offset()), (1, 0));
        assert_eq!(read_all(&log, 0, 1 << 20).len(), 5);

        assert_eq!(log.apply_retention(newest + 1 + hour).unwrap(), 1);
        assert_eq!(log.segment_count(), 1);
        assert_eq!((log.log_start_offset(), log.high_watermark()), (5, 5));
        assert!(matches!(
            log.read(0, 100),
            Err(StorageError::OffsetOutOfRange { start: 5, .. })
        ));
        assert!(!files(dir.path()).contains(&"00000000000000000000.log".to_owned()));
        // Nothing left to roll: an empty active segment stays.
        assert_eq!(log.apply_retention(newest + 2 * hour).unwrap(), 0);
        assert_eq!(log.segment_count(), 1);
        drop(log);

        let log = PartitionLog::open(dir.path(), config).unwrap();
        assert_eq!((log.log_start_offset(), log.high_watermark()), (5, 5));
        assert_eq!(log.append(batch("c", 1, 9_000)).unwrap().base_offset, 5);
        assert_eq!(read_all(&log, 5, 1 << 20).len(), 1);
    }
}
