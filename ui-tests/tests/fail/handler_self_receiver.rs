use rustmq::{handler, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "orders")]
struct OrderPlaced {
    order_id: String,
}

struct Billing;

impl Billing {
    #[handler]
    async fn bill(&self, order: OrderPlaced) {
        let _ = order;
    }
}

fn main() {}
