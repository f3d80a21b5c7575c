//! The IO-free bookkeeping behind commits: which inputs are finished, which windows are done,
//! and (exactly-once) where in each output partition a restart must start reading.
//!
//! ```text
//!  input partition:  received offsets, each with a count of unfinished uses
//!                    (1 for a message; one per window it joined) ──► position = first
//!                    unfinished offset (or the next to receive)
//!  windows:          closed windows in end order ──► closed_up_to = end of the first
//!                    unfinished one − 1 (or the watermark when none is unfinished)
//!  output partition: acknowledged records of units a commit does not cover yet
//!                    ──► scan start = the first of them (or the end of the acknowledged log)
//! ```
//!
//! A snapshot of all three, taken under one lock, is one `CommitOffsets` request: the commit
//! and the output positions it relies on can never disagree.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::Tp;

/// Reserved commit entries (their names are the protocol's, which brokers know:
/// `rustmq_protocol::is_library_entry`): `__out.<topic>` (scan start of an output partition).
pub(crate) const OUT_PREFIX: &str = rustmq_protocol::ENTRY_PREFIXES_ABOUT_TOPIC[0];
/// `__seen.<topic>`: windowed mode, every input below was placed in its windows.
pub(crate) const SEEN_PREFIX: &str = rustmq_protocol::ENTRY_PREFIXES_ABOUT_TOPIC[1];
/// `__closed.<topic>`: windowed mode, every window ending at or before is finished with this
/// input partition's messages in it. Per input partition, not one for the group: members of
/// one group have windows of their own partitions, each with its own progress.
pub(crate) const CLOSED_PREFIX: &str = rustmq_protocol::ENTRY_PREFIXES_ABOUT_TOPIC[2];
/// `__closed` partition 0: what earlier builds committed for the whole group; read when no
/// input partition has a `__closed.<topic>` entry.
pub(crate) const CLOSED_ENTRY: &str = rustmq_protocol::CLOSED_ENTRY;

/// When a commit makes an output record unnecessary for recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Coverage {
    /// Once every input partition's position is past this offset.
    Members(Vec<(Tp, u64)>),
    /// Once windows up to this end are committed as closed.
    Window(u64),
}

#[derive(Debug, Default)]
struct Input {
    /// Received, unfinished-or-not-yet-popped offsets with their open uses, in order.
    pending: VecDeque<(u64, u32)>,
    /// Next offset expected.
    next: u64,
    /// Windowed mode: every offset below was placed in its windows.
    seen: u64,
}

impl Input {
    fn position(&mut self) -> u64 {
        self.pop_finished();
        self.pending.front().map_or(self.next, |e| e.0)
    }

    /// Drops the finished offsets at the front: as they finish, not only at a commit, so
    /// that a long commit interval does not keep an entry for every message received.
    fn pop_finished(&mut self) {
        while self.pending.front().is_some_and(|e| e.1 == 0) {
            self.pending.pop_front();
        }
    }

    fn entry(&mut self, offset: u64) -> Option<&mut (u64, u32)> {
        let i = self.pending.binary_search_by_key(&offset, |e| e.0).ok()?;
        self.pending.get_mut(i)
    }
}

#[derive(Debug, Default)]
struct Lane {
    acked_end: u64,
    uncovered: BTreeMap<u64, Coverage>,
}

/// One commit's worth of positions: `(topic, partition, offset)`.
pub(crate) type Snapshot = Vec<(String, u32, u64)>;

/// Positions of one session.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    inputs: HashMap<Tp, Input>,
    windowed: bool,
    closed: VecDeque<(u64, bool)>,
    /// Windowed mode: the members (input and offset) of windows finished before a window that
    /// closed earlier, by window end: released in window order (see [`Ledger::window_done`]).
    held: HashMap<u64, Vec<(Tp, u64)>>,
    closed_up_to: Option<u64>,
    /// Per input partition, the `__closed` entry it was recovered with: its commits never go
    /// below it (windows up to it were emitted with its messages by an earlier owner).
    closed_floors: HashMap<Tp, u64>,
    watermark: Option<u64>,
    lanes: BTreeMap<(Arc<str>, u32), Lane>,
    changed: bool,
}

