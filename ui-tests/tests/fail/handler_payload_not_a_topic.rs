use rustmq::{handler, Metadata};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct OrderPlaced {
    order_id: String,
}

#[handler]
async fn bill(order: OrderPlaced, meta: Metadata) {
    let _ = (order, meta);
}

fn main() {}
