//! The IO-free window policy of [`StreamMode::Windowed`](super::StreamMode::Windowed):
//! which windows a timestamp falls in, the watermark, when windows close, which messages are
//! late, and (after a restart) which windows were already finished by an earlier instance.
//!
//! ```text
//!  message (ts) ──► windows_of(ts): every k with k·slide ≤ ts < k·slide + size
//!        for each: finished before the restart? ─► ignore (already counted) or late
//!                  closed (watermark ≥ end)?    ─► late
//!                  otherwise                    ─► joins the window
//!  then watermark = max(ts seen) − allowed lateness; windows with end ≤ watermark close,
//!  in end order, and go to the processor.
//! ```

use std::collections::{BTreeMap, HashMap};

use super::Tp;

/// Window geometry in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowSpec {
    pub(crate) size: u64,
    pub(crate) slide: u64,
    pub(crate) lateness: u64,
}

/// A window: `[start, end)` in ms since the Unix epoch.
pub(crate) type Span = (u64, u64);

impl WindowSpec {
    /// The windows containing `ts`, earliest first.
    pub(crate) fn windows_of(&self, ts: u64) -> Vec<Span> {
        let last = ts / self.slide;
        // Smallest k with k·slide + size > ts.
        let first = if ts >= self.size {
            (ts - self.size) / self.slide + 1
        } else {
            0
        };
        (first..=last)
            .map(|k| (k * self.slide, k * self.slide + self.size))
            .collect()
    }
}

/// Where a message goes for one of its windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Add it to the window.
    Join,
    /// The window has closed without it.
    Late,
    /// It already counted in this window (before a restart).
    Ignore,
}

/// What an earlier instance finished, read back on a restart.
#[derive(Debug, Default, Clone)]
pub(crate) struct WindowRecovery {
    /// Every window ending at or before this was finished and committed.
    pub(crate) closed_up_to: Option<u64>,
    /// Per input partition: every message below this offset had been placed when
    /// `closed_up_to` was committed.
    pub(crate) seen: HashMap<Tp, u64>,
    /// Windows whose outputs are in the output log though not yet covered by a commit, with
    /// the largest member offset per input partition (exactly-once only).
    pub(crate) emitted: HashMap<Span, HashMap<Tp, u64>>,
}

impl WindowRecovery {
    /// The log of `tp` now ends at `offset`: its records from there on are new, and nothing
    /// an earlier instance placed or emitted counts them.
    pub(crate) fn forget_from(&mut self, tp: &Tp, offset: u64) {
        if let Some(seen) = self.seen.get_mut(tp) {
            *seen = (*seen).min(offset);
        }
        for members in self.emitted.values_mut() {
            if members.get(tp).is_some_and(|max| *max >= offset) {
                match offset.checked_sub(1) {
                    Some(m) => {
                        members.insert(tp.clone(), m);
                    }
                    None => {
                        members.remove(tp);
                    }
                }
            }
        }
    }

    /// The placement an earlier instance's work dictates, if any.
    pub(crate) fn placement(&self, span: Span, tp: &Tp, offset: u64) -> Option<Placement> {
        if self.closed_up_to.is_some_and(|t| span.1 <= t) {
            let seen = self.seen.get(tp).copied().unwrap_or(0);
            return Some(if offset < seen {
                Placement::Ignore
            } else {
                Placement::Late
            });
        }
        let members = self.emitted.get(&span)?;
        Some(match members.get(tp) {
            Some(max) if offset <= *max => Placement::Ignore,
            _ => Placement::Late,
        })
    }
}

/// Open windows and the watermark.
#[derive(Debug)]
pub(crate) struct Windows<T> {
    spec: WindowSpec,
    open: BTreeMap<u64, Vec<T>>,
    max_ts: Option<u64>,
    recovery: WindowRecovery,
}

/// The outcome of placing one message.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Placed {
    /// Windows it joined.
    pub(crate) joined: usize,
    /// Whether it was late for at least one window.
    pub(crate) late: bool,
}

impl<T: Clone> Windows<T> {
    pub(crate) fn new(spec: WindowSpec, recovery: WindowRecovery) -> Self {
        Self {
            spec,
            open: BTreeMap::new(),
            max_ts: None,
            recovery,
        }
    }

    /// Windows with `end <= watermark` are closed.
    pub(crate) fn watermark(&self) -> Option<u64> {
        self.max_ts.map(|m| m.saturating_sub(self.spec.lateness))
    }

    fn is_closed(&self, span: Span) -> bool {
        self.watermark().is_some_and(|w| span.1 <= w)
    }

    /// See [`WindowRecovery::forget_from`].
    pub(crate) fn forget_from(&mut self, tp: &Tp, offset: u64) {
        self.recovery.forget_from(tp, offset);
    }