impl Ledger {
    pub(crate) fn new(windowed: bool, closed_up_to: Option<u64>) -> Self {
        Self {
            windowed,
            closed_up_to,
            ..Default::default()
        }
    }

    /// Windowed mode: the `__closed` entries the partitions were recovered with.
    pub(crate) fn closed_floors(&mut self, floors: HashMap<Tp, u64>) {
        self.closed_floors = floors;
        self.changed = true;
    }

    /// Starts tracking an input partition at `position`.
    pub(crate) fn start_partition(&mut self, tp: Tp, position: u64, seen: Option<u64>) {
        self.inputs.insert(
            tp,
            Input {
                pending: VecDeque::new(),
                next: position,
                seen: seen.unwrap_or(position).max(position),
            },
        );
        self.changed = true;
    }

    /// A message arrived with `uses` unfinished uses (0: finished already).
    pub(crate) fn received(&mut self, tp: &Tp, offset: u64, uses: u32) {
        if let Some(input) = self.inputs.get_mut(tp) {
            input.pop_finished();
            input.pending.push_back((offset, uses));
            input.next = offset + 1;
        }
    }

    /// Changes a received message's unfinished uses by `delta` (only ever down: an offset
    /// finished is dropped once it leads the partition's).
    pub(crate) fn adjust(&mut self, tp: &Tp, offset: u64, delta: i64) {
        let Some(input) = self.inputs.get_mut(tp) else {
            return;
        };
        if let Some(entry) = input.entry(offset) {
            entry.1 = u32::try_from(i64::from(entry.1) + delta).unwrap_or(0);
            self.changed = true;
            input.pop_finished();
        }
    }

    /// Nothing below `offset` will arrive for `tp` (the log start moved past it).
    pub(crate) fn skip_to(&mut self, tp: &Tp, offset: u64) {
        if let Some(input) = self.inputs.get_mut(tp) {
            input.next = input.next.max(offset);
            input.seen = input.seen.max(offset);
            self.changed = true;
        }
    }

    /// The log of `tp` ends below its position (the committed position was past the log end,
    /// or the log lost records): the next record of `tp` will get `offset`, which may be
    /// below what was received or committed. Outputs that claim inputs of `tp` at or past
    /// `offset` no longer wait for them. Refused (`false`, nothing changed) while a received
    /// input at or past `offset` is unfinished: its unit's adjustments would land on the new
    /// record that gets its offset.
    pub(crate) fn rewind_to(&mut self, tp: &Tp, offset: u64) -> bool {
        let Some(input) = self.inputs.get_mut(tp) else {
            return true;
        };
        if input.pending.iter().any(|e| e.0 >= offset && e.1 > 0) {
            return false;
        }
        input.pending.retain(|e| e.0 < offset);
        input.next = offset;
        input.seen = input.seen.min(offset);
        for lane in self.lanes.values_mut() {
            for coverage in lane.uncovered.values_mut() {
                if let Coverage::Members(members) = coverage {
                    members.retain_mut(|(t, max)| {
                        if t != tp || *max < offset {
                            return true;
                        }
                        // What is left of the claim: the inputs below `offset`.
                        *max = offset.saturating_sub(1);
                        offset > 0
                    });
                }
            }
        }
        self.changed = true;
        true
    }

    /// Windowed mode: `offset` of `tp` is placed in its windows.
    pub(crate) fn placed(&mut self, tp: &Tp, offset: u64) {
        if let Some(input) = self.inputs.get_mut(tp) {
            input.seen = input.seen.max(offset + 1);
        }
    }

    /// Windowed mode: the watermark moved and these windows closed (in end order).
    pub(crate) fn windows_closed(
        &mut self,
        ends: impl IntoIterator<Item = u64>,
        watermark: Option<u64>,
    ) {
        self.closed.extend(ends.into_iter().map(|e| (e, false)));
        self.watermark = watermark.max(self.watermark);
        self.changed = true;
    }

