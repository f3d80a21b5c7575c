use rustmq::{handler, Metadata, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders")]
struct OrderPlaced {
    order_id: String,
}

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "refunds")]
struct RefundIssued {
    order_id: String,
}

#[handler]
async fn bill(order: OrderPlaced, meta: Metadata, refund: RefundIssued) {
    let _ = (order, meta, refund);
}

fn main() {}