    /// Places a message of `tp` at `offset` with timestamp `ts` in its windows.
    pub(crate) fn place(&mut self, tp: &Tp, offset: u64, ts: u64, item: &T) -> Placed {
        let mut placed = Placed::default();
        for span in self.spec.windows_of(ts) {
            let placement =
                self.recovery
                    .placement(span, tp, offset)
                    .unwrap_or(if self.is_closed(span) {
                        Placement::Late
                    } else {
                        Placement::Join
                    });
            match placement {
                Placement::Join => {
                    self.open.entry(span.0).or_default().push(item.clone());
                    placed.joined += 1;
                }
                Placement::Late => placed.late = true,
                Placement::Ignore => {}
            }
        }
        placed
    }

    /// Moves the watermark with a message's timestamp; returns the windows it closes, in end
    /// order.
    pub(crate) fn advance(&mut self, ts: u64) -> Vec<(Span, Vec<T>)> {
        self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
        let Some(watermark) = self.watermark() else {
            return Vec::new();
        };
        let size = self.spec.size;
        let mut closed = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            let start = *entry.key();
            if start + size > watermark {
                break;
            }
            closed.push(((start, start + size), entry.remove()));
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> Tp {
        Tp::new("t", 0)
    }

    #[test]
    fn tumbling_and_sliding_membership() {
        let tumbling = WindowSpec {
            size: 10,
            slide: 10,
            lateness: 0,
        };
        assert_eq!(tumbling.windows_of(0), vec![(0, 10)]);
        assert_eq!(tumbling.windows_of(19), vec![(10, 20)]);
        let sliding = WindowSpec {
            size: 10,
            slide: 5,
            lateness: 0,
        };
        assert_eq!(sliding.windows_of(3), vec![(0, 10)]);
        assert_eq!(sliding.windows_of(12), vec![(5, 15), (10, 20)]);
        assert_eq!(sliding.windows_of(15), vec![(10, 20), (15, 25)]);
    }

    #[test]
    fn windows_close_on_watermark_and_late_messages_are_reported() {
        let mut w = Windows::new(
            WindowSpec {
                size: 10,
                slide: 10,
                lateness: 2,
            },
            WindowRecovery::default(),
        );
        let feed = |w: &mut Windows<u64>, o: u64, ts: u64| {
            let placed = w.place(&tp(), o, ts, &ts);
            (placed, w.advance(ts))
        };
        assert_eq!(feed(&mut w, 0, 1).1, vec![]);
        assert_eq!(feed(&mut w, 1, 9).1, vec![]);
        // Watermark 11 - 2 = 9: [0,10) still open; 12 - 2 = 10 closes it.
        assert_eq!(feed(&mut w, 2, 11).1, vec![]);
        let (placed, closed) = feed(&mut w, 3, 12);
        assert_eq!(placed.joined, 1);
        assert_eq!(closed, vec![((0, 10), vec![1, 9])]);
        let (placed, closed) = feed(&mut w, 4, 5);
        assert!(placed.late && placed.joined == 0 && closed.is_empty());
    }

    #[test]
    fn recovery_ignores_counted_members_and_makes_the_rest_late() {
        let mut emitted = HashMap::new();
        emitted.insert((10, 20), HashMap::from([(tp(), 7)]));
        let r = WindowRecovery {
            closed_up_to: Some(10),
            seen: HashMap::from([(tp(), 5)]),
            emitted,
        };
        assert_eq!(r.placement((0, 10), &tp(), 4), Some(Placement::Ignore));
        assert_eq!(r.placement((0, 10), &tp(), 5), Some(Placement::Late));
        assert_eq!(r.placement((10, 20), &tp(), 7), Some(Placement::Ignore));
        assert_eq!(r.placement((10, 20), &tp(), 8), Some(Placement::Late));
        assert_eq!(
            r.placement((10, 20), &Tp::new("t", 1), 0),
            Some(Placement::Late)
        );
        assert_eq!(r.placement((20, 30), &tp(), 9), None);
    }

    #[test]
    fn a_rewound_partition_counts_nothing_from_its_new_end() {
        let mut emitted = HashMap::new();
        emitted.insert((10, 20), HashMap::from([(tp(), 7)]));
        let mut r = WindowRecovery {
            closed_up_to: Some(10),
            seen: HashMap::from([(tp(), 5)]),
            emitted,
        };
        r.forget_from(&tp(), 3);
        assert_eq!(r.placement((0, 10), &tp(), 2), Some(Placement::Ignore));
        assert_eq!(r.placement((0, 10), &tp(), 3), Some(Placement::Late));
        assert_eq!(r.placement((10, 20), &tp(), 2), Some(Placement::Ignore));
        assert_eq!(r.placement((10, 20), &tp(), 3), Some(Placement::Late));
        r.forget_from(&tp(), 0);
        assert_eq!(r.placement((0, 10), &tp(), 0), Some(Placement::Late));
        assert_eq!(r.placement((10, 20), &tp(), 0), Some(Placement::Late));
    }
}