    /// Windowed mode: the window ending at `end`, of `members`, is finished. Its members are
    /// released (one use each) once every window that closed before it is finished too: a
    /// partition must not commit past a finished window's message while an earlier window is
    /// unfinished, as `__closed` does not cover the finished one yet. A restart would then
    /// build that window again without the message, and emit it with some members missing.
    pub(crate) fn window_done(&mut self, end: u64, members: Vec<(Tp, u64)>) {
        match self.closed.iter_mut().find(|w| w.0 == end) {
            Some(w) => {
                w.1 = true;
                self.held.entry(end).or_default().extend(members);
            }
            None => self.release(members),
        }
        while let Some(&(end, true)) = self.closed.front() {
            self.closed.pop_front();
            self.closed_up_to = self.closed_up_to.max(Some(end));
            if let Some(members) = self.held.remove(&end) {
                self.release(members);
            }
        }
        self.changed = true;
    }

    /// One use of each of `members` is finished.
    fn release(&mut self, members: Vec<(Tp, u64)>) {
        for (tp, offset) in members {
            self.adjust(&tp, offset, -1);
        }
    }

    fn closed_up_to(&self) -> Option<u64> {
        let live = match self.closed.front() {
            Some(&(end, _)) => end.checked_sub(1),
            None => self.watermark,
        };
        live.max(self.closed_up_to)
    }

    /// Exactly-once: an output partition the session writes to, with its end when the
    /// session first wrote to it (or read it back).
    pub(crate) fn open_lane(&mut self, topic: Arc<str>, partition: u32, end: u64) {
        self.lanes
            .entry((topic, partition))
            .or_insert_with(|| Lane {
                acked_end: end,
                uncovered: BTreeMap::new(),
            });
        self.changed = true;
    }

    /// Exactly-once: a unit's records were stored from `offset` to `end` (exclusive).
    pub(crate) fn output_stored(
        &mut self,
        topic: &Arc<str>,
        partition: u32,
        offset: u64,
        end: u64,
        coverage: Coverage,
    ) {
        let lane = self
            .lanes
            .entry((Arc::clone(topic), partition))
            .or_default();
        lane.uncovered.insert(offset, coverage);
        lane.acked_end = lane.acked_end.max(end);
        self.changed = true;
    }

    /// Whether the lane of this output partition is known.
    pub(crate) fn has_lane(&self, topic: &str, partition: u32) -> bool {
        self.lanes
            .keys()
            .any(|(t, p)| &**t == topic && *p == partition)
    }

    fn covered(&mut self, coverage: &Coverage, closed_up_to: Option<u64>) -> bool {
        match coverage {
            Coverage::Members(maxes) => maxes
                .iter()
                .all(|(tp, max)| self.inputs.get_mut(tp).is_some_and(|i| *max < i.position())),
            Coverage::Window(end) => closed_up_to.is_some_and(|t| *end <= t),
        }
    }

    /// Whether anything changed since the last snapshot.
    pub(crate) fn changed(&self) -> bool {
        self.changed
    }

