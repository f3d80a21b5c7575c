//! The stream's output writer: one lane per output partition, each sending whole units in
//! idempotent record batches, one request in flight, and reporting what was stored.
//!
//! ```text
//!  emit(unit's outputs) ──► lane (topic, partition)   [exactly-once: all of a unit's outputs
//!                                                       go to one lane, so one record batch
//!                                                       holds them: stored all or nothing]
//!  lane task: first use ── exactly-once: commit `__out.<topic>/<p>` = log end (so that a
//!                          restart knows to read this partition back) before the first write
//!             loop: take queued units while they fit (never splitting one; at least once, a
//!                   unit too large for one batch alone goes in several; exactly once, only
//!                   dead letters the broker refuses as one batch, their claim on the last)
//!                   ──► record batch
//!                   (producer id, epoch, sequence) ──► Produce (acks=all, in both modes),
//!                   retried with the same sequence (the broker drops duplicates)
//!                   ──► ledger: where each unit was stored ──► the unit's completion
//! ```
//!
//! A lane that cannot store a batch fails the session: its sequence has a gap, so nothing
//! more may be written under this producer epoch. The next session starts with a new epoch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use rustmq_protocol::batch::BATCH_HEADER_LEN;
use rustmq_protocol::{
    Acks, Compression, OffsetSpec, ProduceRequest, RecordBatchBuilder, Request, Response,
};
use tokio::sync::mpsc;

use super::claims::SRC_PREFIX;
use super::group::{self, Member};
use super::ledger::{Coverage, OUT_PREFIX};
use super::metrics::StreamMetrics;
use super::session::Ctx;
use crate::error::{ClientError, Result};
use crate::message::Message;
use crate::producer::partition_for_key;

/// Runs a closure once every lane holding part of a unit has stored it.
pub(crate) struct Completion {
    remaining: AtomicUsize,
    on_done: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Completion {
    pub(crate) fn new(parts: usize, on_done: Box<dyn FnOnce() + Send>) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(parts),
            on_done: Mutex::new(Some(on_done)),
        })
    }

    fn part_done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(f) = self.on_done.lock().take() {
                f();
            }
        }
    }
}

/// An output partition: topic and partition.
type LaneKey = (Arc<str>, u32);

struct Part {
    records: Vec<Message>,
    bytes: usize,
    coverage: Option<Coverage>,
    /// Exactly once, whether the part may still go in several batches if the broker refuses
    /// it as one: a unit's dead letters, which have no error strategy to fall back on.
    may_split: bool,
    done: Arc<Completion>,
}

/// Output writer of one session.
pub(crate) struct Sink {
    identity: (i64, i16),
    member: Member,
    max_bytes: usize,
    /// The broker's `max_batch_bytes`.
    max_batch_bytes: usize,
    lanes: Mutex<HashMap<LaneKey, mpsc::UnboundedSender<Part>>>,
    partitions: tokio::sync::Mutex<HashMap<String, u32>>,
}

/// Records per batch at most.
const MAX_RECORDS: usize = 16_384;

fn record_bytes(m: &Message) -> usize {
    m.size() + 24 + m.headers.len() * 4
}

