//! The IO-free window policy of [`StreamMode::Windowed`](super::StreamMode::Windowed):
//! which windows a timestamp falls in, the watermark, when windows close, which messages are
//! late, and (after a restart) which windows were already finished by an earlier instance.
//!
//! ```text
//!  message (tp, ts) ──► windows_of(ts): every k with k·slide ≤ ts < k·slide + size
//!        for each: finished before the restart? ─► ignore (already counted) or late
//!                  closed (watermark ≥ end)?    ─► late
//!                  otherwise                    ─► joins the window
//!  then tp's clock: largest ts, last delivery (now); and on a timer, with no message:
//!  event time = least largest ts over the active partitions (delivered within idle_timeout,
//!               or not delivered yet since the start: unknown, nothing closes), or the
//!               largest over all when every partition is idle
//!  watermark  = max(watermark, event time − allowed lateness): never backwards
//!  windows with end ≤ watermark close, in end order, and go to the processor.
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

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
    /// Every window ending at or before this was finished and committed (the least of the
    /// partitions' entries; the fallback of a partition without one of its own).
    pub(crate) closed_up_to: Option<u64>,
    /// Per input partition: every window ending at or before this was finished and committed
    /// with this partition's messages in it (by whichever member owned it).
    pub(crate) closed: HashMap<Tp, u64>,
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
        // By the partition's own entry: a window the member that owned it emitted holds its
        // messages, whatever the least entry of this session's partitions.
        let closed = self.closed.get(tp).copied().or(self.closed_up_to);
        if closed.is_some_and(|t| span.1 <= t) {
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

/// The event time of one input partition.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// The largest timestamp it delivered; `None` before its first message.
    max_ts: Option<u64>,
    /// When it last delivered (or, before its first message, when it was assigned).
    last: Instant,
    /// It delivered nothing for the idle timeout (found when the watermark was last
    /// evaluated): it no longer holds the watermark back.
    idle: bool,
}

/// Open windows and the watermark.
#[derive(Debug)]
pub(crate) struct Windows<T> {
    spec: WindowSpec,
    idle_timeout: Duration,
    open: BTreeMap<u64, Vec<T>>,
    clocks: HashMap<Tp, Clock>,
    /// The largest watermark reached: it never moves back.
    watermark: Option<u64>,
    /// When an active partition next becomes idle, as of the last evaluation.
    next_idle: Option<Instant>,
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
    /// Windows over the messages of `partitions`, assigned at `now`: each holds the
    /// watermark back from then until it delivers (its first timestamp is not known) or has
    /// been silent for `idle_timeout` (`Duration::MAX`: never).
    pub(crate) fn new(
        spec: WindowSpec,
        idle_timeout: Duration,
        recovery: WindowRecovery,
        partitions: impl IntoIterator<Item = Tp>,
        now: Instant,
    ) -> Self {
        let mut windows = Self {
            spec,
            idle_timeout,
            open: BTreeMap::new(),
            clocks: partitions
                .into_iter()
                .map(|tp| {
                    let clock = Clock {
                        max_ts: None,
                        last: now,
                        idle: false,
                    };
                    (tp, clock)
                })
                .collect(),
            watermark: None,
            next_idle: None,
            recovery,
        };
        windows.evaluate(now);
        windows
    }

    /// Windows with `end <= watermark` are closed.
    pub(crate) fn watermark(&self) -> Option<u64> {
        self.watermark
    }

