//! The fetch task of one assigned input partition: long-poll fetches from the stream's
//! position, each message admitted within `max_in_flight` and `max_in_flight_bytes`
//! ([`Limits`]) and registered in the ledger before it goes to the router, in offset order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustmq_protocol::{BatchIter, ErrorCode, FetchRequest, Request, Response};
use tokio::sync::{mpsc, watch, AcquireError, Notify, OwnedSemaphorePermit, Semaphore};

use super::group::log_bounds;
use super::metrics::StreamMetrics;
use super::session::Ctx;
use super::Tp;
use crate::consumer::fetcher::to_message;
use crate::error::{ClientError, Result};
use crate::message::Message;

const MAX_WAIT: Duration = Duration::from_millis(500);
const MAX_BYTES: u32 = 1 << 20;
/// The longest wait before a failed fetch is tried again, whatever `retry_config` allows: a
/// partition whose fetches fail must still deliver well within a window's idle timeout
/// ([`crate::stream::DEFAULT_WINDOW_IDLE_TIMEOUT`], 5 s), or its messages would be judged late.
pub(crate) const MAX_FAILED_FETCH_DELAY: Duration = Duration::from_millis(1_600);

/// A fetched message on its way to the router.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) tp: Tp,
    pub(crate) message: Message,
    pub(crate) permit: InFlight,
}

/// The bounds of a session's messages in flight, shared by its fetch tasks: `max_in_flight`
/// messages and `max_in_flight_bytes` of them. (Per session: after an abort, units of the
/// session before may still hold theirs while the next one starts.)
#[derive(Debug)]
pub(crate) struct Limits {
    messages: Arc<Semaphore>,
    /// `messages`' permits in all.
    places: usize,
    bytes: Arc<Semaphore>,
    /// What one message takes at most: all of `bytes`, so that a larger message goes alone.
    most: u32,
    metrics: Arc<StreamMetrics>,
    /// Fetch tasks waiting for room now.
    waiting: AtomicUsize,
    /// Told each time a fetch task starts to wait, and when a message gives its room back
    /// while one waits: the router then looks whether its open batch is all that can make
    /// room, and closes it rather than let it wait for its timeout.
    starved: Notify,
}

impl Limits {
    pub(crate) fn new(messages: usize, bytes: usize, metrics: Arc<StreamMetrics>) -> Self {
        let bytes = bytes.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        let places = messages.min(Semaphore::MAX_PERMITS);
        Limits {
            messages: Arc::new(Semaphore::new(places)),
            places,
            bytes: Arc::new(Semaphore::new(bytes)),
            most: bytes as u32,
            metrics,
            waiting: AtomicUsize::new(0),
            starved: Notify::new(),
        }
    }

    /// Whether a fetch task waits for room now.
    pub(crate) fn starving(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// Places taken now: by messages admitted and not finished, and by fetch tasks given
    /// their place and not yet run.
    pub(crate) fn places_taken(&self) -> usize {
        self.places - self.messages.available_permits()
    }

    /// Completes when a fetch task starts to wait for room or room comes back while one
    /// waits (or did since the last call).
    pub(crate) async fn starved(&self) {
        self.starved.notified().await;
    }

    /// Takes permits at once when there are enough; otherwise counts this task as waiting
    /// (and tells the router) until they come.
    async fn take(
        &self,
        semaphore: &Arc<Semaphore>,
        n: u32,
    ) -> std::result::Result<OwnedSemaphorePermit, AcquireError> {
        match Arc::clone(semaphore).try_acquire_many_owned(n) {
            Ok(permit) => Ok(permit),
            // No permits (or closed: then the wait fails at once).
            Err(_) => {
                self.waiting.fetch_add(1, Ordering::AcqRel);
                let _waiting = Waiting(&self.waiting);
                self.starved.notify_one();
                Arc::clone(semaphore).acquire_many_owned(n).await
            }
        }
    }

    /// Waits until `message` fits (first among the bytes, then among the messages, each in
    /// turn of arrival; a message larger than the bytes takes all of them); `None` only if the
    /// semaphores were closed, which nothing does. Bytes first: a fetch task waiting for
    /// bytes then holds no place, which the router's test of a batch nothing more can join
    /// relies on (tokio gives a waiter part of its permits as they come back). A message
    /// takes at least one byte, so that an empty one queues behind the others too.
    async fn admit(self: &Arc<Self>, message: &Message) -> Option<InFlight> {
        let size = u32::try_from(message.size()).unwrap_or(u32::MAX);
        let bytes = self
            .take(&self.bytes, size.clamp(1, self.most))
            .await
            .ok()?;
        let place = self.take(&self.messages, 1).await.ok()?;
        StreamMetrics::add(&self.metrics.messages_in_flight, 1);
        StreamMetrics::add(&self.metrics.bytes_in_flight, bytes.num_permits());
        Some(InFlight {
            permits: Some((bytes, place)),
            limits: Arc::clone(self),
        })
    }
}

/// A fetch task counted as waiting for room, until dropped (its wait is over or cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A message's share of the [`Limits`], given back when it is dropped (the message finished,
/// or placed in its windows).
#[derive(Debug)]
pub(crate) struct InFlight {
    /// Its bytes and its place; `None` only while dropped.
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    limits: Arc<Limits>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some((bytes, place)) = self.permits.take() else {
            return;
        };
        let metrics = &self.limits.metrics;
        metrics.messages_in_flight.fetch_sub(1, Ordering::Relaxed);
        metrics
            .bytes_in_flight
            .fetch_sub(bytes.num_permits() as u64, Ordering::Relaxed);
        // Bytes before the place: a message never holds bytes without a place.
        drop(bytes);
        drop(place);
        // What came back may leave a waiting fetch task still short while the open batch now
        // holds every place taken: the router looks again (it is woken only by messages and
        // by waits that start otherwise).
        if self.limits.starving() {
            self.limits.starved.notify_one();
        }
    }
}

