use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders", codec = "protobuf")]
struct OrderPlaced {
    order_id: String,
}

fn main() {}
