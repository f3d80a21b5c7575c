//! A consumer's memory in front of a backlog of large messages: what its buffer bounds.
//!
//! ```text
//! cargo build --release -p benches --example consumer_backlog
//! target/release/rustmq broker --data-dir D --listen 127.0.0.1:19092 &
//! target/release/examples/consumer_backlog produce 127.0.0.1:19092 D/tls/cert.pem [MESSAGES] [SIZE]
//! target/release/examples/consumer_backlog consume 127.0.0.1:19092 D/tls/cert.pem [BYTES]
//! target/release/examples/consumer_backlog stream 127.0.0.1:19092 D/tls/cert.pem [BYTES]
//! ```
//!
//! The broker runs in its own process, so that this one's memory is the consumer's.
//! `produce` writes MESSAGES messages (default 1,000) of SIZE bytes (default 1 MiB) to the
//! topic `backlog` (made with one partition), one batch each. `consume` reads them from the
//! earliest offset with the default consumer settings (and `max_buffered_bytes_per_partition`
//! of BYTES, when given), receives one message, waits until the consumer's buffer stops
//! growing, and prints one JSON line: what the buffer holds and the process's resident memory
//! (`VmRSS`, `VmHWM`) before and after; then it receives every other message and checks that
//! they all arrive, in order (the partition's lag at the start is the count).
//!
//! `stream` reads them with a `MessageStream` (default settings, and
//! `with_max_in_flight_bytes(BYTES)`, when given) whose processor holds the first message,
//! waits until what is in flight stops growing, and prints one JSON line: the stream's
//! in-flight gauges and the process's resident memory.
//!
//! Run each case in its own process: the high-water mark is the process's.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use benches::memory;

use rustmq::stream::{MessageProcessor, MessageStream, StreamConfig, StreamMode};
use rustmq::{
    async_trait, ClientConfig, ConsumerConfig, Message, RustMqClient, StartPosition, TlsConfig,
};

const TOPIC: &str = "backlog";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, broker, ca_cert, rest @ ..] = args.as_slice() else {
        eprintln!("usage: consumer_backlog produce|consume|stream BROKER CA_CERT [...]");
        std::process::exit(2);
    };
    let number = |i: usize, default: usize| {
        rest.get(i)
            .map(|a| a.parse().expect("a number"))
            .unwrap_or(default)
    };
    let config = ClientConfig {
        brokers: vec![broker.clone()],
        tls_config: Some(TlsConfig {
            ca_cert: Some(ca_cert.clone()),
            ..TlsConfig::default()
        }),
        ..ClientConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let client = RustMqClient::new(config).await.expect("client");
        match mode.as_str() {
            "produce" => produce(&client, number(0, 1_000), number(1, 1 << 20)).await,
            "consume" => consume(&client, rest.first().map(|_| number(0, 0))).await,
            "stream" => stream(&client, rest.first().map(|_| number(0, 0))).await,
            other => {
                eprintln!("unknown mode {other}: produce, consume or stream");
                std::process::exit(2);
            }
        }
    });
}

async fn produce(client: &RustMqClient, messages: usize, size: usize) {
    client.create_topic(TOPIC, 1).await.expect("topic");
    let producer = client.create_producer(TOPIC).await.expect("producer");
    for i in 0..messages {
        let mut payload = vec![b'x'; size];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let message = Message::builder()
            .topic(TOPIC)
            .payload(payload)
            .build()
            .expect("message");
        producer.send(message).await.expect("send");
    }
    producer.close().await.expect("close");
    println!("{{\"produced\":{messages},\"size\":{size}}}");
}

async fn consume(client: &RustMqClient, bytes: Option<usize>) {
    let mut config = ConsumerConfig {
        consumer_group: format!("backlog-{}", std::process::id()),
        start_position: StartPosition::Earliest,
        ..ConsumerConfig::default()
    };
    if let Some(bytes) = bytes {
        config.max_buffered_bytes_per_partition = bytes;
    }
    let before = memory();
    let consumer = client
        .create_consumer_with_config(TOPIC, &config.consumer_group.clone(), config.clone())
        .await
        .expect("consumer");
    let total: u64 = consumer.get_lag().await.expect("lag").values().sum();
    let first = consumer.receive().await.expect("receive").expect("open");
    assert_eq!(
        index(&first.message.payload),
        0,
        "the backlog starts at message 0"
    );
    let mut seen = 1u64;
    first.ack().await.expect("ack");
    // The buffer fills in the background: wait until it has not grown for a second.
    let mut last = (consumer.buffered_messages(), consumer.buffered_bytes());
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = (consumer.buffered_messages(), consumer.buffered_bytes());
        if now == last {
            break;
        }
        last = now;
    }
    let after = memory();
    println!(
        "{{\"max_buffered_messages_per_partition\":{},\"max_buffered_bytes_per_partition\":{},\"buffered_messages\":{},\"buffered_bytes\":{},\"rss_before_kib\":{},\"rss_after_kib\":{},\"hwm_kib\":{}}}",
        config.max_buffered_messages_per_partition,
        config.max_buffered_bytes_per_partition,
        last.0,
        last.1,
        before.0,
        after.0,
        after.1,
    );
    // Nothing is lost: every message arrives, in order.
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), consumer.receive()).await;
        let Ok(Ok(Some(m))) = next else { break };
        assert_eq!(index(&m.message.payload), seen, "messages arrive in order");
        seen += 1;
        m.ack().await.expect("ack");
    }
    assert_eq!(seen, total, "every message of the backlog arrives");
    eprintln!("received {seen} messages");
    consumer.close().await.expect("close");
}

/// The index a produced payload starts with.
fn index(payload: &[u8]) -> u64 {
    u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"))
}

/// Holds every message until let through.
struct Hold(Arc<tokio::sync::Semaphore>);

#[async_trait]
impl MessageProcessor for Hold {
    async fn process(&self, _: &Message) -> rustmq::Result<Option<Message>> {
        self.0.acquire().await.expect("open").forget();
        Ok(None)
    }
}

async fn stream(client: &RustMqClient, bytes: Option<usize>) {
    let config = StreamConfig {
        input_topics: vec![TOPIC.into()],
        consumer_group: format!("backlog-stream-{}", std::process::id()),
        parallelism: 1,
        mode: StreamMode::Individual,
        ..StreamConfig::default()
    };
    let max_in_flight_bytes = bytes.unwrap_or(64 << 20);
    let before = memory();
    let open = Arc::new(tokio::sync::Semaphore::new(0));
    let stream = MessageStream::new(client.clone(), config.clone())
        .await
        .expect("stream")
        .with_max_in_flight_bytes(max_in_flight_bytes)
        .with_processor(Hold(Arc::clone(&open)));
    stream.start().await.expect("start");
    let metrics = stream.metrics().await;
    let gauges = || {
        (
            metrics.messages_in_flight.load(Ordering::Relaxed),
            metrics.bytes_in_flight.load(Ordering::Relaxed),
        )
    };
    // What is in flight grows until a bound stops it: wait until it has not grown for a second.
    let mut last = gauges();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = gauges();
        if now == last && now.0 > 0 {
            break;
        }
        last = now;
    }
    let after = memory();
    println!(
        "{{\"max_in_flight\":{},\"max_in_flight_bytes\":{},\"messages_in_flight\":{},\"bytes_in_flight\":{},\"rss_before_kib\":{},\"rss_after_kib\":{},\"hwm_kib\":{}}}",
        config.max_in_flight, max_in_flight_bytes, last.0, last.1, before.0, after.0, after.1,
    );
    open.add_permits(1 << 20);
    stream.stop().await.expect("stop");
}
