//! The sender task of one partition: closes batches when due, encodes them, sends them one at a
//! time (so retries never reorder a partition), and resolves their waiters. With
//! [`AckLevel::None`] a batch is done once written: its answer is read by a task of its own
//! (at most five of a partition's batches unanswered at a time).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustmq_protocol::batch::{set_producer, BATCH_HEADER_LEN};
use rustmq_protocol::{
    AutoCreateTopicRequest, Compression, ErrorCode, InitProducerRequest, MetadataRequest,
    ProduceRequest, ProduceResponse, Request, Response,
};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::accumulator::ReadyBatch;
use super::{AckLevel, Inner, SendResult, Slot};
use crate::client::RustMqClient;
use crate::error::{ClientError, Result};
use crate::transport::deadline_after;

/// The partition count of `topic`, created first if it does not exist and the broker
/// auto-creates topics (so that the first keyed messages go where the later ones will); `None`
/// if it does not exist (yet): the broker does not auto-create topics, may not create it for
/// this principal, refuses the request for another reason, or predates `AutoCreateTopic` (then
/// the count is learnt after the first produce creates the topic).
pub(crate) async fn partition_count_to_produce(
    client: &RustMqClient,
    topic: &str,
) -> Result<Option<u32>> {
    let req = Request::AutoCreateTopic(AutoCreateTopicRequest {
        name: topic.to_owned(),
    });
    match client.request(req).await {
        Ok(Response::AutoCreateTopic(r)) => Ok(Some(r.partitions)),
        Ok(other) => Err(ClientError::unexpected_response(&other)),
        Err(ClientError::TopicNotFound(_)) => Ok(None),
        // Any other answer of the broker (a principal that may not create the topic or write
        // to it, a broker that predates the request, a topic being deleted) gives a producer
        // as before, from the metadata: its sends meet the reason, if it lasts. Only a broker
        // that cannot be reached fails the build.
        Err(ClientError::Authorization(_)) => partition_count(client, topic).await,
        Err(e) if e.error_code().is_some() => partition_count(client, topic).await,
        Err(e) => Err(e),
    }
}

/// The partition count of `topic`, `None` if it does not exist (yet).
pub(crate) async fn partition_count(client: &RustMqClient, topic: &str) -> Result<Option<u32>> {
    let req = Request::Metadata(MetadataRequest {
        topics: Some(vec![topic.to_owned()]),
    });
    match client.request(req).await? {
        Response::Metadata(m) => Ok(m
            .topics
            .iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.len() as u32)),
        other => Err(ClientError::UnexpectedResponse(format!(
            "{:?} to a metadata request",
            other.kind()
        ))),
    }
}

/// Idempotent producer state of one partition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sequence {
    producer_id: i64,
    epoch: i16,
    next: i32,
}

async fn init_producer(client: &RustMqClient) -> Result<Sequence> {
    match client
        .request(Request::InitProducer(InitProducerRequest { name: None }))
        .await?
    {
        Response::InitProducer(r) => Ok(Sequence {
            producer_id: r.producer_id,
            epoch: r.epoch,
            next: 0,
        }),
        other => Err(ClientError::UnexpectedResponse(format!(
            "{:?} to an init-producer request",
            other.kind()
        ))),
    }
}

/// Sequences wrap from `i32::MAX` to 0, as the broker expects.
fn advance(seq: i32, count: u32) -> i32 {
    ((i64::from(seq) + i64::from(count)) % (i64::from(i32::MAX) + 1)) as i32
}

pub(crate) async fn run(inner: Arc<Inner>, slot: Arc<Slot>) {
    while let Some(batch) = next_batch(&inner, &slot).await {
        deliver(&inner, &slot, batch).await;
        slot.finish_sending(&inner);
    }
}

