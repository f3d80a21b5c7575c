use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders", crate = "not a path!")]
struct OrderPlaced {
    order_id: String,
}

fn main() {}
