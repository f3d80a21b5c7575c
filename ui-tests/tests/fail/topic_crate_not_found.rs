//! A `crate` path that does not lead to rustmq is reported at the string, once.

use rustmq::Topic;
use serde::{Deserialize, Serialize};

mod sdk {}

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders", key = "order_id", crate = "crate::sdk::rustmq")]
struct OrderPlaced {
    order_id: String,
}

fn main() {}
