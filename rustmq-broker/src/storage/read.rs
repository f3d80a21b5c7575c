//! Reading from a [`PartitionLog`]: fetches by offset and lookups by timestamp.
//!
//! Both take the segment list's read lock only long enough to clone the `Arc`s of the segments
//! they need; the file reads happen without any lock, so they never hold up appends.

use std::sync::Arc;

use bytes::Bytes;

use super::segment::Segment;
use super::{PartitionLog, StorageError};

impl PartitionLog {
    /// Whole stored batches, starting with the one that contains `offset`, concatenated up to
    /// `max_bytes` (but at least one batch when any is available, however large). May span
    /// segments. `offset == high_watermark()` gives an empty answer; an offset outside
    /// `log_start_offset()..=high_watermark()` is [`StorageError::OffsetOutOfRange`].
    pub fn read(&self, offset: u64, max_bytes: u32) -> Result<Bytes, StorageError> {
        let Some(segments) = self.segments_from(offset)? else {
            return Ok(Bytes::new());
        };
        let budget = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut first = true;
        for segment in &segments {
            let (position, end) = if std::mem::take(&mut first) {
                match segment.find_batch(offset)? {
                    Some(found) => found,
                    // `offset` fell in a gap left by a damaged segment: continue after it.
                    None => continue,
                }
            } else {
                (0, segment.size())
            };
            let remaining = budget.saturating_sub(out.len());
            let at_least_one = out.is_empty();
            let stopped_at =
                segment.read_batches(&mut out, position, end, remaining, at_least_one)?;
            if stopped_at < end || out.len() >= budget {
                break;
            }
        }
        Ok(Bytes::from(out))
    }

    /// The segments from the one that may hold `offset` onwards; `None` at the high watermark.
    fn segments_from(&self, offset: u64) -> Result<Option<Vec<Arc<Segment>>>, StorageError> {
        let segments = self.segments.read();
        // Read under the lock so the range check and the segment list agree.
        let end = self.high_watermark();
        let start = segments.first().map_or(end, |s| s.base_offset);
        if offset == end {
            return Ok(None);
        }
        if offset < start || offset > end {
            return Err(StorageError::OffsetOutOfRange { offset, start, end });
        }
        let index = segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        Ok(Some(segments[index..].to_vec()))
    }

