//! The fetch task of one assigned partition: long-poll fetches while the partition is not
//! paused and its buffer has room, decoding into messages, never more than the room.
//!
//! ```text
//!   gate (under the state lock): paused or buffer over half full ──► wait for a wake-up
//!        │ go: offset, epoch, room
//!        ▼
//!   Fetch(offset, max_bytes ≈ min(room, fetch_size) × average record size,
//!         max_wait = fetch_timeout)  ── a seek/revoke/close during the wait cancels it
//!        ▼
//!   decode whole batches, skip records below `offset`, keep at most min(room, fetch_size)
//!        ▼
//!   apply (under the lock, dropped if the epoch changed) ──► wake receivers
//! ```

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustmq_protocol::{
    BatchIter, ErrorCode, FetchRequest, OffsetSpec, ProtocolError, Record, Request, Response,
};
use tokio::sync::Notify;
use tracing::Instrument;

use super::config::ConsumerConfig;
use super::state::FetchGate;
use super::{offsets, Inner};
use crate::error::{ClientError, Result};
use crate::message::Message;

/// What one fetch answer decoded into.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) messages: Vec<Message>,
    /// Where the next fetch starts (`None` if the answer held no batch).
    pub(crate) next_offset: Option<u64>,
    /// Average stored bytes per record in the answer.
    pub(crate) record_bytes: Option<usize>,
}

/// Decodes the batches of a fetch answer into at most `max` messages at or after `from`.
///
/// A batch that fails to decode after some messages were taken ends the answer early (the
/// next fetch starts at it and reports the error); one that fails first is the error.
pub(crate) fn decode(
    topic: &str,
    partition: u32,
    from: u64,
    max: usize,
    records: Bytes,
) -> std::result::Result<Decoded, ProtocolError> {
    let mut out = Decoded {
        messages: Vec::new(),
        next_offset: None,
        record_bytes: None,
    };
    // Room for every record up front (the headers' claim, never more than `max` allows):
    // growing batch by batch moved the messages decoded so far again on every reallocation.
    out.messages
        .reserve(max.min(rustmq_protocol::batch::record_count_hint(&records)));
    let (mut bytes, mut count) = (0usize, 0usize);
    // On a decoding error after some messages were taken, stop after the last one taken.
    let stop = |out: &mut Decoded, e: ProtocolError| match out.messages.last() {
        Some(last) => {
            out.next_offset = Some(last.offset + 1);
            Ok(())
        }
        None => Err(e),
    };
    'batches: for batch in BatchIter::new(records) {
        let (batch, records) = match batch.and_then(|b| b.records().map(|r| (b, r))) {
            Ok(d) => d,
            Err(e) => {
                stop(&mut out, e)?;
                break;
            }
        };
        let header = batch.header();
        bytes += batch.as_bytes().len();
        count += header.record_count as usize;
        for record in records {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    stop(&mut out, e)?;
                    break 'batches;
                }
            };
            if record.offset < from {
                continue;
            }
            if out.messages.len() == max {
                out.next_offset = Some(record.offset);
                break 'batches;
            }
            out.messages.push(to_message(topic, partition, record));
        }
        out.next_offset = Some(header.next_offset());
    }
    out.record_bytes = (count > 0).then(|| bytes / count);
    Ok(out)
}

/// A fetched record as a received [`Message`] of `topic`/`partition` (the stream's fetch
/// decodes with it too).
pub(crate) fn to_message(topic: &str, partition: u32, record: Record) -> Message {
    let headers = record
        .headers
        .into_iter()
        .map(|h| (h.key, String::from_utf8_lossy(&h.value).into_owned()))
        .collect();
    Message::received(
        topic.to_owned(),
        partition,
        record.offset,
        record.key,
        record.value.unwrap_or_default(),
        headers,
        u64::try_from(record.timestamp).unwrap_or(0),
    )
}

/// Byte budget of a fetch for `records` records of about `record_bytes` each.
fn max_bytes(records: usize, record_bytes: usize, frame_limit: Option<u32>) -> u32 {
    let ceiling = frame_limit
        .map_or(8 << 20, |l| l.saturating_sub(4096))
        .clamp(4096, 16 << 20);
    let wanted = records
        .saturating_mul(record_bytes)
        .saturating_add(record_bytes);
    u32::try_from(wanted)
        .unwrap_or(u32::MAX)
        .clamp(4096, ceiling)
}

