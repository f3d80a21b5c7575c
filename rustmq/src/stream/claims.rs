//! Source headers on exactly-once outputs, and the claims read back from them on a restart.
//!
//! Every output (and dead-letter) record of an exactly-once stream names the inputs it came
//! from. A restarted stream reads the records written since its last commit and passes over
//! the inputs they claim, so that nothing is produced twice.
//!
//! ```text
//!  rustmq.src.group      the consumer group (records of other writers are ignored)
//!  rustmq.src.topic      \
//!  rustmq.src.partition   } the unit's last input
//!  rustmq.src.offset     /
//!  rustmq.src.ranges     batches and windows: `topic:partition:first-last,...`, one range per
//!                        input partition (a batch holds every message of the range; a window
//!                        those with a timestamp inside it)
//!  rustmq.src.window     windows: `start-end` in ms
//!  rustmq.src.late       a late message's dead letter: `1`
//! ```
//!
//! A late message's dead letter claims only that it was dead-lettered, not the message: with
//! sliding windows a message late for one window may still join the next, and a restart must
//! place it there again (without writing its dead letter twice).

use std::collections::{BTreeMap, HashMap};

use super::window::Span;
use super::Tp;

/// What every source header's name starts with.
pub(crate) const SRC_PREFIX: &str = "rustmq.src.";
/// Header: consumer group of the stream that wrote the record.
pub const SRC_GROUP: &str = "rustmq.src.group";
/// Header: topic of the (last) input the record came from.
pub const SRC_TOPIC: &str = "rustmq.src.topic";
/// Header: partition of that input.
pub const SRC_PARTITION: &str = "rustmq.src.partition";
/// Header: offset of that input.
pub const SRC_OFFSET: &str = "rustmq.src.offset";
/// Header: for a batch or window, `topic:partition:first-last` per input partition, comma
/// separated.
pub const SRC_RANGES: &str = "rustmq.src.ranges";
/// Header: for a window, `start-end` (ms since the Unix epoch, end exclusive).
pub const SRC_WINDOW: &str = "rustmq.src.window";

/// Header: on a late message's dead letter, `1` (see the module documentation).
pub(crate) const SRC_LATE: &str = "rustmq.src.late";

/// Per input partition, the smallest and largest offset of a unit's members.
pub(crate) type Extent = BTreeMap<Tp, (u64, u64)>;

/// The extent of `members`.
pub(crate) fn extent<'a>(members: impl IntoIterator<Item = (&'a Tp, u64)>) -> Extent {
    let mut out = Extent::new();
    for (tp, offset) in members {
        let e = out.entry(tp.clone()).or_insert((offset, offset));
        e.0 = e.0.min(offset);
        e.1 = e.1.max(offset);
    }
    out
}

/// What an output record says it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Every input in these ranges (single messages, batches, late messages).
    Ranges(Vec<(Tp, u64, u64)>),
    /// A window, with the largest member offset per input partition.
    Window(Span, Vec<(Tp, u64)>),
    /// Late messages' dead letters in these ranges: the messages themselves are still to be
    /// placed in the windows they may join.
    Late(Vec<(Tp, u64, u64)>),
}

/// The source headers of a unit's outputs.
pub(crate) fn source_headers(
    group: &str,
    extent: &Extent,
    window: Option<Span>,
    batch: bool,
) -> Vec<(String, String)> {
    let mut headers = vec![(SRC_GROUP.to_owned(), group.to_owned())];
    if let Some((tp, (_, last))) = extent.iter().next_back() {
        headers.push((SRC_TOPIC.to_owned(), tp.topic.to_string()));
        headers.push((SRC_PARTITION.to_owned(), tp.partition.to_string()));
        headers.push((SRC_OFFSET.to_owned(), last.to_string()));
    }
    if batch || window.is_some() {
        let ranges: Vec<String> = extent
            .iter()
            .map(|(tp, (first, last))| format!("{}:{}:{first}-{last}", tp.topic, tp.partition))
            .collect();
        headers.push((SRC_RANGES.to_owned(), ranges.join(",")));
    }
    if let Some((start, end)) = window {
        headers.push((SRC_WINDOW.to_owned(), format!("{start}-{end}")));
    }
    headers
}

