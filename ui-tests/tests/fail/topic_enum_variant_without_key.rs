use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders.events", key = "order_id")]
enum OrderEvent {
    Placed { order_id: String, amount_cents: u64 },
    Cancelled { reason: String },
}

fn main() {}
