//! The fetch task of one assigned partition: long-poll fetches while the partition is not
//! paused and its buffer has room, decoding into messages, never more than the room.
//!
//! ```text
//!   gate (under the state lock): paused or buffer over half full (of messages or of
//!        │ bytes) ──► wait for a wake-up
//!        │ go: offset, epoch, room, room in bytes
//!        ▼
//!   Fetch(offset, max_bytes ≈ min(min(room, fetch_size) × average stored record size,
//!         room in bytes ÷ how much batches grew when decompressed),
//!         max_wait = fetch_timeout)  ── a seek/revoke/close during the wait cancels it
//!        ▼
//!   decode whole batches, skip records below `offset`, keep at most min(room, fetch_size)
//!   records and no batch beyond the room in bytes but the first
//!        ▼
//!   apply (under the lock, dropped if the epoch changed) ──► wake receivers
//! ```

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use rustmq_protocol::{
    BatchIter, ErrorCode, FetchRequest, OffsetSpec, ProtocolError, Record, Request, Response,
};
use tokio::sync::Notify;
use tracing::Instrument;

use super::buffer::Records;
use super::config::ConsumerConfig;
use super::failures::Streak;
use super::state::FetchGate;
use super::{offsets, timing, Inner};
use crate::error::{ClientError, Result};
use crate::message::{Message, TopicName};
use crate::transport::backoff::Backoff;

/// What one fetch answer decoded into.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The records to deliver, checked; each is decoded into a message when received.
    pub(crate) records: Records,
    /// Where the next fetch starts (`None` if the answer held no batch).
    pub(crate) next_offset: Option<u64>,
    /// Sizes seen in the answer, to size the next request.
    pub(crate) sizes: Option<RecordSizes>,
}

/// Sizes a fetch answer showed: what the next request's byte budget is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordSizes {
    /// Average stored bytes per record (whole batches, as the broker counts its budget).
    pub(crate) stored: usize,
    /// Bytes held once decoded (`Records::bytes`: decompressed, with the records' spans) per 16
    /// stored bytes, over the batches kept: a little over 16 for uncompressed batches (32
    /// bytes per record more), ~160 for ones that compress tenfold.
    pub(crate) expansion: usize,
}

impl RecordSizes {
    /// What a consumer assumes before its first answer.
    pub(crate) const INITIAL: RecordSizes = RecordSizes {
        stored: 1024,
        expansion: 16,
    };

    /// A running average that follows changes within a few fetches.
    pub(crate) fn follow(self, seen: RecordSizes) -> RecordSizes {
        RecordSizes {
            stored: ((self.stored * 3 + seen.stored) / 4).max(16),
            expansion: ((self.expansion * 3 + seen.expansion) / 4).max(1),
        }
    }

    /// The stored bytes that decode into about `held` bytes.
    pub(crate) fn stored_for(self, held: usize) -> usize {
        held.saturating_mul(16) / self.expansion.max(1)
    }
}