fn epoch_of(inner: &Inner, partition: u32) -> Option<u64> {
    let state = inner.state.lock();
    if state.closed {
        return None;
    }
    state.partitions.get(&partition).map(|p| p.epoch)
}

/// The fetch loop of `partition`; ends when the partition is revoked or the consumer closes.
pub(crate) async fn run(inner: Arc<Inner>, partition: u32, wake: Arc<Notify>) {
    let span = tracing::debug_span!(target: "rustmq::fetch", "fetch", topic = %inner.topic, group = %inner.group, partition);
    fetch_loop(inner, partition, wake).instrument(span).await;
}

async fn fetch_loop(inner: Arc<Inner>, partition: u32, wake: Arc<Notify>) {
    let config = &inner.config;
    let mut failures = 0u32;
    loop {
        let gate = inner.state.lock().fetch_gate(partition);
        let (offset, epoch, room, record_bytes) = match gate {
            FetchGate::Stop => return,
            FetchGate::Wait => {
                wake.notified().await;
                continue;
            }
            FetchGate::Go {
                offset,
                epoch,
                room,
                record_bytes,
            } => (offset, epoch, room, record_bytes),
        };
        let max_records = room.min(config.fetch_size);
        let limit = inner.client.broker_limits().map(|l| l.max_frame_bytes);
        let request = Request::Fetch(FetchRequest {
            topic: inner.topic.clone(),
            partition,
            offset,
            max_bytes: max_bytes(max_records, record_bytes, limit),
            max_wait_ms: ConsumerConfig::ms(config.fetch_timeout),
        });
        let timeout = inner.client.config().request_timeout + config.fetch_timeout;
        let fetch = inner.client.request_with_timeout(request, timeout);
        tokio::pin!(fetch);
        let answer = loop {
            tokio::select! {
                answer = &mut fetch => break Some(answer),
                _ = wake.notified() => {
                    // A seek, revoke or close makes the answer useless: stop waiting for it.
                    if epoch_of(&inner, partition) != Some(epoch) {
                        break None;
                    }
                }
            }
        };
        let result = match answer {
            None => continue,
            Some(Ok(Response::Fetch(r))) => Ok(r),
            Some(Ok(other)) => Err(ClientError::unexpected_response(&other)),
            Some(Err(e)) => Err(e),
        };
        match result {
            Ok(response) => match decode(
                &inner.topic,
                partition,
                offset,
                max_records,
                response.records,
            ) {
                Ok(decoded) => {
                    failures = 0;
                    let count = decoded.messages.len();
                    let hw = response.high_watermark;
                    let position = {
                        let mut state = inner.state.lock();
                        let next = decoded.next_offset.unwrap_or(offset);
                        state
                            .apply_fetch(
                                partition,
                                epoch,
                                decoded.messages,
                                next,
                                hw,
                                decoded.record_bytes,
                            )
                            .then(|| state.partitions[&partition].tracker.position())
                    };
                    if let Some(position) = position {
                        inner
                            .metrics
                            .set_lag(partition, hw.saturating_sub(position));
                        inner
                            .instruments
                            .set_lag(partition, hw.saturating_sub(position));
                        if count > 0 {
                            tracing::trace!(offset, count, hw, "fetched");
                            inner.data.notify_waiters();
                        }
                    }
                }
                Err(e) => {
                    let e = ClientError::Protocol(e);
                    failed(&inner, &wake, &mut failures, e).await;
                }
            },
            Err(ClientError::Closed) => return,
            Err(e) if e.error_code() == Some(ErrorCode::OffsetOutOfRange) => {
                if let Err(e) = reset_out_of_range(&inner, partition, epoch, offset).await {
                    failed(&inner, &wake, &mut failures, e).await;
                }
            }
            Err(e) => failed(&inner, &wake, &mut failures, e).await,
        }
    }
}

