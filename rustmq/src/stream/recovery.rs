//! Where a session starts: committed positions, the window state they were committed with,
//! and (exactly-once) the claims of outputs written after the last commit.
//!
//! ```text
//!  DescribeGroup ──► input positions (else the log start)
//!               ──► __seen.<topic>/p, __closed  (windowed)
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
use super::ledger::{Coverage, CLOSED_ENTRY, OUT_PREFIX, SEEN_PREFIX};
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
    pub(crate) closed_up_to: Option<u64>,
    pub(crate) claims: Claims,
    pub(crate) lanes: Vec<LaneState>,
}

pub(crate) async fn recover(
    client: &RustMqClient,
    group: &str,
    assigned: &[Tp],
    exactly_once: bool,
) -> Result<Recovered> {
    let committed = group_offsets(client, group).await?;
    let mut out = Recovered {
        closed_up_to: committed.get(&(CLOSED_ENTRY.to_owned(), 0)).copied(),
        ..Default::default()
    };
    for tp in assigned {
        let position = match committed.get(&(tp.topic.to_string(), tp.partition)) {
            Some(o) => *o,
            None => log_offset(client, &tp.topic, tp.partition, OffsetSpec::Earliest).await?,
        };
        let seen = committed
            .get(&(format!("{SEEN_PREFIX}{}", tp.topic), tp.partition))
            .copied();
        out.positions.push((tp.clone(), position, seen));
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
                        Claim::Ranges(rs) => Coverage::Members(
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
