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

use std::collections::BTreeSet;

/// IO-free offset bookkeeping of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OffsetTracker {
    /// The offset after the last one delivered (or where delivery will start).
    position: u64,
    /// Delivered offsets not yet acknowledged (including ones waiting for a retry).
    unresolved: BTreeSet<u64>,
    /// The position last committed to (or read from) the broker.
    committed: Option<u64>,
}

impl OffsetTracker {
    /// Tracking that starts delivering at `position`; `committed` is what the group has
    /// committed for the partition, if anything.
    pub(crate) fn new(position: u64, committed: Option<u64>) -> Self {
        Self {
            position,
            unresolved: BTreeSet::new(),
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
        self.unresolved.len()
    }

    /// A message was handed to the application for the first time.
    pub(crate) fn delivered(&mut self, offset: u64) {
        self.unresolved.insert(offset);
        self.position = self.position.max(offset + 1);
    }

    /// A message was acknowledged (or dead-lettered). Returns false for an offset that was
    /// not unresolved (already resolved, or delivered before a seek).
    pub(crate) fn resolve(&mut self, offset: u64) -> bool {
        self.unresolved.remove(&offset)
    }

    /// Whether `offset` was delivered and is still unresolved.
    pub(crate) fn is_unresolved(&self, offset: u64) -> bool {
        self.unresolved.contains(&offset)
    }

    /// The end of the contiguous resolved prefix: what a commit would store.
    pub(crate) fn commit_position(&self) -> u64 {
        self.unresolved.first().copied().unwrap_or(self.position)
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
        self.unresolved.clear();
        self.position = position;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
