use rustmq::{handler, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders")]
struct OrderPlaced {
    order_id: String,
}

// A where clause without generic parameters: the error points at it, not at the attribute.
#[handler]
async fn bill(order: OrderPlaced)
where
    OrderPlaced: Send,
{
    let _ = order;
}

fn main() {}
