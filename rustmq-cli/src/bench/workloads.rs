//! The measurements: produce (pipelined or one awaited send at a time), consume, and end to
//! end. Each creates what it needs outside the timed section and returns one [`Report`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustmq::consumer::{ConsumerBuilder, ConsumerConfig, StartPosition};
use rustmq::{
    AckLevel, ClientError, Message, ProducerBuilder, ProducerConfig, RustMqClient, TopicName,
};

use super::check::{Mismatch, Offsets, SeqSet};
use super::pace::Pacer;
use super::payload::{Payloads, Stamped};
use super::report::{Latency, Report};
use super::Ctx;
use crate::error::CliError;
use crate::progress;

/// Longest wait for the next message before a consume run gives up.
const STALL: Duration = Duration::from_secs(30);
/// Progress is updated every this many messages.
const TICK: u64 = 1024;

/// A produce run.
#[derive(Debug, Clone)]
pub(crate) struct ProduceSpec {
    pub(crate) name: String,
    pub(crate) topic: String,
    pub(crate) messages: u64,
    pub(crate) size: usize,
    pub(crate) partitions: u32,
    /// One `send` at a time, each awaited and timed (W5), instead of pipelined sends.
    pub(crate) sequential: bool,
    pub(crate) config: ProducerConfig,
}

/// The producer settings for throughput (W1, W2, W6): large batches, no linger (a partition's
/// next batch fills while its previous request is in flight), a 64 MiB buffer. Not idempotent
/// (the library's default, and what every recorded run measured): a batch sent again after a
/// lost answer could be stored twice, which the consume runs' check of the offsets finds (the
/// topic then holds more messages than were produced).
pub(crate) fn throughput_config(acks: AckLevel) -> ProducerConfig {
    ProducerConfig {
        batch_size: 16_384,
        batch_max_bytes: 1024 * 1024,
        batch_timeout: Duration::ZERO,
        buffer_memory: 64 * 1024 * 1024,
        ack_level: acks,
        ..ProducerConfig::default()
    }
}

/// The settings that matter, for the report.
pub(crate) fn describe_config(c: &ProducerConfig) -> String {
    format!(
        "acks={:?} batch_size={} batch_max_bytes={} linger={}ms buffer_memory={} compression={} idempotent={}",
        c.ack_level,
        c.batch_size,
        c.batch_max_bytes,
        c.batch_timeout.as_millis(),
        c.buffer_memory,
        if c.compression.enabled { format!("{:?}", c.compression.algorithm).to_lowercase() } else { "none".into() },
        c.idempotent
    )
}

/// A fresh topic name for a run.
pub(crate) fn topic_name(workload: &str) -> String {
    format!(
        "bench-{}-{:08x}",
        workload.to_lowercase(),
        fastrand::u32(..)
    )
}

/// The topics a run created, to delete when it ends (unless `--keep-topics`): a default run
/// writes about 500 MB into them. Shared with the code that ends the run, which outlives a
/// run cut short by Ctrl-C.
#[derive(Debug, Clone, Default)]
pub(crate) struct Created(Arc<parking_lot::Mutex<Vec<String>>>);

impl Created {
    /// Notes `topic` (before it is asked for: a creation whose answer is lost may still have
    /// created it).
    pub(crate) fn add(&self, topic: &str) {
        let mut topics = self.0.lock();
        if !topics.iter().any(|t| t == topic) {
            topics.push(topic.to_owned());
        }
    }

    /// The topics noted, in order; none are left.
    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock())
    }
}

/// Creates `topic` with `partitions` partitions, noted as the run's own.
pub(crate) async fn create_topic(
    client: &RustMqClient,
    ctx: &Ctx,
    topic: &str,
    partitions: u32,
) -> Result<(), CliError> {
    ctx.created.add(topic);
    client.create_topic(topic, partitions).await?;
    Ok(())
}

/// Deletes `topics` (those of the run, when it ends); a topic already gone is fine, any other
/// failure is reported on stderr without failing the run (its results were printed).
pub(crate) async fn delete_topics(client: &RustMqClient, topics: &[String]) {
    for topic in topics {
        match client.delete_topic(topic).await {
            Ok(()) | Err(ClientError::TopicNotFound(_)) => {}
            Err(e) => eprintln!("bench: could not delete topic {topic}: {e}"),
        }
    }
}