impl Sink {
    pub(crate) fn new(
        ctx_client: &crate::RustMqClient,
        identity: (i64, i16),
        member: Member,
    ) -> Self {
        let broker_max = ctx_client
            .broker_limits()
            .map_or(1 << 20, |l| l.max_batch_bytes as usize);
        Self {
            identity,
            member,
            max_bytes: broker_max.saturating_sub(4096).clamp(4096, 1 << 20),
            max_batch_bytes: broker_max,
            lanes: Mutex::new(HashMap::new()),
            partitions: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Partition count of an output topic, creating the topic (with as many partitions as the
    /// first input topic) when it does not exist.
    async fn partition_count(ctx: &Arc<Ctx>, topic: &str) -> Result<u32> {
        let mut known = ctx.sink().partitions.lock().await;
        if let Some(n) = known.get(topic) {
            return Ok(*n);
        }
        let n = match group::partition_count(&ctx.client, topic).await? {
            Some(n) => n,
            None => {
                ctx.client
                    .ensure_topic(topic, ctx.default_partitions)
                    .await?;
                group::partition_count(&ctx.client, topic)
                    .await?
                    .unwrap_or(1)
            }
        };
        known.insert(topic.to_owned(), n);
        Ok(n)
    }

    async fn partition_of(ctx: &Arc<Ctx>, m: &Message, fallback: u32) -> Result<u32> {
        let n = Self::partition_count(ctx, &m.topic).await?.max(1);
        Ok(if m.has_explicit_partition() {
            m.partition
        } else if let Some(key) = &m.key {
            partition_for_key(key, n)
        } else {
            fallback % n
        })
    }

    /// Why a unit's `outputs` can never be stored, however often they are tried: an explicit
    /// partition their topic does not have, or, without compression, a record larger than a
    /// batch the broker takes (counted as the producer counts it); exactly once, where a
    /// unit's outputs go in one batch to the first output's partition, the outputs together
    /// larger than that. The unit's error strategy then deals with it, as with a failed
    /// processing, instead of the writer failing the session at every start. `None` if they
    /// can be, as far as is known here (a partition count that cannot be learnt now is left to
    /// the writer, which retries).
    pub(crate) async fn unstorable(ctx: &Arc<Ctx>, outputs: &[Message]) -> Option<ClientError> {
        let max = ctx.sink().max_batch_bytes;
        let compressed = ctx.client.config().compression.enabled;
        let together = ctx.config.exactly_once;
        let mut total = BATCH_HEADER_LEN;
        for (i, m) in outputs.iter().enumerate() {
            // Compressed, the batch's size is not known before it is built: not checked.
            if !compressed {
                let headers = m.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
                let record = RecordBatchBuilder::record_size_bound(
                    m.key.as_deref(),
                    Some(&m.payload),
                    headers,
                );
                total = total.saturating_add(record);
                let size = if together {
                    total
                } else {
                    BATCH_HEADER_LEN + record
                };
                if size > max {
                    return Some(ClientError::MessageTooLarge {
                        size,
                        max_size: max,
                    });
                }
            }
            // Together, the outputs go where the first goes: only its partition counts.
            if m.has_explicit_partition() && (i == 0 || !together) {
                if let Ok(n) = Self::partition_count(ctx, &m.topic).await {
                    if m.partition >= n {
                        return Some(ClientError::InvalidMessage(format!(
                            "output to partition {} of topic {}, which has {n}",
                            m.partition, m.topic
                        )));
                    }
                }
            }
        }
        None
    }

    /// Queues a unit's outputs; `on_done` runs once all are stored. With `together`, every
    /// output goes to the partition of the first (one lane, one record batch). Keyless
    /// outputs go to partition `fallback` (modulo the partition count). `dead_letters`:
    /// exactly once, records the broker refuses as one batch go in several, the unit's claim
    /// on the last (see [`store_split`]).
    pub(crate) async fn emit(
        ctx: &Arc<Ctx>,
        outputs: Vec<Message>,
        together: bool,
        dead_letters: bool,
        fallback: u32,
        coverage: Option<Coverage>,
        on_done: Box<dyn FnOnce() + Send>,
    ) -> Result<()> {
        if outputs.is_empty() {
            on_done();
            return Ok(());
        }
        let mut groups: Vec<(LaneKey, Vec<Message>)> = Vec::new();
        let mut first_lane = None;
        for m in outputs {
            let lane = match (&first_lane, together) {
                (Some(l), true) => Clone::clone(l),
                _ => {
                    let p = Self::partition_of(ctx, &m, fallback).await?;
                    let l: LaneKey = (Arc::from(m.topic.as_str()), p);
                    first_lane.get_or_insert_with(|| l.clone());
                    l
                }
            };
            match groups.iter_mut().find(|g| g.0 == lane) {
                Some(g) => g.1.push(m),
                None => groups.push((lane, vec![m])),
            }
        }
        let done = Completion::new(groups.len(), on_done);
        for (lane, records) in groups {
            let part = Part {
                bytes: records.iter().map(record_bytes).sum(),
                records,
                coverage: coverage.clone(),
                may_split: dead_letters,
                done: Arc::clone(&done),
            };
            let sender = {
                let mut lanes = ctx.sink().lanes.lock();
                lanes
                    .entry(lane.clone())
                    .or_insert_with(|| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        ctx.spawn(run_lane(Arc::clone(ctx), lane.0.clone(), lane.1, rx));
                        tx
                    })
                    .clone()
            };
            sender.send(part).map_err(|_| ClientError::Closed)?;
        }
        Ok(())
    }
}

async fn register(ctx: &Arc<Ctx>, topic: &Arc<str>, partition: u32) -> Result<()> {
    if !ctx.config.exactly_once || ctx.ledger.lock().has_lane(topic, partition) {
        return Ok(());
    }
    let end = group::log_offset(&ctx.client, topic, partition, OffsetSpec::Latest).await?;
    let entry = vec![(format!("{OUT_PREFIX}{topic}"), partition, end)];
    group::commit(&ctx.client, &ctx.sink().member, entry).await?;
    ctx.ledger
        .lock()
        .open_lane(Arc::clone(topic), partition, end);
    tracing::debug!(%topic, partition, end, "output partition registered for recovery");
    Ok(())
}

async fn run_lane(
    ctx: Arc<Ctx>,
    topic: Arc<str>,
    partition: u32,
    mut rx: mpsc::UnboundedReceiver<Part>,
) {
    if let Err(e) = register(&ctx, &topic, partition).await {
        ctx.abort(e);
        return;
    }
    let mut sequence: i32 = 0;
    let mut carry: Option<Part> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let (mut bytes, mut count) = (first.bytes, first.records.len());
        let mut parts = vec![first];
        while let Ok(p) = rx.try_recv() {
            if bytes + p.bytes > ctx.sink().max_bytes || count + p.records.len() > MAX_RECORDS {
                carry = Some(p);
                break;
            }
            bytes += p.bytes;
            count += p.records.len();
            parts.push(p);
        }
        // A part too large for one batch: at least once, its records go in several batches.
        // Exactly once, a unit is stored whole or not at all, in one batch; the broker may
        // refuse it as too large. Outputs are checked for that before they come here (see
        // `unstorable`), and their unit fails under its error strategy. Dead letters have
        // none left: those of a unit refused as one batch go in several, and the unit's
        // claim on the last (a crash before that one is stored writes the others again).
        let split = parts.len() == 1
            && parts[0].coverage.is_none()
            && (bytes > ctx.sink().max_bytes || count > MAX_RECORDS);
        let whole = if split {
            None
        } else {
            let records = parts.iter().flat_map(|p| &p.records);
            Some(store(&ctx, &topic, partition, records, sequence).await)
        };
        let stored = match whole {
            Some(Ok(base)) => {
                sequence = next_sequence(sequence, count);
                Ok(base)
            }
            Some(Err(e)) if !(parts.len() == 1 && parts[0].may_split && too_large(&e)) => Err(e),
            whole => {
                // Split at once (at least once), or refused as one batch (exactly-once dead
                // letters): then the claim rides on the last.
                let claim_last = whole.is_some();
                if let Some(Err(e)) = &whole {
                    tracing::warn!(%topic, partition, records = count, error = %e, "a unit's dead letters are too large for one batch: stored in several, exactly once only if none is lost to a crash before the last");
                }
                store_split(
                    &ctx,
                    &topic,
                    partition,
                    &parts[0].records,
                    &mut sequence,
                    claim_last,
                )
                .await
            }
        };
        match stored {
            Ok(base) => {
                let mut offset = base;
                for part in parts {
                    let n = part.records.len() as u64;
                    if let Some(coverage) = part.coverage {
                        ctx.ledger.lock().output_stored(
                            &topic,
                            partition,
                            offset,
                            offset + n,
                            coverage,
                        );
                    }
                    offset += n;
                    StreamMetrics::add(&ctx.metrics.outputs_produced, n as usize);
                    part.done.part_done();
                }
            }
            Err(e) => {
                tracing::warn!(%topic, partition, error = %e, "output batch failed");
                ctx.abort(e);
                return;
            }
        }
    }
}

/// Where a batch of `count` records was stored: the answer's base offset, checked to leave
/// room for them (a broker bug or a corrupt answer could make the lane's offsets overflow).
fn stored_at(answer: &rustmq_protocol::ProduceResponse, count: u32) -> Result<u64> {
    crate::producer::check_offsets(answer, count)?;
    Ok(answer.base_offset)
}

/// `sequence` after `count` records, in the sequence space `0..=i32::MAX`.
fn next_sequence(sequence: i32, count: usize) -> i32 {
    ((i64::from(sequence) + count as i64) % (i64::from(i32::MAX) + 1)) as i32
}

/// Whether the broker (or the client, before sending) refused a batch as too large.
fn too_large(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::MessageTooLarge { .. }
            | ClientError::Broker {
                code: rustmq_protocol::ErrorCode::BatchTooLarge,
                ..
            }
    )
}

