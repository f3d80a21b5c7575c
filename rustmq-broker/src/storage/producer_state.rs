//! The idempotent producer table: which sequences each producer id has written.
//!
//! For every producer id the log keeps its epoch, the last sequence it wrote and the sequences
//! and offsets of its last [`RECENT_BATCHES`] batches, so that a batch retried after a lost
//! answer is recognised and answered with the offset of the stored copy instead of being
//! written twice. When the log is opened, the table is loaded from the latest producer snapshot
//! (see [`super::snapshot`]) and rebuilt from the batch headers after it.
//!
//! A producer that stops writing is forgotten once it has been idle for the log's
//! `producer_id_expiration_ms` (Kafka's `producer.id.expiration.ms`, one day by default), so
//! that short-lived producers do not make the table grow for good. Named producers (fenced by
//! their initialisation, see [`ProducerTable::fence`]) are kept, as their epoch is what refuses
//! an older instance; where one has not written since its fence, only that epoch is kept.
//!
//! Sequences wrap as in Kafka: after `i32::MAX` comes `0`.

use std::collections::{HashMap, HashSet};

use rustmq_protocol::BatchHeader;

use super::StorageError;

/// How many recent batches per producer are remembered for duplicate detection; a producer
/// has at most this many requests in flight.
pub(crate) const RECENT_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct StoredBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: u64,
}

/// A producer's last [`RECENT_BATCHES`] batches, held in its table entry: no allocation of
/// its own, so the table is one allocation however many producers it holds, and forgetting
/// producers gives the memory back with it.
#[derive(Debug, Clone, Default)]
struct Recent {
    batches: [StoredBatch; RECENT_BATCHES],
    len: u8,
    /// Where the next batch goes (over the oldest once full).
    next: u8,
}

impl Recent {
    fn push(&mut self, batch: StoredBatch) {
        self.batches[usize::from(self.next)] = batch;
        self.next = (self.next + 1) % RECENT_BATCHES as u8;
        self.len = (self.len + 1).min(RECENT_BATCHES as u8);
    }

    fn find(&self, first_seq: i32) -> Option<&StoredBatch> {
        self.batches[..usize::from(self.len)]
            .iter()
            .find(|b| b.first_seq == first_seq)
    }

    fn clear(&mut self) {
        *self = Recent::default();
    }
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    last_seq: i32,
    /// A named producer's (fenced by an initialisation): kept however long it is idle.
    pinned: bool,
    /// The broker's clock (ms) at its last write, or when the log was opened.
    last_active: i64,
    recent: Recent,
}

/// Sequence state of the idempotent producers that wrote to the log and were not forgotten
/// since, and the epochs of named producers fenced here that have not written since.
#[derive(Debug)]
pub(crate) struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
    /// Named producers fenced at an epoch they have not written here since (a fence reaches
    /// every partition of the broker, most of which a producer may never write to): only the
    /// epoch, a few bytes, where a full entry holds room for its recent batches. Never expired.
    fenced: HashMap<i64, i16>,
    /// Ids retired by their name (it used every epoch and moved to a new id): every batch of
    /// them is refused. One per 32,768 initialisations of a name.
    retired: HashSet<i64>,
    /// No producer that is not pinned was active before this (`i64::MAX`: there is none), so
    /// an [`expire`](Self::expire) up to it has nothing to forget and skips the walk.
    earliest_active: i64,
    /// No walk before this (the broker's clock, ms): see [`expire`](Self::expire).
    next_walk: i64,
    /// Nothing is forgotten before this (the broker's clock, ms): see
    /// [`hold_expiry_until`](Self::hold_expiry_until).
    hold_until: i64,
}

impl Default for ProducerTable {
    fn default() -> Self {
        Self {
            producers: HashMap::new(),
            fenced: HashMap::new(),
            retired: HashSet::new(),
            earliest_active: i64::MAX,
            next_walk: i64::MIN,
            hold_until: i64::MIN,
        }
    }
}

