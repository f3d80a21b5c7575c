//! Failed deliveries: redelivery with exponential backoff, then the dead-letter queue.
//!
//! ```text
//!   nack (delivery n) ── n <= max_retry_attempts ──► retry queue of its partition, due in
//!        │                                           retry_backoff · 2^(n-1) (capped); the
//!        │                                           partition keeps delivering meanwhile,
//!        │                                           the retries counting against its
//!        │                                           buffer's bounds
//!        └─ retries exhausted ──► dead_letter_queue set: produce a copy with the headers
//!                                 below (too large for the broker: the headers alone,
//!                                 `DLQ_CONTENT_DROPPED`), then resolve (committable); a
//!                                 failed write retries later
//!                                 not set: drop with a warning, resolve
//! ```
//!
//! An unresolved message holds its partition's commit position at its offset, so a crash
//! during the retries redelivers it rather than losing it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::time::Instant;

use super::{timing, Inner};
use crate::error::Result;
use crate::message::Message;
use crate::producer::{AckLevel, Producer, ProducerBuilder, ProducerConfig};
use crate::RustMqClient;

/// Dead-letter header: the topic the message was read from.
pub const DLQ_ORIGINAL_TOPIC: &str = "rustmq.dlq.original-topic";
/// Dead-letter header: the partition the message was read from.
pub const DLQ_ORIGINAL_PARTITION: &str = "rustmq.dlq.original-partition";
/// Dead-letter header: the message's offset in that partition.
pub const DLQ_ORIGINAL_OFFSET: &str = "rustmq.dlq.original-offset";
/// Dead-letter header: how many times the message was delivered.
pub const DLQ_ATTEMPTS: &str = "rustmq.dlq.attempts";
/// Dead-letter header: the reason given to the last `nack_with_error` (`nacked` for `nack`).
pub const DLQ_ERROR: &str = "rustmq.dlq.error";
/// Dead-letter header, on a copy without the message's key, payload and headers (the whole
/// copy was too large for the broker): the size of what was left out, in bytes. The message
/// itself stays in its topic, at its offset, for as long as the topic keeps it.
pub const DLQ_CONTENT_DROPPED: &str = "rustmq.dlq.content-dropped";

/// A delivery that was nacked.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) message: Message,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) epoch: u64,
    /// Deliveries so far, the failed one included.
    pub(crate) attempt: u32,
}

enum Plan {
    Retried,
    Stale,
    DeadLetter(Box<Failed>),
}

/// Schedules the retry, or says the message is to be dead-lettered.
fn plan(inner: &Inner, mut failed: Failed) -> Plan {
    inner
        .metrics
        .messages_failed
        .fetch_add(1, Ordering::Relaxed);
    inner.instruments.failed.increment(1);
    failed.message.partition = failed.partition;
    failed.message.offset = failed.offset;
    let config = &inner.config;
    if failed.attempt > config.max_retry_attempts {
        let live = inner
            .state
            .lock()
            .is_live(failed.partition, failed.epoch, failed.offset);
        return if live {
            Plan::DeadLetter(Box::new(failed))
        } else {
            Plan::Stale
        };
    }
    let delay = config.retry_delay(failed.attempt);
    let (partition, offset, attempt) = (failed.partition, failed.offset, failed.attempt);
    let scheduled = inner.state.lock().schedule_retry(
        failed.epoch,
        failed.message,
        attempt,
        timing::deadline(Instant::now(), delay),
    );
    if !scheduled {
        return Plan::Stale;
    }
    inner
        .metrics
        .messages_retried
        .fetch_add(1, Ordering::Relaxed);
    inner.instruments.retried.increment(1);
    // A waiting receive must learn the new due time.
    inner.data.notify_waiters();
    tracing::debug!(
        partition,
        offset,
        retry = attempt,
        ?delay,
        "message nacked; redelivery scheduled"
    );
    Plan::Retried
}

/// Handles a nack: schedules a retry, or dead-letters the message.
pub(crate) async fn nack(inner: &Arc<Inner>, failed: Failed, error: String) -> Result<()> {
    match plan(inner, failed) {
        Plan::Retried | Plan::Stale => Ok(()),
        // On a task of its own, awaited: a caller that gives up on the nack (a timeout around
        // it) must not leave the message neither written nor rescheduled, its offset holding
        // back the partition's commits. (Rare, and its future is kilobytes: the task keeps it
        // out of every caller's future too.)
        Plan::DeadLetter(failed) => match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let inner = Arc::clone(inner);
                let task = runtime.spawn(async move { dead_letter(&inner, *failed, error).await });
                match task.await {
                    Ok(written) => written,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    // The runtime is shutting down.
                    Err(_) => Err(crate::ClientError::Closed),
                }
            }
            // Awaited outside a tokio runtime (another executor): done in place, as before.
            Err(_) => Box::pin(dead_letter(inner, *failed, error)).await,
        },
    }
}

