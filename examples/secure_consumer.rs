//! Consuming from a secured broker: mutual TLS with a private CA, a password, and ACLs.
//!
//! Generates a CA and certificates with rcgen into a temporary directory, starts an embedded
//! broker that requires a client certificate, a password and ACL permissions, produces a few
//! orders as the `producer` user and consumes them as the `consumer` user in the group
//! `billing`. See docs/SECURITY.md.
//!
//! ```text
//! cargo run -p examples --example secure_consumer
//! ```

mod secure_setup;

use rustmq::{ClientError, Message, RustMqClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Ctrl-C drops the example, and its embedded broker's directory with it.
    examples::interruptible(run()).await
}

async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    examples::init_tracing();
    let secure = secure_setup::start().await?;

    let producer_client =
        RustMqClient::new(secure.client_config("producer", "producer-secret")).await?;
    producer_client.create_topic("orders", 1).await?;
    let producer = producer_client.create_producer("orders").await?;
    for i in 0..3 {
        producer
            .send(
                Message::builder()
                    .topic("orders")
                    .payload(format!("order #{i}"))
                    .build()?,
            )
            .await?;
    }
    producer.close().await?;

    let client = RustMqClient::new(secure.client_config("consumer", "consumer-secret")).await?;
    // The consumer may read `orders*` but not write it.
    match client
        .create_producer("orders")
        .await?
        .send(Message::builder().topic("orders").payload("x").build()?)
        .await
    {
        Err(ClientError::Authorization(message)) => println!("refused as expected: {message}"),
        other => return Err(format!("expected an authorization error, got {other:?}").into()),
    }
    let consumer = client.create_consumer("orders", "billing").await?;
    for _ in 0..3 {
        let Some(delivery) = consumer.receive().await? else {
            break;
        };
        println!(
            "received {} at offset {}",
            delivery.message.payload_as_string()?,
            delivery.message.offset
        );
        delivery.ack().await?;
    }
    consumer.close().await?;
    client.close().await?;
    Ok(())
}