/// Logs a failed fetch, tells the application about the first non-retryable failure of a
/// streak, and waits before the next attempt (a seek or close ends the wait).
async fn failed(inner: &Inner, wake: &Notify, failures: &mut u32, e: ClientError) {
    *failures += 1;
    if inner.closed.load(Ordering::Acquire) {
        return;
    }
    if e.is_retryable() {
        tracing::debug!(error = %e, failures = *failures, "fetch failed; retrying");
    } else {
        tracing::warn!(error = %e, failures = *failures, "fetch failed; retrying");
        if *failures == 1 {
            inner.state.lock().push_error(e);
            inner.data.notify_waiters();
        }
    }
    let delay = Duration::from_millis(50u64 << (*failures).min(7)).min(Duration::from_secs(5));
    let _ = tokio::time::timeout(delay, wake.notified()).await;
}

/// Moves the position of a partition that fell outside its log (retention deleted the
/// records, or a seek went past the end) to the nearest stored offset.
async fn reset_out_of_range(
    inner: &Arc<Inner>,
    partition: u32,
    epoch: u64,
    offset: u64,
) -> Result<()> {
    let answer = offsets::list_offset(inner, partition, OffsetSpec::Earliest).await?;
    let target = if offset < answer.offset {
        answer.offset
    } else {
        answer.high_watermark.min(offset)
    };
    tracing::warn!(
        offset,
        target,
        "offset out of range; moving to the nearest stored offset"
    );
    inner.state.lock().clamp(partition, epoch, target);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustmq_protocol::{Compression, RecordBatchBuilder};

    fn batch(base: u64, n: u64) -> Vec<u8> {
        let mut b = RecordBatchBuilder::new().compression(Compression::Lz4, 1);
        for i in 0..n {
            b.push(
                1_000 + i as i64,
                Some(b"k"),
                Some(format!("v{}", base + i).as_bytes()),
                [("h", &b"x"[..])],
            );
        }
        let mut bytes = b.build().unwrap().to_vec();
        rustmq_protocol::batch::set_base_offset(&mut bytes, base);
        bytes
    }

    fn answer(batches: &[(u64, u64)]) -> Bytes {
        Bytes::from(
            batches
                .iter()
                .flat_map(|&(base, n)| batch(base, n))
                .collect::<Vec<u8>>(),
        )
    }

    #[test]
    fn records_below_the_requested_offset_are_skipped() {
        let d = decode("t", 2, 13, 100, answer(&[(10, 5), (15, 5)])).unwrap();
        let offsets: Vec<u64> = d.messages.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, (13..20).collect::<Vec<_>>());
        assert_eq!(d.next_offset, Some(20));
        let m = &d.messages[0];
        assert_eq!(
            (m.topic.as_str(), m.partition, m.id.as_str()),
            ("t", 2, "t-2-13")
        );
        assert_eq!(m.payload_as_string().unwrap(), "v13");
        assert_eq!(m.headers["h"], "x");
        assert_eq!(m.key_as_str(), Some("k"));
        assert_eq!(m.timestamp, 1_003);
    }

    #[test]
    fn at_most_max_records_are_kept_and_the_next_fetch_resumes_after_them() {
        let d = decode("t", 0, 0, 7, answer(&[(0, 5), (5, 5)])).unwrap();
        assert_eq!(d.messages.len(), 7);
        assert_eq!(d.next_offset, Some(7));
        let d = decode("t", 0, 0, 5, answer(&[(0, 5), (5, 5)])).unwrap();
        assert_eq!((d.messages.len(), d.next_offset), (5, Some(5)));
        let d = decode("t", 0, 0, 5, Bytes::new()).unwrap();
        assert_eq!(
            (d.messages.len(), d.next_offset, d.record_bytes),
            (0, None, None)
        );
    }

    #[test]
    fn a_corrupt_batch_after_good_ones_ends_the_answer_early() {
        let mut bytes = answer(&[(0, 3)]).to_vec();
        let mut bad = batch(3, 3);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        bytes.extend_from_slice(&bad);
        let d = decode("t", 0, 0, 100, Bytes::from(bytes)).unwrap();
        assert_eq!((d.messages.len(), d.next_offset), (3, Some(3)));
        assert!(decode("t", 0, 3, 100, Bytes::from(bad)).is_err());
    }

    #[test]
    fn byte_budget_follows_record_size_within_limits() {
        assert_eq!(max_bytes(500, 100, None), 50_100);
        assert_eq!(max_bytes(1, 10, None), 4096);
        assert_eq!(
            max_bytes(1_000_000, 1_000_000, Some(1 << 20)),
            (1 << 20) - 4096
        );
    }
}
