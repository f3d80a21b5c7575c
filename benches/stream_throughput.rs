//! Stream throughput of an identity processor against the embedded broker over QUIC on
//! 127.0.0.1: 1,000,000 inputs of 100 B on 4 partitions, in individual and batch (500 / 50 ms)
//! modes, at least once and exactly once.
//!
//! ```text
//! cargo bench -p benches --bench stream_throughput            # 1,000,000 messages
//! cargo bench -p benches --bench stream_throughput -- 100000  # scaled down
//! ```
//!
//! The inputs are produced before the clock starts; the time is from `start()` until every
//! output is acknowledged. Prints one JSON line per case.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustmq::stream::{MessageProcessor, MessageStream, StreamConfig, StreamMode};
use rustmq::testing::TestBroker;
use rustmq::{async_trait, AckLevel, Message, ProducerBuilder, ProducerConfig, Result};

struct Identity;

#[async_trait]
impl MessageProcessor for Identity {
    async fn process(&self, m: &Message) -> Result<Option<Message>> {
        Ok(Some(m.clone()))
    }
}

async fn case(messages: usize, mode: StreamMode, exactly_once: bool) {
    let broker = TestBroker::start().await.expect("broker");
    let client = broker.client().await.expect("client");
    client.create_topic("in", 4).await.expect("topic");
    client.create_topic("out", 4).await.expect("topic");
    let producer = ProducerBuilder::new()
        .topic("in")
        .config(ProducerConfig {
            batch_size: 16_384,
            ack_level: AckLevel::Leader,
            buffer_memory: 64 << 20,
            ..ProducerConfig::default()
        })
        .client(client.clone())
        .build()
        .await
        .expect("producer");
    let payload = bytes::Bytes::from(vec![b'x'; 100]);
    for i in 0..messages {
        let m = Message::builder()
            .topic("in")
            .partition((i % 4) as u32)
            .payload(payload.clone())
            .build()
            .expect("message");
        producer.send_async(m, None).await.expect("send");
    }
    producer.flush().await.expect("flush");
    let label = match &mode {
        StreamMode::Individual => "individual",
        StreamMode::Batch { .. } => "batch",
        StreamMode::Windowed { .. } => "windowed",
    };
    let config = StreamConfig {
        input_topics: vec!["in".into()],
        output_topic: Some("out".into()),
        consumer_group: "bench".into(),
        parallelism: 4,
        max_in_flight: 20_000,
        exactly_once,
        mode,
        ..Default::default()
    };
    let stream = MessageStream::new(client.clone(), config)
        .await
        .expect("stream")
        .with_processor(Identity);
    let started = Instant::now();
    stream.start().await.expect("start");
    let metrics = stream.metrics().await;
    while (metrics.outputs_produced.load(Ordering::Relaxed) as usize) < messages {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    stream.stop().await.expect("stop");
    println!(
        "{{\"mode\":\"{label}\",\"exactly_once\":{exactly_once},\"messages\":{messages},\"seconds\":{:.3},\"msgs_per_sec\":{:.0}}}",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64()
    );
}

fn main() {
    let messages = benches::messages_arg(1_000_000);
    let runtime = benches::runtime();
    for exactly_once in [false, true] {
        runtime.block_on(case(messages, StreamMode::Individual, exactly_once));
        let batch = StreamMode::Batch {
            batch_size: 500,
            batch_timeout: Duration::from_millis(50),
        };
        runtime.block_on(case(messages, batch, exactly_once));
    }
}