    /// When a partition becomes idle if it delivers nothing before: the windows must then be
    /// looked at again ([`tick`](Self::tick)) even if no message arrives. `None`: no
    /// partition can become idle (every one is idle already, or the timeout is too long for
    /// an `Instant`).
    pub(crate) fn next_idle(&self) -> Option<Instant> {
        self.next_idle
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

    /// A message of `tp` with timestamp `ts` was delivered at `now` (after
    /// [`place`](Self::place)): moves `tp`'s clock and the watermark; returns the windows
    /// that closed, in end order.
    pub(crate) fn advance(&mut self, tp: &Tp, ts: u64, now: Instant) -> Vec<(Span, Vec<T>)> {
        let clock = self.clocks.entry(tp.clone()).or_insert(Clock {
            max_ts: None,
            last: now,
            idle: false,
        });
        clock.max_ts = Some(clock.max_ts.map_or(ts, |m| m.max(ts)));
        clock.last = clock.last.max(now);
        clock.idle = false;
        self.evaluate(now);
        self.take_closed()
    }

    /// No message, but time went on to `now`: partitions silent for the idle timeout stop
    /// holding the watermark back. Returns the windows that closed, in end order.
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<(Span, Vec<T>)> {
        self.evaluate(now);
        self.take_closed()
    }

    /// Marks the partitions silent for the idle timeout at `now` as idle, and moves the
    /// watermark (never backwards) to the event time less the allowed lateness.
    fn evaluate(&mut self, now: Instant) {
        let mut least_active: Option<Option<u64>> = None;
        let mut largest = None;
        let mut next_idle: Option<Instant> = None;
        for clock in self.clocks.values_mut() {
            if !clock.idle {
                // A timeout too long for an `Instant` (`Duration::MAX`) never ends.
                match clock.last.checked_add(self.idle_timeout) {
                    Some(at) if at <= now => clock.idle = true,
                    Some(at) => next_idle = Some(next_idle.map_or(at, |n| n.min(at))),
                    None => {}
                }
            }
            largest = largest.max(clock.max_ts);
            if !clock.idle {
                // `None` (no message yet) is below every timestamp: nothing closes.
                least_active = Some(least_active.map_or(clock.max_ts, |l| l.min(clock.max_ts)));
            }
        }
        self.next_idle = next_idle;
        // Every partition idle: none holds the others back.
        let event_time = least_active.unwrap_or(largest);
        let candidate = event_time.map(|t| t.saturating_sub(self.spec.lateness));
        self.watermark = self.watermark.max(candidate);
    }

    /// Removes the windows the watermark closed, in end order.
    fn take_closed(&mut self) -> Vec<(Span, Vec<T>)> {
        let Some(watermark) = self.watermark else {
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

    const SECOND: Duration = Duration::from_secs(1);

    fn tumbling(lateness: u64) -> WindowSpec {
        WindowSpec {
            size: 10,
            slide: 10,
            lateness,
        }
    }

    /// Windows over partitions 0 and 1 of `t`, idle after a second, assigned at `start`.
    fn two_partitions(start: Instant) -> Windows<u64> {
        Windows::new(
            tumbling(0),
            SECOND,
            WindowRecovery::default(),
            [Tp::new("t", 0), Tp::new("t", 1)],
            start,
        )
    }

    /// Places and advances a message of partition `p` (its offset does not matter here) at
    /// `now`; returns whether it was late and the ends of the windows that closed.
    fn feed(w: &mut Windows<u64>, p: u32, ts: u64, now: Instant) -> (bool, Vec<u64>) {
        let tp = Tp::new("t", p);
        let placed = w.place(&tp, 0, ts, &ts);
        let closed = w.advance(&tp, ts, now);
        (placed.late, closed.iter().map(|(span, _)| span.1).collect())
    }

    #[test]
    fn windows_close_on_watermark_and_late_messages_are_reported() {
        let now = Instant::now();
        let mut w = Windows::new(tumbling(2), SECOND, WindowRecovery::default(), [tp()], now);
        let feed = |w: &mut Windows<u64>, o: u64, ts: u64| {
            let placed = w.place(&tp(), o, ts, &ts);
            (placed, w.advance(&tp(), ts, now))
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
            closed: HashMap::new(),
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

    /// A session recovered with the least entry of its partitions (20) still places each
    /// partition's messages by its own entry: partition 1's window [4900,5000), emitted with
    /// its messages by the member that owned it (entry 5000), is not built again from a
    /// replayed member; partition 0's windows past 20 are.
    #[test]
    fn each_partition_is_placed_by_its_own_closed_entry() {
        let (p0, p1) = (Tp::new("t", 0), Tp::new("t", 1));
        let r = WindowRecovery {
            closed_up_to: Some(20),
            closed: HashMap::from([(p0.clone(), 20), (p1.clone(), 5_000)]),
            seen: HashMap::from([(p0.clone(), 2), (p1.clone(), 8)]),
            emitted: HashMap::new(),
        };
        assert_eq!(r.placement((4_900, 5_000), &p1, 7), Some(Placement::Ignore));
        assert_eq!(r.placement((4_900, 5_000), &p1, 8), Some(Placement::Late));
        assert_eq!(r.placement((4_950, 5_050), &p1, 7), None);
        assert_eq!(r.placement((0, 100), &p0, 1), None);
        assert_eq!(r.placement((0, 20), &p0, 1), Some(Placement::Ignore));
        // A partition without an entry of its own goes by the least.
        let p2 = Tp::new("t", 2);
        assert_eq!(r.placement((0, 20), &p2, 0), Some(Placement::Late));
        assert_eq!(r.placement((0, 100), &p2, 0), None);
    }

    #[test]
    fn a_rewound_partition_counts_nothing_from_its_new_end() {
        let mut emitted = HashMap::new();
        emitted.insert((10, 20), HashMap::from([(tp(), 7)]));
        let mut r = WindowRecovery {
            closed_up_to: Some(10),
            closed: HashMap::new(),
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

    /// A partition behind the others holds the watermark back while it delivers: its
    /// messages join their windows, which close once it catches up.
    #[test]
    fn a_partition_behind_holds_the_watermark_back() {
        let t0 = Instant::now();
        let mut w = two_partitions(t0);
        let ms = |n| t0 + Duration::from_millis(n);
        // Partition 1 far ahead: partition 0 has not delivered yet, nothing closes.
        assert_eq!(feed(&mut w, 1, 1_000, ms(1)), (false, vec![]));
        assert_eq!(w.watermark(), None);
        // Partition 0 behind: its messages join their windows, not late.
        assert_eq!(feed(&mut w, 0, 3, ms(2)), (false, vec![]));
        assert_eq!(w.watermark(), Some(3));
        assert_eq!(feed(&mut w, 1, 1_005, ms(3)), (false, vec![]));
        assert_eq!(feed(&mut w, 0, 7, ms(4)), (false, vec![]));
        // It catches up: the windows it passes close (and partition 1's only once it is
        // past them too).
        assert_eq!(feed(&mut w, 0, 25, ms(5)), (false, vec![10]));
        assert_eq!(w.watermark(), Some(25));
        assert_eq!(feed(&mut w, 0, 2_000, ms(6)), (false, vec![30]));
        assert_eq!(w.watermark(), Some(1_005));
        // Below the watermark now: late.
        assert_eq!(feed(&mut w, 0, 8, ms(7)), (true, vec![]));
    }

    /// A partition silent for the idle timeout stops holding windows back, with no message
    /// (`tick`): the others' windows close; until then they wait.
    #[test]
    fn an_idle_partition_stops_holding_windows_back() {
        let t0 = Instant::now();
        let mut w = two_partitions(t0);
        assert_eq!(feed(&mut w, 0, 3, t0), (false, vec![]));
        assert_eq!(feed(&mut w, 1, 50, t0 + SECOND / 2), (false, vec![]));
        assert_eq!(w.next_idle(), Some(t0 + SECOND));
        assert!(w.tick(t0 + SECOND / 2).is_empty());
        assert!(w.tick(t0 + SECOND - Duration::from_millis(1)).is_empty());
        // Partition 0 idle: partition 1 alone decides.
        let closed = w.tick(t0 + SECOND);
        assert_eq!(closed, vec![((0, 10), vec![3])]);
        assert_eq!(w.watermark(), Some(50));
        assert_eq!(w.next_idle(), Some(t0 + SECOND * 3 / 2));
        // Partition 1 delivers on: it is active, and moves the watermark alone.
        assert_eq!(feed(&mut w, 1, 58, t0 + SECOND * 5 / 4), (false, vec![]));
        assert_eq!(w.watermark(), Some(58));
        assert_eq!(w.next_idle(), Some(t0 + SECOND * 9 / 4));
        // Both idle: the largest timestamp of all.
        assert!(w.tick(t0 + SECOND * 10).is_empty());
        assert_eq!(w.next_idle(), None);
        assert_eq!(w.watermark(), Some(58));
    }

    /// A partition that never delivers holds the watermark back from the start until the
    /// idle timeout, no longer.
    #[test]
    fn a_partition_that_never_delivers_holds_the_watermark_back_until_idle() {
        let t0 = Instant::now();
        let mut w = two_partitions(t0);
        assert_eq!(feed(&mut w, 1, 5, t0 + SECOND / 2), (false, vec![]));
        assert_eq!(feed(&mut w, 1, 15, t0 + SECOND / 2), (false, vec![]));
        assert_eq!(w.watermark(), None);
        assert_eq!(w.next_idle(), Some(t0 + SECOND));
        assert_eq!(w.tick(t0 + SECOND), vec![((0, 10), vec![5])]);
        assert_eq!(w.watermark(), Some(15));
    }

    /// An idle partition that delivers again counts again, but the watermark stays where it
    /// was: closed windows stay closed, and its old messages are late.
    #[test]
    fn the_watermark_never_goes_back_when_an_idle_partition_comes_back() {
        let t0 = Instant::now();
        let mut w = two_partitions(t0);
        feed(&mut w, 0, 3, t0);
        feed(&mut w, 1, 50, t0);
        // Partition 1 delivers on, partition 0 goes idle: the watermark reaches 55.
        feed(&mut w, 1, 55, t0 + SECOND / 2);
        assert_eq!(w.tick(t0 + SECOND).len(), 1);
        assert_eq!(w.watermark(), Some(55));
        // Partition 0 comes back, behind: late in the closed window, and the watermark
        // stays; in an open window it joins.
        assert_eq!(feed(&mut w, 0, 4, t0 + SECOND), (true, vec![]));
        assert_eq!(w.watermark(), Some(55));
        assert_eq!(feed(&mut w, 0, 57, t0 + SECOND), (false, vec![]));
        assert_eq!(w.watermark(), Some(55));
        // It counts again: partition 1 moving on moves the watermark only as far as it.
        assert_eq!(feed(&mut w, 1, 90, t0 + SECOND), (false, vec![]));
        assert_eq!(w.watermark(), Some(57));
        assert_eq!(feed(&mut w, 0, 75, t0 + SECOND), (false, vec![60]));
        assert_eq!(w.watermark(), Some(75));
    }

    /// An idle timeout too long for an `Instant` never ends (and does not overflow).
    #[test]
    fn an_endless_idle_timeout_never_makes_a_partition_idle() {
        let t0 = Instant::now();
        let mut w: Windows<u64> = Windows::new(
            tumbling(0),
            Duration::MAX,
            WindowRecovery::default(),
            [Tp::new("t", 0), Tp::new("t", 1)],
            t0,
        );
        feed(&mut w, 1, 50, t0);
        assert_eq!(w.next_idle(), None);
        assert!(w.tick(t0 + SECOND * 86_400).is_empty());
        assert_eq!(w.watermark(), None);
    }

    /// One partition: the watermark follows its largest timestamp, idle or not.
    #[test]
    fn one_partition_is_its_own_event_time() {
        let t0 = Instant::now();
        let mut w: Windows<u64> =
            Windows::new(tumbling(0), SECOND, WindowRecovery::default(), [tp()], t0);
        assert_eq!(w.watermark(), None);
        let placed = w.place(&tp(), 0, 12, &12);
        assert_eq!(placed.joined, 1);
        assert!(w.advance(&tp(), 12, t0).is_empty());
        assert_eq!(w.watermark(), Some(12));
        assert!(w.tick(t0 + SECOND * 2).is_empty());
        assert_eq!(w.watermark(), Some(12));
        w.place(&tp(), 1, 20, &20);
        assert_eq!(w.advance(&tp(), 20, t0 + SECOND * 3).len(), 1);
    }
}
