//! The seed README's payment pipeline: a fraud-scoring `MessageProcessor` over `raw-payments`,
//! outputs to `processed-payments`, failures dead-lettered, exactly once.
//!
//! ```text
//! cargo run -p examples --example stream_processor                 # embedded broker
//! cargo run -p examples --example stream_processor -- --broker 127.0.0.1:9092
//! ```

use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use rustmq::stream::{ErrorStrategy, MessageProcessor, MessageStream, StreamConfig, StreamMode};
use rustmq::{async_trait, ClientError, Message, Result, RustMqClient};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    target: examples::BrokerArgs,
    /// Payments to send through the pipeline.
    #[arg(long, default_value_t = 200)]
    payments: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    user_id: String,
    amount_cents: u64,
    country: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct ProcessedPayment {
    payment: Payment,
    fraud_score: f64,
    approved: bool,
}

/// A toy scorer standing in for a real service.
struct FraudDetector;

impl FraudDetector {
    async fn check(&self, p: &Payment) -> Result<f64> {
        if p.amount_cents == 0 {
            return Err(ClientError::InvalidMessage("zero amount".into()));
        }
        let mut score = (p.amount_cents as f64 / 100_000.0).min(0.6);
        if p.country != "NL" {
            score += 0.2;
        }
        Ok(score)
    }
}

struct PaymentProcessor {
    fraud_detector: FraudDetector,
}

#[async_trait]
impl MessageProcessor for PaymentProcessor {
    async fn process(&self, message: &Message) -> Result<Option<Message>> {
        let payment: Payment = serde_json::from_slice(&message.payload)?;
        let score = self.fraud_detector.check(&payment).await?;
        let output = ProcessedPayment {
            payment: payment.clone(),
            fraud_score: score,
            approved: score < 0.5,
        };
        let output_message = Message::builder()
            .topic("processed-payments")
            .key(&payment.user_id)
            .payload(serde_json::to_vec(&output)?)
            .header("processor", "fraud-detection")
            .header("score", score.to_string())
            .build()?;
        Ok(Some(output_message))
    }

    async fn on_start(&self) -> Result<()> {
        tracing::info!("payment processor started");
        Ok(())
    }

    async fn on_stop(&self) -> Result<()> {
        tracing::info!("payment processor stopped");
        Ok(())
    }

    async fn on_error(&self, message: &Message, error: &ClientError) -> Result<()> {
        tracing::error!(message_id = %message.id, topic = %message.topic, error = %error, "payment processing failed");
        Ok(())
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
    for topic in ["raw-payments", "processed-payments", "failed-payments"] {
        client.ensure_topic(topic, 3).await?;
    }
    let producer = client.create_producer("raw-payments").await?;
    for i in 0..args.payments {
        let payment = Payment {
            user_id: format!("user-{}", i % 17),
            amount_cents: if i % 50 == 49 {
                0
            } else {
                (i as u64 * 7919) % 90_000
            },
            country: if i % 3 == 0 { "DE" } else { "NL" }.into(),
        };
        let message = Message::builder()
            .topic("raw-payments")
            .key(&payment.user_id)
            .payload(serde_json::to_vec(&payment)?)
            .build()?;
        producer.send_async(message, None).await?;
    }
    producer.flush().await?;

    let stream_config = StreamConfig {
        input_topics: vec!["raw-payments".to_string()],
        output_topic: Some("processed-payments".to_string()),
        consumer_group: "payment-processors".to_string(),
        parallelism: 8,
        processing_timeout: Duration::from_secs(30),
        exactly_once: true,
        max_in_flight: 1000,
        error_strategy: ErrorStrategy::DeadLetter {
            topic: "failed-payments".to_string(),
        },
        mode: StreamMode::Individual,
    };
    let stream = MessageStream::new(client.clone(), stream_config)
        .await?
        .with_processor(PaymentProcessor {
            fraud_detector: FraudDetector,
        });
    stream.start().await?;

    let metrics = stream.metrics().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metrics.messages_processed.load(Ordering::Relaxed)
        + metrics.messages_failed.load(Ordering::Relaxed)
        < args.payments as u64
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stream.stop().await?;
    println!(
        "processed:     {}",
        metrics.messages_processed.load(Ordering::Relaxed)
    );
    println!(
        "failed:        {}",
        metrics.messages_failed.load(Ordering::Relaxed)
    );
    println!(
        "dead-lettered: {}",
        metrics.messages_dead_lettered.load(Ordering::Relaxed)
    );
    if let Ok(avg) = metrics.average_processing_time.try_read() {
        println!("avg processing time: {:.3} ms", *avg);
    }
    client.close().await?;
    let settled = metrics.messages_processed.load(Ordering::Relaxed)
        + metrics.messages_failed.load(Ordering::Relaxed);
    if settled < args.payments as u64 {
        return Err(examples::incomplete(format!(
            "{settled} of {} payments were processed within 30 s",
            args.payments
        )));
    }
    Ok(())
}