/// Stores `records` in as many batches as their size takes (each within the sink's byte and
/// record bounds, with at least one record), one after the other, advancing `sequence` past
/// each batch stored; the offset of the first. With `claim_last`, only the last batch keeps
/// the records' source headers (their exactly-once claim): a restart that finds it passes
/// the unit over, one that does not (a crash before it was stored) handles the unit again.
async fn store_split(
    ctx: &Arc<Ctx>,
    topic: &str,
    partition: u32,
    records: &[Message],
    sequence: &mut i32,
    claim_last: bool,
) -> Result<u64> {
    let mut batches = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        let mut bytes = 0;
        let n = rest
            .iter()
            .take(MAX_RECORDS)
            .take_while(|m| {
                bytes += record_bytes(m);
                bytes <= ctx.sink().max_bytes
            })
            .count()
            .max(1);
        let (batch, after) = rest.split_at(n);
        batches.push(batch);
        rest = after;
    }
    let mut first = None;
    let last = batches.len().saturating_sub(1);
    for (i, batch) in batches.into_iter().enumerate() {
        let base = if claim_last && i < last {
            let unclaimed: Vec<Message> = batch
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    m.headers.retain(|name, _| !name.starts_with(SRC_PREFIX));
                    m
                })
                .collect();
            store(ctx, topic, partition, &unclaimed, *sequence).await?
        } else {
            store(ctx, topic, partition, batch, *sequence).await?
        };
        first.get_or_insert(base);
        *sequence = next_sequence(*sequence, batch.len());
    }
    Ok(first.unwrap_or_default())
}

