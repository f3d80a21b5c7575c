//! `crate = ".."` gives the path through which the generated code reaches rustmq, for a crate
//! that gets rustmq through another crate's re-export (Cargo.toml then does not name it):
//! here a module re-exporting it under another name, named by absolute, relative and `super`
//! paths, in any of several merged `#[topic]` attributes, before or after `codec`.

use serde::{Deserialize, Serialize};

mod sdk {
    /// rustmq, re-exported under another name, as an SDK built on it would.
    pub use ::rustmq as mq;
}

use sdk::mq::{handler, Handler, Metadata, Topic};

#[derive(Debug, PartialEq, Serialize, Deserialize, Topic)]
#[topic(
    name = "orders",
    key = "order_id",
    codec = "postcard",
    crate = "crate::sdk::mq"
)]
struct OrderPlaced {
    order_id: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Topic)]
#[topic(crate = "sdk::mq")]
#[topic(name = "receipts", key = "id", dead_letter = "receipts.bad")]
enum Receipt {
    Issued { id: String },
    Voided { id: String, reason: String },
}

#[handler(group = "billing", crate = "crate::sdk::mq")]
async fn bill(order: OrderPlaced, meta: Metadata) {
    let _ = (order, meta);
}

mod nested {
    use super::Receipt;

    #[super::sdk::mq::handler(crate = "super::sdk::mq", concurrency = 2)]
    pub async fn archive(receipt: Receipt) {
        let _ = receipt;
    }
}

fn main() {
    assert_eq!(<OrderPlaced as Topic>::NAME, "orders");
    let order = OrderPlaced { order_id: 7 };
    assert_eq!(order.key().as_deref(), Some(&b"7"[..]));
    assert_eq!(
        sdk::mq::typed::TopicInfo::of::<OrderPlaced>().codec,
        "postcard"
    );

    let receipt = Receipt::Voided {
        id: "r-1".into(),
        reason: "late".into(),
    };
    assert_eq!(receipt.key().as_deref(), Some(&b"r-1"[..]));
    assert_eq!(<Receipt as Topic>::DEAD_LETTER, Some("receipts.bad"));
    assert_eq!(sdk::mq::typed::TopicInfo::of::<Receipt>().codec, "json");

    assert_eq!(Handler::<_, ()>::options(&bill).group, Some("billing"));
    assert_eq!(Handler::<_, ()>::options(&nested::archive).name, "archive");
}
