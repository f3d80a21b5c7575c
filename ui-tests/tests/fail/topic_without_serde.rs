use rustmq::Topic;

#[derive(Topic)]
#[topic(name = "orders")]
struct OrderPlaced {
    order_id: String,
}

fn main() {}
