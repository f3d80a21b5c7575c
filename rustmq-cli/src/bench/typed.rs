//! W7: W1 and W3 through the typed layer. A `#[derive(Topic)]` struct is sent with the typed
//! producer (same producer settings as W1), then read back by a `#[handler]` behind the four
//! layers of the quick start (trace, timeout, retry, dead-letter), run by `Service` exactly as
//! an application runs it.
//!
//! The topic (`bench.typed`, or `bench.typed.postcard` with `--codec postcard`) and the
//! handler's group are fixed by the derive and the attribute, so each run deletes the topic
//! first (the broker forgets the group's offsets with it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustmq::codec::Codec;
use rustmq::prelude::*;
use rustmq::typed::{Handler, HandlerArgs};
use rustmq::{handler, AckLevel, Topic};
use tokio::sync::Notify;

use super::payload::Payloads;
use super::report::Report;
use super::workloads::{backlog_config, describe_config, throughput_config};
use super::Ctx;
use crate::error::CliError;
use crate::progress;

/// Text bytes per event: with the JSON around it, a payload of about W1's 100 bytes.
const BODY_BYTES: usize = 80;
/// Longest wait for the handler to see everything.
const STALL: Duration = Duration::from_secs(60);

/// W7's events and their handlers, one of each per codec: the same fields, read by the same
/// handler body (`#[handler]` functions cannot be generic).
macro_rules! bench_events {
    ($($(#[$doc:meta])* $event:ident, $codec:tt, $topic:tt, $group:tt, $handler:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Default, Serialize, Deserialize, Topic)]
        #[topic(name = $topic, partitions = 1, codec = $codec)]
        pub(crate) struct $event {
            seq: u64,
            body: String,
        }

        impl Event for $event {
            fn parts(&mut self) -> (&mut u64, &mut String) {
                (&mut self.seq, &mut self.body)
            }
        }

        /// The measured handler: counts, and notes when the first and the last event arrived.
        #[handler(group = $group)]
        async fn $handler(event: $event, State(seen): State<Arc<Seen>>) {
            std::hint::black_box(&event);
            seen.saw();
        }
    )*};
}

bench_events! {
    /// What W7 sends by default: a sequence number and a random alphanumeric body, as JSON.
    JsonEvent, "json", "bench.typed", "bench.typed.reader", count_json;
    /// The same event as postcard (`--codec postcard`).
    PostcardEvent, "postcard", "bench.typed.postcard", "bench.typed.postcard.reader", count_postcard;
}

/// A W7 event, whatever its codec.
trait Event: Topic + Default {
    /// Its sequence number and body, to refill between sends.
    fn parts(&mut self) -> (&mut u64, &mut String);
}

/// The codec of W7's events (`--codec`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchCodec {
    /// serde_json, the typed layer's default.
    #[default]
    Json,
    /// postcard, a compact binary codec built in.
    Postcard,
}

/// What the handler saw, shared through `State` (one `Arc`: the state is cloned per message).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    count: AtomicU64,
    first: OnceLock<Instant>,
    last: OnceLock<Instant>,
    target: AtomicU64,
    done: Notify,
}

impl Seen {
    fn saw(&self) {
        self.first.get_or_init(Instant::now);
        let n = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.target.load(Ordering::Acquire) {
            self.last.get_or_init(Instant::now);
            self.done.notify_one();
        }
    }
}

/// Runs W7 with `messages` events: one report for the typed produce, one for the handler.
pub(crate) async fn run(
    client: &RustMqClient,
    messages: u64,
    codec: BenchCodec,
    ctx: &Ctx,
) -> Result<(Report, Report), CliError> {
    match codec {
        BenchCodec::Json => run_with::<JsonEvent, _, _>(client, messages, count_json, ctx).await,
        BenchCodec::Postcard => {
            run_with::<PostcardEvent, _, _>(client, messages, count_postcard, ctx).await
        }
    }
}