fn pair(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn ranges(s: &str) -> Option<Vec<(Tp, u64, u64)>> {
    s.split(',')
        .map(|r| {
            let mut parts = r.rsplitn(3, ':');
            let (first, last) = pair(parts.next()?)?;
            let partition = parts.next()?.parse().ok()?;
            Some((Tp::new(parts.next()?, partition), first, last))
        })
        .collect()
}

/// The claim of a record written by `group`'s stream; `None` for any other record.
pub(crate) fn parse_claim<'a>(
    group: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Option<Claim> {
    let map: HashMap<&str, &str> = headers
        .into_iter()
        .filter_map(|(k, v)| Some((k, std::str::from_utf8(v).ok()?)))
        .collect();
    if map.get(SRC_GROUP) != Some(&group) {
        return None;
    }
    let listed = match map.get(SRC_RANGES) {
        Some(r) => ranges(r)?,
        None => {
            let offset = map.get(SRC_OFFSET)?.parse().ok()?;
            let tp = Tp::new(map.get(SRC_TOPIC)?, map.get(SRC_PARTITION)?.parse().ok()?);
            vec![(tp, offset, offset)]
        }
    };
    Some(match map.get(SRC_WINDOW) {
        Some(w) => Claim::Window(
            pair(w)?,
            listed.into_iter().map(|(tp, _, last)| (tp, last)).collect(),
        ),
        None if map.contains_key(SRC_LATE) => Claim::Late(listed),
        None => Claim::Ranges(listed),
    })
}

/// Inputs already accounted for in the output log.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    ranges: HashMap<Tp, Vec<(u64, u64)>>,
    /// Late messages already dead-lettered.
    late: HashMap<Tp, Vec<(u64, u64)>>,
    /// Windows already emitted, with their largest member offset per partition.
    pub(crate) windows: HashMap<Span, HashMap<Tp, u64>>,
}

impl Claims {
    pub(crate) fn add(&mut self, claim: Claim) {
        match claim {
            Claim::Ranges(rs) => {
                for (tp, first, last) in rs {
                    self.ranges.entry(tp).or_default().push((first, last));
                }
            }
            Claim::Late(rs) => {
                for (tp, first, last) in rs {
                    self.late.entry(tp).or_default().push((first, last));
                }
            }
            Claim::Window(span, maxes) => {
                let w = self.windows.entry(span).or_default();
                for (tp, max) in maxes {
                    let e = w.entry(tp).or_insert(max);
                    *e = (*e).max(max);
                }
            }
        }
    }

    /// Sorts the ranges for lookups.
    pub(crate) fn finish(&mut self) {
        for rs in self.ranges.values_mut().chain(self.late.values_mut()) {
            rs.sort_unstable();
        }
    }

    /// The log of `tp` now ends at `offset` (below the records these claims name, which are
    /// gone): the records it gets from there on are new, and no claim read back covers them.
    pub(crate) fn forget_from(&mut self, tp: &Tp, offset: u64) {
        for ranges in [&mut self.ranges, &mut self.late] {
            if let Some(rs) = ranges.get_mut(tp) {
                rs.retain_mut(|r| {
                    r.1 = r.1.min(offset.saturating_sub(1));
                    r.0 < offset
                });
                rs.sort_unstable();
                if rs.is_empty() {
                    ranges.remove(tp);
                }
            }
        }
        for members in self.windows.values_mut() {
            if let Some(max) = members.get_mut(tp) {
                if *max >= offset {
                    match offset.checked_sub(1) {
                        Some(m) => *max = m,
                        None => {
                            members.remove(tp);
                        }
                    }
                }
            }
        }
    }

    /// Whether an output already covers this input.
    pub(crate) fn is_claimed(&self, tp: &Tp, offset: u64) -> bool {
        covers(&self.ranges, tp, offset)
    }

