//! The IO-free batch aggregator of one partition.
//!
//! ```text
//!  send(message) ──► try_push ──► Aggregated { full: false }   (waits in the open batch)
//!                          │
//!                          ├──► Aggregated { full: true }   ──► take() ──► sender
//!                          └──► NoCapacity(waiter)          ──► take(), then push again
//! ```
//!
//! It decides what goes into a batch (count, bytes, age); the partition's sender task does
//! the I/O. Nothing here touches a socket, so the policy is unit-tested on its own.

use tokio::time::Instant;

use rustmq_protocol::RecordBatchBuilder;

use super::Waiter;
use crate::message::Message;

/// Buffer size of the first batch of a partition; later ones start at the previous batch's
/// size, so a partition sending one message at a time does not allocate (and fault in) a large
/// buffer per message, and one sending full batches does not grow its buffer step by step.
const FIRST_BATCH_CAPACITY: usize = 4 * 1024;

/// What happened to a pushed message.
#[derive(Debug)]
pub(crate) enum TryPush {
    /// In the open batch; `full` says it should be taken now.
    Aggregated { full: bool },
    /// The open batch has no room for it: take the batch, then push again.
    NoCapacity(Waiter),
}

/// Limits of one batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub(crate) max_records: usize,
    pub(crate) max_bytes: usize,
}

/// A closed batch, ready to be encoded and sent.
#[derive(Debug)]
pub(crate) struct ReadyBatch {
    pub(crate) builder: RecordBatchBuilder,
    pub(crate) waiters: Vec<(Waiter, u64)>,
    /// Message bytes counted against the producer's buffer.
    pub(crate) buffered_bytes: usize,
    pub(crate) opened: Instant,
}

#[derive(Debug)]
struct OpenBatch {
    builder: RecordBatchBuilder,
    waiters: Vec<(Waiter, u64)>,
    buffered_bytes: usize,
    opened: Instant,
}

/// Aggregates messages of one partition into batches.
#[derive(Debug)]
pub(crate) struct Accumulator {
    limits: BatchLimits,
    open: Option<OpenBatch>,
    /// Bytes of the last batch taken: the next batch's starting capacity.
    last_size: usize,
    /// Messages in the last batch taken: the next batch's starting waiter capacity.
    last_count: usize,
    /// A batch of this partition is being sent (by the sender task, or by a `send` that found
    /// the partition idle): one at a time, so order holds across retries.
    in_flight: bool,
}

impl Accumulator {
    pub(crate) fn new(limits: BatchLimits) -> Self {
        Self {
            limits,
            open: None,
            last_size: FIRST_BATCH_CAPACITY,
            last_count: 0,
            in_flight: false,
        }
    }

    /// Adds a message to the open batch (opening one if needed).
    pub(crate) fn try_push(
        &mut self,
        message: &Message,
        waiter: Waiter,
        now: impl FnOnce() -> Instant,
    ) -> TryPush {
        let headers = || {
            message
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
        };
        let bound = RecordBatchBuilder::record_size_bound(
            message.key.as_deref(),
            Some(&message.payload),
            headers(),
        );
        // Start at the previous batch's size: a busy partition's batch then rarely reallocates
        // (each regrowth copies the whole batch), an idle partition's wastes no memory.
        let capacity = bound
            .max(self.last_size)
            .min(self.limits.max_bytes.max(bound));
        let open = self.open.get_or_insert_with(|| OpenBatch {
            builder: RecordBatchBuilder::with_capacity(capacity),
            waiters: Vec::with_capacity(self.last_count),
            buffered_bytes: 0,
            opened: now(),
        });
        // A message alone larger than the byte limit still goes, in a batch of its own.
        if !open.builder.is_empty() && open.builder.size() + bound > self.limits.max_bytes {
            return TryPush::NoCapacity(waiter);
        }
        open.builder.push(
            message.timestamp as i64,
            message.key.as_deref(),
            Some(&message.payload),
            headers(),
        );
        // Counted as the producer's buffer permits were taken: at least one per message.
        open.buffered_bytes += message.size().max(1);
        open.waiters.push((waiter, message.timestamp));
        let full = open.builder.len() as usize >= self.limits.max_records
            || open.builder.size() >= self.limits.max_bytes;
        TryPush::Aggregated { full }
    }

    /// Closes the open batch, if any.
    pub(crate) fn take(&mut self) -> Option<ReadyBatch> {
        let open = self.open.take();
        if let Some(o) = &open {
            self.last_size = o.builder.size();
            self.last_count = o.waiters.len();
        }
        open.map(|o| ReadyBatch {
            builder: o.builder,
            waiters: o.waiters,
            buffered_bytes: o.buffered_bytes,
            opened: o.opened,
        })
    }

    /// When the open batch was opened.
    pub(crate) fn opened_at(&self) -> Option<Instant> {
        self.open.as_ref().map(|o| o.opened)
    }

    /// Whether a batch is being sent.
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Marks a batch as being sent (`true`) or done (`false`).
    pub(crate) fn set_in_flight(&mut self, in_flight: bool) {
        self.in_flight = in_flight;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(size: usize) -> Message {
        Message::builder()
            .topic("t")
            .payload(vec![b'x'; size])
            .build()
            .unwrap()
    }

    #[test]
    fn full_by_count() {
        let mut acc = Accumulator::new(BatchLimits {
            max_records: 3,
            max_bytes: 1 << 20,
        });
        let now = Instant::now();
        for i in 0..3 {
            match acc.try_push(&msg(10), Waiter::Detached, || now) {
                TryPush::Aggregated { full } => assert_eq!(full, i == 2),
                TryPush::NoCapacity(..) => panic!("no capacity"),
            }
        }
        let batch = acc.take().unwrap();
        assert_eq!(batch.builder.len(), 3);
        assert_eq!(batch.waiters.len(), 3);
        assert_eq!(batch.buffered_bytes, 30);
        assert!(acc.opened_at().is_none());
    }

    #[test]
    fn no_capacity_by_bytes_and_oversized_alone() {
        let mut acc = Accumulator::new(BatchLimits {
            max_records: 100,
            max_bytes: 1000,
        });
        let now = Instant::now();
        assert!(matches!(
            acc.try_push(&msg(600), Waiter::Detached, || now),
            TryPush::Aggregated { full: false }
        ));
        assert!(matches!(
            acc.try_push(&msg(600), Waiter::Detached, || now),
            TryPush::NoCapacity(..)
        ));
        assert_eq!(acc.take().unwrap().builder.len(), 1);
        // A message above the limit is accepted alone and marks the batch full.
        assert!(matches!(
            acc.try_push(&msg(5000), Waiter::Detached, || now),
            TryPush::Aggregated { full: true }
        ));
    }

    #[test]
    fn remembers_when_the_batch_opened() {
        let mut acc = Accumulator::new(BatchLimits {
            max_records: 10,
            max_bytes: 1 << 20,
        });
        assert!(acc.opened_at().is_none());
        let t0 = Instant::now();
        let _ = acc.try_push(&msg(1), Waiter::Detached, || t0);
        let _ = acc.try_push(&msg(1), Waiter::Detached, || {
            t0 + std::time::Duration::from_millis(5)
        });
        assert_eq!(acc.opened_at(), Some(t0));
    }
}