    /// The first record whose timestamp is `>= timestamp`, as `(offset, record timestamp)`;
    /// `None` if every record is older.
    ///
    /// Segments are skipped by their largest timestamp; inside the first candidate the time
    /// index gives where to start, batch headers are scanned until one has a `max_timestamp`
    /// that is recent enough, and that batch is decoded to find the exact record.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(u64, i64)>, StorageError> {
        let found = self.offset_for_timestamp_within(timestamp, &|_| Ok::<(), usize>(()))?;
        Ok(found.unwrap_or(None))
    }

    /// [`offset_for_timestamp`](Self::offset_for_timestamp), holding `room(n)` while a batch
    /// that declares `n` bytes uncompressed (0 for an uncompressed one) is decoded: the
    /// broker's budget of bytes being decompressed. `room` answers `Err(n)` when there is no
    /// room for `n` bytes now: the lookup then ends with `Ok(Err(n))`, for the caller to
    /// wait for the room where waiting holds no thread, and to look again.
    pub fn offset_for_timestamp_within<R>(
        &self,
        timestamp: i64,
        room: &dyn Fn(usize) -> Result<R, usize>,
    ) -> Result<Result<Option<(u64, i64)>, usize>, StorageError> {
        let segments = self.segments.read().clone();
        let limit = self.config().max_uncompressed_batch;
        for segment in segments {
            match segment.find_timestamp(timestamp, limit, room)? {
                Ok(None) => {}
                found => return Ok(found),
            }
        }
        Ok(Ok(None))
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use proptest::prelude::*;
    use rustmq_protocol::{BatchIter, Compression, RecordBatchBuilder};

    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    use super::*;
    use crate::storage::test_util::{batch, batch_with, raw_log, read_all, small_config};
    use crate::storage::LogConfig;

    fn base_offsets(bytes: Bytes) -> Vec<u64> {
        BatchIter::new(bytes)
            .map(|b| b.unwrap().header().base_offset)
            .collect()
    }

    #[test]
    fn max_bytes_bounds_whole_batches_but_never_returns_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(250)).unwrap();
        let mut batches = Vec::new();
        for i in 0..12 {
            let b = batch(&format!("r{i:02}"), 2, 0);
            batches.push((log.append(b.clone()).unwrap().base_offset, b.len()));
        }
        assert!(log.segment_count() >= 4);
        let len = batches[0].1;
        assert!(batches.iter().all(|&(_, l)| l == len));
        let len_u32 = len as u32;

        assert_eq!(base_offsets(log.read(0, 0).unwrap()), [0]);
        assert_eq!(base_offsets(log.read(0, 1).unwrap()), [0]);
        assert_eq!(base_offsets(log.read(0, len_u32).unwrap()), [0]);
        assert_eq!(
            base_offsets(log.read(1, 2 * len_u32 + len_u32 / 2).unwrap()),
            [0, 2]
        );
        assert_eq!(base_offsets(log.read(5, 3 * len_u32).unwrap()), [4, 6, 8]);
        // One read crosses every segment boundary.
        let all = log.read(0, u32::MAX).unwrap();
        let expected: Vec<u64> = batches.iter().map(|&(o, _)| o).collect();
        assert_eq!(base_offsets(all.clone()), expected);
        assert_eq!(all, raw_log(dir.path()));
        // From the middle of the last batch to the end.
        assert_eq!(base_offsets(log.read(23, u32::MAX).unwrap()), [22]);
    }

    /// Every offset's read starts with the batch that holds it: the latest batches are found
    /// from the positions kept for them, older ones by a walk from the offset index, before
    /// and after a reopen.
    #[test]
    fn a_read_starts_with_the_batch_holding_its_offset_however_recent() {
        let dir = tempfile::tempdir().unwrap();
        let config = || small_config(1 << 20);
        let log = PartitionLog::open(dir.path(), config()).unwrap();
        let mut batches = Vec::new();
        for i in 0..30u32 {
            let count = 1 + i % 4;
            let info = log.append(batch(&format!("t{i}"), count, 0)).unwrap();
            batches.push((info.base_offset, info.last_offset));
        }
        assert_eq!(log.segment_count(), 1);
        let check = |log: &PartitionLog| {
            for &(base, last) in &batches {
                for offset in base..=last {
                    let first = BatchIter::new(log.read(offset, 1).unwrap()).next();
                    let header = *first.expect("a batch").unwrap().header();
                    assert_eq!(header.base_offset, base, "read at {offset}");
                }
            }
        };
        check(&log);
        log.close().unwrap();
        drop(log);
        check(&PartitionLog::open(dir.path(), config()).unwrap());
    }

    #[test]
    fn offsets_outside_the_log_are_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
        assert!(log.read(0, 100).unwrap().is_empty());
        log.append(batch("a", 3, 0)).unwrap();
        assert!(
            log.read(3, 100).unwrap().is_empty(),
            "at the high watermark"
        );
        assert!(matches!(
            log.read(4, 100),
            Err(StorageError::OffsetOutOfRange {
                offset: 4,
                start: 0,
                end: 3
            })
        ));
    }

    #[test]
    fn read_does_not_see_a_damaged_sealed_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(400)).unwrap();
        for i in 0..20 {
            log.append(batch(&format!("d{i}"), 1, 0)).unwrap();
        }
        log.close().unwrap();
        let second = log.segments.read()[1].base_offset;
        drop(log);
        // Garbage at the end of the first (sealed) segment: it cannot be truncated away
        // because later segments exist, so open keeps it out of reach instead.
        let path = dir.path().join("00000000000000000000.log");
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 5] ^= 0xFF;
        let last_start = n - batch("d0", 1, 0).len();
        bytes[last_start + 20] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let log = PartitionLog::open(dir.path(), small_config(400)).unwrap();
        let records = read_all(&log, 0, 1);
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        let mut expected: Vec<u64> = (0..second - 1).collect();
        expected.extend(second..20);
        assert_eq!(offsets, expected, "the damaged batch is skipped");
    }

    /// Three segments with out-of-order timestamps:
    /// offsets 0..5 at 100..105, 5..8 at 50..53, 8..18 at 200..210 (lz4), 18..20 at 150..152.
    fn timestamped_log(dir: &std::path::Path) -> PartitionLog {
        let log = PartitionLog::open(dir, small_config(250)).unwrap();
        log.append(batch("a", 5, 100)).unwrap();
        log.append(batch("b", 3, 50)).unwrap();
        let mut big = RecordBatchBuilder::new().compression(Compression::Lz4, 1);
        for i in 0..10 {
            big.push(200 + i, None, Some(&[b'x'; 40][..]), []);
        }
        log.append(BytesMut::from(&big.build().unwrap()[..]))
            .unwrap();
        log.append(batch_with("c", 2, 150, Compression::Zstd, None))
            .unwrap();
        log
    }

    #[test]
    fn offset_for_timestamp_finds_the_first_record_at_or_after() {
        let dir = tempfile::tempdir().unwrap();
        let log = timestamped_log(dir.path());
        assert!(log.segment_count() >= 2);
        for reopen in [false, true] {
            let log = if reopen {
                log.close().unwrap();
                PartitionLog::open(dir.path(), small_config(250)).unwrap()
            } else {
                timestamped_log(tempfile::tempdir().unwrap().path())
            };
            let at = |ts| log.offset_for_timestamp(ts).unwrap();
            assert_eq!(at(i64::MIN), Some((0, 100)));
            assert_eq!(at(50), Some((0, 100)), "offset order wins over time order");
            assert_eq!(at(102), Some((2, 102)), "inside a batch");
            assert_eq!(at(104), Some((4, 104)));
            assert_eq!(at(105), Some((8, 200)), "skips the older batch after it");
            assert_eq!(at(204), Some((12, 204)), "inside a compressed batch");
            assert_eq!(at(209), Some((17, 209)));
            assert_eq!(at(210), None, "beyond the end");
            assert_eq!(at(i64::MAX), None);
        }
    }

    #[test]
    fn offset_for_timestamp_uses_the_time_index_across_many_batches() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(2_000)).unwrap();
        for i in 0..200i64 {
            log.append(batch(&format!("t{i}"), 2, i * 10)).unwrap();
        }
        assert!(log.segments.read()[0].max_timestamp() > 0);
        for ts in [0, 1, 5, 10, 11, 995, 1_000, 1_991] {
            let batch = ts / 10;
            let (offset, found) = if ts % 10 <= 1 {
                (batch * 2 + ts % 10, ts)
            } else {
                ((batch + 1) * 2, (batch + 1) * 10)
            };
            assert_eq!(
                log.offset_for_timestamp(ts).unwrap(),
                Some((offset as u64, found)),
                "ts {ts}"
            );
        }
        assert_eq!(log.offset_for_timestamp(1_992).unwrap(), None);
    }

    /// A sealed segment's indexes are paged out to their files (one entry in 64 stays in
    /// memory): every read and timestamp lookup answers as with the whole indexes in memory,
    /// from blocks of the files, after a reopen too. A file of the same name put in their place
    /// (a topic deleted and made again), a damaged block, or no files at all: the lookups walk
    /// further from the entry in memory, and still find.
    #[test]
    fn a_sealed_segment_answers_from_its_paged_index_files() {
        // Files kept open are counted below, and damaged in place once open.
        let _bound = crate::storage::index::KEEP_OPEN_BOUND_LOCK
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            // An index entry for every batch: ~1,000 entries, 16 blocks.
            index_interval_bytes: 1,
            ..small_config(80_000)
        };
        let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        log.sealer
            .paused
            .store(true, std::sync::atomic::Ordering::Release);
        let mut i = 0i64;
        while log.segment_count() < 2 {
            // Mostly rising timestamps, with a step back every seventh batch.
            let ts = if i % 7 == 6 { i * 10 - 25 } else { i * 10 };
            log.append(batch(&format!("b{i}"), 1 + (i % 3) as u32, ts))
                .unwrap();
            i += 1;
        }
        let end = log.segments.read()[0].next_offset();
        let max_ts = i * 10;
        let answers = |log: &PartitionLog| {
            let reads: Vec<Bytes> = (0..end).map(|o| log.read(o, 1).unwrap()).collect();
            let times: Vec<_> = (-5..max_ts)
                .step_by(3)
                .map(|ts| log.offset_for_timestamp(ts).unwrap())
                .collect();
            (reads, times)
        };
        let sealed = |log: &PartitionLog| Arc::clone(&log.segments.read()[0]);
        // Every lookup answered from a block of the files, none from the summary alone.
        let from_blocks = |log: &PartitionLog| {
            let [blocks, fallbacks] = sealed(log).paged_counts();
            assert!(
                blocks > 1_000 && fallbacks == 0,
                "{blocks} blocks, {fallbacks}"
            );
        };
        let whole = answers(&log);
        let memory = sealed(&log).index_memory();
        assert!(!sealed(&log).is_paged());
        assert!(end > 1_500, "{end} offsets");

        log.wait_for_seals();
        assert!(sealed(&log).is_paged());
        assert!(
            sealed(&log).index_memory() * 30 < memory,
            "{} bytes paged, {memory} whole",
            sealed(&log).index_memory()
        );
        assert!(answers(&log) == whole, "paged after the seal");
        from_blocks(&log);
        drop(log);

        let reopen = || {
            let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
            assert!(sealed(&log).is_paged(), "paged by the open");
            log
        };
        let log = reopen();
        assert!(answers(&log) == whole, "paged after a reopen");
        from_blocks(&log);
        // Both index files were read, and are kept open until a pass finds them idle.
        assert_eq!(log.release_idle_index_files(), 0);
        assert_eq!(log.release_idle_index_files(), 2);
        assert!(answers(&log) == whole, "opened again");
        drop(log);

        // Another file at the path, whose entries fit the summary but point one byte into
        // their batches.
        let index = dir.path().join("00000000000000000000.index");
        let original = std::fs::read(&index).unwrap();
        let log = reopen();
        let mut other = original.clone();
        for (n, entry) in other.chunks_exact_mut(8).enumerate() {
            if n % 64 != 0 {
                let position = u32::from_be_bytes(entry[4..].try_into().unwrap());
                entry[4..].copy_from_slice(&(position + 1).to_be_bytes());
            }
        }
        let tmp = dir.path().join("other.tmp");
        std::fs::write(&tmp, &other).unwrap();
        std::fs::rename(&tmp, &index).unwrap();
        assert!(answers(&log) == whole, "another file at the path");
        let [blocks, fallbacks] = sealed(&log).paged_counts();
        assert!(fallbacks > 1_000, "{blocks} blocks, {fallbacks}");
        drop(log);
        std::fs::write(&index, &original).unwrap();

        // Damages `path` in place once the log has it open (its identity was checked before
        // the damage: the block check is what must catch it), then puts it back.
        let damage_in_place = |path: &std::path::Path, damaged: &[u8], original: &[u8], what| {
            let log = reopen();
            assert!(answers(&log) == whole);
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .write_all_at(damaged, 0)
                .unwrap();
            assert!(answers(&log) == whole, "{what}");
            assert!(sealed(&log).paged_counts()[1] > 0, "{what}");
            drop(log);
            std::fs::write(path, original).unwrap();
        };

        // A damaged block in the file read (an entry pointing at a later batch).
        let mut damaged = original.clone();
        let later = damaged[8 * 340 + 4..8 * 341].to_vec();
        damaged[8 * 322 + 4..8 * 323].copy_from_slice(&later);
        damage_in_place(&index, &damaged, &original, "a damaged index block");

        // A damaged last block of the time index, in order but naming offsets past the
        // segment's end from its middle on: no summary entry follows it to bound it.
        let time_index = dir.path().join("00000000000000000000.timeindex");
        let original_times = std::fs::read(&time_index).unwrap();
        let entries = original_times.len() / 12;
        let from = (entries - 1) / 64 * 64 + 1 + (entries - 1) % 64 / 2;
        assert!(
            !from.is_multiple_of(64) && from < entries - 1,
            "{from} of {entries}"
        );
        let mut damaged = original_times.clone();
        for (n, entry) in damaged.chunks_exact_mut(12).enumerate().skip(from) {
            let relative = u32::try_from(end).unwrap() + u32::try_from(n).unwrap();
            entry[8..].copy_from_slice(&relative.to_be_bytes());
        }
        damage_in_place(
            &time_index,
            &damaged,
            &original_times,
            "a damaged time index block",
        );

        // No files.
        let log = reopen();
        std::fs::remove_file(&index).unwrap();
        std::fs::remove_file(dir.path().join("00000000000000000000.timeindex")).unwrap();
        assert!(answers(&log) == whole, "no index files");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn appended_batches_read_back(
            batches in prop::collection::vec((1u32..6, 0usize..200, 0usize..4), 1..30),
            segment_bytes in 100u64..3_000,
            max_bytes in 0u32..2_000,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let config = small_config(segment_bytes);
            let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
            let mut expected = Vec::new();
            let mut stored = BytesMut::new();
            for (i, &(count, value_len, codec)) in batches.iter().enumerate() {
                let mut builder = RecordBatchBuilder::new().compression(Compression::ALL[codec], 1);
                for r in 0..count {
                    let value = vec![b'a' + (i % 26) as u8; value_len + r as usize];
                    builder.push(i as i64, None, Some(&value), []);
                }
                let mut raw = BytesMut::from(&builder.build().unwrap()[..]);
                let info = log.append(raw.clone()).unwrap();
                prop_assert_eq!(info.base_offset, expected.len() as u64);
                rustmq_protocol::batch::set_base_offset(&mut raw, info.base_offset);
                stored.extend_from_slice(&raw);
                for r in 0..count {
                    expected.push(value_len + r as usize);
                }
            }
            for round in 0..2 {
                let records = read_all(&log, 0, max_bytes);
                let lens: Vec<usize> = records.iter().map(|r| r.value.as_ref().unwrap().len()).collect();
                prop_assert_eq!(&lens, &expected, "round {}", round);
                let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
                prop_assert_eq!(offsets, (0..expected.len() as u64).collect::<Vec<_>>());
                prop_assert_eq!(log.read(0, u32::MAX).unwrap(), stored.clone().freeze());
                // The log stays usable after close.
                log.close().unwrap();
            }
            drop(log);
            let reopened = PartitionLog::open(dir.path(), config).unwrap();
            prop_assert_eq!(reopened.high_watermark(), expected.len() as u64);
            prop_assert_eq!(reopened.read(0, u32::MAX).unwrap(), stored.freeze());
        }
    }
}
