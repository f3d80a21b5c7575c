//! W7: W1 and W3 through the typed layer. A `#[derive(Topic)]` struct is sent with the typed
//! producer (same producer settings as W1), then read back by a `#[handler]` behind the four
//! layers of the quick start (trace, timeout, retry, dead-letter), run by `Service` exactly as
//! an application runs it.
//!
//! The topic (`bench.typed`, or `bench.typed.postcard` with `--codec postcard`) and the
//! handler's group are fixed by the derive and the attribute (a `Topic`'s name is a constant
//! of its type: the typed layer has no way to send one to another topic), so each run deletes
//! the topic first (the broker forgets the group's offsets with it), and two runs at once
//! against one broker get in each other's way.
//!
//! The handler checks off each event's `seq`: the run fails if one comes twice, and waits for
//! every one (failing when none new came for [`STALL`]).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustmq::codec::Codec;
use rustmq::prelude::*;
use rustmq::typed::{Handler, HandlerArgs, TopicInfo};
use rustmq::{handler, AckLevel, Topic};
use tokio::sync::Notify;

use super::check::{Mismatch, SeqSet};
use super::payload::Payloads;
use super::report::Report;
use super::workloads::{backlog_config, describe_config, throughput_config};
use super::Ctx;
use crate::error::CliError;
use crate::progress;

