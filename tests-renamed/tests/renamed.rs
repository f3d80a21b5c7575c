//! Seed-style code (`use rustmq_client::*;`) with rustmq renamed to `rustmq-client` in
//! Cargo.toml: the macros' generated code names the crate `::rustmq_client`. `Duration`
//! comes with the glob import, as in the seed README's programs.

use rustmq_client::testing::TestBroker;
use rustmq_client::*;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Topic)]
#[topic(name = "renamed-orders", key = "order_id", partitions = 2)]
struct OrderPlaced {
    order_id: String,
    amount_cents: u64,
}

/// Where `bill` reports what it handled.
type Billed = mpsc::UnboundedSender<(OrderPlaced, Option<Vec<u8>>)>;

#[handler(group = "renamed-billing", start = "earliest")]
async fn bill(order: OrderPlaced, meta: Metadata, State(billed): State<Billed>) {
    let key = meta.key.as_deref().map(<[u8]>::to_vec);
    billed.send((order, key)).expect("the test is waiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derive_and_handler_work_under_the_seed_name() {
    assert_eq!(<OrderPlaced as Topic>::NAME, "renamed-orders");
    assert_eq!(<OrderPlaced as Topic>::PARTITIONS, Some(2));
    assert_eq!(
        Handler::<_, Billed>::options(&bill).group,
        Some("renamed-billing")
    );

    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let (billed, mut handled) = mpsc::unbounded_channel();
    let running = Service::with_state(client.clone(), billed)
        .handler(bill)
        .start()
        .await
        .unwrap();

    let order = OrderPlaced {
        order_id: "o-1".into(),
        amount_cents: 1250,
    };
    client.producer::<OrderPlaced>().send(&order).await.unwrap();

    let (got, key) = tokio::time::timeout(WAIT, handled.recv())
        .await
        .expect("the handler got the message in time")
        .expect("the service holds the sender");
    assert_eq!(got, order);
    assert_eq!(key.as_deref(), Some(&b"o-1"[..]));
    running.shutdown().await.unwrap();
}
