//! Opening a partition log: finding its segments, repairing a torn tail, replaying producers.
//!
//! A crash can tear only the last segment, and a rolled one whose seal had not synced it yet:
//! the seal writes the producer snapshot at the segment's end only after its data is on disk
//! (see `super::seal`). So the last segment, and every one ending after the latest snapshot, is
//! verified batch by batch (header, offsets, CRC) and truncated at the first bad byte, unless a
//! clean close left its marker: the segment is then as the close synced it, and only its
//! batches after its last index entry are checked. The idempotent producer table comes from
//! the latest producer snapshot and the batch headers after it; sealed segments below that
//! snapshot are opened from their index files, and the ones after it have their headers walked
//! (which yields their indexes on the way).

use std::fs;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use parking_lot::{Mutex, RwLock};
use rustmq_protocol::BatchHeader;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::log::now_ms;
use super::retention::{read_start_offset, Maintenance};
use super::seal::Sealer;
use super::segment::{
    list_segments, remove_segment_files, segment_path, sync_dir, Segment, LOG_EXT,
};
use super::snapshot;
use super::sync::GroupCommit;
use super::{LogConfig, PartitionLog, StorageError};

/// How the last open on this thread opened its segments (for tests).
#[cfg(test)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opened {
    /// Segments whose batches were walked (verified, or headers only).
    pub(crate) scanned: u32,
    /// Segments opened from their index files (the active one too after a clean close, or
    /// an empty active one then, which has nothing to read).
    pub(crate) indexed: u32,
}

#[cfg(test)]
thread_local! {
    pub(crate) static OPENED: std::cell::Cell<Opened> = std::cell::Cell::new(Opened::default());
}

/// How this thread's last open of a log opened its segments (tests).
#[cfg(test)]
pub(crate) fn opened() -> Opened {
    OPENED.with(|o| o.get())
}

/// Counts a segment opened one way or the other in `OPENED` (tests only).
macro_rules! count_opened {
    ($how:ident) => {
        #[cfg(test)]
        OPENED.with(|o| {
            let mut opened = o.get();
            opened.$how += 1;
            o.set(opened);
        });
    };
}