/// A nack from a context that cannot wait (a dropped message): dead-lettering, if due,
/// happens on a task.
pub(crate) fn nack_detached(inner: &Arc<Inner>, failed: Failed, error: String) {
    if let Plan::DeadLetter(failed) = plan(inner, failed) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let inner = Arc::clone(inner);
                runtime.spawn(async move {
                    let _ = dead_letter(&inner, *failed, error).await;
                });
            }
            Err(_) => tracing::warn!("message dropped outside a tokio runtime: not dead-lettered"),
        }
    }
}

/// The copy written to the dead-letter topic: key, payload and headers of the original, plus
/// the `rustmq.dlq.*` headers.
pub(crate) fn dead_letter_message(dlq: &str, failed: &Failed, error: &str) -> Result<Message> {
    dead_letter_builder(
        dlq,
        &failed.message,
        failed.partition,
        failed.offset,
        failed.attempt,
        error,
    )
    .build()
}

/// The dead-letter copy of `original`: same key, payload and headers, plus the `rustmq.dlq.*`
/// headers. Shared by the consumer's `nack` path and the typed layer's `DeadLetterLayer`.
pub(crate) fn dead_letter_builder(
    dlq: &str,
    original: &Message,
    partition: u32,
    offset: u64,
    attempts: u32,
    error: &str,
) -> crate::message::MessageBuilder {
    let builder = Message::builder()
        .topic(dlq)
        .payload(original.payload.clone())
        .headers(original.headers.clone())
        .header(DLQ_ORIGINAL_TOPIC, original.topic.clone())
        .header(DLQ_ORIGINAL_PARTITION, partition.to_string())
        .header(DLQ_ORIGINAL_OFFSET, offset.to_string())
        .header(DLQ_ATTEMPTS, attempts.to_string())
        .header(DLQ_ERROR, shortened(error, MAX_DLQ_ERROR_BYTES));
    match &original.key {
        Some(key) => builder.key(key.clone()),
        None => builder,
    }
}

/// The longest [`DLQ_ERROR`] header, in bytes: a longer error is cut (at a character
/// boundary) and marked, so that the copy of a message near the broker's batch limit is not
/// made too large to store by its error's text.
pub const MAX_DLQ_ERROR_BYTES: usize = 1024;

/// `text`, cut to at most `max` bytes (at a character boundary, ending in `…`).
fn shortened(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The settings dead letters are produced with: the client's compression, as any producer
/// built without settings has, and [`AckLevel::All`], on the broker's disk before the message
/// they replace is resolved and its offset committed. Commits are synced, so a dead letter
/// acknowledged from the page cache alone could be lost to a power failure whose commit was
/// not. Messages as large as the broker stores (its `max_batch_bytes`, when larger than the
/// default `max_message_size`) are taken: a message another producer could store must not be
/// refused here for its size.
pub(crate) fn dead_letter_config(client: &RustMqClient) -> ProducerConfig {
    let defaults = ProducerConfig::default();
    let mut largest = client
        .broker_limits()
        .map_or(0, |l| l.max_batch_bytes as usize)
        .max(defaults.max_message_size);
    if client.config().compression.codec() != rustmq_protocol::Compression::None {
        // Compressed, a copy larger than the broker's batches may still fit in one: the
        // broker's answer decides.
        largest = largest.max(defaults.buffer_memory);
    }
    ProducerConfig {
        ack_level: AckLevel::All,
        compression: client.config().compression.clone(),
        max_message_size: largest,
        buffer_memory: defaults.buffer_memory.max(largest),
        ..defaults
    }
}

/// The dead-letter copy of `original` without its key, payload and headers, for when the
/// whole copy is too large for the broker: the `rustmq.dlq.*` headers name where the message
/// is, and [`DLQ_CONTENT_DROPPED`] how many bytes were left out.
pub(crate) fn content_dropped_builder(
    dlq: &str,
    original: &Message,
    partition: u32,
    offset: u64,
    attempts: u32,
    error: &str,
) -> crate::message::MessageBuilder {
    let headers_only = Message::received(
        original.topic.clone(),
        partition,
        offset,
        None,
        bytes::Bytes::new(),
        Default::default(),
        original.timestamp,
    );
    dead_letter_builder(dlq, &headers_only, partition, offset, attempts, error)
        .header(DLQ_CONTENT_DROPPED, original.size().to_string())
}

/// Whether a dead letter's write failed for good, whenever it is tried: its copy is too large
/// for the broker.
pub(crate) fn never_storable(e: &crate::ClientError) -> bool {
    matches!(e, crate::ClientError::MessageTooLarge { .. })
        || e.error_code() == Some(rustmq_protocol::ErrorCode::BatchTooLarge)
}

/// The dead-letter producer, made at the first dead letter. None is made once the consumer is
/// closing: `close` closes the one it finds, and would not find one made after it looked (the
/// message then stays unresolved, delivered again after a restart).
async fn producer<'a>(inner: &'a Inner, dlq: &str) -> Result<&'a Producer> {
    if let Some(producer) = inner.dead_letters.get() {
        return Ok(producer);
    }
    let closing = || inner.closed.load(std::sync::atomic::Ordering::Acquire);
    if closing() {
        return Err(crate::ClientError::Closed);
    }
    let producer = inner
        .dead_letters
        .get_or_try_init(|| {
            ProducerBuilder::new()
                .topic(dlq)
                .client(inner.client.clone())
                .config(dead_letter_config(&inner.client))
                .build()
        })
        .await?;
    // Made while `close` ran: it may have looked before this one was there.
    if closing() {
        let _ = producer.close().await;
        return Err(crate::ClientError::Closed);
    }
    Ok(producer)
}

