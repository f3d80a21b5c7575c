//! How a partition log sizes, indexes, keeps and flushes its segments.

use std::time::Duration;

use rustmq_protocol::batch::DEFAULT_MAX_UNCOMPRESSED;

/// When appended data is forced to disk with fdatasync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every append waits for fdatasync; concurrent appends share one (group commit).
    Always,
    /// Flush at most this long after data is appended (see [`spawn_interval_flusher`]).
    ///
    /// [`spawn_interval_flusher`]: super::spawn_interval_flusher
    Interval(Duration),
    /// Leave write-back to the operating system; data is still synced when a segment rolls (by
    /// the seal that follows the roll, off the append lock), on
    /// [`flush`](super::PartitionLog::flush) and on [`close`](super::PartitionLog::close).
    Os,
}

/// Default [`LogConfig::segment_ms`]: 7 days, as Kafka's `segment.ms`.
pub const DEFAULT_SEGMENT_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Default [`LogConfig::producer_id_expiration_ms`]: 1 day, as Kafka's
/// `producer.id.expiration.ms`.
pub const DEFAULT_PRODUCER_ID_EXPIRATION_MS: u64 = 24 * 60 * 60 * 1000;

/// Default [`LogConfig::message_timestamp_after_max_ms`]: 1 hour, as Kafka's since 4.0.
pub const DEFAULT_MESSAGE_TIMESTAMP_AFTER_MAX_MS: u64 = 60 * 60 * 1000;

/// The shortest age at which a retention shorter than `segment_ms` rolls the active segment:
/// 10 s ([`LogConfig::roll_ms`]).
pub const MIN_RETENTION_ROLL_MS: u64 = 10_000;

/// Configuration of one [`PartitionLog`](super::PartitionLog).
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Roll to a new segment when the active one would exceed this many bytes. Capped at
    /// `u32::MAX` because index entries store 32-bit file positions.
    pub segment_bytes: u64,
    /// Roll the active segment, at the next append, once its first batch was appended more
    /// than this many milliseconds ago (Kafka's `segment.ms`), so that a partition receiving
    /// little data still gets sealed segments that retention can delete (retention rolls the
    /// active segment itself only once every record of the log is past `retention_ms`). When `retention_ms` is shorter, the segment rolls by that
    /// instead, so that data older than the retention is always in a sealed segment (see
    /// [`roll_ms`](Self::roll_ms)). Age is measured on the broker's clock from the first
    /// append, not by record timestamps, which producers set and which may lie far in the past
    /// (a roll per append) or future (never a roll). Default 7 days.
    pub segment_ms: u64,
    /// The sparse offset index gets one entry per this many bytes of batches.
    pub index_interval_bytes: u32,
    /// Delete the oldest segments while the log stays at least this large without them.
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this many milliseconds.
    pub retention_ms: Option<u64>,
    /// When appends reach the disk.
    pub flush: FlushPolicy,
    /// Forget an idempotent producer's sequence state once it has not written to the partition
    /// for this many milliseconds (Kafka's `producer.id.expiration.ms`), checked by each
    /// [`apply_retention`](super::PartitionLog::apply_retention) pass; named producers (those
    /// fenced by an initialisation) are kept. A producer that writes again after it is
    /// forgotten is taken as new: a retry of a batch sent before it would be written twice, so
    /// this must be far longer than any producer's delivery timeout. Default 1 day.
    pub producer_id_expiration_ms: u64,
    /// Refuse a batch whose largest timestamp is more than this many milliseconds ahead of
    /// the broker's clock ([`StorageError::InvalidTimestamp`](super::StorageError)): retention
    /// by time goes by a segment's largest timestamp. Checked after the idempotence check, so
    /// a retry of a stored batch is answered as a duplicate whatever the clock did since.
    /// Default 1 hour ([`DEFAULT_MESSAGE_TIMESTAMP_AFTER_MAX_MS`]).
    pub message_timestamp_after_max_ms: u64,
    /// Decompression cap when a batch must be decoded (timestamp lookup).
    pub max_uncompressed_batch: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: DEFAULT_SEGMENT_MS,
            index_interval_bytes: 4096,
            retention_bytes: None,
            retention_ms: None,
            flush: FlushPolicy::Os,
            producer_id_expiration_ms: DEFAULT_PRODUCER_ID_EXPIRATION_MS,
            message_timestamp_after_max_ms: DEFAULT_MESSAGE_TIMESTAMP_AFTER_MAX_MS,
            max_uncompressed_batch: DEFAULT_MAX_UNCOMPRESSED,
        }
    }
}

impl LogConfig {
    /// The age (ms) after which the active segment rolls at the next append: `segment_ms`, or
    /// `retention_ms` when that is shorter, but never under [`MIN_RETENTION_ROLL_MS`] on
    /// account of the retention (a retention of a few milliseconds would roll, and fsync, at
    /// nearly every append, and hold a file per segment until the next retention pass).
    pub fn roll_ms(&self) -> u64 {
        self.retention_ms.map_or(self.segment_ms, |retention| {
            retention.max(MIN_RETENTION_ROLL_MS).min(self.segment_ms)
        })
    }
}
