use rustmq::{handler, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "payments")]
struct Payment {
    id: u64,
}

#[handler]
async fn payment(payment: Payment) {
    let _ = payment.id;
}

fn main() {}
