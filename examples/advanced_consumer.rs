//! An advanced consumer: manual commits, seeking by time, pausing a partition, failed
//! messages retried with backoff and then dead-lettered, lag and metrics.
//!
//! Runs against an embedded broker by default (producing some orders first, a few of them
//! "poisoned" so that processing fails); `--broker HOST:PORT` uses a running one. Stops once
//! every produced order was processed or dead-lettered.
//!
//! ```text
//! cargo run -p examples --example advanced_consumer
//! cargo run -p examples --example advanced_consumer -- --broker 127.0.0.1:9092
//! ```

use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use rustmq::consumer::DLQ_ATTEMPTS;
use rustmq::*;

/// Runs the "advanced consumer" example against an embedded broker, or the one given with --broker.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    target: examples::BrokerArgs,
    /// Orders to produce; every 7th one fails processing.
    #[arg(long, default_value_t = 30)]
    count: u64,
}

#[derive(Debug)]
enum ProcessingError {
    Retryable(String),
}

impl std::fmt::Display for ProcessingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessingError::Retryable(reason) => write!(f, "retryable: {reason}"),
        }
    }
}

async fn process_order(message: &Message) -> std::result::Result<(), ProcessingError> {
    if message.get_header("poison").is_some() {
        return Err(ProcessingError::Retryable(
            "payment provider refused the order".into(),
        ));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    // Ctrl-C drops the example, and its embedded broker's directory with it.
    examples::interruptible(run()).await
}

async fn run() -> Result<()> {
    examples::init_tracing();
    let args = Args::parse();
    let (_embedded, config) = args.target.config().await?;
    let client = RustMqClient::new(config).await?;
    client.ensure_topic("orders", 3).await?;
    client.ensure_topic("failed-orders", 1).await?;

    let started_ms = message::now_ms();
    let producer = client.create_producer("orders").await?;
    let mut poisoned = 0;
    for i in 0..args.count {
        let mut builder = Message::builder()
            .topic("orders")
            .key(format!("order-{i}"))
            .payload(format!("order #{i}"));
        if i % 7 == 3 {
            builder = builder.header("poison", "yes");
            poisoned += 1;
        }
        producer.send(builder.build()?).await?;
    }
    producer.close().await?;

    let consumer_config = ConsumerConfig {
        consumer_id: Some("order-processor-1".to_string()),
        consumer_group: "order-processors".to_string(),
        enable_auto_commit: false,
        fetch_size: 100,
        fetch_timeout: Duration::from_millis(500),
        start_position: StartPosition::Earliest,
        // Retried after 200 ms, then 400 ms (the seed's 2 s, 4 s, 8 s with the default
        // backoff), then sent to the dead-letter queue.
        max_retry_attempts: 2,
        retry_backoff: Duration::from_millis(200),
        dead_letter_queue: Some("failed-orders".to_string()),
        ..Default::default()
    };
    let consumer = ConsumerBuilder::new()
        .topic("orders")
        .consumer_group("order-processors")
        .config(consumer_config)
        .client(client.clone())
        .build()
        .await?;

    if let Some(assignment) = consumer.partition_assignment().await {
        println!("Assignment ID: {}", assignment.assignment_id);
        println!("Assigned at: {:?}", assignment.assigned_at);
        println!("Partitions: {:?}", assignment.partitions);
    }

    // Seeking: replay everything produced since this example started (milliseconds).
    let offsets = consumer
        .seek_all_to_timestamp(started_ms.saturating_sub(1_000))
        .await?;
    println!("Seeked to timestamp with offsets: {offsets:?}");

    // Partition management: hold partition 2 back for the first 10 messages.
    let assigned = consumer.assigned_partitions().await;
    let held_back: Vec<u32> = assigned.iter().copied().filter(|&p| p == 2).collect();
    consumer.pause_partitions(held_back.clone()).await?;
    println!(
        "Paused partitions: {:?}",
        consumer.paused_partitions().await
    );

    let metrics = consumer.metrics().await;
    let done = |m: &ConsumerMetrics| {
        m.messages_processed.load(Ordering::Relaxed)
            + m.messages_dead_lettered.load(Ordering::Relaxed)
    };
    let mut handled = 0u64;
    while done(&metrics) < args.count {
        let Some(consumer_message) = consumer.receive().await? else {
            break;
        };
        let message = &consumer_message.message;
        match process_order(message).await {
            Ok(()) => {
                println!(
                    "processed {} from partition {}",
                    message.payload_as_string()?,
                    message.partition
                );
                consumer_message.ack().await?;
            }
            Err(e) => {
                // Will be retried with exponential backoff, then dead-lettered.
                println!(
                    "failed {} (attempt {}): {e}",
                    message.payload_as_string()?,
                    consumer_message.delivery_attempt()
                );
                consumer_message.nack_with_error(e.to_string()).await?;
            }
        }
        handled += 1;
        if handled == 10 && !held_back.is_empty() {
            consumer.resume_partitions(held_back.clone()).await?;
            println!("Resumed partitions {held_back:?}");
        }
        if handled.is_multiple_of(10) {
            consumer.commit().await?;
        }
    }
    consumer.commit().await?;

    for partition in consumer.assigned_partitions().await {
        match consumer.committed_offset(partition).await {
            Ok(offset) => println!("Committed offset for partition {partition}: {offset}"),
            Err(e) => println!("Partition {partition}: {e}"),
        }
    }
    println!("Consumer lag: {:?}", consumer.get_lag().await?);
    println!(
        "received {}, processed {}, failed {}, retried {}, dead-lettered {} (of {poisoned} poisoned)",
        metrics.messages_received.load(Ordering::Relaxed),
        metrics.messages_processed.load(Ordering::Relaxed),
        metrics.messages_failed.load(Ordering::Relaxed),
        metrics.messages_retried.load(Ordering::Relaxed),
        metrics.messages_dead_lettered.load(Ordering::Relaxed),
    );
    consumer.close().await?;

    // The dead letters, with the failure in their headers.
    let dead = client
        .create_consumer("failed-orders", "dlq-inspectors")
        .await?;
    for _ in 0..metrics.messages_dead_lettered.load(Ordering::Relaxed) {
        let Some(m) = dead.receive().await? else {
            break;
        };
        let mut headers: Vec<_> = m
            .message
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("rustmq.dlq."))
            .collect();
        headers.sort();
        println!(
            "dead letter {} after {} attempts: {headers:?}",
            m.message.payload_as_string()?,
            m.message.headers[DLQ_ATTEMPTS]
        );
        m.ack().await?;
    }
    dead.close().await?;
    client.close().await?;
    Ok(())
}
