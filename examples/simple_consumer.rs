//! The seed's basic consumer: join a group, receive messages, acknowledge them.
//!
//! Runs against an embedded broker by default (producing a few messages first so there is
//! something to read); `--broker HOST:PORT` uses a running one (a broker on this machine is
//! trusted as a development broker; pass `--ca-cert` for any other). Stops after `--count`
//! messages.
//!
//! ```text
//! cargo run -p examples --example simple_consumer
//! cargo run -p examples --example simple_consumer -- --broker 127.0.0.1:9092 --count 5
//! ```

use clap::Parser;
use rustmq::*;

/// Runs the "simple consumer" example against an embedded broker, or the one given with --broker.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    target: examples::BrokerArgs,
    /// Messages to produce, then consume.
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
    let client = RustMqClient::new(config).await?;

    // Something to read.
    client.ensure_topic("my-topic", 1).await?;
    let producer = client.create_producer("my-topic").await?;
    for i in 0..args.count {
        let message = Message::builder()
            .topic("my-topic")
            .payload(format!("Hello, RustMQ! #{i}"))
            .header("sender", "rust-client")
            .build()?;
        producer.send(message).await?;
    }
    producer.close().await?;

    // The seed's Quick Start consumer, stopping after `count` messages.
    let consumer = client.create_consumer("my-topic", "my-group").await?;
    let mut received = 0;
    while let Some(consumer_message) = consumer.receive().await? {
        let message = &consumer_message.message;
        println!(
            "Received: {} (partition {}, offset {})",
            message.payload_as_string()?,
            message.partition,
            message.offset
        );

        // Acknowledge message
        consumer_message.ack().await?;
        received += 1;
        if received == args.count {
            break;
        }
    }

    // Commits what was acknowledged and leaves the group.
    consumer.close().await?;
    client.close().await?;
    Ok(())
}
