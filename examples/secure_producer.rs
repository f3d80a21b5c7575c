//! Producing to a secured broker: mutual TLS with a private CA, a password, and ACLs.
//!
//! Generates a CA and certificates with rcgen into a temporary directory, starts an embedded
//! broker that requires a client certificate, a password and ACL permissions, and produces as
//! the `producer` user. A write the ACLs do not allow is refused. See docs/SECURITY.md.
//!
//! ```text
//! cargo run -p examples --example secure_producer
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
    println!(
        "secured broker on {} (certificates in {})",
        secure.broker.addr(),
        secure.dir.path().display()
    );

    let client = RustMqClient::new(secure.client_config("producer", "producer-secret")).await?;
    client.create_topic("orders", 1).await?;
    let producer = client.create_producer("orders").await?;
    for i in 0..5 {
        let message = Message::builder()
            .topic("orders")
            .payload(format!("order #{i}"))
            .build()?;
        let sent = producer.send(message).await?;
        println!("sent order #{i} at offset {}", sent.offset);
    }
    producer.flush().await?;

    // The ACLs allow `orders*` only.
    match client.create_topic("payroll", 1).await {
        Err(ClientError::Authorization(message)) => println!("refused as expected: {message}"),
        other => return Err(format!("expected an authorization error, got {other:?}").into()),
    }
    // A wrong password is refused too.
    match RustMqClient::new(secure.client_config("producer", "guess")).await {
        Err(ClientError::Authentication(message)) => println!("refused as expected: {message}"),
        other => {
            return Err(format!("expected an authentication error, got {:?}", other.err()).into())
        }
    }
    producer.close().await?;
    client.close().await?;
    Ok(())
}