/// `seq + n` in the sequence space `0..=i32::MAX`.
fn seq_add(seq: i32, n: u32) -> i32 {
    let space = i64::from(i32::MAX) + 1;
    // Both operands are non-negative and below 2^32, so the sum cannot overflow an i64 and the
    // remainder fits an i32.
    ((i64::from(seq) + i64::from(n)).rem_euclid(space)) as i32
}

fn last_seq(header: &BatchHeader) -> i32 {
    seq_add(header.base_sequence, header.record_count.saturating_sub(1))
}

/// How many walks over the table an expiration period allows at most: with producers going
/// idle all the time, each pass would otherwise walk the whole table under the append lock; a
/// forgotten producer is then forgotten up to an eighth of its expiration late.
const WALKS_PER_EXPIRATION: i64 = 8;

impl ProducerTable {
    /// Decides whether `header` may be appended. `Err(DuplicateSequence)` means it is already
    /// stored and must not be written again.
    pub(crate) fn check(&self, header: &BatchHeader) -> Result<(), StorageError> {
        if !header.is_idempotent() {
            return Ok(());
        }
        let producer_id = header.producer_id;
        let got = header.base_sequence;
        if !self.retired.is_empty() && self.retired.contains(&producer_id) {
            return Err(StorageError::RetiredProducer { producer_id });
        }
        let Some(entry) = self.producers.get(&producer_id) else {
            // Fenced at an epoch it has not written here: older epochs are refused, and the
            // new one starts at sequence 0.
            if let Some(&epoch) = self.fenced.get(&producer_id) {
                return Self::check_new_epoch(header, epoch);
            }
            // An unknown producer may start anywhere: its earlier batches can have been
            // removed by retention, or it was forgotten after its expiration, and refusing it
            // would wedge the producer forever (Kafka does the same).
            return Ok(());
        };
        if header.producer_epoch != entry.epoch {
            return Self::check_new_epoch(header, entry.epoch);
        }
        let expected = seq_add(entry.last_seq, 1);
        if let Some(stored) = entry.recent.find(got) {
            // A retry carries exactly the same records; the same start with another length is
            // a different batch and answering it with the old offsets would be wrong.
            if stored.last_seq == last_seq(header) {
                return Err(StorageError::DuplicateSequence {
                    base_offset: stored.base_offset,
                });
            }
        } else if got == expected {
            return Ok(());
        }
        Err(StorageError::OutOfOrderSequence {
            producer_id,
            expected,
            got,
        })
    }

    /// A batch of another epoch than `current`, the last one written or fenced: an older one
    /// is refused, a newer one starts at sequence 0.
    fn check_new_epoch(header: &BatchHeader, current: i16) -> Result<(), StorageError> {
        if header.producer_epoch < current {
            return Err(StorageError::InvalidProducerEpoch {
                producer_id: header.producer_id,
                current,
                got: header.producer_epoch,
            });
        }
        if header.base_sequence == 0 {
            return Ok(());
        }
        Err(StorageError::OutOfOrderSequence {
            producer_id: header.producer_id,
            expected: 0,
            got: header.base_sequence,
        })
    }

    /// Records a batch that was written at `base_offset` at `now` (the broker's clock, ms; the
    /// time of the open when replaying), without checking it: used after
    /// [`check`](Self::check) passed, and when replaying the log on open.
    pub(crate) fn record(&mut self, header: &BatchHeader, base_offset: u64, now: i64) {
        if !header.is_idempotent() {
            return;
        }
        let (fenced, earliest_active) = (&mut self.fenced, &mut self.earliest_active);
        let entry = self.producers.entry(header.producer_id).or_insert_with(|| {
            let pinned = fenced.remove(&header.producer_id).is_some();
            if !pinned {
                *earliest_active = (*earliest_active).min(now);
            }
            ProducerEntry {
                epoch: header.producer_epoch,
                last_seq: -1,
                pinned,
                last_active: now,
                recent: Recent::default(),
            }
        });
        entry.last_active = entry.last_active.max(now);
        if entry.epoch != header.producer_epoch {
            entry.epoch = header.producer_epoch;
            entry.recent.clear();
        }
        let stored = StoredBatch {
            first_seq: header.base_sequence,
            last_seq: last_seq(header),
            base_offset,
        };
        entry.last_seq = stored.last_seq;
        entry.recent.push(stored);
    }