/// Decodes a fetch answer into the messages at or after `from`; returns them and the offset
/// after the last batch.
pub(crate) fn decode(tp: &Tp, from: u64, records: Bytes) -> Result<(Vec<Message>, Option<u64>)> {
    let mut out = Vec::new();
    let mut next = None;
    for batch in BatchIter::new(records) {
        let batch = batch?;
        for record in batch.records()? {
            let record = record?;
            if record.offset < from {
                continue;
            }
            out.push(to_message(&tp.topic, tp.partition, record));
        }
        next = Some(batch.header().next_offset());
    }
    Ok((out, next))
}

/// Fetches `tp` from `offset` until `stop` is set or the router goes away.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    tp: Tp,
    mut offset: u64,
    limits: Arc<Limits>,
    tx: mpsc::Sender<Incoming>,
    mut stop: watch::Receiver<bool>,
) {
    let client = &ctx.client;
    // Within MAX_FAILED_FETCH_DELAY: a window judges a partition idle after its idle timeout.
    let backoff = crate::consumer::timing::retry_backoff_within(
        &client.config().retry_config,
        MAX_FAILED_FETCH_DELAY,
    );
    let mut failures = 0u32;
    // Fetches answered "out of range" in a row.
    let mut out_of_range = 0u32;
    loop {
        let request = Request::Fetch(FetchRequest {
            topic: tp.topic.to_string(),
            partition: tp.partition,
            offset,
            max_bytes: MAX_BYTES,
            max_wait_ms: MAX_WAIT.as_millis() as u32,
        });
        let answer = tokio::select! {
            // Saturating: `Duration::MAX` is a valid request timeout ("none").
            a = client.request_with_timeout(
                request,
                client.config().request_timeout.saturating_add(MAX_WAIT),
            ) => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let records = match answer {
            Ok(Response::Fetch(r)) => r.records,
            Ok(other) => {
                ctx.abort(ClientError::UnexpectedResponse(format!(
                    "{:?} to a fetch",
                    other.kind()
                )));
                return;
            }
            Err(e) if e.error_code() == Some(ErrorCode::OffsetOutOfRange) => {
                // As the consumer does: below the log start, skip to it; past the log end (a
                // committed position beyond it, or a log that lost records), go back to it,
                // so that the records it gets from there on are not skipped.
                out_of_range += 1;
                let moved = match log_bounds(client, &tp.topic, tp.partition).await {
                    Ok((first, _)) if first > offset => {
                        tracing::warn!(topic = %tp.topic, partition = tp.partition, from = offset, to = first, "position below the log start: skipping ahead");
                        ctx.skip_to(&tp, first);
                        offset = first;
                        true
                    }
                    Ok((_, end)) if offset > end => {
                        tracing::warn!(topic = %tp.topic, partition = tp.partition, from = offset, to = end, "position past the log end: moving back to it");
                        if !ctx.rewind_to(&tp, end) {
                            // The log lost records this session is processing: a new session
                            // starts over from what is committed.
                            ctx.abort(ClientError::OffsetOutOfRange(format!(
                                "{} partition {} ends at {end}, below inputs being processed",
                                tp.topic, tp.partition
                            )));
                            return;
                        }
                        offset = end;
                        true
                    }
                    Ok(_) => false,
                    Err(e) => {
                        tracing::debug!(topic = %tp.topic, partition = tp.partition, error = %e, "log bounds unknown");
                        false
                    }
                };
                // Straight on after a first move; otherwise (nothing moved, or the log keeps
                // moving under us) not without a pause.
                if !moved || out_of_range > 1 {
                    let delay = Duration::from_millis(50u64 << out_of_range.min(5));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
                continue;
            }
            Err(e) => {
                failures += 1;
                tracing::debug!(topic = %tp.topic, partition = tp.partition, error = %e, failures, "fetch failed");
                if !e.is_retryable() && failures > 3 {
                    ctx.abort(e);
                    return;
                }
                let delay = backoff.delay(failures - 1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
        };
        failures = 0;
        out_of_range = 0;
        let (messages, next) = match decode(&tp, offset, records) {
            Ok(d) => d,
            Err(e) => {
                ctx.abort(e);
                return;
            }
        };
        for message in messages {
            let permit = tokio::select! {
                p = limits.admit(&message) => match p {
                    Some(p) => p,
                    None => return,
                },
                _ = stop.wait_for(|s| *s) => return,
            };
            let o = message.offset;
            ctx.ledger.lock().received(&tp, o, 1);
            offset = o + 1;
            let incoming = Incoming {
                tp: tp.clone(),
                message,
                permit,
            };
            if tx.send(incoming).await.is_err() {
                return;
            }
        }
        if let Some(next) = next {
            offset = offset.max(next);
        }
    }
}
