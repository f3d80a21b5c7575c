//! A partition's fetched records waiting for delivery: checked when fetched, decoded into a
//! [`Message`](crate::message::Message) only as each one is received.
//!
//! Decoding a whole fetch at once (10,000 records in W3) made ~1.8 MB of `Message`s, ~190
//! bytes each before their strings: written once, read back and moved out one by one after
//! they had left the cache, and the large vector made and freed for every fetch. Profiles of
//! W3 showed all three. Kept as records, a fetch takes its stored size (the answer's bytes, which
//! the payloads share anyway), and each message is built where the application takes it.

use std::collections::VecDeque;

use rustmq_protocol::batch::{Record, RecordIter};

#[cfg(test)]
use crate::message::{Message, TopicName};

/// Checked records of one partition, in offset order.
#[derive(Debug, Default)]
pub(crate) struct Records {
    runs: VecDeque<Run>,
    len: usize,
    bytes: usize,
}

/// The next `left` records of one batch.
#[derive(Debug)]
struct Run {
    iter: RecordIter,
    left: u32,
}

impl Records {
    /// Records held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held: the records sections of the batches these records are in, whole (the
    /// records taken from a batch free nothing until its last one is taken).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds the next `n` records of `iter`, which the caller checked
    /// ([`RecordIter::check_ahead`]): decoding them later cannot fail.
    pub(crate) fn push_checked(&mut self, iter: RecordIter, n: u32) {
        if n > 0 {
            // A run holds its batch's whole records section (decompressed) until its last
            // record is taken.
            self.len += n as usize;
            self.bytes += iter.held_bytes();
            self.runs.push_back(Run { iter, left: n });
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
        loop {
            let run = self.runs.front_mut()?;
            let record = run.iter.next();
            run.left -= 1;
            self.len -= 1;
            if run.left == 0 {
                self.bytes -= run.iter.held_bytes();
                self.runs.pop_front();
            }
            match record {
                Some(Ok(record)) => return Some(record),
                // Unreachable: the run was checked by the same parser when it was fetched.
                _ => debug_assert!(false, "a checked record failed to decode"),
            }
        }
    }

    /// Drops every record.
    pub(crate) fn clear(&mut self) {
        self.runs.clear();
        self.len = 0;
        self.bytes = 0;
    }
}
