use rustmq::{handler, State, Topic};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Topic)]
#[topic(name = "payments")]
struct Payment {
    id: u64,
}

#[derive(Clone)]
struct Config;

#[handler]
async fn payment(payment: Payment) {
    let _ = payment.id;
}

#[handler]
async fn config(p: Payment, State(config): State<Config>) {
    let _ = (p.id, config);
}

fn main() {}
