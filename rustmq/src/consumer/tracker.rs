//! Offset tracking of one partition: which delivered offsets are still unresolved, and the
//! position that may be committed.
//!
//! Messages are acknowledged in any order, but a committed offset means "everything below was
//! processed". So the tracker commits only the contiguous resolved prefix: the smallest
//! delivered offset that is neither acked nor dead-lettered, or — when every delivered message
//! is resolved — the position after the last delivered one.
//!
//! ```text
//!   delivered:   10  11  12  13  14      position = 15
//!   acked:       10      12  13
//!   unresolved:      11          14
//!   commit position = 11   (12 and 13 wait until 11 is resolved)
//! ```

use std::collections::{BTreeSet, VecDeque};

/// IO-free offset bookkeeping of one partition.
///
/// The unresolved offsets are a bitmap over the window from the first word holding one to the
/// position: one bit per offset, so delivering and acknowledging cost a few instructions and no
/// allocation in the steady state, and memory stays at one bit per message delivered since the
/// oldest unresolved one (a message left unacknowledged while thousands after it are acked
/// costs bytes, not a tree node each). An offset that would stretch the window beyond
/// [`MAX_WORDS`] (a gap of millions of offsets) is kept in a set instead, so no input can make
/// the bitmap large.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OffsetTracker {
    /// The offset after the last one delivered (or where delivery will start).
    position: u64,
    /// Delivered offsets not yet acknowledged (including ones waiting for a retry): bit `i` of
    /// `words[w]` stands for offset `base + 64 * w + i`. The first word is never zero.
    words: VecDeque<u64>,
    /// The offset of the first word's bit 0 (a multiple of 64).
    base: u64,
    /// Set bits.
    bits: usize,
    /// Unresolved offsets too far from the window to be bits in it.
    far: BTreeSet<u64>,
    /// The position last committed to (or read from) the broker.
    committed: Option<u64>,
}

const BITS: u64 = u64::BITS as u64;

/// The bitmap's longest window, in 64-bit words (2M offsets, 256 KiB).
const MAX_WORDS: u64 = 1 << 15;

impl OffsetTracker {
    /// Tracking that starts delivering at `position`; `committed` is what the group has
    /// committed for the partition, if anything.
    pub(crate) fn new(position: u64, committed: Option<u64>) -> Self {
        Self {
            position,
            words: VecDeque::new(),
            base: 0,
            bits: 0,
            far: BTreeSet::new(),
            committed,
        }
    }

    /// The offset after the last delivered message: where the application stands.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// The position last committed, if known.
    #[cfg(test)]
    pub(crate) fn committed(&self) -> Option<u64> {
        self.committed
    }

    /// Messages delivered and not yet resolved.
    pub(crate) fn unresolved(&self) -> usize {
        self.bits + self.far.len()
    }

    /// The word and bit of `offset`, if it lies in the window.
    fn slot(&self, offset: u64) -> Option<(usize, u64)> {
        let index = offset.checked_sub(self.base)?;
        let word = usize::try_from(index / BITS).ok()?;
        (word < self.words.len()).then_some((word, 1 << (index % BITS)))
    }

    /// A message was handed to the application for the first time.
    pub(crate) fn delivered(&mut self, offset: u64) {
        self.position = self.position.max(offset.saturating_add(1));
        if self.far.contains(&offset) {
            return;
        }
        let word_base = offset - offset % BITS;
        if self.words.is_empty() {
            self.base = word_base;
        }
        // Deliveries come in offset order, so the window grows at its end; an offset below it
        // (only possible out of order) grows it at the front. Neither beyond `MAX_WORDS` (in
        // 128 bits: the window may end at the last offset there is).
        let (base, word_base_wide) = (u128::from(self.base), u128::from(word_base));
        let end = base + u128::from(BITS) * self.words.len() as u128;
        let span = end.max(word_base_wide + u128::from(BITS)) - base.min(word_base_wide);
        if span > u128::from(MAX_WORDS * BITS) {
            if self.slot(offset).is_none() {
                self.far.insert(offset);
            }
            return;
        }
        while word_base < self.base {
            self.words.push_front(0);
            self.base -= BITS;
        }
        let word = ((word_base - self.base) / BITS) as usize;
        // Usually one word more at most (deliveries come in order): `push_back` is a few
        // instructions where `resize` cost ~50 per message once every acknowledged word had
        // been dropped from the front.
        while word >= self.words.len() {
            self.words.push_back(0);
        }
        let bit = 1 << (offset % BITS);
        if self.words[word] & bit == 0 {
            self.words[word] |= bit;
            self.bits += 1;
        }
    }

    /// A message was acknowledged (or dead-lettered). Returns false for an offset that was
    /// not unresolved (already resolved, or delivered before a seek).
    pub(crate) fn resolve(&mut self, offset: u64) -> bool {
        let Some((word, bit)) = self
            .slot(offset)
            .filter(|&(word, bit)| self.words[word] & bit != 0)
        else {
            return self.far.remove(&offset);
        };
        self.words[word] &= !bit;
        self.bits -= 1;
        while self.words.front() == Some(&0) {
            self.words.pop_front();
            if !self.words.is_empty() {
                self.base += BITS;
            }
        }
        true
    }

    /// Whether `offset` was delivered and is still unresolved.
    pub(crate) fn is_unresolved(&self, offset: u64) -> bool {
        self.slot(offset)
            .is_some_and(|(word, bit)| self.words[word] & bit != 0)
            || self.far.contains(&offset)
    }

