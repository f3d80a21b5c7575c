//! A partition's fetched records waiting for delivery: checked when fetched (noting where each
//! one's fields lie, 32 bytes a record), built into a [`Message`](crate::message::Message)
//! only as each one is received, without being parsed again.
//!
//! Decoding a whole fetch at once (10,000 records in W3) made ~1.8 MB of `Message`s, ~190
//! bytes each before their strings: written once, read back and moved out one by one after
//! they had left the cache, and the large vector made and freed for every fetch. Profiles of
//! W3 showed all three. Kept as records, a fetch takes its stored size (the answer's bytes, which
//! the payloads share anyway) and 32 bytes per record, and each message is built where the
//! application takes it.

use std::collections::VecDeque;

use rustmq_protocol::batch::{Record, RecordIter, RecordSpan};

#[cfg(test)]
use crate::message::{Message, TopicName};

/// Checked records of one partition, in offset order.
#[derive(Debug, Default)]
pub(crate) struct Records {
    runs: VecDeque<Run>,
    len: usize,
    bytes: usize,
}

/// Records of one batch, checked, with where their fields lie: each is built without being
/// parsed again.
#[derive(Debug)]
struct Run {
    /// The batch's records (its whole records section, decompressed).
    iter: RecordIter,
    /// The first record's index in the batch.
    first: u32,
    spans: Vec<RecordSpan>,
    /// The next span to deliver.
    next: usize,
    /// What `bytes` counts for this run.
    held: usize,
}

impl Records {
    /// What `bytes` counts per record besides its batch: where its fields lie.
    pub(crate) const SPAN_BYTES: usize = std::mem::size_of::<RecordSpan>();

    /// Records held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held: the records sections of the batches these records are in, whole (the
    /// records taken from a batch free nothing until its last one is taken), and the records'
    /// spans.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds the records of `iter`'s batch that `spans` describe, from the one at index
    /// `first` in the batch on, as [`RecordIter::check_spans`] checked them.
    pub(crate) fn push_checked(&mut self, iter: RecordIter, first: u32, spans: Vec<RecordSpan>) {
        if !spans.is_empty() {
            // A run holds its batch's whole records section (decompressed) until its last
            // record is taken.
            let held = iter.held_bytes() + spans.len() * Self::SPAN_BYTES;
            self.len += spans.len();
            self.bytes += held;
            self.runs.push_back(Run {
                iter,
                first,
                spans,
                next: 0,
                held,
            });
        }
    }

    /// Moves all of `other`'s records after these.
    pub(crate) fn append(&mut self, mut other: Records) {
        self.len += other.len;
        self.bytes += other.bytes;
        self.runs.append(&mut other.runs);
    }

    /// The next record, as a received message of `topic`/`partition` (for tests; `receive`
    /// takes [`Records::pop_record`] and builds the message where it delivers it).
    #[cfg(test)]
    pub(crate) fn pop_front(&mut self, topic: &TopicName, partition: u32) -> Option<Message> {
        self.pop_record()
            .map(|record| super::fetcher::to_message(topic, partition, record))
    }

    /// The next record.
    // Inlined, as `to_message`, `Message::received` and `ConsumerMessage::new` are, so that the
    // decoded message is built where it is delivered instead of being moved through each call's
    // return value (each move of ~200 bytes is a `memcpy`).
    #[inline(always)]
    pub(crate) fn pop_record(&mut self) -> Option<Record> {
        let run = self.runs.front_mut()?;
        let index = run.first + run.next as u32;
        let record = run.iter.record_at(index, &run.spans[run.next]);
        run.next += 1;
        self.len -= 1;
        if run.next == run.spans.len() {
            self.bytes -= run.held;
            self.runs.pop_front();
        }
        Some(record)
    }

    /// Drops every record.
    pub(crate) fn clear(&mut self) {
        self.runs.clear();
        self.len = 0;
        self.bytes = 0;
    }
}