/// Checks the batches of a fetch answer and keeps at most `max` records at or after `from`,
/// in batches holding at most `room_bytes` (`Records::bytes`) but for the first batch kept,
/// which is kept whatever its size (the broker answers with at least one batch too). A batch
/// beyond the room is not decompressed.
///
/// Every record kept is checked here (CRC, decompression, every field), so that receiving it
/// cannot fail; so are the records below `from` in a batch that holds kept ones (batches wholly
/// below it are passed over). A batch or record that fails after some records were kept ends
/// the answer early (the next fetch starts at it and reports the error); one that fails first
/// is the error.
pub(crate) fn decode(
    from: u64,
    max: usize,
    room_bytes: usize,
    records: Bytes,
) -> std::result::Result<Decoded, ProtocolError> {
    let mut out = Decoded {
        records: Records::default(),
        next_offset: None,
        sizes: None,
    };
    let (mut bytes, mut count) = (0usize, 0usize);
    // Stored bytes of the batches kept, against `out.records.bytes()`.
    let mut kept_stored = 0usize;
    // The offset after the last record kept, where the next fetch starts if this one ends early.
    let mut kept_end = None;
    let stop = |out: Decoded, kept_end: Option<u64>, e| match kept_end {
        Some(end) => Ok(Decoded {
            next_offset: Some(end),
            ..out
        }),
        None => Err(e),
    };
    for batch in BatchIter::new(records) {
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => return stop(out, kept_end, e),
        };
        let header = batch.header();
        bytes += batch.as_bytes().len();
        count += header.record_count as usize;
        // Offsets in a batch run from its base offset, one per record (decoding checks it).
        let below = from.saturating_sub(header.base_offset);
        let skip = u32::try_from(below).map_or(header.record_count, |b| b.min(header.record_count));
        if skip == header.record_count {
            out.next_offset = Some(header.next_offset());
            continue;
        }
        let room = u32::try_from(max - out.records.len()).unwrap_or(u32::MAX);
        let take = (header.record_count - skip).min(room);
        let first = header.base_offset + u64::from(skip);
        let full = |out: &Decoded, more: usize| {
            !out.records.is_empty() && out.records.bytes().saturating_add(more) > room_bytes
        };
        if take == 0 || full(&out, 0) {
            out.next_offset = Some(first);
            break;
        }
        let mut iter = match batch.records() {
            Ok(iter) => iter,
            Err(e) => return stop(out, kept_end, e),
        };
        if full(
            &out,
            iter.held_bytes() + take as usize * Records::SPAN_BYTES,
        ) {
            out.next_offset = Some(first);
            break;
        }
        kept_stored += batch.as_bytes().len();
        // Records below `from` are stepped over (and checked on the way), then the ones kept
        // are checked, noting where their fields lie; each record is parsed once, here.
        if let Err(e) = iter.skip_records(skip) {
            return stop(out, kept_end, e);
        }
        let mut spans = Vec::with_capacity(take as usize);
        if let Err((good, e)) = iter.check_spans(take, &mut spans) {
            if good > 0 {
                kept_end = Some(first + u64::from(good));
            }
            out.records.push_checked(iter, skip, spans);
            return stop(out, kept_end, e);
        }
        out.records.push_checked(iter, skip, spans);
        kept_end = Some(first + u64::from(take));
        if take < header.record_count - skip {
            // Full inside this batch: the next fetch starts at its first record not kept.
            out.next_offset = kept_end;
            break;
        }
        out.next_offset = Some(header.next_offset());
    }
    out.sizes = (count > 0).then(|| RecordSizes {
        stored: bytes / count,
        expansion: out
            .records
            .bytes()
            .saturating_mul(16)
            .checked_div(kept_stored)
            .unwrap_or(RecordSizes::INITIAL.expansion),
    });
    Ok(out)
}

/// A fetched record as a received [`Message`] of `topic`/`partition` (the stream's fetch
/// decodes with it too).
#[inline(always)]
pub(crate) fn to_message(topic: &TopicName, partition: u32, record: Record) -> Message {
    // Most records have no headers: an empty map without walking an empty iterator.
    let headers = if record.headers.is_empty() {
        HashMap::new()
    } else {
        record
            .headers
            .into_iter()
            .map(|h| (h.key, String::from_utf8_lossy(&h.value).into_owned()))
            .collect()
    };
    Message::received(
        topic.clone(),
        partition,
        record.offset,
        record.key,
        record.value.unwrap_or_default(),
        headers,
        u64::try_from(record.timestamp).unwrap_or(0),
    )
}

