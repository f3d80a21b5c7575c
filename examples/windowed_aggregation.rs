//! The seed README's windowed analytics: events with timestamps aggregated per sliding window
//! (5 s windows every 1 s here, so that the example ends quickly).
//!
//! ```text
//! cargo run -p examples --example windowed_aggregation
//! cargo run -p examples --example windowed_aggregation -- --broker 127.0.0.1:9092
//! ```

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use rustmq::stream::{
    ErrorStrategy, LatePolicy, MessageProcessor, MessageStream, StreamConfig, StreamMode,
    WindowOptions,
};
use rustmq::{async_trait, Message, Result, RustMqClient};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    target: examples::BrokerArgs,
}

#[derive(Debug, Serialize, Deserialize)]
struct AnalyticsEvent {
    event_type: String,
    revenue: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct AggregatedMetrics {
    window_start: u64,
    window_end: u64,
    event_counts: HashMap<String, usize>,
    total_revenue: f64,
    message_count: usize,
}

struct AnalyticsProcessor;

#[async_trait]
impl MessageProcessor for AnalyticsProcessor {
    async fn process_batch(&self, messages: &[Message]) -> Result<Vec<Option<Message>>> {
        let mut event_counts = HashMap::new();
        let mut total_revenue = 0.0;
        for message in messages {
            let event: AnalyticsEvent = serde_json::from_slice(&message.payload)?;
            *event_counts.entry(event.event_type.clone()).or_insert(0) += 1;
            total_revenue += event.revenue;
        }
        let aggregated = AggregatedMetrics {
            window_start: messages.first().map(|m| m.timestamp).unwrap_or(0),
            window_end: messages.last().map(|m| m.timestamp).unwrap_or(0),
            event_counts,
            total_revenue,
            message_count: messages.len(),
        };
        let output_message = Message::builder()
            .topic("analytics-aggregated")
            .payload(serde_json::to_vec(&aggregated)?)
            .header("window-size", messages.len().to_string())
            .build()?;
        let mut results = vec![None; messages.len()];
        results[0] = Some(output_message);
        Ok(results)
    }
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
    client.ensure_topic("analytics-events", 2).await?;
    client.ensure_topic("analytics-aggregated", 1).await?;

    // 20 s of events, 10 per second, with event timestamps (not arrival times).
    let producer = client.create_producer("analytics-events").await?;
    let base = 1_700_000_000_000u64;
    for i in 0..200u64 {
        let event = AnalyticsEvent {
            event_type: ["view", "click", "purchase"][(i % 3) as usize].into(),
            revenue: if i % 3 == 2 { 9.99 } else { 0.0 },
        };
        let message = Message::builder()
            .topic("analytics-events")
            .payload(serde_json::to_vec(&event)?)
            .timestamp(base + i * 100)
            .build()?;
        producer.send_async(message, None).await?;
    }
    producer.flush().await?;

    let stream_config = StreamConfig {
        input_topics: vec!["analytics-events".to_string()],
        output_topic: Some("analytics-aggregated".to_string()),
        consumer_group: "analytics".to_string(),
        mode: StreamMode::Windowed {
            window_size: Duration::from_secs(5),
            slide_interval: Duration::from_secs(1),
        },
        error_strategy: ErrorStrategy::Retry {
            max_attempts: 3,
            backoff_ms: 100,
        },
        ..Default::default()
    };
    let stream = MessageStream::new(client.clone(), stream_config)
        .await?
        .with_processor(AnalyticsProcessor)
        .with_window_options(WindowOptions {
            allowed_lateness: Duration::from_millis(500),
            late_messages: LatePolicy::Drop,
            // A partition that delivers nothing for this long stops holding the windows of
            // the others back (the default).
            idle_timeout: rustmq::stream::DEFAULT_WINDOW_IDLE_TIMEOUT,
        });
    stream.start().await?;
    let metrics = stream.metrics().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // Event time reaches base + 19.9 s: windows ending up to base + 19 s close.
    while metrics.windows_closed.load(Ordering::Relaxed) < 19
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stream.stop().await?;
    let consumer = client
        .create_consumer("analytics-aggregated", "example-reader")
        .await?;
    for _ in 0..metrics.outputs_produced.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_secs(2), consumer.receive()).await {
            Ok(Ok(Some(m))) => {
                println!("{}", m.message.payload_as_string()?);
                m.ack().await?;
            }
            _ => break,
        }
    }
    consumer.close().await?;
    let windows = metrics.windows_closed.load(Ordering::Relaxed);
    println!(
        "windows: {windows}, late: {}",
        metrics.late_messages.load(Ordering::Relaxed)
    );
    client.close().await?;
    if windows < 19 {
        return Err(examples::incomplete(format!(
            "{windows} of 19 windows closed within 20 s"
        )));
    }
    Ok(())
}