    /// Raises `producer_id`'s epoch to at least `epoch` without a batch, so that the older
    /// epoch's batches are refused from now on (a named producer was initialised again: its
    /// previous instance is fenced at once, not only after the new one first writes here).
    /// The new epoch starts at sequence 0; a lower or equal `epoch` changes nothing but that
    /// the producer is now kept however long it is idle (only named producers are fenced).
    pub(crate) fn fence(&mut self, producer_id: i64, epoch: i16) {
        match self.producers.get_mut(&producer_id) {
            Some(entry) if entry.epoch >= epoch => entry.pinned = true,
            Some(_) => {
                // Its batches are of an older epoch: only the new epoch is left to know.
                self.producers.remove(&producer_id);
                self.fenced.insert(producer_id, epoch);
            }
            None => {
                let fenced = self.fenced.entry(producer_id).or_insert(epoch);
                *fenced = (*fenced).max(epoch);
            }
        }
    }

    /// Forgets nothing before `until` (the broker's clock, ms). Set when a log is opened, to
    /// ten minutes later, past any producer's retries: producers loaded from a snapshot keep
    /// the time of their last write, and a clock that jumped forward while the broker was
    /// down would otherwise have a producer forgotten while it still retries a batch whose
    /// answer it lost (the retry would be written twice).
    pub(crate) fn hold_expiry_until(&mut self, until: i64) {
        self.hold_until = until;
    }

    /// Undoes [`fence`](Self::fence) for a named producer whose name was forgotten: its epoch
    /// is no longer kept where it has not written, and its entry is forgotten like any other
    /// once it has been idle for the expiration.
    pub(crate) fn unpin(&mut self, producer_id: i64) {
        self.fenced.remove(&producer_id);
        if let Some(entry) = self.producers.get_mut(&producer_id) {
            if entry.pinned {
                entry.pinned = false;
                self.earliest_active = self.earliest_active.min(entry.last_active);
            }
        }
    }

