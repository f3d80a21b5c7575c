//! Where a session starts: committed positions, the window state they were committed with,
//! and (exactly-once) the claims of outputs written after the last commit.
//!
//! ```text
//!  DescribeGroup ──► input positions (else the log start)
//!               ──► __seen.<topic>/p, __closed.<topic>/p  (windowed)
//!               ──► __out.<topic>/q = scan start (exactly-once)
//!                        │ (the producer epoch was bumped first: the previous instance can
//!                        │  no longer write, so the log end read next is final for it)
//!                        ▼
//!        read every output partition from its scan start to its end; records of this group
//!        name their inputs (`rustmq.src.*`) ──► claims: inputs to pass over, windows emitted
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use rustmq_protocol::{BatchIter, ErrorCode, FetchRequest, OffsetSpec, Request, Response};

use super::claims::{parse_claim, Claim, Claims};
use super::group::{group_offsets, log_offset};
use super::ledger::{Coverage, CLOSED_ENTRY, CLOSED_PREFIX, OUT_PREFIX, SEEN_PREFIX};
use super::Tp;
use crate::client::RustMqClient;
use crate::error::{ClientError, Result};

/// An output partition read back, with the records a commit does not cover yet.
#[derive(Debug)]
pub(crate) struct LaneState {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: u32,
    pub(crate) end: u64,
    pub(crate) uncovered: Vec<(u64, Coverage)>,
}

/// Where a session starts.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Start offset and (windowed) placed-up-to offset of every assigned partition.
    pub(crate) positions: Vec<(Tp, u64, Option<u64>)>,
    /// The least of the partitions' `__closed` entries (see [`closed_entries`]).
    pub(crate) closed_up_to: Option<u64>,
    /// Each partition's own `__closed.<topic>` entry, where it has one: what its messages are
    /// placed by (a window its entry covers was emitted with them), and the least its next
    /// commits say.
    pub(crate) closed: HashMap<Tp, u64>,
    pub(crate) claims: Claims,
    pub(crate) lanes: Vec<LaneState>,
}

/// Windowed mode: each assigned partition's own `__closed.<topic>` entry (committed by
/// whichever member last owned it, from that member's windows: every window ending at or before
/// it was emitted with the partition's messages), and the least of them, up to which the
/// session's windows, which hold all its partitions' messages, are finished (each partition's
/// messages are still placed by its own entry, see [`Recovered::closed`]). Earlier builds
/// committed one `__closed` for the whole group, the least when no partition has an entry.
fn closed_entries(
    committed: &HashMap<(String, u32), u64>,
    assigned: &[Tp],
) -> (HashMap<Tp, u64>, Option<u64>) {
    let own: HashMap<Tp, u64> = assigned
        .iter()
        .filter_map(|tp| {
            let entry = (format!("{CLOSED_PREFIX}{}", tp.topic), tp.partition);
            Some((tp.clone(), *committed.get(&entry)?))
        })
        .collect();
    let least = own
        .values()
        .min()
        .copied()
        .or_else(|| committed.get(&(CLOSED_ENTRY.to_owned(), 0)).copied());
    (own, least)
}

/// Where `tp` starts: its committed position, or its log start; with its `__seen` entry.
async fn position_of(
    client: &RustMqClient,
    committed: &HashMap<(String, u32), u64>,
    tp: &Tp,
) -> Result<(Tp, u64, Option<u64>)> {
    let position = match committed.get(&(tp.topic.to_string(), tp.partition)) {
        Some(o) => *o,
        None => log_offset(client, &tp.topic, tp.partition, OffsetSpec::Earliest).await?,
    };
    let seen = committed
        .get(&(format!("{SEEN_PREFIX}{}", tp.topic), tp.partition))
        .copied();
    Ok((tp.clone(), position, seen))
}