/// Byte budget of a fetch for `records` records of about `record_bytes` each (stored), within
/// `room_bytes` (stored bytes; the broker still answers with one batch when that batch is
/// larger).
fn max_bytes(
    records: usize,
    record_bytes: usize,
    room_bytes: usize,
    frame_limit: Option<u32>,
) -> u32 {
    let ceiling = frame_limit
        .map_or(8 << 20, |l| l.saturating_sub(4096))
        .clamp(4096, 16 << 20);
    let wanted = records
        .saturating_mul(record_bytes)
        .saturating_add(record_bytes)
        .min(room_bytes);
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
    let mut failures = Streak::default();
    let backoff = timing::retry_backoff(&inner.client.config().retry_config);
    loop {
        let gate = inner.state.lock().fetch_gate(partition);
        let (offset, epoch, room, room_bytes, sizes) = match gate {
            FetchGate::Stop => return,
            FetchGate::Wait => {
                wake.notified().await;
                continue;
            }
            FetchGate::Go {
                offset,
                epoch,
                room,
                room_bytes,
                sizes,
            } => (offset, epoch, room, room_bytes, sizes),
        };
        // The cap is at least `fetch_size`: a fetch into an empty buffer takes a whole one.
        let max_records = room.min(config.fetch_size);
        let limit = inner.client.broker_limits().map(|l| l.max_frame_bytes);
        let request = Request::Fetch(FetchRequest {
            topic: inner.topic.clone(),
            partition,
            offset,
            max_bytes: max_bytes(
                max_records,
                sizes.stored,
                sizes.stored_for(room_bytes),
                limit,
            ),
            max_wait_ms: ConsumerConfig::ms(config.fetch_timeout),
        });
        let timeout = inner
            .client
            .config()
            .request_timeout
            .saturating_add(config.fetch_timeout);
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
            Ok(response) => match decode(offset, max_records, room_bytes, response.records) {
                Ok(decoded) => {
                    inner.succeeded(&mut failures);
                    let count = decoded.records.len();
                    let (hw, log_start) = (response.high_watermark, response.log_start_offset);
                    let applied = {
                        let mut state = inner.state.lock();
                        let next = decoded.next_offset.unwrap_or(offset);
                        let applied = state.apply_fetch(
                            partition,
                            epoch,
                            decoded.records,
                            next,
                            hw,
                            decoded.sizes,
                        );
                        if applied {
                            // Under the state's lock, as a revoke forgets the gauges: set
                            // after it, the gauge of a partition given up would come back.
                            let position = state.partitions[&partition].tracker.position();
                            let lag = super::offsets::lag_of(hw, log_start, position);
                            inner.metrics.set_lag(partition, lag);
                            inner.instruments.set_lag(partition, lag);
                        }
                        applied
                    };
                    if applied && count > 0 {
                        tracing::trace!(offset, count, hw, "fetched");
                        inner.data.notify_waiters();
                    }
                }
                Err(e) => {
                    let e = ClientError::Protocol(e);
                    failed(&inner, &wake, &backoff, &mut failures, e).await;
                }
            },
            Err(e) if e.error_code() == Some(ErrorCode::OffsetOutOfRange) => {
                if let Err(e) = reset_out_of_range(&inner, partition, epoch, offset).await {
                    failed(&inner, &wake, &backoff, &mut failures, e).await;
                }
            }
            Err(e) => failed(&inner, &wake, &backoff, &mut failures, e).await,
        }
    }
}

