//! Retention: deleting whole old segments by age and by total size.

use tracing::{info, warn};

use super::{PartitionLog, StorageError};

impl PartitionLog {
    /// Deletes the oldest non-active segments that retention no longer covers and returns how
    /// many went.
    ///
    /// A segment goes by time when its newest batch timestamp is older than
    /// `now_ms - retention_ms`, and by size while the log without it still holds at least
    /// `retention_bytes`. Deletion stops at the first segment that stays, so the log remains
    /// contiguous; `log_start_offset` moves to the first remaining segment. Readers already
    /// holding a deleted segment finish their read from the unlinked file.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        // The whole pass, file removals included, is over before a retirement completes: the
        // paths may belong to a new topic of the same name after it.
        let _maintenance = self.maintenance.lock();
        if self.retired.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(0);
        }
        let config = self.config();
        let cutoff = config
            .retention_ms
            .map(|ms| now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)));
        let removed: Vec<_> = {
            let mut segments = self.segments.write();
            let mut total: u64 = segments.iter().map(|s| s.size()).sum();
            let mut count = 0;
            // The active segment (the last) is never deleted.
            while count + 1 < segments.len() {
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
            segments.drain(..count).collect()
        };
        for segment in &removed {
            // The segment is already out of the log; a file that cannot be removed now is
            // only wasted space, and it is retried by the next open's retention pass.
            if let Err(err) = segment.delete_files() {
                warn!(dir = %self.dir().display(), base_offset = segment.base_offset, %err,
                    "could not delete a retired segment");
            }
        }
        if !removed.is_empty() {
            info!(
                dir = %self.dir().display(),
                deleted = removed.len(),
                log_start_offset = self.log_start_offset(),
                "retention deleted segments"
            );
        }
        Ok(removed.len())
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
        // Everything expired: the active segment still stays.
        assert_eq!(log.apply_retention(i64::MAX).unwrap(), 1);
        assert_eq!((log.segment_count(), log.log_start_offset()), (1, 8));
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
}
