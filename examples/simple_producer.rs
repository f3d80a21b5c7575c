//! The seed's basic producer: build messages, send them, print where they were stored.
//!
//! Runs against an embedded broker by default; `--broker HOST:PORT` uses a running one
//! (with `ClientConfig::default()` TLS rules: a broker on this machine is trusted as a
//! development broker; pass `--ca-cert` for any other).
//!
//! ```text
//! cargo run -p examples --example simple_producer
//! cargo run -p examples --example simple_producer -- --broker 127.0.0.1:9092
//! ```

use clap::Parser;
use rustmq::*;

/// Runs the "simple producer" example against an embedded broker, or the one given with --broker.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    target: examples::BrokerArgs,
    /// Messages to send.
    #[arg(long, default_value_t = 10)]
    count: usize,
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
    let config = ClientConfig {
        client_id: Some("my-producer".to_string()),
        ..config
    };

    let client = RustMqClient::new(config).await?;
    let producer = client.create_producer("my-topic").await?;

    for i in 0..args.count {
        let message = Message::builder()
            .topic("my-topic")
            .payload(format!("Hello, RustMQ! #{i}"))
            .header("sender", "rust-client")
            .build()?;
        let result = producer.send(message).await?;
        println!(
            "Message sent: offset={}, partition={}",
            result.offset, result.partition
        );
    }

    // Fire-and-forget with a callback, then wait for everything to be acknowledged.
    let message = Message::builder()
        .topic("my-topic")
        .payload("async hello")
        .build()?;
    producer
        .send_async(
            message,
            Some(|result, error| {
                if let Some(result) = result {
                    println!("Success: offset {}", result.offset);
                } else if let Some(error) = error {
                    eprintln!("Error: {error}");
                }
            }),
        )
        .await?;
    producer.flush().await?;
    let metrics = producer.metrics().await;
    println!(
        "sent {} messages in {} batches",
        metrics
            .messages_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        metrics
            .batches_sent
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    producer.close().await?;
    client.close().await?;
    Ok(())
}
