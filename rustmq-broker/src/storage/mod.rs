//! The durable segmented log of one partition.
//!
//! A [`PartitionLog`] owns a directory of segments. Record batches are stored exactly as the
//! producer sent them; the broker only rewrites `base_offset`, which the CRC does not cover, so a
//! fetch serves the stored bytes unchanged.
//!
//! ```text
//!  append(batch) ──► header + length check ──► producer table (idempotence) ─┐
//!                                                                            │ duplicate?
//!                      ┌─────────────────────────────────────────────────────┘ └──► DuplicateSequence
//!                      ▼
//!        assign offsets (rewrite base_offset) ──► roll? (full, or older than segment_ms:
//!                      │                           new file; a seal thread syncs the old one,
//!                      │                           writes its indexes and the snapshot)
//!                      │
//!                      ▼
//!        pwrite to the active segment ──► sparse offset index + time index (in memory;
//!                      │                    paged to their files once the segment is sealed)
//!                      │
//!                      ▼
//!        high watermark ──► watch channel (long-poll fetches wake up)
//!                      │
//!                      ▼  FlushPolicy::Always, sync_up_to(offset), flush()
//!        group commit: one caller runs fdatasync for every waiter appended before it started
//!
//!  dir/00000000000000000000.log        batches, back to back
//!     /00000000000000000000.index      (relative offset u32, file position u32), every ~4 KiB
//!     /00000000000000000000.timeindex  (running max timestamp i64, relative offset u32)
//!     /00000000000000004096.snapshot   the producer table as of offset 4096 (by a roll or a close)
//!     /00000000000000004096.log        ... the last segment is the active one
//!     /clean-shutdown                  left by a clean close, taken by the next open
//!     /log-start-offset                where retention last moved the log start (decimal)
//!
//!  read(offset) ──► segment by base offset ──► index: nearest position ──► scan headers
//!               (a sealed segment's index: 1 entry in 64 in memory, a block of its file read)
//!               ──► pread whole batches (no append lock held), possibly across segments
//! ```
//!
//! Recovery on [`PartitionLog::open`] verifies every batch of the last segment (header, offsets,
//! CRC) and truncates a torn tail, unless a clean close left its marker, and so does every
//! segment after the latest producer snapshot (a crash came before the seal of the segment it
//! ends had synced it); older segments were synced by their seal. The
//! idempotent producer table is loaded from the latest producer snapshot (one per roll) and
//! replayed from the batch headers after it; the sealed segments below that snapshot are opened
//! from their index files, reading only their batches after the last index entry. After a clean
//! close (a marker, `clean-shutdown`, and a snapshot at the end of the log) the active segment
//! is opened that way too, and nothing is replayed. Segments below the
//! recorded log start offset, and empty segment files a failed roll left inside the previous
//! segment, are removed instead of served.
//!
//! ```
//! use rustmq_broker::storage::{LogConfig, PartitionLog};
//! use rustmq_protocol::RecordBatchBuilder;
//!
//! let dir = tempfile::tempdir()?;
//! let log = PartitionLog::open(dir.path(), LogConfig::default())?;
//! let mut builder = RecordBatchBuilder::new();
//! builder.push(1_700_000_000_000, Some(b"key"), Some(b"value"), []);
//! let batch = builder.build().expect("one record");
//! let info = log.append(&batch[..])?;
//! assert_eq!((info.base_offset, log.high_watermark()), (0, 1));
//! let stored = log.read(0, 1024 * 1024)?;
//! assert_eq!(stored.len(), batch.len());
//! log.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod index;
mod log;
mod producer_state;
mod read;
mod recovery;
mod retention;
mod scan;
mod seal;
mod segment;
mod snapshot;
mod sync;
#[cfg(test)]
mod test_util;

pub use config::{
    FlushPolicy, LogConfig, DEFAULT_MESSAGE_TIMESTAMP_AFTER_MAX_MS,
    DEFAULT_PRODUCER_ID_EXPIRATION_MS, DEFAULT_SEGMENT_MS, MIN_RETENTION_ROLL_MS,
};
pub(crate) use index::write_atomic;
pub(crate) use log::now_ms;
pub use log::{AppendInfo, PartitionLog};
#[cfg(test)]
pub(crate) use segment::FAIL_SYNC_DIR;
pub(crate) use segment::{sync_dir, LOG_EXT};

/// Largest segment a log writes (bytes): index entries hold 32-bit file positions, so a
/// larger `segment_bytes` is capped to this.
pub const MAX_SEGMENT_BYTES: u64 = rustmq_protocol::MAX_SEGMENT_BYTES;
const _: () = assert!(MAX_SEGMENT_BYTES <= u32::MAX as u64);
pub use sync::spawn_interval_flusher;

use rustmq_protocol::ProtocolError;

/// A failure of the partition log.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum StorageError {
    /// The requested offset is not in the log.
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// The log start offset.
        start: u64,
        /// The high watermark.
        end: u64,
    },
    /// A batch (received or stored) is malformed.
    #[error("corrupt batch: {0}")]
    CorruptBatch(ProtocolError),
    /// The batch was already appended; nothing was written.
    #[error("duplicate batch, already stored at offset {base_offset}")]
    DuplicateSequence {
        /// Where the earlier copy starts.
        base_offset: u64,
    },
    /// The batch's sequence does not follow the producer's last one.
    #[error("out of order sequence for producer {producer_id}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The sequence the log expected.
        expected: i32,
        /// The batch's base sequence.
        got: i32,
    },
    /// The producer has been fenced by a newer epoch.
    #[error("producer {producer_id} epoch {got} is older than {current}")]
    InvalidProducerEpoch {
        /// The producer.
        producer_id: i64,
        /// The epoch the log knows.
        current: i16,
        /// The batch's epoch.
        got: i16,
    },
    /// A record's timestamp is further ahead of the broker's clock than the log accepts
    /// ([`LogConfig::message_timestamp_after_max_ms`]).
    #[error("record timestamp {timestamp} is {ahead_ms} ms ahead of the broker's clock; it accepts at most {limit_ms} ms (log.message_timestamp_after_max_ms)")]
    InvalidTimestamp {
        /// The batch's largest timestamp.
        timestamp: i64,
        /// How far ahead of the broker's clock it is.
        ahead_ms: i64,
        /// The limit.
        limit_ms: u64,
    },
    /// The producer id is retired: its name used every epoch and moved to a new id.
    #[error("producer {producer_id} is retired: its name used every epoch and moved to a new id")]
    RetiredProducer {
        /// The producer.
        producer_id: i64,
    },
    /// The segment files are inconsistent in a way recovery cannot repair by truncation.
    #[error("corrupt log in {dir}: {reason}")]
    CorruptLog {
        /// The partition directory.
        dir: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An fdatasync failed earlier: the kernel may have dropped dirty pages, so nothing written
    /// since the last good sync can be trusted. Reopen the log to recover from the disk.
    #[error("log is unusable after a failed fdatasync; reopen it")]
    Poisoned,
    /// The log's topic was deleted: its files are gone or going, and nothing is written to
    /// them any more (see [`PartitionLog::retire`]).
    #[error("the partition's topic was deleted")]
    Retired,
    /// An I/O operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<ProtocolError> for StorageError {
    fn from(err: ProtocolError) -> Self {
        StorageError::CorruptBatch(err)
    }
}