    /// Whether this input's dead letter as a late message is already written.
    pub(crate) fn is_late_claimed(&self, tp: &Tp, offset: u64) -> bool {
        covers(&self.late, tp, offset)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.late.is_empty() && self.windows.is_empty()
    }
}

/// Whether one of `tp`'s sorted ranges holds `offset`.
fn covers(ranges: &HashMap<Tp, Vec<(u64, u64)>>, tp: &Tp, offset: u64) -> bool {
    let Some(rs) = ranges.get(tp) else {
        return false;
    };
    // Ranges may overlap (a range of a later instance can span inputs an earlier one
    // claimed): look at every range starting at or before `offset`.
    let end = rs.partition_point(|r| r.0 <= offset);
    rs[..end].iter().rev().any(|r| r.1 >= offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_refs(h: &[(String, String)]) -> Vec<(&str, &[u8])> {
        h.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect()
    }

    #[test]
    fn headers_round_trip() {
        let a = Tp::new("in.a", 0);
        let b = Tp::new("in-b", 3);
        let single = extent([(&a, 7)]);
        let h = source_headers("g", &single, None, false);
        assert_eq!(
            parse_claim("g", as_refs(&h)),
            Some(Claim::Ranges(vec![(a.clone(), 7, 7)]))
        );
        assert_eq!(parse_claim("other", as_refs(&h)), None);

        let batch = extent([(&a, 5), (&b, 2), (&a, 9)]);
        let h = source_headers("g", &batch, None, true);
        assert_eq!(
            parse_claim("g", as_refs(&h)),
            Some(Claim::Ranges(vec![(b.clone(), 2, 2), (a.clone(), 5, 9)]))
        );
        let h = source_headers("g", &batch, Some((100, 200)), false);
        assert_eq!(
            parse_claim("g", as_refs(&h)),
            Some(Claim::Window((100, 200), vec![(b, 2), (a.clone(), 9)]))
        );
        let mut h = source_headers("g", &single, None, false);
        h.push((SRC_LATE.to_owned(), "1".to_owned()));
        assert_eq!(
            parse_claim("g", as_refs(&h)),
            Some(Claim::Late(vec![(a, 7, 7)]))
        );
    }

    #[test]
    fn claimed_lookups_handle_overlaps() {
        let tp = Tp::new("t", 0);
        let mut c = Claims::default();
        c.add(Claim::Ranges(vec![(tp.clone(), 5, 20)]));
        c.add(Claim::Ranges(vec![(tp.clone(), 7, 7)]));
        c.add(Claim::Ranges(vec![(tp.clone(), 30, 31)]));
        c.finish();
        for o in [5, 7, 8, 20, 30, 31] {
            assert!(c.is_claimed(&tp, o), "{o}");
        }
        for o in [4, 21, 29, 32] {
            assert!(!c.is_claimed(&tp, o), "{o}");
        }
        assert!(!c.is_claimed(&Tp::new("t", 1), 7));
    }

    #[test]
    fn forgotten_claims_cover_nothing_from_the_new_log_end() {
        let tp = Tp::new("t", 0);
        let other = Tp::new("t", 1);
        let mut c = Claims::default();
        c.add(Claim::Ranges(vec![
            (tp.clone(), 5, 20),
            (other.clone(), 5, 20),
        ]));
        c.add(Claim::Ranges(vec![(tp.clone(), 30, 31)]));
        c.finish();
        c.forget_from(&tp, 10);
        for o in 5..10 {
            assert!(c.is_claimed(&tp, o), "{o}");
        }
        for o in [10, 20, 30, 31] {
            assert!(!c.is_claimed(&tp, o), "{o}");
            assert!(c.is_claimed(&other, 10));
        }
        c.forget_from(&tp, 0);
        assert!(!c.is_claimed(&tp, 5));
        assert!(!c.is_empty(), "other partitions keep their claims");
    }
}