async fn store<'a>(
    ctx: &Arc<Ctx>,
    topic: &str,
    partition: u32,
    records: impl IntoIterator<Item = &'a Message>,
    sequence: i32,
) -> Result<u64> {
    let (producer_id, epoch) = ctx.sink().identity;
    let mut builder = RecordBatchBuilder::new().producer(producer_id, epoch, sequence);
    for record in records {
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        builder.push(
            i64::try_from(record.timestamp).unwrap_or(i64::MAX),
            record.key.as_deref(),
            Some(&record.payload),
            headers,
        );
    }
    let compression = &ctx.client.config().compression;
    let codec = if compression.enabled && builder.size() >= compression.min_size {
        compression.codec()
    } else {
        Compression::None
    };
    let count = builder.len();
    let batch: Bytes = builder.compression(codec, compression.level).build()?;
    let request = ProduceRequest {
        topic: topic.to_owned(),
        partition,
        // On disk before the unit is finished, in both modes: the commit of its inputs is
        // (the broker syncs a group's offsets file), so an output acknowledged from the page
        // cache could be lost in a power failure that the commit survives.
        acks: Acks::All,
        timeout_ms: ctx.client.config().request_timeout_ms(),
        batch,
    };
    let retry = &ctx.client.config().retry_config;
    let backoff = crate::transport::backoff::Backoff::new(retry);
    let mut attempt = 0;
    loop {
        match ctx.client.request(Request::Produce(request.clone())).await {
            Ok(Response::Produce(r)) => return stored_at(&r, count),
            Ok(other) => {
                return Err(ClientError::UnexpectedResponse(format!(
                    "{:?} to a produce request",
                    other.kind()
                )))
            }
            Err(e) if e.is_retryable() && attempt < retry.max_retries => {
                let delay = backoff.delay(attempt);
                attempt += 1;
                tracing::debug!(%topic, partition, error = %e, attempt, "retrying output batch");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e.for_topic(topic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_with_no_room_for_the_batch_is_refused() {
        let answer = |base_offset| rustmq_protocol::ProduceResponse {
            base_offset,
            log_append_time: 0,
            log_start_offset: 0,
            duplicate: false,
        };
        assert_eq!(stored_at(&answer(7), 3).unwrap(), 7);
        assert_eq!(stored_at(&answer(u64::MAX - 3), 3).unwrap(), u64::MAX - 3);
        assert!(matches!(
            stored_at(&answer(u64::MAX - 2), 3),
            Err(ClientError::UnexpectedResponse(_))
        ));
    }
}