/// Produces `spec.messages` random payloads to a topic that exists.
pub(crate) async fn produce(
    client: &RustMqClient,
    spec: &ProduceSpec,
    ctx: &Ctx,
) -> Result<Report, CliError> {
    let producer = ProducerBuilder::new()
        .topic(&spec.topic)
        .client(client.clone())
        .config(spec.config.clone())
        .build()
        .await?;
    let mut payloads = Payloads::new(spec.size);
    let mut latency = Latency::new();
    let bar = progress::bar(ctx.quiet, Some(spec.messages), &spec.name);
    // Made once and shared by every message (as an application sending to one topic would).
    let topic = TopicName::from(&spec.topic);
    let cpu = ctx.cpu.mark().await;
    let started = Instant::now();
    for i in 0..spec.messages {
        let message = Message::builder()
            .topic(topic.clone())
            .payload(payloads.next())
            .build()?;
        if spec.sequential {
            let sent = Instant::now();
            producer.send(message).await?;
            latency.record(sent.elapsed());
        } else {
            producer.send_async(message, None).await?;
        }
        if i % TICK == 0 {
            bar.set_position(i);
        }
    }
    producer.flush().await?;
    let elapsed = started.elapsed();
    let cpu = ctx.cpu.since(&cpu).await;
    bar.finish_and_clear();
    let failed = producer
        .metrics()
        .await
        .messages_failed
        .load(Ordering::Relaxed);
    producer.close().await?;
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "{}: {failed} of {} messages failed",
            spec.name, spec.messages
        )));
    }
    let settings = describe_config(&spec.config);
    Ok(Report::new(
        &spec.name,
        spec.messages,
        spec.size,
        spec.partitions,
        elapsed,
        spec.sequential.then_some(&latency),
        settings,
    )
    .with_cpu(cpu))
}

/// The consumer settings for reading a backlog (W3, W7): large fetches and buffers.
pub(crate) fn backlog_config() -> ConsumerConfig {
    ConsumerConfig {
        start_position: StartPosition::Earliest,
        fetch_size: 10_000,
        max_buffered_messages_per_partition: 20_000,
        fetch_timeout: Duration::from_millis(100),
        ..ConsumerConfig::default()
    }
}

/// Reads `messages` messages of `topic` from the earliest offset as a new consumer group,
/// acknowledging each, and checks that they are exactly the `messages` produced: the topic
/// holds that many, and each partition's offsets come in order from its first, each once
/// ([`Offsets`]). Timed from when the consumer has joined its group (`build` returns then),
/// as W7's handler is from its service's start, to the last message acknowledged: every
/// message counted is read within the time.
pub(crate) async fn consume(
    client: &RustMqClient,
    name: &str,
    topic: &str,
    messages: u64,
    partitions: u32,
    ctx: &Ctx,
) -> Result<Report, CliError> {
    let mismatch = |m: Mismatch| CliError::Failed(format!("{name}: topic {topic}: {m}"));
    let description = client.describe_topic(topic).await?;
    let mut offsets = Offsets::new(
        description
            .partitions
            .iter()
            .map(|p| (p.partition, p.log_start_offset, p.high_watermark)),
    );
    offsets.holds(messages).map_err(mismatch)?;
    let config = backlog_config();
    let settings = format!(
        "fetch_size={} max_buffered_messages_per_partition={} max_buffered_bytes_per_partition={} ack=each auto_commit={}",
        config.fetch_size,
        config.max_buffered_messages_per_partition,
        config.max_buffered_bytes_per_partition,
        config.enable_auto_commit
    );
    let consumer = ConsumerBuilder::new()
        .topic(topic)
        .consumer_group(format!("{topic}-reader"))
        .config(config)
        .client(client.clone())
        .build()
        .await?;
    let bar = progress::bar(ctx.quiet, Some(messages), name);
    let (mut got, mut bytes) = (0u64, 0usize);
    let cpu = ctx.cpu.mark().await;
    let started = Instant::now();
    while got < messages {
        let receive = consumer.receive();
        tokio::pin!(receive);
        // Most receives find a buffered message: poll once before arming the stall timer, so
        // the measurement does not pay a timer entry per message.
        let received = match futures::poll!(receive.as_mut()) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => tokio::time::timeout(STALL, receive)
                .await
                .map_err(|_| stalled(name, got, messages))?,
        };
        // The message is used where it lies: each move of a ~240-byte message is a copy.
        let delivery = match received {
            Ok(Some(ref d)) => d,
            Ok(None) => return Err(closed(name, got, messages)),
            Err(e) => return Err(e.into()),
        };
        offsets
            .check(delivery.message.partition, delivery.message.offset)
            .map_err(mismatch)?;
        bytes = bytes.max(delivery.message.payload.len());
        delivery.ack().await?;
        got += 1;
        if got % TICK == 0 {
            bar.set_position(got);
        }
    }
    let elapsed = started.elapsed();
    let cpu = ctx.cpu.since(&cpu).await;
    bar.finish_and_clear();
    consumer.close().await?;
    offsets.finish().map_err(mismatch)?;
    Ok(Report::new(name, messages, bytes, partitions, elapsed, None, settings).with_cpu(cpu))
}

