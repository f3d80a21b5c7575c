//! Helpers shared by the consumer and group integration tests (`mod consumer_support;`).

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::Duration;

use rustmq::consumer::{Consumer, ConsumerConfig, ConsumerMessage};
use rustmq::protocol::{Acks, Compression};
use rustmq::RustMqClient;
use tests::{batch, produce, TestRecord};

/// Longest any single awaited event may take before the test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Fast group timing for tests: 100 ms heartbeats, 1 s session, short fetch waits and
/// retries.
pub fn config(group: &str) -> ConsumerConfig {
    ConsumerConfig {
        consumer_group: group.to_string(),
        enable_auto_commit: false,
        fetch_timeout: Duration::from_millis(200),
        session_timeout: Duration::from_secs(1),
        heartbeat_interval: Duration::from_millis(100),
        rebalance_timeout: Duration::from_secs(5),
        retry_backoff: Duration::from_millis(50),
        ..Default::default()
    }
}

/// A consumer of `topic` in `group` with the test timing of [`config`], fetching at most
/// `fetch_size` records at a time and buffering at most `cap` per partition.
pub async fn consumer_with_fetches(
    client: &RustMqClient,
    topic: &str,
    group: &str,
    fetch_size: usize,
    cap: usize,
) -> Consumer {
    let config = ConsumerConfig {
        fetch_size,
        max_buffered_messages_per_partition: cap,
        ..config(group)
    };
    client
        .create_consumer_with_config(topic, group, config)
        .await
        .expect("consumer")
}

/// The value of record `i` of `partition`.
pub fn value(partition: u32, i: u64) -> String {
    format!("p{partition}-{i}")
}

/// Produces records `from..to` (values from [`value`]) to `partition`, timestamps
/// `ts(i)`, in batches of at most 1000.
pub async fn produce_range(
    client: &RustMqClient,
    topic: &str,
    partition: u32,
    from: u64,
    to: u64,
    ts: impl Fn(u64) -> i64,
) {
    produce_batched(client, topic, partition, from..to, 1000, ts, |_| {
        Compression::None
    })
    .await;
}

/// Produces records `range` (values from [`value`]) to `partition`, timestamps `ts(i)`, in
/// batches of `per_batch` records, the batch starting at record `i` compressed with `codec(i)`.
pub async fn produce_batched(
    client: &RustMqClient,
    topic: &str,
    partition: u32,
    range: std::ops::Range<u64>,
    per_batch: u64,
    ts: impl Fn(u64) -> i64,
    codec: impl Fn(u64) -> Compression,
) {
    let mut i = range.start;
    while i < range.end {
        let end = (i + per_batch).min(range.end);
        let records: Vec<TestRecord> = (i..end)
            .map(|j| TestRecord::new(value(partition, j).into_bytes(), ts(j)))
            .collect();
        let ack = produce(
            client,
            topic,
            partition,
            batch(&records, codec(i)),
            Acks::Leader,
        )
        .await
        .expect("produce");
        assert_eq!(ack.base_offset, i, "records land at the expected offsets");
        i = end;
    }
}

/// Produces `n` records (offsets from 0 if the partition is empty) with the current time.
pub async fn produce_n(client: &RustMqClient, topic: &str, partition: u32, from: u64, n: u64) {
    let now = rustmq::message::now_ms() as i64;
    produce_range(client, topic, partition, from, from + n, |_| now).await;
}

/// Awaits `fut`, failing the test if it takes longer than [`EVENT_TIMEOUT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(EVENT_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The next message (fails the test after [`EVENT_TIMEOUT`] or on an error or close).
pub async fn recv(consumer: &Consumer) -> ConsumerMessage {
    within("a message", consumer.receive())
        .await
        .expect("receive")
        .expect("consumer open")
}

/// Receives and acks `n` messages; returns `(partition, offset)` of each.
pub async fn recv_ack(consumer: &Consumer, n: usize) -> Vec<(u32, u64)> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let m = recv(consumer).await;
        got.push((m.message.partition, m.message.offset));
        m.ack().await.expect("ack");
    }
    got
}

/// Polls `cond` every 10 ms until it holds (for state that has no event to await, such as
/// another member's view of a rebalance); fails after [`EVENT_TIMEOUT`].
pub async fn eventually<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    within(what, async {
        while !cond().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// No message arrives within `window` (for "nothing from a paused partition").
pub async fn nothing_within(consumer: &Consumer, window: Duration) {
    if let Ok(result) = tokio::time::timeout(window, consumer.receive()).await {
        let m = result.expect("receive").expect("open");
        panic!(
            "expected no message, got partition {} offset {}",
            m.message.partition, m.message.offset
        );
    }
}

/// Restarts the broker on the same port and data directory (within [`EVENT_TIMEOUT`]).
pub async fn restart(broker: &mut rustmq::testing::TestBroker) {
    within("the broker to restart", broker.restart())
        .await
        .unwrap_or_else(|e| panic!("restart failed: {e}"))
}
