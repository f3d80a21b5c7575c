//! Instructions per message of the framework path, for `valgrind --tool=callgrind`:
//!
//! ```text
//! cargo build --release -p benches --example framework_callgrind
//! valgrind --tool=callgrind target/release/examples/framework_callgrind 100000 layered
//! valgrind --tool=callgrind target/release/examples/framework_callgrind 200000 layered
//! ```
//!
//! The difference of the two totals divided by 100,000 is the cost of one message without the
//! process's fixed setup. `bare` instead of `layered` measures the handler alone.

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
    let message = support::message();
    rt.block_on(async {
        for _ in 0..n {
            let settled = service
                .clone()
                .oneshot(Delivery::new(message.clone()))
                .await;
            assert!(settled.is_ok());
        }
    });
}