    /// Whether `producer_id` wrote at or after `since` (the broker's clock, ms; a producer
    /// replayed when the log was opened counts as writing then).
    pub(crate) fn active_since(&self, producer_id: i64, since: i64) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|entry| entry.last_active >= since)
    }

    /// Refuses every batch of `producer_id` from now on, whatever its epoch (its name moved to a
    /// new id), and forgets its sequences.
    pub(crate) fn retire(&mut self, producer_id: i64) {
        self.producers.remove(&producer_id);
        self.fenced.remove(&producer_id);
        self.retired.insert(producer_id);
    }

    /// Forgets the producers that are not pinned and have not written for `expiration_ms`
    /// before `now` (the broker's clock, ms), and gives back the table's memory when most of
    /// it is free; returns how many were forgotten. A forgotten producer that writes again is
    /// taken as new (its sequences may start anywhere), as after retention removed all of its
    /// batches.
    ///
    /// The walk over the table (under the append lock) is made only when some producer may be
    /// due, and at most [`WALKS_PER_EXPIRATION`] times per `expiration_ms`.
    pub(crate) fn expire(&mut self, now: i64, expiration_ms: u64) -> usize {
        let expiration = i64::try_from(expiration_ms).unwrap_or(i64::MAX);
        let idle_before = now.saturating_sub(expiration);
        if idle_before <= self.earliest_active || now < self.next_walk || now < self.hold_until {
            return 0;
        }
        self.next_walk = now.saturating_add(expiration / WALKS_PER_EXPIRATION);
        let before = self.producers.len();
        let mut earliest_active = i64::MAX;
        self.producers.retain(|_, entry| {
            let keep = entry.pinned || entry.last_active >= idle_before;
            if keep && !entry.pinned {
                earliest_active = earliest_active.min(entry.last_active);
            }
            keep
        });
        self.earliest_active = earliest_active;
        let len = self.producers.len();
        if self.producers.capacity() > 4 * len.max(16) {
            self.producers.shrink_to(2 * len);
        }
        before - len
    }

    /// At most what [`encode_entries`](Self::encode_entries) writes, in bytes, without a
    /// walk over the producers (a roll encodes the table under the append lock, and each walk
    /// of a million entries is one cache miss after another). The pages of a buffer of this
    /// size that the encoding does not reach are never touched.
    pub(crate) fn encoded_len_bound(&self) -> usize {
        8 + self.producers.len() * (23 + 16 * RECENT_BATCHES)
    }

    /// The producers' sequence state, for a snapshot file (see [`super::snapshot`]): each
    /// producer's epoch, last sequence, last write (the broker's clock) and recent batches,
    /// oldest first. Fenced-only and
    /// retired ids are left out (the broker fences and retires them again from its registry
    /// of named producers at startup), and so is whether a producer is pinned (that fence
    /// pins it again).
    pub(crate) fn encode_entries(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.producers.len() as u64).to_be_bytes());
        // Each entry is put together on the stack and appended once: a roll encodes the
        // table under the append lock, and the appends of each field were most of its cost.
        let mut buf = [0u8; 23 + 16 * RECENT_BATCHES];
        for (&id, entry) in &self.producers {
            let recent = &entry.recent;
            buf[..8].copy_from_slice(&id.to_be_bytes());
            buf[8..10].copy_from_slice(&entry.epoch.to_be_bytes());
            buf[10..14].copy_from_slice(&entry.last_seq.to_be_bytes());
            buf[14..22].copy_from_slice(&entry.last_active.to_be_bytes());
            buf[22] = recent.len;
            // Oldest first: from `next` once the ring is full, else from the start.
            let start = if usize::from(recent.len) == RECENT_BATCHES {
                usize::from(recent.next)
            } else {
                0
            };
            let mut at = 23;
            for i in 0..usize::from(recent.len) {
                let batch = &recent.batches[(start + i) % RECENT_BATCHES];
                buf[at..at + 4].copy_from_slice(&batch.first_seq.to_be_bytes());
                buf[at + 4..at + 8].copy_from_slice(&batch.last_seq.to_be_bytes());
                buf[at + 8..at + 16].copy_from_slice(&batch.base_offset.to_be_bytes());
                at += 16;
            }
            out.extend_from_slice(&buf[..at]);
        }
    }

    /// The table [`encode_entries`](Self::encode_entries) wrote, read from `r`; its producers
    /// were last active when they last wrote before the snapshot (so that a restart does not
    /// restart their expiration), but not after `now` (the broker's clock, ms: a clock set
    /// back since).
    pub(crate) fn decode_entries(
        r: &mut rustmq_protocol::codec::Reader,
        now: i64,
    ) -> Result<Self, &'static str> {
        let count = r.u64().map_err(|_| "truncated")?;
        let mut table = Self::default();
        // Every entry takes at least 23 bytes: a count beyond what remains is corrupt, and
        // reserving for it could exhaust memory.
        if count > (r.remaining() / 23) as u64 {
            return Err("producer count larger than the file");
        }
        table.producers.reserve(count as usize);
        for _ in 0..count {
            let read = |r: &mut rustmq_protocol::codec::Reader| -> rustmq_protocol::Result<_> {
                let id = r.i64()?;
                let epoch = r.i16()?;
                let last_seq = r.i32()?;
                let last_active = r.i64()?;
                let len = r.u8()?;
                if usize::from(len) > RECENT_BATCHES {
                    return Ok(None);
                }
                let mut recent = Recent::default();
                for _ in 0..len {
                    recent.push(StoredBatch {
                        first_seq: r.i32()?,
                        last_seq: r.i32()?,
                        base_offset: r.u64()?,
                    });
                }
                Ok(Some((id, epoch, last_seq, last_active, recent)))
            };
            let (id, epoch, last_seq, last_active, recent) = read(r)
                .map_err(|_| "truncated")?
                .ok_or("more recent batches than a producer keeps")?;
            let entry = ProducerEntry {
                epoch,
                last_seq,
                pinned: false,
                last_active: last_active.min(now),
                recent,
            };
            table.earliest_active = table.earliest_active.min(entry.last_active);
            if table.producers.insert(id, entry).is_some() {
                return Err("a producer id appears twice");
            }
        }
        Ok(table)
    }

    /// Number of producers tracked (retired ids apart).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.producers.len() + self.fenced.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustmq_protocol::batch::{BatchHeader, MAGIC};

    fn header(pid: i64, epoch: i16, seq: i32, count: u32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 100,
            magic: MAGIC,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    fn append(table: &mut ProducerTable, h: &BatchHeader, offset: u64) -> Result<(), StorageError> {
        table.check(h)?;
        table.record(h, offset, 1_000);
        Ok(())
    }

    #[test]
    fn in_order_batches_pass_and_retries_are_duplicates() {
        let mut t = ProducerTable::default();
        append(&mut t, &header(7, 0, 0, 3), 0).unwrap();
        append(&mut t, &header(7, 0, 3, 2), 3).unwrap();
        assert!(matches!(
            t.check(&header(7, 0, 0, 3)),
            Err(StorageError::DuplicateSequence { base_offset: 0 })
        ));
        assert!(matches!(
            t.check(&header(7, 0, 3, 2)),
            Err(StorageError::DuplicateSequence { base_offset: 3 })
        ));
        assert!(matches!(
            t.check(&header(7, 0, 3, 1)),
            Err(StorageError::OutOfOrderSequence {
                expected: 5,
                got: 3,
                ..
            })
        ));
        t.check(&header(7, 0, 5, 1)).unwrap();
        t.check(&header(8, 0, 42, 1)).unwrap();
    }

    #[test]
    fn gaps_and_forgotten_sequences_are_out_of_order() {
        let mut t = ProducerTable::default();
        for i in 0..7 {
            append(&mut t, &header(1, 0, i, 1), i as u64).unwrap();
        }
        assert!(matches!(
            t.check(&header(1, 0, 8, 1)),
            Err(StorageError::OutOfOrderSequence {
                expected: 7,
                got: 8,
                ..
            })
        ));
        assert!(matches!(
            t.check(&header(1, 0, 1, 1)),
            Err(StorageError::OutOfOrderSequence {
                expected: 7,
                got: 1,
                ..
            })
        ));
        assert!(matches!(
            t.check(&header(1, 0, 2, 1)),
            Err(StorageError::DuplicateSequence { base_offset: 2 })
        ));
    }

    #[test]
    fn epochs_fence_and_reset() {
        let mut t = ProducerTable::default();
        append(&mut t, &header(1, 3, 0, 10), 0).unwrap();
        assert!(matches!(
            t.check(&header(1, 2, 10, 1)),
            Err(StorageError::InvalidProducerEpoch {
                current: 3,
                got: 2,
                ..
            })
        ));
        assert!(matches!(
            t.check(&header(1, 4, 10, 1)),
            Err(StorageError::OutOfOrderSequence {
                expected: 0,
                got: 10,
                ..
            })
        ));
        append(&mut t, &header(1, 4, 0, 1), 10).unwrap();
        // The old epoch's batches no longer count as duplicates.
        assert!(matches!(
            t.check(&header(1, 4, 0, 10)),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
        t.check(&header(1, 4, 1, 1)).unwrap();
    }

    #[test]
    fn fencing_refuses_the_old_epoch_before_the_new_one_writes() {
        let mut t = ProducerTable::default();
        append(&mut t, &header(1, 0, 0, 5), 0).unwrap();
        t.fence(1, 1);
        assert!(matches!(
            t.check(&header(1, 0, 5, 1)),
            Err(StorageError::InvalidProducerEpoch {
                current: 1,
                got: 0,
                ..
            })
        ));
        t.check(&header(1, 1, 0, 1)).unwrap();
        // Fencing an unknown producer pins it to the epoch and to sequence 0, with no batches.
        t.fence(2, 3);
        assert!(t.fenced.contains_key(&2) && !t.producers.contains_key(&2));
        assert!(t.check(&header(2, 2, 0, 1)).is_err());
        assert!(t.check(&header(2, 3, 4, 1)).is_err());
        t.check(&header(2, 3, 0, 1)).unwrap();
        // An equal epoch keeps the sequence state.
        append(&mut t, &header(2, 3, 0, 2), 9).unwrap();
        assert_eq!(t.producers[&2].recent.len, 1);
        assert!(t.producers[&2].pinned && !t.fenced.contains_key(&2));
        t.fence(2, 3);
        assert!(matches!(
            t.check(&header(2, 3, 0, 2)),
            Err(StorageError::DuplicateSequence { base_offset: 9 })
        ));
    }

    #[test]
    fn only_the_last_batches_are_known_as_duplicates() {
        let mut t = ProducerTable::default();
        for i in 0..12 {
            append(&mut t, &header(1, 0, i, 1), i as u64).unwrap();
        }
        for i in 0..12 {
            let checked = t.check(&header(1, 0, i, 1));
            if i >= 12 - RECENT_BATCHES as i32 {
                assert!(
                    matches!(checked, Err(StorageError::DuplicateSequence { base_offset }) if base_offset == i as u64),
                    "{i}: {checked:?}"
                );
            } else {
                assert!(
                    matches!(checked, Err(StorageError::OutOfOrderSequence { .. })),
                    "{i}: {checked:?}"
                );
            }
        }
    }

    #[test]
    fn a_retired_id_is_refused_at_every_epoch() {
        let mut t = ProducerTable::default();
        append(&mut t, &header(1, i16::MAX, 0, 1), 0).unwrap();
        t.fence(2, 0);
        t.retire(1);
        for epoch in [0, i16::MAX] {
            assert!(matches!(
                t.check(&header(1, epoch, 1, 1)),
                Err(StorageError::RetiredProducer { producer_id: 1 })
            ));
        }
        assert_eq!(t.len(), 1);
        t.check(&header(2, 0, 0, 1)).unwrap();
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut t = ProducerTable::default();
        append(&mut t, &header(1, 0, i32::MAX - 1, 3), 0).unwrap();
        t.check(&header(1, 0, 1, 1)).unwrap();
        assert!(matches!(
            t.check(&header(1, 0, i32::MAX - 1, 3)),
            Err(StorageError::DuplicateSequence { base_offset: 0 })
        ));
        append(&mut t, &header(1, 0, 1, 1), 3).unwrap();
        t.check(&header(1, 0, 2, 1)).unwrap();
        assert_eq!(seq_add(i32::MAX, 1), 0);
    }

    #[test]
    fn non_idempotent_batches_are_not_tracked() {
        let mut t = ProducerTable::default();
        append(&mut t, &header(-1, 0, -1, 1), 0).unwrap();
        append(&mut t, &header(-1, 0, -1, 1), 1).unwrap();
        append(&mut t, &header(5, 0, -1, 1), 2).unwrap();
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn idle_producers_are_forgotten_and_named_ones_kept() {
        let mut t = ProducerTable::default();
        // Producer 1 writes at 1,000 and 5,000; producer 2 only at 1,000 (via `append`).
        append(&mut t, &header(1, 0, 0, 1), 0).unwrap();
        append(&mut t, &header(2, 0, 0, 1), 1).unwrap();
        t.check(&header(1, 0, 1, 1)).unwrap();
        t.record(&header(1, 0, 1, 1), 2, 5_000);
        // A named producer, fenced and never written, and one fenced after it wrote.
        t.fence(3, 2);
        append(&mut t, &header(4, 0, 0, 1), 3).unwrap();
        t.fence(4, 0);
        assert_eq!(t.expire(2_000, 1_000), 0);
        assert_eq!(t.expire(2_001, 1_000), 1);
        assert_eq!(t.len(), 3);
        // The forgotten producer is new again: its retry is no longer known as a duplicate,
        // and its sequences may start anywhere.
        t.check(&header(2, 0, 0, 1)).unwrap();
        t.check(&header(2, 0, 7, 1)).unwrap();
        assert!(matches!(
            t.check(&header(1, 0, 1, 1)),
            Err(StorageError::DuplicateSequence { base_offset: 2 })
        ));
        // Named producers outlive any idleness: their older epochs stay refused.
        assert_eq!(t.expire(i64::MAX, 1_000), 1);
        assert_eq!(t.len(), 2);
        assert!(matches!(
            t.check(&header(3, 1, 0, 1)),
            Err(StorageError::InvalidProducerEpoch { current: 2, .. })
        ));
        assert!(matches!(
            t.check(&header(4, 0, 0, 1)),
            Err(StorageError::DuplicateSequence { base_offset: 3 })
        ));
    }

    #[test]
    fn expiring_most_producers_gives_the_memory_back() {
        let mut t = ProducerTable::default();
        for pid in 0..10_000 {
            append(&mut t, &header(pid, 0, 0, 1), pid as u64).unwrap();
        }
        t.record(&header(0, 0, 1, 1), 10_000, 2_000);
        let full = t.producers.capacity();
        assert_eq!(t.expire(3_000, 1_000), 9_999);
        assert!(
            t.producers.capacity() < full / 100,
            "{}",
            t.producers.capacity()
        );
        assert_eq!(t.len(), 1);
    }

    /// With producers going idle all the time, the table is walked at most
    /// `WALKS_PER_EXPIRATION` times per expiration: one due just after a walk waits for the
    /// next one.
    #[test]
    fn walks_are_spaced_by_an_eighth_of_the_expiration() {
        let mut t = ProducerTable::default();
        append(&mut t, &header(1, 0, 0, 1), 0).unwrap();
        t.record(&header(2, 0, 0, 1), 1, 1_050);
        assert_eq!(t.expire(2_001, 1_000), 1);
        // Producer 2 is due from 2,051, the next walk from 2,126.
        assert_eq!(t.expire(2_100, 1_000), 0);
        assert_eq!(t.len(), 1);
        assert_eq!(t.expire(2_126, 1_000), 1);
        assert_eq!(t.len(), 0);
    }
    /// A named producer whose name was forgotten: its fence-only epoch goes, and its entry is
    /// forgotten at the next expiry like any idle producer's (a pinned one is kept).
    #[test]
    fn an_unpinned_producer_expires_like_any_other() {
        let mut t = ProducerTable::default();
        t.record(&header(1, 0, 0, 1), 0, 1_000);
        t.fence(1, 0);
        t.fence(2, 3);
        assert_eq!(t.expire(1_000_000, 1_000), 0, "pinned");
        assert!(t.active_since(1, 1_000) && !t.active_since(1, 1_001) && !t.active_since(2, 0));
        t.unpin(2);
        assert_eq!(t.len(), 1, "the fence-only epoch is gone");
        t.unpin(1);
        // At the next walk (at most eight per expiration).
        assert_eq!(t.expire(1_001_000, 1_000), 1);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn expiry_is_held_until_the_set_time() {
        let mut t = ProducerTable::default();
        t.record(&header(1, 0, 0, 1), 0, 1_000);
        t.hold_expiry_until(50_000);
        assert_eq!(t.expire(49_999, 1_000), 0);
        assert_eq!(t.expire(50_000, 1_000), 1);
    }
}
