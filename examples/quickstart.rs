//! RustMQ's quick start: a typed service on an embedded broker.
//!
//! `OrderPlaced` messages are produced with a typed producer; the `bill` handler (group
//! `billing`) turns each into a `Receipt` on another topic, and the `email` handler (group
//! `mailer`) consumes the receipts. Every handler runs behind the same tower layers: tracing,
//! a per-attempt timeout, retries with exponential backoff, and a dead-letter queue. One order
//! has a zero amount: billing fails, is retried three times, then lands in `orders.dlq`.
//!
//! ```text
//! cargo run -p examples --example quickstart                          # embedded broker
//! cargo run -p examples --example quickstart -- --broker 127.0.0.1:9092 # a running broker
//! RUST_LOG=rustmq=debug cargo run -p examples --example quickstart     # see the spans
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rustmq::prelude::*;
use rustmq::{handler, Topic};
use tokio::sync::Notify;

#[derive(Debug, Serialize, Deserialize, Topic)]
#[topic(name = "orders", key = "order_id", partitions = 3)]
struct OrderPlaced {
    order_id: String,
    amount_cents: u64,
}

#[derive(Debug, Serialize, Deserialize, Topic)]
#[topic(name = "receipts", key = "order_id", partitions = 3)]
struct Receipt {
    order_id: String,
    amount_cents: u64,
    tax_cents: u64,
}

#[derive(Debug, thiserror::Error)]
enum BillingError {
    #[error("order {0} has no amount")]
    ZeroAmount(String),
    #[error(transparent)]
    Send(#[from] ClientError),
}

/// Bills an order: one receipt per order, produced to `receipts`.
#[handler(group = "billing")]
async fn bill(
    order: OrderPlaced,
    meta: Metadata,
    receipts: TypedProducer<Receipt>,
) -> Result<(), BillingError> {
    if order.amount_cents == 0 {
        return Err(BillingError::ZeroAmount(order.order_id));
    }
    tracing::info!(order = %order.order_id, partition = meta.partition, offset = meta.offset, "billing");
    let tax_cents = order.amount_cents / 5;
    receipts
        .send(&Receipt {
            order_id: order.order_id,
            amount_cents: order.amount_cents,
            tax_cents,
        })
        .await?;
    Ok(())
}

/// Shared by the handlers: how many receipts were mailed.
#[derive(Debug, Clone, Default)]
struct Mailbox {
    sent: Arc<AtomicUsize>,
    changed: Arc<Notify>,
}

/// Emails a receipt (prints it).
#[handler(group = "mailer")]
async fn email(receipt: Receipt, State(mailbox): State<Mailbox>) {
    println!(
        "receipt for {}: {} cents + {} cents tax",
        receipt.order_id, receipt.amount_cents, receipt.tax_cents
    );
    mailbox.sent.fetch_add(1, Ordering::SeqCst);
    mailbox.changed.notify_waiters();
}

/// Runs the "quickstart" example against an embedded broker, or the one given with --broker.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    target: examples::BrokerArgs,
    /// Orders to place.
    #[arg(long, default_value_t = 10)]
    orders: usize,
}

#[tokio::main]
async fn main() -> rustmq::Result<()> {
    // Ctrl-C drops the example, and its embedded broker's directory with it.
    examples::interruptible(run()).await
}

async fn run() -> rustmq::Result<()> {
    examples::init_tracing();
    let args = Args::parse();
    let (_embedded, config) = args.target.config().await?;
    let client = RustMqClient::new(config).await?;

    // What a broker kept from earlier runs (`--broker`) is not this run's.
    let dead_before = dead_letters(&client).await;

    // Typed, batched, partitioned by order id.
    let orders = client.producer::<OrderPlaced>();
    for i in 0..args.orders {
        let amount_cents = if i == 3 { 0 } else { 1_000 + i as u64 * 250 };
        orders
            .send(&OrderPlaced {
                order_id: format!("order-{i}"),
                amount_cents,
            })
            .await?;
    }
    println!("placed {} orders", args.orders);

    let mailbox = Mailbox::default();
    // Order #3 (when there is one) is dead-lettered; every other one gets a receipt.
    let failing = usize::from(args.orders > 3);
    let expected = args.orders - failing;
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    let done = {
        let mailbox = mailbox.clone();
        async move {
            while mailbox.sent.load(Ordering::SeqCst) < expected {
                let changed = mailbox.changed.notified();
                if mailbox.sent.load(Ordering::SeqCst) >= expected {
                    break;
                }
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    };
    let stop = async {
        tokio::select! {
            _ = done => {}
            _ = deadline => {}
        }
    };
    Service::with_state(client.clone(), mailbox.clone())
        .layer(TraceLayer::new())
        .layer(TimeoutLayer::new(Duration::from_secs(5)))
        .layer(RetryLayer::exponential(3, Duration::from_millis(100)))
        .layer(DeadLetterLayer::default())
        .handler(bill)
        .handler(email)
        .run_until(stop)
        .await?;

    let mailed = mailbox.sent.load(Ordering::SeqCst);
    let dead = dead_letters(&client).await.saturating_sub(dead_before);
    println!("mailed {mailed} receipts; {dead} order(s) in orders.dlq");
    client.close().await?;
    if mailed < expected || dead != failing as u64 {
        return Err(examples::incomplete(format!(
            "expected {expected} receipts and {failing} dead letter(s) within a minute"
        )));
    }
    Ok(())
}

/// Dead letters stored in `orders.dlq` (0 before the topic exists).
async fn dead_letters(client: &RustMqClient) -> u64 {
    client
        .describe_topic("orders.dlq")
        .await
        .map(|t| t.partitions.iter().map(|p| p.high_watermark).sum::<u64>())
        .unwrap_or(0)
}