/// The next batch to send: a closed one, or the open one once its linger time is up; the
/// partition is then marked as sending. Waits while a `send` sends a batch of its own (see
/// [`super::Producer::send`]). `None` once the producer is closing and nothing is left.
async fn next_batch(inner: &Inner, slot: &Slot) -> Option<ReadyBatch> {
    let linger = inner.config.batch_timeout;
    loop {
        let notified = slot.wake.notified();
        let mut direct = None;
        let deadline = {
            let mut acc = slot.acc.lock();
            if acc.in_flight() {
                // A `send` is sending a batch of its own: drive it too (its `send` may no
                // longer be polled); woken when it is done.
                direct = slot.direct.lock().clone();
                None
            } else if let Some(b) = slot.ready.lock().pop_front() {
                acc.set_in_flight(true);
                return Some(b);
            } else {
                let closing = inner.closing.load(Ordering::Acquire);
                // `deadline_after`: a `batch_timeout` of `Duration::MAX` means no linger limit.
                let due = acc
                    .opened_at()
                    .map(|opened| Instant::from_std(deadline_after(opened.into_std(), linger)));
                match due {
                    Some(due)
                        if linger.is_zero()
                            || closing
                            || inner.room_wanted()
                            || due <= Instant::now() =>
                    {
                        let batch = acc.take();
                        acc.set_in_flight(batch.is_some());
                        return batch;
                    }
                    Some(due) => Some(due),
                    None if closing => return None,
                    None => None,
                }
            }
        };
        if let Some(direct) = direct {
            tokio::select! {
                () = direct => {}
                _ = notified => {}
            }
            continue;
        }
        match deadline {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(d) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

/// Sends `batch` (the caller holds the partition's sending role), resolves its waiters and
/// returns its buffer room.
pub(crate) async fn deliver(inner: &Arc<Inner>, slot: &Arc<Slot>, batch: ReadyBatch) {
    if inner.config.ack_level == AckLevel::None && !inner.config.idempotent {
        return deliver_unanswered(inner, slot, batch).await;
    }
    let count = batch.builder.len();
    // Only the holder of the sending role touches the sequence: the lock is never contended.
    let mut sequence = *slot.sequence.lock();
    let result = send(inner, slot, batch.builder, &mut sequence)
        .await
        .map_err(|e| e.for_topic(&inner.topic));
    // A failed idempotent batch leaves a gap in the sequence: start over with a new id.
    *slot.sequence.lock() = if result.is_ok() { sequence } else { None };
    match &result {
        Ok(_) => batch_sent(inner, count, batch.buffered_bytes, batch.opened),
        Err(e) => batch_failed(inner, slot, count, e),
    }
    for (i, (waiter, timestamp)) in batch.waiters.into_iter().enumerate() {
        waiter.complete(match &result {
            Ok(r) => Ok(SendResult {
                partition: slot.partition,
                // Checked by `check_offsets` when the answer came in.
                offset: r.base_offset.saturating_add(i as u64),
                timestamp,
            }),
            Err(e) => Err(e.duplicate()),
        });
    }
    inner.buffer.add_permits(batch.buffered_bytes);
    slot.completed.send_modify(|done| *done += u64::from(count));
    if result.is_ok() {
        inner.learn_partitions().await;
    }
}

/// [`deliver`] for [`AckLevel::None`]: the batch's waiters are told as soon as its request is
/// written, and the caller may send the partition's next batch at once, unless
/// [`MAX_UNANSWERED_BATCHES`](super::config::MAX_UNANSWERED_BATCHES) of the partition's
/// batches are still unanswered: then it waits for the oldest answer first. The answer is read
/// by a task of its own, which counts a failure, then gives back the batch's buffer room and
/// counts it in `completed` (after the batch before it: `flush` waits for batches in order).
async fn deliver_unanswered(inner: &Arc<Inner>, slot: &Arc<Slot>, batch: ReadyBatch) {
    let ReadyBatch {
        builder,
        waiters,
        buffered_bytes,
        opened,
    } = batch;
    let count = builder.len();
    // Given back once the batch is counted in `completed`, so in order: waiting for a
    // permit waits for the oldest unanswered batch. The semaphore is never closed.
    let room = Arc::clone(&slot.unanswered_room).acquire_owned().await.ok();
    let (done, done_rx) = oneshot::channel::<()>();
    let previous = slot.last_unanswered.lock().replace(done_rx);
    // A batch that cannot be built was never sent: no failed request, as in `deliver`.
    let written = match produce_request(inner, slot, builder) {
        Ok(request) => inner
            .client
            .write_request(&request)
            .await
            .inspect_err(|_| count_failed_request(inner)),
        Err(e) => Err(e),
    };
    let unanswered = match written {
        Ok(unanswered) => {
            for (waiter, timestamp) in waiters {
                waiter.complete(Ok(SendResult {
                    partition: slot.partition,
                    offset: SendResult::UNKNOWN_OFFSET,
                    timestamp,
                }));
            }
            Some(unanswered)
        }
        Err(e) => {
            batch_failed(inner, slot, count, &e);
            for (waiter, _) in waiters {
                waiter.complete(Err(e.duplicate()));
            }
            None
        }
    };
    let (inner, slot) = (Arc::clone(inner), Arc::clone(slot));
    tokio::spawn(async move {
        if let Some(unanswered) = unanswered {
            let answer = match unanswered.answer().await {
                Ok(Response::Produce(r)) => check_offsets(&r, count).map(|()| r),
                Ok(other) => Err(unexpected(&other)),
                Err(e) => Err(e),
            };
            match answer {
                Ok(r) => {
                    tracing::trace!(topic = %inner.topic, partition = slot.partition, offset = r.base_offset, "fire-and-forget batch stored");
                    batch_sent(&inner, count, buffered_bytes, opened);
                    inner.learn_partitions().await;
                }
                Err(e) => {
                    count_failed_request(&inner);
                    batch_failed(&inner, &slot, count, &e);
                }
            }
        }
        if let Some(previous) = previous {
            // Dropped (not sent) once the batch before is counted.
            let _ = previous.await;
        }
        inner.buffer.add_permits(buffered_bytes);
        slot.completed.send_modify(|done| *done += u64::from(count));
        drop(done);
        drop(room);
    });
}

/// Counts an acknowledged batch of `count` messages, opened at `opened`.
fn batch_sent(inner: &Inner, count: u32, buffered_bytes: usize, opened: Instant) {
    let now = Instant::now();
    let latency_us = now.duration_since(opened).as_micros() as u64;
    inner.metrics.record_batch(
        u64::from(count),
        buffered_bytes as u64,
        latency_us * u64::from(count),
        latency_us,
    );
    inner.instruments.record_batch(
        u64::from(count),
        buffered_bytes as u64,
        now.duration_since(opened),
    );
}

/// Counts a failed request of a batch in `errors` (a batch that fails to build sent none).
fn count_failed_request(inner: &Inner) {
    inner.metrics.errors.fetch_add(1, Ordering::Relaxed);
    inner.instruments.errors.increment(1);
}

/// Counts (and logs) a batch of `count` messages that failed for good.
fn batch_failed(inner: &Arc<Inner>, slot: &Slot, count: u32, e: &ClientError) {
    // The topic no longer has the partition (deleted and made again with fewer, say): the
    // partition count is asked again, so that the next messages go where the topic has room.
    if matches!(
        e.error_code(),
        Some(
            rustmq_protocol::ErrorCode::UnknownPartition | rustmq_protocol::ErrorCode::UnknownTopic
        )
    ) {
        let inner = Arc::clone(inner);
        tokio::spawn(async move { inner.refresh_partitions(true).await });
    }
    inner
        .metrics
        .messages_failed
        .fetch_add(u64::from(count), Ordering::Relaxed);
    inner
        .instruments
        .messages_failed
        .increment(u64::from(count));
    tracing::warn!(topic = %inner.topic, producer = %inner.name, partition = slot.partition, messages = count, error = %e, "batch failed");
}

/// Fails an answer whose base offset leaves no room for the batch's `count` records: their
/// offsets would overflow (a broker bug or a corrupt answer), or the last would be
/// [`SendResult::UNKNOWN_OFFSET`], which no stored record may have.
pub(crate) fn check_offsets(r: &ProduceResponse, count: u32) -> Result<()> {
    // The offset past the batch's last record exists: the last is below `u64::MAX`.
    match r.base_offset.checked_add(u64::from(count.max(1))) {
        Some(_) => Ok(()),
        None => Err(ClientError::UnexpectedResponse(format!(
            "produce answered with base offset {}, past which the batch's {count} records do not fit",
            r.base_offset
        ))),
    }
}

fn unexpected(answer: &Response) -> ClientError {
    ClientError::UnexpectedResponse(format!("{:?} to a produce request", answer.kind()))
}

/// The produce request of `builder`'s batch (its producer id and sequence already set),
/// compressed if it is large enough.
fn produce_request(
    inner: &Inner,
    slot: &Slot,
    builder: rustmq_protocol::RecordBatchBuilder,
) -> Result<Request> {
    let config = &inner.config;
    let records_bytes = builder.size() - BATCH_HEADER_LEN;
    let codec = if config.compression.enabled && records_bytes >= config.compression.min_size {
        config.compression.codec()
    } else {
        Compression::None
    };
    let batch = builder
        .compression(codec, config.compression.level)
        .build()?;
    Ok(Request::Produce(ProduceRequest {
        topic: inner.topic.clone(),
        partition: slot.partition,
        acks: config.ack_level.wire(),
        timeout_ms: inner.client.config().request_timeout_ms(),
        batch,
    }))
}

async fn send(
    inner: &Inner,
    slot: &Slot,
    mut builder: rustmq_protocol::RecordBatchBuilder,
    sequence: &mut Option<Sequence>,
) -> Result<ProduceResponse> {
    let config = &inner.config;
    let count = builder.len();
    let client_config = inner.client.config();
    let retry = &client_config.retry_config;
    let backoff = crate::transport::backoff::Backoff::new(retry);
    // Attempts of this batch so far, the producer id's included: both share `max_retries`.
    let mut attempt = 0u32;
    if config.idempotent {
        let seq = match *sequence {
            Some(s) => s,
            None => new_sequence(inner, &backoff, &mut attempt).await?,
        };
        builder = builder.producer(seq.producer_id, seq.epoch, seq.next);
        *sequence = Some(Sequence {
            next: advance(seq.next, count),
            ..seq
        });
    }
    let mut request = produce_request(inner, slot, builder)?;
    // Whether the batch already went again under a new id (see below): once per batch.
    let mut renewed = false;
    loop {
        let span = tracing::debug_span!(target: "rustmq::produce", "produce", topic = %inner.topic, producer = %inner.name, partition = slot.partition, records = count, attempt);
        let answer =
            tracing::Instrument::instrument(inner.client.send_request(&request), span).await;
        match answer {
            Ok(Response::Produce(r)) => {
                if r.duplicate {
                    tracing::debug!(topic = %inner.topic, partition = slot.partition, offset = r.base_offset, "broker dropped a resent duplicate");
                }
                check_offsets(&r, count)?;
                return Ok(r);
            }
            Ok(other) => return Err(unexpected(&other)),
            // The broker in use did not issue the id: the client failed over to another
            // broker of its list, or the broker lost its data. It refused the batch before
            // writing it, so the batch goes again under a new id, rather than failing for a
            // reason the application cannot act on.
            Err(e)
                if config.idempotent
                    && !renewed
                    && e.error_code() == Some(ErrorCode::UnknownProducer) =>
            {
                tracing::debug!(topic = %inner.topic, partition = slot.partition, error = %e, "the broker does not know the producer id: sending the batch under a new one");
                count_failed_request(inner);
                renewed = true;
                let seq = new_sequence(inner, &backoff, &mut attempt).await?;
                if let Request::Produce(p) = &mut request {
                    let mut batch = BytesMut::from(&p.batch[..]);
                    set_producer(&mut batch, seq.producer_id, seq.epoch, seq.next);
                    p.batch = batch.freeze();
                }
                *sequence = Some(Sequence {
                    next: advance(seq.next, count),
                    ..seq
                });
            }
            Err(e) => {
                let answered = config.ack_level != AckLevel::None;
                retry_after(inner, e, &backoff, &mut attempt, answered).await?;
            }
        }
    }
}

/// A new producer id for a partition's batches, from sequence 0. Retried as a produce request
/// is: a lost connection or a busy broker must not fail the batch where a producer without
/// idempotence would try again.
async fn new_sequence(
    inner: &Inner,
    backoff: &crate::transport::backoff::Backoff,
    attempt: &mut u32,
) -> Result<Sequence> {
    loop {
        match init_producer(&inner.client).await {
            Ok(s) => return Ok(s),
            Err(e) => retry_after(inner, e, backoff, attempt, true).await?,
        }
    }
}

/// Whether a batch whose request failed with `error` after `attempt` retries is tried again:
/// a retryable error, retries left, and a request whose answer is waited for (produce
/// requests of `AckLevel::None` are fire and forget, never retried).
fn may_retry(error: &ClientError, attempt: u32, max_retries: u32, answered: bool) -> bool {
    answered && error.is_retryable() && attempt < max_retries
}

/// Counts a failed request of a batch (its producer id's or its produce request); waits out
/// the backoff before the next attempt if the batch may be retried (see [`may_retry`]), else
/// gives the error back.
async fn retry_after(
    inner: &Inner,
    e: ClientError,
    backoff: &crate::transport::backoff::Backoff,
    attempt: &mut u32,
    answered: bool,
) -> Result<()> {
    count_failed_request(inner);
    let max_retries = inner.client.config().retry_config.max_retries;
    if !may_retry(&e, *attempt, max_retries, answered) {
        return Err(e);
    }
    let delay: Duration = backoff.delay(*attempt);
    *attempt += 1;
    inner.metrics.retries.fetch_add(1, Ordering::Relaxed);
    inner.instruments.retries.increment(1);
    tracing::debug!(error = %e, attempt = *attempt, ?delay, "retrying batch");
    tokio::time::sleep(delay).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rustmq_protocol::ApiKind;

    use super::*;
    use crate::config::ClientConfig;
    use crate::message::Message;
    use crate::producer::{Producer, ProducerBuilder, ProducerConfig};
    use crate::transport::test_broker::{Script, TestBroker};

    /// A scripted broker with topic `t` (one partition), and a producer of it.
    async fn producer(script: Script, config: ProducerConfig) -> (TestBroker, Producer) {
        let broker = TestBroker::start(script).await;
        let client = RustMqClient::new(ClientConfig {
            brokers: vec![broker.address()],
            request_timeout: Duration::from_secs(60),
            ..ClientConfig::default()
        })
        .await
        .unwrap();
        client.create_topic("t", 1).await.unwrap();
        let producer = ProducerBuilder::new()
            .topic("t")
            .client(client)
            .config(config)
            .build()
            .await
            .unwrap();
        (broker, producer)
    }

    fn message(i: usize) -> Message {
        Message::builder()
            .topic("t")
            .payload(format!("m{i}"))
            .build()
            .unwrap()
    }

    /// A broker that predates `AutoCreateTopic` answers it with `UnknownRequestKind`: the
    /// producer learns the partition count from the topic's metadata instead.
    #[tokio::test]
    async fn a_broker_without_auto_create_topic_is_asked_for_metadata() {
        let broker = TestBroker::start(Script::default()).await;
        let client = RustMqClient::new(ClientConfig {
            brokers: vec![broker.address()],
            ..ClientConfig::default()
        })
        .await
        .unwrap();
        client.create_topic("three", 3).await.unwrap();
        let producer = client.create_producer("three").await.unwrap();
        assert_eq!(producer.partition_count(), 3);
        assert_eq!(broker.state.count(ApiKind::AutoCreateTopic), 1);
        assert_eq!(broker.state.count(ApiKind::Metadata), 1);
    }

    /// `AckLevel::None`: sends resolve without their answers, but a partition has at most
    /// `MAX_UNANSWERED_BATCHES` batches unanswered; the next waits for the oldest answer.
    #[tokio::test]
    async fn fire_and_forget_batches_go_out_without_answers_up_to_the_cap() {
        let (broker, producer) = producer(
            Script::default(),
            ProducerConfig {
                ack_level: AckLevel::None,
                batch_size: 1,
                ..ProducerConfig::default()
            },
        )
        .await;
        // The broker reads every produce request and answers none.
        *broker.state.hold.lock() = Some(ApiKind::Produce);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        const SENDS: usize = 20;
        const CAP: usize = super::super::config::MAX_UNANSWERED_BATCHES;
        for i in 0..SENDS {
            let tx = tx.clone();
            producer
                .send_async_with(message(i), move |r| {
                    let _ = tx.send(r);
                })
                .await
                .unwrap();
        }
        for _ in 0..CAP {
            let result = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .expect("a send resolves without its answer")
                .unwrap()
                .unwrap();
            assert_eq!(result.offset, SendResult::UNKNOWN_OFFSET);
        }
        // No event tells that nothing more is written: give it a moment to go wrong.
        let more = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
        assert!(more.is_err(), "a batch past the cap was written: {more:?}");
        assert_eq!(broker.state.count(ApiKind::Produce), CAP);
    }

    /// A `batch_timeout` of `Duration::MAX` means batches go when full or flushed (the sender
    /// task panicked adding it to an `Instant`).
    #[tokio::test]
    async fn a_linger_past_what_an_instant_holds_means_no_limit() {
        let (_broker, producer) = producer(
            Script {
                produce_base_offset: Some(0),
                ..Script::default()
            },
            ProducerConfig {
                batch_size: 10,
                batch_timeout: Duration::MAX,
                ..ProducerConfig::default()
            },
        )
        .await;
        producer.send_async(message(0), None).await.unwrap();
        // The partition's sender task sees the open batch and works out when it is due.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::time::timeout(Duration::from_secs(20), producer.flush())
            .await
            .expect("the sender task is alive")
            .unwrap();
    }

    /// A callback that panics takes neither the batch's other waiters nor the partition's
    /// sender task with it: later sends and `flush` still complete.
    #[tokio::test]
    async fn a_panicking_callback_does_not_stop_the_partition() {
        let (_broker, producer) = producer(
            Script {
                produce_base_offset: Some(0),
                ..Script::default()
            },
            ProducerConfig {
                batch_size: 2,
                ..ProducerConfig::default()
            },
        )
        .await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        producer
            .send_async_with(message(0), |_| panic!("a callback's bug"))
            .await
            .unwrap();
        producer
            .send_async_with(message(1), move |r| {
                let _ = tx.send(r);
            })
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the other callback is called")
            .unwrap()
            .unwrap();
        let later = tokio::time::timeout(Duration::from_secs(20), producer.send(message(2)))
            .await
            .expect("the partition still sends")
            .unwrap();
        assert_eq!(
            later.offset, 0,
            "the scripted broker answers every batch from 0"
        );
        tokio::time::timeout(Duration::from_secs(20), producer.flush())
            .await
            .expect("flush returns")
            .unwrap();
    }

    #[tokio::test]
    async fn an_answer_whose_offsets_do_not_fit_fails_the_batch() {
        let (_broker, producer) = producer(
            Script {
                produce_base_offset: Some(u64::MAX - 1),
                ..Script::default()
            },
            ProducerConfig {
                batch_size: 3,
                ..ProducerConfig::default()
            },
        )
        .await;
        // From u64::MAX - 1: a third record would have no offset, and a second would have
        // `u64::MAX`, which is `SendResult::UNKNOWN_OFFSET`.
        for records in [3, 2] {
            let err = producer
                .send_batch((0..records).map(message).collect())
                .await
                .unwrap_err();
            assert!(
                matches!(&err, ClientError::UnexpectedResponse(m) if m.contains("base offset")),
                "{err}"
            );
        }
        // One fits.
        let sent = producer.send_batch(vec![message(0)]).await.unwrap();
        assert_eq!(sent[0].offset, u64::MAX - 1);
    }
}