async fn run_with<E, H, M>(
    client: &RustMqClient,
    messages: u64,
    handler: H,
    ctx: &Ctx,
) -> Result<(Report, Report), CliError>
where
    E: Event,
    H: Handler<M, Arc<Seen>>,
    M: HandlerArgs + 'static,
{
    match client.delete_topic(E::NAME).await {
        Ok(()) | Err(ClientError::TopicNotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    client.create_topic(E::NAME, 1).await?;
    let produced = produce::<E>(client, messages, ctx).await?;
    let consumed = consume(client, messages, produced.payload_bytes, handler, ctx).await?;
    Ok((produced, consumed))
}

async fn produce<E: Event>(
    client: &RustMqClient,
    messages: u64,
    ctx: &Ctx,
) -> Result<Report, CliError> {
    let config = throughput_config(AckLevel::Leader);
    let settings = format!(
        "typed {} producer; {}",
        <E::Codec as Codec>::NAME,
        describe_config(&config)
    );
    let producer = client.producer_with_config::<E>(config);
    // Bodies are generated outside the timed loop, as W1's payloads are.
    let mut bodies = Payloads::new(BODY_BYTES);
    let bodies: Vec<String> = (0..1024)
        .map(|_| String::from_utf8_lossy(&bodies.next()).into_owned())
        .collect();
    let bar = progress::bar(ctx.quiet, Some(messages), "W7-produce");
    let mut event = E::default();
    let cpu = ctx.cpu.mark().await;
    let started = Instant::now();
    for seq in 0..messages {
        let (event_seq, body) = event.parts();
        *event_seq = seq;
        body.clone_from(&bodies[seq as usize % bodies.len()]);
        producer.send_async(&event).await?;
        if seq % 1024 == 0 {
            bar.set_position(seq);
        }
    }
    producer.flush().await?;
    let elapsed = started.elapsed();
    let cpu = ctx.cpu.since(&cpu).await;
    bar.finish_and_clear();
    // The size of the first event (seq 0): 99 bytes of JSON, 82 of postcard; later ones carry
    // more digits (JSON) or a longer varint (postcard).
    *event.parts().0 = 0;
    let payload = <E::Codec as Codec>::encode(&event).map_or(0, |v| v.len());
    Ok(Report::new("W7-produce", messages, payload, 1, elapsed, None, settings).with_cpu(cpu))
}

async fn consume<H, M>(
    client: &RustMqClient,
    messages: u64,
    payload_bytes: usize,
    handler: H,
    ctx: &Ctx,
) -> Result<Report, CliError>
where
    H: Handler<M, Arc<Seen>>,
    M: HandlerArgs + 'static,
{
    let seen = Arc::new(Seen::default());
    seen.target.store(messages, Ordering::Release);
    let config = backlog_config();
    let settings = format!(
        "#[handler] behind trace+timeout+retry+dead-letter; fetch_size={} max_buffered_messages_per_partition={} max_buffered_bytes_per_partition={}",
        config.fetch_size,
        config.max_buffered_messages_per_partition,
        config.max_buffered_bytes_per_partition
    );
    let bar = progress::bar(ctx.quiet, Some(messages), "W7-consume");
    // The handler's run is timed from its first event to its last; the CPU clocks are read
    // from before the service starts (its group join too, a small part of a run) to when the
    // last event is handled, before the shutdown.
    let cpu = ctx.cpu.mark().await;
    let running = Service::with_state(client.clone(), seen.clone())
        .consumer_config(config)
        .layer(TraceLayer::new())
        .layer(TimeoutLayer::new(Duration::from_secs(5)))
        .layer(RetryLayer::exponential(3, Duration::from_millis(100)))
        .layer(DeadLetterLayer::default())
        .handler(handler)
        .start()
        .await?;
    let deadline = tokio::time::Instant::now() + STALL;
    while seen.count.load(Ordering::Acquire) < messages {
        let done = seen.done.notified();
        tokio::select! {
            _ = done => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = tokio::time::sleep_until(deadline) => {
                let got = seen.count.load(Ordering::Acquire);
                running.shutdown().await?;
                return Err(CliError::Failed(format!(
                    "W7-consume: the handler saw {got} of {messages} events in {STALL:?}"
                )));
            }
        }
        bar.set_position(seen.count.load(Ordering::Acquire));
    }
    let cpu = ctx.cpu.since(&cpu).await;
    bar.finish_and_clear();
    running.shutdown().await?;
    // From the first event handled to the last (W3 likewise starts after the group join).
    let elapsed = match (seen.first.get(), seen.last.get()) {
        (Some(first), Some(last)) => last.duration_since(*first),
        _ => Duration::ZERO,
    };
    Ok(Report::new(
        "W7-consume",
        messages,
        payload_bytes,
        1,
        elapsed,
        None,
        settings,
    )
    .with_cpu(cpu))
}
