//! Sealing rolled segments off the append lock.
//!
//! A roll used to sync the segment it sealed, write its index files and the producer snapshot
//! while it held the partition's append lock: with `acks=leader` nothing had synced the
//! segment before, so every produce request to the partition waited for up to a segment's
//! worth of dirty pages to reach the disk (89–155 ms per 128 MiB roll here, against ~15 us
//! for an append; `append_stall`). Now the roll only encodes the snapshot, creates the new
//! segment and queues the old one here; a thread of its own seals it, as Kafka flushes a
//! rolled segment in the background:
//!
//! ```text
//!  roll (append lock): encode snapshot, create + dir sync new segment, queue (old, snapshot)
//!  seal (one task of the blocking pool, or a thread, per log at a time), in roll order:
//!      fdatasync old ──► .index/.timeindex ──► NNN.snapshot ──► prune, dir sync ──► sealed
//! ```
//!
//! Until it is sealed, a rolled segment counts as unsynced: group commit syncs it along with
//! the active one (so `acks=all` never answers before it is durable), retention leaves it, and
//! an open after a crash verifies it as it verifies the active segment. The seal's fdatasync
//! takes the group-commit role, so no two syncs of the log overlap (Linux reports a failed
//! writeback to one of them only). Its snapshot is written only once its data is on disk, so a
//! snapshot at offset `n` vouches that every segment ending at or below `n` was synced (see
//! `PartitionLog::open`, which cuts a rolled segment that lost its tail, and removes the
//! segments after it). Closing, retiring or dropping the log waits for the queued seals (a
//! drop on a runtime thread may then wait for one).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::{error, warn};

use super::segment::{sync_dir, Segment};
use super::snapshot;
use super::sync::GroupCommit;

/// A rolled segment waiting to be sealed.
struct Seal {
    segment: Arc<Segment>,
    /// Where it ends: the new segment's base, and the snapshot's offset.
    end: u64,
    /// The producer snapshot as of `end`, encoded under the append lock.
    snapshot: Vec<u8>,
    /// The roll cut bytes a failed append left past the segment's end: it must be synced
    /// again, though a group commit may have covered `end` before the cut.
    truncated: bool,
}

/// Rolled segments waiting, and whether a task to seal them is started.
#[derive(Default)]
struct Queue {
    seals: VecDeque<Seal>,
    /// A task that runs the queue is started and has not yet found it empty: rolls while it
    /// runs add to its work instead of starting a task each, which would each hold a thread
    /// of the blocking pool waiting for `runner`. (Tiny segments rolled faster than they are
    /// sealed filled the pool that way, and an `acks=all` fdatasync then found no thread
    /// while a seal waited for it.)
    scheduled: bool,
}

/// The seal queue of one partition log.
pub(crate) struct Sealer {
    dir: PathBuf,
    commit: Arc<GroupCommit>,
    queue: Mutex<Queue>,
    /// Held while seals run, so that they run one at a time and in roll order.
    runner: Mutex<()>,
    /// Tests hold seals back to stand for a crash before they ran (nothing runs them while
    /// it is set, not even a thread started for an earlier seal).
    #[cfg(test)]
    pub(crate) paused: std::sync::atomic::AtomicBool,
}

