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
//! holds what happens to a received message, not the making of the message itself (the
//! consumer's work, in W3 too).
//!
//! Modes:
//! - `raw`: the payload decoded by hand (`Json::decode`) and the message dropped: what a
//!   program does without the framework. The framework's overhead is a mode's figure minus
//!   this one.
//! - `bare`: the handler alone, erased as the runtime erases it: a `Delivery` (made and handed
//!   on as a handler's runner does), extraction (payload and `Metadata`), the handler and its
//!   settlement.
//! - `layered` (default): the same behind trace, timeout, retry and dead-letter layers,
//!   composed as `Service::layer` composes them.
//! - `erased`: the same four layers each erased into a `BoxService`, as `Service::layer`
//!   composed them before it stacked them statically.

use rustmq::codec::{Codec, Json};
use rustmq::typed::{BoxError, Delivery, Settlement};
use rustmq::Message;

#[path = "framework_support.rs"]
mod support;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mode = args.next().unwrap_or_else(|| "layered".into());
    let built: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(40_000)
        .max(n);
    let message = support::message();
    let messages: Vec<_> = (0..built).map(|_| message.clone()).collect();
    let messages = messages.into_iter().take(n);
    match mode.as_str() {
        "raw" => messages.for_each(|message| {
            let order: support::OrderPlaced = Json::decode(&message.payload).expect("decodes");
            std::hint::black_box(&order);
        }),
        "bare" => run(support::bare(), messages),
        "erased" => run(support::erased_each(), messages),
        _ => run(support::layered(), messages),
    }
}

fn run<S>(service: S, messages: impl Iterator<Item = Message>)
where
    S: tower::Service<Delivery, Response = Settlement, Error = BoxError>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = support::Runner::new(service);
    rt.block_on(async {
        for message in messages {
            assert!(runner.handle(message).await.is_ok());
        }
    });
}