    /// The end of the contiguous resolved prefix: what a commit would store.
    pub(crate) fn commit_position(&self) -> u64 {
        let first = self
            .words
            .front()
            .map(|&word| self.base + u64::from(word.trailing_zeros()));
        match (first, self.far.first()) {
            (Some(a), Some(&b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => self.position,
        }
    }

    /// The position to commit, if it differs from what is committed.
    pub(crate) fn pending_commit(&self) -> Option<u64> {
        let position = self.commit_position();
        (self.committed != Some(position)).then_some(position)
    }

    /// The broker stored `offset` as the committed position.
    pub(crate) fn mark_committed(&mut self, offset: u64) {
        self.committed = Some(offset);
    }

    /// Forgets every delivery and restarts at `position` (a seek).
    pub(crate) fn reset(&mut self, position: u64) {
        self.words.clear();
        self.bits = 0;
        self.far.clear();
        self.position = position;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Deliver(u64),
        Resolve(u64),
        Reset(u64),
    }

    /// Offsets mostly near each other (the bitmap), sometimes millions apart (the set).
    fn offset() -> impl Strategy<Value = u64> {
        prop_oneof![
            8 => 0..300u64,
            1 => 1_000_000_000..1_000_000_100u64,
            1 => (u64::MAX - 100)..u64::MAX,
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => offset().prop_map(Op::Deliver),
            6 => offset().prop_map(Op::Resolve),
            1 => offset().prop_map(Op::Reset),
        ]
    }

    proptest! {
        /// The tracker answers exactly as a plain set of unresolved offsets would, in any
        /// order of deliveries, acknowledgements and seeks.
        #[test]
        fn agrees_with_a_set_of_unresolved_offsets(ops in prop::collection::vec(op(), 0..400)) {
            let mut t = OffsetTracker::new(0, None);
            let mut model = BTreeSet::new();
            let mut position = 0u64;
            for op in ops {
                match op {
                    Op::Deliver(o) => {
                        t.delivered(o);
                        model.insert(o);
                        position = position.max(o.saturating_add(1));
                    }
                    Op::Resolve(o) => prop_assert_eq!(t.resolve(o), model.remove(&o)),
                    Op::Reset(o) => {
                        t.reset(o);
                        model.clear();
                        position = o;
                    }
                }
                prop_assert_eq!(t.unresolved(), model.len());
                prop_assert_eq!(t.position(), position);
                prop_assert_eq!(t.commit_position(), model.first().copied().unwrap_or(position));
                for probe in [0, 63, 64, 299, 1_000_000_050, u64::MAX - 1] {
                    prop_assert_eq!(t.is_unresolved(probe), model.contains(&probe));
                }
            }
            prop_assert!(t.words.len() as u64 <= MAX_WORDS);
        }
    }

    #[test]
    fn out_of_order_acks_commit_the_contiguous_prefix() {
        let mut t = OffsetTracker::new(10, None);
        assert_eq!(t.pending_commit(), Some(10));
        for o in 10..15 {
            t.delivered(o);
        }
        assert_eq!(t.position(), 15);
        for o in [12, 13, 10] {
            assert!(t.resolve(o));
        }
        assert_eq!(t.commit_position(), 11);
        assert!(t.resolve(11));
        assert_eq!(t.commit_position(), 14);
        assert!(t.resolve(14));
        assert_eq!(t.commit_position(), 15);
        assert_eq!(t.unresolved(), 0);
    }

    #[test]
    fn double_and_stale_acks_are_ignored() {
        let mut t = OffsetTracker::new(0, Some(0));
        t.delivered(0);
        assert!(t.resolve(0));
        assert!(!t.resolve(0));
        assert!(!t.resolve(7));
        assert_eq!(t.commit_position(), 1);
    }

    #[test]
    fn pending_commit_only_when_it_moved() {
        let mut t = OffsetTracker::new(5, Some(5));
        assert_eq!(t.pending_commit(), None);
        t.delivered(5);
        assert_eq!(
            t.pending_commit(),
            None,
            "an unresolved message holds the commit back"
        );
        t.resolve(5);
        assert_eq!(t.pending_commit(), Some(6));
        t.mark_committed(6);
        assert_eq!(t.pending_commit(), None);
        assert_eq!(t.committed(), Some(6));
    }

    #[test]
    fn offsets_millions_apart_keep_the_bitmap_small_and_count_once() {
        let mut t = OffsetTracker::new(0, None);
        t.delivered(0);
        t.delivered(10_000_000_000);
        assert_eq!(t.words.len(), 1, "the far offset is not a bit");
        assert_eq!(t.commit_position(), 0);
        assert!(t.resolve(0));
        assert_eq!(t.commit_position(), 10_000_000_000);
        // Delivered again once the window is empty (it could start there): still one.
        t.delivered(10_000_000_000);
        assert_eq!(t.unresolved(), 1);
        assert!(t.resolve(10_000_000_000));
        assert!(!t.resolve(10_000_000_000));
        assert_eq!(t.commit_position(), 10_000_000_001);
    }

    #[test]
    fn gaps_in_offsets_do_not_hold_commits() {
        // Offsets need not be dense (a fetch may skip records); only delivered ones count.
        let mut t = OffsetTracker::new(0, None);
        t.delivered(3);
        t.delivered(9);
        t.resolve(9);
        assert_eq!(t.commit_position(), 3);
        t.resolve(3);
        assert_eq!(t.commit_position(), 10);
    }

    #[test]
    fn reset_moves_backwards_and_forgets_deliveries() {
        let mut t = OffsetTracker::new(0, Some(0));
        for o in 0..100 {
            t.delivered(o);
            t.resolve(o);
        }
        t.mark_committed(100);
        t.delivered(100);
        t.reset(40);
        assert!(!t.is_unresolved(100));
        assert_eq!(t.position(), 40);
        assert_eq!(
            t.pending_commit(),
            Some(40),
            "a seek backwards is committed like any position"
        );
    }
}