impl Sealer {
    pub(crate) fn new(dir: PathBuf, commit: Arc<GroupCommit>) -> Self {
        Self {
            dir,
            commit,
            queue: Mutex::new(Queue::default()),
            runner: Mutex::new(()),
            #[cfg(test)]
            paused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Queues `segment`, rolled at `end`, and starts a task that seals it unless one is
    /// started already (it takes this seal too).
    pub(crate) fn submit(
        self: &Arc<Self>,
        segment: Arc<Segment>,
        end: u64,
        snapshot: Vec<u8>,
        truncated: bool,
    ) {
        {
            let mut queue = self.queue.lock();
            queue.seals.push_back(Seal {
                segment,
                end,
                snapshot,
                truncated,
            });
            #[cfg(test)]
            if self.paused.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            if std::mem::replace(&mut queue.scheduled, true) {
                return;
            }
        }
        let sealer = Scheduled {
            sealer: Arc::clone(self),
            finished: false,
        };
        // On the runtime's blocking pool when there is one (its threads are bounded and
        // reused; a seal it drops unrun at shutdown is run by the log's close or drop), else
        // on a thread of its own.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(move || sealer.run());
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("rustmq-seal".into())
            .spawn(move || sealer.run());
        if let Err(err) = spawned {
            // The task was dropped unrun, and said so: the queue is this call's to run.
            warn!(dir = %self.dir.display(), %err, "could not start a seal thread; sealing inline");
            self.drain();
        }
    }

    /// The started task: runs the queue until it finds it empty, and says so then (under the
    /// queue's lock, so that a seal queued meanwhile starts a task of its own).
    fn run_scheduled(&self) {
        let _runner = self.runner.lock();
        loop {
            let seal = {
                let mut queue = self.queue.lock();
                #[cfg(test)]
                if self.paused.load(std::sync::atomic::Ordering::Acquire) {
                    queue.scheduled = false;
                    return;
                }
                match queue.seals.pop_front() {
                    Some(seal) => seal,
                    None => {
                        queue.scheduled = false;
                        return;
                    }
                }
            };
            self.seal(seal);
        }
    }

    /// Runs every queued seal, or waits for the task running them; returns once the queue
    /// is empty.
    pub(crate) fn drain(&self) {
        let _runner = self.runner.lock();
        #[cfg(test)]
        if self.paused.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        loop {
            let Some(seal) = self.queue.lock().seals.pop_front() else {
                return;
            };
            self.seal(seal);
        }
    }

    /// Forgets the queued seals unrun: what a crash does to them (tests).
    #[cfg(test)]
    pub(crate) fn abandon(&self) {
        self.queue.lock().seals.clear();
    }

    fn seal(&self, seal: Seal) {
        let Seal {
            segment,
            end,
            snapshot,
            truncated,
        } = seal;
        let dir = &self.dir;
        // Through group commit, which runs one fdatasync of the log at a time (Linux reports a
        // failed writeback to one of the fsyncs of a file that overlap it only) and skips it if
        // a group commit covered `end` already. A failure poisons the log (no later write is
        // acknowledged) and leaves the segment unsealed: no index files, no snapshot, and an
        // open verifies it.
        let file = Arc::clone(&segment.file);
        let synced = if truncated {
            self.commit.sync_again_blocking(vec![file], end)
        } else {
            self.commit
                .sync_blocking(end, || (vec![Arc::clone(&file)], end))
        };
        if let Err(err) = synced {
            error!(dir = %dir.display(), base_offset = segment.base_offset, %err,
                "could not sync a rolled segment");
            return;
        }
        // Paged out once written: only one entry in 64 stays in memory (see `index.rs`).
        if let Err(err) = segment.write_and_page_indexes() {
            warn!(dir = %dir.display(), base_offset = segment.base_offset, %err,
                "could not write index files; the next open walks the segment");
        }
        // After the data: the snapshot vouches for it. Optional: without it, an open verifies
        // more of the log and replays from an earlier snapshot.
        if let Err(err) = snapshot::write_encoded(dir, end, &snapshot) {
            warn!(dir = %dir.display(), base_offset = end, %err,
                "could not write a producer snapshot");
        }
        // Kept: the latest at or below the sealed segment's base (normally the one of the roll
        // that started it), for an open while the new segment has no batch yet (that open
        // does not take the new one's), and any newer.
        if let Err(err) = snapshot::remove_below_latest_at(dir, segment.base_offset) {
            warn!(dir = %dir.display(), %err, "could not remove old producer snapshots");
        }
        // The renames above; the next roll's directory sync would make them durable too.
        if let Err(err) = sync_dir(dir) {
            warn!(dir = %dir.display(), %err, "could not sync the directory after a seal");
        }
        // Last: retention may delete the segment from now on (its files are all written).
        segment.mark_sealed();
    }
}

/// The task started to run a log's seal queue. Should it not finish (dropped unrun when the
/// runtime shuts down, or a seal panicked), it says the queue has no task any more, so that
/// the next roll starts one: else the rolled segments would wait unsealed for the log's close.
struct Scheduled {
    sealer: Arc<Sealer>,
    finished: bool,
}

impl Scheduled {
    fn run(mut self) {
        self.sealer.run_scheduled();
        self.finished = true;
    }
}

impl Drop for Scheduled {
    fn drop(&mut self) {
        if !self.finished {
            self.sealer.queue.lock().scheduled = false;
        }
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("queued", &self.queue.lock().seals.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use super::super::recovery::{opened, Opened};
    use super::super::test_util::{idem, read_all, small_config};
    use super::super::{LogConfig, PartitionLog, StorageError};

    fn exists(dir: &Path, offset: u64, ext: &str) -> bool {
        dir.join(format!("{offset:020}.{ext}")).exists()
    }

    /// Appends idempotent one-record batches of producer 1 until the log has `segments`
    /// segments; returns the next sequence.
    fn append_until(log: &PartitionLog, segments: u32, mut seq: i32) -> i32 {
        while log.segment_count() < segments {
            log.append(idem(&format!("v{seq}"), 1, (1, 0, seq)))
                .unwrap();
            seq += 1;
        }
        seq
    }

    /// Rolls while a seal runs add to the running task's queue instead of each starting a
    /// task of the blocking pool that waits for it: tiny segments rolled faster than they are
    /// sealed used to fill the pool that way (and an `acks=all` fdatasync then found no
    /// thread while the running seal waited for it).
    #[test]
    // The guard stands for a seal running meanwhile: held across the awaits on purpose.
    #[allow(clippy::await_holding_lock)]
    fn rolls_while_a_seal_runs_take_no_thread_each() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(4)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        runtime.block_on(async {
            let log = Arc::new(PartitionLog::open(dir.path(), small_config(600)).unwrap());
            let running = log.sealer.runner.lock();
            append_until(&log, 9, 0);
            let free = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                tokio::task::spawn_blocking(|| ()),
            )
            .await;
            assert!(
                free.is_ok(),
                "the blocking pool is full of waiting seal tasks"
            );
            drop(running);
            let sealed = Arc::clone(&log);
            tokio::task::spawn_blocking(move || sealed.wait_for_seals())
                .await
                .unwrap();
            assert!(log.sealer.queue.lock().seals.is_empty());
            // The task finds the queue empty once it gets the runner after the drain above.
            let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while log.sealer.queue.lock().scheduled && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(!log.sealer.queue.lock().scheduled);
        });
    }

    /// A seal task dropped unrun (a roll while its runtime shuts down) leaves the queue to the
    /// next roll's task: the rolled segment is sealed then, not only at the log's close.
    #[test]
    fn a_seal_task_dropped_unrun_leaves_the_queue_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(PartitionLog::open(dir.path(), small_config(600)).unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        runtime.shutdown_background();
        let seq = {
            let _within = handle.enter();
            append_until(&log, 2, 0)
        };
        {
            let queue = log.sealer.queue.lock();
            assert!(!queue.scheduled, "the dropped task said so");
            assert_eq!(queue.seals.len(), 1, "its seal still queued");
        }
        // The next roll (off any runtime: on a thread) seals both segments.
        append_until(&log, 3, seq);
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !log.sealer.queue.lock().seals.is_empty() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(log.sealer.queue.lock().seals.is_empty());
    }

    /// A roll that cut what a failed append left past the segment's end has the seal sync the
    /// segment again, though a group commit already covered its records: the cut must be on
    /// disk before the snapshot vouches for the segment, or a crash leaves it ending in
    /// garbage that every later open finds damaged.
    #[test]
    fn a_seal_after_a_cut_syncs_the_segment_again() {
        use std::os::unix::fs::FileExt;
        for cut in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let log = PartitionLog::open(dir.path(), small_config(600)).unwrap();
            log.sealer.paused.store(true, Ordering::Release);
            log.append(idem("first", 1, (1, 0, 0))).unwrap();
            if cut {
                // What a failed append leaves: bytes past the segment's end.
                let active = log.active();
                active.file.write_at(b"garbage", active.size()).unwrap();
            }
            log.flush().unwrap();
            let synced = log.sync_count();
            // Larger than the room left: rolls at once, the first segment's records all synced.
            log.append(idem("large", 40, (1, 0, 1))).unwrap();
            assert_eq!(log.segment_count(), 2);
            log.wait_for_seals();
            assert_eq!(
                log.sync_count() > synced,
                cut,
                "a seal syncs what a group commit covered only after a cut"
            );
        }
    }

    /// Until its seal has run, a rolled segment is synced with the active one by group commit
    /// and left alone by retention; then it has its index files and the snapshot at its end.
    #[test]
    fn a_rolled_segment_is_synced_with_the_active_one_and_kept_until_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_bytes: Some(1),
            ..small_config(600)
        };
        let log = PartitionLog::open(dir.path(), config).unwrap();
        log.sealer.paused.store(true, Ordering::Release);
        append_until(&log, 2, 0);
        let end = log.active().base_offset;
        assert_eq!(
            log.sync_target().0.len(),
            2,
            "the unsealed segment is synced too"
        );
        assert!(!exists(dir.path(), 0, "index"));
        assert!(!exists(dir.path(), end, "snapshot"));
        assert_eq!(log.apply_retention(0).unwrap(), 0);
        assert_eq!(log.segment_count(), 2);