    /// Every position to commit now.
    pub(crate) fn snapshot(&mut self) -> Snapshot {
        self.changed = false;
        let mut out = Snapshot::new();
        let closed_up_to = self.closed_up_to();
        for (tp, input) in &mut self.inputs {
            let position = input.position();
            out.push((tp.topic.to_string(), tp.partition, position));
            if self.windowed {
                out.push((
                    format!("{SEEN_PREFIX}{}", tp.topic),
                    tp.partition,
                    input.seen.max(position),
                ));
                // This session's windows hold messages of every partition it owns; a partition
                // recovered with a later entry keeps it.
                let floor = self.closed_floors.get(tp).copied();
                if let Some(t) = closed_up_to.max(floor) {
                    out.push((format!("{CLOSED_PREFIX}{}", tp.topic), tp.partition, t));
                }
            }
        }
        let keys: Vec<(Arc<str>, u32)> = self.lanes.keys().cloned().collect();
        for key in keys {
            let mut lane = std::mem::take(self.lanes.get_mut(&key).expect("listed"));
            while let Some(entry) = lane.uncovered.first_entry() {
                if !self.covered(entry.get(), closed_up_to) {
                    break;
                }
                entry.remove();
            }
            let start = lane
                .uncovered
                .keys()
                .next()
                .copied()
                .unwrap_or(lane.acked_end);
            out.push((format!("{OUT_PREFIX}{}", key.0), key.1, start));
            self.lanes.insert(key, lane);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: u32) -> Tp {
        Tp::new("in", p)
    }

    fn get(s: &Snapshot, topic: &str, p: u32) -> Option<u64> {
        s.iter().find(|e| e.0 == topic && e.1 == p).map(|e| e.2)
    }

    #[test]
    fn position_is_the_first_unfinished_offset() {
        let mut l = Ledger::new(false, None);
        l.start_partition(tp(0), 10, None);
        for o in 10..14 {
            l.received(&tp(0), o, 1);
        }
        assert_eq!(get(&l.snapshot(), "in", 0), Some(10));
        l.adjust(&tp(0), 11, -1);
        l.adjust(&tp(0), 13, -1);
        assert_eq!(get(&l.snapshot(), "in", 0), Some(10));
        l.adjust(&tp(0), 10, -1);
        assert_eq!(get(&l.snapshot(), "in", 0), Some(12));
        l.adjust(&tp(0), 12, -1);
        assert_eq!(get(&l.snapshot(), "in", 0), Some(14));
        l.received(&tp(0), 14, 0);
        assert_eq!(get(&l.snapshot(), "in", 0), Some(15));
    }

    #[test]
    fn a_rewind_moves_the_position_back_to_the_log_end() {
        let mut l = Ledger::new(true, None);
        let out: Arc<str> = Arc::from("out");
        l.start_partition(tp(0), 100, Some(100));
        l.start_partition(tp(1), 7, None);
        l.open_lane(Arc::clone(&out), 0, 50);
        // An output read back claims input 0 at 100 (gone from the log), and input 1 at 7.
        l.output_stored(
            &out,
            0,
            50,
            51,
            Coverage::Members(vec![(tp(0), 100), (tp(1), 7)]),
        );
        // `skip_to` only moves forwards.
        l.skip_to(&tp(0), 3);
        assert_eq!(get(&l.snapshot(), "in", 0), Some(100));
        // Not while an input past the new end is unfinished.
        l.received(&tp(0), 100, 1);
        l.received(&tp(0), 101, 1);
        l.adjust(&tp(0), 101, -1);
        assert!(!l.rewind_to(&tp(0), 3));
        assert_eq!(get(&l.snapshot(), "in", 0), Some(100));
        l.adjust(&tp(0), 100, -1);
        assert!(l.rewind_to(&tp(0), 3));
        let s = l.snapshot();
        assert_eq!(
            (get(&s, "in", 0), get(&s, "__seen.in", 0)),
            (Some(3), Some(3))
        );
        assert_eq!(get(&s, "__out.out", 0), Some(50));
        // The output waits for input 1 only now: input 0 at 100 will be another record.
        l.received(&tp(1), 7, 1);
        l.adjust(&tp(1), 7, -1);
        let s = l.snapshot();
        assert_eq!(
            (get(&s, "in", 0), get(&s, "in", 1), get(&s, "__out.out", 0)),
            (Some(3), Some(8), Some(51))
        );
    }

    #[test]
    fn scan_start_stays_below_outputs_of_uncommitted_inputs() {
        let mut l = Ledger::new(false, None);
        let out: Arc<str> = Arc::from("out");
        l.start_partition(tp(0), 0, None);
        l.open_lane(Arc::clone(&out), 0, 100);
        assert_eq!(get(&l.snapshot(), "__out.out", 0), Some(100));
        l.received(&tp(0), 0, 1);
        l.received(&tp(0), 1, 1);
        // Input 1 finished first: its output is stored but input 0 is not finished.
        l.output_stored(&out, 0, 100, 101, Coverage::Members(vec![(tp(0), 1)]));
        l.adjust(&tp(0), 1, -1);
        let s = l.snapshot();
        assert_eq!(
            (get(&s, "in", 0), get(&s, "__out.out", 0)),
            (Some(0), Some(100))
        );
        l.output_stored(&out, 0, 101, 102, Coverage::Members(vec![(tp(0), 0)]));
        l.adjust(&tp(0), 0, -1);
        let s = l.snapshot();
        assert_eq!(
            (get(&s, "in", 0), get(&s, "__out.out", 0)),
            (Some(2), Some(102))
        );
    }

    /// A partition recovered with a later `__closed` entry than the session's least keeps it
    /// in its commits until the session's own progress passes it.
    #[test]
    fn a_partitions_recovered_closed_entry_is_its_floor() {
        let mut l = Ledger::new(true, Some(20));
        l.closed_floors(HashMap::from([(tp(0), 20), (tp(1), 5_000)]));
        l.start_partition(tp(0), 0, Some(2));
        l.start_partition(tp(1), 7, Some(8));
        let s = l.snapshot();
        assert_eq!(get(&s, "__closed.in", 0), Some(20));
        assert_eq!(get(&s, "__closed.in", 1), Some(5_000));
        l.windows_closed([], Some(6_000));
        let s = l.snapshot();
        assert_eq!(get(&s, "__closed.in", 0), Some(6_000));
        assert_eq!(get(&s, "__closed.in", 1), Some(6_000));
    }

    /// A window finished before one that closed earlier does not let its members be
    /// committed past until that one is finished too: `__closed` does not cover it yet, and a
    /// restart would build it again without them.
    #[test]
    fn a_window_finished_out_of_order_holds_its_members_until_the_earlier_one_is_done() {
        let mut l = Ledger::new(true, None);
        l.start_partition(tp(0), 0, Some(0));
        l.start_partition(tp(1), 0, Some(0));
        // p0: offset 0 in [0,10), 1 in [10,20); p1: offset 0 in [10,20), 1 in [20,30).
        for (p, o) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            l.received(&tp(p), o, 1);
            l.placed(&tp(p), o);
        }
        l.windows_closed([10, 20], Some(25));
        l.window_done(20, vec![(tp(0), 1), (tp(1), 0)]);
        let s = l.snapshot();
        assert_eq!((get(&s, "in", 0), get(&s, "in", 1)), (Some(0), Some(0)));
        l.window_done(10, vec![(tp(0), 0)]);
        let s = l.snapshot();
        assert_eq!((get(&s, "in", 0), get(&s, "in", 1)), (Some(2), Some(1)));
    }

