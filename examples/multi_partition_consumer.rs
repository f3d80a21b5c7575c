//! The seed's comprehensive multi-partition consumer: assignment, per-partition counts,
//! commits every 10 messages, per-partition lag, bulk seeking and selective processing, and
//! performance monitoring.
//!
//! Runs against an embedded broker by default (producing messages across six partitions
//! first); `--broker HOST:PORT` uses a running one.
//!
//! ```text
//! cargo run -p examples --example multi_partition_consumer
//! cargo run -p examples --example multi_partition_consumer -- --broker 127.0.0.1:9092
//! ```

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use rustmq::*;

const TOPIC: &str = "high-throughput-topic";

/// Runs the "multi partition consumer" example against an embedded broker, or the one given with --broker.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    target: examples::BrokerArgs,
    /// Messages to produce (spread over 6 partitions) and process.
    #[arg(long, default_value_t = 100)]
    count: u32,
}

#[tokio::main]
async fn main() -> Result<()> {
    // Ctrl-C drops the example, and its embedded broker's directory with it.
    examples::interruptible(run()).await
}

async fn run() -> Result<()> {
    examples::init_tracing();
    let args = Args::parse();
    // Create client with multi-partition optimization
    let (_embedded, config) = args.target.config().await?;
    let config = ClientConfig {
        max_connections: 15, // More connections for concurrent fetching
        ..config
    };
    let client = RustMqClient::new(config).await?;
    client.ensure_topic(TOPIC, 6).await?;
    let started_ms = message::now_ms();
    let producer = client.create_producer(TOPIC).await?;
    for i in 0..args.count {
        let message = Message::builder()
            .topic(TOPIC)
            .partition(i % 6)
            .payload(format!("event #{i}"))
            .build()?;
        producer.send(message).await?;
    }
    producer.close().await?;

    // Configure consumer for multi-partition workloads
    let consumer_config = ConsumerConfig {
        consumer_group: "multi-partition-processors".to_string(),
        enable_auto_commit: false, // Manual commits for precision
        fetch_size: 1000,          // Larger batches for efficiency
        fetch_timeout: Duration::from_millis(500),
        max_retry_attempts: 5,
        dead_letter_queue: Some("failed-mp-messages".to_string()),
        ..Default::default()
    };
    let consumer = ConsumerBuilder::new()
        .topic(TOPIC)
        .consumer_group("multi-partition-processors")
        .config(consumer_config)
        .client(client.clone())
        .build()
        .await?;

    // Get partition assignment
    let partitions = consumer.assigned_partitions().await;
    println!(
        "Assigned to {} partitions: {:?}",
        partitions.len(),
        partitions
    );

    // Start from what this run produced, whatever the group committed before.
    let offsets = consumer
        .seek_all_to_timestamp(started_ms.saturating_sub(1_000))
        .await?;
    println!("Seeked all partitions: {offsets:?}");

    // Process messages from all partitions
    let mut partition_counts: HashMap<u32, u32> = HashMap::new();
    for _ in 0..args.count {
        if let Some(consumer_message) = consumer.receive().await? {
            let message = &consumer_message.message;

            // Track per-partition processing
            *partition_counts.entry(message.partition).or_insert(0) += 1;

            println!(
                "Processing message from partition {}: {}",
                message.partition,
                message.payload_as_string()?
            );

            // Acknowledge message
            consumer_message.ack().await?;

            // Commit every 10 messages
            if partition_counts.values().sum::<u32>() % 10 == 0 {
                consumer.commit().await?;
            }
        }
    }

    // Show processing distribution
    println!("Messages processed per partition: {partition_counts:?}");

    // Get consumer lag across all partitions
    let lag_map = consumer.get_lag().await?;
    for (partition, lag) in &lag_map {
        println!("Partition {partition}: {lag} messages behind");
    }

    // Selective partition processing: only the high-priority partitions.
    let high_priority_partitions = [0, 1];
    let all_partitions = consumer.assigned_partitions().await;
    let low_priority: Vec<u32> = all_partitions
        .into_iter()
        .filter(|p| !high_priority_partitions.contains(p))
        .collect();
    consumer.pause_partitions(low_priority).await?;
    println!(
        "Paused partitions: {:?}",
        consumer.paused_partitions().await
    );

    // Monitor multi-partition performance
    let metrics = consumer.metrics().await;
    println!("Multi-Partition Performance:");
    println!(
        "  Total messages processed: {}",
        metrics.messages_processed.load(Ordering::Relaxed)
    );
    println!(
        "  Active partitions: {}",
        consumer.assigned_partitions().await.len()
    );
    println!(
        "  Paused partitions: {:?}",
        consumer.paused_partitions().await
    );
    let total_lag: u64 = lag_map.values().sum();
    println!("  Total consumer lag: {total_lag} messages");
    let received = metrics.messages_received.load(Ordering::Relaxed);
    let processed = metrics.messages_processed.load(Ordering::Relaxed);
    if received > 0 {
        let efficiency = (processed as f64 / received as f64) * 100.0;
        println!("  Processing efficiency: {efficiency:.1}%");
    }

    consumer.close().await?;
    client.close().await?;
    Ok(())
}
