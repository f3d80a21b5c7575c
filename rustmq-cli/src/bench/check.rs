//! Checks that a run delivered every message exactly once: a figure measured over lost or
//! repeated messages is no figure. A consume run (W3, `bench consume`) reads each partition's
//! offsets in order, so it checks them off as a range ([`Offsets`]); the end-to-end run (W4,
//! `bench e2e`) and W7's handler check off the sequence number each message carries
//! ([`SeqSet`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// What was wrong with a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Mismatch {
    /// The topic holds another number of messages than were produced.
    #[error("the topic holds {held} message(s) ({ranges}), {produced} were produced")]
    Held {
        held: u64,
        produced: u64,
        /// Each partition's stored offsets, `p0: 0..1000`.
        ranges: String,
    },
    /// A message of a partition that the topic does not have.
    #[error("partition {partition}: not a partition of the topic (offset {offset})")]
    NoSuchPartition { partition: u32, offset: u64 },
    /// Offsets were skipped.
    #[error("partition {partition}: offset {got} came where {expected} was next (offsets {expected}..{got} missing)")]
    Gap {
        partition: u32,
        expected: u64,
        got: u64,
    },
    /// An offset came again, or came from before the start.
    #[error(
        "partition {partition}: offset {got} came again (or before the first), {expected} was next"
    )]
    Repeat {
        partition: u32,
        expected: u64,
        got: u64,
    },
    /// A partition was not read to its end.
    #[error("partition {partition}: read up to offset {next}, the partition ends at {end}")]
    Short { partition: u32, next: u64, end: u64 },
    /// A sequence number came twice.
    #[error("message {seq} came twice")]
    SeqRepeat { seq: u64 },
    /// A sequence number that was never sent.
    #[error("message {seq} came, but only 0..{n} were sent")]
    SeqOutOfRange { seq: u64, n: u64 },
    /// Sequence numbers never came.
    #[error("{missing} message(s) never came (the first: {first})")]
    SeqMissing { missing: u64, first: u64 },
}

/// Each partition's offsets from its first stored one to its end, to be read in order, each
/// once: a consumer reading a fresh topic as a new group from the earliest offset gets every
/// offset of a partition in order, so anything else is a lost or repeated message.
#[derive(Debug, Clone)]
pub(crate) struct Offsets {
    /// Per partition: the next offset expected, and the partition's end (its high watermark).
    next: Vec<u64>,
    end: Vec<u64>,
}

impl Offsets {
    /// The partitions' stored ranges as `(partition, first offset, end)`.
    pub(crate) fn new(ranges: impl IntoIterator<Item = (u32, u64, u64)>) -> Self {
        let (mut next, mut end) = (Vec::new(), Vec::new());
        for (partition, first, last) in ranges {
            let p = partition as usize;
            if next.len() <= p {
                next.resize(p + 1, 0);
                end.resize(p + 1, 0);
            }
            next[p] = first;
            end[p] = last.max(first);
        }
        Self { next, end }
    }

    /// Messages the partitions hold.
    pub(crate) fn held(&self) -> u64 {
        self.next.iter().zip(&self.end).map(|(n, e)| e - n).sum()
    }

    /// Fails unless the partitions hold exactly the `produced` messages.
    pub(crate) fn holds(&self, produced: u64) -> Result<(), Mismatch> {
        let held = self.held();
        if held == produced {
            return Ok(());
        }
        let ranges = self
            .next
            .iter()
            .zip(&self.end)
            .enumerate()
            .map(|(p, (n, e))| format!("p{p}: {n}..{e}"))
            .collect::<Vec<_>>()
            .join(", ");
        Err(Mismatch::Held {
            held,
            produced,
            ranges,
        })
    }

    /// Checks off `offset` of `partition`: it must be the partition's next one.
    #[inline]
    pub(crate) fn check(&mut self, partition: u32, offset: u64) -> Result<(), Mismatch> {
        let Some(next) = self.next.get_mut(partition as usize) else {
            return Err(Mismatch::NoSuchPartition { partition, offset });
        };
        if offset == *next {
            *next += 1;
            return Ok(());
        }
        let expected = *next;
        Err(if offset > expected {
            Mismatch::Gap {
                partition,
                expected,
                got: offset,
            }
        } else {
            Mismatch::Repeat {
                partition,
                expected,
                got: offset,
            }
        })
    }