/// Logs a failed fetch, tells the application about the first failure of a streak that
/// retrying cannot mend (see [`Streak`]), and waits before the next attempt (a seek or close
/// ends the wait). A closed client ends the consumer: the next gate stops this task.
async fn failed(
    inner: &Inner,
    wake: &Notify,
    backoff: &Backoff,
    failures: &mut Streak,
    e: ClientError,
) {
    if inner.closed.load(Ordering::Acquire) {
        return;
    }
    let logged = |e: &ClientError, attempt| {
        if e.is_retryable() {
            tracing::debug!(error = %e, attempt, "fetch failed; retrying");
        } else {
            tracing::warn!(error = %e, attempt, "fetch failed; retrying");
        }
    };
    if let Some(attempt) = inner.failed(failures, e, logged) {
        let _ = tokio::time::timeout(backoff.delay(attempt), wake.notified()).await;
    }
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

    /// The messages `d` holds, as partition 2 of topic `t` delivers them.
    fn messages(mut d: Decoded) -> Vec<Message> {
        let n = d.records.len();
        let topic = TopicName::from("t");
        let out: Vec<Message> = std::iter::from_fn(|| d.records.pop_front(&topic, 2)).collect();
        assert_eq!(out.len(), n, "every record counted is delivered");
        out
    }

    fn offsets(d: Decoded) -> Vec<u64> {
        messages(d).iter().map(|m| m.offset).collect()
    }

    #[test]
    fn records_below_the_requested_offset_are_skipped() {
        let d = decode(13, 100, usize::MAX, answer(&[(10, 5), (15, 5)])).unwrap();
        assert_eq!(d.next_offset, Some(20));
        let messages = messages(d);
        let got: Vec<u64> = messages.iter().map(|m| m.offset).collect();
        assert_eq!(got, (13..20).collect::<Vec<_>>());
        let m = &messages[0];
        assert_eq!(
            (m.topic.as_str(), m.partition, m.id.to_string().as_str()),
            ("t", 2, "t-2-13")
        );
        assert_eq!(m.payload_as_string().unwrap(), "v13");
        assert_eq!(m.headers["h"], "x");
        assert_eq!(m.key_as_str(), Some("k"));
        assert_eq!(m.timestamp, 1_003);
        // A batch wholly below the offset is passed over.
        let d = decode(17, 100, usize::MAX, answer(&[(10, 5), (15, 5)])).unwrap();
        assert_eq!(d.next_offset, Some(20));
        assert_eq!(offsets(d), [17, 18, 19]);
    }

    #[test]
    fn at_most_max_records_are_kept_and_the_next_fetch_resumes_after_them() {
        let d = decode(0, 7, usize::MAX, answer(&[(0, 5), (5, 5)])).unwrap();
        assert_eq!(d.next_offset, Some(7));
        assert_eq!(offsets(d), (0..7).collect::<Vec<_>>());
        let d = decode(0, 5, usize::MAX, answer(&[(0, 5), (5, 5)])).unwrap();
        assert_eq!((d.records.len(), d.next_offset), (5, Some(5)));
        let d = decode(3, 4, usize::MAX, answer(&[(0, 5), (5, 5)])).unwrap();
        assert_eq!(d.next_offset, Some(7));
        assert_eq!(offsets(d), [3, 4, 5, 6]);
        // Full in the middle of a batch with more batches after it.
        let d = decode(0, 3, usize::MAX, answer(&[(0, 5), (5, 5), (10, 5)])).unwrap();
        assert_eq!(d.next_offset, Some(3));
        assert_eq!(offsets(d), [0, 1, 2]);
        let d = decode(0, 5, usize::MAX, Bytes::new()).unwrap();
        assert_eq!((d.records.len(), d.next_offset, d.sizes), (0, None, None));
    }

    #[test]
    fn a_corrupt_batch_after_good_ones_ends_the_answer_early() {
        let mut bytes = answer(&[(0, 3)]).to_vec();
        let mut bad = batch(3, 3);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        bytes.extend_from_slice(&bad);
        let d = decode(0, 100, usize::MAX, Bytes::from(bytes)).unwrap();
        assert_eq!(d.next_offset, Some(3));
        assert_eq!(offsets(d), [0, 1, 2]);
        assert!(decode(3, 100, usize::MAX, Bytes::from(bad)).is_err());
    }

    /// Plain records at offsets `base..base + n`, the one at `corrupt` with an offset delta
    /// out of sequence under a CRC recomputed to match (a broken or hostile broker).
    fn batch_with_corrupt_record(base: u64, n: u64, corrupt: u64) -> Vec<u8> {
        let mut b = RecordBatchBuilder::new();
        for _ in 0..n {
            b.push(1_000, Some(b"k"), Some(b"v"), std::iter::empty());
        }
        let mut raw = b.build().unwrap().to_vec();
        rustmq_protocol::batch::set_base_offset(&mut raw, base);
        // Each record here is 9 bytes: length, attributes, timestamp delta, offset delta,
        // key length and key, value length and value, header count.
        let header_len = raw.len() - 9 * n as usize;
        let at = header_len + 9 * (corrupt - base) as usize + 3;
        assert_eq!(u64::from(raw[at]), corrupt - base);
        raw[at] = raw[at].wrapping_add(1);
        rustmq_protocol::batch::seal(&mut raw);
        raw
    }

    #[test]
    fn a_corrupt_record_under_a_valid_crc_ends_the_answer_before_it() {
        let mut bytes = answer(&[(0, 3)]).to_vec();
        bytes.extend_from_slice(&batch_with_corrupt_record(3, 6, 6));
        let d = decode(0, 100, usize::MAX, Bytes::from(bytes.clone())).unwrap();
        assert_eq!(
            d.next_offset,
            Some(6),
            "the next fetch starts at the corrupt record"
        );
        assert_eq!(offsets(d), [0, 1, 2, 3, 4, 5]);
        // Fetched again from there, the record is the error.
        assert!(matches!(
            decode(
                6,
                100,
                usize::MAX,
                Bytes::from(batch_with_corrupt_record(3, 6, 6))
            ),
            Err(ProtocolError::CorruptBatch(_))
        ));
        // Records kept before the corrupt one are still delivered when the limit stops short
        // of it, and the answer reads as a good one.
        let d = decode(4, 2, usize::MAX, Bytes::from(bytes)).unwrap();
        assert_eq!(d.next_offset, Some(6));
        assert_eq!(offsets(d), [4, 5]);
    }

    #[test]
    fn byte_budget_follows_record_size_within_limits() {
        let any = usize::MAX;
        assert_eq!(max_bytes(500, 100, any, None), 50_100);
        assert_eq!(max_bytes(1, 10, any, None), 4096);
        assert_eq!(
            max_bytes(1_000_000, 1_000_000, any, Some(1 << 20)),
            (1 << 20) - 4096
        );
        // The buffer's room in bytes caps it, down to the same floor.
        assert_eq!(max_bytes(500, 100, 20_000, None), 20_000);
        assert_eq!(max_bytes(500, 100, 10, None), 4096);
    }

    #[test]
    fn the_next_request_is_sized_in_stored_bytes_from_what_the_answer_decoded_into() {
        // Five records of 1,000 identical bytes, LZ4: stored small, held whole.
        let mut b = RecordBatchBuilder::new().compression(Compression::Lz4, 1);
        for _ in 0..5 {
            b.push(0, None, Some(&[b'x'; 1_000][..]), std::iter::empty());
        }
        let stored = b.build().unwrap();
        let stored_len = stored.len();
        let d = decode(0, 100, usize::MAX, stored).unwrap();
        let (held, sizes) = (d.records.bytes(), d.sizes.unwrap());
        assert!(held > 5_000, "{held}");
        assert_eq!(sizes.stored, stored_len / 5);
        assert_eq!(sizes.expansion, held * 16 / stored_len);
        assert!(sizes.expansion > 16 * 10, "{sizes:?}");
        // Room for what this answer held asks the broker for about what it stored.
        let asked = sizes.stored_for(held);
        assert!(
            asked <= stored_len && asked > stored_len * 9 / 10,
            "{asked}"
        );
        // The running average moves a quarter of the way.
        let followed = RecordSizes::INITIAL.follow(sizes);
        assert_eq!(followed.expansion, (16 * 3 + sizes.expansion) / 4);
        assert_eq!(followed.stored, (1024 * 3 + sizes.stored) / 4);
    }

    /// What `Records::bytes` counts for `kept` records of `batch(base, n)`: its records
    /// section, and their spans.
    fn held(base: u64, n: u64, kept: usize) -> usize {
        rustmq_protocol::RecordBatch::parse(Bytes::from(batch(base, n)))
            .unwrap()
            .records()
            .unwrap()
            .held_bytes()
            + kept * Records::SPAN_BYTES
    }

    #[test]
    fn batches_beyond_the_room_in_bytes_are_left_for_the_next_fetch() {
        let (a, b) = (held(0, 5, 5), held(5, 5, 5));
        let three = || answer(&[(0, 5), (5, 5), (10, 5)]);
        // Room for two batches: the third is fetched again next time.
        let d = decode(0, 100, a + b, three()).unwrap();
        assert_eq!((d.next_offset, d.records.bytes()), (Some(10), a + b));
        assert_eq!(offsets(d), (0..10).collect::<Vec<_>>());
        // A byte less, and the second does not fit (its spans count too).
        let d = decode(0, 100, a + b - 1, three()).unwrap();
        assert_eq!((d.next_offset, d.records.bytes()), (Some(5), a));
        // Less room than one batch: the first is kept all the same.
        let d = decode(0, 100, 1, three()).unwrap();
        assert_eq!((d.next_offset, d.records.bytes()), (Some(5), a));
        assert_eq!(offsets(d), (0..5).collect::<Vec<_>>());
        // A batch partly below the offset counts whole, as it is held whole.
        let mut d = decode(3, 100, a, three()).unwrap();
        assert_eq!((d.next_offset, d.records.len()), (Some(5), 2));
        let partly = held(0, 5, 2);
        assert_eq!(d.records.bytes(), partly);
        // Its bytes are given back with its last record.
        let topic = TopicName::from("t");
        d.records.pop_front(&topic, 2).unwrap();
        assert_eq!(d.records.bytes(), partly);
        d.records.pop_front(&topic, 2).unwrap();
        assert_eq!(d.records.bytes(), 0);
    }
}