    /// Finished offsets are dropped as they finish, not only at a commit: a long commit
    /// interval kept an entry (16 bytes and more) for every message received since the last.
    #[test]
    fn finished_offsets_are_dropped_between_commits() {
        let mut l = Ledger::new(false, None);
        l.start_partition(tp(0), 0, None);
        for o in 0..100_000 {
            l.received(&tp(0), o, 1);
            l.adjust(&tp(0), o, -1);
        }
        l.received(&tp(0), 100_000, 1);
        l.received(&tp(0), 100_001, 1);
        l.adjust(&tp(0), 100_001, -1);
        assert_eq!(l.inputs[&tp(0)].pending.len(), 2);
        assert_eq!(get(&l.snapshot(), "in", 0), Some(100_000));
    }

    #[test]
    fn closed_up_to_waits_for_the_first_unfinished_window() {
        let mut l = Ledger::new(true, Some(5));
        l.start_partition(tp(0), 0, Some(0));
        l.start_partition(tp(1), 0, Some(0));
        // Committed for every input partition the session owns, none for the whole group.
        let closed = |s: &Snapshot| {
            let (p0, p1) = (get(s, "__closed.in", 0), get(s, "__closed.in", 1));
            assert_eq!(p0, p1);
            assert_eq!(get(s, CLOSED_ENTRY, 0), None);
            p0
        };
        assert_eq!(closed(&l.snapshot()), Some(5));
        l.windows_closed([10, 20], Some(25));
        assert_eq!(closed(&l.snapshot()), Some(9));
        l.window_done(20, Vec::new());
        assert_eq!(closed(&l.snapshot()), Some(9));
        l.window_done(10, Vec::new());
        assert_eq!(closed(&l.snapshot()), Some(25));
        l.received(&tp(0), 0, 1);
        l.placed(&tp(0), 0);
        let s = l.snapshot();
        assert_eq!(
            (get(&s, "in", 0), get(&s, "__seen.in", 0)),
            (Some(0), Some(1))
        );
    }
}
