//! Producer throughput against the embedded broker over QUIC on 127.0.0.1, acks=Leader:
//! 1,000,000 messages of 100 B to 1 partition, and 200,000 of 1 KiB to 8 partitions.
//!
//! ```text
//! cargo bench -p benches --bench produce                 # both workloads
//! cargo bench -p benches --bench produce -- 100000      # scaled down (messages of the first)
//! ```
//!
//! Prints one JSON line per workload. Producer settings: batch_size 16,384 messages,
//! batch_max_bytes 1 MiB, linger 0 (batches form while the previous request is in flight),
//! no compression (random payloads do not compress), buffer 64 MiB.

use std::time::Instant;

use rustmq::testing::TestBroker;
use rustmq::{AckLevel, Message, ProducerBuilder, ProducerConfig};

fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = xorshift(seed);
    (0..len)
        .map(|_| {
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[(rng() % 62) as usize]
        })
        .collect()
}

fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

async fn run(name: &str, messages: usize, size: usize, partitions: u32) {
    let broker = TestBroker::start().await.expect("broker");
    let client = broker.client().await.expect("client");
    client.create_topic(name, partitions).await.expect("topic");
    let config = ProducerConfig {
        batch_size: 16_384,
        batch_max_bytes: 1024 * 1024,
        ack_level: AckLevel::Leader,
        buffer_memory: 64 * 1024 * 1024,
        ..ProducerConfig::default()
    };
    let producer = ProducerBuilder::new()
        .topic(name)
        .config(config)
        .client(client.clone())
        .build()
        .await
        .expect("producer");
    // Payloads are made up front so that the timing covers the producer only.
    let bodies: Vec<bytes::Bytes> = (0..1024)
        .map(|i| bytes::Bytes::from(payload(size, i + 1)))
        .collect();
    let start = Instant::now();
    for i in 0..messages {
        let mut builder = Message::builder()
            .topic(name)
            .payload(bodies[i % bodies.len()].clone());
        if partitions > 1 {
            builder = builder.partition((i % partitions as usize) as u32);
        }
        producer
            .send_async(builder.build().expect("message"), None)
            .await
            .expect("send");
    }
    producer.flush().await.expect("flush");
    let secs = start.elapsed().as_secs_f64();
    let metrics = producer.metrics().await;
    let sent = metrics
        .messages_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent as usize, messages, "every message acknowledged");
    println!(
        "{{\"workload\":\"{name}\",\"messages\":{messages},\"payload_bytes\":{size},\"partitions\":{partitions},\"secs\":{secs:.3},\"msgs_per_s\":{:.0},\"mb_per_s\":{:.1},\"batches\":{}}}",
        messages as f64 / secs,
        (messages * size) as f64 / secs / 1e6,
        metrics.batches_sent.load(std::sync::atomic::Ordering::Relaxed),
    );
    producer.close().await.expect("close");
}

fn main() {
    let first = benches::messages_arg(1_000_000);
    let rt = benches::runtime();
    rt.block_on(async {
        run("produce-100b-1p", first, 100, 1).await;
        run("produce-1k-8p", first / 5, 1024, 8).await;
    });
}