/// Writes the message to the dead-letter queue (or drops it without one), then resolves it.
/// A copy too large for the broker goes without the message's content
/// ([`DLQ_CONTENT_DROPPED`]). If the write fails, the message is retried again later and the
/// error returned; if even that smaller copy cannot be stored, the message stays unresolved
/// and is not retried (a restart delivers it again).
async fn dead_letter(inner: &Arc<Inner>, failed: Failed, error: String) -> Result<()> {
    let (partition, offset, attempt) = (failed.partition, failed.offset, failed.attempt);
    let Some(dlq) = inner.config.dead_letter_queue.as_deref() else {
        tracing::warn!(partition, offset, attempts = attempt, %error, "retries exhausted and no dead-letter queue: message dropped");
        inner.state.lock().resolve(partition, failed.epoch, offset);
        inner
            .metrics
            .messages_dropped
            .fetch_add(1, Ordering::Relaxed);
        return Ok(());
    };
    let send = |message: Result<Message>| async {
        match message {
            Ok(message) => producer(inner, dlq).await?.send(message).await,
            Err(e) => Err(e),
        }
    };
    let mut sent = send(dead_letter_message(dlq, &failed, &error)).await;
    if sent.as_ref().is_err_and(never_storable) {
        // The copy is too large for the broker: its headers alone go, naming where the
        // message is, rather than the message being handled again and again for ever.
        tracing::warn!(partition, offset, dlq, bytes = failed.message.size(), "the message's copy is too large for the dead-letter topic: its key, payload and headers are left out");
        sent = send(
            content_dropped_builder(dlq, &failed.message, partition, offset, attempt, &error)
                .build(),
        )
        .await;
    }
    match sent {
        Ok(result) => {
            inner.state.lock().resolve(partition, failed.epoch, offset);
            inner
                .metrics
                .messages_dead_lettered
                .fetch_add(1, Ordering::Relaxed);
            inner.instruments.dead_lettered.increment(1);
            tracing::info!(partition, offset, attempts = attempt, dlq, dlq_offset = result.offset, %error, "message dead-lettered");
            Ok(())
        }
        Err(e) if never_storable(&e) => {
            // Even without its content (a dead-letter error text beyond the broker's batch
            // limit?): handling it again would fail the same way, for ever. It stays
            // unresolved (its offset holds the partition's commits back, and a restart
            // delivers it again), and is not redelivered meanwhile.
            tracing::error!(partition, offset, dlq, error = %e, "the message cannot be dead-lettered, even without its content; it stays uncommitted and is not retried");
            Err(e)
        }
        Err(e) => {
            tracing::warn!(partition, offset, dlq, error = %e, "dead-lettering failed; the message will be retried");
            let due = timing::deadline(Instant::now(), inner.config.retry_delay(attempt));
            if inner
                .state
                .lock()
                .schedule_retry(failed.epoch, failed.message, attempt, due)
            {
                inner.data.notify_waiters();
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_copy_keeps_the_original_and_adds_headers() {
        let message = Message::received(
            "orders".into(),
            4,
            77,
            Some(bytes::Bytes::from_static(b"k1")),
            bytes::Bytes::from_static(b"payload"),
            [("trace".to_string(), "abc".to_string())]
                .into_iter()
                .collect(),
            5,
        );
        let failed = Failed {
            message,
            partition: 4,
            offset: 77,
            epoch: 1,
            attempt: 4,
        };
        let m = dead_letter_message("orders.dlq", &failed, "boom").unwrap();
        assert_eq!(m.topic, "orders.dlq");
        assert_eq!(m.payload.as_ref(), b"payload");
        assert_eq!(m.key_as_str(), Some("k1"));
        assert_eq!(m.headers["trace"], "abc");
        assert_eq!(m.headers[DLQ_ORIGINAL_TOPIC], "orders");
        assert_eq!(m.headers[DLQ_ORIGINAL_PARTITION], "4");
        assert_eq!(m.headers[DLQ_ORIGINAL_OFFSET], "77");
        assert_eq!(m.headers[DLQ_ATTEMPTS], "4");
        assert_eq!(m.headers[DLQ_ERROR], "boom");
        // A long error is cut.
        let long = "é".repeat(MAX_DLQ_ERROR_BYTES);
        let m = dead_letter_message("orders.dlq", &failed, &long).unwrap();
        assert!(m.headers[DLQ_ERROR].len() <= MAX_DLQ_ERROR_BYTES);
        assert!(m.headers[DLQ_ERROR].ends_with('…'));
    }
}