    /// Fails unless every partition was read to its end.
    pub(crate) fn finish(&self) -> Result<(), Mismatch> {
        match self
            .next
            .iter()
            .zip(&self.end)
            .position(|(next, end)| next != end)
        {
            None => Ok(()),
            Some(p) => Err(Mismatch::Short {
                partition: p as u32,
                next: self.next[p],
                end: self.end[p],
            }),
        }
    }
}

/// Sequence numbers `0..n`, each to be seen once: a bitset, shared by the tasks that check
/// messages off (W7's handler may run on several).
#[derive(Debug)]
pub(crate) struct SeqSet {
    words: Vec<AtomicU64>,
    n: u64,
    /// Distinct numbers seen so far.
    seen: AtomicU64,
}

impl SeqSet {
    pub(crate) fn new(n: u64) -> Self {
        Self {
            words: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            n,
            seen: AtomicU64::new(0),
        }
    }

    /// Checks off `seq`; returns how many distinct numbers have been seen with it.
    #[inline]
    pub(crate) fn mark(&self, seq: u64) -> Result<u64, Mismatch> {
        if seq >= self.n {
            return Err(Mismatch::SeqOutOfRange { seq, n: self.n });
        }
        let bit = 1u64 << (seq % 64);
        let before = self.words[(seq / 64) as usize].fetch_or(bit, Ordering::Relaxed);
        if before & bit != 0 {
            return Err(Mismatch::SeqRepeat { seq });
        }
        Ok(self.seen.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Distinct numbers seen so far.
    pub(crate) fn seen(&self) -> u64 {
        self.seen.load(Ordering::Acquire)
    }

    /// Fails unless every number was seen.
    pub(crate) fn finish(&self) -> Result<(), Mismatch> {
        let missing = self.n - self.seen();
        if missing == 0 {
            return Ok(());
        }
        let first = self
            .words
            .iter()
            .enumerate()
            .find_map(|(i, w)| {
                let w = w.load(Ordering::Relaxed);
                let seq = i as u64 * 64 + u64::from((!w).trailing_zeros());
                (w != u64::MAX && seq < self.n).then_some(seq)
            })
            .unwrap_or(self.n);
        Err(Mismatch::SeqMissing { missing, first })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_must_come_in_order_each_once_to_the_end() {
        let mut o = Offsets::new([(0, 0, 3), (1, 5, 7)]);
        assert_eq!(o.held(), 5);
        assert!(o.holds(5).is_ok());
        let held = o.holds(4).unwrap_err();
        assert_eq!(
            held.to_string(),
            "the topic holds 5 message(s) (p0: 0..3, p1: 5..7), 4 were produced"
        );
        o.check(0, 0).unwrap();
        o.check(1, 5).unwrap();
        o.check(0, 1).unwrap();
        assert_eq!(
            o.check(0, 1),
            Err(Mismatch::Repeat {
                partition: 0,
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            o.check(1, 7),
            Err(Mismatch::Gap {
                partition: 1,
                expected: 6,
                got: 7
            })
        );
        assert!(matches!(
            o.check(2, 0),
            Err(Mismatch::NoSuchPartition { partition: 2, .. })
        ));
        o.check(0, 2).unwrap();
        assert_eq!(
            o.finish(),
            Err(Mismatch::Short {
                partition: 1,
                next: 6,
                end: 7
            })
        );
        o.check(1, 6).unwrap();
        assert_eq!(o.finish(), Ok(()));
    }

    #[test]
    fn each_sequence_number_once() {
        let s = SeqSet::new(130);
        assert_eq!(s.mark(0), Ok(1));
        assert_eq!(s.mark(129), Ok(2));
        assert_eq!(s.mark(129), Err(Mismatch::SeqRepeat { seq: 129 }));
        assert_eq!(
            s.mark(130),
            Err(Mismatch::SeqOutOfRange { seq: 130, n: 130 })
        );
        assert_eq!(s.seen(), 2);
        for seq in 1..64 {
            s.mark(seq).unwrap();
        }
        assert_eq!(
            s.finish(),
            Err(Mismatch::SeqMissing {
                missing: 130 - 65,
                first: 64
            })
        );
        for seq in 64..129 {
            s.mark(seq).unwrap();
        }
        assert_eq!(s.finish(), Ok(()));
        assert_eq!(SeqSet::new(0).finish(), Ok(()));
    }
}