        log.wait_for_seals();
        assert_eq!(log.sync_target().0.len(), 1);
        assert!(exists(dir.path(), 0, "index") && exists(dir.path(), 0, "timeindex"));
        assert!(exists(dir.path(), end, "snapshot"));
        assert_eq!(log.apply_retention(0).unwrap(), 1);
        assert_eq!(log.log_start_offset(), end);
    }

    /// A seal whose fdatasync fails (a writeback error: the kernel may have dropped the pages
    /// it could not write) poisons the log: the rolled segment stays unsealed (no index files,
    /// no snapshot vouching for it, retention leaves it), no append is taken after it, and a
    /// close refuses to write the marker that would vouch for the log. The next open verifies
    /// the segment, as after a crash, and the log takes appends again.
    #[test]
    fn a_failed_seal_sync_poisons_the_log_and_leaves_the_segment_to_be_verified() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_bytes: Some(1),
            ..small_config(600)
        };
        let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        log.sealer.paused.store(true, Ordering::Release);
        let seq = append_until(&log, 2, 0);
        let end = log.active().base_offset;
        let high_watermark = log.high_watermark();
        log.commit.fail_syncs.store(1, Ordering::Release);
        log.wait_for_seals();
        assert!(!exists(dir.path(), 0, "index"));
        assert!(!exists(dir.path(), end, "snapshot"));
        assert_eq!(
            log.sync_target().0.len(),
            2,
            "the segment is still unsealed"
        );
        assert_eq!(log.apply_retention(0).unwrap(), 0);
        assert!(matches!(
            log.append(idem("after", 1, (1, 0, seq))),
            Err(StorageError::Poisoned)
        ));
        assert!(matches!(log.close(), Err(StorageError::Poisoned)));
        drop(log);

        let log = PartitionLog::open(dir.path(), config).unwrap();
        assert_eq!(
            opened(),
            Opened {
                scanned: 2,
                indexed: 0
            }
        );
        assert_eq!(log.high_watermark(), high_watermark);
        assert!(exists(dir.path(), end, "snapshot"));
        assert_eq!(
            log.append(idem("after", 1, (1, 0, seq)))
                .unwrap()
                .base_offset,
            high_watermark
        );
    }

    /// A crash before a seal ran: the rolled segment's last batch never reached the disk. The
    /// open verifies that segment too (no snapshot vouches for it) and cuts the torn batch;
    /// the active segment after it, whose batches came after the lost one, goes as well, so
    /// the partition has no hole and the producer's retry of the lost batch is taken.
    #[test]
    fn a_crash_before_a_seal_is_recovered_by_verifying_the_unsealed_segment() {
        // The last batch torn, or missing whole (the file never got its last writes).
        for torn_bytes in [true, false] {
            crash_before_a_seal(torn_bytes);
        }
    }

    fn crash_before_a_seal(torn_bytes: bool) {
        let dir = tempfile::tempdir().unwrap();
        let config = small_config(600);
        let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        let seq = append_until(&log, 2, 0);
        log.wait_for_seals();
        let sealed_end = log.active().base_offset;
        // The next roll's seal never runs.
        log.sealer.paused.store(true, Ordering::Release);
        let seq = append_until(&log, 3, seq);
        let torn_end = log.active().base_offset;
        for s in seq..seq + 2 {
            log.append(idem(&format!("v{s}"), 1, (1, 0, s))).unwrap();
        }
        log.sealer.abandon();
        drop(log);
        assert!(exists(dir.path(), sealed_end, "snapshot"));
        assert!(!exists(dir.path(), torn_end, "snapshot"));
        // The unsealed segment's last batch is torn.
        let path = dir.path().join(format!("{sealed_end:020}.log"));
        let mut bytes = std::fs::read(&path).unwrap();
        // One record per batch from sequence 0 at offset 0: the batch at `o` is `v{o}`.
        let torn = torn_end - 1;
        let torn_seq = i32::try_from(torn).unwrap();
        let last_len = idem(&format!("v{torn}"), 1, (1, 0, torn_seq)).len();
        if torn_bytes {
            let at = bytes.len() - 2;
            bytes[at] ^= 0x40;
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len((bytes.len() - last_len) as u64).unwrap();
        }

        let log = PartitionLog::open(dir.path(), config).unwrap();
        // The torn segment is verified; the open stops there.
        assert_eq!(
            opened(),
            Opened {
                scanned: 1,
                indexed: 1
            }
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            (bytes.len() - last_len) as u64
        );
        assert!(!exists(dir.path(), torn_end, "log"));
        assert_eq!(log.high_watermark(), torn);
        let offsets: Vec<u64> = read_all(&log, 0, 700).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..torn).collect::<Vec<u64>>());
        // The producer's retry of the lost batch is taken where it was.
        let retry = idem(&format!("v{torn}"), 1, (1, 0, torn_seq));
        assert_eq!(log.append(retry).unwrap().base_offset, torn);
    }

    /// A crash with two seals queued: the open verifies both rolled segments and the active
    /// one, serves every record, and writes the snapshot that spares the next open doing so.
    #[test]
    fn a_crash_with_seals_queued_verifies_each_unsealed_segment_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_config(600);
        let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        let seq = append_until(&log, 2, 0);
        log.wait_for_seals();
        log.sealer.paused.store(true, Ordering::Release);
        let seq = append_until(&log, 4, seq);
        let end = log.active().base_offset;
        log.append(idem("last", 1, (1, 0, seq))).unwrap();
        let high_watermark = log.high_watermark();
        log.sealer.abandon();
        drop(log);
        assert!(!exists(dir.path(), end, "snapshot"));

        let log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        assert_eq!(
            opened(),
            Opened {
                scanned: 3,
                indexed: 1
            }
        );
        assert_eq!(log.high_watermark(), high_watermark);
        let offsets: Vec<u64> = read_all(&log, 0, 700).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..high_watermark).collect::<Vec<u64>>());
        assert!(exists(dir.path(), end, "snapshot"));
        assert!(log.append(idem("dup", 1, (1, 0, seq))).is_err());
        drop(log);

        // Another crash: only the active segment is verified now.
        let log = PartitionLog::open(dir.path(), config).unwrap();
        assert_eq!(
            opened(),
            Opened {
                scanned: 1,
                indexed: 3
            }
        );
        assert_eq!(log.high_watermark(), high_watermark);
        assert!(log.append(idem("dup", 1, (1, 0, seq))).is_err());
        assert_eq!(
            log.append(idem("next", 1, (1, 0, seq + 1)))
                .unwrap()
                .base_offset,
            high_watermark
        );
    }
}