impl PartitionLog {
    /// Opens (creating if needed) the partition directory and recovers it.
    ///
    /// The last segment is verified batch by batch (header, offsets, CRC) and truncated at the
    /// first incomplete or invalid batch, the signature of a write torn by a crash; after a
    /// clean close ([`close`](Self::close)) it is opened from its index files instead (only
    /// its batches after the last index entry are checked) and nothing is replayed. A rolled
    /// segment ending after the latest producer snapshot is verified the same way (its seal,
    /// which syncs it before it writes that snapshot, had not finished); older segments were
    /// synced by their seal. The idempotent producer table is loaded from
    /// the latest producer snapshot that fits the segments (the roll that sealed the segment
    /// before it wrote it) and rebuilt from the batch headers after it: the sealed segments
    /// below it are opened from their index files, reading only their last batches; the others,
    /// and any whose index files do not fit, get a header-only scan, which also checks their
    /// index files (rewritten if missing or stale). Without a usable snapshot every segment is
    /// scanned.
    ///
    /// Two kinds of leftovers are removed rather than served: segments below the log start
    /// offset retention recorded (their removal failed, or a crash undid it), and an empty
    /// segment file whose base lies inside the segment before it (a roll that failed after
    /// creating its file, or a crash that kept the file of such a roll). A non-empty segment
    /// overlapping the one before it is [`StorageError::CorruptLog`].
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self, StorageError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir)?;
        // Taken (removed) before anything can be appended, whichever way the open goes.
        let clean = snapshot::take_clean(dir)?;
        Self::open_from(dir, config, clean, true)
    }

    /// [`open`](Self::open). After a clean close (`clean`, if it fits the files found), nothing
    /// is replayed and every segment is opened from its index files; else, with `snapshots`,
    /// producers are loaded from the latest usable producer snapshot and replayed only from its
    /// offset on, and the sealed segments below it are opened from their index files (see
    /// [`super::snapshot`]).
    fn open_from(
        dir: &Path,
        config: LogConfig,
        clean: Option<snapshot::CleanShutdown>,
        snapshots: bool,
    ) -> Result<Self, StorageError> {
        let dir = dir.to_path_buf();
        let mut config = config;
        // Index entries hold 32-bit file positions.
        config.segment_bytes = config.segment_bytes.min(super::MAX_SEGMENT_BYTES);
        let mut bases = list_segments(&dir)?;
        let mut maintenance = Maintenance::default();
        // Segments wholly below the recorded start offset (the next one starts at or before
        // it) were deleted by retention; the last segment always stays.
        let recorded_start = read_start_offset(&dir)?;
        if let Some(start) = recorded_start {
            let deleted = bases.windows(2).take_while(|w| w[1] <= start).count();
            for base in bases.drain(..deleted) {
                warn!(dir = %dir.display(), base_offset = base, log_start_offset = start,
                    "removing a segment retention deleted");
                maintenance.undeleted.push(base);
            }
        }
        let lens = bases
            .iter()
            .map(|&base| Ok(fs::metadata(segment_path(&dir, base, LOG_EXT))?.len()))
            .collect::<Result<Vec<u64>, StorageError>>()?;
        // The segment recovered as the active one: the last that holds data (the last file if
        // none does). Empty files after it are either the new segment of a roll whose first
        // append never happened (it starts where this one ends and becomes the active one) or
        // strays of a failed roll (they start inside it), removed below.
        let last_holding_data = lens
            .iter()
            .rposition(|&len| len > 0)
            .unwrap_or(bases.len().saturating_sub(1));
        // A rolled segment is synced by its seal before the snapshot at its end is written
        // (see `super::seal`): segments ending at or below the latest snapshot are on disk. A
        // crash before a seal finished leaves the segment it was sealing after that, and it is
        // verified like the active one. (A log without any snapshot is verified whole.)
        // Listed once: for this, the snapshot to load, and the one to write at the end.
        let listed = snapshot::list(&dir)?;
        let vouched = listed.last().copied().unwrap_or(0);
        let first_unvouched = (0..bases.len())
            .find(|&i| bases.get(i + 1).is_none_or(|&end| end > vouched))
            .unwrap_or(0);
        let recover_from = last_holding_data.min(first_unvouched);
        let interval = config.index_interval_bytes;
        // Replayed producers count as active now: how long they were idle before the open is
        // not known (record timestamps are the producers' own), so they expire a full
        // `producer_id_expiration_ms` later at the earliest. Those of a snapshot keep the time
        // of their last write before it.
        let opened_at = now_ms();
        // A snapshot at the base of a segment up to the last one holding data: the batches
        // before it are in it. One at a later, empty segment is of a roll that no batch
        // followed, or of a failed one, and is left for the one before it.
        let last_with_data = bases.get(last_holding_data).copied().unwrap_or(0);
        // After a clean close, the files are as the close left them and its snapshot is at
        // the end of the log.
        let mut clean = clean.filter(|c| {
            bases.last() == Some(&c.active_base) && lens.last() == Some(&c.active_size)
        });
        let mut snapshot = None;
        if let Some(c) = clean {
            snapshot = snapshot::load_latest_of(&dir, &listed, opened_at, |offset| {
                offset == c.next_offset
            })?;
            if snapshot.is_none() {
                clean = None;
            }
        }
        if snapshot.is_none() && snapshots {
            snapshot = snapshot::load_latest_of(&dir, &listed, opened_at, |offset| {
                offset <= last_with_data && bases.binary_search(&offset).is_ok()
            })?;
        }
        let loaded = snapshot.is_some();
        let (replay_from, mut producers) = snapshot.unwrap_or_default();
        if loaded {
            // Its producers keep the time of their last write (replayed ones count from now).
            producers.hold_expiry_until(opened_at.saturating_add(
                i64::try_from(crate::config::MIN_PRODUCER_ID_EXPIRATION_MS).unwrap_or(i64::MAX),
            ));
        }
        #[cfg(test)]
        OPENED.with(|o| o.set(Opened::default()));
        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(bases.len().max(1));
        let mut recovered_at = None;
        // A rolled segment recovery cut short: the segments after it are dropped.
        let mut cut = None;
        // The producers at the last segment's base, when segments before it were recovered: a
        // snapshot there (written once they are synced) spares the next open verifying them.
        let mut end_snapshot = None;
        for (i, &base) in bases.iter().enumerate() {
            if let Some(previous) = segments.last() {
                let previous_end = previous.next_offset();
                if base == replay_from && base < previous_end {
                    // The segments before the snapshot's go past it: it is not of a roll that
                    // sealed them (a failed roll's, whose segment was left empty).
                    warn!(dir = %dir.display(), snapshot = replay_from, previous_end,
                        "a producer snapshot does not fit the segments; replaying the whole log");
                    return Self::open_from(&dir, config, None, false);
                }
                if base < previous_end && lens[i] == 0 {
                    warn!(
                        dir = %dir.display(),
                        base_offset = base,
                        previous_end,
                        "removing an empty segment file inside the previous segment, left by a failed roll"
                    );
                    maintenance.undeleted.push(base);
                    continue;
                }
            }
            // (Unless the seal wrote it: a roll no batch followed.)
            if i == bases.len() - 1
                && recovered_at.is_some()
                && listed.binary_search(&base).is_err()
            {
                end_snapshot = Some((base, snapshot::encode(base, &producers)));
            }
            let mut replay = |h: &BatchHeader| producers.record(h, h.base_offset, opened_at);
            let active_after_close = clean.filter(|_| i == bases.len() - 1);
            let segment = if let Some(c) = active_after_close {
                let segment = if c.active_size == 0 {
                    Some(Segment::recover(&dir, base, interval, &mut replay)?)
                } else {
                    Segment::open_indexed(&dir, base, interval, true)?
                };
                match segment {
                    Some(segment) if segment.next_offset() == c.next_offset => {
                        count_opened!(indexed);
                        segment
                    }
                    _ => {
                        warn!(dir = %dir.display(), "the active segment does not fit the clean-shutdown marker; recovering it");
                        return Self::open_from(&dir, config, None, true);
                    }
                }
            } else if i >= recover_from && clean.is_none() {
                recovered_at.get_or_insert(segments.len());
                count_opened!(scanned);
                let segment = Segment::recover(&dir, base, interval, &mut replay)?;
                // Short of the next segment's base: batches of it were lost (torn, or a file
                // that never got its last writes), those after them kept.
                if bases
                    .get(i + 1)
                    .is_some_and(|&next| segment.next_offset() < next)
                {
                    cut = Some(i);
                }
                segment
            } else if base < replay_from {
                match Segment::open_indexed(&dir, base, interval, false)? {
                    Some(segment) => {
                        count_opened!(indexed);
                        segment
                    }
                    None => {
                        count_opened!(scanned);
                        Segment::open_sealed(&dir, base, interval, &mut |_| {})?
                    }
                }
            } else {
                count_opened!(scanned);
                Segment::open_sealed(&dir, base, interval, &mut replay)?
            };
            if let Some(previous) = segments.last() {
                let previous_end = previous.next_offset();
                if base < previous_end {
                    return Err(StorageError::CorruptLog {
                        dir,
                        reason: format!(
                            "segment {base} overlaps the previous one, which ends at {previous_end}"
                        ),
                    });
                }
                if base > previous_end {
                    warn!(
                        dir = %dir.display(),
                        missing_from = previous_end,
                        missing_to = base,
                        "offsets missing between segments; readers will skip them"
                    );
                }
            }
            segments.push(Arc::new(segment));
            if cut.is_some() {
                break;
            }
        }
        if let Some(i) = cut {
            // A crash before the seal of segment `i` lost batches of it; the segments after it
            // hold only batches that came after those, never acknowledged as durable. Served,
            // they would leave a hole in the partition (and an idempotent producer retrying the
            // lost batches would be refused as out of sequence): removed, durably, before
            // anything is appended, as Kafka does.
            let last = segments.last().expect("segment i");
            warn!(dir = %dir.display(), base_offset = last.base_offset, end = last.next_offset(),
                removed = bases.len() - i - 1,
                "a rolled segment lost its tail in a crash before its seal; removing the segments after it");
            for &base in &bases[i + 1..] {
                remove_segment_files(&dir, base)?;
            }
            let kept = last.base_offset;
            snapshot::remove(&dir, |offset| offset > kept)?;
            sync_dir(&dir)?;
        }
        // Recovered segments followed by another (the active one, maybe an empty one a roll
        // created) are sealed: make them durable (recovery may have truncated them) with their
        // index files.
        if let Some(first) = recovered_at {
            for segment in &segments[first..segments.len() - 1] {
                segment.file.sync_data()?;
                if let Err(err) = segment.write_and_page_indexes() {
                    warn!(dir = %dir.display(), base_offset = segment.base_offset, %err,
                        "could not write index files");
                }
            }
        }
        if let Some((offset, bytes)) = end_snapshot {
            match snapshot::write_encoded(&dir, offset, &bytes) {
                Ok(()) => maintenance.dir_unsynced = true,
                Err(err) => warn!(dir = %dir.display(), base_offset = offset, %err,
                    "could not write a producer snapshot"),
            }
        }
        if let Some((_, sealed)) = segments.split_last() {
            sealed.iter().for_each(|segment| segment.mark_sealed());
        }
        if !maintenance.undeleted.is_empty() {
            maintenance
                .undeleted
                .retain(|&base| match remove_segment_files(&dir, base) {
                    Ok(()) => false,
                    Err(err) => {
                        warn!(dir = %dir.display(), base_offset = base, %err,
                        "could not remove a segment's files; retried by retention");
                        true
                    }
                });
            maintenance.dir_unsynced = true;
        }
        if segments.is_empty() {
            segments.push(Arc::new(Segment::create(&dir, 0, interval)?));
            sync_dir(&dir)?;
            maintenance.dir_unsynced = false;
        } else if maintenance.dir_unsynced {
            // Best effort (retried by retention): what a crash brings back is removed again by
            // the next open.
            match sync_dir(&dir) {
                Ok(()) => maintenance.dir_unsynced = false,
                Err(err) => warn!(dir = %dir.display(), %err, "could not sync the directory"),
            }
        }
        let active = segments.last().expect("at least one segment");
        // Recovery may have read data that was only in the page cache (a process crash, not a
        // machine crash) or truncated the file: make both durable before building on them.
        active.file.sync_data()?;
        if active.size() > 0 {
            // The close knew it; else an estimate.
            let first_append = match clean {
                // Not after now: a clock set back since would delay the time-based roll.
                Some(c) if c.first_append_ms != i64::MAX => c.first_append_ms.min(opened_at),
                _ => first_append_estimate(&active.file),
            };
            active.set_first_append_ms(first_append);
        }
        let high_watermark = active.next_offset();
        maintenance.durable_start = recorded_start.unwrap_or(0).max(segments[0].base_offset);
        let roll_ms = i64::try_from(config.roll_ms()).unwrap_or(i64::MAX);
        let commit = Arc::new(GroupCommit::new(high_watermark));
        let sealer = Arc::new(Sealer::new(dir.clone(), Arc::clone(&commit)));
        debug!(
            dir = %dir.display(),
            segments = segments.len(),
            high_watermark,
            "partition log opened"
        );
        Ok(Self {
            dir,
            config,
            roll_ms,
            appender: Mutex::new(producers),
            segments: RwLock::new(segments),
            high_watermark: AtomicU64::new(high_watermark),
            watermark_tx: watch::Sender::new(high_watermark),
            commit,
            retired: std::sync::atomic::AtomicBool::new(false),
            rolling: std::sync::atomic::AtomicBool::new(false),
            maintenance: Mutex::new(maintenance),
            sealer,
        })
    }
}

