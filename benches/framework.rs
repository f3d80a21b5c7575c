//! Framework overhead per message, without a network: decode a small JSON struct, extract,
//! run the handler, and settle — alone and behind four layers (trace, timeout, retry,
//! dead-letter) — against the payload decoded by hand (`payload_decode_only`, the baseline:
//! the overhead is the difference). `cargo bench -p benches --bench framework`.

use criterion::{criterion_main, Criterion, Throughput};
use rustmq::typed::{BoxError, Delivery, Settlement};

#[path = "framework_support.rs"]
mod support;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let message = support::message();
    let mut group = c.benchmark_group("framework");
    group.throughput(Throughput::Elements(1));
    // The baseline: what a program does without the framework (decode the payload by hand).
    // Run on the runtime like the others, so that `block_on`'s own cost cancels out.
    group.bench_function("payload_decode_only", |b| {
        b.iter(|| {
            let message = message.clone();
            rt.block_on(async {
                let order: support::OrderPlaced =
                    <rustmq::codec::Json as rustmq::codec::Codec>::decode(&message.payload)
                        .expect("decodes");
                std::hint::black_box(order);
            })
        })
    });
    bench_one(&mut group, &rt, &message, "handler_only", support::bare());
    bench_one(&mut group, &rt, &message, "four_layers", support::layered());
    bench_one(
        &mut group,
        &rt,
        &message,
        "four_layers_each_erased",
        support::erased_each(),
    );
    group.finish();
}

fn bench_one<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    message: &rustmq::Message,
    name: &str,
    service: S,
) where
    S: tower::Service<Delivery, Response = Settlement, Error = BoxError>,
{
    let mut runner = support::Runner::new(service);
    group.bench_function(name, |b| {
        b.iter(|| {
            let settled = rt.block_on(runner.handle(message.clone()));
            assert!(settled.is_ok());
        })
    });
}

// criterion's macro defines an undocumented `pub fn benches`.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
