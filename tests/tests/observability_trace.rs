//! W3C trace context through the broker (feature `opentelemetry`): one trace runs from the
//! producer's span through the handler's span to what the handler produces, and on to the
//! next handler. Spans are captured by an in-memory OpenTelemetry exporter.
//!
//! `cargo test -p tests --features opentelemetry --test observability_trace`
#![cfg(feature = "opentelemetry")]

use std::time::Duration;

use futures::FutureExt;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rustmq::prelude::*;
use rustmq::testing::{Recorder, TestBroker};
use rustmq::{Topic, TypedProducer};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer as _;

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "trace-orders")]
struct TraceOrder {
    id: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "trace-receipts")]
struct TraceReceipt {
    order: u32,
}

async fn forward(
    order: TraceOrder,
    receipts: TypedProducer<TraceReceipt>,
) -> Result<(), ClientError> {
    receipts.send(&TraceReceipt { order: order.id }).await?;
    Ok(())
}

async fn file(receipt: TraceReceipt) {
    let _ = receipt;
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.as_str().to_owned(),
            other => other.to_string(),
        })
}

/// The one span named `name` with attribute `topic` = `topic`.
fn span<'a>(spans: &'a [SpanData], name: &str, topic: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == name && attr(s, "topic").as_deref() == Some(topic))
        .collect();
    assert_eq!(found.len(), 1, "{name} spans of {topic}: {found:#?}");
    found[0]
}

#[tokio::test]
async fn one_trace_runs_from_producer_through_handlers_to_their_output() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(
            "info,rustmq=debug,rustmq_broker=debug",
        ))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("observability_trace")));
    // A current-thread runtime: the broker, the service and this test all run on this thread,
    // under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let recorder = Recorder::new();
    let running = Service::new(client.clone())
        .layer(TraceLayer::new())
        .layer(recorder.layer())
        .handler(forward)
        .handler(file)
        .start()
        .await
        .unwrap();
    client
        .producer::<TraceOrder>()
        .send(&TraceOrder { id: 7 })
        .instrument(tracing::info_span!("checkout"))
        .await
        .unwrap();
    let settled = recorder.wait_for(2, Duration::from_secs(20)).await;
    let receipt = settled
        .iter()
        .find(|s| s.message.topic == "trace-receipts")
        .expect("the receipt was handled");
    running.shutdown().await.unwrap();
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();

    let checkout = spans
        .iter()
        .find(|s| s.name == "checkout")
        .expect("the root span");
    let trace = checkout.span_context.trace_id();
    assert_ne!(trace, TraceId::INVALID);
    let send_order = span(&spans, "send", "trace-orders");
    let handle_order = span(&spans, "handle", "trace-orders");
    let send_receipt = span(&spans, "send", "trace-receipts");
    let handle_receipt = span(&spans, "handle", "trace-receipts");
    let chain = [
        checkout,
        send_order,
        handle_order,
        send_receipt,
        handle_receipt,
    ];
    for pair in chain.windows(2) {
        let (parent, child) = (pair[0], pair[1]);
        assert_eq!(
            child.span_context.trace_id(),
            trace,
            "{} is in the trace",
            child.name
        );
        assert_eq!(
            child.parent_span_id,
            parent.span_context.span_id(),
            "{} -> {}",
            parent.name,
            child.name
        );
    }
    // Across the broker, the parent comes from the message header.
    assert!(handle_order.parent_span_is_remote && handle_receipt.parent_span_is_remote);
    assert!(!send_receipt.parent_span_is_remote);
    assert_eq!(checkout.parent_span_id, SpanId::INVALID);

    // The output message carries the handler's send span as its traceparent.
    let header = receipt
        .message
        .headers
        .get("traceparent")
        .expect("traceparent header");
    let parent = rustmq::telemetry::TraceParent::parse(header).unwrap();
    assert_eq!(parent.trace_id, trace.to_bytes());
    assert_eq!(
        parent.span_id,
        send_receipt.span_context.span_id().to_bytes()
    );

    // The broker's produce spans name the trace they carried.
    let trace_hex = format!("{trace:032x}");
    let broker_produces: Vec<&SpanData> = spans
        .iter()
        .filter(|s| {
            s.name == "produce" && attr(s, "trace_id").as_deref() == Some(trace_hex.as_str())
        })
        .collect();
    let topics: Vec<String> = broker_produces
        .iter()
        .filter_map(|s| attr(s, "topic"))
        .collect();
    assert!(
        topics.contains(&"trace-orders".to_owned())
            && topics.contains(&"trace-receipts".to_owned()),
        "{topics:?}"
    );
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "trace-filtered")]
struct Filtered {
    id: u32,
}

async fn take(filtered: Filtered) {
    let _ = filtered;
}

/// OpenTelemetry behind a per-layer filter that leaves out the producer's debug `send` span,
/// which another layer keeps enabled: the message carries the caller's span, the nearest one
/// OpenTelemetry tracks (it carried no `traceparent`, and the trace broke at the broker).
#[tokio::test]
async fn a_send_span_left_out_by_opentelemetry_passes_on_its_callers_context() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(tracing_subscriber::EnvFilter::new("info,rustmq=debug")),
        )
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("observability_trace"))
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        );
    let _guard = tracing::subscriber::set_default(subscriber);

    // `send` in a debug span in a tracked one in another: the nearest tracked ancestor,
    // `checkout`, is two up.
    let session = tracing::info_span!("session");
    let checkout = tracing::info_span!(parent: &session, "checkout");
    let debug_only = tracing::debug_span!(target: "rustmq", parent: &checkout, "debug-only");
    let headers = headers_sent_within([debug_only, checkout, session]).await;
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let checkout = spans
        .iter()
        .find(|s| s.name == "checkout")
        .expect("the caller's span");
    assert!(
        !spans
            .iter()
            .any(|s| s.name == "send" || s.name == "debug-only"),
        "debug spans are not OpenTelemetry's"
    );
    let header = headers.get("traceparent").expect("traceparent header");
    let parent = rustmq::telemetry::TraceParent::parse(header).unwrap();
    assert_eq!(parent.trace_id, checkout.span_context.trace_id().to_bytes());
    assert_eq!(parent.span_id, checkout.span_context.span_id().to_bytes());
}

/// Without OpenTelemetry in the subscriber, a message carries no `traceparent` (and sending
/// works as ever).
#[tokio::test]
async fn without_opentelemetry_a_message_carries_no_trace_context() {
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(tracing_subscriber::EnvFilter::new("info,rustmq=debug")),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let headers = headers_sent_within([tracing::info_span!("checkout")]).await;
    assert!(!headers.contains_key("traceparent"), "{headers:?}");
}

/// The headers of a message sent within `spans` (innermost first), as its handler got them.
async fn headers_sent_within<const N: usize>(
    spans: [tracing::Span; N],
) -> std::collections::HashMap<String, String> {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let recorder = Recorder::new();
    let running = Service::new(client.clone())
        .layer(recorder.layer())
        .handler(take)
        .start()
        .await
        .unwrap();
    let producer = client.producer::<Filtered>();
    let mut send = producer.send(&Filtered { id: 1 }).boxed();
    for span in spans {
        send = send.instrument(span).boxed();
    }
    send.await.unwrap();
    let mut settled = recorder.wait_for(1, Duration::from_secs(20)).await;
    running.shutdown().await.unwrap();
    settled.remove(0).message.headers
}