/// When the recovered active segment's first batch was appended, for the time-based roll: the
/// file's creation time where the file system records it (a roll creates the file just before
/// its first append; the first segment of a log may be older, which only rolls it earlier),
/// else its last modification (later than the first append, so the roll may come late by as
/// much as the segment was written to), else now (the age restarts with the broker).
fn first_append_estimate(file: &fs::File) -> i64 {
    let now = now_ms();
    let Ok(metadata) = file.metadata() else {
        return now;
    };
    metadata
        .created()
        .or_else(|_| metadata.modified())
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .and_then(|since| i64::try_from(since.as_millis()).ok())
        .map_or(now, |ms| ms.min(now))
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::path::PathBuf;

    use rustmq_protocol::Compression;

    use super::*;
    use crate::storage::producer_state::ProducerTable;
    use crate::storage::test_util::{
        batch, batch_with, expected_values, fill, idem, raw_log, read_all, small_config, values,
    };
    use crate::storage::AppendInfo;

    #[test]
    fn reopen_after_close_is_byte_identical_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(400)).unwrap();
        fill(&log, 25);
        log.close().unwrap();
        let (raw, hw, segments) = (
            raw_log(dir.path()),
            log.high_watermark(),
            log.segment_count(),
        );
        let index = std::fs::read(dir.path().join("00000000000000000000.index")).unwrap();
        drop(log);

        let log = PartitionLog::open(dir.path(), small_config(400)).unwrap();
        assert_eq!(raw_log(dir.path()), raw);
        assert_eq!((log.high_watermark(), log.segment_count()), (hw, segments));
        assert_eq!(values(&read_all(&log, 0, 300)), expected_values(25));
        let again = std::fs::read(dir.path().join("00000000000000000000.index")).unwrap();
        assert_eq!(again, index, "a good index file is kept as is");
        let info = log.append(batch("next", 2, 5)).unwrap();
        assert_eq!(info.base_offset, hw);
        assert_eq!(log.read(hw, 1).unwrap().len(), batch("next", 2, 5).len());
    }

    #[test]
    fn missing_or_garbage_index_files_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(400)).unwrap();
        fill(&log, 25);
        log.close().unwrap();
        drop(log);
        let index = dir.path().join("00000000000000000000.index");
        let time_index = dir.path().join("00000000000000000000.timeindex");
        let good = (
            std::fs::read(&index).unwrap(),
            std::fs::read(&time_index).unwrap(),
        );
        assert!(!good.0.is_empty() && !good.1.is_empty());
        std::fs::remove_file(&index).unwrap();
        std::fs::write(&time_index, b"garbage").unwrap();

        let log = PartitionLog::open(dir.path(), small_config(400)).unwrap();
        assert_eq!(std::fs::read(&index).unwrap(), good.0);
        assert_eq!(std::fs::read(&time_index).unwrap(), good.1);
        assert_eq!(values(&read_all(&log, 3, 1)), expected_values(25)[3..]);
    }

    /// Builds a log whose active segment holds several batches, closes it and returns the
    /// batches and the path of the active segment's file.
    fn log_with_tail(dir: &Path) -> (Vec<(AppendInfo, usize)>, PathBuf) {
        let log = PartitionLog::open(dir, small_config(1_000)).unwrap();
        let infos = fill(&log, 20);
        assert!(log.segment_count() >= 2);
        log.close().unwrap();
        let active = log.active();
        assert!(
            active.base_offset < infos[19].0.base_offset,
            "several batches in the tail"
        );
        (infos, dir.join(format!("{:020}.log", active.base_offset)))
    }

    /// Reopens and checks that exactly the last batch is gone: the file at `path` ends where
    /// it began (`intact_len` was the file length before the damage), every earlier batch is
    /// served and the next append reuses the lost offsets.
    fn assert_recovered_before_last(
        dir: &Path,
        path: &Path,
        intact_len: u64,
        infos: &[(AppendInfo, usize)],
    ) {
        let log = PartitionLog::open(dir, small_config(1_000)).unwrap();
        let (last, last_len) = *infos.last().unwrap();
        assert_eq!(
            std::fs::metadata(path).unwrap().len(),
            intact_len - last_len as u64
        );
        assert_eq!(log.high_watermark(), last.base_offset);
        let expected = expected_values(20);
        assert_eq!(
            values(&read_all(&log, 0, 700)),
            expected[..last.base_offset as usize]
        );
        assert_eq!(
            log.append(batch("again", 3, 0)).unwrap().base_offset,
            last.base_offset
        );
        assert_eq!(
            log.read(last.base_offset, 1).unwrap().len(),
            batch("again", 3, 0).len()
        );
    }

    #[test]
    fn torn_tail_is_truncated_on_open() {
        let last_len = batch("b19", 4, 1_190).len() as u64;
        for cut in [1, 7, 50, last_len - 12, last_len - 1] {
            let dir = tempfile::tempdir().unwrap();
            let (infos, path) = log_with_tail(dir.path());
            assert_eq!(infos.last().unwrap().1 as u64, last_len);
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            let len = file.metadata().unwrap().len();
            file.set_len(len - cut).unwrap();
            assert_recovered_before_last(dir.path(), &path, len, &infos);
        }
    }

    #[test]
    fn corrupt_last_batch_is_truncated_on_open() {
        let last_len = batch("b19", 4, 1_190).len() as u64;
        // In the records (CRC), in the header (CRC) and in base_offset (outside the CRC); after
        // a clean close (its marker vouches for the length, not the bytes) and after a crash.
        for (from_end, marker) in [1, last_len - 20, last_len - 3]
            .into_iter()
            .flat_map(|at| [(at, true), (at, false)])
        {
            let dir = tempfile::tempdir().unwrap();
            let (infos, path) = log_with_tail(dir.path());
            if !marker {
                std::fs::remove_file(dir.path().join(snapshot::CLEAN_SHUTDOWN)).unwrap();
            }
            let mut bytes = std::fs::read(&path).unwrap();
            let at = bytes.len() - from_end as usize;
            bytes[at] ^= 0x40;
            std::fs::write(&path, &bytes).unwrap();
            assert_recovered_before_last(dir.path(), &path, bytes.len() as u64, &infos);
        }
    }

    #[test]
    fn garbage_after_the_last_batch_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let (infos, path) = log_with_tail(dir.path());
        let good_len = std::fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut file, &[0xAB; 100]).unwrap();
        drop(file);
        let log = PartitionLog::open(dir.path(), small_config(1_000)).unwrap();
        assert_eq!(
            log.high_watermark(),
            infos.last().unwrap().0.last_offset + 1
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
    }

    /// An empty `.log` inside the range of the segment before it, as a roll that failed after
    /// creating its file left it (the old segment then took more batches past its base), is
    /// removed on open instead of stopping the log from opening; here the stray file comes
    /// after a sealed segment and before the active one.
    #[test]
    fn an_empty_stray_segment_inside_a_sealed_one_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(500)).unwrap();
        fill(&log, 20);
        log.close().unwrap();
        let (first_end, hw, segments) = (
            log.segments.read()[1].base_offset,
            log.high_watermark(),
            log.segment_count(),
        );
        assert!(first_end > 2 && segments > 2);
        drop(log);
        let stray = dir.path().join(format!("{:020}.log", first_end / 2));
        std::fs::File::create(&stray).unwrap();
        let stray_index = stray.with_extension("index");
        std::fs::write(&stray_index, b"").unwrap();

        let log = PartitionLog::open(dir.path(), small_config(500)).unwrap();
        assert!(!stray.exists() && !stray_index.exists());
        assert_eq!((log.high_watermark(), log.segment_count()), (hw, segments));
        assert_eq!(values(&read_all(&log, 0, 300)), expected_values(20));
        assert_eq!(log.append(batch("next", 1, 0)).unwrap().base_offset, hw);
    }

    /// The case a failed roll leaves: the stray file at base `B` is the last one, and the
    /// segment before it is the active one, which took batches past `B` (and whose tail a crash
    /// may have torn). That segment is recovered as the active one: the torn tail is cut.
    #[test]
    fn an_empty_stray_segment_after_the_active_one_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (infos, path) = log_with_tail(dir.path());
        let good_len = std::fs::metadata(&path).unwrap().len();
        let active_base: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let end = infos.last().unwrap().0.last_offset + 1;
        assert!(end > active_base + 2);
        let stray = dir.path().join(format!("{:020}.log", active_base + 1));
        std::fs::File::create(&stray).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut file, &[0xAB; 100]).unwrap();
        drop(file);

        let log = PartitionLog::open(dir.path(), small_config(1_000)).unwrap();
        assert!(!stray.exists());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        assert_eq!(log.high_watermark(), end);
        assert_eq!(log.active().base_offset, active_base);
        assert_eq!(values(&read_all(&log, 0, 700)), expected_values(20));
        assert_eq!(log.append(batch("next", 1, 0)).unwrap().base_offset, end);
        drop(log);
        // And a stray file that is not empty is still refused.
        std::fs::write(&stray, [0u8; 10]).unwrap();
        assert!(matches!(
            PartitionLog::open(dir.path(), small_config(1_000)),
            Err(StorageError::CorruptLog { .. })
        ));
    }

    /// A batch appended by [`fill_from_producers_all`]: `(producer, base sequence, records,
    /// offset)`.
    type Appended = (i64, i32, u32, u64);

    /// Idempotent batches of 1 to 3 records from producers 1, 2 and 3 in turn (producer 3
    /// writes only the first `until_3` batches), timestamps out of order; returns every batch.
    fn fill_from_producers_all(log: &PartitionLog, n: u32, until_3: u32) -> Vec<Appended> {
        let mut seqs = [0i32; 4];
        let mut all = Vec::new();
        for i in 0..n {
            let producer = if i < until_3 { i % 3 + 1 } else { i % 2 + 1 };
            let count = i % 3 + 1;
            let ts = 10_000 + i64::from(i) * 10 - i64::from(i % 4) * 25;
            let seq = seqs[producer as usize];
            let b = batch_with(
                &format!("b{i}"),
                count,
                ts,
                Compression::None,
                Some((i64::from(producer), 0, seq)),
            );
            let info = log.append(b).unwrap();
            all.push((i64::from(producer), seq, count, info.base_offset));
            seqs[producer as usize] += count as i32;
        }
        all
    }

    /// A log in a new directory, [`fill_from_producers`]`(log, 60, 9)`: more than five
    /// segments, producer 3's batches all in sealed ones; each producer's last batch.
    fn filled(config: LogConfig) -> (tempfile::TempDir, PartitionLog, Vec<Appended>) {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), config).unwrap();
        let last = fill_from_producers(&log, 60, 9);
        (dir, log, last)
    }

    /// [`fill_from_producers_all`], returning each producer's last batch (producers 1, 2, 3).
    fn fill_from_producers(log: &PartitionLog, n: u32, until_3: u32) -> Vec<Appended> {
        let all = fill_from_producers_all(log, n, until_3);
        (1..=3)
            .map(|p| *all.iter().rfind(|b| b.0 == p).expect("a batch of each"))
            .collect()
    }

    /// A segment's base, size, next offset, largest timestamp, encoded indexes, and paged
    /// summaries.
    type Described = (
        u64,
        u64,
        u64,
        i64,
        (Vec<u8>, Vec<u8>),
        Option<super::super::segment::PagedShape>,
    );

    /// What each segment's metadata says, for comparing two opens.
    fn describe(log: &PartitionLog) -> Vec<Described> {
        log.segments
            .read()
            .iter()
            .map(|s| {
                let meta = s.meta_for_tests();
                (
                    s.base_offset,
                    meta.size,
                    meta.next_offset,
                    meta.max_timestamp,
                    s.encoded_indexes_for_tests(),
                    s.paged_shape(),
                )
            })
            .collect()
    }

    /// Checks that `log` answers a retry of each of `batches` as a duplicate, with its offset.
    fn assert_duplicates<'a>(log: &PartitionLog, batches: impl IntoIterator<Item = &'a Appended>) {
        for &(producer, seq, count, offset) in batches {
            let retry = batch_with("r", count, 0, Compression::None, Some((producer, 0, seq)));
            assert!(
                matches!(log.append(retry), Err(StorageError::DuplicateSequence { base_offset }) if base_offset == offset),
                "producer {producer}'s batch at {offset}"
            );
        }
    }

    /// Checks that `log` answers a retry of each producer's `last` batch as a duplicate, serves
    /// every record and finds records by timestamp.
    fn assert_producers_and_records(log: &PartitionLog, last: &[Appended]) {
        assert_duplicates(log, last);
        assert_eq!(read_all(log, 0, 250).len() as u64, log.high_watermark());
        for ts in [9_000, 10_100, 10_333, 10_500] {
            let found = log.offset_for_timestamp(ts).unwrap().unwrap();
            assert!(found.1 >= ts);
        }
    }

    fn lookups(log: &PartitionLog) -> Vec<Option<(u64, i64)>> {
        [9_000, 10_100, 10_333, 10_500, 10_540]
            .map(|ts| log.offset_for_timestamp(ts).unwrap())
            .into()
    }

    /// After a crash (no close), an open takes the producer snapshot of the last roll: it
    /// replays only the active segment and opens the sealed ones from their index files; what
    /// it then knows (segments, indexes, largest timestamps, producers' sequences) is what the
    /// full walk finds.
    #[test]
    fn sealed_segments_below_the_latest_snapshot_are_opened_from_their_indexes() {
        let (dir, log, last) = filled(small_config(600));
        let segments = log.segment_count();
        assert!(segments > 5);
        assert!(
            last[2].3 < log.active().base_offset,
            "producer 3's batches are all in sealed segments"
        );
        drop(log);
        let bases = list_segments(dir.path()).unwrap();
        assert_eq!(
            snapshot::list(dir.path()).unwrap(),
            bases[bases.len() - 2..],
            "the snapshots of the two latest rolls"
        );

        let fast = PartitionLog::open(dir.path(), small_config(600)).unwrap();
        assert_eq!(
            opened(),
            Opened {
                scanned: 1,
                indexed: segments - 1
            }
        );
        assert_producers_and_records(&fast, &last);
        let (described, found) = (describe(&fast), lookups(&fast));
        drop(fast);

        let walked = PartitionLog::open_from(dir.path(), small_config(600), None, false).unwrap();
        assert_eq!(
            opened(),
            Opened {
                scanned: segments,
                indexed: 0
            }
        );
        assert_eq!(describe(&walked), described);
        assert_eq!(lookups(&walked), found);
        assert_producers_and_records(&walked, &last);
    }

    /// After a clean close, an open reads no batch but the last few of each segment, the
    /// active one included, and replays nothing; the segments it builds are those a walk
    /// builds, so that appends after it (and the rolls they make) go on exactly as they would
    /// have.
    #[test]
    fn after_a_clean_close_an_open_reads_no_batch_and_appends_go_on_as_before() {
        // Sparse enough that the active segment's time index file ends with an entry for its
        // final maximum, past its last offset index entry, which the open must leave out.
        let config = || LogConfig {
            index_interval_bytes: 300,
            ..small_config(600)
        };
        let (dir, log, last) = filled(config());
        let (segments, end, active) = (
            log.segment_count(),
            log.high_watermark(),
            log.active().base_offset,
        );
        log.close().unwrap();
        drop(log);
        let relatives = |ext: &str, entry: usize| {
            let bytes = std::fs::read(segment_path(dir.path(), active, ext)).unwrap();
            bytes
                .chunks(entry)
                .map(|e| u32::from_be_bytes(e[entry - 4..].try_into().unwrap()))
                .collect::<Vec<_>>()
        };
        assert!(
            relatives("timeindex", 12).last() > relatives("index", 8).last(),
            "the time index ends past the offset index"
        );
        let marker = dir.path().join(snapshot::CLEAN_SHUTDOWN);
        assert!(marker.exists());
        assert!(snapshot::list(dir.path()).unwrap().contains(&end));

        let fast = PartitionLog::open(dir.path(), config()).unwrap();
        assert_eq!(
            opened(),
            Opened {
                scanned: 0,
                indexed: segments
            }
        );
        assert!(!marker.exists(), "taken by the open");
        assert_eq!(fast.high_watermark(), end);
        assert_producers_and_records(&fast, &last);
        let found = lookups(&fast);
        for i in 0..20 {
            fast.append(batch(
                &format!("m{i}"),
                i % 3 + 1,
                20_000 + i64::from(i) * 10 - i64::from(i % 2) * 15,
            ))
            .unwrap();
        }
        assert!(fast.segment_count() > segments, "the appends rolled");
        // The rolled segments paged out by their seals.
        fast.wait_for_seals();
        let described = describe(&fast);
        drop(fast);

        let walked = PartitionLog::open_from(dir.path(), config(), None, false).unwrap();
        assert_eq!(describe(&walked), described);
        assert_eq!(lookups(&walked), found);
    }

    /// A roll whose new segment got no batch before a crash (its snapshot is at the end of
    /// the log): the segment before it is recovered as the active one and replayed, so the
    /// open takes the snapshot before (replaying that segment on top of the new one's would
    /// record its batches twice, and push each producer's older batches out of the five it
    /// keeps).
    #[test]
    fn the_snapshot_of_a_roll_whose_segment_got_no_batch_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(600)).unwrap();
        let all = fill_from_producers_all(&log, 60, 9);
        let (end, active) = (log.high_watermark(), log.active().base_offset);
        // As the roll would have: an empty segment at the end, and the snapshot of the table.
        std::fs::File::create(segment_path(dir.path(), end, LOG_EXT)).unwrap();
        snapshot::write(dir.path(), end, &log.appender.lock()).unwrap();
        drop(log);
        let recent: Vec<_> = all.iter().filter(|b| b.0 == 1).rev().take(5).collect();
        assert!(
            recent[0].3 >= active,
            "producer 1 wrote to the recovered segment"
        );
        assert!(recent[4].3 < active, "and before it");

        let log = PartitionLog::open(dir.path(), small_config(600)).unwrap();
        assert_eq!(log.active().base_offset, end);
        assert_eq!(
            opened().scanned,
            2,
            "the recovered segment and the empty one"
        );
        assert_duplicates(&log, recent);
    }

    /// The clean path's edge cases: a marker whose snapshot is gone, or whose end does not
    /// match the segment, or index files older than the marker, are not trusted, and the open
    /// recovers the active segment as after a crash; an empty active segment (a roll that no
    /// batch followed) opens without reading; a retired log's close leaves no marker.
    #[test]
    fn the_clean_path_trusts_only_a_marker_that_fits() {
        let (dir, log, last) = filled(small_config(600));
        let end = log.high_watermark();
        log.close().unwrap();
        drop(log);
        for damage in ["no snapshot", "another end"] {
            let clean = snapshot::take_clean(dir.path()).unwrap().unwrap();
            match damage {
                "no snapshot" => {
                    snapshot::write_clean(dir.path(), clean).unwrap();
                    std::fs::rename(
                        segment_path(dir.path(), end, snapshot::SNAPSHOT_EXT),
                        dir.path().join("aside"),
                    )
                    .unwrap();
                }
                _ => {
                    // With a snapshot there, so that only the segment's end disagrees.
                    snapshot::write(dir.path(), end + 1, &ProducerTable::default()).unwrap();
                    snapshot::write_clean(
                        dir.path(),
                        snapshot::CleanShutdown {
                            next_offset: end + 1,
                            ..clean
                        },
                    )
                    .unwrap();
                }
            }
            let log = PartitionLog::open(dir.path(), small_config(600)).unwrap();
            assert!(opened().scanned >= 1, "{damage}: recovered");
            assert_eq!(log.high_watermark(), end, "{damage}");
            assert_producers_and_records(&log, &last);
            log.close().unwrap();
            drop(log);
            if damage == "no snapshot" {
                std::fs::rename(
                    dir.path().join("aside"),
                    segment_path(dir.path(), end, snapshot::SNAPSHOT_EXT),
                )
                .unwrap();
            } else {
                std::fs::remove_file(segment_path(dir.path(), end + 1, snapshot::SNAPSHOT_EXT))
                    .unwrap();
            }
        }

        // Index files of an earlier close of the same segment beside the marker of the last
        // one (renames reach the disk in any order): the batches after their last entry are
        // more than an index interval, where the index has no entry, and the open does not
        // trust them (the later batches are stamped earlier, so the largest timestamp fits).
        let log = PartitionLog::open(dir.path(), small_config(600)).unwrap();
        // In a new segment, with room for all of them.
        let active = log.active();
        {
            let producers = log.appender.lock();
            log.roll(&active, &producers).unwrap();
        }
        let segments = log.segment_count();
        for i in 0..3 {
            log.append(batch(&format!("a{i}"), 1, 50_000 + i)).unwrap();
        }
        log.close().unwrap();
        let active = log.active().base_offset;
        let files = ["index", "timeindex"].map(|ext| segment_path(dir.path(), active, ext));
        let earlier = files.clone().map(|f| std::fs::read(f).unwrap());
        assert!(
            !earlier[0].is_empty(),
            "an index entry in the earlier files"
        );
        for i in 0..3 {
            log.append(batch(&format!("b{i}"), 1, 5_000 + i)).unwrap();
        }
        assert_eq!(log.segment_count(), segments, "no roll");
        log.close().unwrap();
        drop(log);
        for (file, bytes) in files.iter().zip(&earlier) {
            std::fs::write(file, bytes).unwrap();
        }
        let log = PartitionLog::open(dir.path(), small_config(600)).unwrap();
        assert_eq!(opened().scanned, 1, "the active segment recovered");
        let described = describe(&log);
        drop(log);
        let walked = PartitionLog::open_from(dir.path(), small_config(600), None, false).unwrap();
        assert_eq!(describe(&walked), described);
        drop(walked);

        // A roll without a batch after it: the active segment is empty.
        let log = PartitionLog::open(dir.path(), small_config(600)).unwrap();
        let end = log.high_watermark();
        let active = log.active();
        {
            let producers = log.appender.lock();
            log.roll(&active, &producers).unwrap();
        }
        let segments = log.segment_count();
        log.close().unwrap();
        drop(log);
        let log = PartitionLog::open(dir.path(), small_config(600)).unwrap();
        assert_eq!(
            opened(),
            Opened {
                scanned: 0,
                indexed: segments
            }
        );
        assert_eq!((log.active().base_offset, log.high_watermark()), (end, end));
        assert_producers_and_records(&log, &last);
        log.close().unwrap();
        drop(log);

        let log = PartitionLog::open(dir.path(), small_config(600)).unwrap();
        assert!(!dir.path().join(snapshot::CLEAN_SHUTDOWN).exists());
        log.retire();
        log.close().unwrap();
        assert!(
            !dir.path().join(snapshot::CLEAN_SHUTDOWN).exists(),
            "a retired log writes nothing"
        );
    }

    /// Producers loaded from a snapshot keep the time of their last write, but nothing is
    /// forgotten in the ten minutes after an open: a clock that jumped forward while the
    /// broker was down must not forget a producer that still retries a batch.
    #[test]
    fn nothing_is_forgotten_in_the_ten_minutes_after_an_open() {
        let config = || LogConfig {
            producer_id_expiration_ms: 1_000,
            ..small_config(600)
        };
        let (dir, log, last) = filled(config());
        log.close().unwrap();
        drop(log);
        let log = PartitionLog::open(dir.path(), config()).unwrap();
        let opened = now_ms();
        log.apply_retention(opened + 60_000).unwrap();
        assert_duplicates(&log, &last);
        log.apply_retention(opened + 11 * 60_000).unwrap();
        let (producer, seq, count, _) = last[0];
        let retry = batch_with("r", count, 0, Compression::None, Some((producer, 0, seq)));
        assert!(
            log.append(retry).is_ok(),
            "forgotten: taken as a new producer"
        );
    }

    /// The log stays usable after `close`; a batch appended after it makes the close's marker
    /// stale, and the next open recovers the active segment and replays it.
    #[test]
    fn an_append_after_a_clean_close_is_recovered_as_after_a_crash() {
        let (dir, log, last) = filled(small_config(600));
        let segments = log.segment_count();
        log.close().unwrap();
        let (producer, seq, count, _) = last[0];
        let next = batch_with(
            "late",
            2,
            0,
            Compression::None,
            Some((producer, 0, seq + count as i32)),
        );
        let info = log.append(next.clone()).unwrap();
        assert_eq!(log.segment_count(), segments, "no roll");
        drop(log);

        let log = PartitionLog::open(dir.path(), small_config(600)).unwrap();
        assert_eq!(
            opened(),
            Opened {
                scanned: 1,
                indexed: segments - 1
            }
        );
        assert_eq!(log.high_watermark(), info.last_offset + 1);
        assert!(matches!(
            log.append(next),
            Err(StorageError::DuplicateSequence { base_offset }) if base_offset == info.base_offset
        ));
    }

    /// Index files that do not fit their segment, and a missing latest snapshot: the segment
    /// is walked (and its index files rewritten), and the open replays from the snapshot
    /// before.
    #[test]
    fn damaged_index_files_and_a_missing_snapshot_fall_back_to_walking() {
        let (dir, log, last) = filled(small_config(600));
        let segments = log.segment_count();
        drop(log);
        let snapshots = snapshot::list(dir.path()).unwrap();
        std::fs::remove_file(segment_path(
            dir.path(),
            snapshots[1],
            snapshot::SNAPSHOT_EXT,
        ))
        .unwrap();
        let bases = list_segments(dir.path()).unwrap();
        let time_index = segment_path(dir.path(), bases[1], "timeindex");
        let good = std::fs::read(&time_index).unwrap();
        // A last timestamp below the segment's largest, still above the entry before it.
        let mut bad = good.clone();
        let n = bad.len();
        assert!(n >= 24);
        let ts = |at: usize| i64::from_be_bytes(good[at..at + 8].try_into().unwrap());
        let (before, largest) = (ts(n - 24), ts(n - 12));
        assert!(before + 1 < largest);
        bad[n - 12..n - 4].copy_from_slice(&(before + 1).to_be_bytes());
        std::fs::write(&time_index, &bad).unwrap();
        let index = segment_path(dir.path(), bases[2], "index");
        std::fs::write(&index, [0u8; 7]).unwrap();

        let log = PartitionLog::open(dir.path(), small_config(600)).unwrap();
        // The snapshot left is at the base of the segment before the active one: that one
        // is walked to replay it, and the two with bad files to open them.
        assert_eq!(snapshots[0], bases[segments as usize - 2]);
        assert_eq!(
            opened(),
            Opened {
                scanned: 4,
                indexed: segments - 4
            }
        );
        assert_eq!(std::fs::read(&time_index).unwrap(), good, "rewritten");
        assert_eq!(std::fs::read(&index).unwrap().len() % 8, 0, "rewritten");
        assert_duplicates(&log, &last);
    }

    /// A snapshot at the base of an empty segment file left inside the segment before it (a
    /// failed roll's, whose old segment then took more batches) does not hold those batches'
    /// producers: the open ignores it and replays the whole log.
    #[test]
    fn a_snapshot_of_a_stray_segment_is_not_used() {
        let (dir, log, last) = filled(small_config(600));
        let segments = log.segment_count();
        drop(log);
        for offset in snapshot::list(dir.path()).unwrap() {
            std::fs::remove_file(segment_path(dir.path(), offset, snapshot::SNAPSHOT_EXT)).unwrap();
        }
        // Producer 3's last batch is in the segment the stray falls in; the stray's snapshot
        // knows no producer.
        let bases = list_segments(dir.path()).unwrap();
        let holder = bases.iter().rposition(|&b| b <= last[2].3).unwrap();
        let stray = last[2].3.max(bases[holder] + 1);
        assert!(stray < bases[holder + 1]);
        std::fs::File::create(segment_path(dir.path(), stray, LOG_EXT)).unwrap();
        snapshot::write(dir.path(), stray, &ProducerTable::default()).unwrap();

        let log = PartitionLog::open(dir.path(), small_config(600)).unwrap();
        assert_eq!(
            opened(),
            Opened {
                scanned: segments,
                indexed: 0
            }
        );
        assert!(!segment_path(dir.path(), stray, LOG_EXT).exists());
        assert_duplicates(&log, &last[2..]);
    }

    #[test]
    fn duplicate_detection_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(300)).unwrap();
        let mut seq = 0;
        for i in 0..12 {
            let info = log.append(idem(&format!("p{i}"), 2, (4, 0, seq))).unwrap();
            assert_eq!(info.base_offset, u64::from(i as u32) * 2);
            seq += 2;
        }
        assert!(log.segment_count() > 2, "producer history spans segments");
        drop(log);
        let log = PartitionLog::open(dir.path(), small_config(300)).unwrap();
        assert!(matches!(
            log.append(idem("p11", 2, (4, 0, 22))),
            Err(StorageError::DuplicateSequence { base_offset: 22 })
        ));
        assert!(matches!(
            log.append(idem("p7", 2, (4, 0, 14))),
            Err(StorageError::DuplicateSequence { base_offset: 14 })
        ));
        assert!(matches!(
            log.append(idem("p0", 2, (4, 0, 0))),
            Err(StorageError::OutOfOrderSequence { expected: 24, .. })
        ));
        assert_eq!(
            log.append(idem("p12", 2, (4, 0, 24))).unwrap().base_offset,
            24
        );
    }
}
