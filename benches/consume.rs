//! Consumer throughput and end-to-end latency against the embedded broker over QUIC on
//! 127.0.0.1:
//!
//! - `consume`: 1,000,000 messages of 100 B (one partition, stored beforehand in batches of
//!   1,000) consumed from the earliest offset with `receive()` + `ack()`;
//! - `latency`: produce -> receive at a steady 2,000 msgs/s for 10 s (p50/p99/max).
//!
//! ```text
//! cargo bench -p benches --bench consume               # both workloads
//! cargo bench -p benches --bench consume -- 100000     # scaled down (messages of the first)
//! ```
//!
//! Prints one JSON line per workload. Consumer settings: `fetch_size` 5,000,
//! `max_buffered_messages_per_partition` 10,000, auto-commit every 5 s.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustmq::protocol::{Acks, ProduceRequest, RecordBatchBuilder, Request, Response};
use rustmq::testing::TestBroker;
use rustmq::{ConsumerConfig, Message, ProducerConfig, RustMqClient, StartPosition};

fn consumer_config(group: &str) -> ConsumerConfig {
    ConsumerConfig {
        consumer_group: group.to_string(),
        fetch_size: 5_000,
        max_buffered_messages_per_partition: 10_000,
        start_position: StartPosition::Earliest,
        ..ConsumerConfig::default()
    }
}

/// Stores `messages` records of `size` bytes in batches of 1,000 (raw produce requests, so
/// that only the consumer is timed).
async fn fill(client: &RustMqClient, topic: &str, messages: usize, size: usize) {
    let payload = vec![b'x'; size];
    let mut left = messages;
    while left > 0 {
        let n = left.min(1_000);
        let mut batch = RecordBatchBuilder::new();
        for _ in 0..n {
            batch.push(
                1_700_000_000_000,
                None,
                Some(&payload),
                std::iter::empty::<(&str, &[u8])>(),
            );
        }
        let request = Request::Produce(ProduceRequest {
            topic: topic.into(),
            partition: 0,
            acks: Acks::Leader,
            timeout_ms: 30_000,
            batch: batch.build().expect("batch"),
        });
        match client.raw_request(request).await.expect("produce") {
            Response::Produce(_) => {}
            other => panic!("unexpected answer {other:?}"),
        }
        left -= n;
    }
}

async fn throughput(messages: usize) {
    let broker = TestBroker::start().await.expect("broker");
    let client = broker.client().await.expect("client");
    client.create_topic("consume", 1).await.expect("topic");
    fill(&client, "consume", messages, 100).await;
    let consumer = client
        .create_consumer_with_config("consume", "bench", consumer_config("bench"))
        .await
        .expect("consumer");
    let start = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..messages {
        let m = consumer.receive().await.expect("receive").expect("open");
        bytes += m.message.payload.len();
        m.ack().await.expect("ack");
    }
    let secs = start.elapsed().as_secs_f64();
    let received = consumer
        .metrics()
        .await
        .messages_received
        .load(Ordering::Relaxed);
    assert_eq!(received as usize, messages);
    println!(
        "{{\"workload\":\"consume\",\"messages\":{messages},\"payload_bytes\":100,\"partitions\":1,\"secs\":{secs:.3},\"msgs_per_s\":{:.0},\"mb_per_s\":{:.1}}}",
        messages as f64 / secs,
        bytes as f64 / secs / 1e6,
    );
    consumer.close().await.expect("close");
}

async fn latency(rate: u64, secs: u64) {
    let broker = TestBroker::start().await.expect("broker");
    let client = broker.client().await.expect("client");
    client.create_topic("latency", 1).await.expect("topic");
    let consumer = client
        .create_consumer_with_config("latency", "bench", consumer_config("bench"))
        .await
        .expect("consumer");
    let producer = rustmq::ProducerBuilder::new()
        .topic("latency")
        .config(ProducerConfig::default())
        .client(client.clone())
        .build()
        .await
        .expect("producer");
    let origin = Instant::now();
    let total = rate * secs;
    let sender = tokio::spawn(async move {
        // Ticks of 1 ms (tokio's timer resolution), rate / 1000 messages each.
        let per_tick = (rate / 1000).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut sent = 0;
        while sent < total {
            tick.tick().await;
            for _ in 0..per_tick.min(total - sent) {
                let at = origin.elapsed().as_micros().to_string();
                let message = Message::builder()
                    .topic("latency")
                    .payload(vec![b'x'; 100])
                    .header("sent-us", at)
                    .build()
                    .expect("message");
                producer.send_async(message, None).await.expect("send");
                sent += 1;
            }
        }
        producer.flush().await.expect("flush");
        producer
    });
    let mut samples = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let m = consumer.receive().await.expect("receive").expect("open");
        let sent: u128 = m.message.headers["sent-us"].parse().expect("header");
        samples.push((origin.elapsed().as_micros() - sent) as u64);
        m.ack().await.expect("ack");
    }
    let producer = sender.await.expect("sender");
    samples.sort_unstable();
    let pct = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    println!(
        "{{\"workload\":\"latency\",\"rate_per_s\":{rate},\"messages\":{total},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
    producer.close().await.expect("close");
    consumer.close().await.expect("close");
}

fn main() {
    let messages = benches::messages_arg(1_000_000);
    let rt = benches::runtime();
    rt.block_on(async {
        throughput(messages).await;
        latency(2_000, 10).await;
    });
}
