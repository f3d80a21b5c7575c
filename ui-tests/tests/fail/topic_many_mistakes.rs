use rustmq::Topic;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(nmae = "orders", key = "ordr_id", codec = "xml", partitions = 0)]
struct OrderPlaced {
    order_id: String,
}

fn main() {}
