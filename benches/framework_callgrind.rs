//! Instructions per message of the framework path, for `valgrind --tool=callgrind`:
//!
//! ```text
//! cargo build --release -p benches --example framework_callgrind
//! valgrind --tool=callgrind target/release/examples/framework_callgrind 20000 layered
//! valgrind --tool=callgrind target/release/examples/framework_callgrind 40000 layered
//! ```
//!
//! The difference of the two totals divided by 20,000 is the cost of one message without the
//! process's fixed setup. Both runs build the same 40,000 input messages up front (a third
//! argument changes that number; the unused ones are dropped unprocessed), so the difference
//! holds what the framework does with a received message, not the making or freeing of the
//! message itself (the consumer's work, in W3 too): a `Delivery`, the layers, extraction, the
//! payload's decoding and the handler. `bare` instead of `layered` measures the handler alone;
//! `stacked` the same four layers as one `tower::ServiceBuilder`.

use rustmq::typed::Delivery;
use tower::ServiceExt;

#[path = "framework_support.rs"]
mod support;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let service = match args.next().as_deref() {
        Some("bare") => support::bare(),
        Some("stacked") => support::stacked(),
        _ => support::layered(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let built: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(40_000)
        .max(n);
    let message = support::message();
    let messages: Vec<_> = (0..built).map(|_| message.clone()).collect();
    rt.block_on(async {
        for message in messages.into_iter().take(n as usize) {
            let settled = service.clone().oneshot(Delivery::new(message)).await;
            assert!(settled.is_ok());
        }
    });
}