/// Text bytes per event: with the JSON around it, a payload of about W1's 100 bytes.
const BODY_BYTES: usize = 80;
/// Longest wait for the handler to see an event it had not seen (reset by each one).
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

        /// The measured handler: checks the event off (the last one notes when it arrived).
        #[handler(group = $group)]
        async fn $handler(event: $event, State(seen): State<Arc<Seen>>) {
            std::hint::black_box(&event);
            seen.saw(event.seq);
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
#[derive(Debug)]
pub(crate) struct Seen {
    /// Each event's `seq`, checked off.
    seqs: SeqSet,
    /// The first event that was not new (a repeat, or a `seq` never sent).
    wrong: OnceLock<Mismatch>,
    last: OnceLock<Instant>,
    /// Events to see.
    target: u64,
    done: Notify,
}

impl Seen {
    fn new(target: u64) -> Self {
        Self {
            seqs: SeqSet::new(target),
            wrong: OnceLock::new(),
            last: OnceLock::new(),
            target,
            done: Notify::new(),
        }
    }

    fn saw(&self, seq: u64) {
        match self.seqs.mark(seq) {
            Ok(n) if n == self.target => {
                self.last.get_or_init(Instant::now);
                self.done.notify_one();
            }
            Ok(_) => {}
            Err(wrong) => {
                let _ = self.wrong.set(wrong);
                self.done.notify_one();
            }
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
    // Deleted when the run ends, with its dead-letter topic should the run have made it (a
    // dead letter of the run would have): one there before is not the run's to delete.
    ctx.created.add(E::NAME);
    let dead_letter = TopicInfo::of::<E>().dead_letter;
    match client.describe_topic(&dead_letter).await {
        Err(ClientError::TopicNotFound(_)) => ctx.created.add(&dead_letter),
        Ok(_) => {}
        Err(e) => return Err(e.into()),
    }
    match client.delete_topic(E::NAME).await {
        Ok(()) | Err(ClientError::TopicNotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    client.create_topic(E::NAME, 1).await?;
    let (produced, bytes) = produce::<E>(client, messages, ctx).await?;
    let consumed = consume(client, messages, bytes, handler, ctx).await?;
    Ok((produced, consumed))
}

/// The typed produce run; also returns the bytes of all the events as encoded.
async fn produce<E: Event>(
    client: &RustMqClient,
    messages: u64,
    ctx: &Ctx,
) -> Result<(Report, u64), CliError> {
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
    // Events grow with their `seq` (99 bytes of JSON at seq 0, up to 104 below 10^6; 82 of
    // postcard, up to 84 below seq 2,097,152 and 85 from it): the throughput counts the bytes
    // of every one.
    let bytes = encoded_bytes(&mut event, messages);
    let report =
        Report::with_total_bytes("W7-produce", messages, bytes, 1, elapsed, settings).with_cpu(cpu);
    Ok((report, bytes))
}

/// The bytes of the events `0..messages` as encoded, every body of one length (`event`'s).
/// An event's size depends only on its `seq`, and grows with it (more digits in JSON, a
/// longer varint in postcard): each run of equal sizes is found by a binary search, rather
/// than by encoding a million events again.
fn encoded_bytes<E: Event>(event: &mut E, messages: u64) -> u64 {
    let mut size = |seq: u64| {
        *event.parts().0 = seq;
        <E::Codec as Codec>::encode(&*event).map_or(0, |v| v.len() as u64)
    };
    let (mut total, mut from) = (0u64, 0u64);
    while from < messages {
        let bytes = size(from);
        // The last `seq` of the run of events of this size: `lo` always has it.
        let (mut lo, mut hi) = (from, messages - 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if size(mid) == bytes {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        total += (lo - from + 1) * bytes;
        from = lo + 1;
    }
    total
}

async fn consume<H, M>(
    client: &RustMqClient,
    messages: u64,
    total_bytes: u64,
    handler: H,
    ctx: &Ctx,
) -> Result<Report, CliError>
where
    H: Handler<M, Arc<Seen>>,
    M: HandlerArgs + 'static,
{
    let seen = Arc::new(Seen::new(messages));
    let config = backlog_config();
    let settings = format!(
        "#[handler] behind trace+timeout+retry+dead-letter; fetch_size={} max_buffered_messages_per_partition={} max_buffered_bytes_per_partition={}",
        config.fetch_size,
        config.max_buffered_messages_per_partition,
        config.max_buffered_bytes_per_partition
    );
    let bar = progress::bar(ctx.quiet, Some(messages), "W7-consume");
    // The handler's run is timed from when the service has started (its group joined: W3
    // likewise from when its consumer has joined) to its last event; the CPU clocks are read
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
    let started = Instant::now();
    // A stall limit, not a limit on the whole run: each new event gives the handler another
    // `STALL` (as W3's receives each get one), so a large run on a slow machine is not cut
    // short while it is progressing.
    let mut stall = Stall::new(tokio::time::Instant::now());
    // A mismatch is the answer, whatever the shutdown after it gives.
    let mismatch = |wrong: &Mismatch| CliError::Failed(format!("W7-consume: {wrong}"));
    loop {
        if let Some(wrong) = seen.wrong.get() {
            let _ = running.shutdown().await;
            return Err(mismatch(wrong));
        }
        let count = seen.seqs.seen();
        if count >= messages {
            break;
        }
        let deadline = stall.deadline(count, tokio::time::Instant::now());
        let done = seen.done.notified();
        tokio::select! {
            _ = done => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = tokio::time::sleep_until(deadline) => {
                let missing = seen.seqs.finish().err();
                running.shutdown().await?;
                let missing = missing.map(|m| format!(": {m}")).unwrap_or_default();
                return Err(CliError::Failed(format!(
                    "W7-consume: no new event for {STALL:?} after {count} of {messages}{missing}"
                )));
            }
        }
        bar.set_position(seen.seqs.seen());
    }
    let cpu = ctx.cpu.since(&cpu).await;
    bar.finish_and_clear();
    let stopped = running.shutdown().await;
    // An event handled again while the last ones were (or while the service stopped).
    if let Some(wrong) = seen.wrong.get() {
        return Err(mismatch(wrong));
    }
    stopped?;
    let elapsed = seen
        .last
        .get()
        .map_or(Duration::ZERO, |last| last.duration_since(started));
    Ok(
        Report::with_total_bytes("W7-consume", messages, total_bytes, 1, elapsed, settings)
            .with_cpu(cpu),
    )
}

/// When a wait for progress gives up: [`STALL`] after the count last moved.
#[derive(Debug, Clone, Copy)]
struct Stall {
    count: u64,
    deadline: tokio::time::Instant,
}

impl Stall {
    fn new(now: tokio::time::Instant) -> Self {
        Self {
            count: 0,
            deadline: now + STALL,
        }
    }

    /// The deadline, `count` being the progress so far: moved to `now + STALL` if it grew.
    fn deadline(&mut self, count: u64, now: tokio::time::Instant) -> tokio::time::Instant {
        if count > self.count {
            self.count = count;
            self.deadline = now + STALL;
        }
        self.deadline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stall limit starts again each time the handler gets further, and only then.
    #[test]
    fn the_stall_limit_is_reset_by_progress() {
        let start = tokio::time::Instant::now();
        let mut stall = Stall::new(start);
        assert_eq!(stall.deadline(0, start + STALL / 2), start + STALL);
        let later = start + STALL - Duration::from_secs(1);
        assert_eq!(stall.deadline(5, later), later + STALL);
        assert_eq!(stall.deadline(5, later + STALL / 2), later + STALL);
    }

    /// The bytes of every event, found run by run, are what encoding each one gives.
    #[test]
    fn encoded_bytes_sum_every_event() {
        fn brute<E: Event>(n: u64) -> u64 {
            let mut e = E::default();
            e.parts().1.push_str(&"b".repeat(BODY_BYTES));
            (0..n)
                .map(|seq| {
                    *e.parts().0 = seq;
                    <E::Codec as Codec>::encode(&e).unwrap().len() as u64
                })
                .sum()
        }
        fn fast<E: Event>(n: u64) -> u64 {
            let mut e = E::default();
            e.parts().1.push_str(&"b".repeat(BODY_BYTES));
            encoded_bytes(&mut e, n)
        }
        for n in [0, 1, 9, 10, 11, 127, 128, 2_000, 20_000] {
            assert_eq!(fast::<JsonEvent>(n), brute::<JsonEvent>(n), "json {n}");
            assert_eq!(
                fast::<PostcardEvent>(n),
                brute::<PostcardEvent>(n),
                "postcard {n}"
            );
        }
        // seq 0..10 at 99 bytes, 10..100 at 100, 100..1000 at 101, 1000..2000 at 102.
        assert_eq!(
            fast::<JsonEvent>(2_000),
            10 * 99 + 90 * 100 + 900 * 101 + 1000 * 102
        );
        // The default run: up to 104 bytes (seq 100,000 and on), 103.9 on average.
        assert_eq!(fast::<JsonEvent>(1_000_000), 103_888_890);
    }
}