pub(crate) async fn recover(
    client: &RustMqClient,
    group: &str,
    assigned: &[Tp],
    exactly_once: bool,
) -> Result<Recovered> {
    let committed = group_offsets(client, group).await?;
    let (closed, closed_up_to) = closed_entries(&committed, assigned);
    let mut out = Recovered {
        closed_up_to,
        closed,
        ..Default::default()
    };
    // The partitions without a committed position ask for their log start 64 at a time (one
    // round trip each: a stream of many partitions over a slow link started slowly one after
    // another; all at once, thousands would wait for in-flight slots within their timeout).
    for chunk in assigned.chunks(64) {
        let positions = futures::future::try_join_all(
            chunk.iter().map(|tp| position_of(client, &committed, tp)),
        )
        .await?;
        out.positions.extend(positions);
    }
    if !exactly_once {
        return Ok(out);
    }
    for ((entry, partition), start) in &committed {
        let Some(topic) = entry.strip_prefix(OUT_PREFIX) else {
            continue;
        };
        let end = match log_offset(client, topic, *partition, OffsetSpec::Latest).await {
            Ok(end) => end,
            Err(ClientError::TopicNotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let uncovered = scan(
            client,
            group,
            topic,
            *partition,
            *start,
            end,
            &mut out.claims,
        )
        .await?;
        tracing::debug!(%topic, partition, start, end, claims = uncovered.len(), "output partition read back");
        out.lanes.push(LaneState {
            topic: Arc::from(topic),
            partition: *partition,
            end,
            uncovered,
        });
    }
    out.claims.finish();
    Ok(out)
}

/// Reads `[from, end)` of an output partition and collects the claims of `group`'s records.
async fn scan(
    client: &RustMqClient,
    group: &str,
    topic: &str,
    partition: u32,
    from: u64,
    end: u64,
    claims: &mut Claims,
) -> Result<Vec<(u64, Coverage)>> {
    let mut uncovered = Vec::new();
    let mut offset = from;
    while offset < end {
        let request = Request::Fetch(FetchRequest {
            topic: topic.to_owned(),
            partition,
            offset,
            max_bytes: 4 << 20,
            max_wait_ms: 0,
        });
        let records = match client.request(request).await {
            Ok(Response::Fetch(r)) => r.records,
            Ok(other) => {
                return Err(ClientError::UnexpectedResponse(format!(
                    "{:?} to a fetch",
                    other.kind()
                )))
            }
            Err(e) if e.error_code() == Some(ErrorCode::OffsetOutOfRange) => {
                // Retention removed the start: what is gone was committed long ago.
                offset = log_offset(client, topic, partition, OffsetSpec::Earliest).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        if records.is_empty() {
            break;
        }
        for batch in BatchIter::new(records) {
            let batch = batch?;
            for record in batch.records()? {
                let record = record?;
                if record.offset < offset || record.offset >= end {
                    continue;
                }
                let headers = record
                    .headers
                    .iter()
                    .map(|h| (h.key.as_str(), &h.value[..]));
                if let Some(claim) = parse_claim(group, headers) {
                    let coverage = match &claim {
                        Claim::Ranges(rs) | Claim::Late(rs) => Coverage::Members(
                            rs.iter().map(|(tp, _, last)| (tp.clone(), *last)).collect(),
                        ),
                        Claim::Window(span, _) => Coverage::Window(span.1),
                    };
                    uncovered.push((record.offset, coverage));
                    claims.add(claim);
                }
            }
            offset = offset.max(batch.header().next_offset());
        }
    }
    Ok(uncovered)
}

/// The claims as the window placement rules need them.
pub(crate) fn emitted_windows(claims: &Claims) -> HashMap<super::window::Span, HashMap<Tp, u64>> {
    claims.windows.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two members of one windowed group, one far behind the other in event time: a session
    /// takes the least `__closed.<topic>` of its own partitions, whoever committed last.
    #[test]
    fn a_session_takes_the_least_closed_entry_of_its_partitions() {
        let committed: HashMap<(String, u32), u64> = [
            (("__closed.in".to_owned(), 0), 20),
            (("__closed.in".to_owned(), 1), 5_000),
            // Left by an earlier build, for the whole group.
            ((CLOSED_ENTRY.to_owned(), 0), 9_000),
        ]
        .into_iter()
        .collect();
        fn closed_up_to(committed: &HashMap<(String, u32), u64>, assigned: &[Tp]) -> Option<u64> {
            closed_entries(committed, assigned).1
        }
        let (p0, p1, p2) = (Tp::new("in", 0), Tp::new("in", 1), Tp::new("in", 2));
        assert_eq!(
            closed_up_to(&committed, std::slice::from_ref(&p0)),
            Some(20)
        );
        assert_eq!(
            closed_up_to(&committed, std::slice::from_ref(&p1)),
            Some(5_000)
        );
        assert_eq!(closed_up_to(&committed, &[p1, p0]), Some(20));
        // A partition without an entry (never owned by a windowed session, or committed by an
        // earlier build) does not hold the others back; with none at all, the old entry.
        assert_eq!(
            closed_up_to(&committed, std::slice::from_ref(&p2)),
            Some(9_000)
        );
        assert_eq!(closed_up_to(&HashMap::new(), &[p2]), None);
    }
}