async fn next(
    consumer: &rustmq::Consumer,
    name: &str,
    got: u64,
    want: u64,
) -> Result<rustmq::ConsumerMessage, CliError> {
    // Most receives find a buffered message: poll once before arming the stall timer, so the
    // measurement does not pay a timer entry per message.
    let receive = consumer.receive();
    tokio::pin!(receive);
    let received = match futures::poll!(receive.as_mut()) {
        std::task::Poll::Ready(r) => Ok(r),
        std::task::Poll::Pending => tokio::time::timeout(STALL, receive).await,
    };
    match received {
        Ok(Ok(Some(d))) => Ok(d),
        Ok(Ok(None)) => Err(closed(name, got, want)),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(stalled(name, got, want)),
    }
}

fn closed(name: &str, got: u64, want: u64) -> CliError {
    CliError::Failed(format!(
        "{name}: the consumer closed after {got} of {want} messages"
    ))
}

fn stalled(name: &str, got: u64, want: u64) -> CliError {
    CliError::Failed(format!(
        "{name}: no message for {STALL:?} after {got} of {want}"
    ))
}

/// Producer and consumer in this process: `messages` stamped payloads sent one at a time at
/// `rate` per second; latency is receive time minus the time the message counts as sent
/// (from the payload: see [`Stamped::payload`]). Each payload carries its sequence number too,
/// and the reader checks that each comes exactly once.
pub(crate) async fn end_to_end(
    client: &RustMqClient,
    name: &str,
    messages: u64,
    size: usize,
    rate: u64,
    ctx: &Ctx,
) -> Result<Report, CliError> {
    let topic = topic_name(name);
    create_topic(client, ctx, &topic, 1).await?;
    let consumer = ConsumerBuilder::new()
        .topic(&topic)
        .consumer_group(format!("{topic}-reader"))
        .config(ConsumerConfig {
            start_position: StartPosition::Earliest,
            fetch_timeout: Duration::from_secs(1),
            ..ConsumerConfig::default()
        })
        .client(client.clone())
        .build()
        .await?;
    let producer_config = ProducerConfig {
        batch_timeout: Duration::ZERO,
        ..ProducerConfig::default()
    };
    let settings = format!("rate={rate}/s {}", describe_config(&producer_config));
    let producer = ProducerBuilder::new()
        .topic(&topic)
        .client(client.clone())
        .config(producer_config)
        .build()
        .await?;
    let stamp = Stamped::new(size);
    let reader = {
        let (consumer, name) = (consumer.clone(), name.to_owned());
        tokio::spawn(async move {
            let mismatch = |m: Mismatch| CliError::Failed(format!("{name}: {m}"));
            let mut latency = Latency::new();
            let seen = SeqSet::new(messages);
            for got in 0..messages {
                let delivery = next(&consumer, &name, got, messages).await.map_err(|e| {
                    match seen.finish() {
                        // Which ones never came, besides the stall.
                        Err(missing) => CliError::Failed(format!("{e} ({missing})")),
                        Ok(()) => e,
                    }
                })?;
                let payload = &delivery.message.payload;
                let seq = stamp.seq(payload).ok_or_else(|| {
                    CliError::Failed(format!(
                        "{name}: a payload of {} bytes is not one of the run's",
                        payload.len()
                    ))
                })?;
                seen.mark(seq).map_err(mismatch)?;
                if let Some(age) = stamp.age(payload) {
                    latency.record(age);
                }
                delivery.ack().await?;
            }
            seen.finish().map_err(mismatch)?;
            Ok::<_, CliError>(latency)
        })
    };
    let bar = progress::bar(ctx.quiet, Some(messages), name);
    let cpu = ctx.cpu.mark().await;
    let started = tokio::time::Instant::now();
    let pacing = |e: std::io::Error| CliError::Failed(format!("{name}: pacing timer: {e}"));
    let mut pacer = Pacer::start(rate, messages).map_err(pacing)?;
    let topic = TopicName::from(topic);
    let mut seq = 0u64;
    // Each message is stamped with the time it counts as sent, not the time it is made: when
    // the sender falls behind, the pacer hands out the ticks it missed at once, with their
    // due times, and their wait must count in the latency (coordinated omission: see `pace`).
    while let Some(sent) = pacer.tick().await.map_err(pacing)? {
        let message = Message::builder()
            .topic(topic.clone())
            .payload(stamp.payload(sent, seq))
            .build()?;
        producer.send_async(message, None).await?;
        if seq.is_multiple_of(256) {
            bar.set_position(seq);
        }
        seq += 1;
    }
    producer.flush().await?;
    let latency = reader
        .await
        .map_err(|e| CliError::Failed(format!("{name}: reader task failed: {e}")))??;
    let elapsed = started.elapsed();
    let cpu = ctx.cpu.since(&cpu).await;
    bar.finish_and_clear();
    producer.close().await?;
    consumer.close().await?;
    // The size sent: a payload holds at least its stamp.
    let size = stamp.size();
    Ok(Report::new(name, messages, size, 1, elapsed, Some(&latency), settings).with_cpu(cpu))
}
