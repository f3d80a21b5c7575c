use rustmq::{handler, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders")]
struct OrderPlaced {
    order_id: String,
}

#[handler]
async fn bill(OrderPlaced { order_id }: OrderPlaced, rustmq::State(count): rustmq::State<u32>) {
    let _ = count;
    let _ = order_id;
}

fn main() {}
